//! A short chaos run (a minute; `CHAOS_SECS` to change it): faults one at a time while users
//! chat, and no promise broken after any of them. `make chaos` runs it longer.

use std::time::Duration;

use shaddock_e2e::chaos::{ChaosConfig, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minute_of_faults_breaks_no_promise() {
    let secs = std::env::var("CHAOS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let report = run(ChaosConfig {
        duration: Duration::from_secs(secs),
        ..ChaosConfig::default()
    })
    .await;
    println!("{report}");
    assert!(report.faults.len() >= 5, "{report}");
    assert!(report.violations.is_empty(), "{report}");
}
