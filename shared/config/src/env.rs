//! The environment variables that override the config file, in one place.

pub const NAMESPACE: &str = "SHADDOCK_NAMESPACE";
pub const TRANSPORT: &str = "SHADDOCK_TRANSPORT";
pub const NATS_URL: &str = "SHADDOCK_NATS_URL";
pub const REDIS_URL: &str = "SHADDOCK_REDIS_URL";
pub const SERVER_ID: &str = "SHADDOCK_SERVER_ID";
pub const HOST: &str = "SHADDOCK_HOST";
pub const BIND: &str = "SHADDOCK_BIND";
pub const CLIENT_PORT: &str = "SHADDOCK_CLIENT_PORT";
pub const ADMIN_PORT: &str = "SHADDOCK_ADMIN_PORT";
pub const HEARTBEAT_SECS: &str = "SHADDOCK_HEARTBEAT_SECS";
pub const RPC_TIMEOUT_MS: &str = "SHADDOCK_RPC_TIMEOUT_MS";
pub const REGISTRY_LAPSE_MS: &str = "SHADDOCK_REGISTRY_LAPSE_MS";
pub const MAX_CONNECTIONS: &str = "SHADDOCK_MAX_CONNECTIONS";
pub const REQUESTS_PER_SECOND: &str = "SHADDOCK_REQUESTS_PER_SECOND";
pub const AUTH_SECRET: &str = "SHADDOCK_AUTH_SECRET";
pub const ADMIN_TOKEN: &str = "SHADDOCK_ADMIN_TOKEN";
