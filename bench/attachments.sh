#!/usr/bin/env bash
# Upload and download throughput of one large attachment through a real server (release build),
# against the disk's own write speed as the limit. Usage:
#   bench/attachments.sh [SIZE_MIB] [ROUNDS]     (default 1024 MiB, 3 rounds)
# Prints one line per round and the medians. Everything lives in a temp dir removed at exit.
set -euo pipefail
size_mib=${1:-1024}
rounds=${2:-3}
root=$(cd "$(dirname "$0")/.." && pwd)
bin="$root/target/release/anytime"
[ -x "$bin" ] || cargo build --release -p anytime-cli --manifest-path "$root/Cargo.toml"
work=$(mktemp -d /tmp/anytime-attach-bench.XXXXXX)
server_pid=
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

"$bin" serve --data "$work/data" --listen 127.0.0.1:0 --no-rate-limits \
  --argon2-memory-kib 1024 --argon2-iterations 1 > "$work/server.out" 2> "$work/server.log" &
server_pid=$!
for _ in $(seq 100); do grep -q "running at" "$work/server.out" 2>/dev/null && break; sleep 0.1; done
url=$(grep -o 'http://[^ /]*' "$work/server.out" | head -1)
cli() { "$bin" --profile "$work/$1" --json "${@:2}"; }
cli alice register --server "$url" alice --password password-alice > /dev/null
cli bob register --server "$url" bob --password password-bob > /dev/null
conv=$(cli alice direct bob | tail -1 | sed 's/.*"conv":"\([0-9a-f]*\)".*/\1/')
head -c "$((size_mib * 1024 * 1024))" /dev/urandom > "$work/file.bin"
want=$(sha256sum "$work/file.bin" | cut -d' ' -f1)

now() { date +%s.%N; }
mbps() { awk -v b="$((size_mib * 1024 * 1024))" -v s="$1" 'BEGIN { printf "%.0f", b / s / 1e6 }'; }
ups=(); downs=(); disks=()
for round in $(seq "$rounds"); do
  sync
  t0=$(now); dd if=/dev/zero of="$work/dd.bin" bs=4M count="$((size_mib / 4))" conv=fsync status=none; t1=$(now)
  disk=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }'); rm -f "$work/dd.bin"
  t0=$(now); sent=$(cli alice send-file "$conv" "$work/file.bin" 2>/dev/null | tail -1); t1=$(now)
  up=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
  msg=$(echo "$sent" | sed 's/.*"msg_id":"\([0-9a-f]*\)".*/\1/')
  cli bob sync > /dev/null
  t0=$(now); got=$(cli bob download "$conv" "$msg" --output "$work/got-$round.bin" 2>/dev/null | tail -1); t1=$(now)
  down=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
  echo "$got" | grep -q "\"sha256\":\"$want\"" || { echo "round $round: the downloaded file differs" >&2; exit 1; }
  rm -f "$work/got-$round.bin"
  echo "round $round: disk write $(mbps "$disk") MB/s, upload $(mbps "$up") MB/s, download $(mbps "$down") MB/s"
  ups+=("$(mbps "$up")"); downs+=("$(mbps "$down")"); disks+=("$(mbps "$disk")")
done
median() { printf '%s\n' "$@" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
echo "median of $rounds, ${size_mib} MiB: disk write $(median "${disks[@]}") MB/s, upload $(median "${ups[@]}") MB/s, download $(median "${downs[@]}") MB/s"
