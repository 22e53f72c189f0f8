//! A whole cluster inside the test process, in the style of zero2prod's `spawn_app`: a gate,
//! connectors and chat servers as tasks of this runtime, on the shared NATS and Redis under a
//! private namespace, or on the embedded bus and memory store. Clients still speak the Pomelo
//! protocol over real WebSockets. Tests that kill or pause a process use [`crate::Server`].

use std::time::Duration;

use serde_json::{Value, json};
use shaddock_bus::Bus;
use shaddock_channel::ChannelStore;
use shaddock_client::{Client, ClientOptions, Push};
use shaddock_config::{ClusterConfig, ServerEntry};
use shaddock_server::App;
use tokio_util::sync::CancellationToken;

use crate::eventually::eventually;

const ENTER: &str = "connector.entryHandler.enter";
const SEND: &str = "chat.chatHandler.send";
const QUERY_ENTRY: &str = "gate.gateHandler.queryEntry";
/// How long a user waits for what it should see.
const SEE_WITHIN: Duration = Duration::from_secs(10);

/// Where the servers of an in-process cluster talk to each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backing {
    /// The machine's NATS and Redis, under a namespace of this test's own.
    Shared,
    /// One in-process bus and a memory store (what `shaddock all` runs on).
    Embedded,
}

/// What to start.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    pub chats: usize,
    pub connectors: usize,
    pub backing: Backing,
    /// TOML appended to the test config (sections such as `[limits]`).
    pub extra: String,
    /// How the cluster's own helper clients connect (`tls` set: over `wss://`).
    pub client: ClientOptions,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        Self {
            chats: 1,
            connectors: 1,
            backing: Backing::Shared,
            extra: String::new(),
            client: ClientOptions::default(),
        }
    }
}

/// A running in-process cluster; stopped when dropped.
#[derive(Debug)]
pub struct TestCluster {
    pub namespace: String,
    /// The gate's client port.
    pub gate: u16,
    /// Each connector's client port, in id order.
    pub connectors: Vec<u16>,
    apps: Vec<App>,
    token: CancellationToken,
    client: ClientOptions,
}

/// Starts `spec`'s servers (chat servers first, then connectors, then the gate) and returns
/// once the gate knows every connector.
pub async fn spawn_cluster(spec: ClusterSpec) -> TestCluster {
    let namespace = crate::namespace("inproc");
    let text = format!(
        "namespace = \"{namespace}\"\n\
         [registry]\nheartbeat_ms = 200\nlapse_ms = 1200\nhandoff_ms = 500\nsync_ms = 500\n\
         [rpc]\ntimeout_ms = 2000\n{}\n",
        spec.extra
    );
    let mut config = ClusterConfig::from_toml(&text).expect("test config");
    let embedded = spec.backing == Backing::Embedded;
    if embedded {
        config.transport = "local".into();
    }
    let (bus, store) = (Bus::local(), ChannelStore::memory());
    let history = shaddock_history::History::memory(shaddock_history::Retention::default());
    let token = CancellationToken::new();
    let mut cluster = TestCluster {
        namespace,
        gate: 0,
        connectors: Vec::new(),
        apps: Vec::new(),
        token: token.clone(),
        client: spec.client.clone(),
    };
    let entry = |id: String, server_type: &str| ServerEntry {
        id,
        server_type: server_type.into(),
        host: "127.0.0.1".into(),
        bind: "127.0.0.1".into(),
        client_port: Some(0),
        admin_port: None,
    };
    let mut servers: Vec<ServerEntry> = (1..=spec.chats)
        .map(|i| entry(format!("chat-server-{i}"), "chat"))
        .collect();
    servers.extend((1..=spec.connectors).map(|i| entry(format!("connector-server-{i}"), "connector")));
    servers.push(entry("gate-server-1".into(), "gate"));
    for me in servers {
        let app = if embedded {
            App::with_bus(config.clone(), me.clone(), bus.clone(), token.child_token())
        } else {
            let app = App::connect(config.clone(), me.clone()).await.expect("nats");
            let child = token.child_token();
            let stop = app.token.clone();
            tokio::spawn(async move {
                child.cancelled().await;
                stop.cancel();
            });
            app
        };
        match me.server_type.as_str() {
            "chat" => {
                let (store, history) = if embedded {
                    (store.clone(), history.clone())
                } else {
                    let store = shaddock_chat::connect_store(&app).await.expect("redis");
                    let history = shaddock_chat::connect_history(&app.config).await.expect("redis");
                    (store, history)
                };
                shaddock_chat::start(&app, store, history)
                    .await
                    .expect("chat server");
            }
            "connector" => {
                let fe = shaddock_connector::start(&app).await.expect("connector");
                cluster.connectors.push(fe.port());
            }
            _ => {
                let fe = shaddock_gate::start(&app).await.expect("gate");
                cluster.gate = fe.port();
            }
        }
        cluster.apps.push(app);
    }
    cluster.wait_for_connectors(spec.connectors).await;
    cluster
}

