#!/usr/bin/env bash
# Every carillon-bench scenario in turn, release build, results into one
# directory, then docs/benchmarks.md regenerated from them.
#
# Usage (as root for namespaces; corosync needs `apt-get install -y corosync libcpg4`,
# services etcd-server and etcd-client, which it installs itself as root):
#   tools/bench.sh [--out DIR] [--doc FILE] [--quick] [SCENARIO...]
# Examples:
#   sudo tools/bench.sh                       # all scenarios into docs/bench, then the report
#   sudo tools/bench.sh interference corosync # just these two, then the report
#   sudo tools/bench.sh --quick --out /tmp/b --doc /tmp/b/benchmarks.md
set -euo pipefail
cd "$(dirname "$0")/.."
out=docs/bench doc=docs/benchmarks.md quick=() scenarios=()
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out=$2; shift 2 ;;
        --doc) doc=$2; shift 2 ;;
        --quick) quick=(--quick); shift ;;
        -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        baseline|ordered|throughput|interference|corosync|idle|latency|services) scenarios+=("$1"); shift ;;
        *) echo "bench.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
[ ${#scenarios[@]} -gt 0 ] || scenarios=(baseline ordered throughput interference corosync idle latency services)
source tools/setup.sh
swift build -c release --product carillon
swift build -c release --product carillon-bench
for scenario in "${scenarios[@]}"; do
    echo "=== carillon-bench $scenario" >&2
    .build/release/carillon-bench "$scenario" --out "$out" "${quick[@]}"
done
rm -rf "$out/work"
.build/release/carillon-bench report --results "$out" --doc "$doc"
