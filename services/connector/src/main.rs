//! `shaddock-connector`: one connector server.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// A Shaddock connector: Pomelo WebSocket sessions, enter, forwarding, pushes.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Cluster config (TOML); defaults apply without one.
    #[arg(long, env = "SHADDOCK_CONFIG")]
    config: Option<PathBuf>,
    /// This server's id (else SHADDOCK_SERVER_ID, else the only connector server in the config).
    #[arg(long)]
    id: Option<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    shaddock_server::app::main(
        shaddock_connector::SERVER_TYPE,
        cli.config.as_deref(),
        cli.id,
        shaddock_connector::run,
    )
    .await
}
