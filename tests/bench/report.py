#!/usr/bin/env python3
"""Turns run/bench/results.jsonl into BENCHMARKS.md and an SVG plot of p99 fanout latency
against offered load. No dependencies beyond the standard library."""
import json
import platform
import subprocess
import sys
from collections import defaultdict

results_path, md_path, svg_path = sys.argv[1], sys.argv[2], sys.argv[3]
rows = [json.loads(l) for l in open(results_path) if l.strip()]
by = defaultdict(list)
for r in rows:
    system, scenario = r["label"].split("/", 1)
    by[(system, scenario.rstrip("0123456789"))].append(r)
SYSTEMS = [s for s in ("shaddock", "pomelo", "pomelo-nodelay") if any(k[0] == s for k in by)]
NAMES = {"shaddock": "Shaddock", "pomelo": "Pomelo 2.2.7", "pomelo-nodelay": "Pomelo + TCP_NODELAY"}


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:
        return "?"


def best(system, scenario):
    """The step with the highest offered load delivered with under 1 % lost and p99 under 1 s
    (deliveries still arriving after a step's window count, so delivered/s sits a hair under
    the offered rate even when nothing is lost)."""
    ok = [r for r in by[(system, scenario)]
          if r.get("expected") and r["lost"] <= 0.01 * r["expected"] and r["fanout_latency"]["p99_ms"] <= 1000]
    return max(ok, key=lambda r: r["offered_deliveries_per_sec"], default=None)


def at_load(system, scenario, load):
    """The step whose offered load is the smallest at or above `load`."""
    steps = sorted(by[(system, scenario)], key=lambda r: r.get("offered_deliveries_per_sec", 0))
    return next((r for r in steps if r.get("offered_deliveries_per_sec", 0) >= load), None)


def fmt(v, unit=""):
    if v is None:
        return "–"
    if isinstance(v, float):
        v = f"{v:,.1f}" if v < 100 else f"{v:,.0f}"
    else:
        v = f"{v:,}"
    return f"{v}{unit}"


def ratio(a, b, higher_is_better=True):
    if not a or not b:
        return "–"
    r = a / b if higher_is_better else b / a
    return f"{r:,.1f}×"


out = []
w = out.append
w("# Benchmarks\n")
w("Shaddock against the original Node.js Pomelo chat (`../shared/peer-pomelo`, npm `pomelo@2.2.7`), "
  "the same load generator (`shaddock-loadgen`), the same machine, one run of `make bench`. "
  "The load generator runs on the same 2 cores as the servers, so every figure includes its cost; "
  "compare the ratios, not the absolute numbers.\n")
w("## Machine\n")
cpu_model = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip()
mem_kib = int(sh("awk '/MemTotal/{print $2}' /proc/meminfo") or 0)
redis_version = sh("redis-server --version | cut -d' ' -f1-3")
w(f"- CPU: {sh('nproc')} cores, {cpu_model}")
w(f"- memory: {mem_kib / 1048576:.1f} GiB; kernel {platform.release()}")
w(f"- {sh('rustc --version')}; node {sh('node --version')}; {sh('nats-server --version')}; {redis_version}")
w(f"- date: {sh('date -u +%Y-%m-%dT%H:%MZ')}\n")
w("## How to run\n")
w("```sh\nmake bench                 # the whole suite, under 10 minutes\nBENCH_QUICK=1 make bench   # a short smoke run\n```\n")
w("Topology: Shaddock runs a gate, 2 connectors and 2 chat servers (plus NATS and Redis, which are counted in "
  "its CPU and memory); Pomelo runs its master, a gate, 2 connectors and 2 chat servers. Every user asks the gate "
  "for its connector, enters a room and chats as the chatofpomelo web client does. Fanout latency is the time "
  "from a message's send to each `onChat` received, over every delivery.\n")

