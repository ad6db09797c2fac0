#!/usr/bin/env bash
# Membership faults with separate `carillon node` processes in network
# namespaces: kill -9, partitions, restarts. Each member keeps broadcasting;
# the script waits (bounded) for the events it expects in the members' logs,
# then stops the members and runs `carillon verify` on every log (same views,
# same state at each view, same order within each view).
#
# Usage (as root):
#   tools/netns-faults.sh SCENARIO [--members N] [--rate PER_S] [--period-us US] [--idle STRATEGY]
#                         [--suspicion-slots K] [--kills K] [--bin PATH] [--out DIR]
# Scenarios:
#   kill       kill -9 the last member: the others install a view without it and keep delivering
#   leave      SIGTERM the last member: it leaves gracefully, the others install a view without it
#              sooner than failure detection would
#   partition  cut the first 2 members off from the other 3: the 3 install a view and continue, the 2
#              report no primary component and deliver nothing; heal: the 2 rejoin with state transfer
#   restart    kill -9 the last member, start it again with --join: it rejoins and receives the state
#   deaf       drop every frame reaching the last member (nftables, input only: it still sends) for 3 s:
#              the others leave it out and keep delivering, it delivers nothing; then it hears again
#              and rejoins with state transfer
#   bench      K times (--kills, default 20): kill -9 one member, time until every survivor installed the
#              next view and the longest gap between deliveries a survivor saw, then restart it (rejoin)
# Examples:
#   tools/netns-faults.sh kill
#   tools/netns-faults.sh partition --members 5
#   tools/netns-faults.sh bench --kills 20 --bin .build/release/carillon --out /tmp/kills
# Defaults: 5 members, 500 messages/s each, round period 100 µs (the bus default), idle blocking
# (2 cores: spinning members starve each other), agreed delivery, authenticated frames.
set -euo pipefail

scenario=${1:-}; [ $# -gt 0 ] && shift
members=5 rate=500 period_us=100 idle=blocking kills=20 loss=0 shape="" bin="" out=""
while [ $# -gt 0 ]; do
    case "$1" in
        --members) members=$2; shift 2 ;;
        --rate) rate=$2; shift 2 ;;
        --period-us) period_us=$2; shift 2 ;;
        --idle) idle=$2; shift 2 ;;
        --kills) kills=$2; shift 2 ;;
        --suspicion-slots) suspicion_slots=$2; shift 2 ;;
        --bin) bin=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        -h|--help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "netns-faults: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$scenario" in
    kill|leave|partition|restart|deaf|bench) ;;
    -h|--help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "netns-faults: give a scenario: kill, leave, partition, restart, deaf or bench (see --help)" >&2; exit 2 ;;
esac
[[ "$members" =~ ^[0-9]+$ ]] && [ "$members" -ge 3 ] && [ "$members" -le 20 ] || { echo "netns-faults: --members must be 3...20" >&2; exit 2; }
here=$(cd "$(dirname "$0")/.." && pwd)
source "$here/tools/lib/netns.sh"
netns_prepare release crln-faults
netns_up
netns_config "$out/bus.json" "$period_us" "$idle"

