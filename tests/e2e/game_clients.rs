//! Game clients: pomelo-protobuf bodies (chatofpomelo's `onChat` proto and more), checked
//! against the reference package's bytes. The servers run in this process.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use shaddock_client::tokio_tungstenite::{connect_async, tungstenite::Message};
use shaddock_client::{Client, ClientOptions};
use shaddock_e2e::{ClusterSpec, TestCluster, spawn_cluster};
use shaddock_protobuf::Protos;
use shaddock_protocol::handshake::HandshakeRequest;
use shaddock_protocol::message::{self, MessageType, RouteRef};
use shaddock_protocol::package::{self, PackageType};

use crate::support::{ENTER, SEND, enter, receives_push, users};

/// chatofpomelo's server proto (`onChat`, as the reference vectors have it), an answer proto
/// for `enter`, and a client proto for `send`.
const SERVER_PROTOS: &str = r#"{
  "onChat": {"required string msg": 1, "required string from": 2, "required string target": 3},
  "connector.entryHandler.enter": {"repeated string users": 1}
}"#;
const CLIENT_PROTOS: &str = r#"{
  "chat.chatHandler.send": {"required string rid": 1, "required string content": 2,
    "required string from": 3, "required string target": 4}
}"#;

/// A directory with the two proto files, removed when dropped.
struct ProtoDir(PathBuf);

impl ProtoDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(shaddock_e2e::namespace("protos"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("serverProtos.json"), SERVER_PROTOS).unwrap();
        std::fs::write(dir.join("clientProtos.json"), CLIENT_PROTOS).unwrap();
        Self(dir)
    }
}

impl Drop for ProtoDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn protobuf_cluster(dir: &ProtoDir) -> (TestCluster, Arc<Protos>) {
    let cluster = spawn_cluster(ClusterSpec {
        extra: format!("[protobuf]\ndir = \"{}\"\n", dir.0.display()),
        ..ClusterSpec::default()
    })
    .await;
    (cluster, Arc::new(Protos::load(&dir.0).unwrap()))
}

async fn protobuf_client(url: &str, protos: &Arc<Protos>) -> Client {
    let options = ClientOptions {
        protos: Some(protos.clone()),
        ..ClientOptions::default()
    };
    Client::connect(url, options).await.expect("connect")
}

#[tokio::test]
async fn with_protos_requests_answers_and_pushes_are_protobuf_and_other_routes_stay_json() {
    let dir = ProtoDir::new();
    let (cluster, protos) = protobuf_cluster(&dir).await;
    let url = cluster.connector_url(0);

    let mut alice = protobuf_client(&url, &protos).await;
    let hs = alice.handshake();
    assert!(hs.use_proto);
    assert_eq!(hs.protos_version.as_deref(), Some(protos.version()));
    // The enter answer went as protobuf (`repeated string users`) and decodes back.
    assert_eq!(users(&enter(&alice, "alice", "pb").await), vec!["alice"]);

    let bob = protobuf_client(&url, &protos).await;
    assert_eq!(users(&enter(&bob, "bob", "pb").await), vec!["alice", "bob"]);
    // onAdd has no proto: JSON, as the client reads it without one.
    assert!(
        receives_push(&mut alice, Duration::from_secs(5), |p| p.route == "onAdd"
            && p.body["user"] == "bob")
        .await
    );

    // A raw socket sees the bytes: onChat as the reference encoder writes it.
    let mut raw = RawSocket::connect(&url).await;
    raw.enter("carol", "pb").await;
    let sent = bob
        .request(
            SEND,
            json!({"rid": "pb", "content": "hi", "from": "bob", "target": "*"}),
        )
        .await
        .unwrap();
    // `send` answers `{}`, and `{}` has no field of a proto: nothing here has one.
    assert_eq!(sent, json!({}));
    assert!(
        receives_push(&mut alice, Duration::from_secs(5), |p| p.route == "onChat"
            && p.body == json!({"msg": "hi", "from": "bob", "target": "*"}))
        .await
    );
    let body = raw.push_body("onChat").await;
    assert_eq!(hex(&body), "0a0268691203626f621a012a");
}

#[tokio::test]
async fn a_client_that_already_holds_the_protos_is_not_sent_them_again() {
    let dir = ProtoDir::new();
    let (cluster, protos) = protobuf_cluster(&dir).await;
    let body = format!(
        r#"{{"sys":{{"type":"js-websocket","version":"0.0.1","rsa":{{}},"protoVersion":"{}"}}}}"#,
        protos.version()
    );
    let options = ClientOptions {
        handshake_body: Some(body),
        protos: Some(protos.clone()),
        ..ClientOptions::default()
    };
    let client = Client::connect(&cluster.connector_url(0), options).await.unwrap();
    assert!(client.handshake().use_proto);
    assert_eq!(client.handshake().protos_version, None);
}

