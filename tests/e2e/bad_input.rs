//! Bad input from clients: floods, odd names, CESU-8 text, and a stream of mutated packages.
//! Nothing panics, nothing escapes its subject or key, and other sessions are untouched.

use std::time::Duration;

use bytes::Bytes;
use futures_util::SinkExt;
use serde_json::json;
use shaddock_client::ClientError;
use shaddock_client::tokio_tungstenite::{connect_async, tungstenite::Message};
use shaddock_e2e::{ClusterSpec, Server, TestConfig, XorShift, spawn_cluster};
use shaddock_protocol::message::{self, MessageType, RouteRef};

use crate::support::{SEND, connect, enter, users};

#[tokio::test]
async fn a_request_flood_is_refused_then_kicked() {
    let cluster = spawn_cluster(ClusterSpec {
        extra: "[limits]\nrequests_per_second = 5\nrequest_burst = 5\n".into(),
        ..ClusterSpec::default()
    })
    .await;
    let calm = connect(&cluster.connector_url(0)).await;
    let flooder = connect(&cluster.connector_url(0)).await;
    let answers =
        futures_util::future::join_all((0..40).map(|_| flooder.request("connector.nohandler.x", json!({}))))
            .await;
    let refused = answers
        .iter()
        .filter(|a| matches!(a, Ok(v) if v == &json!({"code": 500, "error": "rate limit"})))
        .count();
    assert!(refused >= 1, "{answers:?}");
    assert!(flooder.closed_within(Duration::from_secs(3)).await);
    assert_eq!(flooder.kick_reason().as_deref(), Some("flood"));
    assert_eq!(users(&enter(&calm, "calm", "r").await), vec!["calm"]);
}

#[tokio::test]
async fn odd_names_stay_names_and_long_control_or_starred_names_are_refused() {
    let cluster = spawn_cluster(ClusterSpec::default()).await;
    let odd_room = "a.b*c>d:e f";
    let a = connect(&cluster.connector_url(0)).await;
    let mut b = connect(&cluster.connector_url(0)).await;
    assert_eq!(users(&enter(&a, "x.y>z", odd_room).await), vec!["x.y>z"]);
    assert_eq!(users(&enter(&b, "> :", odd_room).await), vec!["> :", "x.y>z"]);
    let resp = a
        .request(
            SEND,
            json!({"rid": odd_room, "content": "hi", "from": "x.y>z", "target": "> :"}),
        )
        .await
        .unwrap();
    assert_eq!(resp, json!({}));
    let push = b
        .next_push(Duration::from_secs(3))
        .await
        .expect("private message");
    assert_eq!(push.body, json!({"msg": "hi", "from": "x.y>z", "target": "> :"}));

    let c = connect(&cluster.connector_url(0)).await;
    let refused = json!({"code": 500, "error": true});
    assert_eq!(enter(&c, &"n".repeat(65), "r").await, refused);
    assert_eq!(enter(&c, "tab\there", "r").await, refused);
    assert_eq!(enter(&c, "", "r").await, refused);
    assert_eq!(
        c.request("connector.entryHandler.enter", json!({"username": 7, "rid": "r"}))
            .await
            .unwrap(),
        refused
    );
    // A uid is `username*rid`, split at the first `*` by Pomelo: a `*` in a user name is
    // refused with a reason (in a room name it is fine, above).
    assert_eq!(
        enter(&c, "a*b", "r").await,
        json!({"code": 500, "error": true, "reason": "a user name may not contain '*'"})
    );
    assert_eq!(
        users(&enter(&c, &"n".repeat(64), "r").await),
        vec!["n".repeat(64)]
    );
}

