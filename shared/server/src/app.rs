//! The lifecycle of one server process: connect the bus, join the registry, print the ready
//! line, run until SIGTERM/ctrl-c, then drain within a grace period.

use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use anyhow::Context as _;
use shaddock_bus::registry::RegistryTiming;
use shaddock_bus::{Bus, Registry, ServerInfo};
use shaddock_config::{ClusterConfig, ServerEntry};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::handler::BoxFuture;
use crate::metrics::Metrics;

/// How long start-up keeps trying to reach NATS.
const CONNECT_PATIENCE: Duration = Duration::from_secs(30);

/// Raises the soft limit on open files to the hard one: a frontend holds a socket per client.
fn raise_fd_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!(limit = n, "open file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open file limit"),
    }
}

/// How many connections a client port lets wait for `accept` (the kernel caps it at
/// `net.core.somaxconn`). Tokio's `TcpListener::bind` asks for 128: a few hundred clients
/// connecting at once (a reconnect storm, a load balancer's burst) overflowed it, and every
/// dropped SYN cost its client a one-second retransmit. Node (Pomelo) asks for 511.
pub const CLIENT_BACKLOG: u32 = 4096;

/// Binds `host`:`port` with [`CLIENT_BACKLOG`], as a client port needs.
pub async fn listen(host: &str, port: u16) -> std::io::Result<TcpListener> {
    let mut last = None;
    for a in tokio::net::lookup_host((host, port)).await? {
        let socket = if a.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        // As std's bind does on Unix: a restarted server rebinds past TIME_WAIT.
        socket.set_reuseaddr(true)?;
        match socket.bind(a).and_then(|()| socket.listen(CLIENT_BACKLOG)) {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address to bind")))
}

/// One running server.
#[derive(Debug, Clone)]
pub struct App {
    pub config: Arc<ClusterConfig>,
    pub me: ServerEntry,
    pub bus: Bus,
    /// Cancelled to stop everything this server runs.
    pub token: CancellationToken,
    /// Every task this server spawns; shutdown waits for it.
    pub tracker: TaskTracker,
    /// This start of the server (see [`ServerInfo::incarnation`]).
    pub incarnation: u64,
    /// This server's metrics: every crate registers into it, `/metrics` serves it.
    pub metrics: Arc<Metrics>,
    /// Cancelled to leave the registry (say `Bye`) before the rest stops: a chat server keeps
    /// serving while the others learn that it is leaving.
    registry_token: CancellationToken,
    /// What this server does first when asked to stop (see [`App::on_stop`]).
    stop_hooks: Arc<StopHooks>,
}

/// One step of a graceful stop: kick the sessions, hand the rooms over.
type StopHook = Box<dyn FnOnce() -> BoxFuture<()> + Send>;

#[derive(Default)]
struct StopHooks(Mutex<Vec<StopHook>>);

impl std::fmt::Debug for StopHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StopHooks({})", self.0.lock().len())
    }
}

