#!/usr/bin/env bash
# Owned objects across hosts: separate `carillon node` processes in network
# namespaces, clients through the CLI. One object of --size bytes (one
# backup) is created on h0; while a client on h1 keeps writing small values
# at distinct offsets, the object migrates back and forth between hosts over
# the bulk channel:
#   h0 -> h1, h1 -> h0, then h0 -> h2 with h2's node killed (kill -9) while
#   the bytes are on their way: the migration aborts and h0 keeps the object;
#   h2 rejoins (--join), then h0 -> h2 and h2 -> h1.
# Then every write that was acknowledged is read back (from h0) and must hold
# its value, and `carillon verify` checks the nodes' logs of bus traffic
# (--traffic messages/s from every node) agree: same views, same order.
# Prints OK lines and exits 0, or FAILED and the reason.
#
# Usage (as root):
#   tools/netns-migration.sh [--size SIZE] [--traffic RATE] [--shape MBIT] [--bin PATH] [--out DIR]
# Examples:
#   tools/netns-migration.sh
#   tools/netns-migration.sh --size 256MiB --bin .build/release/carillon --out /tmp/migration
# Defaults: 3 members, 64MiB, 200 messages/s from each node, links shaped to
# 400 Mbit/s (HTB; a transfer takes long enough to be interrupted), round
# period 100 µs, idle blocking (2 cores), authenticated frames.
set -euo pipefail

members=3 size=64MiB traffic=200 bin="" out="" loss=0 shape=400 shaper=tbf
while [ $# -gt 0 ]; do
    case "$1" in
        --size) size=$2; shift 2 ;;
        --traffic) traffic=$2; shift 2 ;;
        --shape) shape=$2; shift 2 ;;
        --bin) bin=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "netns-migration: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$size" in
    *GiB) size_bytes=$(( ${size%GiB} << 30 )) ;;
    *MiB) size_bytes=$(( ${size%MiB} << 20 )) ;;
    *KiB) size_bytes=$(( ${size%KiB} << 10 )) ;;
    *) size_bytes=$size ;;
esac
[[ "$size_bytes" =~ ^[0-9]+$ ]] && [ "$size_bytes" -ge 1048576 ] || { echo "netns-migration: --size must be at least 1MiB" >&2; exit 2; }
# Three nodes, a bench writer and 64 MiB copies and digests share two
# cores here: a member descheduled past the 3 ms suspicion floor while an
# object arrives is left out, and the migration with it (4 of 6 runs on
# Dec 3, the build before the transport seam as much as after). What this
# test checks is migration in bus order, not detection speed: a 30 ms floor.
CARILLON_EXTRA_CONFIG=${CARILLON_EXTRA_CONFIG:-'"suspicion_floor_us": 30000,'}
here=$(cd "$(dirname "$0")/.." && pwd)
source "$here/tools/lib/netns.sh"
netns_prepare release crln-migration
netns_up
netns_config "$out/bus.json" 100 blocking

