#!/usr/bin/env bash
# The main job: a local cluster with ordered delivery and a latency summary —
# `carillon demo`: 3 member processes on 127.0.0.1 with authenticated frames,
# each broadcasting 2,000 messages; checks one identical order everywhere and
# prints the broadcast-to-delivery latency. Extra arguments go to `carillon demo`
# (see `carillon demo --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/setup.sh
swift build -c release --product carillon >&2
exec .build/release/carillon demo "$@"
