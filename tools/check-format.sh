#!/usr/bin/env bash
# Formatting is checked, not argued: `swift format` (shipped with the
# toolchain) with the repository's .swift-format (4-space indent, 150
# columns, layout only — no lint rules). Exits 1 and lists the files and
# lines that differ from the formatter's output.
#     tools/check-format.sh          # check (CI)
#     tools/check-format.sh --fix    # rewrite the files in place
set -euo pipefail
cd "$(dirname "$0")/.."
paths=(Package.swift Sources Tests Benchmarks/Package.swift Benchmarks/Benchmarks Fuzz/Package.swift Fuzz/Sources)
[[ -d Examples ]] && while IFS= read -r d; do paths+=("$d"); done < <(find Examples -name '*.swift' -not -path '*/.build*')
if [[ "${1:-}" == "--fix" ]]; then
    swift format format --parallel --recursive --in-place "${paths[@]}"
    echo "check-format: formatted ${paths[*]}"
    exit 0
fi
out=$(swift format lint --parallel --recursive "${paths[@]}" 2>&1 || true)
if [[ -n "$out" ]]; then
    head -n 40 <<<"$out"
    files=$(grep -oE '^[^:]+\.swift' <<<"$out" | sort -u | wc -l)
    echo "check-format: $(wc -l <<<"$out") place(s) in $files file(s) differ from swift format's layout; run tools/check-format.sh --fix"
    exit 1
fi
echo "check-format: OK — every Swift file is laid out as swift format lays it out"
