//! Pomelo's `ChannelService` and `Channel`, with membership in a [`ChannelStore`] (Redis for
//! clusters, memory for one process) so that any chat server can serve a channel after a
//! restart or a rebalance.
//!
//! # Layout
//! - [`store`]: the channel store: members of a channel as `uid -> sid`, one round trip to
//!   read a whole channel; Redis and memory behind one trait.
//! - [`service`]: `ChannelService` (get/destroy channels, push by uids, broadcast) and
//!   `Channel` (add, leave, members, push to everyone), with a per-channel cache.

mod changes;
pub mod service;
pub mod store;

pub use service::{Channel, ChannelService, Delivery, Grouped, PushReport};
pub use store::{Added, ChannelStore, Epoch, HELD_SID, Member, MemoryStore, RedisStore, Store};

/// What can go wrong with a channel.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("channel store: {0}")]
    Store(redis::RedisError),
    #[error("bus: {0}")]
    Bus(#[from] shaddock_bus::BusError),
    #[error("uids should not be empty")]
    NoUids,
    #[error("all uids push message fail")]
    AllFailed,
}

impl From<redis::RedisError> for ChannelError {
    fn from(e: redis::RedisError) -> Self {
        ChannelError::Store(e)
    }
}
