#!/usr/bin/env bash
# A bus beside real work (issue 12, defect 7): 3 `carillon node` processes on
# 127.0.0.1 with the default configuration (100 µs rounds, spin-then-park,
# authenticated, the default scheduling), while a CPU hog (`yes > /dev/null`,
# normal priority) runs on every core. Two runs of SECONDS each: idle (nothing
# broadcast), then loaded (every member broadcasts RATE messages/s of 64 B).
# For each run it counts, from the members' logs, inside the window from the
# bus's first round to SECONDS later (start-up and shutdown excluded): views
# installed after the first, exclusions, suspicions; and prints each member's
# closing report (views, NAKs, late slots, clock correction, scheduling).
# Goal: 0 view changes in each run.
#
# Usage: tools/hog-churn.sh [--seconds S] [--rate PER_S] [--hogs N] [--runs "idle loaded"]
#                           [--set KEY=JSON]... [--bin PATH] [--out DIR]
#   --hogs N      hog processes (default: one per core, `nproc`; 0: a quiet host)
#   --set K=V     add or override a configuration key, e.g. --set scheduling='"normal"'
#                 --set suspicion_floor_us=2000 (V is JSON)
# Example:
#   swift build -c release --product carillon && tools/hog-churn.sh
# Every hog and member is killed on every exit path.
set -euo pipefail

seconds=60 rate=1000 hogs=$(nproc) runs="idle loaded" bin="" out="" sets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds=$2; shift 2 ;;
        --rate) rate=$2; shift 2 ;;
        --hogs) hogs=$2; shift 2 ;;
        --runs) runs=$2; shift 2 ;;
        --set) sets+=("$2"); shift 2 ;;
        --bin) bin=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "hog-churn: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${bin:-$here/.build/release/carillon}
[ -x "$bin" ] || { echo "hog-churn: $bin not built (swift build -c release --product carillon)" >&2; exit 2; }
out=${out:-$(mktemp -d /tmp/hog-churn-XXXXXX)}
mkdir -p "$out"

pids=()
cleanup() {
    local status=$? p
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    exit $status
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$bin" keygen > "$out/bus.key"
chmod 600 "$out/bus.key"
base=$(( 20000 + ($$ % 2000) * 10 ))

for i in $(seq 1 "$hogs"); do yes > /dev/null & pids+=($!); done
echo "hog-churn: $hogs hog(s) running (yes > /dev/null, normal priority); load before start: $(cut -d' ' -f1-3 /proc/loadavg); logs in $out" >&2

for run in $runs; do
    case "$run" in idle) send=0 ;; loaded) send=$(( rate * (seconds + 2) )) ;; *) echo "hog-churn: runs are idle and loaded" >&2; exit 2 ;; esac
    start_ns=$(( $(date +%s%N) + 1500000000 ))
    {
        echo '{ "members": ['
        echo "  {\"name\": \"a\", \"address\": \"127.0.0.1:$base\"},"
        echo "  {\"name\": \"b\", \"address\": \"127.0.0.1:$((base + 2))\"},"
        echo "  {\"name\": \"c\", \"address\": \"127.0.0.1:$((base + 4))\"}"
        echo "], \"start_at_ns\": $start_ns,"
        for kv in "${sets[@]}"; do echo "  \"${kv%%=*}\": ${kv#*=},"; done
        echo '  "authentication": {"key_file": "bus.key"} }'
    } > "$out/$run.json"
    members=()
    for m in a b c; do
        "$bin" node --no-services --config "$out/$run.json" --member "$m" --send "$send" --rate "$rate" --timeout $((seconds + 2)) \
            --log "$out/$run-$m.log" 2> "$out/$run-$m.err" &
        pids+=($!); members+=($!)
    done
    for p in "${members[@]}"; do wait "$p" || true; done
    end_ns=$(( start_ns + seconds * 1000000000 ))
    total=0
    for m in a b c; do
        # Events inside [first round, first round + SECONDS).
        counts=$(awk -v a="$start_ns" -v b="$end_ns" '$1 == "#" && $4 >= a && $4 < b {
                if ($2 == "view" || $2 == "state") v++; if ($2 == "excluded") x++; if ($2 == "suspected") s++ }
            $1 != "#" { d++ } END { printf "%d %d %d %d", v, x, s, d }' "$out/$run-$m.log")
        set -- $counts
        total=$(( total + $1 ))
        echo "hog-churn: $run, member $m: $1 views installed, $2 exclusions, $3 suspicions in ${seconds} s; $4 deliveries logged" >&2
        sed -n 's/^ *//; /views:\|frames:\|agent thread/p' "$out/$run-$m.err" | sed "s/^/hog-churn:   $m: /" >&2
    done
    # View changes of the cluster: distinct epochs installed (or joined) inside the window, at any member.
    changes=$(cat "$out/$run-"[abc].log | awk -v a="$start_ns" -v b="$end_ns" '$1 == "#" && ($2 == "view" || $2 == "state") && $4 >= a && $4 < b { e[$3] = 1 } END { print length(e) }')
    echo "hog-churn: RESULT $run: $changes view changes ($total installations over 3 members) in ${seconds} s, $hogs hog(s), load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/summary.txt" >&2
done
