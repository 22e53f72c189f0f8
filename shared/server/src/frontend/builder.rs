//! Building a frontend (gate or connector): [`App::frontend`] binds the client port and joins
//! the registry, the service adds its handlers and hooks, and [`FrontendBuilder::start`]
//! serves it, with its admin port, and registers its drain for shutdown.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::Value;
use shaddock_bus::{Registry, subject};
use shaddock_config::Limits;
use tokio::net::TcpListener;

use super::{Frontend, push};
use crate::App;
use crate::forward::Forwarder;
use crate::handler::HandlerError;
use crate::service::session_service::{Session, SessionService};

/// The kick reason of a drain: Pomelo clients that see it reconnect (through the gate).
pub const DRAIN_REASON: &str = "reconnect";

/// A frontend being assembled.
#[derive(Debug)]
pub struct FrontendBuilder {
    app: App,
    listener: TcpListener,
    port: u16,
    registry: Registry,
    fe: Frontend,
    route_keys: HashMap<String, String>,
    forwards: bool,
    pushes: bool,
}

impl App {
    /// Starts building a frontend of `server_type`: binds its client port (0 picks a free one)
    /// and announces it, with that port, in the registry.
    pub async fn frontend(&self, server_type: &str) -> anyhow::Result<FrontendBuilder> {
        let listener = self.bind_client_port().await?;
        let port = listener.local_addr().context("reading the client port")?.port();
        let registry = self.join_registry(Some(port)).await?;
        let protos = match self.config.protobuf.dir.as_str() {
            "" => None,
            dir => {
                let protos = shaddock_protobuf::Protos::load(std::path::Path::new(dir))
                    .with_context(|| format!("loading protobuf.dir {dir}"))?;
                tracing::info!(%dir, version = protos.version(), "protobuf bodies on");
                Some(Arc::new(protos))
            }
        };
        let mut fe = Frontend::new(
            server_type,
            &self.me.id,
            &self.config,
            self.token.clone(),
            self.tracker.clone(),
            self.metrics.clone(),
            protos,
        );
        fe.tls = super::tls::acceptor(&self.config.tls)?;
        Ok(FrontendBuilder {
            app: self.clone(),
            listener,
            port,
            registry,
            fe,
            route_keys: HashMap::new(),
            forwards: false,
            pushes: false,
        })
    }
}

impl FrontendBuilder {
    /// The live servers of the cluster.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The sessions this frontend will hold.
    /// Where `on_close` should spawn what it starts (a leave): a drain waits for it.
    pub fn leaves(&self) -> tokio_util::task::TaskTracker {
        self.fe.leaves.clone()
    }

    pub fn sessions(&self) -> &SessionService {
        &self.fe.sessions
    }

    pub fn limits(&self) -> &Limits {
        &self.fe.limits
    }

    /// Serves `route` on this frontend (Pomelo's handler).
    pub fn handler<F, Fut>(&mut self, route: &str, f: F) -> &mut Self
    where
        F: Fn(Session, Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, HandlerError>> + Send + 'static,
    {
        self.fe.handlers.add(route, f);
        self
    }

    /// Forwards the routes of other server types to their backends; those of `server_type`
    /// to the one picked by the session setting `key` (Pomelo's `app.route`), others by uid.
    pub fn forward(&mut self, server_type: &str, key: &str) -> &mut Self {
        self.forwards = true;
        self.route_keys.insert(server_type.to_owned(), key.to_owned());
        self
    }

    /// Called once for every session that closes, after the requests it sent.
    pub fn on_close(&mut self, f: impl Fn(Session) + Send + Sync + 'static) -> &mut Self {
        self.fe.on_close = Some(Arc::new(f));
        self
    }

    /// Called when a backend asks this frontend to tell again who is connected
    /// (`sessionRemote.resync`), with whether the members put back are announced.
    pub fn on_resync(&mut self, f: impl Fn(bool) + Send + Sync + 'static) -> &mut Self {
        self.fe.on_resync = Some(Arc::new(f));
        self
    }

    /// Receives pushes, broadcasts and `sessionRemote` calls on this server's subject and on
    /// its type's.
    pub fn deliver_pushes(&mut self) -> &mut Self {
        self.pushes = true;
        self
    }

    /// Serves clients, the admin port (with `admin` under `/admin`), and pushes if asked;
    /// on shutdown the frontend stops accepting, kicks its sessions and waits until the kicks
    /// have been written. Prints the ready line.
    pub async fn start(self, admin: axum::Router) -> anyhow::Result<Arc<Frontend>> {
        let Self {
            app,
            listener,
            port,
            registry,
            mut fe,
            route_keys,
            forwards,
            pushes,
        } = self;
        if forwards {
            fe.forwarder = Some(Forwarder {
                bus: app.bus.clone(),
                registry: registry.clone(),
                namespace: app.config.namespace.clone(),
                timeout: app.rpc_timeout(),
                route_keys,
            });
        }
        fe.port = port;
        let fe = Arc::new(fe);
        if pushes {
            let ns = &app.config.namespace;
            let own = app.bus.subscribe(subject::server(ns, &app.me.id)).await?;
            let by_type = app
                .bus
                .subscribe(subject::server_type(ns, &fe.server_type))
                .await?;
            let serve = push::serve(app.bus.clone(), vec![own, by_type], fe.clone(), app.token.clone());
            app.tracker.spawn(serve);
        }
        app.serve_admin(&registry, Some(fe.sessions.clone()), Vec::new(), admin)
            .await?;
        fe.clone().serve(listener);
        // On SIGTERM: tell the registry first (the gate sends no new client here), give the
        // others a moment to hear it, then hand the sessions back in paced batches with
        // `{"reason":"reconnect"}`: Pomelo clients that follow it reconnect through the gate.
        let (draining, registry) = (fe.clone(), registry.clone());
        let heard = Duration::from_millis(app.config.registry.heartbeat_ms.min(500));
        app.on_stop(move || async move {
            registry.set_draining();
            tokio::time::sleep(heard).await;
            draining.drain(DRAIN_REASON).await
        });
        app.announce_ready(Some(port));
        Ok(fe)
    }
}
