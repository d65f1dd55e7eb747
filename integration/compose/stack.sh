#!/usr/bin/env bash
# Runs the repository's docker-compose.yml on a machine that cannot reach an
# image registry (and on one that can):
#
#   stack.sh setup   install Docker and Compose if missing, start dockerd if it
#                    is not running, make the base images locally under their
#                    public names, build the agent image
#   stack.sh up      setup, then compose up -d and wait until every container is
#                    healthy
#   stack.sh down    stop and remove the stack (containers, network)
#   stack.sh logs    the stack's logs
#   stack.sh ps      the stack's containers
#
# The base images are made, not pulled: debian:bookworm-slim from
# `debootstrap --variant=minbase bookworm` and `docker import`, and
# hashicorp/consul:$CONSUL_VERSION from the consul binary that
# integration/scripts/deps.sh builds from the Go module proxy, on top of that
# Debian image, and prom/prometheus:v$RCA_PROMETHEUS_VERSION from Debian's
# prometheus package on it. An image that already exists under its name is used as it is,
# so a machine that pulled the real ones keeps them. The debootstrap tarball is
# cached under the project's cache directory, so a fresh Docker daemon imports it
# in seconds.
#
# Environment: RCA_CACHE_DIR, CONSUL_VERSION (1.22.5), RCA_PROMETHEUS_VERSION
# (2.42.0, the version Debian bookworm packages), RCA_IMAGE
# (redis-consul-agent:dev), COMPOSE_PROJECT_NAME (redis-demo), DEBIAN_MIRROR,
# RCA_DOCKERD_ARGS (extra dockerd flags when this script starts it).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CONSUL_VERSION="${CONSUL_VERSION:-1.22.5}"
CACHE_DIR="${RCA_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/redis-consul-agent}"
DOCKER_CACHE="$CACHE_DIR/docker"
DEBIAN_IMAGE="debian:bookworm-slim"
CONSUL_IMAGE="hashicorp/consul:$CONSUL_VERSION"
export RCA_PROMETHEUS_VERSION="${RCA_PROMETHEUS_VERSION:-2.42.0}"
PROMETHEUS_IMAGE="prom/prometheus:v$RCA_PROMETHEUS_VERSION"
export RCA_IMAGE="${RCA_IMAGE:-redis-consul-agent:dev}"
export COMPOSE_PROJECT_NAME="${COMPOSE_PROJECT_NAME:-redis-demo}"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
COMPOSE_FILE="$ROOT/docker-compose.yml"

say() { printf 'compose: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else die "needs root: $*"; fi
}

apt_install() {
  say "installing $*"
  export DEBIAN_FRONTEND=noninteractive
  local policy=/usr/sbin/policy-rc.d created=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; created=1
  fi
  as_root apt-get update -qq
  as_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null
  [ "$created" = 1 ] && rm -f "$policy"
  return 0
}

