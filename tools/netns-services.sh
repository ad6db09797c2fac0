#!/usr/bin/env bash
# The services (locks, objects) with separate `carillon node` processes in
# network namespaces, clients on every host through the CLI:
#   1. lock: every host runs `carillon lock` in a loop on one lock; the holder's
#      node is killed with kill -9 while it holds the lock; the next waiter gets
#      it with a larger fencing token; grants never overlap, except a grant
#      whose holder lost it — the killed holder's, or one whose node was left
#      out of a view meanwhile (two cores and five nodes: it happens) — whose
#      command may still run until its CLI notices (it then exits 75): that is
#      what the token is for; the killed node rejoins.
#   2. counters: every host adds 1 to one counter --adds times; every host reads
#      exactly members × adds.
#   3. joiner: one node is killed, the store is filled (--keys keys of --bytes),
#      the node rejoins with --join and must list the same keys and versions as
#      the others, and read the last key locally. With --traffic RATE every node
#      also broadcasts RATE test messages/s and logs them; the longest gap
#      between deliveries at h0 while the joiner catches up is printed.
# Prints OK lines and exits 0, or FAILED and the reason.
#
# Usage (as root):
#   tools/netns-services.sh [--members N] [--rounds R] [--adds K] [--keys K] [--bytes B] [--traffic RATE]
#                           [--bin PATH] [--out DIR]
# Examples:
#   tools/netns-services.sh
#   tools/netns-services.sh --members 5 --keys 2000 --bin .build/release/carillon
# Defaults: 3 members, 6 lock rounds per host, 20 adds per host, 500 keys of 512 B;
# round period 100 µs, idle blocking (2 cores), promise ordering, authenticated frames.
set -euo pipefail

members=3 rounds=6 adds=20 keys=500 bytes=512 traffic=0 bin="" out="" loss=0 shape=""
while [ $# -gt 0 ]; do
    case "$1" in
        --members) members=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --adds) adds=$2; shift 2 ;;
        --keys) keys=$2; shift 2 ;;
        --bytes) bytes=$2; shift 2 ;;
        --traffic) traffic=$2; shift 2 ;;
        --bin) bin=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "netns-services: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
[[ "$members" =~ ^[0-9]+$ ]] && [ "$members" -ge 3 ] && [ "$members" -le 9 ] || { echo "netns-services: --members must be 3...9" >&2; exit 2; }
here=$(cd "$(dirname "$0")/.." && pwd)
source "$here/tools/lib/netns.sh"
prefix="crlsv-$$"
netns_prepare release crln-services
netns_up
netns_config "$out/bus.json" 100 blocking