declare -A node_pid node_log
runs=0
sock() { echo "$out/h$1.sock"; }
start_node() {  # start_node I [--join]
    local i=$1; shift
    runs=$((runs + 1))
    node_log[$i]="$out/h$i-$runs.log"
    ip netns exec "$prefix-h$i" "$bin" node --config "$out/bus.json" --member "h$i" --client-socket "$(sock "$i")" --link-mbit "$shape" \
        --send 1000000000 --rate "$traffic" --log "$out/h$i-$runs.log" "$@" 2> "$out/h$i-$runs.err" > /dev/null &
    node_pid[$i]=$!
    pids+=($!)
}
client() {  # client I "SUBCOMMAND" ARGS...: the CLI on host I, talking to its node (at most 120 s: a call that never returns fails the test, saying which)
    local i=$1 command=$2 status=0; shift 2
    timeout --kill-after=5 120 ip netns exec "$prefix-h$i" "$bin" $command --socket "$(sock "$i")" "$@" || status=$?
    if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
        echo "netns-migration: FAILED — carillon $command on h$i did not return in 120 s" >&2
        touch "$out/client-hung"
    fi
    return "$status"
}
now_ns() { date +%s%N; }
fail() { echo "netns-migration: FAILED — $*" >&2; tail -n 5 "$out"/*.err >&2 || true; exit 1; }
wait_until() {  # wait_until SECONDS DESCRIPTION COMMAND...
    local limit=$(( $(now_ns) + $1 * 1000000000 )) what=$2; shift 2
    until "$@" 2>/dev/null; do
        [ "$(now_ns)" -lt "$limit" ] || fail "waited too long for: $what"
        sleep 0.1
    done
}
serves() { client "$1" "obj list" >/dev/null; }
# stable_full_view: every node's latest view has all members, is the same
# epoch everywhere, and the node has delivered for at least 1 s in it
# (start-up suspicions are over).
stable_full_view() {
    local i line epoch="" now; now=$(now_ns)
    for i in $all; do
        line=$(awk '$1 == "#" && ($2 == "view" || $2 == "state" || $2 == "excluded" || $2 == "no-primary") { l = $0 } END { print l }' "${node_log[$i]}" 2>/dev/null)
        set -- $line
        [ "${2:-}" = view ] || [ "${2:-}" = state ] || return 1
        [ -z "$epoch" ] && epoch=$3
        [ "$3" = "$epoch" ] || return 1
        [ "$(echo "${7#members=}" | tr ',' '\n' | wc -l)" -eq "$members" ] || return 1
        # Deliveries in this view span at least 1 s (the first view's line is
        # written at start, before the first round: count from its first delivery).
        awk -v since="$4" '$1 != "#" && $4 >= since { if (!f) f = $4; l = $4 } END { exit !(f > 0 && l - f >= 1e9) }' "${node_log[$i]}" || return 1
    done
}
owner() { client 0 "obj where" big | awk '{ split($3, a, "/"); print a[1] }'; }
state() { client 0 "obj where" big | awk -F'\t' '{ print $6 }'; }
all=$(seq 0 $((members - 1)))
echo "netns-migration: $members members, an object of $size ($size_bytes B), links ${shape} Mbit/s; out $out" >&2
for i in $all; do start_node "$i"; done
for i in $all; do wait_until 30 "node h$i serving its socket in a primary view" serves "$i"; done
wait_until 60 "one view of all $members members, stable for 1 s" stable_full_view

cap="@$out/big.cap"
# Created on h0. If a start-up suspicion left h0 out meanwhile (its backup
# then owns it: correct, but not this scenario), delete it and start again
# on a view that has settled again.
for attempt in 1 2 3; do
    client 0 "obj create" --size "$size" --backups 1 big > "$out/big.cap" || fail "create"
    [ "$(owner)" = 0 ] && break
    echo "netns-migration: the view changed while big was created (owner $(client 0 "obj where" big 2>&1)); again" >&2
    client 0 "obj del" --cap "$cap" || fail "delete after a view change"
    wait_until 60 "one view of all $members members, stable for 1 s" stable_full_view
    [ "$attempt" -lt 3 ] || fail "the object is not owned by h0 after three creations: $(client 0 "obj where" big 2>&1)"
done
echo "netns-migration: OK — created big ($size, one backup) on h0" >&2

# The writer: distinct values at distinct offsets, each acknowledged write
# logged with the version the bus gave it.
: > "$out/writes"
(
    k=0
    while [ ! -e "$out/stop-writer" ]; do
        k=$((k + 1))
        offset=$(( (k * 65537) % (size_bytes - 64) )) value="w$k-$RANDOM"
        if version=$(client 1 "obj put" --cap "$cap" --offset "$offset" "$value" 2>> "$out/writer.err"); then
            echo "$offset $value $version" >> "$out/writes"
        else
            echo "failed $? $offset $value" >> "$out/writes"
        fi
    done
) &
writer=$!
pids+=($writer)
writes() { grep -vc '^failed' "$out/writes" || true; }
some_writes() { [ "$(writes)" -ge "$1" ]; }
wait_until 30 "the first writes" some_writes 5

migrate() {  # migrate FROM TO: asked at FROM's node, must commit with TO the owner
    # A migration whose target is left out of the view meanwhile aborts (exit
    # 75) and the source keeps the object — correct, and on two cores a
    # node just readmitted is sometimes left out again at once
    # (docs/benchmarks.md): then the source must still own it, active, and
    # the migration is asked once more, as a user would.
    local from=$1 to=$2 line status attempt
    for attempt in 1 2; do
        status=0
        line=$(client "$from" "obj migrate" --cap "$cap" --to "$to") || status=$?
        [ "$status" -eq 0 ] && break
        [ "$status" -eq 75 ] && [ "$attempt" -eq 1 ] || fail "migrate h$from -> h$to exited $status"
        [ "$(owner)" = "$from" ] || fail "the aborted migration h$from -> h$to left the owner h$(owner), not h$from"
        state | grep -q '^active$' || fail "after the aborted migration h$from -> h$to the object is $(state), not active"
        echo "netns-migration: note — h$from -> h$to aborted (exit 75: its target was left out), h$from still owns it; asking once more" >&2
        wait_until 60 "one view of all $members members again, stable for 1 s" stable_full_view
    done
    [ "$(owner)" = "$to" ] || fail "after migrating to h$to the owner is h$(owner)"
    echo "netns-migration: OK — h$from -> h$to: $line" >&2
}
migrate 0 1
wait_until 30 "writes while h1 owns it" some_writes $(( $(writes) + 5 ))
migrate 1 0
wait_until 30 "writes while h0 owns it" some_writes $(( $(writes) + 5 ))

# A migration whose target dies while the bytes are on their way.
victim=2
client 0 "obj migrate" --cap "$cap" --to "$victim" > "$out/killed-migration.txt" 2>&1 &
killed_migration=$!
migrating() { state | grep -q "migrating"; }
wait_until 30 "the object frozen for its migration to h$victim" migrating
kill -9 "${node_pid[$victim]}"
wait "${node_pid[$victim]}" 2>/dev/null || true
status=0
wait "$killed_migration" || status=$?
[ "$status" -eq 75 ] || fail "the migration to the killed h$victim exited $status, not 75 (aborted): $(cat "$out/killed-migration.txt")"
[ "$(owner)" = 0 ] || fail "after the aborted migration the owner is h$(owner), not h0"
state | grep -q '^active$' || fail "after the aborted migration the object is $(state), not active"
echo "netns-migration: OK — killed h$victim during the transfer: the migration aborted ($(head -c 200 "$out/killed-migration.txt" | tr '\n' ' ')), h0 owns it, active" >&2
start_node "$victim" --join
wait_until 60 "node h$victim back" serves "$victim"
wait_until 60 "one view of all $members members again, stable for 1 s" stable_full_view
migrate 0 "$victim"
wait_until 30 "writes while h$victim owns it" some_writes $(( $(writes) + 5 ))
migrate "$victim" 1

touch "$out/stop-writer"
wait "$writer" || true
total=$(writes) failed=$(grep -c '^failed' "$out/writes" || true)
[ "$total" -ge 20 ] || fail "only $total writes were acknowledged"
# Every acknowledged write reads back (served by the final owner, h1).
checked=0
while read -r offset value version; do
    [ "$offset" = failed ] && continue
    got=$(client 0 "obj get" --cap "$cap" --offset "$offset" --length "${#value}") || fail "reading back offset $offset"
    [ "$got" = "$value" ] || fail "offset $offset holds '$got', not the acknowledged write '$value' (version $version)"
    checked=$((checked + 1))
done < "$out/writes"
last=$(awk '$1 != "failed" && $3 > m { m = $3 } END { print m + 0 }' "$out/writes")
version=$(client 0 "obj where" big | awk -F'\t' '{ print $4 }' | awk '{ print $2 }')
[ "$version" -ge "$last" ] || fail "the object's version $version is below the last acknowledged write's $last"
echo "netns-migration: OK — $checked acknowledged writes read back after 4 migrations and an aborted one ($failed writes failed); version $version" >&2

for i in $all; do kill -TERM "${node_pid[$i]}" 2>/dev/null || true; done
for i in $all; do wait "${node_pid[$i]}" 2>/dev/null || true; done
pids=()
"$bin" verify "$out"/h*.log > "$out/verify.txt" || { cat "$out/verify.txt" >&2; fail "carillon verify found disagreements"; }
echo "netns-migration: OK — carillon verify: $(tail -n 1 "$out/verify.txt")" >&2
[ ! -e "$out/client-hung" ] || fail "a client call did not return within 120 s (above)"
echo "netns-migration: OK — all checks passed" >&2
