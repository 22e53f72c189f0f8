//! The admin port of a server: `/healthz`, `/readyz`, `/metrics`, and under `/admin` whatever
//! the service mounts there (the admin console, `shaddock-console`), behind a bearer token.
//!
//! `/admin` is off (404) unless a token is configured (`admin.token` /
//! `SHADDOCK_ADMIN_TOKEN`); its API (`/admin/api/...`) needs `Authorization: Bearer <token>`.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use shaddock_bus::{Bus, Registry};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::handler::BoxFuture;
use crate::metrics::Metrics;
use crate::service::session_service::SessionService;

/// A readiness check: a name and a future that says whether it passes.
pub type Check = (&'static str, Arc<dyn Fn() -> BoxFuture<bool> + Send + Sync>);

/// What the admin port needs.
pub struct AdminPort {
    pub server_id: String,
    pub bus: Bus,
    pub registry: Registry,
    pub metrics: Arc<Metrics>,
    /// Extra readiness checks (the bus and the registry are always checked).
    pub checks: Vec<Check>,
    /// The sessions of this server, if it is a frontend (for the sessions gauge).
    pub sessions: Option<SessionService>,
    /// Empty: `/admin` is off.
    pub token: String,
}

impl std::fmt::Debug for AdminPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminPort")
            .field("server_id", &self.server_id)
            .finish()
    }
}

impl AdminPort {
    /// Serves the admin port, with `admin` nested under `/admin`, until `token` is cancelled.
    pub fn serve(
        self,
        admin: Router,
        listener: TcpListener,
        token: CancellationToken,
        tracker: &TaskTracker,
    ) {
        let guard: Arc<str> = Arc::from(self.token.as_str());
        let admin = admin.layer(middleware::from_fn_with_state(guard, authorize));
        let app = Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .with_state(Arc::new(self))
            .nest("/admin", admin)
            // The console's address with a slash, as people type it.
            .route(
                "/admin/",
                get(|| async { axum::response::Redirect::permanent("/admin") }),
            );
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

type Shared = State<Arc<AdminPort>>;

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
    if let Some(sessions) = &a.sessions {
        a.metrics.sessions.set(sessions.bound_count() as i64);
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        a.metrics.encode(),
    )
        .into_response()
}

/// Everything under `/admin` is off without a token; its API needs the token.
async fn authorize(State(token): State<Arc<str>>, request: Request, next: Next) -> Response {
    if token.is_empty() {
        let off = (
            StatusCode::NOT_FOUND,
            "the admin console is off (no admin token)\n",
        );
        return off.into_response();
    }
    if !request.uri().path().starts_with("/api/") {
        return next.run(request).await;
    }
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if given.is_some_and(|g| same_secret(g, &token)) {
        next.run(request).await
    } else {
        (StatusCode::UNAUTHORIZED, "bad admin token\n").into_response()
    }
}

/// Compares in constant time: the token is a secret.
fn same_secret(given: &str, token: &str) -> bool {
    given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}