impl TestCluster {
    /// `ws://127.0.0.1:<port>` of connector `i` (0-based).
    pub fn connector_url(&self, i: usize) -> String {
        format!("ws://127.0.0.1:{}", self.connectors[i])
    }

    /// Asks the gate for `name`'s connector, as chatofpomelo's client does.
    pub async fn query_entry(&self, name: &str) -> Value {
        let gate = self.connect(self.gate).await;
        let entry = gate
            .request(QUERY_ENTRY, json!({ "uid": name }))
            .await
            .expect("queryEntry answers");
        gate.close();
        entry
    }

    /// A client of the frontend on `port`, as the spec's client options say.
    async fn connect(&self, port: u16) -> Client {
        let scheme = if self.client.tls.is_some() { "wss" } else { "ws" };
        Client::connect(&format!("{scheme}://127.0.0.1:{port}"), self.client.clone())
            .await
            .expect("connect")
    }

    async fn wait_for_connectors(&self, n: usize) {
        eventually(
            "the gate sees every connector",
            Duration::from_secs(10),
            || async {
                let mut ports = std::collections::BTreeSet::new();
                for i in 0..(4 * n.max(1)) {
                    if let Some(p) = self.query_entry(&format!("probe{i}")).await["port"].as_u64() {
                        ports.insert(p);
                    }
                }
                (ports.len() >= n).then_some(())
            },
        )
        .await;
    }

    /// A user that has asked the gate for its connector and connected to it.
    pub async fn user(&self, name: &str) -> TestUser {
        let entry = self.query_entry(name).await;
        let port = entry["port"]
            .as_u64()
            .unwrap_or_else(|| panic!("the gate has no connector for {name}: {entry}"));
        TestUser {
            name: name.to_owned(),
            room: String::new(),
            client: self.connect(port as u16).await,
        }
    }

    /// Stops every server as SIGTERM would (drain, then cancel).
    pub async fn stop(mut self) {
        let apps = std::mem::take(&mut self.apps);
        futures_util::future::join_all(apps.into_iter().map(App::shutdown)).await;
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// One chat user, with verbs that read as the behaviour under test.
#[derive(Debug)]
pub struct TestUser {
    pub name: String,
    pub room: String,
    pub client: Client,
}

impl TestUser {
    /// Enters `room`; returns who is in it (sorted), or panics with the refusal.
    pub async fn enters(&mut self, room: &str) -> Vec<String> {
        let answer = self.tries_to_enter(room).await;
        let mut users: Vec<String> = answer["users"]
            .as_array()
            .unwrap_or_else(|| panic!("{} could not enter {room}: {answer}", self.name))
            .iter()
            .filter_map(|u| u.as_str().map(str::to_owned))
            .collect();
        users.sort();
        self.room = room.to_owned();
        users
    }

    /// Sends `enter` and returns the answer as it is.
    pub async fn tries_to_enter(&self, room: &str) -> Value {
        self.client
            .request(ENTER, json!({"username": self.name, "rid": room}))
            .await
            .expect("enter answers")
    }

    /// Says `text` to everyone in the room.
    pub async fn says(&self, text: &str) {
        self.send(text, "*").await;
    }

    /// Says `text` to `to` only.
    pub async fn whispers(&self, to: &str, text: &str) {
        self.send(text, to).await;
    }

    async fn send(&self, text: &str, target: &str) {
        let msg = json!({"rid": self.room, "content": text, "from": self.name, "target": target});
        let answer = self.client.request(SEND, msg).await.expect("send answers");
        assert_eq!(answer, json!({}), "{} could not send {text:?}", self.name);
    }

    /// Waits until `from`'s `text` arrives (skipping other pushes); panics if it never does.
    pub async fn sees(&mut self, from: &str, text: &str) {
        let want =
            |p: &Push| p.route == "onChat" && p.body["from"] == json!(from) && p.body["msg"] == json!(text);
        self.waits_for(&format!("{from}: {text}"), want).await;
    }

    /// Waits until `name` is announced as having entered the room.
    pub async fn sees_enter(&mut self, name: &str) {
        self.waits_for(&format!("{name} entered"), |p| {
            p.route == "onAdd" && p.body["user"] == json!(name)
        })
        .await;
    }

    /// Waits until `name` is announced as having left the room.
    pub async fn sees_leave(&mut self, name: &str) {
        self.waits_for(&format!("{name} left"), |p| {
            p.route == "onLeave" && p.body["user"] == json!(name)
        })
        .await;
    }

    /// The pushes that arrive within `quiet` (for asserting that nothing more comes).
    pub async fn pushes_within(&mut self, quiet: Duration) -> Vec<Push> {
        self.client.pushes_within(quiet).await
    }

    async fn waits_for(&mut self, what: &str, want: impl Fn(&Push) -> bool) {
        let deadline = tokio::time::Instant::now() + SEE_WITHIN;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.client.next_push(left).await {
                Some(p) if want(&p) => return,
                Some(_) => {}
                None => panic!("{} never saw {what}", self.name),
            }
        }
    }

    /// Closes the connection, as a closed browser tab does.
    pub fn leaves(self) {
        self.client.close();
    }
}
