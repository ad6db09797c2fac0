#!/usr/bin/env bash
# Checks that the code README.md shows under "Using the library" is the
# example's code: the lines between `// BEGIN README SNIPPET` and
# `// END README SNIPPET` in Examples/TwoMembers/Sources/TwoMembers/main.swift
# must equal the README's ```swift block that follows its
# `<!-- BEGIN Examples/TwoMembers -->` marker (up to `<!-- END Examples/TwoMembers -->`).
# The DocC article Sources/Carillon/Carillon.docc/GettingStarted.md shows the
# same lines and is checked the same way. CI runs the example itself
# (.ci/run), so the code shown is code that runs.
set -euo pipefail
cd "$(dirname "$0")/.."

example=Examples/TwoMembers/Sources/TwoMembers/main.swift
expected=$(mktemp)
shown=$(mktemp)
trap 'rm -f "$expected" "$shown"' EXIT

sed -n '/^\/\/ BEGIN README SNIPPET$/,/^\/\/ END README SNIPPET$/p' "$example" | sed '1d;$d' > "$expected"
if [[ ! -s "$expected" ]]; then echo "no snippet between the markers in $example"; exit 1; fi

status=0
for document in README.md Sources/Carillon/Carillon.docc/GettingStarted.md; do
    # The ```swift block between the markers, without its fences.
    sed -n '/^<!-- BEGIN Examples\/TwoMembers -->$/,/^<!-- END Examples\/TwoMembers -->$/p' "$document" \
        | sed -n '/^```swift$/,/^```$/p' | sed '1d;$d' > "$shown"
    if [[ ! -s "$shown" ]]; then
        echo "$document: no \`\`\`swift block between <!-- BEGIN Examples/TwoMembers --> and <!-- END Examples/TwoMembers -->"
        status=1
    elif ! diff -u --label "$example (between the markers)" --label "$document" "$expected" "$shown"; then
        echo "$document shows other code than $example: copy the lines between the markers into it"
        status=1
    else
        echo "$document shows $example's $(wc -l < "$expected") lines"
    fi
done
exit $status