w("## Summary\n")
w("| figure | " + " | ".join(NAMES[s] for s in SYSTEMS) + " | Shaddock ÷ Pomelo |")
w("|---|" + "---|" * len(SYSTEMS) + "---|")
def summary(title, getter, unit="", higher=True):
    vals = [getter(s) for s in SYSTEMS]
    sh_v = vals[0] if SYSTEMS and SYSTEMS[0] == "shaddock" else None
    po_v = vals[SYSTEMS.index("pomelo")] if "pomelo" in SYSTEMS else None
    w(f"| {title} | " + " | ".join(fmt(v, unit) for v in vals) + f" | {ratio(sh_v, po_v, higher)} |")
summary("(a) 1 room × 1000: highest load served, deliveries/s (<1 % lost, p99 < 1 s)", lambda s: (best(s, "a") or {}).get("offered_deliveries_per_sec"))
summary("(a) p99 fanout at that load, ms", lambda s: ((best(s, "a") or {}).get("fanout_latency") or {}).get("p99_ms"), higher=False)
summary("(b) 100 rooms × 10: highest load served, deliveries/s (<1 % lost, p99 < 1 s)", lambda s: (best(s, "b") or {}).get("offered_deliveries_per_sec"))
summary("(b) p99 fanout at that load, ms", lambda s: ((best(s, "b") or {}).get("fanout_latency") or {}).get("p99_ms"), higher=False)
summary("(a) p99 fanout at ≥50k deliveries/s offered, ms", lambda s: ((at_load(s, "a", 50000) or {}).get("fanout_latency") or {}).get("p99_ms"), higher=False)
summary("(b) p99 fanout at ≥50k deliveries/s offered, ms", lambda s: ((at_load(s, "b", 50000) or {}).get("fanout_latency") or {}).get("p99_ms"), higher=False)
summary("(c) idle connections held", lambda s: (by[(s, "c")] or [{}])[0].get("held"))
summary("(c) server KiB per idle connection", lambda s: (by[(s, "c")] or [{}])[0].get("kib_per_connection"), higher=False)
summary("(d) enters per second", lambda s: (by[(s, "d")] or [{}])[0].get("enters_per_sec"))
w("")

# ---- targets (issue: load generator and benchmarks) ----
def val(system, getter):
    try:
        return getter(system)
    except Exception:
        return None
sa = val("shaddock", lambda s: best(s, "a")["offered_deliveries_per_sec"])
sb = val("shaddock", lambda s: best(s, "b")["offered_deliveries_per_sec"])
def p99_at_50k(s):
    vals = [r["fanout_latency"]["p99_ms"] for sc in ("a", "b") for r in by[(s, sc)] if r.get("offered_deliveries_per_sec") == 50000]
    return min(vals) if vals else None
p99_50k = val("shaddock", p99_at_50k)
kib = val("shaddock", lambda s: by[(s, "c")][0]["kib_per_connection"])
held = val("shaddock", lambda s: by[(s, "c")][0]["held"])
enters = val("shaddock", lambda s: by[(s, "d")][0]["enters_per_sec"])
def mark(ok):
    return "met" if ok else "**missed**"
def server_us_per_request(r):
    return sum(p["cpu_seconds"] for p in r.get("processes", [])) * 1e6 / r["sent"] if r and r.get("sent") else None
cpu_s = val("shaddock", lambda s: server_us_per_request(at_load(s, "b", 20000)))
cpu_p = val("pomelo", lambda s: server_us_per_request(at_load(s, "b", 20000)))
b50 = val("shaddock", lambda s: at_load(s, "b", 50000)["fanout_latency"]["p99_ms"])
a5 = val("shaddock", lambda s: next(r for r in by[(s, "a")] if r["rate_per_room"] == 5)["fanout_latency"]["p99_ms"])
w("## Targets\n")
w("| target | measured | |")
w("|---|---|---|")
w(f"| server CPU per request in (b) at 20k deliveries/s ≤ ⅓ of Pomelo's | {fmt(cpu_s, ' µs')} vs {fmt(cpu_p, ' µs')} | "
  f"{mark(cpu_s is not None and cpu_p is not None and cpu_s * 3 <= cpu_p)} |")
