//! The cluster configuration: what Pomelo keeps in `servers.json`, `master.json` and the
//! connector options, as one TOML file, with every field overridable from `SHADDOCK_*`
//! environment variables (how Kubernetes sets a pod's server id and addresses).
//!
//! Layered with figment: the defaults, then the file, then the environment. An error names the
//! key and where its value came from (the file, or the variable).
//!
//! # Layout
//! - [`ClusterConfig`]: the whole file, with defaults that run the chat demo.
//! - [`ServerEntry`]: one server (id, type, public host, client port).
//! - [`env`]: how `SHADDOCK_*` variables map onto fields, in one place.
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

use std::path::Path;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Format, Toml};
use serde::Deserialize;

pub mod env;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A value of the wrong type, an unknown key: the message names the key and its source.
    #[error("invalid config: {0}")]
    Layer(String),
    #[error("{key} is not valid: {value:?} ({why})")]
    Invalid {
        key: String,
        value: String,
        why: &'static str,
    },
}

impl From<figment::Error> for ConfigError {
    fn from(errors: figment::Error) -> Self {
        let messages: Vec<String> = errors.into_iter().map(|e| describe(&e)).collect();
        ConfigError::Layer(messages.join("; "))
    }
}

/// One error, naming the key and, for the environment, the very variable.
fn describe(e: &figment::Error) -> String {
    let mut path = e.path.clone();
    if let figment::error::Kind::UnknownField(field, _) = &e.kind {
        path.push(field.clone());
    }
    let key = path.join(".");
    let from_env = e
        .metadata
        .as_ref()
        .is_some_and(|m| m.name.contains("environment"));
    if from_env && !key.is_empty() {
        format!("{} for key \"{key}\" in {}", e.kind, env::variable_of(&key))
    } else {
        e.to_string()
    }
}

/// A string field set from the environment reads `12345` or `true` as text, not as a
/// number or a bool (figment parses variables by their look).
fn text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Text(String),
        Unsigned(u64),
        Signed(i64),
        Float(f64),
        Bool(bool),
    }
    Ok(match Scalar::deserialize(d)? {
        Scalar::Text(s) => s,
        Scalar::Unsigned(n) => n.to_string(),
        Scalar::Signed(n) => n.to_string(),
        Scalar::Float(n) => n.to_string(),
        Scalar::Bool(b) => b.to_string(),
    })
}

/// Text, or a list of texts joined with commas.
fn text_or_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        Many(Vec<String>),
        One(String),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => s,
        OneOrMany::Many(list) => list.join(","),
    })
}

fn some_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    text(d).map(Some)
}

/// This server's identity from the environment (`SHADDOCK_SERVER_ID`, ...).
#[derive(Debug, Default, Deserialize)]
struct IdentityEnv {
    #[serde(default, deserialize_with = "some_text")]
    server_id: Option<String>,
    #[serde(default, deserialize_with = "some_text")]
    host: Option<String>,
    #[serde(default, deserialize_with = "some_text")]
    bind: Option<String>,
    client_port: Option<u16>,
    admin_port: Option<u16>,
}

/// The whole cluster.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Prefix of every NATS subject and Redis key, so clusters (and tests) never see each other.
    #[serde(deserialize_with = "text")]
    pub namespace: String,
    /// `nats` (NATS + Redis) or `local` (in-process bus and memory store: one process only).
    #[serde(deserialize_with = "text")]
    pub transport: String,
    /// One NATS server, or several of one NATS cluster: comma-separated, or a TOML list
    /// (`["nats://a:4222", "nats://b:4222"]`). The client fails over between them.
    #[serde(deserialize_with = "text_or_list")]
    pub nats_url: String,
    /// One Redis; or the seed nodes of a Redis Cluster, comma-separated or a TOML list (a
    /// list makes a cluster connection).
    #[serde(deserialize_with = "text_or_list")]
    pub redis_url: String,
    /// A Redis Cluster even when `redis_url` names one seed node.
    pub redis_cluster: bool,
    pub connector: FrontendOptions,
    pub gate: FrontendOptions,
    pub limits: Limits,
    pub registry: RegistryOptions,
    pub rpc: RpcOptions,
    pub dictionary: DictionaryOptions,
    pub auth: AuthOptions,
    pub admin: AdminOptions,
    pub history: HistoryOptions,
    pub resume: ResumeOptions,
    pub protobuf: ProtobufOptions,
    pub tls: TlsOptions,
    /// The servers, like Pomelo's `servers.json`.
    pub servers: Vec<ServerEntry>,
}

