#!/usr/bin/env bash
# rca-node: the entry point of the redis-consul-agent image. One image serves
# every role of the demo stack; RCA_ROLE says which, and this script plays the
# "host": it starts the role's daemon and runs the agent beside it.
#
#   RCA_ROLE=redis      redis-server, and the agent registering it (redis role)
#   RCA_ROLE=sentinel   redis-sentinel, and the agent registering it
#   RCA_ROLE=twemproxy  the agent, which runs nutcracker as its child (supervise)
#   RCA_ROLE=haproxy    haproxy, and the agent driving it through its runtime socket
#   RCA_ROLE=agent      only the agent, with the config at RCA_AGENT_CONFIG
#   anything else       run the given command (e.g. `redis-cli ...`)
#
# Configs are written under RCA_DATA (default /var/lib/rca). The Redis,
# Sentinel, nutcracker and HAProxy files are written once and then kept: Sentinel and
# the agent rewrite them, and a restarted container must come back with what
# they wrote (an old master that comes back as master is the split-brain case
# the agent guards against). The agent config is written at every start unless
# RCA_AGENT_CONFIG names an existing file, which is then used as it is.
#
# Environment (defaults in brackets):
#   RCA_ANNOUNCE_IP      address other containers reach this one at [first of hostname -i]
#   RCA_NODE_NAME        node_name of the agent [hostname]
#   CONSUL_HTTP_ADDR     the Consul agent's HTTP API [consul:8500]
#   RCA_CONSUL_TTL       TTL of the agent's checks [10s]
#   RCA_STALE_MASTER_GRACE  how long an unconfirmed master keeps its tag [5s]
#   RCA_HTTP_ADDR        agent status API and dashboard [0.0.0.0:8765]
#   RCA_LOG_LEVEL        agent log level [info]
#   RCA_SENTINELS        Sentinels the agent follows, host:port,host:port
#   redis:     RCA_MASTER_NAME, RCA_REPLICAOF (host:port; empty: start as master), RCA_REDIS_PORT [6379]
#   sentinel:  RCA_MONITOR (name=host:port,...), RCA_QUORUM [2], RCA_DOWN_AFTER_MS [5000],
#              RCA_FAILOVER_TIMEOUT_MS [15000], RCA_SENTINEL_PORT [26379]
#   twemproxy: RCA_POOL_NAME [demo], RCA_POOL_LISTEN [0.0.0.0:22121],
#              RCA_POOL_SERVERS (name=host:port,...; names are Sentinel master names),
#              RCA_STATS_PORT [22222]
#   haproxy:   RCA_HAPROXY_SERVERS (name=host:port,...; names are Sentinel master names):
#              one frontend, backend and server per name, the frontends listening on
#              RCA_HAPROXY_PORT [6380] and the ports after it in the list's order;
#              RCA_HAPROXY_NAME [edge], RCA_HAPROXY_STATS_PORT [8404] (/metrics, /stats)
set -euo pipefail

ROLE="${RCA_ROLE:-}"
DATA="${RCA_DATA:-/var/lib/rca}"
AGENT_BIN="${RCA_AGENT_BIN:-redis-consul-agent}"

log() { printf 'rca-node[%s]: %s\n' "${ROLE:-exec}" "$*" >&2; }
die() { log "$*"; exit 2; }

announce_ip() {
  if [ -n "${RCA_ANNOUNCE_IP:-}" ]; then
    printf '%s' "$RCA_ANNOUNCE_IP"
    return
  fi
  local ips
  read -r -a ips <<<"$(hostname -i)"
  [ "${#ips[@]}" -gt 0 ] || die "cannot find this container's address: set RCA_ANNOUNCE_IP"
  printf '%s' "${ips[0]}"
}

# yaml_list "a:1,b:2" prints [a:1, b:2].
yaml_list() {
  local IFS=, out="" x
  for x in $1; do out+="${out:+, }$x"; done
  printf '[%s]' "$out"
}

