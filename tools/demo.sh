#!/usr/bin/env bash
# The main job: a local cluster with ordered delivery and a latency summary.
# Until the bus runs on real sockets (issue 3) the cluster is the seeded
# simulator: 3 members, 5% loss, duplicates, reordering, partitions and
# drifting clocks, checked for agreement, integrity, order and validity.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/setup.sh
swift build -c release --product carillon-sim >&2
exec .build/release/carillon-sim --seed "${1:-1}" --demo