/// Options of a frontend (gate or connector), Pomelo's `connectorConfig`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FrontendOptions {
    /// Heartbeat interval in seconds, sent in the handshake; 0 disables heartbeats.
    pub heartbeat_secs: u32,
    /// Close a socket this long after its last client heartbeat; 0 means 2 x heartbeat.
    pub heartbeat_timeout_secs: u32,
    /// Send the route dictionary in the handshake.
    pub use_dict: bool,
}

/// Limits that protect a frontend.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest WebSocket message (and so package) a client may send.
    pub max_package_bytes: usize,
    /// Most connections one frontend holds; more are closed at once.
    pub max_connections: usize,
    /// A connection that has not sent its WebSocket upgrade request, or not finished its
    /// Pomelo handshake, by then is closed.
    pub handshake_timeout_ms: u64,
    /// Packages queued for one socket before the client is kicked as too slow.
    pub send_queue: usize,
    /// Requests and notifies one session may send per second, on average (0: no limit).
    pub requests_per_second: u32,
    /// How many may come at once; past it requests are refused, and a session that keeps
    /// sending as many refused requests again is kicked (`{"reason":"flood"}`).
    pub request_burst: u32,
    /// Longest user or room name, in characters.
    pub max_name_chars: usize,
    /// Requests one session may have in flight; more are answered
    /// `{"code":500,"error":"too many requests in flight"}`.
    pub max_in_flight: usize,
    /// Messages one room may have waiting on its chat server; more are refused with
    /// `{"code":500}` (a room is served one message at a time, in order).
    pub room_queue: usize,
    /// Most members one room may have; an enter past it answers
    /// `{"code":500,"error":true,"reason":"the room is full"}` (0: no limit).
    pub max_room_size: usize,
    /// Messages one room takes per second on average, and at once; past it a send answers
    /// `{"code":500,"error":"room rate limit"}` (0: no limit). One sender cannot fill every
    /// member's queue.
    pub room_messages_per_second: u32,
    pub room_burst: u32,
    /// A socket of a frontend without heartbeats (the gate) that sends nothing this long is
    /// closed; 0 keeps it open.
    pub idle_timeout_ms: u64,
    /// On SIGTERM a server drains (kicks its sessions, hands its rooms over) for at most this
    /// long, then its tasks get as long again to finish.
    pub shutdown_grace_ms: u64,
    /// On shutdown a frontend kicks its sessions in batches of this many ...
    pub drain_batch: usize,
    /// ... this far apart, so that their reconnects do not all land at once.
    pub drain_pause_ms: u64,
}

/// The server registry: how often servers announce themselves and when they drop out.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryOptions {
    pub heartbeat_ms: u64,
    pub lapse_ms: u64,
    /// A chat server stopped with SIGTERM keeps serving this long after its goodbye (what
    /// connectors sent it before they heard the goodbye). A room's new owner does not wait a
    /// fixed time: it asks the old owner for a barrier, bounded by the RPC timeout.
    pub handoff_ms: u64,
    /// How often each connector tells each chat server who it really holds, so the store's
    /// membership heals from lost leaves and dead servers (a membership round).
    pub sync_ms: u64,
}

/// Room history, for clients that enter with `recover: true` (see docs/recovery.md).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryOptions {
    /// Off: no offsets and no history kept (a push costs no Redis write); recovery fails.
    pub enabled: bool,
    /// Messages kept per room at most.
    pub size: usize,
    /// A message older than this is no longer recovered.
    pub age_ms: u64,
    /// A room's epoch and offset are forgotten after this long without a message.
    pub meta_ttl_ms: u64,
}

impl Default for HistoryOptions {
    fn default() -> Self {
        Self {
            enabled: true,
            size: 300,
            age_ms: 600_000,
            meta_ttl_ms: 86_400_000,
        }
    }
}

/// Resumable sessions: how long a member whose session closed keeps its place in the room
/// (no `onLeave`; entering again within it, through any connector, takes the place back
/// with no `onAdd`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ResumeOptions {
    /// For sessions closed by a draining connector (kicked with `{"reason":"reconnect"}`).
    pub grace_ms: u64,
    /// For any other close (a dropped socket). 0, the default, is Pomelo's: `onLeave` at once.
    pub abrupt_grace_ms: u64,
}