# write_once FILE: write stdin to FILE unless it exists already.
write_once() {
  if [ -s "$1" ]; then
    log "keeping $1 from an earlier start"
    cat >/dev/null
    return
  fi
  cat >"$1.tmp" && mv "$1.tmp" "$1"
}

agent_common() {
  cat <<EOF
node_name: ${RCA_NODE_NAME:-$(hostname)}
consul:
  address: ${CONSUL_HTTP_ADDR:-consul:8500}
  ttl: ${RCA_CONSUL_TTL:-10s}
http:
  address: ${RCA_HTTP_ADDR:-0.0.0.0:8765}
timing:
  stale_master_grace: ${RCA_STALE_MASTER_GRACE:-5s}
log:
  level: ${RCA_LOG_LEVEL:-info}
  format: text
EOF
  if [ -n "${RCA_SENTINELS:-}" ]; then
    printf 'sentinel:\n  addresses: %s\n  consul_service: redis-sentinel\n' "$(yaml_list "$RCA_SENTINELS")"
  fi
}

# agent_config writes the generated agent config (stdin appended to the common
# part) unless the user mounted one.
agent_config() {
  AGENT_CONFIG="${RCA_AGENT_CONFIG:-$DATA/agent.yml}"
  if [ -n "${RCA_AGENT_CONFIG:-}" ] && [ -s "$RCA_AGENT_CONFIG" ]; then
    cat >/dev/null
    log "using agent config $AGENT_CONFIG"
    return
  fi
  { agent_common; cat; } >"$AGENT_CONFIG"
  log "agent config $AGENT_CONFIG:"
  sed 's/^/    /' "$AGENT_CONFIG" >&2
}

setup_redis() {
  : "${RCA_MASTER_NAME:?RCA_MASTER_NAME: the Sentinel master name of this Redis}"
  local ip port dir
  ip=$(announce_ip)
  port="${RCA_REDIS_PORT:-6379}"
  dir="$DATA/redis"
  mkdir -p "$dir"
  {
    cat <<EOF
# Written by rca-node at the first start; Sentinel rewrites it (CONFIG REWRITE).
bind 0.0.0.0
port $port
protected-mode no
daemonize no
logfile ""
dir $dir
save ""
appendonly no
replica-announce-ip $ip
replica-announce-port $port
EOF
    if [ -n "${RCA_REPLICAOF:-}" ]; then
      echo "replicaof ${RCA_REPLICAOF%:*} ${RCA_REPLICAOF##*:}"
    fi
  } | write_once "$dir/redis.conf"
  DAEMON=(redis-server "$dir/redis.conf")
  agent_config <<EOF
redis:
  - address: 127.0.0.1:$port
    announce: $ip:$port
    master_name: $RCA_MASTER_NAME
EOF
}