w(f"| (b) p99 ≤ 10 ms at 50k deliveries/s | {fmt(b50, ' ms')} | {mark(b50 is not None and b50 <= 10)} |")
w(f"| (b) ≥ 300k deliveries/s with p99 under 1 s | {fmt(sb)} | {mark(sb is not None and sb >= 300000)} |")
w(f"| (a) p99 ≤ 5 ms at 5 messages/s to 1000 members | {fmt(a5, ' ms')} | {mark(a5 is not None and a5 <= 5)} |")
w(f"| (a) saturation ≥ 1.5M deliveries/s | {fmt(sa)} | {mark(sa is not None and sa >= 1500000)} |")
w(f"| ≤ 4 KiB RSS per idle connection at 100k | {fmt(kib, ' KiB')} | {mark(kib is not None and kib <= 4)} |")
w(f"| ≥ 100k concurrent connections | {fmt(held)} | {mark(held is not None and held >= 100000)} |")
w(f"| ≥ 5k enters/s | {fmt(enters)} | {mark(enters is not None and enters >= 5000)} |")
w("")
w(open(__file__.rsplit("/", 1)[0] + "/limits.md").read())

for scenario, title in (("a", "(a) one room of 1000 users, rising message rates"),
                        ("b", "(b) 100 rooms of 10 users, rising message rates")):
    w(f"## {title}\n")
    w("| system | msgs/s per room | offered deliveries/s | delivered/s | lost | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | server CPU s |")
    w("|---|---|---|---|---|---|---|---|---|---|---|")
    for s in SYSTEMS:
        for r in sorted(by[(s, scenario)], key=lambda r: r["rate_per_room"]):
            f = r["fanout_latency"]
            cpu = sum(p["cpu_seconds"] for p in r.get("processes", []))
            w(f"| {NAMES[s]} | {fmt(r['rate_per_room'])} | {fmt(r['offered_deliveries_per_sec'])} | {fmt(r['deliveries_per_sec'])} | "
              f"{fmt(r['lost'])} | {fmt(f['p50_ms'])} | {fmt(f['p90_ms'])} | {fmt(f['p99_ms'])} | {fmt(f['p999_ms'])} | {fmt(f['max_ms'])} | {fmt(cpu)} |")
    w("")

# ---- (i) CPU by process: where each request's and each delivery's CPU goes ----
GROUPS = [("gate", ("shaddock-gate", "serverType=gate")),
          ("connectors", ("shaddock-connector", "serverType=connector")),
          ("chat servers", ("shaddock-chat", "serverType=chat")),
          ("NATS", ("nats-server",)),
          ("Redis", ("redis-server",)),
          ("master", ("peer-pomelo",))]


def by_group(r):
    cpu = {g: 0.0 for g, _ in GROUPS}
    for p in r.get("processes", []):
        for g, names in GROUPS:
            if p["name"] in names:
                cpu[g] += p["cpu_seconds"]
    return cpu


def process_cells(processes, per, loadgen):
    """The GROUPS' cells, the servers' total and the load generators' cell, each CPU value
    turned into text by `per` (µs per request, cores, ...); '–' where there was none."""
    cpu = by_group({"processes": processes})
    cell = lambda v: per(v) if v else "–"
    return " | ".join(cell(cpu[g]) for g, _ in GROUPS) + f" | {cell(sum(cpu.values()))} | {cell(loadgen)}"


def process_header(first):
    """A table's header: `first` columns, then one per group, servers and load generators."""
    head = "| " + " | ".join(first + [g for g, _ in GROUPS] + ["servers", "load generators"]) + " |"
    return head + "\n|" + "---|" * (len(first) + len(GROUPS) + 2)


