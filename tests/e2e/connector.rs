//! The connector speaks Pomelo's protocol: handshake, heartbeat, enter, and bad input. The
//! servers run in this process ([`spawn_cluster`]).

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use shaddock_client::tokio_tungstenite::{connect_async, tungstenite::Message};
use shaddock_client::{Client, ClientError, ClientOptions};
use shaddock_e2e::{ClusterSpec, TestCluster, spawn_cluster};
use shaddock_protocol::handshake::HandshakeRequest;
use shaddock_protocol::message::{self, MessageType, RouteRef};
use shaddock_protocol::package::{self, PackageType};

use crate::support::{ENTER, connect, enter, users};

/// One chat server and one connector with a 1 s heartbeat, in this process.
async fn small_cluster() -> TestCluster {
    spawn_cluster(ClusterSpec {
        extra: "[connector]\nheartbeat_secs = 1\n".into(),
        ..ClusterSpec::default()
    })
    .await
}

#[tokio::test]
async fn the_handshake_carries_heartbeat_and_the_route_dictionary() {
    let cluster = small_cluster().await;
    let client = connect(&cluster.connector_url(0)).await;
    let hs = client.handshake();
    assert_eq!(hs.code, 200);
    assert_eq!(hs.heartbeat_secs, Some(1));
    let dict = hs.dict.as_ref().expect("dict");
    assert_eq!(dict.code_of("chat.chatHandler.send"), Some(1));
    assert_eq!(dict.code_of(ENTER), Some(2));
    assert_eq!(dict.code_of("gate.gateHandler.queryEntry"), Some(3));
    assert_eq!(dict.version(), "s2r1qfKDrbhWCkA6uf+PTA==");
}

#[tokio::test]
async fn enter_binds_the_user_and_a_second_enter_of_the_same_uid_is_refused() {
    let cluster = small_cluster().await;
    let alice = connect(&cluster.connector_url(0)).await;
    assert_eq!(users(&enter(&alice, "alice", "room1").await), vec!["alice"]);
    let bob = connect(&cluster.connector_url(0)).await;
    assert_eq!(users(&enter(&bob, "bob", "room1").await), vec!["alice", "bob"]);

    let again = connect(&cluster.connector_url(0)).await;
    let resp = enter(&again, "alice", "room1").await;
    assert_eq!(resp, json!({"code": 500, "error": true}));
    // The refused socket stays open and usable.
    let other_room = enter(&again, "alice", "room2").await;
    assert_eq!(users(&other_room), vec!["alice"]);
    assert!(!again.is_closed());
}

#[tokio::test]
async fn a_client_that_stops_heartbeating_is_disconnected_without_a_kick() {
    let cluster = small_cluster().await;
    let options = ClientOptions {
        heartbeat: false,
        ..ClientOptions::default()
    };
    let silent = Client::connect(&cluster.connector_url(0), options).await.unwrap();
    let alive = connect(&cluster.connector_url(0)).await;
    let started = std::time::Instant::now();
    assert!(
        silent.closed_within(Duration::from_secs(5)).await,
        "silent client should be closed"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1500),
        "closed too early: {waited:?}"
    );
    assert_eq!(silent.kick_reason(), None);
    assert!(
        silent.heartbeats_seen() >= 1,
        "the server heartbeats right after the ack"
    );
    // The heartbeating client is still here.
    assert!(!alive.is_closed());
    assert!(alive.heartbeats_seen() >= 2);
}

#[tokio::test]
async fn a_malformed_package_closes_only_its_own_socket() {
    let cluster = small_cluster().await;
    let bad = connect(&cluster.connector_url(0)).await;
    let good = connect(&cluster.connector_url(0)).await;
    bad.send_raw(Bytes::from_static(&[9, 0, 0, 0])).unwrap();
    assert!(bad.closed_within(Duration::from_secs(3)).await);
    let truncated = connect(&cluster.connector_url(0)).await;
    truncated
        .send_raw(Bytes::from_static(&[4, 0, 0, 0x40, 0, 1]))
        .unwrap();
    assert!(truncated.closed_within(Duration::from_secs(3)).await);
    assert_eq!(users(&enter(&good, "carol", "r").await), vec!["carol"]);
}

#[tokio::test]
async fn the_constructor_route_is_kicked_as_an_attack() {
    let cluster = small_cluster().await;
    let client = connect(&cluster.connector_url(0)).await;
    let result = client
        .request("connector.entryHandler.constructor", json!({}))
        .await;
    assert!(matches!(result, Err(ClientError::Closed)), "{result:?}");
    assert!(client.closed_within(Duration::from_secs(3)).await);
    assert_eq!(client.kick_reason().as_deref(), Some("attack"));
}