setup_sentinel() {
  : "${RCA_MONITOR:?RCA_MONITOR: name=host:port,... of the masters to monitor}"
  local ip port dir name addr IFS_SAVE
  ip=$(announce_ip)
  port="${RCA_SENTINEL_PORT:-26379}"
  dir="$DATA/sentinel"
  mkdir -p "$dir"
  {
    cat <<EOF
# Written by rca-node at the first start; Sentinel rewrites it.
bind 0.0.0.0
port $port
protected-mode no
daemonize no
logfile ""
dir $dir
sentinel announce-ip $ip
sentinel announce-port $port
EOF
    IFS_SAVE=$IFS; IFS=,
    for m in $RCA_MONITOR; do
      name=${m%%=*}; addr=${m#*=}
      echo "sentinel monitor $name ${addr%:*} ${addr##*:} ${RCA_QUORUM:-2}"
      echo "sentinel down-after-milliseconds $name ${RCA_DOWN_AFTER_MS:-5000}"
      echo "sentinel failover-timeout $name ${RCA_FAILOVER_TIMEOUT_MS:-15000}"
      echo "sentinel parallel-syncs $name 1"
    done
    IFS=$IFS_SAVE
  } | write_once "$dir/sentinel.conf"
  DAEMON=(redis-sentinel "$dir/sentinel.conf")
  agent_config <<EOF
sentinels:
  - address: 127.0.0.1:$port
    announce: $ip:$port
EOF
}

setup_twemproxy() {
  : "${RCA_POOL_SERVERS:?RCA_POOL_SERVERS: name=host:port,... (names are Sentinel master names)}"
  local ip dir conf stats listen name addr IFS_SAVE
  ip=$(announce_ip)
  dir="$DATA/nutcracker"
  conf="$dir/nutcracker.yml"
  stats="${RCA_STATS_PORT:-22222}"
  listen="${RCA_POOL_LISTEN:-0.0.0.0:22121}"
  mkdir -p "$dir"
  {
    cat <<EOF
# Written by rca-node at the first start; redis-consul-agent keeps the
# servers on the current masters.
${RCA_POOL_NAME:-demo}:
  listen: $listen
  hash: murmur
  distribution: ketama
  redis: true
  auto_eject_hosts: false
  timeout: 400
  server_connections: 1
  servers:
EOF
    IFS_SAVE=$IFS; IFS=,
    for s in $RCA_POOL_SERVERS; do
      name=${s%%=*}; addr=${s#*=}
      echo "    - $addr:1 $name"
    done
    IFS=$IFS_SAVE
  } | write_once "$conf"
  DAEMON=()
  agent_config <<EOF
twemproxy:
  - name: ${RCA_POOL_NAME:-demo}
    config_file: $conf
    announce: $ip
    restart:
      mode: supervise
      # Debian's nutcracker logs to /var/log/nutcracker and writes its pid to
      # /run/nutcracker by default, which the unprivileged user cannot.
      command: [nutcracker, -c, $conf, -s, "$stats", -o, /dev/stderr, -p, $dir/nutcracker.pid]
EOF
}

# setup_haproxy writes a haproxy.cfg in the form of deploy/haproxy/haproxy.cfg
# (one frontend, backend and server per shard; the runtime socket at level
# admin) and the agent config that drives it. HAProxy runs as this container's
# user, so the socket needs no shared group: only the agent beside it can use
# it, as on a host. A restarted HAProxy comes back with the addresses of this
# file and the agent puts them right at its next reconcile.
setup_haproxy() {
  : "${RCA_HAPROXY_SERVERS:?RCA_HAPROXY_SERVERS: name=host:port,... (names are Sentinel master names)}"
  local ip dir conf sock port stats name addr IFS_SAVE servers="" frontends=""
  ip=$(announce_ip)
  dir="$DATA/haproxy"
  conf="$dir/haproxy.cfg"
  sock="$dir/admin.sock"
  port="${RCA_HAPROXY_PORT:-6380}"
  stats="${RCA_HAPROXY_STATS_PORT:-8404}"
  mkdir -p "$dir"
  {
    cat <<EOF
# Written by rca-node at the first start; redis-consul-agent keeps each
# server on its shard's master through the runtime API (no reload).
global
    log stdout format raw local0
    maxconn 4096
    stats socket $sock mode 600 level admin
    stats timeout 10s

defaults
    mode tcp
    log global
    option tcplog
    timeout connect 1s
    timeout client 1h
    timeout server 1h
    timeout check 500ms

frontend stats
    mode http
    option httplog
    option dontlog-normal
    bind 0.0.0.0:$stats
    timeout client 10s
    http-request use-service prometheus-exporter if { path /metrics }
    stats enable
    stats uri /stats
    stats refresh 2s
EOF
    IFS_SAVE=$IFS; IFS=,
    for s in $RCA_HAPROXY_SERVERS; do
      name=${s%%=*}; addr=${s#*=}
      printf '\nfrontend %s\n    bind 0.0.0.0:%s\n    default_backend %s\n' "$name" "$port" "$name"
      printf '\nbackend %s\n    server %s %s check inter 1s fall 2 rise 1\n' "$name" "$name" "$addr"
      port=$((port + 1))
    done
    IFS=$IFS_SAVE
  } | write_once "$conf"
  port="${RCA_HAPROXY_PORT:-6380}"
  IFS_SAVE=$IFS; IFS=,
  for s in $RCA_HAPROXY_SERVERS; do
    name=${s%%=*}
    servers+="      - {backend: $name, server: $name, master_name: $name}"$'\n'
    frontends+="      - {name: $name, address: $ip:$port, backends: [$name]}"$'\n'
    port=$((port + 1))
  done
  IFS=$IFS_SAVE
  DAEMON=(haproxy -db -f "$conf")
  WAIT_SOCKET=$sock
  agent_config <<EOF
haproxy:
  - name: ${RCA_HAPROXY_NAME:-edge}
    runtime_api: $sock
    servers:
${servers%$'\n'}
    frontends:
${frontends%$'\n'}
    service: haproxy
    reconcile: 5s
EOF
}

# run_agent_loop keeps the agent running beside the daemon: an agent that
# exits is started again after a capped backoff, and the daemon is left alone
# (the agent failing must not take Redis down). SIGTERM stops the agent
# gracefully so it deregisters.
run_agent_loop() {
  local pid="" delay=1 started rc
  trap '[ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; exit 0' TERM INT
  while :; do
    started=$SECONDS
    "$AGENT_BIN" agent --config "$AGENT_CONFIG" &
    pid=$!
    rc=0; wait "$pid" || rc=$?
    pid=""
    if ((SECONDS - started > 30)); then delay=1; fi
    log "agent exited with status $rc; starting it again in ${delay}s"
    sleep "$delay" &
    wait $! || true
    ((delay < 16)) && delay=$((delay * 2))
  done
}

main() {
  mkdir -p "$DATA"
  case "$ROLE" in
    redis) setup_redis ;;
    sentinel) setup_sentinel ;;
    twemproxy) setup_twemproxy ;;
    haproxy) setup_haproxy ;;
    agent)
      [ -s "${RCA_AGENT_CONFIG:-}" ] || die "RCA_ROLE=agent needs RCA_AGENT_CONFIG, a readable agent config"
      exec "$AGENT_BIN" agent --config "$RCA_AGENT_CONFIG"
      ;;
    "")
      [ $# -gt 0 ] || die "set RCA_ROLE to redis, sentinel, twemproxy, haproxy or agent, or give a command"
      exec "$@"
      ;;
    *) die "RCA_ROLE=$ROLE: want redis, sentinel, twemproxy, haproxy or agent" ;;
  esac

  if [ "${#DAEMON[@]}" -eq 0 ]; then
    # twemproxy: the agent supervises nutcracker itself; if the agent exits,
    # the container exits and its restart policy brings both back.
    exec "$AGENT_BIN" agent --config "$AGENT_CONFIG"
  fi

  "${DAEMON[@]}" &
  local daemon=$!
  # The agent would report (and retry) a runtime socket that HAProxy has not
  # made yet: give HAProxy up to 5s to make it.
  if [ -n "${WAIT_SOCKET:-}" ]; then
    local i
    for ((i = 0; i < 50; i++)); do
      [ -S "$WAIT_SOCKET" ] && break
      sleep 0.1
    done
  fi
  run_agent_loop &
  local agent=$!
  # shellcheck disable=SC2317 # called by the trap
  stop() {
    log "stopping: agent first (it deregisters), then ${DAEMON[0]}"
    kill -TERM "$agent" 2>/dev/null || true
    wait "$agent" 2>/dev/null || true
    kill -TERM "$daemon" 2>/dev/null || true
    wait "$daemon" 2>/dev/null || true
    exit 0
  }
  trap stop TERM INT
  local rc=0
  wait -n "$daemon" "$agent" || rc=$?
  # Only the daemon ends on its own: the agent loop runs until told to stop.
  log "${DAEMON[0]} exited with status $rc; stopping the agent"
  kill -TERM "$agent" 2>/dev/null || true
  wait "$agent" 2>/dev/null || true
  exit "$rc"
}

main "$@"
