//! Waiting for a condition instead of sleeping for a guess.

use std::future::Future;
use std::time::Duration;

/// How often a condition is checked again.
const RETRY: Duration = Duration::from_millis(50);

/// Checks `condition` until it yields a value, and returns it; panics naming `what` when
/// `within` has passed. The bound is a hang guard, not a performance claim: make it generous.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut condition: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = condition().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: still not true after {within:?}"
        );
        tokio::time::sleep(RETRY).await;
    }
}

/// [`eventually`] for a condition that is a bool.
pub async fn eventually_true<F, Fut>(what: &str, within: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    eventually(what, within, || {
        let check = condition();
        async move { check.await.then_some(()) }
    })
    .await;
}
