#!/usr/bin/env bash
# The test command: unit, transcript, property and corpus tests plus a
# 500-seed simulator sweep and the canaries (swift test), then a release
# sweep of 2,000 swarm seeds.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/setup.sh
swift build --build-tests
swift test --skip-build
swift build -c release --product carillon-sim
.build/release/carillon-sim --swarm --seeds 1-2000
