//! The remotes every server of a kind serves, as in Pomelo's `lib/common/remote/`.

pub mod session_remote;