impl Default for ResumeOptions {
    fn default() -> Self {
        Self {
            grace_ms: 30_000,
            abrupt_grace_ms: 0,
        }
    }
}

/// pomelo-protobuf bodies (Pomelo's `useProtobuf`), for the routes that have a proto.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ProtobufOptions {
    /// A directory holding Pomelo's `serverProtos.json` and `clientProtos.json`; empty (the
    /// default) keeps every body JSON.
    #[serde(deserialize_with = "text")]
    pub dir: String,
}

/// TLS on the client ports of the gate and the connectors: wss, and TLS for raw TCP clients.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsOptions {
    /// PEM certificate chain; empty (the default) serves plain TCP and ws.
    #[serde(deserialize_with = "text")]
    pub cert: String,
    /// PEM private key of that certificate.
    #[serde(deserialize_with = "text")]
    pub key: String,
}

/// Remote calls between servers.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RpcOptions {
    /// A request not answered by then fails (the client sees `{"code":500}`).
    pub timeout_ms: u64,
    /// Pushes and answers a server sends to the same server in the same instant leave in one
    /// NATS message. Off by default: it cut CPU and latency under chat load, but in three of
    /// five runs of 100k connections entering at once many were dropped (see #17's note).
    pub batching: bool,
}

/// The route dictionary sent to clients.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DictionaryOptions {
    /// Handler routes (`type.handler.method`), sorted and numbered from 1.
    pub routes: Vec<String>,
    /// Further routes (usually push routes), numbered after them: Pomelo's `dictionary.json`.
    pub extra: Vec<String>,
}

/// A secret from the config: never shown by `Debug` (configs get logged).
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(#[serde(deserialize_with = "text")] String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Empty means "off" for every option that takes a secret.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "MASKED" })
    }
}

/// Optional login tokens on `enter`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthOptions {
    /// HMAC secret; empty (the default) means no token is asked for.
    pub secret: Secret,
}

/// The admin console on each server's admin port.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AdminOptions {
    /// Bearer token of `/admin`; empty (the default) turns the console off.
    pub token: Secret,
}

/// One server, as in `servers.json`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerEntry {
    pub id: String,
    #[serde(rename = "type")]
    pub server_type: String,
    /// The host clients are told to connect to (the gate hands it out).
    #[serde(default = "default_host")]
    pub host: String,
    /// The address the frontend listens on.
    #[serde(default = "default_bind")]
    pub bind: String,
    /// The WebSocket port of a frontend; 0 picks a free one.
    #[serde(default)]
    pub client_port: Option<u16>,
    /// Port of `/healthz`, `/readyz` and `/metrics`; none by default.
    #[serde(default)]
    pub admin_port: Option<u16>,
}

fn default_host() -> String {
    "127.0.0.1".to_owned()
}
fn default_bind() -> String {
    "0.0.0.0".to_owned()
}

/// The routes of the chat demo's handlers, what Pomelo's dictionary scan would find.
pub const CHAT_HANDLER_ROUTES: [&str; 3] = [
    "chat.chatHandler.send",
    "connector.entryHandler.enter",
    "gate.gateHandler.queryEntry",
];

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            namespace: "shaddock".to_owned(),
            transport: "nats".to_owned(),
            nats_url: "nats://127.0.0.1:4222".to_owned(),
            redis_url: "redis://127.0.0.1:6379".to_owned(),
            redis_cluster: false,
            connector: FrontendOptions::default(),
            gate: FrontendOptions {
                heartbeat_secs: 0,
                ..FrontendOptions::default()
            },
            limits: Limits::default(),
            registry: RegistryOptions::default(),
            rpc: RpcOptions::default(),
            dictionary: DictionaryOptions::default(),
            auth: AuthOptions::default(),
            admin: AdminOptions::default(),
            history: HistoryOptions::default(),
            resume: ResumeOptions::default(),
            protobuf: ProtobufOptions::default(),
            tls: TlsOptions::default(),
            servers: Vec::new(),
        }
    }
}

