//! End-to-end tests: real binaries, real NATS (127.0.0.1:4222) and Redis (127.0.0.1:6379),
//! a private namespace per test, driven by a Pomelo-protocol client.

mod admin;
mod bad_input;
mod browser;
mod chaos;
mod cluster;
mod connector;
mod faults;
mod game_clients;
mod limits;
mod membership;
mod order;
mod recovery;
mod redis_cluster;
mod rolling;
mod support;
