//! How the environment maps onto the config, in one place.
//!
//! Every field can be set as `SHADDOCK_<PATH>`, where a path's parts are joined by `__`:
//! `SHADDOCK_NAMESPACE`, `SHADDOCK_LIMITS__MAX_CONNECTIONS`, `SHADDOCK_CONNECTOR__USE_DICT`.
//! The short names the first releases documented stay as aliases, and a few variables are
//! about this one server or the process rather than the cluster: they are not config fields.

use figment::providers::Env;

/// The prefix of every variable.
pub const PREFIX: &str = "SHADDOCK_";

/// Short names (after the prefix, lower case) and the field each one sets.
pub const ALIASES: [(&str, &str); 10] = [
    ("heartbeat_secs", "connector.heartbeat_secs"),
    ("rpc_timeout_ms", "rpc.timeout_ms"),
    ("registry_lapse_ms", "registry.lapse_ms"),
    ("max_connections", "limits.max_connections"),
    ("requests_per_second", "limits.requests_per_second"),
    ("auth_secret", "auth.secret"),
    ("admin_token", "admin.token"),
    ("protobuf_dir", "protobuf.dir"),
    ("tls_cert", "tls.cert"),
    ("tls_key", "tls.key"),
];

/// This server's identity (`SHADDOCK_SERVER_ID`, `SHADDOCK_HOST`, ...): see
/// `ClusterConfig::identity`.
pub const IDENTITY: [&str; 5] = ["server_id", "host", "bind", "client_port", "admin_port"];

/// Read by the binaries themselves, not config fields.
pub const PROCESS: [&str; 3] = ["config", "web_port", "web_bind"];

/// The cluster-wide variables: aliases resolved, `__` as the path separator.
pub fn cluster() -> Env {
    Env::prefixed(PREFIX)
        .filter(|key| is_set(key.as_str()))
        .ignore(&IDENTITY)
        .ignore(&PROCESS)
        .map(|key| {
            let key = key.as_str();
            match ALIASES.iter().find(|(alias, _)| key.eq_ignore_ascii_case(alias)) {
                Some((_, path)) => (*path).into(),
                None => key.replace("__", ".").into(),
            }
        })
        .lowercase(true)
}

/// The variables of this server's identity.
pub fn identity() -> Env {
    Env::prefixed(PREFIX)
        .filter(|key| is_set(key.as_str()))
        .only(&IDENTITY)
}

/// An empty variable counts as unset (`SHADDOCK_AUTH_SECRET=` in a manifest means "off").
fn is_set(key: &str) -> bool {
    let name = format!("{PREFIX}{}", key.to_uppercase());
    std::env::var_os(name).is_none_or(|v| !v.is_empty())
}

/// The variable that set `key` (a dotted path): its short name if that one is set.
pub fn variable_of(key: &str) -> String {
    let alias = ALIASES.iter().find(|(alias, path)| {
        *path == key && std::env::var_os(format!("{PREFIX}{}", alias.to_uppercase())).is_some()
    });
    match alias {
        Some((alias, _)) => format!("{PREFIX}{}", alias.to_uppercase()),
        None => format!("{PREFIX}{}", key.replace('.', "__").to_uppercase()),
    }
}
