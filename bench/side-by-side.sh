#!/usr/bin/env bash
# Anytime and ejabberd side by side: same machine, same run, alternating A B per scenario and
# round. Starts a private ejabberd (bench/peers/ejabberd.sh: 127.0.0.1 only, temp dir) and stops
# it at the end; every Anytime run starts its own server (anytime-load --binary, fresh data dir,
# 127.0.0.1:0). Prints tables of medians [min–max] and Anytime/ejabberd ratios (bench/summarize.py).
#
#   cargo build --release -p anytime-cli -p anytime-load
#   bench/side-by-side.sh [OUT_DIR]
#
# Settings (environment): ROUNDS=3 PAIRS=100 MAX_MESSAGES=1000 WINDOW=64 RUN_SECONDS=10 WARMUP=1
# MEMBERS=100 FANOUT_MESSAGES=200 CONNECTIONS=9000 (0 skips) SCENARIOS="latency fanout connections"
# ANYTIME_BIN=target/release/anytime LOAD_BIN=target/release/anytime-load COMMIT=(git HEAD)
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
SCENARIOS=${SCENARIOS:-"latency fanout connections"}
ANYTIME_BIN=${ANYTIME_BIN:-$root/target/release/anytime}
LOAD_BIN=${LOAD_BIN:-$root/target/release/anytime-load}

for bin in "$ANYTIME_BIN" "$LOAD_BIN"; do
    [ -x "$bin" ] || { echo "side-by-side.sh: $bin missing; cargo build --release -p anytime-cli -p anytime-load" >&2; exit 2; }
done
mkdir -p "$out"
work=$(mktemp -d /tmp/anytime-peers.XXXXXX)
chmod 755 "$work" # ejabberd runs as its own user
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cleanup() {
    "$here/peers/ejabberd.sh" stop "$work/ejabberd" || true
    cp -r "$work/ejabberd/log" "$out/ejabberd-log" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)"
"$here/peers/ejabberd.sh" start "$work/ejabberd" "$port"
ejabberd_pid=$("$here/peers/ejabberd.sh" pid "$work/ejabberd")
xmpp=(--addr "127.0.0.1:$port" --domain localhost --muc-domain conference.localhost --server-pid "$ejabberd_pid")

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit: ${COMMIT:-$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)}"
    echo "ejabberd: $(dpkg-query -W -f '${Version}' ejabberd)"
    echo "cpus: $(nproc); $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
    echo "settings: ROUNDS=$ROUNDS PAIRS=$PAIRS MAX_MESSAGES=$MAX_MESSAGES WINDOW=$WINDOW RUN_SECONDS=$SECONDS_PER_RUN WARMUP=$WARMUP MEMBERS=$MEMBERS FANOUT_MESSAGES=$FANOUT_MESSAGES CONNECTIONS=$CONNECTIONS"
} >"$out/run.txt"

run() { # name, then the command; prints its summary and keeps it
    local name=$1
    shift
    echo "== $name: $*" | sed "s|$root/||g"
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
        *)
            echo "side-by-side.sh: unknown scenario $scenario" >&2
            exit 2
            ;;
        esac
    done
done

python3 "$here/summarize.py" "$out" | tee "$out/summary.md"
echo "side-by-side.sh: results in $out" >&2
