//! Test harness: start the real Shaddock binaries on port 0 in a private namespace, read
//! the port each one reports, and kill them when the test ends.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A unique namespace (NATS subject prefix, Redis key prefix) for one test.
pub fn namespace(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "e2e-{tag}-{}-{}",
        std::process::id(),
        nanos % 1_000_000_000_000
    )
}

/// The directory holding the workspace's binaries (target/debug or target/release).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/e2e-xxxx -> target/<profile>
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf()
}

/// A config file for a test cluster, in a temporary directory.
#[derive(Debug)]
pub struct TestConfig {
    pub namespace: String,
    pub path: PathBuf,
    _dir: TempDir,
}

#[derive(Debug)]
struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl TestConfig {
    /// `extra` is appended to the TOML (sections such as `[connector]`).
    pub fn new(tag: &str, extra: &str) -> Self {
        let namespace = namespace(tag);
        let dir = std::env::temp_dir().join(&namespace);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("cluster.toml");
        let text = format!(
            "namespace = \"{namespace}\"\n\
             [registry]\nheartbeat_ms = 200\nlapse_ms = 1200\n\
             [rpc]\ntimeout_ms = 2000\n{extra}\n"
        );
        std::fs::write(&path, text).expect("write config");
        Self {
            namespace,
            path,
            _dir: TempDir(dir),
        }
    }
}

/// One running server process; killed on drop.
#[derive(Debug)]
pub struct Server {
    pub id: String,
    pub client_port: Option<u16>,
    child: Child,
}

impl Server {
    /// Starts `shaddock-<kind>` with `--id id` on `config` and waits for its ready line.
    pub async fn start(kind: &str, id: &str, config: &TestConfig) -> Self {
        let path = config.path.display().to_string();
        Self::start_bin(
            &format!("shaddock-{kind}"),
            id,
            &["--config", &path, "--id", id],
        )
        .await
    }

    /// Starts binary `bin` of the workspace with `args` and waits for its ready line.
    pub async fn start_bin(bin: &str, id: &str, args: &[&str]) -> Self {
        Self::start_bin_ready(bin, id, args, 1).await.0
    }

    /// Starts `shaddock all` (every server of `config` in one process, no web client) and
    /// returns it with the client port of each frontend by server id.
    pub async fn start_standalone(
        config: &TestConfig,
    ) -> (Self, std::collections::HashMap<String, u16>) {
        let path = config.path.display().to_string();
        let n = std::fs::read_to_string(&config.path)
            .map(|t| t.matches("[[servers]]").count())
            .unwrap_or(0);
        let (server, lines) = Self::start_bin_ready(
            "shaddock",
            "all",
            &["--config", &path, "all", "--no-web"],
            n,
        )
        .await;
        let ports = lines
            .iter()
            .filter_map(|l| {
                let id = l
                    .split_whitespace()
                    .find_map(|kv| kv.strip_prefix("server_id="))?;
                let port = l
                    .split_whitespace()
                    .find_map(|kv| kv.strip_prefix("client_port="))?;
                Some((id.to_owned(), port.parse().ok()?))
            })
            .collect();
        (server, ports)
    }

    async fn start_bin_ready(
        bin: &str,
        id: &str,
        args: &[&str],
        ready_lines: usize,
    ) -> (Self, Vec<String>) {
        let bin = bin_dir().join(bin);
        assert!(
            bin.exists(),
            "{} is missing: run `cargo build --workspace --bins` first",
            bin.display()
        );
        let mut cmd = Command::new(&bin);
        cmd.args(args)
            .env("SHADDOCK_CLIENT_PORT", "0")
            .env("SHADDOCK_BIND", "127.0.0.1")
            .stdout(Stdio::piped())
            .stderr(if std::env::var_os("TEST_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .kill_on_drop(true);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "warn");
        }
        let mut child = cmd.spawn().expect("spawn server");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(30), async {
            let mut ready = Vec::new();
            while let Ok(Some(line)) = lines.next_line().await {
                if line.starts_with("shaddock ready") {
                    ready.push(line);
                    if ready.len() >= ready_lines.max(1) {
                        return Some(ready);
                    }
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("{} {id} did not become ready", bin.display()));
        // Keep draining stdout so the child never blocks on it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let client_port = ready[0]
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix("client_port="))
            .and_then(|p| p.parse().ok());
        let server = Self {
            id: id.to_owned(),
            client_port,
            child,
        };
        (server, ready)
    }

    /// `ws://127.0.0.1:<client port>`.
    pub fn url(&self) -> String {
        format!(
            "ws://127.0.0.1:{}",
            self.client_port.expect("a frontend has a client port")
        )
    }

    /// SIGKILL: a crash, no goodbye.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// SIGTERM, then wait for the exit (at most `within`); returns the exit success.
    pub async fn terminate(&mut self, within: Duration) -> Option<bool> {
        let pid = self.child.id()?;
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status();
        match tokio::time::timeout(within, self.child.wait()).await {
            Ok(Ok(status)) => Some(status.success()),
            _ => None,
        }
    }
}