#[tokio::test]
async fn a_malformed_protobuf_request_is_answered_with_an_error_and_the_socket_stays() {
    let dir = ProtoDir::new();
    let (cluster, protos) = protobuf_cluster(&dir).await;
    let url = cluster.connector_url(0);
    let mut raw = RawSocket::connect(&url).await;
    raw.enter("dave", "pb2").await;
    // `send` has a client proto: a length past the end is refused, with an answer.
    let pkg = message::data_package(
        MessageType::Request,
        9,
        Some(&RouteRef::Name(SEND.into())),
        b"\x0a\x40ab",
    )
    .unwrap();
    raw.send(pkg).await;
    let answer = raw.response(9).await;
    assert_eq!(
        serde_json::from_slice::<Value>(&answer).unwrap(),
        json!({"code": 500, "error": "bad protobuf body"})
    );
    // Still served afterwards.
    let client = protobuf_client(&url, &protos).await;
    assert_eq!(users(&enter(&client, "erin", "pb2").await), vec!["dave", "erin"]);
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A WebSocket client that keeps the bytes: handshake, ack, JSON requests, raw reads.
struct RawSocket {
    ws: shaddock_client::tokio_tungstenite::WebSocketStream<
        shaddock_client::tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

impl RawSocket {
    async fn connect(url: &str) -> Self {
        let (mut ws, _) = connect_async(url).await.unwrap();
        let hs = HandshakeRequest::js_client_body(None);
        let pkg = package::encoded(PackageType::Handshake, hs.as_bytes()).unwrap();
        ws.send(Message::Binary(pkg)).await.unwrap();
        let mut me = Self { ws };
        me.next_package(PackageType::Handshake).await;
        me.send(Bytes::from_static(&package::HANDSHAKE_ACK)).await;
        me
    }

    async fn send(&mut self, bytes: Bytes) {
        self.ws.send(Message::Binary(bytes)).await.unwrap();
    }

    async fn enter(&mut self, name: &str, rid: &str) {
        let body = json!({"username": name, "rid": rid}).to_string();
        let route = RouteRef::Name(ENTER.into());
        let pkg = message::data_package(MessageType::Request, 1, Some(&route), body.as_bytes()).unwrap();
        self.send(pkg).await;
        self.response(1).await;
    }

    /// The body of the next package of `kind`.
    async fn next_package(&mut self, kind: PackageType) -> Vec<u8> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let frame = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .expect("a package in time")
                .expect("open")
                .expect("a frame");
            let Message::Binary(b) = frame else { continue };
            for pkg in package::decode_all(&b) {
                let pkg = pkg.unwrap();
                if pkg.kind == kind {
                    return pkg.body.to_vec();
                }
            }
        }
    }

    async fn response(&mut self, id: u32) -> Vec<u8> {
        loop {
            let data = self.next_package(PackageType::Data).await;
            let msg = message::decode(&data).unwrap();
            if msg.kind == MessageType::Response && msg.id == id {
                return msg.body.to_vec();
            }
        }
    }

    async fn push_body(&mut self, route: &str) -> Vec<u8> {
        loop {
            let data = self.next_package(PackageType::Data).await;
            let msg = message::decode(&data).unwrap();
            if msg.kind == MessageType::Push && matches!(&msg.route, Some(RouteRef::Name(n)) if n == route) {
                return msg.body.to_vec();
            }
        }
    }
}

/// The cluster's gate and first connector as `tcp://` URLs (the same ports as WebSocket).
fn tcp_urls(cluster: &TestCluster) -> (String, String) {
    let ws = cluster.connector_url(0);
    (
        format!("tcp://127.0.0.1:{}", cluster.gate),
        ws.replacen("ws://", "tcp://", 1),
    )
}

#[tokio::test]
async fn a_raw_tcp_client_and_a_websocket_client_chat_both_ways_on_one_port() {
    let cluster = spawn_cluster(ClusterSpec {
        extra: "[connector]\nheartbeat_secs = 1\n".into(),
        ..ClusterSpec::default()
    })
    .await;
    let (gate, connector) = tcp_urls(&cluster);
    // The gate answers a TCP client too.
    let g = Client::connect(&gate, ClientOptions::default()).await.unwrap();
    let entry = g
        .request("gate.gateHandler.queryEntry", json!({"uid": "tom"}))
        .await
        .unwrap();
    assert_eq!(entry["code"], 200, "{entry}");
    assert_eq!(
        format!("tcp://{}:{}", entry["host"].as_str().unwrap(), entry["port"]),
        connector
    );

    let mut tom = Client::connect(&connector, ClientOptions::default())
        .await
        .unwrap();
    assert_eq!(tom.handshake().heartbeat_secs, Some(1));
    assert_eq!(users(&enter(&tom, "tom", "mixed").await), vec!["tom"]);
    let mut wendy = crate::support::connect(&cluster.connector_url(0)).await;
    assert_eq!(
        users(&enter(&wendy, "wendy", "mixed").await),
        vec!["tom", "wendy"]
    );
    assert!(receives_push(&mut tom, Duration::from_secs(5), |p| p.route == "onAdd").await);

    // Past two heartbeat periods, the TCP session is alive: heartbeats went both ways.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(!tom.is_closed());
    assert!(tom.heartbeats_seen() >= 2, "{}", tom.heartbeats_seen());

    let chat = |from: &str, text: &str| json!({"rid": "mixed", "content": text, "from": from, "target": "*"});
    tom.request(SEND, chat("tom", "from tcp")).await.unwrap();
    assert!(
        receives_push(&mut wendy, Duration::from_secs(5), |p| p.route == "onChat"
            && p.body["msg"] == "from tcp")
        .await
    );
    wendy.request(SEND, chat("wendy", "from ws")).await.unwrap();
    assert!(
        receives_push(&mut tom, Duration::from_secs(5), |p| p.route == "onChat"
            && p.body["msg"] == "from ws"
            && p.body["from"] == "wendy")
        .await
    );

    // Its close is a leave like any other.
    tom.close();
    assert!(
        receives_push(&mut wendy, Duration::from_secs(5), |p| p.route == "onLeave"
            && p.body["user"] == "tom")
        .await
    );
}

