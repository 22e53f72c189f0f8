//! The Shaddock server framework: what Pomelo's `lib/` gives every server.
//!
//! # Layout
//! - [`app`]: lifecycle of one server: config, bus, registry, metrics, the root cancellation
//!   token and task tracker, the ready line, the one graceful shutdown sequence.
//! - [`handler`]: the handler pipeline: before filters, handler, after filters, and the one
//!   place a handler error becomes a Pomelo response (`{"code":500}`).
//! - [`service::session_service`]: Pomelo's `SessionService` on a frontend: session id ->
//!   session, uid -> sessions, bounded per-socket queues, kick.
//! - [`remote::session_remote`]: Pomelo's `sessionRemote` on a frontend (kick by uid, resync,
//!   counts), answering the calls declared in `shaddock-remote`.
//! - [`frontend`]: the builder, the WebSocket listener and the Pomelo socket state machine
//!   (handshake, ack, heartbeat, data, kick), delivery of pushes arriving on the bus, drain.
//! - [`forward`]: forwarding a client request to the backend that serves its route.
//! - [`backend`]: the loop a backend runs on its subject: forwarded requests and remote calls.
//! - [`sequencer`]: jobs run one at a time per key (a session, a room), keys in parallel: the
//!   point that gives a session's requests and a room's messages their one order.
//! - [`admin`]: the admin port (`/healthz`, `/readyz`, `/metrics`, a guarded `/admin`).
//! - [`metrics`]: the metrics registry an `App` owns.
//! - [`telemetry`], [`shutdown`]: logging set-up and the SIGTERM/ctrl-c signal.

pub mod admin;
pub mod app;
pub mod backend;
pub mod forward;
pub mod frontend;
pub mod handler;
pub mod metrics;
pub mod remote;
pub mod sequencer;
pub mod service;
pub mod shutdown;
pub mod telemetry;

pub use app::App;
pub use handler::{HandlerError, Handlers};
pub use service::session_service::{Session, SessionService};
