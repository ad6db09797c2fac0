#!/usr/bin/env bash
# Checks that no top-level public name of the library targets (every
# Sources/Carillon* Swift target) shadows a top-level name of the standard
# library, Swift Concurrency, Foundation, Dispatch or Synchronization — or of
# the packages the library's API uses (swift-log, swift-metrics). An
# application that writes `import Carillon` beside `import Foundation` would
# otherwise get `Clock` (say) resolving to Carillon's type, and the standard
# library's protocol of that name would need qualifying (issue 15).
#
# It also checks that no two modules the umbrella re-exports (`@_exported
# import` in Sources/Carillon/Carillon.swift) declare the same top-level name:
# `import Carillon` would make it ambiguous.
#
# The library's names come from a grep of top-level declarations (column 0:
# nested types do not shadow). The reference names come from the toolchain's
# own symbol graphs (swift-symbolgraph-extract), plus a short list for the
# packages and for names an application meets as nested types (`Instant`).
#
#   tools/check-shadowing.sh           # prints the checked names' count; exits 1 on a clash
#   tools/check-shadowing.sh --list    # also lists the library's public names
set -euo pipefail
cd "$(dirname "$0")/.."

graphs=$(mktemp -d)
trap 'rm -rf "$graphs"' EXIT
triple="$(uname -m)-unknown-linux-gnu"
for module in Swift _Concurrency _StringProcessing Foundation FoundationEssentials Dispatch Synchronization; do
    swift-symbolgraph-extract -module-name "$module" -target "$triple" -output-dir "$graphs" -minimum-access-level public \
        > /dev/null 2> "$graphs/$module.err" || { echo "swift-symbolgraph-extract failed for $module:"; cat "$graphs/$module.err"; exit 1; }
done

python3 - "$graphs" "${1:-}" <<'PY'
import glob, json, os, re, sys

graphs, mode = sys.argv[1], sys.argv[2]

# Top-level names of the toolchain's modules (and of their extensions to each other).
reference = {}
for path in glob.glob(os.path.join(graphs, "*.symbols.json")):
    module = os.path.basename(path).split(".symbols.json")[0]
    with open(path) as f:
        graph = json.load(f)
    for symbol in graph["symbols"]:
        components = symbol["pathComponents"]
        if len(components) == 1 and not components[0].startswith("_"):
            name = re.sub(r"\(.*", "", components[0])
            reference.setdefault(name, module.split("@")[0])
# Names from the packages the library's API uses, and common nested names.
for name, where in [("Logger", "swift-log"), ("Counter", "swift-metrics"), ("FloatingPointCounter", "swift-metrics"),
                    ("Gauge", "swift-metrics"), ("Meter", "swift-metrics"), ("Recorder", "swift-metrics"),
                    ("Timer", "swift-metrics (and Foundation)"), ("Metrics", "swift-metrics"), ("Logging", "swift-log"),
                    ("Instant", "ContinuousClock.Instant, SuspendingClock.Instant")]:
    reference.setdefault(name, where)

# The library targets' top-level public declarations.
declaration = re.compile(r"^(?:@[\w.]+(?:\([^)]*\))?\s+)*public\s+(?:(?:final|indirect|nonisolated)\s+)*"
                         r"(struct|enum|class|protocol|actor|typealias|func|let|var)\s+`?([A-Za-z_]\w*)")
names, targets = {}, {}
for target in sorted(glob.glob("Sources/Carillon*")):
    for path in sorted(glob.glob(os.path.join(target, "**", "*.swift"), recursive=True)):
        with open(path) as f:
            for number, line in enumerate(f, 1):
                match = declaration.match(line)
                if match:
                    names.setdefault(match.group(2), []).append(f"{path}:{number} ({match.group(1)})")
                    targets.setdefault(match.group(2), set()).add(os.path.basename(target))
with open("Sources/Carillon/Carillon.swift") as f:
    umbrella = set(re.findall(r"^@_exported import (\w+)", f.read(), re.M)) | {"Carillon"}

clashes = sorted(name for name in names if name in reference)
if mode == "--list":
    for name in sorted(names):
        print(name, names[name][0])
ambiguous = sorted(name for name in names if len(targets[name] & umbrella) > 1)
for name in clashes:
    print(f"shadowing: public {name} ({', '.join(names[name])}) hides {reference[name]}'s {name}")
for name in ambiguous:
    print(f"ambiguous under import Carillon: public {name} in {', '.join(names[name])}")
print(f"{len(names)} public top-level names in {len(glob.glob('Sources/Carillon*'))} library targets checked against "
      f"{len(reference)} standard library, Concurrency, Foundation, Dispatch, Synchronization and package names: "
      f"{len(clashes)} clash(es); {len(umbrella)} modules under import Carillon: {len(ambiguous)} ambiguous name(s)")
sys.exit(1 if clashes or ambiguous else 0)
PY
