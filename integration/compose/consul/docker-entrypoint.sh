#!/bin/sh
# Entry point of the local stand-in for hashicorp/consul, made by
# integration/compose/stack.sh where no image registry can be reached. It
# takes the same arguments as the official image's docker-entrypoint.sh:
# a leading flag or a consul subcommand runs consul, and `agent` gets the
# image's data and config directories, so docker-compose.yml works with both.
set -e

if [ "${1#-}" != "$1" ]; then
  set -- consul "$@"
fi

if [ "$1" = agent ]; then
  shift
  set -- consul agent -data-dir=/consul/data -config-dir=/consul/config "$@"
elif [ "$1" != consul ] && consul "$1" --help >/dev/null 2>&1; then
  set -- consul "$@"
fi

exec "$@"
