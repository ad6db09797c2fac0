#!/usr/bin/env bash
# Two builds of carillon + carillon-bench, measured in one run, alternating
# (A B A B …) so that drift of the machine falls on both: ordered latency
# (closed loop, 3 members, 64 B, separate processes in network namespaces as
# root, else on loopback) and throughput (3 members, 64 B). Prints each
# round's figures and the medians with the ratio B / A.
#
#     tools/compare-builds.sh BEFORE_DIR AFTER_DIR [ROUNDS]
#
# Each directory holds release `carillon` and `carillon-bench` (the bench
# starts the `carillon` beside it). Used for the transport seam
# (docs/benchmarks.md, "The transport seam"); idle strategy: blocking.
set -euo pipefail
[[ $# -ge 2 ]] || { sed -n 2,12p "$0" >&2; exit 2; }
before=$1 after=$2 rounds=${3:-3}
for d in "$before" "$after"; do
    [[ -x $d/carillon && -x $d/carillon-bench ]] || { echo "compare-builds: $d needs carillon and carillon-bench (release)" >&2; exit 2; }
done
placement=()
[[ $(id -u) -eq 0 ]] || placement=(--loopback)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for ((i = 1; i <= rounds; i++)); do
    for side in A B; do
        dir=$before
        [[ $side == B ]] && dir=$after
        "$dir/carillon-bench" ordered "${placement[@]}" --members 3 --sizes 64 --periods-us 100 --reservations 0.5 \
            --rates "" --messages 3000 --gap-us 200 --out "$out/$side-$i" > "$out/$side-$i.log" 2>&1
        "$dir/carillon-bench" throughput "${placement[@]}" --members 3 --sizes 64 --messages 200000 \
            --out "$out/$side-$i" >> "$out/$side-$i.log" 2>&1
        echo "round $i $side done" >&2
    done
done
python3 - "$out" "$rounds" <<'EOF'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
fig = {"A": [], "B": []}
for i in range(1, rounds + 1):
    for side in "AB":
        o = json.load(open(f"{out}/{side}-{i}/ordered.json"))["results"][0]["latency"]
        t = json.load(open(f"{out}/{side}-{i}/throughput.json"))["results"][0]["throughput"]["messagesPerSecondPerMember"]
        row = (o["p50Micros"], o["p99Micros"], sum(t) / len(t))
        fig[side].append(row)
        print(f"round {i} {side}: ordered p50 {row[0]:.1f} µs p99 {row[1]:.1f} µs; throughput {row[2]:.0f} msgs/s per member")
names = ["ordered p50 µs", "ordered p99 µs", "throughput msgs/s per member"]
for k, name in enumerate(names):
    a = statistics.median(r[k] for r in fig["A"])
    b = statistics.median(r[k] for r in fig["B"])
    print(f"median {name}: A {a:.1f}  B {b:.1f}  B/A {b / a:.3f}")
EOF
