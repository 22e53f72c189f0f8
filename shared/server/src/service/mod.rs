//! The services every frontend has, as in Pomelo's `lib/common/service/`.

pub mod outbox;
pub mod session_service;
