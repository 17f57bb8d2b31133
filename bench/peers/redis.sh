#!/usr/bin/env bash
# Starts Redis 7 from Debian's packages for the peer benchmarks: no
# persistence (no RDB snapshots, no AOF), loopback only, in the foreground
# unless --daemonize is given. Installs redis-server when it is missing.
#
#   bench/peers/redis.sh [--port 6379] [--daemonize]
set -euo pipefail
port=6379
daemonize=no
while [[ $# -gt 0 ]]; do
  case "$1" in
    --port) port="$2"; shift 2 ;;
    --daemonize) daemonize=yes; shift ;;
    *) echo "usage: $0 [--port N] [--daemonize]" >&2; exit 2 ;;
  esac
done
if ! command -v redis-server >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi
dir=$(mktemp -d /tmp/tessera-redis.XXXXXX)
exec redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
  --dir "$dir" --daemonize "$daemonize" --logfile "$dir/redis.log"
