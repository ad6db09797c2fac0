#!/usr/bin/env bash
# Checks what Carillon needs on a Debian machine with Swift and installs the
# Debian packages that are missing (as root), or prints the exact apt line.
# Sourced by tools/demo.sh and tools/test.sh; safe to run on its own.
set -euo pipefail

# Debian packages the build needs (libsodium: frame authentication tags;
# libpcap: carillon-tap; libibverbs: the RDMA transport); tools/test.sh adds what the namespace and capture
# tests need.
CARILLON_APT_PACKAGES=(libsodium-dev libpcap-dev libibverbs-dev ${CARILLON_EXTRA_APT_PACKAGES:-})

if ! command -v swift >/dev/null 2>&1; then
    echo "carillon: swift is not on PATH. Install Swift 6.1 or later (swift.org/install) and retry." >&2
    exit 1
fi

missing=()
for package in "${CARILLON_APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then
        echo "carillon: installing ${missing[*]}" >&2
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
    else
        echo "carillon: missing Debian packages. Run as root:" >&2
        echo "  apt-get update && apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
fi
