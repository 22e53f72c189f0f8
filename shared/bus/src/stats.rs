//! Counters of the bus, read by the metrics endpoint. Process-wide: one bus per process
//! (the single-process build shares its in-process bus).

use std::sync::atomic::AtomicU64;

/// Times the NATS connection was lost.
pub static NATS_DISCONNECTS: AtomicU64 = AtomicU64::new(0);
/// Times it was (re)established.
pub static NATS_CONNECTS: AtomicU64 = AtomicU64::new(0);
/// Messages NATS dropped because a subscriber fell behind.
pub static SLOW_CONSUMER_EVENTS: AtomicU64 = AtomicU64::new(0);
/// Requests that timed out or found nobody.
pub static REQUEST_FAILURES: AtomicU64 = AtomicU64::new(0);
/// Errors of the channel store (counted by the channel crate, exported with the rest).
pub static STORE_ERRORS: AtomicU64 = AtomicU64::new(0);