declare -A node_pid
runs=0
sock() { echo "$out/h$1.sock"; }
start_node() {  # start_node I [--join]
    local i=$1; shift
    runs=$((runs + 1))
    local send=()
    [ "$traffic" -gt 0 ] && send=(--send 1000000000 --rate "$traffic" --log "$out/h$i-$runs.log")
    ip netns exec "$prefix-h$i" "$bin" node --config "$out/bus.json" --member "h$i" --client-socket "$(sock "$i")" \
        "${send[@]}" "$@" 2> "$out/h$i-$runs.err" > /dev/null &
    node_pid[$i]=$!
    pids+=($!)
}
client() {  # client I "SUBCOMMAND" ARGS...: the CLI on host I, talking to its node
    local i=$1 command=$2; shift 2
    ip netns exec "$prefix-h$i" "$bin" $command --socket "$(sock "$i")" "$@"
}
now_ns() { date +%s%N; }
fail() { echo "netns-services: FAILED — $*" >&2; tail -n 5 "$out"/*.err >&2 || true; exit 1; }
wait_until() {  # wait_until SECONDS DESCRIPTION COMMAND...
    local limit=$(( $(now_ns) + $1 * 1000000000 )) what=$2; shift 2
    until "$@" 2>/dev/null; do
        [ "$(now_ns)" -lt "$limit" ] || fail "waited too long for: $what"
        sleep 0.1
    done
}
# An ordered request answered: the node serves its socket and is in a primary view.
serves() { client "$1" "locks" >/dev/null; }
all=$(seq 0 $((members - 1)))
echo "netns-services: $members members; out $out" >&2
for i in $all; do start_node "$i"; done
for i in $all; do wait_until 30 "node h$i serving its socket in a primary view" serves "$i"; done
echo "netns-services: all $members nodes serve" >&2

# 1. Lock contention across hosts, with kill -9 of the holder's node: h1 takes
#    the lock and holds it; contenders on every host queue; h1's node is killed.
grants="$out/grants"
: > "$grants"
victim=1
hold() {  # hold I SECONDS: one grant, logged
    client "$1" lock L -- sh -c "echo \"\$CARILLON_LOCK_TOKEN start \$(date +%s%N) h$1\" >> $grants; sleep $2; echo \"\$CARILLON_LOCK_TOKEN end \$(date +%s%N) h$1\" >> $grants" \
        || echo "exit $? h$1" >> "$grants"
}
hold "$victim" 60 &
holder=$!
holder_node() { client 0 locks | awk '$1 == "L" { split($4, a, "/"); print a[1]; exit }'; }
held_by_victim() { [ "$(holder_node)" = "$victim" ]; }
wait_until 30 "h$victim holding L" held_by_victim
lockers=()
for i in $all; do
    ( for r in $(seq 1 "$rounds"); do hold "$i" 0.1; done ) &
    lockers+=($!)
done
waiters() { client 0 locks | awk '$1 == "L" { n = split($0, w, "exclusive") - 2; print n; exit }'; }
queued() { [ "$(waiters)" -ge "$members" ]; }
wait_until 30 "every host waiting for L" queued
killed_at=$(now_ns)
kill -9 "${node_pid[$victim]}"
wait "${node_pid[$victim]}" 2>/dev/null || true
echo "netns-services: killed node h$victim (holding L, $members waiters) at $killed_at" >&2
# The next grant after the kill comes from a survivor.
next_grant() { awk -v t="$killed_at" '$2 == "start" && $3 > t { print $3, $1; exit }' "$grants"; }
granted_again() { [ -n "$(next_grant)" ]; }
wait_until 30 "a grant after the kill" granted_again
set -- $(next_grant)
victim_token=$(awk -v h="h$victim" '$2 == "start" && $4 == h { print $1; exit }' "$grants")
[ "$2" -gt "$victim_token" ] || fail "the grant after the kill has token $2, not above the killed holder's $victim_token"
echo "netns-services: OK — next grant $(( ($1 - killed_at) / 1000000 )) ms after the kill, token $2 > $victim_token" >&2
wait "$holder" || true
start_node "$victim" --join
wait_until 60 "node h$victim back" serves "$victim"
for p in "${lockers[@]}"; do wait "$p" || true; done
# Tokens increase in grant order; holds do not overlap, except a lost one's:
# a CLI that exits 75 lost the grant it held (each host holds one at a time,
# so that is the host's last grant), and its command may have run on past
# the next grant until the CLI heard (the fencing token is for exactly that).
awk -v victim="h$victim" '
    $2 == "start" { token[$1] = $1; start[$1] = $3; host[$1] = $4; order[n++] = $1; latest[$4] = $1 }
    $2 == "end" { end[$1] = $3 }
    $1 == "exit" && $2 == 75 && ($3 in latest) { lost[latest[$3]] = 1; losses++ }
    END {
        for (k = 1; k < n; k++) {
            a = order[k - 1]; b = order[k]
            if (b + 0 <= a + 0) { print "tokens not increasing: " a " then " b; bad = 1 }
            if ((a in end) && end[a] > start[b] && !(a in lost)) { print "grants overlap: token " a " (" host[a] ") ends after token " b " (" host[b] ") starts"; bad = 1 }
            if (!(a in end) && host[a] != victim && !(a in lost)) { print "token " a " of " host[a] " never ended"; bad = 1 }
        }
        print n " grants (" losses + 0 " lost by their holders)"
        exit bad
    }' "$grants" > "$out/lock-check.txt" || { cat "$out/lock-check.txt" >&2; fail "lock safety"; }
grep -q "^exit 75 h$victim" "$grants" || fail "the killed holder's lock command did not report the lost lock (exit 75)"
echo "netns-services: OK — lock: $(tail -n 1 "$out/lock-check.txt") in increasing token order, none overlapping except lost ones; the killed holder's CLI exited 75" >&2

# 2. Counters from every host sum exactly.
adders=()
for i in $all; do
    ( for k in $(seq 1 "$adds"); do client "$i" "kv add" ctr 1 > /dev/null || exit 1; done ) &
    adders+=($!)
done
for p in "${adders[@]}"; do wait "$p" || fail "an add failed"; done
expected=$((members * adds))
sum=$(client 0 "kv add" ctr 0)
[ "$sum" = "$expected" ] || fail "counter is $sum, expected $expected"
for i in $all; do [ "$(client "$i" "kv add" ctr 0)" = "$expected" ] || fail "h$i reads another sum"; done
echo "netns-services: OK — counter: $members hosts × $adds adds = $sum at every host" >&2

# 3. A joiner catches up on a large store.
joiner=$((members - 1))
kill -9 "${node_pid[$joiner]}"
wait "${node_pid[$joiner]}" 2>/dev/null || true
client 0 "kv load" --keys "$keys" --bytes "$bytes" bulk/ >&2 || fail "kv load failed"
join_at=$(now_ns)
start_node "$joiner" --join
wait_until 300 "the joiner h$joiner serving" serves "$joiner"
served_at=$(now_ns)
if [ "$traffic" -gt 0 ]; then
    sleep 1
    # Longest gap between consecutive deliveries at h0 from the restart to 1 s after the joiner served.
    gap=$(awk -v a="$join_at" -v b="$((served_at + 1000000000))" '$1 != "#" && $4 >= a && $4 <= b { if (last) { g = $4 - last; if (g > m) m = g }; last = $4; n++ }
        END { printf "%.2f ms over %d deliveries", m / 1e6, n }' "$out/h0-1.log")
    echo "netns-services: joiner: longest gap between deliveries at h0 while h$joiner caught up: $gap (round period 0.1 ms)" >&2
fi
echo "netns-services: joiner: serving $(( (served_at - join_at) / 1000000 )) ms after its restart" >&2
client 0 "kv list" bulk/ > "$out/list-0.txt"
client "$joiner" "kv list" bulk/ > "$out/list-$joiner.txt"
[ "$(wc -l < "$out/list-0.txt")" -eq "$keys" ] || fail "h0 lists $(wc -l < "$out/list-0.txt") keys, expected $keys"
cmp -s "$out/list-0.txt" "$out/list-$joiner.txt" || fail "the joiner lists other keys or versions than h0"
client "$joiner" "kv get" --stale "bulk/$((keys - 1))" > /dev/null || fail "the joiner's replica lacks bulk/$((keys - 1))"
echo "netns-services: OK — joiner: h$joiner rejoined and holds the same $keys keys ($(( keys * bytes / 1024 )) KiB of values) and versions" >&2
for i in $all; do kill -TERM "${node_pid[$i]}" 2>/dev/null || true; done
for i in $all; do wait "${node_pid[$i]}" 2>/dev/null || true; done
pids=()
echo "netns-services: OK — all checks passed" >&2
