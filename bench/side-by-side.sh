#!/usr/bin/env bash
# Anytime and its peers side by side: same machine, same run, alternating A B per scenario and
# round. Starts a private ejabberd (bench/peers/ejabberd.sh: 127.0.0.1 only, temp dir) and, with
# SYNAPSE=1, a private Synapse (bench/peers/synapse.sh: PyPI venv, 127.0.0.1 only, its own
# PostgreSQL database), and stops them at the end; every Anytime run starts its own server
# (anytime-load --binary, fresh data dir, 127.0.0.1:0). Prints tables of medians [min–max] and
# Anytime/peer ratios (bench/summarize.py).
#
#   cargo build --release -p anytime-cli -p anytime-load
#   bench/side-by-side.sh [OUT_DIR]
#   SYNAPSE=1 SCENARIOS=matrix bench/side-by-side.sh [OUT_DIR]     # Anytime and Synapse only
#
# Settings (environment): ROUNDS=3 PAIRS=100 MAX_MESSAGES=1000 WINDOW=64 RUN_SECONDS=10 WARMUP=1
# MEMBERS=100 FANOUT_MESSAGES=200 CONNECTIONS=9000 (0 skips) SCENARIOS="latency fanout connections"
# (add "matrix" for Synapse: SYNAPSE=1 adds it) ANYTIME_BIN=target/release/anytime
# LOAD_BIN=target/release/anytime-load COMMIT=(git HEAD).
# Synapse handles ~1% of Anytime's rate, so its scenario ("matrix") has its own, smaller sizes:
# MATRIX_MESSAGES=10 per sender in closed loop (Anytime: MAX_MESSAGES), MATRIX_RATE=20 msg/s and
# MATRIX_FRACTIONS=1,2 (open loop at 20 and 40 msg/s, the same for both servers),
# MATRIX_FANOUT_MESSAGES=50 (both servers), MATRIX_MAX_IN_FLIGHT=256, SYNAPSE_DB=postgres|sqlite.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
out=${1:-$(mktemp -d /tmp/anytime-bench.XXXXXX)}
ROUNDS=${ROUNDS:-3}
PAIRS=${PAIRS:-100}
MAX_MESSAGES=${MAX_MESSAGES:-1000}
WINDOW=${WINDOW:-64}
SECONDS_PER_RUN=${RUN_SECONDS:-10}
WARMUP=${WARMUP:-1}
MEMBERS=${MEMBERS:-100}
FANOUT_MESSAGES=${FANOUT_MESSAGES:-200}
CONNECTIONS=${CONNECTIONS:-9000}
SYNAPSE=${SYNAPSE:-0}
SCENARIOS=${SCENARIOS:-"latency fanout connections"}
if [ "$SYNAPSE" = 1 ] && [[ " $SCENARIOS " != *" matrix "* ]]; then SCENARIOS="$SCENARIOS matrix"; fi
MATRIX_MESSAGES=${MATRIX_MESSAGES:-10}
MATRIX_RATE=${MATRIX_RATE:-20}
MATRIX_FRACTIONS=${MATRIX_FRACTIONS:-1,2}
MATRIX_FANOUT_MESSAGES=${MATRIX_FANOUT_MESSAGES:-50}
MATRIX_MAX_IN_FLIGHT=${MATRIX_MAX_IN_FLIGHT:-256}
# Which peers the scenarios need: ejabberd for the first three, Synapse for "matrix".
need_ejabberd=0
need_synapse=0
for scenario in $SCENARIOS; do
    case $scenario in
    matrix) need_synapse=1 ;;
    *) need_ejabberd=1 ;;
    esac
done
ANYTIME_BIN=${ANYTIME_BIN:-$root/target/release/anytime}
LOAD_BIN=${LOAD_BIN:-$root/target/release/anytime-load}

for bin in "$ANYTIME_BIN" "$LOAD_BIN"; do
    [ -x "$bin" ] || { echo "side-by-side.sh: $bin missing; cargo build --release -p anytime-cli -p anytime-load" >&2; exit 2; }
done
mkdir -p "$out"
work=$(mktemp -d /tmp/anytime-peers.XXXXXX)
chmod 755 "$work" # ejabberd runs as its own user
# Pin the binaries for the whole run: a build in the same checkout (target/ is shared) must not
# swap them between rounds.
mkdir -p "$work/bin"
built_anytime=$(date -u -r "$ANYTIME_BIN" +%Y-%m-%dT%H:%M:%SZ)
built_load=$(date -u -r "$LOAD_BIN" +%Y-%m-%dT%H:%M:%SZ)
cp "$ANYTIME_BIN" "$work/bin/anytime"
cp "$LOAD_BIN" "$work/bin/anytime-load"
ANYTIME_BIN=$work/bin/anytime
LOAD_BIN=$work/bin/anytime-load
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
cleanup() {
    if [ -d "$work/ejabberd" ]; then
        "$here/peers/ejabberd.sh" stop "$work/ejabberd" || true
        cp -r "$work/ejabberd/log" "$out/ejabberd-log" 2>/dev/null || true
    fi
    if [ -d "$work/synapse" ]; then
        "$here/peers/synapse.sh" stop "$work/synapse" || true
        cp "$work/synapse/homeserver.log" "$out/synapse.log" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)"
if [ "$need_ejabberd" = 1 ]; then
    port=$(free_port)
    "$here/peers/ejabberd.sh" start "$work/ejabberd" "$port"
    ejabberd_pid=$("$here/peers/ejabberd.sh" pid "$work/ejabberd")
    xmpp=(--addr "127.0.0.1:$port" --domain localhost --muc-domain conference.localhost --server-pid "$ejabberd_pid")
