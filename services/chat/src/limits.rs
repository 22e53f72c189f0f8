//! What keeps one room from hurting the others: a message rate per room (one sender cannot fill
//! every member's queue and get the slow ones kicked).

use std::collections::HashMap;
use std::time::Instant;

use parking_lot::Mutex;

/// Rooms whose buckets are kept at most; past it, full (idle) buckets are forgotten.
const ROOMS_KEPT: usize = 10_000;

/// A token bucket per room: `rate` messages a second, `burst` at once; 0 means no limit.
#[derive(Debug)]
pub struct RoomRates {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RoomRates {
    pub fn new(rate: u32, burst: u32) -> Self {
        Self {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::default(),
        }
    }

    /// Takes a token for one message into `rid`; false when the room is over its rate.
    pub fn admit(&self, rid: &str) -> bool {
        self.admit_at(rid, Instant::now())
    }

    fn admit_at(&self, rid: &str, now: Instant) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        let mut buckets = self.buckets.lock();
        if buckets.len() >= ROOMS_KEPT && !buckets.contains_key(rid) {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, (tokens, at)| *tokens + now.duration_since(*at).as_secs_f64() * rate < burst);
        }
        let (tokens, at) = buckets.entry(rid.to_owned()).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.rate).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_room_takes_its_burst_then_its_rate_and_other_rooms_are_apart() {
        let rates = RoomRates::new(10, 3);
        let t0 = Instant::now();
        assert!((0..3).all(|_| rates.admit_at("a", t0)));
        assert!(!rates.admit_at("a", t0), "past the burst");
        assert!(rates.admit_at("b", t0), "another room has its own");
        assert!(
            rates.admit_at("a", t0 + Duration::from_millis(100)),
            "a token back after 1/rate"
        );
        assert!(!rates.admit_at("a", t0 + Duration::from_millis(100)));
        assert!(RoomRates::new(0, 0).admit("any"), "0 is no limit");
    }
}