#[tokio::test]
async fn cesu8_text_from_the_browser_client_arrives_as_the_character_it_meant() {
    let cluster = spawn_cluster(ClusterSpec::default()).await;
    let sender = connect(&cluster.connector_url(0)).await;
    let mut reader = connect(&cluster.connector_url(0)).await;
    enter(&sender, "s", "r").await;
    enter(&reader, "t", "r").await;
    // U+1F600 as the legacy browser encoder writes it: two 3-byte surrogates.
    let mut body = br#"{"rid":"r","target":"*","content":"smile "#.to_vec();
    body.extend_from_slice(&[0xed, 0xa0, 0xbd, 0xed, 0xb8, 0x80]);
    body.extend_from_slice(br#" and a bad byte "#);
    body.push(0xff);
    body.extend_from_slice(br#""}"#);
    let pkg =
        message::data_package(MessageType::Notify, 0, Some(&RouteRef::Name(SEND.into())), &body).unwrap();
    sender.send_raw(pkg).unwrap();
    let push = reader
        .next_push(Duration::from_secs(3))
        .await
        .expect("the message arrives");
    assert_eq!(push.body["msg"], json!("smile \u{1F600} and a bad byte \u{FFFD}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_mutated_packages_never_take_the_connector_down() {
    let config = TestConfig::new("fuzz", "[limits]\nrequests_per_second = 0\n");
    let _chat = Server::start("chat", "chat-server-1", &config).await;
    let mut conn = Server::start("connector", "connector-server-1", &config).await;
    let bystander = connect(&conn.url()).await;
    enter(&bystander, "bystander", "r").await;

    let corpus = crate::support::corpus();
    assert!(!corpus.is_empty(), "the committed corpus is missing");
    let mut rng = XorShift(0x5eed_cafe);
    let mut sent = 0;
    let hs = shaddock_protocol::handshake::HandshakeRequest::js_client_body(None);
    let handshake =
        shaddock_protocol::package::encoded(shaddock_protocol::PackageType::Handshake, hs.as_bytes())
            .unwrap();
    for _round in 0..40 {
        // A raw socket: every frame is written before the next, so all of them reach the server.
        let (mut ws, _) = connect_async(conn.url()).await.expect("connect");
        if !rng.next_u64().is_multiple_of(4) {
            ws.send(Message::Binary(handshake.clone())).await.unwrap();
            ws.send(Message::Binary(Bytes::from_static(
                &shaddock_protocol::package::HANDSHAKE_ACK,
            )))
            .await
            .unwrap();
        }
        for _ in 0..50 {
            let seed = &corpus[(rng.next_u64() as usize) % corpus.len()];
            let mut bytes = seed.clone();
            for _ in 0..(rng.next_u64() % 4) {
                if bytes.is_empty() {
                    break;
                }
                let i = (rng.next_u64() as usize) % bytes.len();
                bytes[i] = rng.next_u64() as u8;
            }
            if rng.next_u64().is_multiple_of(5) {
                bytes.truncate((rng.next_u64() as usize) % (bytes.len() + 1));
            }
            if ws.send(Message::Binary(Bytes::from(bytes))).await.is_err() {
                break; // the server closed this one: fine
            }
            sent += 1;
        }
        let _ = ws.close(None).await;
    }
    assert!(sent > 100);
    assert!(
        conn.is_running(),
        "the connector survived {sent} mutated packages"
    );
    let after = connect(&conn.url()).await;
    assert_eq!(
        users(&enter(&after, "after", "r").await),
        vec!["after", "bystander"]
    );
    let resp = bystander
        .request(SEND, json!({"rid": "r", "content": "still here", "target": "*"}))
        .await;
    assert!(
        !matches!(resp, Err(ClientError::Closed)),
        "the bystander was untouched"
    );
}

#[tokio::test]
async fn with_a_secret_enter_needs_a_valid_token_for_that_user() {
    let cluster = spawn_cluster(ClusterSpec {
        extra: "[auth]\nsecret = \"test-secret\"\n".into(),
        ..ClusterSpec::default()
    })
    .await;
    let client = connect(&cluster.connector_url(0)).await;
    let refused = |v: &serde_json::Value| v["code"] == json!(500) && v["error"] == json!(true);
    let enter_with = |token: Option<String>| {
        let mut body = json!({"username": "alice", "rid": "r"});
        if let Some(t) = token {
            body["token"] = json!(t);
        }
        client.request("connector.entryHandler.enter", body)
    };
    assert!(refused(&enter_with(None).await.unwrap()));
    let bobs = shaddock_connector::auth::mint(b"test-secret", "bob", shaddock_connector::auth::now() + 60);
    assert!(refused(&enter_with(Some(bobs)).await.unwrap()));
    let stale = shaddock_connector::auth::mint(b"test-secret", "alice", 1);
    assert!(refused(&enter_with(Some(stale)).await.unwrap()));
    let good = shaddock_connector::auth::mint(b"test-secret", "alice", shaddock_connector::auth::now() + 60);
    assert_eq!(users(&enter_with(Some(good)).await.unwrap()), vec!["alice"]);
}

#[tokio::test]
async fn requests_past_the_in_flight_limit_are_refused_at_once() {
    let config = TestConfig::new("inflight", "[limits]\nmax_in_flight = 2\n");
    let chat = Server::start("chat", "chat-server-1", &config).await;
    let conn = Server::start("connector", "connector-server-1", &config).await;
    let client = connect(&conn.url()).await;
    enter(&client, "a", "r").await;
    // A chat server that stops answering: forwarded requests stay in flight until the RPC
    // timeout (2 s in tests).
    chat.signal("STOP");
    let send = || client.request(SEND, json!({"rid": "r", "content": "x", "target": "*"}));
    // In the order they are answered: the refusals come at once, before the two in flight
    // time out, whatever the machine's load.
    let mut pending: futures_util::stream::FuturesUnordered<_> = (0..6).map(|_| send()).collect();
    let mut answers = Vec::new();
    while let Some(answer) = futures_util::StreamExt::next(&mut pending).await {
        answers.push(answer);
    }
    chat.signal("CONT");
    let busy = |a: &Result<serde_json::Value, ClientError>| matches!(a, Ok(v) if v["error"] == json!("too many requests in flight"));
    assert!(answers[..4].iter().all(busy), "{answers:?}");
    let timed_out = answers[4..]
        .iter()
        .filter(|a| matches!(a, Ok(v) if v == &json!({"code": 500})))
        .count();
    assert_eq!(timed_out, 2, "{answers:?}");
    assert!(!client.is_closed());
}
