#!/usr/bin/env bash
# Latency of ordered delivery at all members versus raw UDP 1→N fan-out on
# the same path, in the same run: N hosts in network namespaces on a bridge,
# one process per host. Closed loop, one sender (h0): the next message leaves
# --gap-us after the previous one was delivered (bus) or sent (raw).
#
# Usage (as root, release build):
#   tools/netns-bench.sh [--members N] [--messages M] [--size B] [--gap-us US]
#                        [--period-us US] [--idle STRATEGY] [--bin PATH] [--out DIR]
# Examples:
#   swift build -c release --product carillon && sudo tools/netns-bench.sh
#   sudo tools/netns-bench.sh --members 3 --period-us 50 --idle busy-spin
# Prints p50 / p99 / p99.9 of both and their ratios; writes results.json in --out.
set -euo pipefail

members=3 messages=2000 size=64 gap_us=1000 period_us=100 idle=blocking loss=0 shape=""
bin="" out=""
while [ $# -gt 0 ]; do
    case "$1" in
        --members) members=$2; shift 2 ;;
        --messages) messages=$2; shift 2 ;;
        --size) size=$2; shift 2 ;;
        --gap-us) gap_us=$2; shift 2 ;;
        --period-us) period_us=$2; shift 2 ;;
        --idle) idle=$2; shift 2 ;;
        --bin) bin=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "netns-bench: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
here=$(cd "$(dirname "$0")/.." && pwd)
source "$here/tools/lib/netns.sh"
netns_prepare release crln-bench
netns_up
timeout=$(( messages * (gap_us + 2000) / 1000000 + 30 ))

echo "netns-bench: $members hosts on a bridge, $messages × $size B closed loop from h0, gap $gap_us µs; bus: round $period_us µs, reservation 0.5, idle $idle" >&2
# 1. Raw UDP fan-out, h0 → every other host.
netns_config "$out/bus.json" "$period_us" "$idle"
for i in $(seq 1 $((members - 1))); do
    ip netns exec "$prefix-h$i" "$bin" fanout --config "$out/bus.json" --member "h$i" --expect "$messages" --timeout "$timeout" \
        --log "$out/raw.h$i" 2>> "$out/raw.err" &
    pids+=($!)
done
ip netns exec "$prefix-h0" "$bin" fanout --config "$out/bus.json" --member h0 --send "$messages" --gap-us "$gap_us" --size "$size" \
    --timeout "$timeout" 2>> "$out/raw.err"
for pid in "${pids[@]}"; do wait "$pid"; done
pids=()

# 2. The bus, same hosts and addresses: h0 broadcasts, every member delivers.
netns_config "$out/bus.json" "$period_us" "$idle"
for i in $(seq 0 $((members - 1))); do
    send=0; [ "$i" -eq 0 ] && send=$messages
    ip netns exec "$prefix-h$i" "$bin" node --no-services --config "$out/bus.json" --member "h$i" --send "$send" --closed-loop --gap-us "$gap_us" \
        --size "$size" --expect "$messages" --timeout "$timeout" --log "$out/bus.h$i" 2> "$out/bus.h$i.err" &
    pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done
pids=()

python3 - "$out" "$members" "$period_us" "$idle" "$size" "$messages" <<'PY'
import json, sys, glob, os
out, members, period, idle, size, messages = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
def at_all(files):
    sent, last, seen = {}, {}, {}
    for f in files:
        for line in open(f):
            s, q, a, b = map(int, line.split())
            sent[q] = a; last[q] = max(last.get(q, 0), b); seen[q] = seen.get(q, 0) + 1
    n = len(files)
    return sorted((last[q] - sent[q]) / 1000 for q in last if seen[q] == n)
def pct(v, p): return v[min(len(v) - 1, int(len(v) * p))] if v else float('nan')
raw = at_all(sorted(glob.glob(f"{out}/raw.h*")))
bus = at_all(sorted(glob.glob(f"{out}/bus.h*[0-9]")))
res = {"members": members, "messages": messages, "size_bytes": size, "round_period_us": float(period), "reservation": 0.5,
       "idle": idle, "raw_fanout_us": {}, "bus_us": {}, "ratio": {}, "samples": {"raw": len(raw), "bus": len(bus)},
       "cpus": os.cpu_count(), "kernel": os.uname().release}
for name, p in [("p50", .5), ("p99", .99), ("p99.9", .999)]:
    res["raw_fanout_us"][name] = round(pct(raw, p), 1); res["bus_us"][name] = round(pct(bus, p), 1)
    res["ratio"][name] = round(pct(bus, p) / pct(raw, p), 2)
json.dump(res, open(f"{out}/results.json", "w"), indent=2)
print(f"raw UDP 1→{members-1} fan-out, received at all: p50 {res['raw_fanout_us']['p50']} µs  p99 {res['raw_fanout_us']['p99']} µs  p99.9 {res['raw_fanout_us']['p99.9']} µs  ({len(raw)} messages)")
print(f"Carillon, delivered at all {members} members:     p50 {res['bus_us']['p50']} µs  p99 {res['bus_us']['p99']} µs  p99.9 {res['bus_us']['p99.9']} µs  ({len(bus)} messages)")
print(f"ratio bus / raw: p50 {res['ratio']['p50']}×  p99 {res['ratio']['p99']}×  p99.9 {res['ratio']['p99.9']}×   (round {period} µs, reservation 0.5, idle {idle})")
PY
echo "netns-bench: results in $out/results.json" >&2