#[tokio::test]
async fn a_raw_tcp_client_that_stops_heartbeating_or_sends_a_bad_package_is_closed() {
    let cluster = spawn_cluster(ClusterSpec {
        extra: "[connector]\nheartbeat_secs = 1\n".into(),
        ..ClusterSpec::default()
    })
    .await;
    let (_, connector) = tcp_urls(&cluster);
    let silent = Client::connect(
        &connector,
        ClientOptions {
            heartbeat: false,
            ..ClientOptions::default()
        },
    )
    .await
    .unwrap();
    assert!(silent.closed_within(Duration::from_secs(5)).await);

    let bad = Client::connect(&connector, ClientOptions::default())
        .await
        .unwrap();
    bad.send_raw(Bytes::from_static(&[9, 0, 0, 0])).unwrap();
    assert!(bad.closed_within(Duration::from_secs(5)).await);
}

/// A self-signed certificate for 127.0.0.1, written as PEM files; removed when dropped.
struct SelfSigned {
    dir: PathBuf,
    der: Vec<u8>,
}

impl SelfSigned {
    fn new() -> Self {
        let rcgen::CertifiedKey { cert, key_pair } =
            rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        let dir = std::env::temp_dir().join(shaddock_e2e::namespace("tls"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), key_pair.serialize_pem()).unwrap();
        Self {
            dir,
            der: cert.der().to_vec(),
        }
    }

    fn config(&self) -> String {
        format!(
            "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
            self.dir.join("cert.pem").display(),
            self.dir.join("key.pem").display()
        )
    }

    /// A client config that trusts this certificate only.
    fn client(&self) -> Arc<tokio_rustls::rustls::ClientConfig> {
        let mut roots = tokio_rustls::rustls::RootCertStore::empty();
        roots
            .add(tokio_rustls::rustls::pki_types::CertificateDer::from(
                self.der.clone(),
            ))
            .unwrap();
        let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(Arc::new(
            tokio_rustls::rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        Arc::new(config)
    }
}

impl Drop for SelfSigned {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn with_tls_on_wss_and_tls_over_tcp_chat_on_one_port_and_plain_clients_get_nothing() {
    let cert = SelfSigned::new();
    let options = ClientOptions {
        tls: Some(cert.client()),
        ..ClientOptions::default()
    };
    let cluster = spawn_cluster(ClusterSpec {
        extra: cert.config(),
        client: options.clone(),
        ..ClusterSpec::default()
    })
    .await;
    let port = cluster.connectors[0];
    let gate = Client::connect(&format!("wss://127.0.0.1:{}", cluster.gate), options.clone())
        .await
        .unwrap();
    let entry = gate
        .request("gate.gateHandler.queryEntry", json!({"uid": "sam"}))
        .await
        .unwrap();
    assert_eq!(entry["port"], port, "{entry}");

    let mut sam = Client::connect(&format!("tls://127.0.0.1:{port}"), options.clone())
        .await
        .unwrap();
    assert_eq!(users(&enter(&sam, "sam", "secure").await), vec!["sam"]);
    let mut wes = Client::connect(&format!("wss://127.0.0.1:{port}/"), options.clone())
        .await
        .unwrap();
    assert_eq!(users(&enter(&wes, "wes", "secure").await), vec!["sam", "wes"]);
    let chat =
        |from: &str, text: &str| json!({"rid": "secure", "content": text, "from": from, "target": "*"});
    sam.request(SEND, chat("sam", "over tls")).await.unwrap();
    assert!(
        receives_push(&mut wes, Duration::from_secs(5), |p| p.route == "onChat"
            && p.body["msg"] == "over tls")
        .await
    );
    wes.request(SEND, chat("wes", "over wss")).await.unwrap();
    assert!(
        receives_push(&mut sam, Duration::from_secs(5), |p| p.route == "onChat"
            && p.body["msg"] == "over wss")
        .await
    );

    // A plain client is not served: no handshake comes back.
    for plain in [
        format!("ws://127.0.0.1:{port}"),
        format!("tcp://127.0.0.1:{port}"),
    ] {
        let got = tokio::time::timeout(
            Duration::from_secs(10),
            Client::connect(&plain, ClientOptions::default()),
        )
        .await;
        assert!(!matches!(got, Ok(Ok(_))), "{plain} was served without TLS");
    }
}