impl Default for FrontendOptions {
    fn default() -> Self {
        Self {
            heartbeat_secs: 3,
            heartbeat_timeout_secs: 0,
            use_dict: true,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_package_bytes: 64 * 1024,
            max_connections: 10_000,
            handshake_timeout_ms: 10_000,
            send_queue: 1024,
            requests_per_second: 500,
            request_burst: 1000,
            max_name_chars: 64,
            max_in_flight: 128,
            room_queue: 10_000,
            shutdown_grace_ms: 10_000,
            idle_timeout_ms: 30_000,
            max_room_size: 5_000,
            room_messages_per_second: 2_000,
            room_burst: 4_000,
            drain_batch: 500,
            drain_pause_ms: 50,
        }
    }
}

impl Default for RegistryOptions {
    fn default() -> Self {
        Self {
            heartbeat_ms: 1000,
            lapse_ms: 3000,
            handoff_ms: 1000,
            sync_ms: 2000,
        }
    }
}

impl Default for RpcOptions {
    fn default() -> Self {
        Self {
            timeout_ms: 5000,
            batching: false,
        }
    }
}

impl Default for DictionaryOptions {
    fn default() -> Self {
        Self {
            routes: CHAT_HANDLER_ROUTES.iter().map(|s| (*s).to_owned()).collect(),
            extra: Vec::new(),
        }
    }
}

impl FrontendOptions {
    /// The heartbeat interval, if heartbeats are on.
    pub fn heartbeat(&self) -> Option<Duration> {
        (self.heartbeat_secs > 0).then(|| Duration::from_secs(u64::from(self.heartbeat_secs)))
    }

    /// How long a socket may stay silent (no client heartbeat) before it is closed.
    pub fn heartbeat_timeout(&self) -> Option<Duration> {
        let hb = self.heartbeat()?;
        Some(if self.heartbeat_timeout_secs > 0 {
            Duration::from_secs(u64::from(self.heartbeat_timeout_secs))
        } else {
            hb * 2
        })
    }
}

impl ClusterConfig {
    /// Reads a TOML file (if any), applies the environment (see [`env`]), validates.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut layers = Figment::new();
        if let Some(p) = path {
            // A missing file is an error here, not an empty layer as figment would have it.
            std::fs::metadata(p).map_err(|source| ConfigError::Read {
                path: p.display().to_string(),
                source,
            })?;
            layers = layers.merge(Toml::file_exact(p));
        }
        Self::extract(layers.merge(env::cluster()))
    }

    /// The config in `text` alone, without the environment.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Self::extract(Figment::from(Toml::string(text)))
    }

    fn extract(layers: Figment) -> Result<Self, ConfigError> {
        let cfg: Self = layers.extract()?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        check_name("namespace", &self.namespace)?;
        if !matches!(self.transport.as_str(), "nats" | "local") {
            return Err(invalid("transport", &self.transport, "must be nats or local"));
        }
        for s in &self.servers {
            check_name("servers.id", &s.id)?;
            check_name("servers.type", &s.server_type)?;
        }
        if self.limits.max_package_bytes < 64 {
            return Err(invalid(
                "limits.max_package_bytes",
                &self.limits.max_package_bytes.to_string(),
                "must be at least 64",
            ));
        }
        if self.limits.send_queue == 0 {
            return Err(invalid("limits.send_queue", "0", "must be at least 1"));
        }
        Ok(())
    }

    /// Works out which server this process is: `--id` / `SHADDOCK_SERVER_ID`, its entry in
    /// `servers` if any, then `SHADDOCK_HOST`, `SHADDOCK_BIND`, `SHADDOCK_CLIENT_PORT`,
    /// `SHADDOCK_ADMIN_PORT`.
    pub fn identity(&self, server_type: &str, id: Option<String>) -> Result<ServerEntry, ConfigError> {
        let env: IdentityEnv = Figment::from(env::identity()).extract()?;
        let id = id
            .or(env.server_id)
            .or_else(|| {
                // One server of this type in the file: that's us.
                let mut of_type = self.servers.iter().filter(|s| s.server_type == server_type);
                match (of_type.next(), of_type.next()) {
                    (Some(s), None) => Some(s.id.clone()),
                    _ => None,
                }
            })
            .unwrap_or_else(|| format!("{server_type}-server-1"));
        check_name("server id", &id)?;
        let mut me = self
            .servers
            .iter()
            .find(|s| s.id == id)
            .cloned()
            .unwrap_or(ServerEntry {
                id,
                server_type: server_type.to_owned(),
                host: default_host(),
                bind: default_bind(),
                client_port: None,
                admin_port: None,
            });
        if me.server_type != server_type {
            return Err(invalid("server id", &me.id, "names a server of another type"));
        }
        me.host = env.host.unwrap_or(me.host);
        me.bind = env.bind.unwrap_or(me.bind);
        me.client_port = env.client_port.or(me.client_port);
        me.admin_port = env.admin_port.or(me.admin_port);
        Ok(me)
    }

    /// The options of a frontend type.
    pub fn frontend(&self, server_type: &str) -> &FrontendOptions {
        if server_type == "gate" {
            &self.gate
        } else {
            &self.connector
        }
    }
}

