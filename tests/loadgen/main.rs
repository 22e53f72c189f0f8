//! `shaddock-loadgen`: clients that behave as the chat demo's (gate, connector, enter, chat,
//! heartbeats), with the numbers a benchmark needs: connect+enter rate and latency, fanout
//! latency (send to each onChat received) p50/p90/p99/p99.9/max, deliveries per second,
//! lost messages, errors, CPU seconds and peak RSS of the server processes (/proc), KiB per
//! connection. Prints a table and one `RESULT {json}` line.
//!
//! Works against Shaddock and against the Node.js Pomelo chat alike: it only speaks the
//! protocol.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::{Semaphore, mpsc, oneshot};

mod procstat;
mod user;

use shaddock_e2e::XorShift;
use user::{Command, UserSpec};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Users chat in their rooms at `--rate` messages per second per room.
    Chat,
    /// Users enter and stay, heartbeating, for `--duration`.
    Idle,
    /// Users enter as fast as the server lets them; reports enters per second.
    Enter,
}

#[derive(Debug, Parser)]
#[command(about = "Load generator for Pomelo-protocol chat servers (Shaddock or Node Pomelo)")]
struct Args {
    /// The gate (`host:port`) each user asks for its connector.
    #[arg(long)]
    gate: Option<String>,
    /// Connectors to use directly, round robin (skips the gate).
    #[arg(long, value_delimiter = ',')]
    connectors: Vec<String>,
    #[arg(long, value_enum, default_value = "chat")]
    mode: Mode,
    #[arg(long, default_value_t = 1)]
    rooms: usize,
    #[arg(long, default_value_t = 10)]
    users_per_room: usize,
    /// Messages per second per room; several (`--rate 10,50,100`) run one after another
    /// with the same users, each printing its own result.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    rate: Vec<f64>,
    /// Stop raising the rate once a step is saturated (over 5 % lost or p99 over 2 s).
    #[arg(long)]
    stop_at_saturation: bool,
    /// Seconds of chatting (or holding, in idle mode).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds every user stays after the run before it quits (enter mode: so that several
    /// generators started together all finish entering before any of their users leave).
    #[arg(long, default_value_t = 0.0)]
    linger: f64,
    /// Share of messages sent privately to one member (0..1).
    #[arg(long, default_value_t = 0.0)]
    private_share: f64,
    /// New connections per second while ramping up (0: as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    ramp: f64,
    /// Connections being set up at once.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Source addresses to spread connections over (127.0.0.x passes the ephemeral-port limit).
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1")]
    sources: Vec<IpAddr>,
    /// Bytes of padding in each message.
    #[arg(long, default_value_t = 32)]
    pad: usize,
    /// Server processes to measure: substrings of their command lines.
    #[arg(long, value_delimiter = ',')]
    watch: Vec<String>,
    /// A label for the result line.
    #[arg(long, default_value = "run")]
    label: String,
    /// First user number (to run several load generators side by side).
    #[arg(long, default_value_t = 0)]
    offset: usize,
    /// Room name prefix (rooms are `<prefix><n>`).
    #[arg(long, default_value = "room")]
    room_prefix: String,
    /// Enter with `recover: true`; a user whose connection drops reconnects through the gate
    /// (backoff with full jitter) and recovers what it missed (docs/recovery.md). Needs --gate.
    #[arg(long)]
    recover: bool,
}

/// Counters shared by every user.
#[derive(Debug)]
pub struct Stats {
    pub connected: AtomicU64,
    pub entered: AtomicU64,
    pub enter_errors: AtomicU64,
    pub sent: AtomicU64,
    pub send_errors: AtomicU64,
    pub delivered: AtomicU64,
    pub disconnects: AtomicU64,
    pub kicks: AtomicU64,
    /// With --recover: enters again after a drop, messages given back, recoveries that failed.
    pub reconnects: AtomicU64,
    pub recovered: AtomicU64,
    pub recovery_failures: AtomicU64,
    enter_latency: Mutex<Histogram<u64>>,
    /// Fanout latency, sharded so that thousands of users rarely contend.
    fanout: Vec<Mutex<Histogram<u64>>>,
}

const SHARDS: usize = 64;

impl Stats {
    fn new() -> Self {
        Self {
            connected: AtomicU64::new(0),
            entered: AtomicU64::new(0),
            enter_errors: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            send_errors: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            disconnects: AtomicU64::new(0),
            kicks: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            recovered: AtomicU64::new(0),
            recovery_failures: AtomicU64::new(0),
            enter_latency: Mutex::new(new_histogram()),
            fanout: (0..SHARDS).map(|_| Mutex::new(new_histogram())).collect(),
        }
    }

