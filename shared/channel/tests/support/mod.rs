//! What the channel store tests share: the real Redis and a namespace per test.

#[allow(dead_code)] // not every test binary talks to Redis
pub const REDIS: &str = "redis://127.0.0.1:6379";

/// A namespace no other test (or run) uses.
pub fn namespace(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("test-{tag}-{}-{nanos}", std::process::id())
}