w("## (i) CPU by process, in µs per chat request (and per delivery)\n")
w("Each step's CPU seconds divided by the requests sent in it (µs/request) and, in the last column, "
  "by the deliveries (µs/delivery). Servers are every process of the system (for Shaddock NATS and Redis too); "
  "the load generator's own CPU is beside them, not in the total.\n")
w("| system | scenario | msgs/s per room | " + " | ".join(g for g, _ in GROUPS) + " | servers | load generator | servers µs/delivery |")
w("|---|---|---|" + "---|" * len(GROUPS) + "---|---|---|")
for scenario in ("a", "b"):
    for s in SYSTEMS:
        for r in sorted(by[(s, scenario)], key=lambda r: r["rate_per_room"]):
            if not r.get("sent"):
                continue
            total = sum(by_group(r).values())
            per_delivery = fmt(total * 1e6 / r["delivered"]) if r.get("delivered") else "–"
            cells = process_cells(r.get("processes", []), lambda v: fmt(v * 1e6 / r["sent"]), r.get("loadgen_cpu_seconds"))
            w(f"| {NAMES[s]} | ({scenario}) | {fmt(r['rate_per_room'])} | {cells} | {per_delivery} |")
w("")

hoff = sorted(by[("shaddock", "hoff")], key=lambda r: r["rate_per_room"])
if hoff:
    w("## (h) what room history costs: (b) with history on and off\n")
    w("History on (the default) gives every room message an offset and appends it to Redis in one "
      "script call before it is pushed (docs/recovery.md). Server CPU is every Shaddock process plus "
      "NATS and Redis, in µs per chat request.\n")
    w("| msgs/s per room | CPU µs/request on | off | on ÷ off | p99 ms on | off |")
    w("|---|---|---|---|---|---|")
    def per_request(r):
        cpu = sum(p["cpu_seconds"] for p in r.get("processes", []))
        return cpu * 1e6 / r["sent"] if r.get("sent") else None
    for off in hoff:
        on = next((r for r in by[("shaddock", "b")] if r["rate_per_room"] == off["rate_per_room"]), None)
        con, coff = (per_request(on) if on else None), per_request(off)
        w(f"| {fmt(off['rate_per_room'])} | {fmt(con)} | {fmt(coff)} | {ratio(coff, con, False) if con and coff else '–'} | "
          f"{fmt(on['fanout_latency']['p99_ms']) if on else '–'} | {fmt(off['fanout_latency']['p99_ms'])} |")
    w("")

w("## (c) idle connections, held with heartbeats\n")
w("CPU while holding is in cores (CPU seconds per second) over 4 s once every connection is held: heartbeats, "
  "and for Shaddock its membership rounds and registry.\n")
w(process_header(["system", "target", "held", "server RSS before → after (MiB)", "KiB per connection"]))
for s in SYSTEMS:
    for r in by[(s, "c")]:
        secs = r.get("hold_seconds") or 0
        cores = lambda v: fmt(v / secs) if secs else "–"
        cells = process_cells(r.get("hold_processes", []), cores, r.get("hold_loadgen_cpu_seconds"))
        w(f"| {NAMES[s]} | {fmt(r['target'])} | {fmt(r['held'])} | {r['rss_before_kib']/1024:,.0f} → {r['rss_after_kib']/1024:,.0f} | {fmt(r['kib_per_connection'])} | {cells} |")
w("")
w("## (d) enter storm: 4 load generators at once, 3000 users each, entering rooms of 10, 128 at a time per generator\n")
w("Enters per second count every generator's enters over the longest generator's ramp; latencies are merged over "
  "all enters. CPU is in µs per enter, by process, over that ramp (every user stays 3 s after its generator "
  "has finished, so that no leave falls in another generator's ramp); the load generators' own CPU is beside it.\n")
