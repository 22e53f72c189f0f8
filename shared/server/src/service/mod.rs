//! The services every frontend has, as in Pomelo's `lib/common/service/`.

pub mod outbox;
pub mod push_numbers;
pub mod session_service;
