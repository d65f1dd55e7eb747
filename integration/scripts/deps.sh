#!/usr/bin/env bash
# Installs the real components the tests and the demo run: redis-server,
# redis-sentinel and nutcracker from Debian, dig for DNS checks, and Consul
# built from the Go module proxy (Consul is not packaged by Debian).
# Idempotent: a second run only checks and returns in seconds.
set -euo pipefail

CONSUL_VERSION="${CONSUL_VERSION:-1.22.5}"
CACHE_DIR="${RCA_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/redis-consul-agent}"
BIN_DIR="$CACHE_DIR/bin"
CONSUL_BIN="$BIN_DIR/consul-$CONSUL_VERSION"

say() { printf 'deps: %s\n' "$*" >&2; }
# step LABEL CMD...: a line on stderr every 20s while CMD runs, then its time.
PROGRESS_NAME=deps
# shellcheck source=progress.sh
. "$(dirname "${BASH_SOURCE[0]}")/progress.sh"

# Debian packages: command -> package.
declare -A PKG=(
  [redis-server]=redis-server
  [redis-sentinel]=redis-sentinel
  [redis-cli]=redis-tools
  [nutcracker]=nutcracker
  [dig]=dnsutils
  [chromium]=chromium
  [chromedriver]=chromium-driver
  [haproxy]=haproxy
  [promtool]=prometheus
)
missing=()
for cmd in "${!PKG[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${PKG[$cmd]}")
done
if ((${#missing[@]})); then
  # Deduplicate and sort so the message is stable.
  # Without a font the dashboard screenshots of the browser test are unreadable.
  missing+=(fonts-dejavu-core)
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  if [ "$(id -u)" -ne 0 ]; then
    say "missing packages: ${missing[*]}"
    say "install them as root: apt-get update && apt-get install -y ${missing[*]}"
    exit 1
  fi
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Nothing here runs systemd; keep maintainer scripts from starting services.
  policy=/usr/sbin/policy-rc.d
  created_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; created_policy=1
  fi
  # apt's own output goes to stderr: make's deps target discards stdout.
  step "apt-get update" apt-get update -qq >&2
  step "apt-get install of ${#missing[@]} packages" \
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [ "$created_policy" = 1 ] && rm -f "$policy"
  # A package may still have started a daemon; stop only those on default ports
  # that belong to the packaged services.
  for svc in redis-server redis-sentinel nutcracker haproxy prometheus; do
    if command -v service >/dev/null 2>&1; then service "$svc" stop >/dev/null 2>&1 || true; fi
  done
fi

if [ ! -x "$CONSUL_BIN" ]; then
  command -v go >/dev/null 2>&1 || { say "go is required to build consul $CONSUL_VERSION"; exit 1; }
  say "building consul $CONSUL_VERSION from the Go module proxy, once (5-10 minutes on 2 cores; later runs use the cache)"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  mkdir -p "$BIN_DIR"
  (
    cd "$work"
    go mod init consulbuild >/dev/null 2>&1
    go mod edit -require="github.com/hashicorp/consul@v$CONSUL_VERSION"
    # The consul module pins its own submodules through replace directives that
    # do not apply to a dependent module; resolve the rest from the proxy.
    cat >tools.go <<'GO'
//go:build tools

package tools

import _ "github.com/hashicorp/consul"
GO
    quiet() { "$@" >/dev/null 2>&1; }
    step "downloading consul's modules" quiet env GOFLAGS=-mod=mod go mod tidy || true
    step "compiling consul (the longest step)" \
      env GOFLAGS=-mod=mod go build -trimpath -ldflags="-s -w" -o "$CONSUL_BIN.tmp" github.com/hashicorp/consul
  )
  mv "$CONSUL_BIN.tmp" "$CONSUL_BIN"
fi
ln -sf "$CONSUL_BIN" "$BIN_DIR/consul"
"$CONSUL_BIN" version | sed -n 1p >&2
echo "$BIN_DIR"
