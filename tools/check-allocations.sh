#!/usr/bin/env bash
# The hot path allocates nothing per message, checked: runs the hot-path
# benchmarks of Benchmarks/ (release, malloc interposer) and compares each
# one's p90 mallocs per operation with the value stored in
# Benchmarks/Thresholds/ (0: one allocation per operation more fails).
# Exit 0 when equal, 1 on a regression; an improvement (exit 4 from the
# plugin) passes with a note to store the new figure.
#     tools/check-allocations.sh              # check (CI)
#     tools/check-allocations.sh --update     # store the current figures
set -uo pipefail
cd "$(dirname "$0")/../Benchmarks"
filter='empty|wire-.*|ordering-per-message-.*|services-apply-.*|runtime-loopback-.*'
if [[ "${1:-}" == "--update" ]]; then
    exec swift package --scratch-path ../.build-benchmarks --allow-writing-to-package-directory \
        benchmark thresholds update --metric mallocCountTotal --filter "$filter" --no-progress
fi
swift package --scratch-path ../.build-benchmarks benchmark thresholds check \
    --metric mallocCountTotal --filter "$filter" --no-progress 2>&1 | grep -vE '^\s*$|Compiling|Wrapping|Linking|Write ' | tail -n 40
status=${PIPESTATUS[0]}
case $status in
    0) echo "check-allocations: OK — every hot-path benchmark allocates as its stored threshold says (Benchmarks/Thresholds)";;
    4) echo "check-allocations: fewer allocations than stored — store them: tools/check-allocations.sh --update"; status=0;;
    *) echo "check-allocations: FAILED — a hot-path benchmark allocates more per operation than Benchmarks/Thresholds allows (exit $status); find the allocation with: cd Benchmarks && swift package benchmark --filter NAME --metric mallocCountTotal";;
esac
exit $status
