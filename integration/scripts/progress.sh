#!/usr/bin/env bash
# Runs a long command with a line on stderr every PROGRESS_EVERY seconds
# (default 20) saying it is still running and for how long, then its total
# time. Sourced by deps.sh (the function `step`) or run as a command:
#   bash integration/scripts/progress.sh "building the agent" make build
# The command's own stdout is left alone (make's deps target discards
# deps.sh's stdout, so every progress line goes to stderr).

# step LABEL CMD... runs CMD and returns its exit status.
step() {
  local label=$1; shift
  local every=${PROGRESS_EVERY:-20} start=$SECONDS rc=0 ticker
  printf '%s: %s ...\n' "${PROGRESS_NAME:-make}" "$label" >&2
  (
    # The ticker dies with the step: it stops when its parent shell is gone
    # even if the kill below never runs (the step's shell was SIGKILLed).
    parent=$$
    while sleep "$every"; do
      kill -0 "$parent" 2>/dev/null || exit 0
      printf '%s: ... still %s (%s elapsed)\n' "${PROGRESS_NAME:-make}" "$label" "$(elapsed $((SECONDS - start)))" >&2
    done
  ) &
  ticker=$!
  "$@" || rc=$?
  kill "$ticker" 2>/dev/null || true
  wait "$ticker" 2>/dev/null || true
  if [ "$rc" -eq 0 ]; then
    printf '%s: %s done in %s\n' "${PROGRESS_NAME:-make}" "$label" "$(elapsed $((SECONDS - start)))" >&2
  else
    printf '%s: %s FAILED after %s (exit %d)\n' "${PROGRESS_NAME:-make}" "$label" "$(elapsed $((SECONDS - start)))" "$rc" >&2
  fi
  return "$rc"
}

# elapsed N prints N seconds as 1m05s or 12s.
elapsed() {
  if (($1 >= 60)); then printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); else printf '%ds' "$1"; fi
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  [ $# -ge 2 ] || { echo "usage: $0 LABEL COMMAND [ARG...]" >&2; exit 2; }
  step "$@"
fi
