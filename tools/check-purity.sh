#!/usr/bin/env bash
# The purity rule (docs/architecture.md): the protocol targets import only the
# Swift standard library and each other, so they run unchanged in the
# simulator and never reach a clock, a socket or Foundation. Checks both what
# Package.swift lets them depend on and what their sources import; exits 1 and
# names each offending file and line.
#     tools/check-purity.sh          # check
set -euo pipefail
cd "$(dirname "$0")/.."

pure=(CarillonWire CarillonSchedule CarillonOrdering CarillonMembership CarillonServices CarillonBulk CarillonSimulation)
# Modules of the standard library itself (no Foundation, no Glibc, no Dispatch).
stdlib=(Swift _Concurrency _StringProcessing Synchronization)
allowed=" ${pure[*]} ${stdlib[*]} "
status=0

# 1. Package.swift: a pure target depends on pure targets only (no products, no system libraries).
manifest=$(swift package dump-package)
for target in "${pure[@]}"; do
    deps=$(python3 -c '
import json, sys
m = json.loads(sys.stdin.read())
t = next((t for t in m["targets"] if t["name"] == sys.argv[1]), None)
if t is None:
    print("MISSING"); sys.exit()
for d in t.get("dependencies", []):
    for kind, v in d.items():
        print(v[0] if kind in ("byName", "target") else "product:" + v[0])
' "$target" <<<"$manifest")
    if [[ "$deps" == MISSING ]]; then echo "check-purity: target $target is not in Package.swift (update the list in $0)"; status=1; continue; fi
    for dep in $deps; do
        if [[ "$allowed" != *" $dep "* ]]; then
            echo "check-purity: Package.swift: pure target $target depends on $dep; pure targets depend only on: ${pure[*]}"
            status=1
        fi
    done
done

# 2. Sources: every import names an allowed module (any attribute or kind form:
#    `@_spi(X) import M`, `@preconcurrency import M`, `import struct M.T`, `import M.Sub`).
for target in "${pure[@]}"; do
    while IFS=: read -r file line text; do
        module=$(sed -E 's/^[[:space:]]*(@[A-Za-z_]+(\([^)]*\))?[[:space:]]+)*import[[:space:]]+((typealias|struct|class|enum|protocol|let|var|func)[[:space:]]+)?([A-Za-z_][A-Za-z0-9_]*).*/\5/' <<<"$text")
        if [[ "$allowed" != *" $module "* ]]; then
            echo "check-purity: $file:$line: pure target $target imports $module; use only the standard library and ${pure[*]}"
            status=1
        fi
    done < <(grep -rnE '^[[:space:]]*(@[A-Za-z_]+(\([^)]*\))?[[:space:]]+)*import[[:space:]]' "Sources/$target" --include='*.swift' || true)
done

if [[ $status == 0 ]]; then echo "check-purity: OK — ${#pure[@]} pure targets import only the standard library and each other"; fi
exit $status
