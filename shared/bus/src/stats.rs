//! Counters of one bus connection. The server that owns the bus registers them in its metrics
//! registry (`App`); servers sharing the in-process bus report the same figures.

use prometheus_client::metrics::counter::Counter;

/// What a bus counts. Cheap to clone: the counters are shared.
#[derive(Debug, Clone, Default)]
pub struct BusStats {
    /// Times the NATS connection was lost.
    pub nats_disconnects: Counter,
    /// Times it was (re)established.
    pub nats_connects: Counter,
    /// Times NATS dropped messages because a subscriber fell behind.
    pub slow_consumer_events: Counter,
    /// Requests that timed out or found nobody.
    pub request_failures: Counter,
    /// Messages that left inside a batch with others (see [`crate::batch`]).
    pub batched_messages: Counter,
}
