#!/usr/bin/env bash
# make bench: the same load generator against Shaddock and against the original Node.js Pomelo
# chat (../shared/peer-pomelo, npm pomelo@2.2.7), in one run, on this machine. Writes
# run/bench/results.jsonl, then BENCHMARKS.md and docs/bench-latency.svg (tests/bench/report.py).
#   BENCH_QUICK=1   fewer steps (a smoke run of the suite, about 2 minutes)
#   PEER_POMELO=dir where the peer app is (default ../shared/peer-pomelo)
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
OUT=run/bench
RESULTS=$OUT/results.jsonl
LOG=$OUT/bench.log
LG=$ROOT/target/release/shaddock-loadgen
QUICK=${BENCH_QUICK:-0}
PEER_SRC=${PEER_POMELO:-$ROOT/../shared/peer-pomelo}
mkdir -p "$OUT"; : > "$RESULTS"; : > "$LOG"
say() { echo "== $*" | tee -a "$LOG" >&2; }
reachable() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

for p in 3014 3050 3051 5014 5050 5051 5052 5053 5054 5055; do
  if reachable $p; then echo "port $p is in use: stop other clusters first (make down)"; exit 1; fi
done

say "building release binaries"
cargo build --release --bins -q || exit 1
./deploy/services.sh ensure || exit 1

