//! Prometheus metrics of one server (prometheus-client), served at its `/metrics`.
//!
//! Labels have low cardinality on purpose: a route label is a route of the dictionary or
//! `other` (clients choose routes), a code is `200` or the error code, a kick reason comes
//! from a fixed set. No uid or rid is ever a label.

use parking_lot::Mutex;
use shaddock_bus::stats::BusStats;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KickLabels {
    pub reason: &'static str,
}

/// The metrics of one server, owned by its `App` and served at its `/metrics`. The framework's
/// own are fields; other crates register theirs with [`Metrics::register`].
/// The `reason` label of `shaddock_kicks_total`: a kick's own reason when it is one of
/// these, `shutdown` for "server shutting down", else `other`.
pub const KICK_REASONS: [&str; 7] = [
    "attack",
    "flood",
    "slow",
    "shutdown",
    "reconnect",
    "kick",
    "other",
];

#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    /// Open client connections (frontends).
    pub connections: Gauge,
    pub connections_total: Counter,
    /// Sessions bound to a uid (set at scrape time).
    pub sessions: Gauge,
    pub requests: Family<RequestLabels, Counter>,
    pub request_seconds: Histogram,
    /// Push envelopes a frontend received (one per sid group).
    pub pushes: Counter,
    /// Sessions a push was handed to (a client whose queue was full is closed instead).
    pub deliveries: Counter,
    pub kicks: Family<KickLabels, Counter>,
    /// Packages dropped because a client's queue was full (that client is closed), and
    /// messages refused because a key's queue was full.
    pub queue_drops: Counter,
    /// Remote calls from this server that failed.
    pub rpc_errors: Counter,
    /// Pushes a frontend found missing from a sender's numbering (lost on the way).
    pub lost_pushes: Counter,
    /// Every request answered, whatever its route (not exported: `requests` has the detail;
    /// the admin console reads it for rates).
    pub requests_answered: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let m = Self {
            registry: Mutex::new(Registry::with_prefix("shaddock")),
            connections: Gauge::default(),
            connections_total: Counter::default(),
            sessions: Gauge::default(),
            requests: Family::default(),
            request_seconds: Histogram::new(exponential_buckets(0.0001, 2.5, 14)),
            pushes: Counter::default(),
            deliveries: Counter::default(),
            kicks: Family::default(),
            queue_drops: Counter::default(),
            rpc_errors: Counter::default(),
            lost_pushes: Counter::default(),
            requests_answered: Counter::default(),
        };
        // Every reason is exported from the start (at 0), so dashboards and alerts see the
        // series before the first kick.
        for reason in KICK_REASONS {
            let _ = m.kicks.get_or_create(&KickLabels { reason });
        }
        m.register("connections", "Open client connections", m.connections.clone());
        m.register(
            "connections_opened",
            "Client connections opened",
            m.connections_total.clone(),
        );
        m.register("sessions", "Sessions bound to a uid", m.sessions.clone());
        m.register(
            "requests",
            "Client requests by route and answer code",
            m.requests.clone(),
        );
        m.register(
            "request_duration_seconds",
            "Client request latency",
            m.request_seconds.clone(),
        );
        m.register(
            "pushes",
            "Push envelopes received for local sessions",
            m.pushes.clone(),
        );
        m.register(
            "deliveries",
            "Sessions pushes were handed to",
            m.deliveries.clone(),
        );
        m.register("kicks", "Sessions kicked, by reason", m.kicks.clone());
        m.register(
            "queue_drops",
            "Packages dropped on full client queues, and messages refused on full room queues",
            m.queue_drops.clone(),
        );
        m.register("rpc_errors", "Failed remote calls", m.rpc_errors.clone());
        m.register(
            "lost_pushes",
            "Pushes found missing from a sender's numbering (recovering clients are dropped)",
            m.lost_pushes.clone(),
        );
        m
    }

    /// Adds a metric of another crate (named without the `shaddock_` prefix).
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.registry.lock().register(name, help, metric);
    }

    /// Adds the counters of a bus.
    pub fn register_bus(&self, stats: &BusStats) {
        self.register(
            "nats_disconnects",
            "NATS connection losses",
            stats.nats_disconnects.clone(),
        );
        self.register(
            "nats_connects",
            "NATS connections made (first and reconnects)",
            stats.nats_connects.clone(),
        );
        self.register(
            "nats_slow_consumer_events",
            "NATS slow-consumer drops",
            stats.slow_consumer_events.clone(),
        );
        self.register(
            "bus_request_failures",
            "Bus requests that timed out or found nobody",
            stats.request_failures.clone(),
        );
        self.register(
            "bus_batched_messages",
            "Bus messages that left inside a batch with others to the same server",
            stats.batched_messages.clone(),
        );
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry.lock()) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        out
    }

    /// Counts a kick.
    pub fn kick(&self, reason: &str) {
        let reason = match reason {
            "server shutting down" => "shutdown",
            r => KICK_REASONS.into_iter().find(|k| *k == r).unwrap_or("other"),
        };
        self.kicks.get_or_create(&KickLabels { reason }).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_names_every_metric() {
        let m = Metrics::new();
        m.register_bus(&BusStats::default());
        m.requests
            .get_or_create(&RequestLabels {
                route: "a.b.c".into(),
                code: 200,
            })
            .inc();
        m.kick("attack");
        let text = m.encode();
        for name in [
            "shaddock_connections",
            "shaddock_requests_total{route=\"a.b.c\",code=\"200\"}",
            "shaddock_kicks_total{reason=\"attack\"}",
            "shaddock_nats_disconnects_total",
            "# EOF",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
    }

    #[test]
    fn two_servers_in_one_process_count_apart() {
        let (a, b) = (Metrics::new(), Metrics::new());
        a.pushes.inc();
        assert!(a.encode().contains("shaddock_pushes_total 1\n"));
        assert!(b.encode().contains("shaddock_pushes_total 0\n"));
    }
}