w(process_header(["system", "entered", "enters/s", "p50 ms", "p99 ms", "errors"]))
for s in SYSTEMS:
    for r in by[(s, "d")]:
        e = r["enter_latency"]
        n = r["entered"] or 1
        cells = process_cells(r.get("ramp_processes", []), lambda v: fmt(v * 1e6 / n), r.get("ramp_loadgen_cpu_seconds"))
        w(f"| {NAMES[s]} | {fmt(r['entered'])} | {fmt(r['enters_per_sec'])} | {fmt(e['p50_ms'])} | {fmt(e['p99_ms'])} | {fmt(r['enter_errors'])} | {cells} |")
w("")
w(f"![p99 fanout latency against offered load]({svg_path.split('/', 1)[-1] if svg_path.startswith('docs/') else svg_path})\n".replace("(bench-latency", "(docs/bench-latency"))
w("Raw results: `run/bench/results.jsonl`; the full log: `run/bench/bench.log`.\n")
open(md_path, "w").write("\n".join(out))

# ---- SVG: p99 latency (log) against offered deliveries/s (log) ----
import math
W, H, L, B, T, R = 760, 420, 70, 50, 30, 180
series = []
colors = {"shaddock": "#e8743b", "pomelo": "#3b6ee8", "pomelo-nodelay": "#7a9be8"}
dash = {"a": "", "b": "6,4"}
for s in SYSTEMS:
    for sc in ("a", "b"):
        pts = [(r["offered_deliveries_per_sec"], max(r["fanout_latency"]["p99_ms"], 0.01))
               for r in sorted(by[(s, sc)], key=lambda r: r["offered_deliveries_per_sec"]) if r.get("offered_deliveries_per_sec")]
        if pts:
            series.append((s, sc, pts))
allx = [p[0] for _, _, pts in series for p in pts] or [1, 10]
ally = [p[1] for _, _, pts in series for p in pts] or [1, 10]
x0, x1 = math.log10(min(allx)) - 0.1, math.log10(max(allx)) + 0.1
y0, y1 = math.floor(math.log10(min(ally))), math.ceil(math.log10(max(ally)))
if y1 == y0:
    y1 += 1
sx = lambda x: L + (math.log10(x) - x0) / (x1 - x0) * (W - L - R)
sy = lambda y: H - B - (math.log10(y) - y0) / (y1 - y0) * (H - B - T)
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       f'<rect width="{W}" height="{H}" fill="white"/>',
       f'<text x="{L}" y="18" font-size="14">p99 fanout latency against offered load (log-log)</text>']
for e in range(int(y0), int(y1) + 1):
    y = sy(10 ** e)
    svg.append(f'<line x1="{L}" x2="{W-R}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/><text x="{L-8}" y="{y+4:.1f}" text-anchor="end">{10**e:g} ms</text>')
for e in range(int(math.floor(x0)), int(math.ceil(x1)) + 1):
    if x0 <= e <= x1:
        x = sx(10 ** e)
        svg.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{T}" y2="{H-B}" stroke="#ddd"/><text x="{x:.1f}" y="{H-B+16}" text-anchor="middle">{10**e:,.0f}</text>')
svg.append(f'<text x="{(L+W-R)/2}" y="{H-12}" text-anchor="middle">offered deliveries per second</text>')
for i, (s, sc, pts) in enumerate(series):
    path = " ".join(f"{'M' if j == 0 else 'L'}{sx(x):.1f},{sy(y):.1f}" for j, (x, y) in enumerate(pts))
    svg.append(f'<path d="{path}" fill="none" stroke="{colors[s]}" stroke-width="2" stroke-dasharray="{dash[sc]}"/>')
    for x, y in pts:
        svg.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{colors[s]}"/>')
    ly = T + 10 + i * 18
    svg.append(f'<line x1="{W-R+10}" x2="{W-R+40}" y1="{ly}" y2="{ly}" stroke="{colors[s]}" stroke-width="2" stroke-dasharray="{dash[sc]}"/>'
               f'<text x="{W-R+46}" y="{ly+4}">{NAMES[s]} ({sc})</text>')
svg.append("</svg>")
open(svg_path, "w").write("\n".join(svg))
print(f"wrote {md_path} and {svg_path}")