impl App {
    /// Connects to the bus the config names (retrying NATS for a while: it may start after us).
    pub async fn connect(config: ClusterConfig, me: ServerEntry) -> anyhow::Result<Self> {
        let bus = match config.transport.as_str() {
            "local" => Bus::local(),
            _ => {
                let started = std::time::Instant::now();
                loop {
                    let home = shaddock_bus::subject::server(&config.namespace, &me.id);
                    let batching = config.rpc.batching;
                    match Bus::connect_nats_at(&config.nats_url, &me.id, Some(home), batching).await {
                        Ok(bus) => break bus,
                        Err(e) if started.elapsed() < CONNECT_PATIENCE => {
                            tracing::warn!(error = %e, "nats not reachable yet, retrying");
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                        Err(e) => return Err(e).context("connecting to nats"),
                    }
                }
            }
        };
        Ok(Self::with_bus(config, me, bus, CancellationToken::new()))
    }

    /// A server on an existing bus (several servers in one process share one).
    pub fn with_bus(config: ClusterConfig, me: ServerEntry, bus: Bus, token: CancellationToken) -> Self {
        raise_fd_limit();
        let metrics = Arc::new(Metrics::new());
        metrics.register_bus(bus.stats());
        Self {
            metrics,
            config: Arc::new(config),
            me,
            bus,
            registry_token: token.child_token(),
            token,
            tracker: TaskTracker::new(),
            incarnation: ServerInfo::new_incarnation(),
            stop_hooks: Arc::default(),
        }
    }

    /// Binds the client port of a frontend (0 picks a free one).
    pub async fn bind_client_port(&self) -> anyhow::Result<TcpListener> {
        let port = self.me.client_port.unwrap_or(0);
        listen(&self.me.bind, port)
            .await
            .with_context(|| format!("binding {}:{port}", self.me.bind))
    }

    /// Announces this server (with the port clients use) and follows the live list.
    pub async fn join_registry(&self, client_port: Option<u16>) -> anyhow::Result<Registry> {
        let info = ServerInfo {
            id: self.me.id.clone(),
            server_type: self.me.server_type.clone(),
            host: self.me.host.clone(),
            client_port,
            incarnation: self.incarnation,
            draining: false,
        };
        let timing = RegistryTiming {
            heartbeat: Duration::from_millis(self.config.registry.heartbeat_ms),
            lapse: Duration::from_millis(self.config.registry.lapse_ms),
        };
        Registry::start(
            self.bus.clone(),
            &self.config.namespace,
            info,
            timing,
            self.registry_token.clone(),
            &self.tracker,
        )
        .await
        .context("joining the registry")
    }

    /// Says `Bye` to the registry now; the server keeps running until it is stopped.
    pub fn leave_registry(&self) {
        self.registry_token.cancel();
    }

    /// How long a leaving chat server keeps serving after its `Bye` (`registry.handoff_ms`).
    pub fn handoff(&self) -> Duration {
        Duration::from_millis(self.config.registry.handoff_ms)
    }

    /// Serves `/healthz`, `/readyz`, `/metrics` and `admin` (under `/admin`) on this server's
    /// admin port, if it has one; prints `shaddock admin server_id=.. admin_port=..` and
    /// returns the port.
    pub async fn serve_admin(
        &self,
        registry: &Registry,
        sessions: Option<crate::SessionService>,
        checks: Vec<crate::admin::Check>,
        admin: axum::Router,
    ) -> anyhow::Result<Option<u16>> {
        let Some(port) = self.me.admin_port else {
            return Ok(None);
        };
        let addr = format!("{}:{port}", self.me.bind);
        let listener = TcpListener::bind(&addr)
            .await
            .with_context(|| format!("binding the admin port {addr}"))?;
        let port = listener.local_addr()?.port();
        crate::admin::AdminPort {
            server_id: self.me.id.clone(),
            bus: self.bus.clone(),
            registry: registry.clone(),
            metrics: self.metrics.clone(),
            checks,
            sessions,
            token: self.config.admin.token.expose().to_owned(),
        }
        .serve(admin, listener, self.token.clone(), &self.tracker);
        println!("shaddock admin server_id={} admin_port={port}", self.me.id);
        Ok(Some(port))
    }

    /// A client for remote calls to the servers of `registry`.
    pub fn rpc(&self, registry: &Registry) -> shaddock_remote::RpcClient {
        shaddock_remote::RpcClient::new(
            self.bus.clone(),
            registry.clone(),
            &self.config.namespace,
            self.rpc_timeout(),
            self.metrics.rpc_errors.clone(),
        )
    }

    pub fn rpc_timeout(&self) -> Duration {
        Duration::from_millis(self.config.rpc.timeout_ms)
    }

    /// The one line on stdout that says the server is up; tests and scripts read the port.
    pub fn announce_ready(&self, client_port: Option<u16>) {
        let port = client_port.map(|p| p.to_string()).unwrap_or_else(|| "-".into());
        println!(
            "shaddock ready server_id={} server_type={} client_port={port}",
            self.me.id, self.me.server_type
        );
        tracing::info!(server.id = %self.me.id, server.type = %self.me.server_type, client_port = %port, "server ready");
    }

    /// Registers what this server does first when asked to stop, before its tasks are
    /// cancelled: a frontend kicks its sessions and waits for the kicks to be written, a chat
    /// server hands its rooms over. Hooks run together.
    pub fn on_stop<F, Fut>(&self, hook: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        self.stop_hooks
            .0
            .lock()
            .push(Box::new(move || Box::pin(hook()) as BoxFuture<()>));
    }

    /// Runs until SIGTERM/ctrl-c (or the token), then stops gracefully (see [`App::shutdown`]).
    pub async fn run(self) {
        self.wait_for_stop().await;
        self.shutdown().await;
    }

    /// Returns on SIGTERM/ctrl-c, or when the token is cancelled.
    pub async fn wait_for_stop(&self) {
        tokio::select! {
            _ = crate::shutdown::signal() => tracing::info!("shutdown signal"),
            _ = self.token.cancelled() => {}
        }
    }

    /// The one shutdown sequence, for a server binary and for every server of `shaddock all`:
    /// the stop hooks (at most the grace period), then everything is cancelled and its tasks
    /// get the grace period again to finish.
    pub async fn shutdown(self) {
        let grace = Duration::from_millis(self.config.limits.shutdown_grace_ms);
        let hooks: Vec<StopHook> = std::mem::take(&mut *self.stop_hooks.0.lock());
        let drained = futures_util::future::join_all(hooks.into_iter().map(|hook| hook()));
        if tokio::time::timeout(grace, drained).await.is_err() {
            tracing::warn!(?grace, "draining took longer than the grace period, stopping now");
        }
        self.token.cancel();
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait()).await.is_err() {
            tracing::warn!(?grace, "tasks still running after the grace period, stopping now");
        }
        tracing::info!(server.id = %self.me.id, "stopped");
    }
}

