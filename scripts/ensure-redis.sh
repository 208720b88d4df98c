#!/usr/bin/env bash
# Makes a real `redis-server` binary available for the tests and `embedq demo`.
# Uses one on PATH; else installs Debian's package when running as root with apt; else says what to do.
set -euo pipefail
if command -v redis-server >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "embedq: installing Debian's redis-server (needed by the tests and the demo)..." >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends redis-server >/dev/null
  # The package starts a system-wide service on 6379; embedq starts its own private servers instead.
  (service redis-server stop || true) >/dev/null 2>&1
  command -v redis-server >/dev/null 2>&1 && exit 0
fi
cat >&2 <<'MSG'
embedq needs redis-server (Redis 6.2 or newer) on PATH for the tests and `embedq demo`.
Install it, for example:
  Debian/Ubuntu:  sudo apt-get install redis-server
  macOS:          brew install redis
  Fedora:         sudo dnf install redis
Or point REDIS_URL at a Redis you run yourself.
MSG
exit 1
