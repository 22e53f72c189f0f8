//! The web client in a real browser: headless Chromium (Debian's package) driven by
//! playwright-core, against real servers. `make test` installs both.

use std::path::Path;

use shaddock_e2e::{Server, TestConfig};

#[tokio::test]
async fn two_people_chat_publicly_and_privately_in_the_web_client() {
    chat_in_the_browser("browser", "", "browser-chat.png").await;
}

/// The same with chatofpomelo's protos on (`onChat` as pomelo-protobuf, the rest JSON).
#[tokio::test]
async fn two_people_chat_in_the_web_client_with_protobuf_pushes() {
    let protos = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/protos/chatofpomelo");
    let extra = format!("[protobuf]\ndir = \"{}\"\n", protos.display());
    chat_in_the_browser("browserpb", &extra, "browser-chat-protobuf.png").await;
}

async fn chat_in_the_browser(tag: &str, extra: &str, screenshot: &str) {
    let config = TestConfig::new(tag, extra);
    let _chat = Server::start("chat", "chat-server-1", &config).await;
    let _c1 = Server::start("connector", "connector-server-1", &config).await;
    let _c2 = Server::start("connector", "connector-server-2", &config).await;
    let gate = Server::start("gate", "gate-server-1", &config).await;
    let web = Server::start_bin("shaddock", "web", &["web", "--port", "0", "--bind", "127.0.0.1"]).await;

    let shot = shaddock_e2e::bin_dir().join(screenshot);
    let url = format!(
        "http://127.0.0.1:{}/?gate=127.0.0.1:{}",
        web.client_port.unwrap(),
        gate.client_port.unwrap()
    );
    node(&["chat.mjs", &url, &shot.display().to_string()]).await;
    assert!(shot.exists());
}

/// Runs a script of tests/browser with node; fails the test with its output if it fails.
async fn node(args: &[&str]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "playwright-core is not installed: run `make test` (or `npm ci` in tests/browser)"
    );
    let out = tokio::process::Command::new("node")
        .args(args)
        .current_dir(&dir)
        .output()
        .await
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{} failed:\n{stdout}\n{stderr}", args[0]);
}

/// The admin console in a real browser: servers, a room and its members, and a kick that
/// reaches the kicked client.
#[tokio::test]
async fn the_admin_console_shows_the_cluster_and_kicks_a_user() {
    let config = TestConfig::new("console", "[admin]\ntoken = \"c0nsole\"\n");
    let _chat = Server::start("chat", "chat-server-1", &config).await;
    let conn = Server::start("connector", "connector-server-1", &config).await;
    let gate = Server::start("gate", "gate-server-1", &config).await;
    let alice = crate::support::connect(&conn.url()).await;
    let bob = crate::support::connect(&conn.url()).await;
    crate::support::enter(&alice, "alice", "lobby").await;
    crate::support::enter(&bob, "bob", "lobby").await;

    let shot = shaddock_e2e::bin_dir().join("console.png");
    let url = format!(
        "http://127.0.0.1:{}/admin/#token=c0nsole",
        gate.admin_port.unwrap()
    );
    node(&["console.mjs", &url, "lobby", "bob", &shot.display().to_string()]).await;
    assert!(bob.closed_within(std::time::Duration::from_secs(5)).await);
    assert_eq!(bob.kick_reason().as_deref(), Some("kick"));
    assert!(!alice.is_closed());
}
