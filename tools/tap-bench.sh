#!/usr/bin/env bash
# Offline decode rate of carillon-tap beside tcpdump on the same file, in the
# same run: a synthetic capture of bus traffic (3 members, 2 messages of 64 B
# per slot frame, authenticated), then `carillon-tap -r` and `tcpdump -r -n`,
# both printing one line per packet to /dev/null, best of 3 each.
#
# Usage: tools/tap-bench.sh [--rounds R] [--bin PATH]
#   tools/tap-bench.sh                     # 300,000 rounds = 900,000 frames
#   tools/tap-bench.sh --rounds 1000000
set -euo pipefail
rounds=300000 bin=""
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds=$2; shift 2 ;;
        --bin) bin=$2; shift 2 ;;
        -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "tap-bench: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${bin:-$here/.build/release/carillon-tap}
[ -x "$bin" ] || { echo "tap-bench: $bin not built (swift build -c release --product carillon-tap)" >&2; exit 2; }
command -v tcpdump >/dev/null || { echo "tap-bench: tcpdump missing: apt-get install -y tcpdump" >&2; exit 2; }
dir=$(mktemp -d /tmp/carillon-tap-bench-XXXXXX)
trap 'rm -rf "$dir"' EXIT
(umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$dir/bus.key")   # key files must be 0600
"$bin" --write-sample "$dir/bus.pcap" --sample-rounds "$rounds" --key-file "$dir/bus.key"
frames=$(( rounds * 3 + 1 ))   # and the membership frame naming the run (the tap learns the run key from it)
size=$(stat -c %s "$dir/bus.pcap")
best() {  # best CMD...: the fastest of 3 runs, in nanoseconds
    local best=0 t0 t1 i
    for i in 1 2 3; do
        t0=$(date +%s%N); "$@" > /dev/null 2>&1 || { echo "tap-bench: '$*' failed" >&2; exit 1; }; t1=$(date +%s%N)
        if [ "$best" -eq 0 ] || [ $((t1 - t0)) -lt "$best" ]; then best=$((t1 - t0)); fi
    done
    echo "$best"
}
tap=$(best "$bin" -r "$dir/bus.pcap" -n)
tapkey=$(best "$bin" -r "$dir/bus.pcap" -n --key-file "$dir/bus.key")
tcp=$(best tcpdump -r "$dir/bus.pcap" -n)
rate() { awk -v f="$frames" -v ns="$1" 'BEGIN { printf "%.0f", f / (ns / 1e9) }'; }
echo "tap-bench: $frames frames ($((size / 1048576)) MiB pcap), best of 3, output to /dev/null"
echo "  carillon-tap -r -n                 $(rate "$tap") frames/s ($((tap / 1000000)) ms)"
echo "  carillon-tap -r -n --key-file      $(rate "$tapkey") frames/s ($((tapkey / 1000000)) ms)   (every tag checked)"
echo "  tcpdump -r -n                      $(rate "$tcp") frames/s ($((tcp / 1000000)) ms)"
awk -v a="$tap" -v b="$tcp" 'BEGIN { printf "  carillon-tap / tcpdump speed: %.2f×\n", b / a }'
