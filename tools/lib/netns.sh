# Shared by tools/netns-cluster.sh, tools/netns-bench.sh and
# tools/netns-faults.sh: N hosts in
# network namespaces on a bridge, optional HTB shaping and nftables loss on
# the bus port, a bus configuration, and removal of every namespace and
# process on every exit path. Source it, set `members`, `loss`, `shape` and
# `bin`, call netns_up, and put background pids in the `pids` array.
#
# Names: crln-<pid>-h<i> (hosts), crln-<pid>-br (the bridge). Addresses:
# 10.<200+pid%50>.0.<i+1>/24, inside those namespaces only. Bus port 7400.

prefix="crln-$$"
net="10.$((200 + $$ % 50)).0"
pids=()
mtu=${mtu:-1500}
multicast=${multicast:-0}
shaper=${shaper:-htb}
max_frame_bytes=${max_frame_bytes:-1472}

netns_require_root() {
    [ "$(id -u)" -eq 0 ] || { echo "$0: needs root for network namespaces (run with sudo)" >&2; exit 77; }
    for tool in ip nft; do
        command -v $tool >/dev/null || { echo "$0: '$tool' missing: apt-get install -y iproute2 nftables" >&2; exit 77; }
    done
}

# netns_prepare CONFIGURATION OUT_PREFIX: checks root and tools, settles `bin`
# (default .build/CONFIGURATION/carillon, which must be built) and `out` (a new
# temporary directory unless given).
netns_prepare() {
    local configuration=$1 out_prefix=$2
    netns_require_root
    local flag=""; [ "$configuration" = release ] && flag="-c release "
    bin=${bin:-$here/.build/$configuration/carillon}
    [ -x "$bin" ] || { echo "$0: $bin not built (swift build ${flag}--product carillon)" >&2; exit 2; }
    out=${out:-$(mktemp -d "/tmp/$out_prefix-XXXXXX")}
    mkdir -p "$out"
}

netns_cleanup() {
    local status=$?
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    for ns in $(ip netns list | awk '{print $1}' | grep "^$prefix-" || true); do ip netns delete "$ns" 2>/dev/null || true; done
    exit $status
}

netns_up() {
    trap netns_cleanup EXIT
    trap 'exit 130' INT TERM
    local bridge="$prefix-br"
    ip netns add "$bridge"
    ip -n "$bridge" link add br0 type bridge
    ip -n "$bridge" link set br0 up
    # Multicast across the bridge: flood groups to every port instead of snooping IGMP.
    ip -n "$bridge" link set br0 type bridge mcast_snooping 0
    for i in $(seq 0 $((members - 1))); do
        local ns="$prefix-h$i"
        ip netns add "$ns"
        ip link add "h$i" netns "$ns" type veth peer name "p$i" netns "$bridge"
        ip -n "$bridge" link set "p$i" mtu "$mtu"
        ip -n "$ns" link set "h$i" mtu "$mtu"
        ip -n "$bridge" link set "p$i" master br0 up
        ip -n "$ns" addr add "$net.$((i + 1))/24" dev "h$i"
        ip -n "$ns" link set "h$i" up
        ip -n "$ns" link set lo up
        [ "$multicast" -eq 1 ] && ip -n "$ns" route add 224.0.0.0/4 dev "h$i"
        if [ -n "$shape" ] && [ "$shaper" = tbf ]; then
            ip netns exec "$ns" tc qdisc add dev "h$i" root tbf rate "${shape}mbit" burst 32kbit latency 50ms
        elif [ -n "$shape" ]; then
            ip netns exec "$ns" tc qdisc add dev "h$i" root handle 1: htb default 10
            ip netns exec "$ns" tc class add dev "h$i" parent 1: classid 1:10 htb rate "${shape}mbit"
        fi
        if [ "$loss" -gt 0 ]; then
            printf 'table inet crln {\n chain input {\n  type filter hook input priority 0;\n  udp dport 7400 numgen random mod 100 < %s drop\n }\n}\n' "$loss" \
                | ip netns exec "$ns" nft -f -
        fi
    done
}

# netns_config FILE PERIOD_US IDLE: a bus configuration for the hosts, with a fresh key beside it.
netns_config() {
    local file=$1 period=$2 idle=$3
    # Key files must be owner-only (0600): keygen --output creates it so.
    rm -f "$(dirname "$file")/bus.key"
    "$bin" keygen --output "$(dirname "$file")/bus.key"
    # Every process must be up before the first round, or it is suspected
    # (and rejoins): leave time to start N processes in namespaces.
    local start_ns=$(( $(date +%s%N) + ${start_lead_ms:-1500} * 1000000 ))
    {
        echo '{ "members": ['
        for i in $(seq 0 $((members - 1))); do
            local sep=","; [ "$i" -eq $((members - 1)) ] && sep=""
            echo "  {\"name\": \"h$i\", \"address\": \"$net.$((i + 1)):7400\"}$sep"
        done
        echo "], \"round_period_us\": $period, \"idle\": \"$idle\", \"start_at_ns\": $start_ns, \"max_frame_bytes\": $max_frame_bytes,"
        [ -n "${suspicion_slots:-}" ] && echo "  \"suspicion_slots\": $suspicion_slots,"
        # Extra keys, e.g. CARILLON_EXTRA_CONFIG='"suspicion_gap_factor": 0,' (each followed by a comma).
        [ -n "${CARILLON_EXTRA_CONFIG:-}" ] && echo "  $CARILLON_EXTRA_CONFIG"
        [ "$multicast" -eq 1 ] && echo "  \"multicast_group\": \"239.77.0.1:7400\","
        echo "  \"authentication\": {\"key_file\": \"bus.key\"} }"
    } > "$file"
}
