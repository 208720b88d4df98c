#!/usr/bin/env bash
# Makes real `redis-server` and `redis-cli` binaries available for the tests and `embedq demo`
# (the Redis Cluster test creates its cluster with `redis-cli --cluster create`).
# Uses ones on PATH; else installs Debian's packages when running as root with apt; else says what to do.
set -euo pipefail
have() { command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; }
if have; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "embedq: installing Debian's redis-server (needed by the tests and the demo)..." >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  # redis-server depends on redis-tools (redis-cli); name both in case a distribution splits them differently.
  apt-get install -y -qq --no-install-recommends redis-server redis-tools >/dev/null
  # The package starts a system-wide service on 6379; embedq starts its own private servers instead.
  (service redis-server stop || true) >/dev/null 2>&1
  have && exit 0
fi
cat >&2 <<'MSG'
embedq needs redis-server and redis-cli (Redis 6.2 or newer; 7 for the cluster test) on PATH for the tests and `embedq demo`.
Install it, for example:
  Debian/Ubuntu:  sudo apt-get install redis-server redis-tools
  macOS:          brew install redis
  Fedora:         sudo dnf install redis
Or point REDIS_URL at a Redis you run yourself.
MSG
exit 1
