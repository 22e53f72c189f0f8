//! The admin port of a server: `/healthz`, `/readyz`, `/metrics`, and the admin console
//! (`/admin`, a page and a JSON API protected by a token) doing the jobs of Pomelo's admin
//! console: the servers of the cluster, online users per connector, channels and their
//! members, kick a user, broadcast a message to everyone.
//!
//! The console is off unless a token is configured (`admin.token` / `SHADDOCK_ADMIN_TOKEN`);
//! clients send it as `Authorization: Bearer <token>`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use shaddock_bus::{Bus, Envelope, Registry, subject};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::frontend::Frontend;
use crate::handler::BoxFuture;
use crate::metrics::Metrics;
use shaddock_remote::RpcClient;
use shaddock_remote::chat_remote::Channels;
use shaddock_remote::session_remote::{KickByUid, SessionCount};

/// A readiness check: a name and a future that says whether it passes.
pub type Check = (&'static str, Arc<dyn Fn() -> BoxFuture<bool> + Send + Sync>);

/// What the admin port needs.
pub struct Admin {
    pub server_id: String,
    pub bus: Bus,
    pub registry: Registry,
    pub rpc: RpcClient,
    pub namespace: String,
    pub metrics: Arc<Metrics>,
    /// Extra readiness checks (the bus and the registry are always checked).
    pub checks: Vec<Check>,
    /// The frontend of this server, if it is one (for the sessions gauge).
    pub frontend: Option<Arc<Frontend>>,
    /// Empty: the console is off.
    pub token: String,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("server_id", &self.server_id)
            .finish()
    }
}

impl Admin {
    /// Serves the admin port until `token` is cancelled.
    pub fn serve(self, listener: TcpListener, token: CancellationToken, tracker: &TaskTracker) {
        let app = Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .route("/admin", get(page))
            .route("/admin/api/servers", get(servers))
            .route("/admin/api/connectors", get(connectors))
            .route("/admin/api/channels", get(channels))
            .route("/admin/api/kick", post(kick))
            .route("/admin/api/broadcast", post(broadcast))
            .with_state(Arc::new(self));
        tracker.spawn(async move {
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(token.cancelled_owned())
                .await
            {
                tracing::error!(error = %e, "admin port failed");
            }
        });
    }
}

type Shared = State<Arc<Admin>>;

async fn readyz(State(a): Shared) -> Response {
    let mut failing = Vec::new();
    if !a.bus.is_connected() {
        failing.push("bus");
    }
    if !a.registry.list().contains(&a.server_id) {
        failing.push("registry");
    }
    for (name, check) in &a.checks {
        if !check().await {
            failing.push(name);
        }
    }
    if failing.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", failing.join(", ")),
        )
            .into_response()
    }
}

async fn metrics(State(a): Shared) -> Response {
    let m = &a.metrics;
    if let Some(fe) = &a.frontend {
        m.sessions.set(fe.sessions.bound_count() as i64);
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.encode(),
    )
        .into_response()
}

