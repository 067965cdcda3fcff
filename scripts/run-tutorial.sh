#!/usr/bin/env bash
# Runs the tutorial's example: tcp-router on 127.0.0.1:11000 forwarding to Redis on 127.0.0.1:6379.
# If nothing answers on 6379 and redis-server is installed, a throwaway one (no persistence) is
# started for the session and stopped on exit.
set -euo pipefail
router=${1:-target/release/tcp-router}
redis_pid=

port_open() { (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; }

cleanup() { [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null || true; }
trap cleanup EXIT

if ! port_open; then
  if command -v redis-server >/dev/null; then
    echo "run: starting a throwaway redis-server on 127.0.0.1:6379" >&2
    redis-server --port 6379 --bind 127.0.0.1 --save '' --appendonly no >/dev/null &
    redis_pid=$!
    for _ in $(seq 100); do port_open && break; sleep 0.05; done
  else
    echo "run: nothing listens on 127.0.0.1:6379 and redis-server is not installed" >&2
    echo "run: install it (apt-get install -y redis-server redis-tools), or clients will be closed" >&2
  fi
fi
echo "run: try it from another terminal: redis-cli -p 11000 PING   (Ctrl-C here to stop)" >&2
"$router" 127.0.0.1:11000 127.0.0.1:6379