# ---- the load generator: every RESULT line goes to results.jsonl, tagged with the system ----
lg() { # system scenario args...
  local system=$1 scenario=$2; shift 2
  say "$system $scenario: shaddock-loadgen $*"
  "$LG" --label "$system/$scenario" "$@" 2>>"$LOG" | tee -a "$LOG" | sed -n 's/^RESULT //p' >> "$RESULTS"
}
rss_kib() { # sum of VmRSS of processes whose command line contains $1
  local total=0
  for d in /proc/[0-9]*; do
    if tr '\0' ' ' < "$d/cmdline" 2>/dev/null | grep -q -- "$1"; then
      local r; r=$(awk '/^VmRSS:/{print $2}' "$d/status" 2>/dev/null)
      total=$((total + ${r:-0}))
    fi
  done
  echo $total
}
cpu_snap() { # patterns (comma-separated) : {"pattern": cpu seconds, ..., "loadgen": seconds} now
  python3 - "$1" <<'PY'
import json, os, sys
pats = sys.argv[1].split(","); out = {p: 0.0 for p in pats}; out["loadgen"] = 0.0
for pid in filter(str.isdigit, os.listdir("/proc")):
    if int(pid) == os.getpid():
        continue  # its own command line holds the patterns
    try:
        cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        continue
    secs = (int(f[11]) + int(f[12])) / 100.0
    if "shaddock-loadgen" in cmd:
        out["loadgen"] += secs
    else:
        p = next((p for p in pats if p in cmd), None)
        if p: out[p] += secs
print(json.dumps(out))
PY
}
idle() { # system pattern procs total connectors... : idle connections from several loadgen processes
  local system=$1 pattern=$2 procs=$3 total=$4; shift 4
  # Rooms of 10, and at least `total` connections in all.
  local connectors=("$@") per=$(( (total + procs * 10 - 1) / (procs * 10) * 10 )) before after pids=() i
  before=$(rss_kib "$pattern")
  say "$system c: $total idle connections from $procs load generators"
  for i in $(seq 0 $((procs - 1))); do
    local c=${connectors[$(( i % ${#connectors[@]} ))]}
    "$LG" --label "$system/c$i" --mode idle --connectors "$c" --rooms $(( per / 10 )) --users-per-room 10 \
      --duration 600 --concurrency 64 --offset $(( 1000000 + i * per )) --room-prefix "idle$i-" \
      --sources 127.0.0.$((10 + 2*i)),127.0.0.$((11 + 2*i)) > "$OUT/idle-$system-$i.out" 2>>"$LOG" &
    pids+=($!)
  done
  # Wait until every generator holds its connections, let heartbeats settle, then measure.
  for _ in $(seq 1 600); do
    local all=1
    for i in $(seq 0 $((procs - 1))); do grep -q "\[$system/c$i\] holding" "$LOG" || all=0; done
    [ $all = 1 ] && break
    sleep 1
  done
  # What holding costs (heartbeats, membership rounds), by process, over 4 s.
  local cpu0 cpu1; cpu0=$(cpu_snap "$IDLE_WATCH"); sleep 4; cpu1=$(cpu_snap "$IDLE_WATCH")
  after=$(rss_kib "$pattern")
  local held=0
  for i in $(seq 0 $((procs - 1))); do
    local h; h=$(grep "\[$system/c$i\] holding" "$LOG" | tail -n1 | awk '{print $3}')
    held=$((held + ${h:-0}))
  done
  kill "${pids[@]}" 2>/dev/null; wait "${pids[@]}" 2>/dev/null
  python3 - "$system" "$total" "$held" "$before" "$after" "$cpu0" "$cpu1" >> "$RESULTS" <<'PY'
import json, sys
system, target, held, before, after = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
c0, c1 = json.loads(sys.argv[6]), json.loads(sys.argv[7])
print(json.dumps({"label": f"{system}/c", "mode": "idle", "target": target, "held": held,
                  "rss_before_kib": before, "rss_after_kib": after,
                  "kib_per_connection": (after - before) / held if held else None,
                  "hold_seconds": 4.0,
                  "hold_processes": [{"name": k, "cpu_seconds": c1[k] - c0.get(k, 0.0)} for k in c1 if k != "loadgen"],
                  "hold_loadgen_cpu_seconds": c1["loadgen"] - c0.get("loadgen", 0.0)}))
PY
  say "$system c: held $held of $total, server RSS $before -> $after KiB"
}

ENTER_GENS=4
enters() { # system gate watch : (d) an enter storm from ENTER_GENS load generators at once, merged
  local system=$1 gate=$2 watch=$3 pids=() i
  say "$system d: $ENTER_GENS load generators, 3000 users each, 128 entering at a time"
  for i in $(seq 0 $((ENTER_GENS - 1))); do
    "$LG" --label "$system/d$i" --gate "$gate" --mode enter --rooms 300 --users-per-room 10 --concurrency 128 --linger 3 \
      --watch "$watch" --room-prefix "d$i-" --offset $((500000 + i * 10000)) --sources 127.0.0.$((40 + i)) \
      > "$OUT/enter-$system-$i.out" 2>>"$LOG" &
    pids+=($!)
  done
  wait "${pids[@]}"
  cat "$OUT"/enter-"$system"-*.out >> "$LOG"
  # One record: enters of all generators over the longest ramp; latencies merged exactly; the
  # servers' CPU as the longest-running generator saw it (the others ran inside it); the
  # generators' own CPU summed.
  sed -n 's/^RESULT //p' "$OUT"/enter-"$system"-*.out | python3 -c '
import json, sys
rs = [json.loads(l) for l in sys.stdin]
if not rs: sys.exit(0)
longest = max(rs, key=lambda r: r["ramp_seconds"])
counts = {}
for r in rs:
    for v, c in r["enter_latency_us"]: counts[v] = counts.get(v, 0) + c
vals = sorted(counts.items()); n = sum(counts.values())
def q(f):
    seen = 0
    for v, c in vals:
        seen += c
        if seen >= f * n: return v / 1000.0
    return 0.0
entered = sum(r["entered"] for r in rs)
print(json.dumps({"label": sys.argv[1] + "/d", "mode": "enter", "generators": len(rs),
  "users": sum(r["users"] for r in rs), "entered": entered,
  "enter_errors": sum(r["enter_errors"] for r in rs),
  "enters_per_sec": entered / max(longest["ramp_seconds"], 1e-3), "ramp_seconds": longest["ramp_seconds"],
  "enter_latency": {"count": n, "p50_ms": q(0.5), "p90_ms": q(0.9), "p99_ms": q(0.99), "p999_ms": q(0.999),
                    "max_ms": vals[-1][0] / 1000.0 if vals else 0.0},
  "ramp_processes": longest["ramp_processes"],
  "ramp_loadgen_cpu_seconds": sum(r["ramp_loadgen_cpu_seconds"] for r in rs)}))
' "$system" >> "$RESULTS"
}

A_RATES=5,20,50,100,200,400,700,1000,1500,2000,3000
B_RATES=5,20,50,100,200,300,400,700
H_RATES=20,100,300
SHADDOCK_IDLE=${SHADDOCK_IDLE:-100000}
POMELO_IDLE=${POMELO_IDLE:-10000}
DUR=5
if [ "$QUICK" = 1 ]; then A_RATES=5,100,400; B_RATES=5,50,200; H_RATES=50,200; SHADDOCK_IDLE=6000; POMELO_IDLE=2000; DUR=3; fi

# ---- Shaddock ----
PIDS=()
stop_shaddock() { kill "${PIDS[@]}" 2>/dev/null; wait "${PIDS[@]}" 2>/dev/null; PIDS=(); }
trap 'stop_shaddock; (cd "$OUT/peer-pomelo" 2>/dev/null && ./run.sh stop >/dev/null 2>&1)' EXIT
export SHADDOCK_NAMESPACE=bench-$$ RUST_LOG=warn
CFG=tests/bench/shaddock-bench.toml
start() { "$ROOT/target/release/$1" --config "$CFG" --id "$2" >>"$OUT/shaddock.log" 2>&1 & PIDS+=($!); }
say "starting Shaddock: gate, 2 connectors, 2 chat servers (NATS + Redis)"
start shaddock-chat chat-server-1; start shaddock-chat chat-server-2
start shaddock-connector connector-server-1; start shaddock-connector connector-server-2
start shaddock-gate gate-server-1
for _ in $(seq 1 100); do reachable 5014 && reachable 5050 && reachable 5051 && break; sleep 0.1; done
sleep 1
SW=shaddock-connector,shaddock-chat,shaddock-gate,nats-server,redis-server
# Pomelo's servers by type (the master spawns each with serverType=...), then the master.
PW=serverType=connector,serverType=chat,serverType=gate,peer-pomelo
lg shaddock a --gate 127.0.0.1:5014 --rooms 1 --users-per-room 1000 --rate $A_RATES --duration $DUR --stop-at-saturation --watch $SW --room-prefix a
lg shaddock b --gate 127.0.0.1:5014 --rooms 100 --users-per-room 10 --rate $B_RATES --duration $DUR --stop-at-saturation --watch $SW --room-prefix b
# (h) what room history costs: (b) at a few rates with history off, beside (b) above (on).
say "restarting the chat servers with history off"
kill "${PIDS[0]}" "${PIDS[1]}" 2>/dev/null; wait "${PIDS[0]}" "${PIDS[1]}" 2>/dev/null
SHADDOCK_HISTORY__ENABLED=false start shaddock-chat chat-server-1
SHADDOCK_HISTORY__ENABLED=false start shaddock-chat chat-server-2
sleep 2
lg shaddock hoff --gate 127.0.0.1:5014 --rooms 100 --users-per-room 10 --rate $H_RATES --duration $DUR --watch $SW --room-prefix hoff
say "restarting the chat servers with history on"
kill "${PIDS[-2]}" "${PIDS[-1]}" 2>/dev/null; wait "${PIDS[-2]}" "${PIDS[-1]}" 2>/dev/null
start shaddock-chat chat-server-1; start shaddock-chat chat-server-2
sleep 2
enters shaddock 127.0.0.1:5014 $SW
say "adding 4 connectors for the idle scenario"
for n in 3 4 5 6; do start shaddock-connector connector-server-$n; done
for _ in $(seq 1 100); do reachable 5055 && break; sleep 0.1; done
sleep 1
IDLE_WATCH=$SW idle shaddock shaddock-connector 6 "$SHADDOCK_IDLE" 127.0.0.1:5050 127.0.0.1:5051 127.0.0.1:5052 127.0.0.1:5053 127.0.0.1:5054 127.0.0.1:5055
stop_shaddock

# ---- Pomelo (Node.js) ----
if ! command -v node >/dev/null; then say "node is missing: Pomelo runs skipped"; else
  if [ ! -d "$OUT/peer-pomelo/node_modules/pomelo" ]; then
    say "installing the Pomelo peer (npm install pomelo@2.2.7)"
    rm -rf "$OUT/peer-pomelo"; cp -r "$PEER_SRC" "$OUT/peer-pomelo"
    (cd "$OUT/peer-pomelo" && npm install --no-audit --no-fund --silent) || { say "npm install failed"; exit 1; }
  fi
  for variant in pomelo pomelo-nodelay; do
    if [ $variant = pomelo-nodelay ] && [ "$QUICK" = 1 ]; then continue; fi
    nodelay=0; [ $variant = pomelo-nodelay ] && nodelay=1
    say "starting Pomelo ($variant): master, gate, 2 connectors, 2 chat servers"
    (cd "$OUT/peer-pomelo" && CHAT_NODELAY=$nodelay ./run.sh start) >>"$LOG" 2>&1 || { say "Pomelo did not start"; exit 1; }
    lg $variant a --gate 127.0.0.1:3014 --rooms 1 --users-per-room 1000 --rate $A_RATES --duration $DUR --stop-at-saturation --watch $PW --room-prefix a
    lg $variant b --gate 127.0.0.1:3014 --rooms 100 --users-per-room 10 --rate $B_RATES --duration $DUR --stop-at-saturation --watch $PW --room-prefix b
    if [ $variant = pomelo ]; then
      enters $variant 127.0.0.1:3014 $PW
      # Afresh for (c): Node's heap grown by (a), (b) and (d) shrank by more than the idle
      # connections added (RSS fell 1,127 -> 1,011 MiB in one run), so "before" must be a new start.
      say "restarting Pomelo for the idle scenario"
      (cd "$OUT/peer-pomelo" && ./run.sh stop && sleep 1 && CHAT_NODELAY=$nodelay ./run.sh start) >>"$LOG" 2>&1 || { say "Pomelo did not start"; exit 1; }
      IDLE_WATCH=$PW idle $variant peer-pomelo/app.js 2 "$POMELO_IDLE" 127.0.0.1:3050 127.0.0.1:3051
    fi
    (cd "$OUT/peer-pomelo" && ./run.sh stop) >>"$LOG" 2>&1
    sleep 1
  done
fi

say "writing BENCHMARKS.md"
python3 tests/bench/report.py "$RESULTS" BENCHMARKS.md docs/bench-latency.svg