#[tokio::test]
async fn unknown_and_malformed_routes_answer_code_500_and_dotless_routes_are_dropped() {
    let cluster = small_cluster().await;
    let client = Client::connect(
        &cluster.connector_url(0),
        ClientOptions {
            request_timeout: Duration::from_millis(700),
            ..ClientOptions::default()
        },
    )
    .await
    .unwrap();
    for route in [
        "connector.nohandler.x",
        "a.b",
        "foo.bar.baz",
        "connector.entryHandler.enter.extra",
    ] {
        let resp = client.request(route, json!({})).await.unwrap();
        assert_eq!(resp, json!({"code": 500}), "{route}");
    }
    let dropped = client.request("nodots", json!({})).await;
    assert!(matches!(dropped, Err(ClientError::Timeout)), "{dropped:?}");
    assert!(!client.is_closed());
}

#[tokio::test]
async fn a_handshake_without_sys_is_answered_500_and_closed() {
    let cluster = small_cluster().await;
    let result = Client::connect(
        &cluster.connector_url(0),
        ClientOptions {
            handshake_body: Some("{\"nosys\":1}".into()),
            ..ClientOptions::default()
        },
    )
    .await;
    assert!(matches!(result, Err(ClientError::Handshake(500))), "{result:?}");
}

/// A raw socket: what arrives is checked byte by byte.
async fn raw(
    url: &str,
) -> shaddock_client::tokio_tungstenite::WebSocketStream<
    shaddock_client::tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
> {
    connect_async(url).await.unwrap().0
}

async fn next_binary<S>(ws: &mut S) -> Option<Bytes>
where
    S: futures_util::Stream<Item = Result<Message, shaddock_client::tokio_tungstenite::tungstenite::Error>>
        + Unpin,
{
    loop {
        match tokio::time::timeout(Duration::from_secs(3), ws.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) => return Some(b),
            Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) | Err(_) => return None,
            Ok(Some(Ok(_))) => continue,
        }
    }
}

fn request_pkg(id: u32, route: &str, body: &str) -> Bytes {
    message::data_package(
        MessageType::Request,
        id,
        Some(&RouteRef::Name(route.into())),
        body.as_bytes(),
    )
    .unwrap()
}

#[tokio::test]
async fn data_before_the_ack_is_ignored_and_packages_sharing_a_frame_are_all_handled() {
    let cluster = small_cluster().await;
    let mut ws = raw(&cluster.connector_url(0)).await;
    let hs = HandshakeRequest::js_client_body(None);
    ws.send(Message::Binary(
        package::encoded(PackageType::Handshake, hs.as_bytes()).unwrap(),
    ))
    .await
    .unwrap();
    let answer = next_binary(&mut ws).await.unwrap();
    assert_eq!(answer[0], PackageType::Handshake as u8);

    // A request before the ack: ignored.
    ws.send(Message::Binary(request_pkg(1, "connector.nohandler.x", "{}")))
        .await
        .unwrap();
    // The ack and a heartbeat and a request in ONE frame: all handled.
    let mut frame = package::HANDSHAKE_ACK.to_vec();
    frame.extend_from_slice(&package::HEARTBEAT);
    frame.extend_from_slice(&request_pkg(2, "connector.nohandler.x", "{}"));
    ws.send(Message::Binary(frame.into())).await.unwrap();

    let mut heartbeats = 0;
    let mut responses = Vec::new();
    while responses.is_empty() {
        let b = next_binary(&mut ws).await.expect("server answers");
        for pkg in package::decode_all(&b) {
            let pkg = pkg.unwrap();
            match pkg.kind {
                PackageType::Heartbeat => heartbeats += 1,
                PackageType::Data => {
                    let m = message::decode(pkg.body).unwrap();
                    responses.push((m.id, m.body.to_vec()));
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert_eq!(
        responses,
        vec![(2, b"{\"code\":500}".to_vec())],
        "only the request after the ack"
    );
    assert!(heartbeats >= 1, "a heartbeat after the ack");

    // Text frames are read as bytes.
    let text = String::from_utf8(request_pkg(3, "a.b", "{}").to_vec()).unwrap();
    ws.send(Message::Text(text.into())).await.unwrap();
    loop {
        let b = next_binary(&mut ws).await.expect("answer to a text frame");
        let (pkg, _) = package::decode_one(&b).unwrap();
        if pkg.kind == PackageType::Data {
            assert_eq!(message::decode(pkg.body).unwrap().id, 3);
            break;
        }
    }
}

#[tokio::test]
async fn an_oversized_frame_closes_only_that_socket() {
    let cluster = spawn_cluster(ClusterSpec {
        extra: "[limits]\nmax_package_bytes = 1024\n".into(),
        ..ClusterSpec::default()
    })
    .await;
    let big = connect(&cluster.connector_url(0)).await;
    let fine = connect(&cluster.connector_url(0)).await;
    let body = format!("{{\"username\":\"{}\",\"rid\":\"r\"}}", "x".repeat(4000));
    big.send_raw(request_pkg(1, ENTER, &body)).unwrap();
    assert!(big.closed_within(Duration::from_secs(3)).await);
    assert_eq!(users(&enter(&fine, "dan", "r").await), vec!["dan"]);
}
