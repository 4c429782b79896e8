#!/usr/bin/env bash
# Lookup latency under packet loss: N Node.js Grapes, then N of ours, each Grape in its own
# network namespace on one Linux bridge, every packet between two namespaces dropped with
# LOSS%. Prints a table (docs/benchmarks-loss.md has the results and the method).
#
#   sudo bench/netem/run.sh                    # from the repository root, as root
#   sudo SCENARIO=silent bench/netem/run.sh
#   sudo SCENARIO=gone bench/netem/run.sh
#   sudo SCENARIO=flood bench/netem/run.sh
#
# Settings (environment): N=20 Grapes, K=10 names, M=100 lookups, LOSS=10 (% per packet),
# CHURN=30 (% of the Grapes killed after the announces, before the lookups), SETTLE=15 (s
# after start), PAR=4 (lookups at a time), KINDS="node ours", OURS_ARGS and NODE_ARGS (more
# flags for our Grapes or Node's, e.g. "--cache_maxAge 500", "--dpa 120000").
# CLIENT=keepalive (default: lookups.py keeps one HTTP connection per Grape and thread, no
# process per call) or CLIENT=curl (one `ip netns exec curl` per call, as before session 7).
# SCENARIO=silent: N=2 Grapes, no loss, no churn, K=M=100 names; a third namespace runs
# silent.py, whose S=300 fake nodes query both Grapes and never answer.
# SCENARIO=gone: N=20 Grapes, no loss, no churn; gone.py times how long a withdrawn service
# stays findable: TRIALS=20 for ours (CAP=30 s each), NODE_TRIALS=3 for Node (NODE_CAP=150 s,
# past the Node Grape's 2-minute peer expiry).
# SCENARIO=flood: N=6 Grapes, no loss, no churn, K=20 names announced, then a seventh
# namespace (one host) runs flood.py: TOTAL=200000 queries with random node ids from
# PORTS=256 source ports at RATE=10000/s, spread over every Grape. M=100 lookups are timed
# during the flood and M again after it; meanwhile flood.py probe pings Grape 1 from Grape
# 2's host (are other hosts answered?), and for ours each Grape's /status is read before
# and after (does the routing table still hold the real Grapes?).
#
# Traffic stays inside the namespaces made here (10.213.0.0/24 on bridge gr-netem-br, which
# has no address, so the host is not on that subnet) and each namespace's loopback.
set -euo pipefail

SCENARIO=${SCENARIO:-churn}
if [ "$SCENARIO" = silent ]; then
    N=${N:-2} K=${K:-100} M=${M:-100} LOSS=${LOSS:-0} CHURN=${CHURN:-0}
elif [ "$SCENARIO" = gone ]; then
    N=${N:-20} K=${K:-0} M=${M:-0} LOSS=${LOSS:-0} CHURN=${CHURN:-0}
elif [ "$SCENARIO" = flood ]; then
    N=${N:-6} K=${K:-20} M=${M:-100} LOSS=${LOSS:-0} CHURN=${CHURN:-0}
else
    N=${N:-20} K=${K:-10} M=${M:-100} LOSS=${LOSS:-10} CHURN=${CHURN:-30}
fi
SETTLE=${SETTLE:-15} PAR=${PAR:-4}
KINDS=${KINDS:-"node ours"}
NS_PREFIX=gr-netem-       # every namespace is ours by this prefix: cleanup deletes only these
BRIDGE=gr-netem-br
SUBNET=10.213.0           # Grape i is 10.213.0.(10+i)
DHT_PORT=20001 API_PORT=30001
export N K M PAR NS_PREFIX SUBNET API_PORT SCENARIO

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
NODE_DIR=$ROOT/grape-bin/tests/node
OURS=$ROOT/target/release/grape
WORK=$(mktemp -d /tmp/gr-netem.XXXXXX)   # logs and samples; kept for a look afterwards
PIDS=()

log() { printf '[%s] %s\n' "$(date +%T)" "$*"; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (network namespaces, bridge, qdiscs)"
case $SCENARIO in
    churn|gone|flood) (( N >= 6 && N <= 80 )) || die "N must be 6..80" ;;
    silent) (( N == 2 )) || die "SCENARIO=silent runs 2 Grapes" ;;
    *) die "SCENARIO is churn, silent, gone or flood" ;;
