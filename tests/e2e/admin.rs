//! Health, readiness, metrics and the admin console on each server's admin port.

use std::time::Duration;

use serde_json::{Value, json};
use shaddock_e2e::{Server, TestConfig, eventually_true, http};

use crate::support::{SEND, connect, enter};

async fn becomes_ready(id: &str, port: u16) {
    eventually_true(&format!("{id} is ready"), Duration::from_secs(5), || async {
        http(port, "GET", "/readyz", None, None).await.0 == 200
    })
    .await;
}

fn chunked_json(body: &str) -> Value {
    // axum answers with Content-Length; tolerate a chunked body anyway.
    let start = body.find('{').unwrap_or(0);
    let end = body.rfind('}').map(|e| e + 1).unwrap_or(body.len());
    serde_json::from_str(&body[start..end]).unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_server_answers_health_readiness_and_metrics_and_the_console_kicks_and_broadcasts() {
    let config = TestConfig::new("admin", "[admin]\ntoken = \"t0ken\"\n");
    let chat = Server::start("chat", "chat-server-1", &config).await;
    let conn = Server::start("connector", "connector-server-1", &config).await;
    let gate = Server::start("gate", "gate-server-1", &config).await;
    for s in [&chat, &conn, &gate] {
        let port = s.admin_port.expect("an admin port");
        assert_eq!(http(port, "GET", "/healthz", None, None).await.0, 200);
        becomes_ready(&s.id, port).await;
    }

    let mut alice = connect(&conn.url()).await;
    let mut bob = connect(&conn.url()).await;
    enter(&alice, "alice", "room").await;
    enter(&bob, "bob", "room").await;
    alice
        .request(SEND, json!({"rid": "room", "content": "hi", "target": "*"}))
        .await
        .unwrap();
    let _ = alice.pushes_within(Duration::from_millis(300)).await;
    let _ = bob.pushes_within(Duration::from_millis(50)).await;

    let admin = conn.admin_port.unwrap();
    let (status, metrics) = http(admin, "GET", "/metrics", None, None).await;
    assert_eq!(status, 200);
    for needle in [
        "shaddock_connections 2",
        "shaddock_sessions 2",
        "shaddock_requests_total{route=\"connector.entryHandler.enter\",code=\"200\"} 2",
        "shaddock_requests_total{route=\"chat.chatHandler.send\",code=\"200\"} 1",
        // bob's onAdd to alice (1 socket), then the onChat to both (2 sockets).
        "shaddock_pushes_total 2",
        "shaddock_deliveries_total 3",
        "shaddock_request_duration_seconds_bucket",
        "shaddock_nats_disconnects_total 0",
    ] {
        assert!(metrics.contains(needle), "{needle} not in\n{metrics}");
    }

    // The console needs its token.
    assert_eq!(http(admin, "GET", "/admin/api/servers", None, None).await.0, 401);
    assert_eq!(
        http(admin, "GET", "/admin/api/servers", Some("wrong"), None)
            .await
            .0,
        401
    );
    assert_eq!(http(admin, "GET", "/admin", None, None).await.0, 200);
    let (status, servers) = http(admin, "GET", "/admin/api/servers", Some("t0ken"), None).await;
    assert_eq!(status, 200);
    let servers = chunked_json(&servers);
    assert_eq!(servers["servers"].as_array().map(Vec::len), Some(3), "{servers}");
    let connectors = chunked_json(
        &http(admin, "GET", "/admin/api/connectors", Some("t0ken"), None)
            .await
            .1,
    );
    assert_eq!(connectors["connectors"][0]["users"], json!(2), "{connectors}");
    let channels = chunked_json(
        &http(admin, "GET", "/admin/api/channels", Some("t0ken"), None)
            .await
            .1,
    );
    let members = channels["channels"][0]["members"].as_array().map(Vec::len);
    assert_eq!(
        (channels["channels"][0]["name"].clone(), members),
        (json!("room"), Some(2)),
        "{channels}"
    );

    let (status, _) = http(
        admin,
        "POST",
        "/admin/api/broadcast",
        Some("t0ken"),
        Some(r#"{"text":"maintenance at noon"}"#),
    )
    .await;
    assert_eq!(status, 200);
    for c in [&mut alice, &mut bob] {
        let p = c.next_push(Duration::from_secs(3)).await.expect("broadcast");
        assert_eq!(
            p.body,
            json!({"msg": "maintenance at noon", "from": "admin", "target": "*"})
        );
    }
    // Rooms: counts, search, one room's members, a broadcast to that room only.
    let get = |path: &'static str| async move {
        chunked_json(&http(admin, "GET", path, Some("t0ken"), None).await.1)
    };
    assert_eq!(
        get("/admin/api/rooms").await,
        json!({"total": 1, "page": 1, "per_page": 50, "rooms": [{"name": "room", "members": 2}]})
    );
    assert_eq!(get("/admin/api/rooms?q=nothing").await["total"], json!(0));
    let room = get("/admin/api/rooms/room").await;
    let users: Vec<&str> = room["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["user"].as_str().unwrap())
        .collect();
    assert_eq!(users, vec!["alice", "bob"], "{room}");
    assert_eq!(
        http(admin, "GET", "/admin/api/rooms/nowhere", Some("t0ken"), None)
            .await
            .0,
        404
    );
    let (status, sent) = http(
        admin,
        "POST",
        "/admin/api/broadcast",
        Some("t0ken"),
        Some(r#"{"text":"room closes soon","rid":"room"}"#),
    )
    .await;
    assert_eq!((status, chunked_json(&sent)["members"].clone()), (200, json!(2)));
    for c in [&mut alice, &mut bob] {
        let p = c.next_push(Duration::from_secs(3)).await.expect("room broadcast");
        assert_eq!(p.body["msg"], json!("room closes soon"));
    }

    let (status, kicked) = http(
        admin,
        "POST",
        "/admin/api/kick",
        Some("t0ken"),
        Some(r#"{"uid":"alice*room","reason":"bye"}"#),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(chunked_json(&kicked)["kicked"], json!(1));
    assert!(alice.closed_within(Duration::from_secs(3)).await);
    assert_eq!(alice.kick_reason().as_deref(), Some("bye"));
    let (_, metrics) = http(admin, "GET", "/metrics", None, None).await;
    assert!(
        metrics.contains("shaddock_kicks_total{reason=\"other\"} 1"),
        "{metrics}"
    );

    // The same jobs from the command line, as tables.
    let url = format!("http://127.0.0.1:{admin}");
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(shaddock_e2e::bin_dir().join("shaddock"))
            .args(["admin", "--url", &url, "--token", "t0ken"])
            .args(args)
            .output()
            .expect("shaddock runs");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{args:?}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let servers = cli(&["servers"]);
    assert!(
        servers.starts_with("ID") && servers.contains("connector-server-1  connector"),
        "{servers}"
    );
    let rooms = cli(&["rooms"]);
    assert!(rooms.contains("room  1"), "bob is left: {rooms}");
    let members = cli(&["room", "room"]);
    assert!(members.contains("bob   bob*room"), "{members}");
    assert!(cli(&["kick", "bob*room"]).contains("kicked 1 session(s)"));
    assert!(bob.closed_within(Duration::from_secs(3)).await);
    let out = std::process::Command::new(shaddock_e2e::bin_dir().join("shaddock"))
        .args(["admin", "--url", &url, "--token", "wrong", "servers"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
}

#[tokio::test]
async fn without_a_token_the_console_is_off() {
    let config = TestConfig::new("noadmin", "");
    let gate = Server::start("gate", "gate-server-1", &config).await;
    let port = gate.admin_port.unwrap();
    assert_eq!(http(port, "GET", "/admin", None, None).await.0, 404);
    assert_eq!(
        http(port, "GET", "/admin/api/servers", Some(""), None).await.0,
        404
    );
    assert_eq!(http(port, "GET", "/healthz", None, None).await.0, 200);
}

/// Every metric family a server's `/metrics` exports, with the series names Prometheus
/// derives from it (`_total`, `_bucket`, `_sum`, `_count`).
fn exported_names(metrics: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for line in metrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            names.insert(name.to_owned());
            match kind {
                "counter" => {
                    names.insert(format!("{name}_total"));
                }
                "histogram" => {
                    for s in ["_bucket", "_sum", "_count"] {
                        names.insert(format!("{name}{s}"));
                    }
                }
                _ => {}
            }
        } else if !line.starts_with('#') {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            if end > 0 {
                names.insert(line[..end].to_owned());
            }
        }
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grafana_dashboard_plots_only_metrics_the_servers_export() {
    let config = TestConfig::new("dashboard", "");
    let chat = Server::start("chat", "chat-server-1", &config).await;
    let conn = Server::start("connector", "connector-server-1", &config).await;
    let gate = Server::start("gate", "gate-server-1", &config).await;
    // Families with labels appear with their first series: one request of each kind.
    let client = connect(&conn.url()).await;
    enter(&client, "dana", "room").await;
    client
        .request(SEND, json!({"rid": "room", "content": "hi", "target": "*"}))
        .await
        .unwrap();
    let mut exported = std::collections::BTreeSet::new();
    for s in [&chat, &conn, &gate] {
        let (status, metrics) = http(s.admin_port.unwrap(), "GET", "/metrics", None, None).await;
        assert_eq!(status, 200);
        exported.extend(exported_names(&metrics));
    }
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/shaddock.json");
    let text = std::fs::read_to_string(&path).expect("the dashboard");
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    assert!(
        dashboard["panels"].as_array().is_some_and(|p| p.len() >= 8),
        "panels"
    );
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    assert!(!exprs.is_empty());
    let mut used = std::collections::BTreeSet::new();
    for e in &exprs {
        let bytes = e.as_bytes();
        let mut i = 0;
        while let Some(at) = e[i..].find("shaddock_") {
            let start = i + at;
            let end = start
                + bytes[start..]
                    .iter()
                    .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
                    .count();
            used.insert(e[start..end].to_owned());
            i = end;
        }
    }
    let missing: Vec<&String> = used.iter().filter(|n| !exported.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "the dashboard plots {missing:?}, not exported: {exported:?}"
    );
}

fn collect_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("expr", Value::String(s)) => out.push(s.clone()),
                    _ => collect_exprs(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_exprs(x, out)),
        _ => {}
    }
}
