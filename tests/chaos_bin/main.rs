//! `shaddock-chaos`: the chaos run for as long as asked (`make chaos DURATION=15m`); prints
//! what it injected and checked, and exits non-zero on any violation. Needs the workspace's
//! binaries built, `nats-server` and `redis-server` on the PATH.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use shaddock_e2e::chaos::{ChaosConfig, FAULT_KINDS, run};

#[derive(Debug, Parser)]
#[command(
    name = "shaddock-chaos",
    about = "Faults, one at a time, while users chat; then checks"
)]
struct Args {
    /// How long: `90s`, `15m`, `1h`, or seconds.
    #[arg(long, default_value = "60s")]
    duration: String,
    #[arg(long, default_value_t = 12)]
    users: usize,
    #[arg(long, default_value_t = 3)]
    rooms: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Only these kinds of fault, comma-separated: kill-9, sigstop, nats-restart,
    /// redis-restart, network-pause (default: all).
    #[arg(long, value_delimiter = ',')]
    faults: Vec<String>,
}

fn parse_duration(text: &str) -> Option<Duration> {
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: u64 = number.parse().ok()?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return None,
    };
    Some(Duration::from_secs(secs))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let Some(duration) = parse_duration(&args.duration) else {
        eprintln!("shaddock-chaos: cannot read --duration {:?}", args.duration);
        return ExitCode::from(64);
    };
    let cfg = ChaosConfig {
        duration,
        users: args.users,
        rooms: args.rooms,
        seed: args.seed,
        wipe_redis: true,
        faults: args.faults,
    };
    if let Some(unknown) = cfg.faults.iter().find(|f| !FAULT_KINDS.contains(&f.as_str())) {
        eprintln!("shaddock-chaos: no fault kind {unknown:?}; the kinds are {FAULT_KINDS:?}");
        return ExitCode::from(64);
    }
    println!("chaos: {cfg:?}");
    let report = run(cfg).await;
    print!("{report}");
    if report.violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        // Every fault in order, to read the violations against what came before them.
        println!("faults in order:");
        for fault in &report.faults {
            println!("  - {fault}");
        }
        ExitCode::FAILURE
    }
}
