#!/usr/bin/env bash
# Builds N hosts in network namespaces on a bridge, runs one `carillon node`
# per host, gathers every member's delivery log, checks that all members
# delivered the same (sender, sequence) list with no gaps, and removes every
# namespace and process it made on every exit path (normal, error, Ctrl-C).
#
# Usage (as root):
#   tools/netns-cluster.sh [--members N] [--loss PCT] [--shape MBIT [--tbf]] [--messages M]
#                          [--rate PER_S] [--size BYTES] [--idle STRATEGY]
#                          [--period-us US] [--max-frame-bytes B] [--multicast] [--suspicion-slots K]
#                          [--bin PATH] [--out DIR] [--timeout S]
# Examples:
#   tools/netns-cluster.sh --members 3 --loss 5
#   tools/netns-cluster.sh --members 5 --loss 5 --messages 2000 --out /tmp/run1
#   tools/netns-cluster.sh --members 3 --shape 200      # HTB 200 Mbit/s on every host's egress
#   tools/netns-cluster.sh --members 3 --shape 200 --tbf   # the same bottleneck with TBF
#   tools/netns-cluster.sh --members 4 --multicast      # one send per frame to group 239.77.0.1:7400
#   tools/netns-cluster.sh --members 3 --rate 0 --messages 200000 --max-frame-bytes 8972 --bin .build/release/carillon
#                                                       # throughput: jumbo frames (veth MTU raised to fit)
# Namespaces are named crln-<pid>-h<i> (hosts) and crln-<pid>-br (the bridge);
# addresses are 10.<200+pid%50>.0.<i+1>/24, inside those namespaces only.
set -euo pipefail

members=3 loss=0 shape="" messages=1000 rate=2000 size=64 idle=blocking period_us=200 timeout=60
bin="" out=""
while [ $# -gt 0 ]; do
    case "$1" in
        --members) members=$2; shift 2 ;;
        --loss) loss=$2; shift 2 ;;
        --shape) shape=$2; shift 2 ;;
        --tbf) shaper=tbf; shift ;;
        --messages) messages=$2; shift 2 ;;
        --rate) rate=$2; shift 2 ;;
        --size) size=$2; shift 2 ;;
        --idle) idle=$2; shift 2 ;;
        --period-us) period_us=$2; shift 2 ;;
        --bin) bin=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --timeout) timeout=$2; shift 2 ;;
        --suspicion-slots) suspicion_slots=$2; shift 2 ;;
        --multicast) multicast=1; shift ;;
        --max-frame-bytes) max_frame_bytes=$2; mtu=$(( $2 + 28 > 1500 ? $2 + 28 : 1500 )); shift 2 ;;
        -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "netns-cluster: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
here=$(cd "$(dirname "$0")/.." && pwd)
source "$here/tools/lib/netns.sh"
[[ "$members" =~ ^[0-9]+$ ]] && [ "$members" -ge 1 ] && [ "$members" -le 50 ] || { echo "netns-cluster: --members must be 1...50" >&2; exit 2; }
[[ "$loss" =~ ^[0-9]+$ ]] && [ "$loss" -le 99 ] || { echo "netns-cluster: --loss is a whole percentage 0...99" >&2; exit 2; }

netns_prepare debug crln-netns

netns_up
netns_config "$out/bus.json" "$period_us" "$idle"

echo "netns-cluster: $members hosts ($prefix-h*), $([ "$multicast" -eq 1 ] && echo "multicast 239.77.0.1" || echo unicast fan-out), loss ${loss}%, ${shape:-unshaped}${shape:+ Mbit/s}, $messages msgs × $size B at $rate/s each, idle $idle, logs in $out" >&2
for i in $(seq 0 $((members - 1))); do
    ip netns exec "$prefix-h$i" "$bin" node --no-services --config "$out/bus.json" --member "h$i" --send "$messages" --rate "$rate" \
        --size "$size" --expect $((messages * members)) --timeout "$timeout" --log "$out/h$i.log" 2> "$out/h$i.err" &
    pids+=($!)
done
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
pids=()

# Every member's (sender, sequence) list must be identical, complete and gap-free.
# (Lines starting with "#" are view events.)
grep -v '^#' "$out/h0.log" | cut -d' ' -f1,2 > "$out/order.h0"
status=0
for i in $(seq 0 $((members - 1))); do
    grep -v '^#' "$out/h$i.log" | cut -d' ' -f1,2 > "$out/order.h$i"
    count=$(wc -l < "$out/order.h$i")
    if [ "$count" -ne $((messages * members)) ]; then echo "h$i delivered $count of $((messages * members))" >&2; status=1; fi
    if ! cmp -s "$out/order.h0" "$out/order.h$i"; then echo "h$i's order differs from h0's" >&2; status=1; fi
    for s in $(seq 0 $((members - 1))); do
        if ! awk -v s="$s" '$1 == s { if ($2 != ++n) exit 1 } END { exit 0 }' "$out/order.h$i"; then
            echo "h$i: sender $s's sequences have a gap or are out of order" >&2; status=1
        fi
    done
    sed "s/^/h$i: /" "$out/h$i.err" >&2
done
[ "$failed" -eq 0 ] || status=1
[ "$status" -eq 0 ] && echo "netns-cluster: OK — $members members delivered the same $((messages * members)) messages in the same order" >&2
for i in $(seq 0 $((members - 1))); do
    grep -v '^#' "$out/h$i.log" | awk -v h="h$i" 'NR == 1 { first = $4 } { last = $4; n++ } END { if (last > first) printf "%s: %d messages delivered in %.3f s = %.0f msg/s\n", h, n, (last - first) / 1e9, n / ((last - first) / 1e9) }' >&2
done
exit $status
