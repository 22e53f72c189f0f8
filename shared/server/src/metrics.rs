//! Prometheus metrics of this process (prometheus-client), served at `/metrics`.
//!
//! Labels have low cardinality on purpose: a route label is a route of the dictionary or
//! `other` (clients choose routes), a code is `200` or the error code, a kick reason comes
//! from a fixed set. No uid or rid is ever a label.

use std::sync::OnceLock;
use std::sync::atomic::Ordering;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KickLabels {
    pub reason: &'static str,
}

/// Every metric of a Shaddock process.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Open client connections (frontends).
    pub connections: Gauge,
    pub connections_total: Counter,
    /// Sessions bound to a uid (set at scrape time).
    pub sessions: Gauge,
    pub requests: Family<RequestLabels, Counter>,
    pub request_seconds: Histogram,
    /// Push envelopes a frontend received (one per sid group).
    pub pushes: Counter,
    /// Packages queued on sockets for those pushes.
    pub deliveries: Counter,
    pub kicks: Family<KickLabels, Counter>,
    /// Packages dropped because a client's queue was full (that client is closed).
    pub queue_drops: Counter,
    /// Remote calls from this process that failed.
    pub rpc_errors: Counter,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("shaddock");
        let m = Self {
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
            registry: Registry::default(),
        };
        registry.register("connections", "Open client connections", m.connections.clone());
        registry.register(
            "connections_opened",
            "Client connections opened",
            m.connections_total.clone(),
        );
        registry.register("sessions", "Sessions bound to a uid", m.sessions.clone());
        registry.register(
            "requests",
            "Client requests by route and answer code",
            m.requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Client request latency",
            m.request_seconds.clone(),
        );
        registry.register(
            "pushes",
            "Push envelopes received for local sessions",
            m.pushes.clone(),
        );
        registry.register(
            "deliveries",
            "Pushed packages queued on sockets",
            m.deliveries.clone(),
        );
        registry.register("kicks", "Sessions kicked, by reason", m.kicks.clone());
        registry.register(
            "queue_drops",
            "Packages dropped on full client queues",
            m.queue_drops.clone(),
        );
        registry.register("rpc_errors", "Failed remote calls", m.rpc_errors.clone());
        Self { registry, ..m }
    }

    /// The text exposition, with the bus and store counters of this process.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode_registry(&mut out, &self.registry);
        let extra = [
            (
                "nats_disconnects",
                "NATS connection losses",
                &shaddock_bus::stats::NATS_DISCONNECTS,
            ),
            (
                "nats_connects",
                "NATS connections made (first and reconnects)",
                &shaddock_bus::stats::NATS_CONNECTS,
            ),
            (
                "nats_slow_consumer_events",
                "NATS slow-consumer drops",
                &shaddock_bus::stats::SLOW_CONSUMER_EVENTS,
            ),
            (
                "bus_request_failures",
                "Bus requests that timed out or found nobody",
                &shaddock_bus::stats::REQUEST_FAILURES,
            ),
            (
                "store_errors",
                "Channel store (Redis) errors",
                &shaddock_bus::stats::STORE_ERRORS,
            ),
        ];
        for (name, help, v) in extra {
            out.push_str(&format!(
                "# HELP shaddock_{name} {help}.\n# TYPE shaddock_{name} counter\nshaddock_{name}_total {}\n",
                v.load(Ordering::Relaxed)
            ));
        }
        let _ = prometheus_client::encoding::text::encode_eof(&mut out);
        out
    }

    /// Counts a kick.
    pub fn kick(&self, reason: &str) {
        let reason = match reason {
            "attack" => "attack",
            "flood" => "flood",
            "slow" => "slow",
            "server shutting down" => "shutdown",
            "kick" => "kick",
            _ => "other",
        };
        self.kicks.get_or_create(&KickLabels { reason }).inc();
    }
}

/// The metrics of this process.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_names_every_metric() {
        let m = metrics();
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
}