/// The command line every server binary takes.
#[derive(Debug, clap::Parser)]
struct ServerArgs {
    /// Cluster config (TOML); defaults apply without one.
    #[arg(long, env = "SHADDOCK_CONFIG")]
    config: Option<std::path::PathBuf>,
    /// This server's id (else SHADDOCK_SERVER_ID, else the only server of this type in the
    /// config).
    #[arg(long)]
    id: Option<String>,
}

/// The whole `main` of a server binary: arguments, logging, the config (a bad one prints one
/// line and exits 64), the bus, then `run` until the server stops.
pub async fn main<F, Fut>(server_type: &str, about: &'static str, run: F) -> std::process::ExitCode
where
    F: FnOnce(App) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    use clap::{CommandFactory, FromArgMatches};
    let command = ServerArgs::command()
        .name(format!("shaddock-{server_type}"))
        .about(about)
        .version(env!("CARGO_PKG_VERSION"));
    let args = match ServerArgs::from_arg_matches(&command.get_matches()) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    crate::telemetry::init();
    let loaded = ClusterConfig::load(args.config.as_deref())
        .and_then(|c| c.identity(server_type, args.id).map(|me| (c, me)));
    let (config, me) = match loaded {
        Ok(v) => v,
        Err(e) => {
            eprintln!("shaddock-{server_type}: {e}");
            return std::process::ExitCode::from(64);
        }
    };
    let result = async { run(App::connect(config, me).await?).await }.await;
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, error.cause_chain = ?e, "{server_type} server failed");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 128 was tokio's backlog: the 129th connect waiting for `accept` lost its SYN.
    #[tokio::test]
    async fn a_client_port_lets_hundreds_of_connections_wait_for_accept() {
        let listener = listen("127.0.0.1", 0).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut waiting = Vec::new();
        for i in 0..600 {
            let connect = tokio::net::TcpStream::connect(addr);
            match tokio::time::timeout(Duration::from_millis(500), connect).await {
                Ok(Ok(s)) => waiting.push(s),
                other => panic!("connection {i} not taken in while none was accepted: {other:?}"),
            }
        }
        drop(listener);
    }
}
