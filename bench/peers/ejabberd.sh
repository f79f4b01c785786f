#!/usr/bin/env bash
# A private ejabberd instance for side-by-side benchmarks: its own config, spool and logs under
# a temporary directory, listening on 127.0.0.1 only; never the system service.
#
#   bench/peers/ejabberd.sh start DIR [PORT]   install if missing, write config, start, wait
#   bench/peers/ejabberd.sh pid DIR            the beam.smp process id
#   bench/peers/ejabberd.sh stop DIR           stop the instance (and epmd if we started it)
#
# Users are registered by the load tool itself (in-band registration, XEP-0077, allowed from
# 127.0.0.1 only); `start` checks the instance with `ejabberdctl register` of one user.
set -euo pipefail

cmd=${1:?usage: ejabberd.sh start|pid|stop DIR [PORT]}
dir=${2:?usage: ejabberd.sh start|pid|stop DIR [PORT]}
port=${3:-5222}
node=anytimebench@localhost

# As the ejabberd user, without su: su's PAM session resets the open-file limit to 1,024, and
# setpriv keeps the limit raised below (the Erlang cookie is in the ejabberd user's home).
ctl() {
    setpriv --reuid=ejabberd --regid=ejabberd --init-groups env HOME=/var/lib/ejabberd \
        ejabberdctl --config-dir "$dir/etc" --spool "$dir/spool" --logs "$dir/log" --node "$node" "$@"
}

install_if_missing() {
    if ! command -v ejabberdctl >/dev/null 2>&1; then
        echo "ejabberd.sh: installing Debian's ejabberd" >&2
        # Debian starts the system service after installing unless policy-rc.d forbids it;
        # this script never uses that service (the machine's policy-rc.d already says no).
        DEBIAN_FRONTEND=noninteractive apt-get install -y ejabberd >/dev/null
    fi
}

write_config() {
    mkdir -p "$dir/etc" "$dir/spool" "$dir/log"
    cp /etc/ejabberd/inetrc "$dir/etc/inetrc"
    cat >"$dir/etc/ejabberdctl.cfg" <<CFG
ERLANG_NODE=$node
INET_DIST_INTERFACE=127.0.0.1
ERL_OPTIONS="-env ERL_CRASH_DUMP_BYTES 0"
ERL_MAX_PORTS=65536
CFG
    cat >"$dir/etc/ejabberd.yml" <<YML
# Written by bench/peers/ejabberd.sh for benchmarks: loopback only, no TLS, no shapers.
loglevel: warning
log_rotate_count: 0
hosts:
  - localhost
listen:
  -
    port: $port
    ip: "127.0.0.1"
    module: ejabberd_c2s
    backlog: 4096
    max_stanza_size: 262144
    shaper: none
    access: c2s
    starttls: false
    starttls_required: false
auth_method: internal
auth_password_format: plain
disable_sasl_mechanisms:
  - "digest-md5"
  - "X-OAUTH2"
registration_timeout: infinity
# Caches large enough for every benchmark account (the default 1,000 thrashes).
cache_size: 200000
max_fsm_queue: 100000
acl:
  loopback:
    ip:
      - 127.0.0.0/8
access_rules:
  c2s:
    allow: all
  register:
    allow: all
  muc_create:
    allow: all
  trusted_network:
    allow: loopback
shaper_rules:
  max_user_sessions: 10
  max_user_offline_messages: 1000000
  c2s_shaper: none
  s2s_shaper: none
modules:
  mod_disco: {}
  mod_roster: {}
  mod_offline:
    access_max_user_messages: max_user_offline_messages
  mod_register:
    access: register
    ip_access: trusted_network
  mod_muc:
    host: conference.localhost
    access_create: muc_create
    max_users: 10000
    max_users_presence: 10000
    history_size: 0
    min_message_interval: 0
    min_presence_interval: 0
    default_room_options:
      max_users: 10000
      persistent: false
YML
    # ejabberdctl runs the node as the ejabberd user.
    chown -R ejabberd:ejabberd "$dir"
}

case $cmd in
start)
    install_if_missing
    mkdir -p "$dir"
    chmod 755 "$dir"
    if epmd -names >/dev/null 2>&1; then : >"$dir/epmd-was-running"; fi
    write_config
    ulimit -n "$(ulimit -Hn)"
    ctl start
    for _ in $(seq 1 60); do
        if ctl status >/dev/null 2>&1; then break; fi
        sleep 1
    done
    ctl status >/dev/null || { echo "ejabberd.sh: ejabberd did not start; log in $dir/log" >&2; exit 1; }
    # Wait for the c2s listener, then check that accounts can be made.
    for _ in $(seq 1 30); do
        if (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null; then break; fi
        sleep 1
    done
    ctl register benchcheck localhost benchcheck-password >/dev/null
    echo "ejabberd.sh: ejabberd $(dpkg-query -W -f '${Version}' ejabberd) on 127.0.0.1:$port (node $node, dir $dir)" >&2
    ;;
pid)
    pgrep -u ejabberd -f -- "-[s]name $node" | head -n1
    ;;
stop)
    if ctl status >/dev/null 2>&1; then ctl stop >/dev/null || true; fi
    for _ in $(seq 1 30); do
        pgrep -u ejabberd -f -- "-[s]name $node" >/dev/null || break
        sleep 1
    done
    if pid=$(pgrep -u ejabberd -f -- "-[s]name $node"); then kill $pid || true; fi
    # epmd: stop it only if this instance started it and nothing else is registered.
    if [ ! -e "$dir/epmd-was-running" ] && ! epmd -names 2>/dev/null | grep -q '^name '; then
        epmd -kill >/dev/null 2>&1 || true
    fi
    ;;
*)
    echo "usage: ejabberd.sh start|pid|stop DIR [PORT]" >&2
    exit 2
    ;;
esac
