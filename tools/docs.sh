#!/usr/bin/env bash
# DocC for what `import Carillon` gives: the Carillon catalog
# (Sources/Carillon/Carillon.docc: overview, "Getting started" on
# Examples/TwoMembers) and the API of every module the umbrella re-exports, as
# one combined archive (swift-docc-plugin). The umbrella's own symbol graph
# does not carry the re-exported modules' symbols, so each module is a target
# here, and the catalog links to them with a leading slash
# (``/CarillonRuntime/Member``). Prints the DocC warning count; a new warning in
# the catalog fails the run.
#
#   tools/docs.sh                    # archive: .build-docs/plugins/Swift-DocC/outputs/Carillon.doccarchive
#   tools/docs.sh --max-warnings N   # fail when DocC warns more than N times (default: no limit)
set -euo pipefail
cd "$(dirname "$0")/.."
max_warnings=""
if [[ "${1:-}" == "--max-warnings" ]]; then max_warnings=$2; fi

umbrella=$(sed -n 's/^@_exported import \(Carillon[A-Za-z]*\)$/\1/p' Sources/Carillon/Carillon.swift)
targets=(--target Carillon)
for module in $umbrella; do targets+=(--target "$module"); done

log=$(mktemp)
trap 'rm -f "$log"' EXIT
swift package --scratch-path .build-docs generate-documentation "${targets[@]}" --enable-experimental-combined-documentation 2>&1 | tee "$log" \
    | grep -E "^(Building|Finished building|Generated)|^  /" || true
status=${PIPESTATUS[0]}
if [[ $status -ne 0 ]]; then tail -n 40 "$log"; echo "generate-documentation failed ($status)"; exit "$status"; fi

# DocC's own warnings start a line with "warning:"; compiler warnings name a .swift file first.
warnings=$(grep -c '^warning:' "$log" || true)
catalog=$(grep -A1 '^warning:' "$log" | grep -c -- '--> \(Carillon\|GettingStarted\)\.md' || true)
grep -A1 '^warning:' "$log" | grep -v '^--$' | paste - - | sed 's/ *--> */ at /' || true
echo "DocC: $(( ${#targets[@]} / 2 )) modules, $warnings warning(s), $catalog in the Carillon catalog"
if [[ $catalog -gt 0 ]]; then echo "the Carillon catalog has DocC warnings"; exit 1; fi
if [[ -n "$max_warnings" && $warnings -gt $max_warnings ]]; then echo "more than $max_warnings DocC warnings"; exit 1; fi
