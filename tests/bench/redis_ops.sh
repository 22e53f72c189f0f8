#!/usr/bin/env bash
# make bench-redis: how many Redis commands a user (its enter and its leave) and a chat message cost, on a single Redis
# and on a Redis Cluster of 3 masters (the figures docs/scaling.md builds on). Counts every
# command Redis executed (INFO commandstats, summed over the nodes) while the load generator
# enters users, then while they chat. A gate-less cluster (1 connector, 1 chat server) on
# private ports and a private Redis; NATS on 127.0.0.1:4222.
#   BIN=target/release to use release binaries (default: the debug ones; counts do not depend
#   on the build).
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-target/debug}
OUT=run/bench-redis
ROOMS=${ROOMS:-50}
mkdir -p "$OUT"
[ "$BIN" = target/debug ] && cargo build --bins -q
./deploy/services.sh ensure >/dev/null

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
wait_port() { for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

watch() { # MONITOR every node given into $OUT/$STATS.monitor (stopped by unwatch)
  : > "$OUT/$STATS.monitor"; mons=()
  local p
  for p in "$@"; do redis-cli -p "$p" MONITOR >> "$OUT/$STATS.monitor" & mons+=($!); done
  sleep 0.3
}
unwatch() { # prints: round trips (commands clients sent), commands run (with those in scripts)
  sleep 0.5; kill "${mons[@]}" 2>/dev/null || true; wait "${mons[@]}" 2>/dev/null || true
  local f="$OUT/$STATS.monitor"
  echo "$(grep -c -v -e ' lua\]' -e '"MONITOR"' -e '^OK' "$f") $(grep -c -v -e '"MONITOR"' -e '^OK' "$f")"
}

run() { # label redis_url ports...
  local label=$1 url=$2; shift 2
  local ns="bench-redis-$label-$$"
  cat > "$OUT/$label.toml" <<EOF
namespace = "$ns"
nats_url = "nats://127.0.0.1:4222"
redis_url = "$url"
[registry]
heartbeat_ms = 500
lapse_ms = 1500
sync_ms = 3600000   # no membership rounds during the count: they are background work
[[servers]]
id = "connector-1"
type = "connector"
host = "127.0.0.1"
client_port = 3950
[[servers]]
id = "chat-1"
type = "chat"
host = "127.0.0.1"
EOF
  "$BIN/shaddock-chat" --config "$OUT/$label.toml" --id chat-1 2>>"$OUT/$label.log" & pids+=($!)
  "$BIN/shaddock-connector" --config "$OUT/$label.toml" --id connector-1 2>>"$OUT/$label.log" & pids+=($!)
  wait_port 3950; sleep 2
  local enters msgs e_calls m_calls
  STATS=$label-enter; watch "$@"
  enters=$(target/debug/shaddock-loadgen --connectors 127.0.0.1:3950 --mode enter --rooms "$ROOMS" \
    --users-per-room 10 --room-prefix "e-" 2>>"$OUT/$label.log" | sed -n 's/^RESULT //p' \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["entered"])')
  e_calls=$(unwatch)
  STATS=$label-chat; watch "$@"
  msgs=$(target/debug/shaddock-loadgen --connectors 127.0.0.1:3950 --mode chat --rooms 10 \
    --users-per-room 10 --rate 20 --duration 5 --room-prefix "c-" 2>>"$OUT/$label.log" \
    | sed -n 's/^RESULT //p' | python3 -c 'import json,sys; print(sum(json.loads(l)["sent"] for l in sys.stdin))')
  m_calls=$(unwatch)
  # The chat run enters its 100 users too: take their cost (at the enter rate) out.
  python3 - "$label" "$enters" $e_calls "$msgs" $m_calls <<'PY' | tee -a "$OUT/results.txt"
import sys
label, enters, e_trips, e_runs, msgs, m_trips, m_runs = sys.argv[1], *map(int, sys.argv[2:])
def per(enter, chat):
    e = enter / enters
    return e, (chat - 100 * e) / msgs
(te, tm), (re, rm) = per(e_trips, m_trips), per(e_runs, m_runs)
print(f"{label}: per user (enter, then leave) {te:.2f} round trips ({re:.1f} commands run); "
      f"per chat message {tm:.2f} round trips ({rm:.1f} commands run); {enters} enters, {msgs} messages")
PY
  cleanup; pids=()
}

: > "$OUT/results.txt"
SINGLE=6391
redis-server --bind 127.0.0.1 --port $SINGLE --save "" --appendonly no >/dev/null 2>&1 & pids+=($!)
wait_port $SINGLE
run single "redis://127.0.0.1:$SINGLE" $SINGLE

dir=$(mktemp -d)
ports=(7191 7192 7193)
for p in "${ports[@]}"; do
  redis-server --bind 127.0.0.1 --port "$p" --cluster-enabled yes --cluster-config-file "$dir/nodes-$p.conf" \
    --dir "$dir" --save "" --appendonly no >/dev/null 2>&1 & pids+=($!)
  wait_port "$p"
done
redis-cli --cluster create "${ports[@]/#/127.0.0.1:}" --cluster-replicas 0 --cluster-yes >/dev/null
until redis-cli -p 7191 CLUSTER INFO | grep -q cluster_state:ok; do sleep 0.2; done
seeds=$(printf 'redis://127.0.0.1:%s,' "${ports[@]}")
run cluster "${seeds%,}" "${ports[@]}"
rm -rf "$dir"
