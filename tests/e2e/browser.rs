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

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "playwright-core is not installed: run `make test` (or `npm ci` in tests/browser)"
    );
    let shot = shaddock_e2e::bin_dir().join(screenshot);
    let url = format!(
        "http://127.0.0.1:{}/?gate=127.0.0.1:{}",
        web.client_port.unwrap(),
        gate.client_port.unwrap()
    );
    let out = tokio::process::Command::new("node")
        .arg("chat.mjs")
        .arg(&url)
        .arg(&shot)
        .current_dir(&dir)
        .output()
        .await
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "browser test failed:\n{stdout}\n{stderr}");
    assert!(shot.exists());
}
