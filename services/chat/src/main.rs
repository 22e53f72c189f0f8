//! `shaddock-chat`: one chat backend.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// A Shaddock chat server: rooms, chatHandler.send, chatRemote.add/kick.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Cluster config (TOML); defaults apply without one.
    #[arg(long, env = "SHADDOCK_CONFIG")]
    config: Option<PathBuf>,
    /// This server's id (else SHADDOCK_SERVER_ID, else the only chat server in the config).
    #[arg(long)]
    id: Option<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    shaddock_server::app::main(
        shaddock_chat::SERVER_TYPE,
        cli.config.as_deref(),
        cli.id,
        shaddock_chat::run,
    )
    .await
}
