#!/usr/bin/env bash
# ensure: NATS on 127.0.0.1:4222 and Redis on 127.0.0.1:6379 are reachable; if one is not,
# install it from Debian's packages when missing (root only) and start a private instance
# under run/services/ on that port. Never touches a server it did not start.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=run/services
up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

need() { # command package
  command -v "$1" >/dev/null 2>&1 && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing $2 from Debian's packages"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2") >/dev/null
  fi
  command -v "$1" >/dev/null 2>&1
}

wait_port() { for _ in $(seq 1 50); do up "$1" && return 0; sleep 0.1; done; return 1; }

case "${1:-ensure}" in
  ensure)
    mkdir -p "$RUN"
    if ! up 4222; then
      need nats-server nats-server || { echo "NATS is not reachable on 4222 and nats-server cannot be installed"; exit 1; }
      nats-server -a 127.0.0.1 -p 4222 -js -sd "$RUN/nats" >"$RUN/nats.log" 2>&1 &
      echo $! > "$RUN/nats.pid"
      wait_port 4222 || { echo "nats-server did not start (see $RUN/nats.log)"; exit 1; }
      echo "started nats-server on 127.0.0.1:4222"
    fi
    if ! up 6379; then
      need redis-server redis-server || { echo "Redis is not reachable on 6379 and redis-server cannot be installed"; exit 1; }
      redis-server --bind 127.0.0.1 --port 6379 --save "" --appendonly no --daemonize no >"$RUN/redis.log" 2>&1 &
      echo $! > "$RUN/redis.pid"
      wait_port 6379 || { echo "redis-server did not start (see $RUN/redis.log)"; exit 1; }
      echo "started redis-server on 127.0.0.1:6379"
    fi ;;
  stop)
    for s in nats redis; do
      [ -f "$RUN/$s.pid" ] && kill "$(cat "$RUN/$s.pid")" 2>/dev/null; rm -f "$RUN/$s.pid"
    done ;;
  *) echo "usage: $0 ensure|stop"; exit 2 ;;
esac