fn authorized(a: &Admin, headers: &HeaderMap) -> Result<(), Box<Response>> {
    if a.token.is_empty() {
        let off = (
            StatusCode::NOT_FOUND,
            "the admin console is off (no admin token)\n",
        );
        return Err(Box::new(off.into_response()));
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    // Compare in constant time: the token is a secret.
    let ok = given.is_some_and(|g| {
        g.len() == a.token.len()
            && g.bytes()
                .zip(a.token.bytes())
                .fold(0u8, |acc, (x, y)| acc | (x ^ y))
                == 0
    });
    if ok {
        Ok(())
    } else {
        Err(Box::new(
            (StatusCode::UNAUTHORIZED, "bad admin token\n").into_response(),
        ))
    }
}

async fn page(State(a): Shared) -> Response {
    if a.token.is_empty() {
        return (
            StatusCode::NOT_FOUND,
            "the admin console is off (no admin token)\n",
        )
            .into_response();
    }
    Html(include_str!("admin.html")).into_response()
}

async fn servers(State(a): Shared, headers: HeaderMap) -> Response {
    if let Err(r) = authorized(&a, &headers) {
        return *r;
    }
    let list = a.registry.list();
    let servers: Vec<Value> = list
        .all()
        .map(|s| json!({"id": s.id, "type": s.server_type, "host": s.host, "clientPort": s.client_port}))
        .collect();
    Json(json!({ "servers": servers })).into_response()
}

async fn connectors(State(a): Shared, headers: HeaderMap) -> Response {
    if let Err(r) = authorized(&a, &headers) {
        return *r;
    }
    let mut out = Vec::new();
    for c in a.registry.list().servers("connector") {
        let counts = a.rpc.call_server(&c.id, SessionCount {}).await;
        out.push(match counts {
            Ok(n) => json!({"id": c.id, "host": c.host, "clientPort": c.client_port, "connections": n.connections, "users": n.users}),
            Err(e) => json!({"id": c.id, "error": e.to_string()}),
        });
    }
    Json(json!({ "connectors": out })).into_response()
}

async fn channels(State(a): Shared, headers: HeaderMap) -> Response {
    if let Err(r) = authorized(&a, &headers) {
        return *r;
    }
    let list = a.registry.list();
    let Some(chat) = list.servers("chat").first() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": "no chat server"})),
        )
            .into_response();
    };
    match a.rpc.call_server(&chat.id, Channels {}).await {
        Ok(c) => {
            let c: Vec<Value> = c
                .into_iter()
                .map(|c| {
                    let members: Vec<Value> = c
                        .members
                        .into_iter()
                        .map(|m| json!({"uid": m.uid, "sid": m.sid}))
                        .collect();
                    json!({"name": c.name, "members": members})
                })
                .collect();
            Json(json!({ "channels": c })).into_response()
        }
        Err(e) => (StatusCode::BAD_GATEWAY, Json(json!({"error": e.to_string()}))).into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct KickRequest {
    uid: String,
    reason: Option<String>,
}

async fn kick(State(a): Shared, headers: HeaderMap, Json(req): Json<KickRequest>) -> Response {
    if let Err(r) = authorized(&a, &headers) {
        return *r;
    }
    let reason = req.reason.unwrap_or_else(|| "kick".into());
    let mut kicked = 0usize;
    for c in a.registry.list().servers("connector") {
        let kick = KickByUid {
            uid: req.uid.clone(),
            reason: Some(reason.clone()),
        };
        let n = a.rpc.call_server(&c.id, kick).await;
        kicked += n.unwrap_or(0);
    }
    tracing::info!(uid = %req.uid, kicked, "admin kick");
    Json(json!({ "kicked": kicked })).into_response()
}

#[derive(Debug, Deserialize)]
struct BroadcastRequest {
    /// Defaults to `onChat`.
    route: Option<String>,
    /// The push body; defaults to `{msg: text, from: "admin", target: "*"}`.
    body: Option<Value>,
    text: Option<String>,
}

async fn broadcast(State(a): Shared, headers: HeaderMap, Json(req): Json<BroadcastRequest>) -> Response {
    if let Err(r) = authorized(&a, &headers) {
        return *r;
    }
    let route = req.route.unwrap_or_else(|| "onChat".into());
    let body = req
        .body
        .unwrap_or_else(|| json!({"msg": req.text.unwrap_or_default(), "from": "admin", "target": "*"}));
    let env = Envelope::Broadcast {
        route,
        body: serde_json::to_vec(&body).unwrap_or_default(),
    };
    let sent = match env.encode() {
        Ok(bytes) => {
            a.bus
                .publish(subject::server_type(&a.namespace, "connector"), bytes)
                .await
        }
        Err(e) => Err(e),
    };
    match sent {
        Ok(()) => Json(json!({"ok": true})).into_response(),
        Err(e) => (StatusCode::BAD_GATEWAY, Json(json!({"error": e.to_string()}))).into_response(),
    }
}