fn invalid(key: &str, value: &str, why: &'static str) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        value: value.to_owned(),
        why,
    }
}

/// Names that end up in NATS subjects and Redis keys: letters, digits, `-` and `_` only.
pub fn check_name(key: &str, v: &str) -> Result<(), ConfigError> {
    let ok = !v.is_empty()
        && v.len() <= 128
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(invalid(key, v, "use letters, digits, '-' and '_' (at most 128)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use figment::Jail;

    const FILE: &str = r#"
namespace = "test"
[connector]
heartbeat_secs = 1
[[servers]]
id = "connector-server-1"
type = "connector"
host = "chat.example.com"
client_port = 3050
"#;

    /// Runs `check` in a jail: its own directory and environment variables.
    #[allow(clippy::result_large_err)] // figment's own error type, in tests only
    fn jailed(check: impl FnOnce(&mut Jail) -> Result<(), String>) {
        Jail::expect_with(|jail| check(jail).map_err(figment::Error::from));
    }

    #[test]
    fn a_server_finds_its_entry_by_id_and_env_overrides_it() {
        jailed(|jail| {
            jail.set_env("SHADDOCK_CLIENT_PORT", "0");
            let cfg = ClusterConfig::from_toml(FILE).map_err(|e| e.to_string())?;
            let me = cfg.identity("connector", None).map_err(|e| e.to_string())?;
            assert_eq!(me.id, "connector-server-1");
            assert_eq!(me.host, "chat.example.com");
            assert_eq!(me.client_port, Some(0));
            assert_eq!(cfg.connector.heartbeat_timeout(), Some(Duration::from_secs(2)));
            Ok(())
        });
    }

    #[test]
    fn nats_url_takes_one_server_or_a_list_of_a_cluster() {
        let one = ClusterConfig::from_toml("nats_url = \"nats://a:4222\"").unwrap();
        assert_eq!(one.nats_url, "nats://a:4222");
        let list = ClusterConfig::from_toml("nats_url = [\"nats://a:4222\", \"nats://b:4222\"]").unwrap();
        assert_eq!(list.nats_url, "nats://a:4222,nats://b:4222");
    }

    #[test]
    fn redis_url_takes_one_server_or_the_seeds_of_a_cluster() {
        let one = ClusterConfig::from_toml("redis_url = \"redis://a:6379\"").unwrap();
        assert!(!one.redis_cluster);
        let list = ClusterConfig::from_toml("redis_url = [\"redis://a:7000\", \"redis://b:7000\"]").unwrap();
        assert_eq!(list.redis_url, "redis://a:7000,redis://b:7000");
        let seed = ClusterConfig::from_toml("redis_url = \"redis://a:7000\"\nredis_cluster = true").unwrap();
        assert!(seed.redis_cluster);
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(ClusterConfig::from_toml("nonsense = 1").is_err());
    }

    #[test]
    fn ids_that_would_escape_a_subject_are_refused() {
        jailed(|_| {
            let cfg = ClusterConfig::default();
            assert!(cfg.identity("chat", Some("a.b".into())).is_err());
            assert!(cfg.identity("chat", Some("a>".into())).is_err());
            assert!(cfg.identity("chat", Some("chat-2".into())).is_ok());
            Ok(())
        });
    }

    #[test]
    fn the_environment_overrides_the_file_by_short_names_and_by_path() {
        jailed(|jail| {
            jail.create_file("cluster.toml", FILE)
                .map_err(|e| e.to_string())?;
            jail.set_env("SHADDOCK_NAMESPACE", "ns1");
            jail.set_env("SHADDOCK_RPC_TIMEOUT_MS", "250");
            jail.set_env("SHADDOCK_LIMITS__SEND_QUEUE", "7");
            jail.set_env("SHADDOCK_CONNECTOR__USE_DICT", "false");
            jail.set_env("SHADDOCK_REGISTRY__HANDOFF_MS", "20");
            jail.set_env("SHADDOCK_SERVER_ID", "connector-server-1");
            jail.set_env("SHADDOCK_CONFIG", "cluster.toml");
            let cfg = ClusterConfig::load(Some(Path::new("cluster.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(cfg.namespace, "ns1");
            assert_eq!(cfg.rpc.timeout_ms, 250);
            assert_eq!(cfg.limits.send_queue, 7);
            assert!(!cfg.connector.use_dict);
            assert_eq!(cfg.connector.heartbeat_secs, 1, "the file's value stays");
            assert_eq!(cfg.registry.handoff_ms, 20);
            Ok(())
        });
    }

    #[test]
    fn a_bad_value_is_an_error_naming_the_key_and_the_variable() {
        jailed(|jail| {
            jail.set_env("SHADDOCK_RPC_TIMEOUT_MS", "soon");
            let e = ClusterConfig::load(None).unwrap_err().to_string();
            assert!(e.contains("\"rpc.timeout_ms\" in SHADDOCK_RPC_TIMEOUT_MS"), "{e}");
            Ok(())
        });
        jailed(|jail| {
            jail.set_env("SHADDOCK_LIMITS__NO_SUCH_THING", "1");
            let e = ClusterConfig::load(None).unwrap_err().to_string();
            assert!(e.contains("SHADDOCK_LIMITS__NO_SUCH_THING"), "{e}");
            Ok(())
        });
        jailed(|jail| {
            jail.create_file("bad.toml", "[limits]\nsend_queue = \"many\"\n")
                .map_err(|e| e.to_string())?;
            let e = ClusterConfig::load(Some(Path::new("bad.toml")))
                .unwrap_err()
                .to_string();
            assert!(e.contains("limits.send_queue") && e.contains("bad.toml"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn a_string_field_takes_a_value_that_looks_like_a_number() {
        jailed(|jail| {
            jail.set_env("SHADDOCK_ADMIN_TOKEN", "12345");
            jail.set_env("SHADDOCK_NAMESPACE", "2026");
            jail.set_env("SHADDOCK_HOST", "10.0.0.1");
            let cfg = ClusterConfig::load(None).map_err(|e| e.to_string())?;
            assert_eq!(cfg.admin.token.expose(), "12345");
            assert_eq!(cfg.namespace, "2026");
            assert_eq!(
                cfg.identity("chat", None).map_err(|e| e.to_string())?.host,
                "10.0.0.1"
            );
            Ok(())
        });
    }

    #[test]
    fn an_empty_variable_counts_as_unset() {
        jailed(|jail| {
            jail.set_env("SHADDOCK_ADMIN_PORT", "");
            jail.set_env("SHADDOCK_MAX_CONNECTIONS", "");
            let cfg = ClusterConfig::load(None).map_err(|e| e.to_string())?;
            assert_eq!(cfg.limits.max_connections, Limits::default().max_connections);
            let me = cfg.identity("chat", None).map_err(|e| e.to_string())?;
            assert_eq!(me.admin_port, None);
            Ok(())
        });
    }

    #[test]
    fn a_missing_file_is_an_error() {
        let e = ClusterConfig::load(Some(Path::new("/nonexistent/cluster.toml"))).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }));
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        jailed(|jail| {
            jail.set_env("SHADDOCK_AUTH_SECRET", "hunter2");
            let cfg = ClusterConfig::load(None).map_err(|e| e.to_string())?;
            assert_eq!(cfg.auth.secret.expose(), "hunter2");
            assert!(!format!("{cfg:?}").contains("hunter2"));
            Ok(())
        });
    }

    #[test]
    fn the_gate_has_no_heartbeat_by_default() {
        let cfg = ClusterConfig::default();
        assert_eq!(cfg.frontend("gate").heartbeat(), None);
        assert_eq!(
            cfg.frontend("connector").heartbeat(),
            Some(Duration::from_secs(3))
        );
    }
}