    pub fn record_fanout(&self, shard: usize, micros: u64) {
        let _ = self.fanout[shard % SHARDS].lock().record(micros.max(1));
    }

    /// The fanout histogram so far, emptied.
    fn take_fanout(&self) -> Histogram<u64> {
        let mut all = new_histogram();
        for s in &self.fanout {
            let mut h = s.lock();
            let _ = all.add(&*h);
            h.reset();
        }
        all
    }

    pub fn record_enter(&self, d: Duration) {
        let _ = self.enter_latency.lock().record((d.as_micros() as u64).max(1));
    }
}

/// Microseconds, 1 µs to 10 min, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).unwrap_or_else(|_| unreachable!("valid bounds"))
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn percentiles(h: &Histogram<u64>) -> serde_json::Value {
    json!({
        "count": h.len(),
        "p50_ms": ms(h.value_at_quantile(0.50)),
        "p90_ms": ms(h.value_at_quantile(0.90)),
        "p99_ms": ms(h.value_at_quantile(0.99)),
        "p999_ms": ms(h.value_at_quantile(0.999)),
        "max_ms": ms(h.max()),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.gate.is_some() || !args.connectors.is_empty(),
        "give --gate or --connectors"
    );
    anyhow::ensure!(!args.recover || args.gate.is_some(), "--recover needs --gate");
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let stats = Arc::new(Stats::new());
    let mut sampler = procstat::Sampler::new(procstat::find(&args.watch));
    let connectors: Vec<std::net::SocketAddr> = {
        let mut v = Vec::new();
        for c in &args.connectors {
            v.extend(tokio::net::lookup_host(c.as_str()).await?.next());
        }
        v
    };

    // Ramp up: every user connects and enters.
    let total = args.rooms * args.users_per_room;
    let started = Instant::now();
    let setup = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let mut rooms: Vec<Vec<(String, mpsc::Sender<Command>)>> = vec![Vec::new(); args.rooms];
    let mut handles = Vec::with_capacity(total);
    let mut waits = Vec::with_capacity(total);
    for i in 0..total {
        if args.ramp > 0.0 {
            let due = started + Duration::from_secs_f64(i as f64 / args.ramp);
            tokio::time::sleep_until(due.into()).await;
        }
        let r = i % args.rooms;
        let n = args.offset + i;
        let spec = UserSpec {
            name: format!("u{n}"),
            room: format!("{}{r}", args.room_prefix),
            gate: args.gate.clone(),
            connector: (!connectors.is_empty()).then(|| connectors[i % connectors.len()]),
            source: args.sources[i % args.sources.len()],
            shard: i,
            recover: args.recover,
        };
        let (tx, rx) = mpsc::channel(256);
        let (entered_tx, entered_rx) = oneshot::channel();
        rooms[r].push((spec.name.clone(), tx));
        let permit = setup.clone().acquire_owned().await?;
        let user_stats = stats.clone();
        waits.push(entered_rx);
        handles.push(tokio::spawn(async move {
            let (inner_tx, inner_rx) = oneshot::channel();
            let run = tokio::spawn(user::run(spec, user_stats, rx, inner_tx));
            let ok = inner_rx.await.unwrap_or(false);
            drop(permit);
            let _ = entered_tx.send(ok);
            let _ = run.await;
        }));
        if i % 1000 == 999 {
            eprintln!(
                "[{}] connecting: {} entered, {} failed",
                args.label,
                stats.entered.load(Ordering::Relaxed),
                stats.enter_errors.load(Ordering::Relaxed)
            );
        }
    }
    for w in waits {
        let _ = w.await;
    }
    let ramp_secs = started.elapsed().as_secs_f64();
    let entered = stats.entered.load(Ordering::Relaxed);
    // What the ramp cost, ours beside the servers' (the sampler started with it).
    let ramp_cpu = sampler.report();
    let own_ramp_cpu = procstat::cpu_seconds(std::process::id()).unwrap_or(0.0);
    let rss_connected: u64 = ramp_cpu.iter().map(|r| r.3).sum();
    let rss_start: u64 = sampler.rss_start.values().sum();
    eprintln!("[{}] {entered}/{total} entered in {ramp_secs:.1} s", args.label);

    // The run itself: one step per rate (chat), or holding (idle), or nothing (enter).
    let enter_hist = stats.enter_latency.lock().clone();
    let kib_per_conn = if entered > 0 {
        rss_connected.saturating_sub(rss_start) as f64 / entered as f64
    } else {
        0.0
    };
    let base = json!({
        "label": args.label,
        "mode": format!("{:?}", args.mode).to_lowercase(),
        "rooms": args.rooms,
        "users_per_room": args.users_per_room,
        "users": total,
        "entered": entered,
        "enter_errors": stats.enter_errors.load(Ordering::Relaxed),
        "enters_per_sec": entered as f64 / ramp_secs.max(0.001),
        "enter_latency": percentiles(&enter_hist),
        // Every recorded enter latency as [µs, count] in an enter storm, so that several
        // generators of one storm can be merged exactly (tests/bench/run.sh).
        "enter_latency_us": if args.mode == Mode::Enter {
            enter_hist.iter_recorded().map(|v| [v.value_iterated_to(), v.count_at_value()]).collect()
        } else {
            Vec::new()
        },
        "ramp_seconds": ramp_secs,
        "ramp_loadgen_cpu_seconds": own_ramp_cpu,
        "ramp_processes": ramp_cpu.iter()
            .map(|(name, cpu, ..)| json!({"name": name, "cpu_seconds": cpu}))
            .collect::<Vec<_>>(),
        "kib_per_connection": kib_per_conn,
    });
    println!("{:<28} {}", "label", args.label);
    println!(
        "{:<28} {entered}/{total} ({:.0}/s, p99 {:.1} ms)",
        "entered",
        base["enters_per_sec"].as_f64().unwrap_or(0.0),
        ms(enter_hist.value_at_quantile(0.99))
    );
    let rates = if args.mode == Mode::Chat {
        args.rate.clone()
    } else {
        vec![0.0]
    };
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for rate in rates {
        let cpu_before = sampler.report();
        let own_before = procstat::cpu_seconds(std::process::id()).unwrap_or(0.0);
        let sent0 = stats.sent.load(Ordering::Relaxed);
        let delivered0 = stats.delivered.load(Ordering::Relaxed);
        let errors0 = stats.send_errors.load(Ordering::Relaxed);
        let _ = stats.take_fanout();
        let mut expected: u64 = 0;
        let run_started = Instant::now();
        let run_for = Duration::from_secs_f64(args.duration);
        if args.mode == Mode::Chat && rate > 0.0 {
            let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / (rate * args.rooms as f64)));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut tick = 0usize;
            let mut last_report = Instant::now();
            let mut last_delivered = delivered0;
            while run_started.elapsed() < run_for {
                ticker.tick().await;
                let room = &rooms[tick % rooms.len()];
                tick += 1;
                if room.is_empty() {
                    continue;
                }
                let from = (rng.next_u64() as usize) % room.len();
                let private = room.len() > 1 && rng.unit() < args.private_share;
                let target = if private {
                    let mut to = (rng.next_u64() as usize) % room.len();
                    if to == from {
                        to = (to + 1) % room.len();
                    }
                    room[to].0.clone()
                } else {
                    "*".to_owned()
                };
                if room[from]
                    .1
                    .try_send(Command::Send {
                        target,
                        pad: args.pad,
                    })
                    .is_ok()
                {
                    expected += if private { 1 } else { room.len() as u64 };
                }
                if last_report.elapsed() >= Duration::from_secs(1) {
                    let d = stats.delivered.load(Ordering::Relaxed);
                    eprintln!(
                        "[{} @{rate}/s] {:.0} s: sent {}, delivered {:.0}/s, errors {}",
                        args.label,
                        run_started.elapsed().as_secs_f64(),
                        stats.sent.load(Ordering::Relaxed) - sent0,
                        (d - last_delivered) as f64 / last_report.elapsed().as_secs_f64(),
                        stats.send_errors.load(Ordering::Relaxed) - errors0,
                    );
                    last_delivered = d;
                    last_report = Instant::now();
                    sampler.sample();
                }
            }
            // Let what is in flight arrive.
            let drain_until = Instant::now() + Duration::from_secs(5);
            while stats.delivered.load(Ordering::Relaxed) - delivered0 < expected
                && Instant::now() < drain_until
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        } else if args.mode == Mode::Idle {
            while run_started.elapsed() < run_for {
                tokio::time::sleep(Duration::from_secs(1)).await;
                sampler.sample();
                eprintln!(
                    "[{}] holding {} connections, {} dropped",
                    args.label,
                    stats.entered.load(Ordering::Relaxed) - stats.disconnects.load(Ordering::Relaxed),
                    stats.disconnects.load(Ordering::Relaxed)
                );
            }
        }
        let send_secs = args.duration.max(0.001);
        let procs = sampler.report();
        let fanout = stats.take_fanout();
        let delivered = stats.delivered.load(Ordering::Relaxed) - delivered0;
        let send_errors = stats.send_errors.load(Ordering::Relaxed) - errors0;
        let held = entered.saturating_sub(stats.disconnects.load(Ordering::Relaxed));
        let offered = rate * args.rooms as f64 * args.users_per_room as f64;
        let lost = expected.saturating_sub(delivered);
        let mut result = base.clone();
        let extra = json!({
            "rate_per_room": rate,
            "offered_deliveries_per_sec": offered,
            "held": held,
            "sent": stats.sent.load(Ordering::Relaxed) - sent0,
            "send_errors": send_errors,
            "expected": expected,
            "delivered": delivered,
            "lost": lost,
            "deliveries_per_sec": delivered as f64 / send_secs,
            "fanout_latency": percentiles(&fanout),
            "disconnects": stats.disconnects.load(Ordering::Relaxed),
            "kicks": stats.kicks.load(Ordering::Relaxed),
            "reconnects": stats.reconnects.load(Ordering::Relaxed),
            "recovered": stats.recovered.load(Ordering::Relaxed),
            "recovery_failures": stats.recovery_failures.load(Ordering::Relaxed),
            // This load generator's own CPU over the step, beside the servers'.
            "loadgen_cpu_seconds": procstat::cpu_seconds(std::process::id()).unwrap_or(0.0) - own_before,
            "processes": procs.iter().map(|(name, cpu, peak, now, start)| {
                let before = cpu_before.iter().find(|b| &b.0 == name).map(|b| b.1).unwrap_or(0.0);
                json!({"name": name, "cpu_seconds": cpu - before, "peak_rss_kib": peak, "rss_kib": now, "rss_start_kib": start})
            }).collect::<Vec<_>>(),
        });
        if let (Some(r), Some(e)) = (result.as_object_mut(), extra.as_object()) {
            r.extend(e.clone());
        }
        if args.mode == Mode::Chat {
            println!(
                "{:<28} {rate}/s per room, {offered:.0} deliveries/s offered",
                "step"
            );
            println!(
                "{:<28} {delivered} of {expected} ({:.0}/s), lost {lost}",
                "delivered",
                delivered as f64 / send_secs
            );
            println!(
                "{:<28} p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2} ms",
                "fanout latency",
                ms(fanout.value_at_quantile(0.5)),
                ms(fanout.value_at_quantile(0.9)),
                ms(fanout.value_at_quantile(0.99)),
                ms(fanout.value_at_quantile(0.999)),
                ms(fanout.max())
            );
            println!(
                "{:<28} {send_errors} send errors, {} disconnects, {} kicks",
                "errors",
                stats.disconnects.load(Ordering::Relaxed),
                stats.kicks.load(Ordering::Relaxed)
            );
            if args.recover {
                println!(
                    "{:<28} {} reconnects, {} messages recovered, {} recoveries failed",
                    "recovery",
                    stats.reconnects.load(Ordering::Relaxed),
                    stats.recovered.load(Ordering::Relaxed),
                    stats.recovery_failures.load(Ordering::Relaxed)
                );
            }
        } else {
            println!(
                "{:<28} {held} ({kib_per_conn:.1} KiB of server RSS each)",
                "connections held"
            );
        }
        for (name, cpu, peak, _, _) in &procs {
            println!(
                "{:<28} cpu {cpu:.1} s (cumulative), peak rss {:.1} MiB",
                name,
                *peak as f64 / 1024.0
            );
        }
        println!("RESULT {result}");
        let saturated = expected > 0
            && (lost as f64 / expected as f64 > 0.05 || fanout.value_at_quantile(0.99) > 2_000_000);
        if saturated && args.stop_at_saturation {
            eprintln!("[{}] saturated at {rate}/s per room", args.label);
            break;
        }
    }
    tokio::time::sleep(Duration::from_secs_f64(args.linger.max(0.0))).await;
    // Quit: every user closes its socket.
    for room in &rooms {
        for (_, tx) in room {
            let _ = tx.try_send(Command::Quit);
        }
    }
    drop(rooms);
    let _ = tokio::time::timeout(Duration::from_secs(10), futures_util::future::join_all(handles)).await;
    Ok(())
}
