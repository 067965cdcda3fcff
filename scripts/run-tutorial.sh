#!/usr/bin/env bash
# Runs the tutorial's example: tcp-router on 127.0.0.1:11000 forwarding to Redis on 127.0.0.1:6379.
#
#   scripts/run-tutorial.sh [PATH-TO-TCP-ROUTER]     (make run: target/release/tcp-router)
#
# If nothing answers on 127.0.0.1:6379, a throwaway redis-server (no persistence) is started for
# the session and stopped on exit. If Redis is not installed: as root with apt-get, this installs
# redis-server and redis-tools (saying so first); otherwise it prints the command that would
# install them and exits with status 1.
#
# Ctrl-C (SIGINT) or SIGTERM stops tcp-router gracefully, then the throwaway redis-server.
set -euo pipefail

router=${1:-target/release/tcp-router}
redis_port=6379
redis_pid=
redis_log=
router_pid=

say() { echo "run: $*" >&2; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$redis_port") 2>/dev/null; }

running() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }

# Runs "$@" in the background in a session of its own where setsid(1) exists, so a Ctrl-C in the
# terminal reaches this script only, and the script decides the order of the stops below.
start_background() {
  if command -v setsid >/dev/null; then
    setsid "$@" &
  else
    "$@" &
  fi
}

# On exit, whatever the reason: stop tcp-router if it still runs, then the throwaway redis-server.
cleanup() {
  if running "$router_pid"; then
    kill -TERM "$router_pid" 2>/dev/null || true
    wait "$router_pid" 2>/dev/null || true
  fi
  if running "$redis_pid"; then
    say "stopping the throwaway redis-server (pid $redis_pid)"
    kill -TERM "$redis_pid" 2>/dev/null || true
    wait "$redis_pid" 2>/dev/null || true
  fi
  if [ -n "$redis_log" ]; then
    rm -f "$redis_log"
  fi
}
trap cleanup EXIT

# A stop signal: pass it on to tcp-router, which drains its connections (up to 10 s), wait for it,
# exit with its status: 0 after a graceful stop (Ctrl-C is how the tutorial ends, and make should
# not call it an error), 130 or 143 when a second signal made it exit at once.
stop() {
  local signal=$1 status=0
  trap 'forward INT' INT
  trap 'forward TERM' TERM
  trap 'forward TERM' HUP
  forward "$signal"
  while running "$router_pid"; do
    status=0
    wait "$router_pid" 2>/dev/null || status=$?
  done
  router_pid=
  exit "$status"
}
forward() {
  if running "$router_pid"; then
    kill "-$1" "$router_pid" 2>/dev/null || true
  fi
}
trap 'stop INT' INT
trap 'stop TERM' TERM
trap 'stop TERM' HUP

if [ ! -x "$router" ]; then
  say "no tcp-router binary at '$router' (build it with: make build)"
  exit 1
fi

# Called when nothing answers on the Redis port and redis-server is not installed.
install_redis() {
  local missing=(redis-server)
  command -v redis-cli >/dev/null || missing+=(redis-tools)
  local install=(apt-get install -y --no-install-recommends "${missing[@]}")
  if [ "$EUID" -eq 0 ] && command -v apt-get >/dev/null; then
    say "Redis is not installed: running apt-get update, then ${install[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get update -qq >&2 || ! "${install[@]}" -qq >&2; then
      say "the installation failed (see apt-get's messages above)"
      exit 1
    fi
    return
  fi
  local sudo=
  [ "$EUID" -eq 0 ] || sudo="sudo "
  say "nothing answers on 127.0.0.1:$redis_port and redis-server is not installed"
  if command -v apt-get >/dev/null; then
    say "install it with:  ${sudo}apt-get update && ${sudo}${install[*]}"
  else
    say "no apt-get here: install Redis (redis-server, redis-cli) with this system's package manager"
    say "(on Debian or Ubuntu:  ${sudo}apt-get update && ${sudo}${install[*]})"
  fi
  say "then run this again"
  exit 1
}

if ! port_open; then
  if ! command -v redis-server >/dev/null; then
    install_redis
    if ! command -v redis-server >/dev/null; then
      say "redis-server is still not on PATH after the installation; giving up"
      exit 1
    fi
  fi
  # Debian's package starts its own redis-server service when it can; then use that one.
  if ! port_open; then
    say "starting a throwaway redis-server on 127.0.0.1:$redis_port (no persistence; stopped on exit)"
    redis_log=$(mktemp "${TMPDIR:-/tmp}/tcp-router-tutorial-redis.XXXXXX")
    start_background redis-server --port "$redis_port" --bind 127.0.0.1 --save '' \
      --appendonly no --daemonize no >"$redis_log" 2>&1
    redis_pid=$!
    for ((i = 0; i < 100; i++)); do
      port_open && break
      if ! running "$redis_pid"; then
        say "redis-server exited at start; its output:"
        cat "$redis_log" >&2
        exit 1
      fi
      sleep 0.05
    done
    if ! port_open; then
      say "redis-server did not answer on 127.0.0.1:$redis_port within 5 s; its output:"
      cat "$redis_log" >&2
      exit 1
    fi
  fi
fi
if ! command -v redis-cli >/dev/null; then
  say "redis-cli is not installed (package redis-tools); any Redis client will do, on port 11000"
fi

say "forwarding 127.0.0.1:11000 -> 127.0.0.1:$redis_port; from another terminal: redis-cli -p 11000 PING   (Ctrl-C here to stop)"
start_background "$router" 127.0.0.1:11000 "127.0.0.1:$redis_port"
router_pid=$!
status=0
wait "$router_pid" || status=$?
router_pid=
exit "$status"
