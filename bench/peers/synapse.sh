#!/usr/bin/env bash
# A private Synapse (Matrix homeserver) for side-by-side benchmarks: installed from PyPI into a
# venv, its own config, keys, media and logs under DIR, listening on 127.0.0.1 only; client API
# only (no federation listener). Database: PostgreSQL (Synapse's production setting) at
# 127.0.0.1:5432, user postgres, in a database named after DIR that `start` creates and `stop`
# drops; SYNAPSE_DB=sqlite uses SQLite in DIR instead.
#
#   bench/peers/synapse.sh start DIR [PORT]   install if missing, write config, start, wait
#   bench/peers/synapse.sh pid DIR            the homeserver's process id
#   bench/peers/synapse.sh version DIR        "matrix-synapse X.Y.Z, postgresql|sqlite"
#   bench/peers/synapse.sh stop DIR           stop the instance and drop its database
#
# Settings (environment): SYNAPSE_VENV=/tmp/anytime-synapse-venv (kept between runs; pip
# installs matrix-synapse and psycopg2-binary into it if missing), SYNAPSE_VERSION (pin, e.g.
# 1.163.2; default: newest), SYNAPSE_DB=postgres|sqlite, PGHOST=127.0.0.1 PGPORT=5432 PGUSER=postgres.
#
# Users register themselves through the client API (`m.login.dummy`: registration is open
# without verification, on loopback only); rate limits are set so high they never apply.
set -euo pipefail

cmd=${1:?usage: synapse.sh start|pid|version|stop DIR [PORT]}
dir=${2:?usage: synapse.sh start|pid|version|stop DIR [PORT]}
port=${3:-8008}
venv=${SYNAPSE_VENV:-/tmp/anytime-synapse-venv}
db_kind=${SYNAPSE_DB:-postgres}
export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres}

install_if_missing() {
    if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import synapse, psycopg2' 2>/dev/null; then
        return
    fi
    echo "synapse.sh: installing matrix-synapse${SYNAPSE_VERSION:+==$SYNAPSE_VERSION} from PyPI into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "matrix-synapse${SYNAPSE_VERSION:+==$SYNAPSE_VERSION}" psycopg2-binary
    "$venv/bin/python" -c 'import synapse, psycopg2'
}

# The database belongs to this instance: named after its directory, so two instances never share.
db_name() {
    echo "anytime_bench_synapse_$(basename "$dir" | tr -c 'a-zA-Z0-9_\n' '_' | tr 'A-Z' 'a-z')"
}

secret() { head -c 24 /dev/urandom | base64 | tr -d '/+='; }

