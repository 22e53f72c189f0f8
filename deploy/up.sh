#!/usr/bin/env bash
# make up: build release binaries and run a local cluster in the foreground, on chatofpomelo's
# ports (gate 3014, connectors 3050/3051, web client 3001). Ctrl-C (or `make down`) stops
# everything this script started, and nothing else.
#
# A server that crashes (exits non-zero, or is killed) is restarted after a second, as
# Pomelo's master does with `auto-restart`; one that exits cleanly is not.
#
# NATS and Redis: used when reachable on 127.0.0.1:4222 / :6379 (or SHADDOCK_NATS_URL /
# SHADDOCK_REDIS_URL); else nats-server / redis-server from PATH are started on 14222 / 16379
# under run/up/; when neither can be had, everything runs in one process on the embedded bus
# and memory store.
set -uo pipefail
cd "$(dirname "$0")/.."
RUN=run/up
PIDS=$RUN/pids
CONFIG=${SHADDOCK_CONFIG:-deploy/local.toml}

stop_all() {
  [ -f "$PIDS" ] || return 0
  touch "$RUN/stopping"
  local pids; pids=$(cat "$PIDS" "$RUN"/*.pid 2>/dev/null)
  kill $pids 2>/dev/null
  for _ in $(seq 1 50); do
    local alive=0
    for p in $pids; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.2
  done
  kill -9 $pids 2>/dev/null
  rm -f "$PIDS" "$RUN"/*.pid
}

if [ "${1:-up}" = down ]; then
  if [ -f "$PIDS" ]; then stop_all; echo "stopped"; else echo "nothing to stop"; fi
  exit 0
fi

if [ -f "$PIDS" ] && kill -0 $(head -n1 "$PIDS") 2>/dev/null; then
  echo "already running (make down first)"; exit 1
fi
mkdir -p "$RUN"; : > "$PIDS"; rm -f "$RUN/stopping" "$RUN"/*.pid

reachable() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
hostport() { local u=${1#*://}; u=${u%%/*}; echo "${u%%:*} ${u##*:}"; }

echo "building release binaries (cargo build --release)..."
cargo build --release --bins -q || { echo "build failed"; exit 1; }
BIN=target/release

NATS_URL=${SHADDOCK_NATS_URL:-nats://127.0.0.1:4222}
REDIS_URL=${SHADDOCK_REDIS_URL:-redis://127.0.0.1:6379}
mode=cluster
if ! reachable $(hostport "$NATS_URL"); then
  if command -v nats-server >/dev/null; then
    mkdir -p "$RUN/nats"
    nats-server -a 127.0.0.1 -p 14222 -sd "$RUN/nats" >"$RUN/nats.log" 2>&1 &
    echo $! >> "$PIDS"; NATS_URL=nats://127.0.0.1:14222
    echo "started nats-server on 127.0.0.1:14222 (log $RUN/nats.log)"
  else
    mode=embedded
  fi
fi
if [ $mode = cluster ] && ! reachable $(hostport "$REDIS_URL"); then
  if command -v redis-server >/dev/null; then
    redis-server --bind 127.0.0.1 --port 16379 --dir "$RUN" --save "" --appendonly no >"$RUN/redis.log" 2>&1 &
    echo $! >> "$PIDS"; REDIS_URL=redis://127.0.0.1:16379
    echo "started redis-server on 127.0.0.1:16379 (log $RUN/redis.log)"
  else
    mode=embedded
  fi
fi
for _ in $(seq 1 50); do
  [ $mode = embedded ] && break
  reachable $(hostport "$NATS_URL") && reachable $(hostport "$REDIS_URL") && break
  sleep 0.1
done

export SHADDOCK_NATS_URL=$NATS_URL SHADDOCK_REDIS_URL=$REDIS_URL RUST_LOG=${RUST_LOG:-info}

# The admin console needs a token: one made up for this run unless one is configured.
token_note="(from SHADDOCK_ADMIN_TOKEN)"
if [ -z "${SHADDOCK_ADMIN_TOKEN:-}" ]; then
  if grep -qE '^[[:space:]]*token[[:space:]]*=' "$CONFIG"; then
    token_note="(admin.token in $CONFIG)"
  else
    SHADDOCK_ADMIN_TOKEN=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
    export SHADDOCK_ADMIN_TOKEN
    token_note="(made up for this run; set SHADDOCK_ADMIN_TOKEN to choose one)"
  fi
fi

start() { # name command...: run it, restart it when it crashes
  local name=$1; shift
  (
    while [ ! -f "$RUN/stopping" ]; do
      "$@" > >(sed -u "s/^/[$name] /") 2>&1 &
      echo $! > "$RUN/$name.pid"
      wait $!; code=$?
      [ $code = 0 ] || [ -f "$RUN/stopping" ] && break
      echo "[$name] exited with code $code; restarting in 1 s"
      sleep 1
    done
    rm -f "$RUN/$name.pid"
  ) &
  echo $! >> "$PIDS"
}

trap 'echo; echo "stopping..."; stop_all; exit 0' INT TERM

if [ $mode = embedded ]; then
  echo "NATS or Redis is neither reachable nor installed: running every server in one process on the embedded bus and memory store"
  start shaddock "$BIN/shaddock" --config "$CONFIG" all --web-port 3001
else
  echo "using NATS at $NATS_URL and Redis at $REDIS_URL"
  for id in chat-server-1 chat-server-2; do start "$id" "$BIN/shaddock-chat" --config "$CONFIG" --id "$id"; done
  for id in connector-server-1 connector-server-2; do start "$id" "$BIN/shaddock-connector" --config "$CONFIG" --id "$id"; done
  start gate-server-1 "$BIN/shaddock-gate" --config "$CONFIG" --id gate-server-1
  start web "$BIN/shaddock" web --port 3001
fi

ok=0
for _ in $(seq 1 100); do
  if reachable 127.0.0.1 3001 && reachable 127.0.0.1 3014 && reachable 127.0.0.1 3050 && reachable 127.0.0.1 3051; then ok=1; break; fi
  for p in $(cat "$PIDS"); do kill -0 "$p" 2>/dev/null || { echo "a server exited during start-up (is a port taken? see above)"; stop_all; exit 1; }; done
  sleep 0.1
done
if [ $ok = 1 ]; then
  echo
  echo "Shaddock is up. Open http://127.0.0.1:3001/  (gate ws://127.0.0.1:3014, connectors ws://127.0.0.1:3050 and :3051)"
  if [ -n "${SHADDOCK_ADMIN_TOKEN:-}" ]; then
    echo "Admin console: http://127.0.0.1:3114/admin#token=$SHADDOCK_ADMIN_TOKEN"
    echo "  token: $SHADDOCK_ADMIN_TOKEN $token_note (target/release/shaddock admin --token ... servers)"
  else
    echo "Admin console: http://127.0.0.1:3114/admin  token: $token_note"
  fi
  echo "Metrics: http://127.0.0.1:{3114,3150,3151,3160,3161}/metrics (gate, connectors, chat servers; Grafana: deploy/grafana/shaddock.json)"
  echo "Ctrl-C or 'make down' stops it."
  echo
else
  echo "the cluster did not come up in 10 s"; stop_all; exit 1
fi

# Stay in the foreground until every server has stopped (Ctrl-C, make down, or all exited).
wait
stop_all
exit 0