esac
# The Grapes killed for churn: every other one that announces nothing, from Grape 1 on.
DEAD=$(python3 -c "
n, pct = $N, $CHURN
cands = [g for g in range(1, n + 1) if g not in (3, 4, 5)]
print(' '.join(map(str, cands[0::2][:n * pct // 100])))")
export DEAD

# --- tools: install only what is missing, with one apt-get update ---------------------------
need=()
command -v ip >/dev/null || need+=(iproute2)
command -v tc >/dev/null || need+=(iproute2)
command -v curl >/dev/null || need+=(curl)
command -v ping >/dev/null || need+=(iputils-ping)
command -v python3 >/dev/null || need+=(python3)
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
# nftables: the fallback loss injector when the kernel has no netem (see impair below).
command -v nft >/dev/null || need+=(nftables)
if (( ${#need[@]} )); then
    log "installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
command -v cargo >/dev/null || die "cargo not found (install Rust: rustup)"

# --- cleanup: by pid for processes, by prefix for namespaces; runs on every exit ------------
cleanup() {
    local pid
    [ -z "${WATCHDOG:-}" ] || kill "$WATCHDOG" 2>/dev/null || true
    [ -z "${BG:-}" ] || kill "$BG" 2>/dev/null || true
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    PIDS=()
    local ns
    for ns in $(ip netns list | awk '{print $1}' | grep "^$NS_PREFIX" || true); do
        # A run killed with -9 can leave its Grapes behind inside its namespaces: those
        # pids (and curls of an interrupted lookups.py) are the only ones in a gr-netem-
        # namespace, so end them by pid.
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill "$pid" 2>/dev/null || true; done
        ip netns del "$ns" 2>/dev/null || true   # takes its veth pair, qdisc and nft table along
    done
    ip link del "$BRIDGE" 2>/dev/null || true
}
# Long steps run in the background and are waited for: bash runs a trap only once the
# foreground command ends, so this lets Ctrl-C, kill or the watchdog clean up at once.
BG=
bg_wait() {
    "$@" &
    BG=$!
    local rc=0
    wait "$BG" || rc=$?
    BG=
    return "$rc"
}
stop_grapes() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    PIDS=()
}
trap cleanup EXIT
trap 'exit 130' INT TERM
cleanup   # leftovers of an earlier, interrupted run

# Whole run bounded: a watchdog ends us (and so the trap) after 15 minutes (25 for gone,
# whose Node trials each wait out a 2-minute expiry).
# (Its sleep is its own child, ended with it, so no stray sleep outlives the run.)
LIMIT=900
[ "$SCENARIO" = gone ] && LIMIT=1500
( trap 'kill $sp 2>/dev/null; exit 0' TERM; sleep $LIMIT & sp=$!; wait $sp
  log "watchdog: over $LIMIT s, stopping"; kill -TERM $$ ) &
WATCHDOG=$!

# --- build -----------------------------------------------------------------------------------
log "building target/release/grape"
(cd "$ROOT" && nice -n 5 cargo build --release -q -p grenache-grape)
if [ ! -d "$NODE_DIR/node_modules/grenache-grape" ] ||
   [ "$NODE_DIR/package-lock.json" -nt "$NODE_DIR/node_modules/.package-lock.json" ]; then
    log "npm ci in grape-bin/tests/node (grenache-grape 1.0.0)"
    (cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
NODE_GRAPE=$NODE_DIR/node_modules/grenache-grape/bin/grape.js

# --- network: N namespaces on one bridge -----------------------------------------------------
# One more namespace for silent.py's fake nodes, or for flood.py's flooding host.
HOSTS=$N
[ "$SCENARIO" = silent ] && HOSTS=$((N + 1))
[ "$SCENARIO" = flood ] && HOSTS=$((N + 1))
log "creating $HOSTS namespaces on $BRIDGE, $SUBNET.0/24"
ip link add "$BRIDGE" type bridge
ip link set "$BRIDGE" up
for i in $(seq 1 "$HOSTS"); do
    ns=$NS_PREFIX$i
    ip netns add "$ns"
    # grn-h$i stays on the host side (in the bridge), grn-n$i is the Grape's interface.
    ip link add "grn-h$i" type veth peer name "grn-n$i" netns "$ns"
    ip link set "grn-h$i" master "$BRIDGE" up
    ip -n "$ns" addr add "$SUBNET.$((10 + i))/24" dev "grn-n$i"
    ip -n "$ns" link set "grn-n$i" up
    ip -n "$ns" link set lo up
done

# Loss: every packet between two Grapes is dropped with LOSS%, once, silently; so a query
# and its answer both arrive with (1-LOSS)^2, 81% at 10%. netem on each namespace's way out
# is the tool (with 1 ms delay). A kernel without sch_netem (CONFIG_NET_SCH_NETEM unset, as
# on our 2-core VMs) gets the same drop from an nftables rule on each namespace's way *in*,
# without the delay: a drop on the way out (output hook) would fail the sender's sendto()
# with EPERM, telling it about the loss, which a real network never does.
impair() {
    local i=$1 ns=$NS_PREFIX$1
    if tc -n "$ns" qdisc add dev "grn-n$i" root netem loss "$LOSS%" delay 1ms 2>/dev/null; then
        IMPAIR="tc netem loss $LOSS% delay 1ms, on each namespace's grn-nX (egress)"
    else
        ip netns exec "$ns" nft -f - <<EOF
table inet gr_netem {
    chain in {
        type filter hook prerouting priority -300; policy accept;
        iifname "grn-n$i" numgen random mod 1000 < $((LOSS * 10)) drop
    }
}
EOF
        IMPAIR="nftables prerouting rule 'numgen random mod 1000 < $((LOSS * 10)) drop' on each namespace's grn-nX (ingress; this kernel has no netem; no added delay)"
    fi
}
for i in $(seq 1 "$N"); do impair "$i"; done
log "loss: $IMPAIR"

# Check the plumbing and the loss: 300 pings 1 -> 2 should lose about 1-(1-LOSS)^2.
log "ping check: $(ip netns exec "${NS_PREFIX}1" ping -q -c 300 -i 0.005 -W 1 -w 20 "$SUBNET.12" \
    | grep -o '[0-9.]*% packet loss') round trip (expect ~$(python3 -c "print(round(100*(1-(1-$LOSS/100)**2)))")%)"

# --- one phase per kind ----------------------------------------------------------------------
start_grapes() {
    local kind=$1 i ip boot
    for i in $(seq 1 "$N"); do
        ip=$SUBNET.$((10 + i))
        # Grapes 1 and 2 bootstrap from each other, everybody else from both.
        case $i in 1) boot=$SUBNET.12:$DHT_PORT ;; 2) boot=$SUBNET.11:$DHT_PORT ;;
                   *) boot=$SUBNET.11:$DHT_PORT,$SUBNET.12:$DHT_PORT ;; esac
        local cmd
        if [ "$kind" = node ]; then
            # shellcheck disable=SC2206  # NODE_ARGS is split into words on purpose
            cmd=(node "$NODE_GRAPE" -b "$ip" --dp "$DHT_PORT" --aph "$API_PORT" --bn "$boot" ${NODE_ARGS:-})
        else
            # shellcheck disable=SC2206  # OURS_ARGS is split into words on purpose
            cmd=("$OURS" -b "$ip" --dp "$DHT_PORT" --aph "$API_PORT" --bn "$boot" ${OURS_ARGS:-})
        fi
        # ip netns exec and nice exec, so $! is the Grape itself.
        nice -n 5 ip netns exec "$NS_PREFIX$i" "${cmd[@]}" \
            >"$WORK/$kind-$i.log" 2>&1 </dev/null &
        PIDS+=("$!")
    done
    # Every API up (bounded: 30 s), then let the DHT settle.
    local t
    for i in $(seq 1 "$N"); do
        for t in $(seq 1 60); do
            ip netns exec "$NS_PREFIX$i" curl -s -o /dev/null --max-time 1 \
                "http://$SUBNET.$((10 + i)):$API_PORT/" && break
            sleep 0.5
            [ "$t" = 60 ] && die "$kind Grape $i did not open its API (log: $WORK/$kind-$i.log)"
        done
    done
    GRAPE_PIDS="${PIDS[*]}"
    export GRAPE_PIDS
    if [ "$SCENARIO" = silent ]; then
        ip netns exec "$NS_PREFIX$HOSTS" python3 "$HERE/silent.py" \
            "$SUBNET.11:$DHT_PORT" "$SUBNET.12:$DHT_PORT" >"$WORK/$kind-silent.log" 2>&1 </dev/null &
        PIDS+=("$!")
    fi
    log "$kind: $N Grapes up; settling ${SETTLE}s"
    bg_wait sleep "$SETTLE"
}

# Each Grape's GET /status (ours only; Node's has none) into $WORK/KIND-WHEN-I.status.
snapshot() {
    local kind=$1 when=$2 i
    for i in $(seq 1 "$N"); do
        ip netns exec "$NS_PREFIX$i" curl -s --max-time 2 \
            "http://$SUBNET.$((10 + i)):$API_PORT/status" >"$WORK/$kind-$when-$i.status" || true
    done
}

# Waits until a child of ours has ended (bash's wait returns at once for a trapped signal).
wait_gone() {
    wait "$1" 2>/dev/null || true
}

# SCENARIO=flood for one kind: announce, flood from the extra namespace while probing Grape
# 1 from Grape 2's, time lookups during the flood and after it.
flood_phase() {
    local kind=$1 i flooder prober targets=()
    for i in $(seq 1 "$N"); do targets+=("$SUBNET.$((10 + i)):$DHT_PORT"); done
    PHASE=announce bg_wait python3 "$HERE/lookups.py" run "$kind" "$WORK/$kind-announce.json"
    snapshot "$kind" before
    ip netns exec "$NS_PREFIX$HOSTS" python3 "$HERE/flood.py" flood "${targets[@]}" \
        >"$WORK/$kind-flood.log" 2>&1 </dev/null &
    flooder=$!
    PIDS+=("$flooder")
    ip netns exec "${NS_PREFIX}2" python3 "$HERE/flood.py" probe "$SUBNET.11:$DHT_PORT" \
        "$WORK/$kind-probe.json" >"$WORK/$kind-probe.log" 2>&1 </dev/null &
    prober=$!
    PIDS+=("$prober")
    bg_wait sleep 2
    log "$kind: lookups during the flood (load average $(cut -d' ' -f1-3 /proc/loadavg))"
    PHASE=lookup bg_wait python3 "$HERE/lookups.py" run "$kind-during" "$WORK/$kind-during.json"
    wait_gone "$flooder"
    log "$kind: flood over: $(cat "$WORK/$kind-flood.log")"
    bg_wait sleep 2
    PHASE=lookup bg_wait python3 "$HERE/lookups.py" run "$kind-after" "$WORK/$kind-after.json"
    wait_gone "$prober"
    snapshot "$kind" after
}

for kind in $KINDS; do
    log "=== $kind ==="
    start_grapes "$kind"
    log "$kind: load average $(cut -d' ' -f1-3 /proc/loadavg)"
    if [ "$SCENARIO" = gone ]; then
        if [ "$kind" = node ]; then
            TRIALS=${NODE_TRIALS:-3} CAP=${NODE_CAP:-150} \
                bg_wait python3 "$HERE/gone.py" run "$kind" "$WORK/$kind.json"
        else
            TRIALS=${TRIALS:-20} CAP=${CAP:-30} \
                bg_wait python3 "$HERE/gone.py" run "$kind" "$WORK/$kind.json"
        fi
    elif [ "$SCENARIO" = flood ]; then
        flood_phase "$kind"
    else
        bg_wait python3 "$HERE/lookups.py" run "$kind" "$WORK/$kind.json"
    fi
    log "$kind: load average $(cut -d' ' -f1-3 /proc/loadavg)"
    # Ours counts its DHT queries, timeouts and lookup latencies: keep them for the doc.
    if [ "$kind" = ours ]; then
        for i in $(seq 1 "$N"); do
            ip netns exec "$NS_PREFIX$i" curl -s --max-time 2 \
                "http://$SUBNET.$((10 + i)):$API_PORT/metrics" >"$WORK/ours-$i.metrics" || true
        done
    fi
    stop_grapes
done

echo
if [ "$SCENARIO" = gone ]; then
    echo "scenario gone: N=$N Grapes, no loss, no churn; withdrawn through Grape 3, polled on all"
    python3 "$HERE/gone.py" report $(for k in $KINDS; do echo "$WORK/$k.json"; done)
elif [ "$SCENARIO" = flood ]; then
    echo "scenario flood: N=$N Grapes, K=$K names, M=$M lookups per phase ($PAR at a time), no loss;"
    echo "flood.py from one host: TOTAL=${TOTAL:-200000} queries, PORTS=${PORTS:-256} source ports, RATE=${RATE:-10000}/s"
    python3 "$HERE/lookups.py" report \
        $(for k in $KINDS; do echo "$WORK/$k-during.json" "$WORK/$k-after.json"; done)
    for k in $KINDS; do
        echo "$k flood: $(cat "$WORK/$k-flood.log")"
        echo "$k probe of Grape 1 from Grape 2's host: $(cat "$WORK/$k-probe.json" 2>/dev/null)"
    done
    if [[ " $KINDS " == *" ours "* ]]; then
        python3 "$HERE/flood.py" tables "$WORK" ours "$N"
        echo "ours, Grape 1's defence counters:"
        grep -E '^grape_dht_(dropped_total\{reason="(rate_limited|banned|reply_budget)|bans_total|nodes_refused_total)' \
            "$WORK/ours-1.metrics" || true
    fi
else
    echo "scenario $SCENARIO: N=$N Grapes, K=$K names, M=$M lookups ($PAR at a time), loss $LOSS% per packet sent, killed: ${DEAD:-none}"
    echo "loss by: $IMPAIR"
    python3 "$HERE/lookups.py" report $(for k in $KINDS; do echo "$WORK/$k.json"; done)
fi
echo "samples and Grape logs: $WORK"
