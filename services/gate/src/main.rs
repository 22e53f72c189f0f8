//! `shaddock-gate`: the gate.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use shaddock_config::{ClusterConfig, ProcessEnv};
use shaddock_server::App;

/// A Shaddock gate: tells clients which connector to use.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Cluster config (TOML); defaults apply without one.
    #[arg(long, env = "SHADDOCK_CONFIG")]
    config: Option<PathBuf>,
    /// This server's id (else SHADDOCK_SERVER_ID, else the only gate in the config).
    #[arg(long)]
    id: Option<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    shaddock_server::telemetry::init();
    let cli = Cli::parse();
    let (config, me) = match ClusterConfig::load(cli.config.as_deref(), &ProcessEnv).and_then(|c| {
        c.identity(shaddock_gate::SERVER_TYPE, cli.id, &ProcessEnv)
            .map(|me| (c, me))
    }) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("shaddock-gate: {e}");
            return ExitCode::from(64);
        }
    };
    let result = async { shaddock_gate::run(App::connect(config, me).await?).await }.await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, error.cause_chain = ?e, "gate failed");
            ExitCode::FAILURE
        }
    }
}
