//! Limits that keep one room or one idle client from hurting everyone else.

use std::time::Duration;

use serde_json::json;
use shaddock_e2e::{ClusterSpec, eventually, spawn_cluster};

use crate::support::{SEND, connect, enter, users};

fn with(extra: &str) -> ClusterSpec {
    ClusterSpec {
        extra: format!("[limits]\n{extra}"),
        ..ClusterSpec::default()
    }
}

#[tokio::test]
async fn a_full_room_refuses_one_more_with_a_reason_until_someone_leaves() {
    let cluster = spawn_cluster(with("max_room_size = 2\n")).await;
    let url = cluster.connector_url(0);
    let (a, b, c) = (connect(&url).await, connect(&url).await, connect(&url).await);
    enter(&a, "a", "small").await;
    enter(&b, "b", "small").await;
    assert_eq!(
        enter(&c, "c", "small").await,
        json!({"code": 500, "error": true, "reason": "the room is full"})
    );
    b.close();
    let resp = eventually("there is room again", Duration::from_secs(5), || async {
        let resp = enter(&c, "c", "small").await;
        resp.get("users").is_some().then_some(resp)
    })
    .await;
    assert_eq!(users(&resp), vec!["a", "c"]);
}

#[tokio::test]
async fn a_room_past_its_message_rate_refuses_and_delivers_only_what_it_took() {
    let cluster = spawn_cluster(with("room_messages_per_second = 1\nroom_burst = 3\n")).await;
    let url = cluster.connector_url(0);
    let sender = connect(&url).await;
    let mut reader = connect(&url).await;
    enter(&sender, "s", "busy").await;
    enter(&reader, "r", "busy").await;
    let _ = reader.pushes_within(Duration::from_millis(100)).await;
    let mut taken = 0;
    let mut refused = 0;
    for i in 0..8 {
        let msg = json!({"rid": "busy", "content": format!("m{i}"), "target": "*"});
        match sender.request(SEND, msg).await.unwrap() {
            v if v == json!({}) => taken += 1,
            v if v == json!({"code": 500, "error": "room rate limit"}) => refused += 1,
            other => panic!("unexpected answer {other}"),
        }
    }
    assert!(refused >= 1 && taken >= 3, "taken {taken}, refused {refused}");
    let got = reader.pushes_within(Duration::from_millis(500)).await;
    assert_eq!(got.iter().filter(|p| p.route == "onChat").count(), taken);
}

#[tokio::test]
async fn an_idle_socket_on_the_gate_is_closed_and_a_heartbeating_one_stays() {
    let cluster = spawn_cluster(with("idle_timeout_ms = 300\n")).await;
    let idle = connect(&format!("ws://127.0.0.1:{}", cluster.gate)).await;
    let heartbeating = connect(&cluster.connector_url(0)).await;
    assert!(
        idle.closed_within(Duration::from_secs(5)).await,
        "the idle gate socket is closed"
    );
    assert_eq!(idle.kick_reason(), None);
    assert!(
        !heartbeating.is_closed(),
        "a connector socket with heartbeats stays"
    );
}

#[tokio::test]
async fn a_connection_that_never_sends_its_upgrade_request_is_closed() {
    use tokio::io::AsyncReadExt;
    let cluster = spawn_cluster(with("handshake_timeout_ms = 300\n")).await;
    let mut silent = tokio::net::TcpStream::connect(("127.0.0.1", cluster.connectors[0]))
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(_)) | Ok(Err(_))),
        "the server closes it: {read:?}"
    );
    // A real client still gets in.
    let client = connect(&cluster.connector_url(0)).await;
    assert_eq!(users(&enter(&client, "late", "r").await), vec!["late"]);
}
