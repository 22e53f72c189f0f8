//! `shaddock`: the composition root.
//!
//! - `shaddock all`: gate, connectors and chat servers of the config in ONE process, on the
//!   in-process bus and the memory channel store (no NATS, no Redis), plus the web client.
//! - `shaddock web`: only the web chat client (static files), as chatofpomelo's web-server.
//! - `shaddock admin ...`: Pomelo's CLI jobs against a running cluster's admin API.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use shaddock_bus::Bus;
use shaddock_channel::ChannelStore;
use shaddock_config::{ClusterConfig, ServerEntry};
use shaddock_server::App;
use tokio_util::sync::CancellationToken;

mod admin_cli;
mod web;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Shaddock: Pomelo's chat cluster in one process, or its web client"
)]
struct Cli {
    /// Cluster config (TOML); defaults apply without one.
    #[arg(long, env = "SHADDOCK_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Every server of the config in this process, on the embedded bus and store.
    All {
        /// Port of the web client (0 picks one; none to skip it).
        #[arg(long, default_value_t = 3001)]
        web_port: u16,
        /// Serve no web client.
        #[arg(long)]
        no_web: bool,
    },
    /// Prints a login token for `username` (needs SHADDOCK_AUTH_SECRET or `auth.secret`).
    Token {
        username: String,
        /// Seconds the token stays valid.
        #[arg(long, default_value_t = 86_400)]
        ttl: u64,
    },
    /// Operates a running cluster through a server's admin API: servers, connectors, rooms,
    /// room, kick, broadcast.
    Admin {
        /// Any server's admin port (`make up`: the gate's).
        #[arg(long, env = "SHADDOCK_ADMIN_URL", default_value = "http://127.0.0.1:3114")]
        url: String,
        /// The console's token (`make up` prints it).
        #[arg(
            long,
            env = "SHADDOCK_ADMIN_TOKEN",
            default_value = "",
            hide_env_values = true
        )]
        token: String,
        #[command(subcommand)]
        command: admin_cli::AdminCommand,
    },
    /// Only the web chat client.
    Web {
        #[arg(long, default_value_t = 3001, env = "SHADDOCK_WEB_PORT")]
        port: u16,
        #[arg(long, default_value = "0.0.0.0", env = "SHADDOCK_WEB_BIND")]
        bind: String,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    shaddock_server::telemetry::init();
    let cli = Cli::parse();
    let config = match ClusterConfig::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("shaddock: {e}");
            return ExitCode::from(64);
        }
    };
    let result = match cli.command {
        Command::All { web_port, no_web } => all(config, (!no_web).then_some(web_port)).await,
        Command::Web { port, bind } => web::run(&bind, port).await,
        Command::Admin { url, token, command } => admin_cli::run(&url, &token, command).await,
        Command::Token { username, ttl } => {
            if config.auth.secret.is_empty() {
                eprintln!("shaddock: no secret: set SHADDOCK_AUTH_SECRET or auth.secret");
                return ExitCode::from(64);
            }
            let token = shaddock_connector::auth::mint(
                config.auth.secret.expose().as_bytes(),
                &username,
                shaddock_connector::auth::now() + ttl,
            );
            println!("{token}");
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, error.cause_chain = ?e, "shaddock failed");
            ExitCode::FAILURE
        }
    }
}

/// The servers of the config, or chatofpomelo's layout when it lists none.
fn servers(config: &ClusterConfig) -> Vec<ServerEntry> {
    if !config.servers.is_empty() {
        return config.servers.clone();
    }
    let entry = |id: &str, t: &str, port: Option<u16>| ServerEntry {
        id: id.into(),
        server_type: t.into(),
        host: "127.0.0.1".into(),
        bind: "0.0.0.0".into(),
        client_port: port,
        admin_port: None,
    };
    vec![
        entry("chat-server-1", "chat", None),
        entry("chat-server-2", "chat", None),
        entry("connector-server-1", "connector", Some(3050)),
        entry("connector-server-2", "connector", Some(3051)),
        entry("gate-server-1", "gate", Some(3014)),
    ]
}

async fn all(mut config: ClusterConfig, web_port: Option<u16>) -> anyhow::Result<()> {
    config.transport = "local".into();
    let bus = Bus::local();
    let store = ChannelStore::memory();
    // One history for every chat server of the process, as one Redis would be.
    let history = shaddock_chat::connect_history(&config).await?;
    let token = CancellationToken::new();
    let mut apps = Vec::new();
    // Chat servers first, then connectors, then the gate: each finds the others at once.
    let mut entries = servers(&config);
    entries.sort_by_key(|e| match e.server_type.as_str() {
        "chat" => 0,
        "connector" => 1,
        _ => 2,
    });
    for me in entries {
        let app = App::with_bus(config.clone(), me.clone(), bus.clone(), token.child_token());
        match me.server_type.as_str() {
            "chat" => {
                shaddock_chat::start(&app, store.clone(), history.clone()).await?;
            }
            "connector" => {
                shaddock_connector::start(&app).await?;
            }
            "gate" => {
                shaddock_gate::start(&app).await?;
            }
            other => anyhow::bail!("unknown server type {other} for {}", me.id),
        }
        apps.push(app);
    }
    if let Some(port) = web_port {
        let bind = std::env::var("SHADDOCK_WEB_BIND").unwrap_or_else(|_| "0.0.0.0".into());
        let listener = web::bind(&bind, port).await?;
        let port = listener.local_addr()?.port();
        let web_token = token.clone();
        tokio::spawn(web::serve(listener, web_token));
        println!("shaddock ready server_id=web server_type=web client_port={port}");
    }
    tracing::info!(
        servers = apps.len(),
        "all servers up in one process (embedded bus and memory store)"
    );

    tokio::select! {
        _ = shaddock_server::shutdown::signal() => tracing::info!("shutdown signal"),
        _ = token.cancelled() => {}
    }
    // The same sequence as each server binary's, for every server at once.
    futures_util::future::join_all(apps.into_iter().map(App::shutdown)).await;
    token.cancel();
    Ok(())
}