fi
if [ "$need_synapse" = 1 ]; then
    matrix_port=$(free_port)
    "$here/peers/synapse.sh" start "$work/synapse" "$matrix_port"
    synapse_pid=$("$here/peers/synapse.sh" pid "$work/synapse")
    matrix=(--url "http://127.0.0.1:$matrix_port" --server-pid "$synapse_pid" --max-in-flight "$MATRIX_MAX_IN_FLIGHT")
fi

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit: ${COMMIT:-$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)}"
    [ "$need_ejabberd" = 0 ] || echo "ejabberd: $(dpkg-query -W -f '${Version}' ejabberd)"
    [ "$need_synapse" = 0 ] || echo "synapse: $("$here/peers/synapse.sh" version "$work/synapse")"
    echo "binaries: anytime sha256 $(sha256sum "$ANYTIME_BIN" | cut -c1-12) (built $built_anytime), anytime-load sha256 $(sha256sum "$LOAD_BIN" | cut -c1-12) (built $built_load)"
    echo "cpus: $(nproc); $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
    echo "settings: ROUNDS=$ROUNDS PAIRS=$PAIRS MAX_MESSAGES=$MAX_MESSAGES WINDOW=$WINDOW RUN_SECONDS=$SECONDS_PER_RUN WARMUP=$WARMUP MEMBERS=$MEMBERS FANOUT_MESSAGES=$FANOUT_MESSAGES CONNECTIONS=$CONNECTIONS SCENARIOS=\"$SCENARIOS\""
    [ "$need_synapse" = 0 ] || echo "matrix settings: MATRIX_MESSAGES=$MATRIX_MESSAGES MATRIX_RATE=$MATRIX_RATE MATRIX_FRACTIONS=$MATRIX_FRACTIONS MATRIX_FANOUT_MESSAGES=$MATRIX_FANOUT_MESSAGES MATRIX_MAX_IN_FLIGHT=$MATRIX_MAX_IN_FLIGHT"
} >"$out/run.txt"

run() { # name, then the command; prints its summary and keeps it
    local name=$1
    shift
    echo "== $name: $*" | sed "s|$root/||g; s|$work/bin/|target/release/|g"
    "$@" --json "$out/$name.json" | tee "$out/$name.txt"
    # How busy the shared machine was meanwhile (other tenants' builds show up here).
    echo "machine: load $(cut -d' ' -f1-3 /proc/loadavg); io pressure $(head -n1 /proc/pressure/io 2>/dev/null || echo n/a)" | tee -a "$out/$name.txt"
}

for round in $(seq 1 "$ROUNDS"); do
    for scenario in $SCENARIOS; do
        case $scenario in
        latency)
            open_loop=(--pairs "$PAIRS" --max-messages "$MAX_MESSAGES" --window "$WINDOW" --seconds "$SECONDS_PER_RUN" --warmup "$WARMUP")
            run "anytime-latency-$round" "$LOAD_BIN" latency --binary "$ANYTIME_BIN" "${open_loop[@]}"
            run "ejabberd-latency-$round" "$LOAD_BIN" xmpp latency "${xmpp[@]}" "${open_loop[@]}"
            ;;
        fanout)
            run "anytime-fanout-$round" "$LOAD_BIN" fanout --binary "$ANYTIME_BIN" --members "$MEMBERS" --messages "$FANOUT_MESSAGES"
            run "ejabberd-fanout-$round" "$LOAD_BIN" xmpp fanout "${xmpp[@]}" --members "$MEMBERS" --messages "$FANOUT_MESSAGES"
            ;;
        connections)
            [ "$CONNECTIONS" -gt 0 ] || continue
            run "anytime-connections-$round" "$LOAD_BIN" connections --binary "$ANYTIME_BIN" --devices $((CONNECTIONS / 2)) --per-device 2
            run "ejabberd-connections-$round" "$LOAD_BIN" xmpp connections "${xmpp[@]}" --connections "$CONNECTIONS"
            ;;
        matrix)
            # Closed loop: the same pairs and window; Synapse with fewer messages per sender.
            run "anytime-durable-$round" "$LOAD_BIN" durable --binary "$ANYTIME_BIN" --pairs "$PAIRS" --messages "$MAX_MESSAGES" --window "$WINDOW"
            run "synapse-throughput-$round" "$LOAD_BIN" matrix throughput "${matrix[@]}" --pairs "$PAIRS" --messages "$MATRIX_MESSAGES" --window "$WINDOW"
            # Open loop at the same fixed rates for both.
            fixed=(--pairs "$PAIRS" --rate "$MATRIX_RATE" --fractions "$MATRIX_FRACTIONS" --seconds "$SECONDS_PER_RUN" --warmup "$WARMUP")
            run "anytime-fixedrate-$round" "$LOAD_BIN" latency --binary "$ANYTIME_BIN" "${fixed[@]}"
            run "synapse-fixedrate-$round" "$LOAD_BIN" matrix latency "${matrix[@]}" "${fixed[@]}"
            run "anytime-roomfanout-$round" "$LOAD_BIN" fanout --binary "$ANYTIME_BIN" --members "$MEMBERS" --messages "$MATRIX_FANOUT_MESSAGES"
            run "synapse-roomfanout-$round" "$LOAD_BIN" matrix fanout "${matrix[@]}" --members "$MEMBERS" --messages "$MATRIX_FANOUT_MESSAGES"
            ;;
        *)
            echo "side-by-side.sh: unknown scenario $scenario" >&2
            exit 2
            ;;
        esac
    done
done

python3 "$here/summarize.py" "$out" | tee "$out/summary.md"
echo "side-by-side.sh: results in $out" >&2
