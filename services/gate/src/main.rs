//! `shaddock-gate`: the gate.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// A Shaddock gate: tells clients which connector to use.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Cluster config (TOML); defaults apply without one.
    #[arg(long, env = "SHADDOCK_CONFIG")]
    config: Option<PathBuf>,
    /// This server's id (else SHADDOCK_SERVER_ID, else the only gate server in the config).
    #[arg(long)]
    id: Option<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    shaddock_server::app::main(
        shaddock_gate::SERVER_TYPE,
        cli.config.as_deref(),
        cli.id,
        shaddock_gate::run,
    )
    .await
}
