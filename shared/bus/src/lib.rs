//! The bus between Shaddock servers, in Pomelo's terms the RPC layer and the master's
//! server list.
//!
//! Every server subscribes once to `<ns>.srv.<serverId>`: remote calls, forwarded client
//! requests and pushes for its sessions all arrive there as MessagePack [`Envelope`]s.
//! The [`Bus`] has two implementations behind one enum: NATS for clusters, and an in-process
//! bus for the single-process build; the code above it is the same.
//!
//! # Layout
//! - [`bus`]: `Bus` (publish, request with timeout, subscribe) over NATS or in process.
//! - [`batch`]: several messages to one server in one NATS message (`publish_batched`).
//! - [`reply`]: a request sent in order now and answered later ([`PendingReply`]).
//! - [`envelope`]: what travels between servers, and the session a request carries.
//! - [`subject`]: the only place that formats subjects.
//! - [`registry`]: servers announce themselves and heartbeat; everybody keeps the live list.
//! - [`route`]: crc32 routing over a list sorted by server id.

pub mod batch;
pub mod bus;
mod coalesce;
pub mod envelope;
pub mod registry;
pub mod reply;
pub mod route;
pub mod stats;
pub mod subject;

pub use bus::{Bus, Incoming, Subscription};
pub use envelope::{Envelope, PushNo, Reply, SessionExport};
pub use registry::{Registry, ServerInfo, ServerList};
pub use reply::PendingReply;

/// What can go wrong on the bus.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("cannot connect to nats at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("publish failed: {0}")]
    Publish(String),
    #[error("subscribe failed: {0}")]
    Subscribe(String),
    #[error("request timed out")]
    Timeout,
    #[error("no server is listening on {0}")]
    NoResponders(String),
    #[error("request failed: {0}")]
    Request(String),
    #[error("cannot encode envelope: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    #[error("cannot decode envelope: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    #[error("remote error {code}: {message}")]
    Remote { code: u16, message: String },
    #[error("no {0} server is available")]
    NoServer(String),
}

impl BusError {
    /// True when the call never got an answer (timeout, nobody listening, transport down).
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            Self::Timeout | Self::NoResponders(_) | Self::Request(_) | Self::Publish(_) | Self::NoServer(_)
        )
    }
}
