//! The web client in a real browser: headless Chromium (Debian's package) driven by
//! playwright-core, against real servers. `make test` installs both.

use std::path::Path;

use shaddock_e2e::{Server, TestConfig};

#[tokio::test]
async fn two_people_chat_publicly_and_privately_in_the_web_client() {
    let config = TestConfig::new("browser", "");
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
    let shot = shaddock_e2e::bin_dir().join("browser-chat.png");
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