# ensure_tools installs the Docker engine, Compose and debootstrap if missing.
ensure_tools() {
  local pkgs=()
  command -v dockerd >/dev/null 2>&1 || pkgs+=(docker.io iptables)
  command -v debootstrap >/dev/null 2>&1 || pkgs+=(debootstrap)
  if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null 2>&1; then
    pkgs+=(docker-compose)
  fi
  ((${#pkgs[@]} == 0)) || apt_install "${pkgs[@]}"
}

# start_dockerd starts the engine in the background when none answers. It
# stays up after this script ends, like a system service would.
start_dockerd() {
  if docker info >/dev/null 2>&1; then return; fi
  command -v dockerd >/dev/null 2>&1 || die "no dockerd: install docker.io"
  mkdir -p "$DOCKER_CACHE"
  local logf="$DOCKER_CACHE/dockerd.log"
  say "starting dockerd (log: $logf)"
  # shellcheck disable=SC2086 # RCA_DOCKERD_ARGS is a list of flags.
  setsid nohup dockerd ${RCA_DOCKERD_ARGS:-} >>"$logf" 2>&1 </dev/null &
  echo $! >"$DOCKER_CACHE/dockerd.pid"
  local i
  for ((i = 0; i < 60; i++)); do
    docker info >/dev/null 2>&1 && return
    sleep 0.5
  done
  tail -20 "$logf" >&2
  die "dockerd did not answer within 30s"
}

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

# make_debian imports debian:bookworm-slim from a debootstrap tarball (made
# once and cached), trimmed the way the slim image is: no docs, man pages or
# locales, no apt lists.
make_debian() {
  have_image "$DEBIAN_IMAGE" && return
  local tarball="$DOCKER_CACHE/debian-bookworm-minbase.tar"
  if [ ! -s "$tarball" ]; then
    say "making $DEBIAN_IMAGE with debootstrap (about 30s)"
    local root
    root=$(mktemp -d "${TMPDIR:-/tmp}/rca-bookworm.XXXXXX")
    # shellcheck disable=SC2064
    trap "rm -rf '$root'" EXIT
    as_root debootstrap --variant=minbase bookworm "$root" "$DEBIAN_MIRROR" >"$DOCKER_CACHE/debootstrap.log" 2>&1 ||
      { tail -20 "$DOCKER_CACHE/debootstrap.log" >&2; die "debootstrap failed"; }
    rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
      "$root"/usr/share/locale/* "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* \
      "$root"/var/log/* "$root"/tmp/* "$root"/etc/hostname "$root"/etc/resolv.conf "$root"/etc/apt/sources.list
    cat >"$root/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
EOF
    cat >"$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $DEBIAN_MIRROR
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${DEBIAN_MIRROR%/debian}/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    tar -C "$root" --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' \
      --numeric-owner -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    rm -rf "$root"
    trap - EXIT
  fi
  say "importing $DEBIAN_IMAGE"
  docker import -c 'CMD ["bash"]' \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -m "debootstrap --variant=minbase bookworm (local stand-in)" \
    "$tarball" "$DEBIAN_IMAGE" >/dev/null
}

# make_consul builds hashicorp/consul:$CONSUL_VERSION from the consul binary
# that deps.sh builds from the Go module proxy.
make_consul() {
  have_image "$CONSUL_IMAGE" && return
  local bin
  bin="$(bash "$ROOT/integration/scripts/deps.sh")/consul-$CONSUL_VERSION"
  [ -x "$bin" ] || die "no consul binary at $bin"
  say "making $CONSUL_IMAGE from $bin"
  local ctx
  ctx=$(mktemp -d "${TMPDIR:-/tmp}/rca-consul.XXXXXX")
  cp "$bin" "$ctx/consul"
  cp "$ROOT/integration/compose/consul/Dockerfile" "$ROOT/integration/compose/consul/docker-entrypoint.sh" "$ctx/"
  chmod +x "$ctx/docker-entrypoint.sh"
  docker_build -t "$CONSUL_IMAGE" --build-arg "CONSUL_VERSION=$CONSUL_VERSION" \
    --build-arg "BASE_IMAGE=$DEBIAN_IMAGE" "$ctx" || { rm -rf "$ctx"; die "building $CONSUL_IMAGE failed"; }
  rm -rf "$ctx"
}

# make_prometheus builds prom/prometheus:v$RCA_PROMETHEUS_VERSION from
# Debian's package; the build checks that Debian's version is the one asked for.
make_prometheus() {
  have_image "$PROMETHEUS_IMAGE" && return
  say "making $PROMETHEUS_IMAGE from Debian's prometheus package"
  docker_build -t "$PROMETHEUS_IMAGE" --build-arg "PROMETHEUS_VERSION=$RCA_PROMETHEUS_VERSION" \
    --build-arg "BASE_IMAGE=$DEBIAN_IMAGE" "$ROOT/integration/compose/prometheus" ||
    die "building $PROMETHEUS_IMAGE failed"
}

# docker_build runs docker build with BuildKit, which the agent image's
# Dockerfile needs to skip its Go stage. The docker.io package's client has
# BuildKit built in; a newer client needs its buildx plugin.
docker_build() {
  local cli=docker
  if ! docker buildx version >/dev/null 2>&1 && [ -x /usr/bin/docker ]; then
    cli=/usr/bin/docker
  fi
  DOCKER_BUILDKIT=1 "$cli" build -q "$@" >/dev/null
}

# build_agent compiles a static agent outside Docker (Go and its caches are
# here already) and builds the image around it.
build_agent() {
  local version commit
  version=$(git -C "$ROOT" describe --tags --always --dirty 2>/dev/null || echo dev)
  commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
  mkdir -p "$ROOT/bin/docker"
  (cd "$ROOT" && CGO_ENABLED=0 go build -trimpath \
    -ldflags "-s -w -X github.com/seed42ef8afe/redis-consul-agent/agent/buildinfo.Version=$version -X github.com/seed42ef8afe/redis-consul-agent/agent/buildinfo.Commit=$commit" \
    -o bin/docker/redis-consul-agent ./cmd/redis-consul-agent)
  say "building $RCA_IMAGE"
  docker_build -t "$RCA_IMAGE" --build-arg AGENT_FROM=prebuilt \
    --build-arg "BASE_IMAGE=$DEBIAN_IMAGE" "$ROOT"
  # Each build leaves the previous image untagged: drop those.
  docker image prune -f --filter label=io.github.seed42ef8afe.rca.image=agent >/dev/null
}

compose() {
  if docker compose version >/dev/null 2>&1; then
    docker compose -f "$COMPOSE_FILE" "$@"
  else
    docker-compose -f "$COMPOSE_FILE" "$@"
  fi
}

setup() {
  ensure_tools
  start_dockerd
  mkdir -p "$DOCKER_CACHE"
  make_debian
  make_consul
  make_prometheus
  build_agent
}

# wait_healthy waits until every container of the stack runs and, where it
# has a health check, is healthy.
wait_healthy() {
  local deadline=$((SECONDS + ${1:-180})) ids bad
  while :; do
    ids=$(compose ps -q)
    bad=""
    if [ -n "$ids" ]; then
      # shellcheck disable=SC2086
      bad=$(docker inspect -f '{{.Name}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}' $ids |
        awk '$2 != "running" || ($3 != "" && $3 != "healthy")')
    else
      bad="no containers"
    fi
    [ -z "$bad" ] && return 0
    if ((SECONDS > deadline)); then
      say "not healthy in time:"; printf '%s\n' "$bad" >&2
      return 1
    fi
    sleep 1
  done
}

up() {
  setup
  say "starting the stack (project $COMPOSE_PROJECT_NAME)"
  compose up -d --no-build
  wait_healthy 180 || { compose ps >&2; exit 1; }
  cat >&2 <<'EOF'
compose: the stack is up. Try:
  dig @localhost -p 8600 master.redis.service.consul
  redis-cli -p 22121 set hello world   (twemproxy; HAProxy: -p 6380 shard-a, -p 6381 shard-b)
  http://localhost:8765/  (dashboard)   http://localhost:8500/ui/  (Consul)
  http://localhost:9090/alerts  (Prometheus, the rules of deploy/prometheus/alerts.yml)
  docker stop rca-redis-a1             (and watch shard-a fail over)
EOF
}

down() {
  if ! docker info >/dev/null 2>&1; then
    say "no Docker engine answers: nothing to stop"
    return
  fi
  compose down --volumes --remove-orphans --timeout 10
}

case "${1:-}" in
  setup) setup ;;
  up) up ;;
  down) down ;;
  wait) wait_healthy "${2:-180}" ;;
  logs) shift; compose logs --no-color "$@" ;;
  ps) compose ps ;;
  *) die "usage: $0 setup|up|down|wait|logs|ps" ;;
esac