write_config() {
    mkdir -p "$dir/media"
    local database
    if [ "$db_kind" = sqlite ]; then
        database="  name: sqlite3
  args:
    database: $dir/homeserver.db"
    else
        # C collation and UTF8 encoding, as Synapse requires.
        psql -q -v ON_ERROR_STOP=1 -d postgres -c "CREATE DATABASE $(db_name) ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0" >/dev/null
        : >"$dir/created-database"
        database="  name: psycopg2
  args:
    user: $PGUSER
    host: $PGHOST
    port: $PGPORT
    dbname: $(db_name)
    cp_min: 5
    cp_max: 10"
    fi
    cat >"$dir/log.yaml" <<YML
version: 1
formatters:
  precise:
    format: '%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s'
handlers:
  file:
    class: logging.FileHandler
    formatter: precise
    filename: $dir/homeserver.log
root:
  level: WARNING
  handlers: [file]
disable_existing_loggers: false
YML
    # Every rate limit Synapse has, set so high it never applies to the benchmark.
    local high="{per_second: 1000000, burst_count: 1000000}"
    cat >"$dir/homeserver.yaml" <<YML
# Written by bench/peers/synapse.sh for benchmarks: loopback only, client API only, no TLS,
# open registration, rate limits off.
server_name: localhost
report_stats: false
listeners:
  - port: $port
    bind_addresses: ['127.0.0.1']
    type: http
    tls: false
    x_forwarded: false
    resources:
      - names: [client]
        compress: false
database:
$database
log_config: $dir/log.yaml
media_store_path: $dir/media
signing_key_path: $dir/signing.key
macaroon_secret_key: $(secret)
form_secret: $(secret)
registration_shared_secret: $(secret)
enable_registration: true
enable_registration_without_verification: true
# Cheap password hashing: setting up hundreds of accounts must not dominate the run (the default
# is 12 rounds). Never use this in production.
bcrypt_rounds: 4
trusted_key_servers: []
suppress_key_server_warning: true
federation_domain_whitelist: []
presence:
  enabled: false
url_preview_enabled: false
enable_metrics: false
limit_remote_rooms: {enabled: false}
rc_message: $high
rc_registration: $high
rc_registration_token_validity: $high
rc_login:
  address: $high
  account: $high
  failed_attempts: $high
rc_joins:
  local: $high
  remote: $high
rc_joins_per_room: $high
rc_invites:
  per_room: $high
  per_user: $high
  per_issuer: $high
rc_3pid_validation: $high
rc_admin_redaction: $high
rc_federation: {window_size: 1000, sleep_limit: 1000000, sleep_delay: 0, reject_limit: 1000000, concurrent: 1000000}
rc_room_creation: $high
rc_reports: $high
rc_presence:
  per_user: $high
rc_delayed_event_mgmt: $high
rc_send_to_device: $high
YML
}

synapse() { "$venv/bin/python" -m synapse.app.homeserver --config-path "$dir/homeserver.yaml" "$@"; }

case $cmd in
start)
    install_if_missing
    mkdir -p "$dir"
    echo "$port" >"$dir/port"
    write_config
    synapse --generate-keys >/dev/null
    # In the background, in its own session (stop signals it by its pid file).
    setsid "$venv/bin/python" -m synapse.app.homeserver --config-path "$dir/homeserver.yaml" \
        >"$dir/stdout.log" 2>&1 </dev/null &
    echo $! >"$dir/server.pid"
    for _ in $(seq 1 120); do
        if curl -fsS "http://127.0.0.1:$port/_matrix/client/versions" >/dev/null 2>&1; then break; fi
        sleep 1
    done
    curl -fsS "http://127.0.0.1:$port/_matrix/client/versions" >/dev/null ||
        { echo "synapse.sh: Synapse did not start; logs in $dir" >&2; tail -n 20 "$dir/stdout.log" >&2; exit 1; }
    echo "synapse.sh: $("$0" version "$dir") on 127.0.0.1:$port (dir $dir)" >&2
    ;;
pid)
    cat "$dir/server.pid"
    ;;
version)
    db=$db_kind
    [ "$db" = sqlite ] || db="postgresql $(psql -Atc 'show server_version' -d postgres | cut -d' ' -f1), synchronous_commit=$(psql -Atc 'show synchronous_commit' -d postgres), fsync=$(psql -Atc 'show fsync' -d postgres)"
    echo "matrix-synapse $("$venv/bin/python" -c 'import synapse; print(synapse.__version__)'), $db"
    ;;
stop)
    if [ -s "$dir/server.pid" ] && pid=$(cat "$dir/server.pid") && kill -0 "$pid" 2>/dev/null; then
        kill "$pid" || true
        for _ in $(seq 1 30); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 1
        done
        if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid" || true; fi
    fi
    if [ -e "$dir/created-database" ]; then
        psql -q -d postgres -c "DROP DATABASE IF EXISTS $(db_name) WITH (FORCE)" >/dev/null || true
        rm -f "$dir/created-database"
    fi
    ;;
*)
    echo "usage: synapse.sh start|pid|version|stop DIR [PORT]" >&2
    exit 2
    ;;
esac