declare -A node_pid node_log
runs=0
start_node() {  # start_node I [--join]
    local i=$1; shift
    runs=$((runs + 1))
    node_log[$i]="$out/h$i-$runs.log"
    ip netns exec "$prefix-h$i" "$bin" node --no-services --config "$out/bus.json" --member "h$i" --send 100000000 --rate "$rate" \
        --timeout 600 --log "${node_log[$i]}" "$@" 2> "$out/h$i-$runs.err" &
    node_pid[$i]=$!
    pids+=($!)
}
now_ns() { date +%s%N; }
forget() {  # forget PID: a member that was killed and reaped is no longer ours to signal
    local kept=() p
    for p in "${pids[@]}"; do [ "$p" = "$1" ] || kept+=("$p"); done
    pids=("${kept[@]}")
}
fail() { echo "netns-faults: FAILED — $*" >&2; tail -n 3 "$out"/*.err >&2 || true; exit 1; }
# wait_until SECONDS DESCRIPTION COMMAND...: polls every 50 ms.
wait_until() {
    local seconds=$1 limit=$(( $(now_ns) + $1 * 1000000000 )) what=$2; shift 2
    until "$@"; do
        [ "$(now_ns)" -lt "$limit" ] || fail "waited more than $seconds s for: $what"
        sleep 0.05
    done
}
messages_in() { if [ -f "$1" ]; then grep -c -v '^#' "$1" || true; else echo 0; fi; }
has_messages() { local i; for i in "$@"; do [ "$(messages_in "${node_log[$i]}")" -ge 200 ] || return 1; done; }
# The install time of the first view at or after T (ns) whose members are exactly COUNT and exclude node X (or "-");
# a joiner's "# state" line counts as installing its view.
view_after() {  # view_after LOG T COUNT X
    awk -v t="$2" -v n="$3" -v x="$4" '$1 == "#" && ($2 == "view" || $2 == "state") && $4 >= t {
        split(substr($7, 9), m, ","); k = 0; bad = 0
        for (j in m) { k++; if (x != "-" && index(m[j], x "/") == 1) bad = 1 }
        if (k == n && !bad) { print $4; exit } }' "$1"
}
all_in_view() {  # all_in_view T COUNT X NODES...: every node's log shows such a view
    local t=$1 n=$2 x=$3 i; shift 3
    for i in "$@"; do [ -n "$(view_after "${node_log[$i]}" "$t" "$n" "$x")" ] || return 1; done
}
# Messages delivered after time T (ns) at node I.
delivered_after() { awk -v t="$2" '$1 != "#" && $4 >= t { n++ } END { print n + 0 }' "${node_log[$1]}"; }
progressed() {  # progressed T NODES...: each delivered 100 messages after T
    local t=$1 i; shift
    for i in "$@"; do [ "$(delivered_after "$i" "$t")" -ge 100 ] || return 1; done
}
# stable_full_view: every member's latest view has all members, is the same
# epoch everywhere, and is at least 200 ms old (no change under way).
stable_full_view() {
    local i line epoch="" now; now=$(now_ns)
    for i in $all; do
        line=$(awk '$1 == "#" && ($2 == "view" || $2 == "state" || $2 == "excluded" || $2 == "no-primary") { l = $0 } END { print l }' "${node_log[$i]}" 2>/dev/null)
        set -- $line
        [ "${2:-}" = view ] || [ "${2:-}" = state ] || return 1
        [ -z "$epoch" ] && epoch=$3
        [ "$3" = "$epoch" ] || return 1
        [ $(( now - $4 )) -ge 200000000 ] || return 1
        [ "$(echo "${7#members=}" | tr ',' '\n' | wc -l)" -eq "$members" ] || return 1
    done
}
stop_all() {
    local i
    for i in "${!node_pid[@]}"; do kill -TERM "${node_pid[$i]}" 2>/dev/null || true; done
    for i in "${!node_pid[@]}"; do wait "${node_pid[$i]}" 2>/dev/null || true; done
    pids=()
}
verify() {
    "$bin" verify "$out"/h*.log > "$out/verify.txt" || { cat "$out/verify.txt" >&2; fail "carillon verify found disagreements"; }
    cat "$out/verify.txt" >&2
}
others() { local i; for i in $(seq 0 $((members - 1))); do [ "$i" = "$1" ] || printf '%s ' "$i"; done; }

echo "netns-faults: $scenario, $members members, $rate msg/s each, round ${period_us} µs, idle $idle; logs in $out" >&2
all=$(seq 0 $((members - 1)))
# In the leave scenario members leave gracefully on SIGTERM (carillon node --leave).
leave_flag=(); [ "$scenario" = leave ] && leave_flag=(--leave)
for i in $all; do start_node "$i" "${leave_flag[@]}"; done
wait_until 30 "every member delivering" has_messages $all
last=$((members - 1))

case "$scenario" in
kill|leave|restart)
    signal=-9; [ "$scenario" = leave ] && signal=-TERM
    t=$(now_ns); kill $signal "${node_pid[$last]}"
    survivors=$(others $last)
    wait_until 10 "survivors installing a view without h$last" all_in_view "$t" $((members - 1)) "$last" $survivors
    wait "${node_pid[$last]}" 2>/dev/null || true
    forget "${node_pid[$last]}"; unset "node_pid[$last]"
    worst=0
    for i in $survivors; do v=$(view_after "${node_log[$i]}" "$t" $((members - 1)) "$last"); [ $((v - t)) -gt $worst ] && worst=$((v - t)); done
    echo "netns-faults: kill $signal h$last → $((members - 1))-member view at every survivor after $((worst / 1000)) µs" >&2
    if [ "$scenario" = leave ]; then
        grep -q '^# left' "${node_log[$last]}" || fail "h$last did not log that it left"
    fi
    wait_until 10 "survivors delivering in the new view" progressed "$(now_ns)" $survivors
    if [ "$scenario" = restart ]; then
        t=$(now_ns); start_node "$last" --join
        wait_until 20 "h$last rejoining with state" grep -qs '^# state' "${node_log[$last]}"
        wait_until 10 "a $members-member view at every member" all_in_view "$t" "$members" - $all
        wait_until 10 "the rejoined member delivering" progressed "$(now_ns)" $all
        echo "netns-faults: h$last restarted → state received after $(( ($(awk '$2 == "state" { print $4; exit }' "${node_log[$last]}") - t) / 1000000 )) ms" >&2
    fi
    ;;
partition)
    small=$(( (members - 1) / 2 ))  # the minority side: 1 of 3 or 4, 2 of 5
    minority=$(seq 0 $((small - 1))) majority=$(seq "$small" $last)
    rules=""
    for j in $majority; do rules+="  ip saddr $net.$((j + 1)) drop\n"; done
    # Times are taken before the change to the network: the cluster may react
    # before the script's next line runs.
    t=$(now_ns)
    for i in $minority; do
        printf "table inet crln_partition {\n chain input {\n  type filter hook input priority -10;\n$rules }\n chain output {\n  type filter hook output priority -10;\n${rules//saddr/daddr} }\n}\n" \
            | ip netns exec "$prefix-h$i" nft -f -
    done
    wait_until 10 "the majority side installing a view of itself" all_in_view "$t" $((members - small)) 0 $majority
    reported() { local i; for i in $minority; do grep -q '^# no-primary' "${node_log[$i]}" || return 1; done; }
    wait_until 10 "the minority side reporting no primary component" reported
    wait_until 10 "the majority side delivering" progressed "$(now_ns)" $majority
    for i in $minority; do
        # Halted: nothing delivered between the report and the end of the view.
        n=$(awk '$1 == "#" && $2 == "no-primary" { on = 1; next } $1 == "#" && ($2 == "view" || $2 == "state" || $2 == "excluded" || $2 == "left") { on = 0 } $1 != "#" && on { n++ } END { print n + 0 }' "${node_log[$i]}")
        [ "$n" -eq 0 ] || fail "h$i delivered $n messages after reporting no primary component"
    done
    echo "netns-faults: partition $small|$((members - small)) → the $((members - small)) continue in a view of $((members - small)), the $small halted" >&2
    t=$(now_ns)
    for i in $minority; do ip netns exec "$prefix-h$i" nft delete table inet crln_partition; done
    rejoined() { local i; for i in $minority; do grep -qs '^# state' "${node_log[$i]}" || return 1; done; }
    wait_until 20 "the minority rejoining with state" rejoined
    wait_until 10 "a $members-member view at every member" all_in_view "$t" "$members" - $all
    wait_until 10 "every member delivering after the heal" progressed "$(now_ns)" $all
    echo "netns-faults: healed → the $small rejoined with state transfer" >&2
    ;;
deaf)
    # Only inbound traffic is cut: the member still sends its slot frames, so
    # the others still hear it — it must be left out for not taking part.
    rules=""
    for j in $(others $last); do rules+="  ip saddr $net.$((j + 1)) drop\n"; done
    t=$(now_ns)
    printf "table inet crln_deaf {\n chain input {\n  type filter hook input priority -10;\n$rules }\n}\n" \
        | ip netns exec "$prefix-h$last" nft -f -
    survivors=$(others $last)
    wait_until 10 "the others installing a view without the deaf h$last" all_in_view "$t" $((members - 1)) "$last" $survivors
    worst=0
    for i in $survivors; do v=$(view_after "${node_log[$i]}" "$t" $((members - 1)) "$last"); [ $((v - t)) -gt $worst ] && worst=$((v - t)); done
    echo "netns-faults: h$last deaf → $((members - 1))-member view at every other member after $((worst / 1000)) µs" >&2
    wait_until 10 "the others delivering without h$last" progressed "$(now_ns)" $survivors
    # Deaf, it hears nobody: it delivers nothing past the cut and says it is not in the primary component.
    wait_until 10 "the deaf h$last reporting no primary component" grep -qs '^# no-primary' "${node_log[$last]}"
    sleep 3
    t=$(now_ns)
    ip netns exec "$prefix-h$last" nft delete table inet crln_deaf
    wait_until 20 "h$last rejoining with state once it hears again" grep -qs '^# state' "${node_log[$last]}"
    wait_until 10 "a $members-member view at every member" all_in_view "$t" "$members" - $all
    wait_until 10 "every member delivering after it hears again" progressed "$(now_ns)" $all
    echo "netns-faults: h$last hears again → rejoined with state transfer" >&2
    ;;
bench)
    : > "$out/kills.csv"; echo "kill,victim,view_at_all_us,longest_pause_us,rejoin_ms" > "$out/kills.csv"
    for k in $(seq 1 "$kills"); do
        # Kill only from a settled, full view: a kill during a change that false
        # suspicions started could take a smaller view below its majority.
        wait_until 30 "kill $k: a settled $members-member view" stable_full_view
        victim=$(( (k - 1) % members ))
        survivors=$(others $victim)
        t=$(now_ns); kill -9 "${node_pid[$victim]}"; wait "${node_pid[$victim]}" 2>/dev/null || true
        forget "${node_pid[$victim]}"; unset "node_pid[$victim]"
        wait_until 10 "kill $k: survivors installing a view without h$victim" all_in_view "$t" $((members - 1)) "$victim" $survivors
        worst=0 pause=0
        for i in $survivors; do
            v=$(view_after "${node_log[$i]}" "$t" $((members - 1)) "$victim"); [ $((v - t)) -gt $worst ] && worst=$((v - t))
        done
        wait_until 10 "kill $k: survivors delivering again" progressed "$(now_ns)" $survivors
        for i in $survivors; do
            # The longest gap between consecutive deliveries from 100 ms before the kill to 100 ms after the view.
            g=$(awk -v a=$((t - 100000000)) -v b=$((t + worst + 100000000)) '$1 != "#" && $4 >= a && $4 <= b { if (p && $4 - p > g) g = $4 - p; p = $4 } END { print g + 0 }' "${node_log[$i]}")
            [ "$g" -gt "$pause" ] && pause=$g
        done
        r=$(now_ns); start_node "$victim" --join
        wait_until 20 "kill $k: h$victim rejoining" grep -qs '^# state' "${node_log[$victim]}"
        wait_until 10 "kill $k: a $members-member view everywhere" all_in_view "$r" "$members" - $all
        rejoin=$(( ($(awk '$2 == "state" { print $4; exit }' "${node_log[$victim]}") - r) / 1000000 ))
        echo "$k,$victim,$((worst / 1000)),$((pause / 1000)),$rejoin" >> "$out/kills.csv"
        echo "netns-faults: kill $k/$kills (h$victim): new view at every survivor after $((worst / 1000)) µs; longest delivery pause $((pause / 1000)) µs; rejoined with state after $rejoin ms" >&2
        wait_until 10 "kill $k: everyone delivering" progressed "$(now_ns)" $all
    done
    summary() {  # summary COLUMN NAME
        tail -n +2 "$out/kills.csv" | cut -d, -f"$1" | sort -n | awk -v name="$2" '{ v[NR] = $1 } END {
            printf "%s over %d kills: p50 %.2f ms  p90 %.2f ms  max %.2f ms\n", name, NR, v[int((NR + 1) / 2)] / 1000, v[int(NR * 0.9 + 0.999)] / 1000, v[NR] / 1000 }'
    }
    { summary 3 "kill -9 → new view installed at every survivor"; summary 4 "longest delivery pause at a survivor"; } | tee "$out/kills-summary.txt" >&2
    ;;
esac
stop_all
verify
echo "netns-faults: OK — $scenario" >&2
