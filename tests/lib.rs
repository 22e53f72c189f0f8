//! Test harness: start the real Shaddock binaries on port 0 in a private namespace, read
//! the port each one reports, and kill them when the test ends ([`Server`]); or a whole
//! cluster inside the test process ([`spawn_cluster`]); and [`eventually`] to wait for a
//! condition.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub mod chaos;
pub mod eventually;
pub mod in_process;
pub mod proxy;

pub use eventually::{eventually, eventually_true};
pub use in_process::{Backing, ClusterSpec, TestCluster, TestUser, spawn_cluster};

/// A unique namespace (NATS subject prefix, Redis key prefix) for one test.
pub fn namespace(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("e2e-{tag}-{}-{}", std::process::id(), nanos % 1_000_000_000_000)
}

/// The directory holding the workspace's binaries (target/debug or target/release).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/e2e-xxxx (a test) or target/<profile>/shaddock-chaos -> target/<profile>
    let dir = exe.parent().expect("target dir");
    if dir.ends_with("deps") {
        dir.parent().expect("target dir").to_path_buf()
    } else {
        dir.to_path_buf()
    }
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
        Self::with_urls(tag, extra, "nats://127.0.0.1:4222", "redis://127.0.0.1:6379")
    }

    /// A config whose servers use these NATS and Redis servers.
    pub fn with_urls(tag: &str, extra: &str, nats_url: &str, redis_url: &str) -> Self {
        let namespace = namespace(tag);
        let dir = std::env::temp_dir().join(&namespace);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("cluster.toml");
        let text = format!(
            "namespace = \"{namespace}\"\nnats_url = \"{nats_url}\"\nredis_url = \"{redis_url}\"\n\
             [registry]\nheartbeat_ms = 200\nlapse_ms = 1200\nhandoff_ms = 500\nsync_ms = 500\n\
             [rpc]\ntimeout_ms = 2000\n{extra}\n"
        );
        std::fs::write(&path, text).expect("write config");
        Self {
            namespace,
            path,
            _dir: TempDir(dir),
        }
    }

    /// The same cluster (namespace, Redis, settings) for a server that reaches NATS at
    /// `nats_url` instead (through a [`proxy::TcpProxy`], say).
    pub fn beside(&self, nats_url: &str) -> Self {
        self.with_line("nats_url = ", &format!("nats_url = \"{nats_url}\""), "beside")
    }

    /// The same cluster with one setting changed for the servers started on it: the line
    /// that starts with `key = ` becomes `key = value` (`sync_ms`, `500` → `60000`, say).
    pub fn with_setting(&self, key: &str, value: &str) -> Self {
        self.with_line(&format!("{key} = "), &format!("{key} = {value}"), key)
    }

    fn with_line(&self, starts: &str, line: &str, tag: &str) -> Self {
        let text = std::fs::read_to_string(&self.path).expect("read config");
        let text: Vec<String> = text
            .lines()
            .map(|l| {
                if l.starts_with(starts) {
                    line.to_owned()
                } else {
                    l.to_owned()
                }
            })
            .collect();
        let dir = std::env::temp_dir().join(format!("{}-{tag}-{}", self.namespace, std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("cluster.toml");
        std::fs::write(&path, text.join("\n")).expect("write config");
        Self {
            namespace: self.namespace.clone(),
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
    /// The port of /healthz, /readyz, /metrics and /admin.
    pub admin_port: Option<u16>,
    child: Child,
}

impl Server {
    /// Starts `shaddock-<kind>` with `--id id` on `config` and waits for its ready line.
    /// With `E2E_SERVER_LOGS=<dir>` set, its log goes to `<dir>/<namespace>-<id>.log`
    /// (for reading what the servers decided when a test failed).
    pub async fn start(kind: &str, id: &str, config: &TestConfig) -> Self {
        if let Some(dir) = std::env::var_os("E2E_SERVER_LOGS") {
            let dir = Path::new(&dir);
            let _ = std::fs::create_dir_all(dir);
            let log = dir.join(format!("{}-{id}.log", config.namespace));
            return Self::start_logged(kind, id, config, &log).await;
        }
        let path = config.path.display().to_string();
        Self::start_bin(&format!("shaddock-{kind}"), id, &["--config", &path, "--id", id]).await
    }

    /// [`Server::start`], with its log (stderr) appended to `log`.
    pub async fn start_logged(kind: &str, id: &str, config: &TestConfig, log: &Path) -> Self {
        let path = config.path.display().to_string();
        let args = ["--config", path.as_str(), "--id", id];
        Self::start_bin_logged(&format!("shaddock-{kind}"), id, &args, 1, Some(log))
            .await
            .0
    }

    /// Starts binary `bin` of the workspace with `args` and waits for its ready line.
    pub async fn start_bin(bin: &str, id: &str, args: &[&str]) -> Self {
        Self::start_bin_ready(bin, id, args, 1).await.0
    }

    /// Starts `shaddock all` (every server of `config` in one process, no web client) and
    /// returns it with the client port of each frontend by server id.
    pub async fn start_standalone(config: &TestConfig) -> (Self, std::collections::HashMap<String, u16>) {
        let path = config.path.display().to_string();
        let n = std::fs::read_to_string(&config.path)
            .map(|t| t.matches("[[servers]]").count())
            .unwrap_or(0);
        let (server, lines) =
            Self::start_bin_ready("shaddock", "all", &["--config", &path, "all", "--no-web"], n).await;
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

    async fn start_bin_ready(bin: &str, id: &str, args: &[&str], ready_lines: usize) -> (Self, Vec<String>) {
        Self::start_bin_logged(bin, id, args, ready_lines, None).await
    }

    async fn start_bin_logged(
        bin: &str,
        id: &str,
        args: &[&str],
        ready_lines: usize,
        log: Option<&Path>,
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
            .env("SHADDOCK_ADMIN_PORT", "0")
            .env("SHADDOCK_BIND", "127.0.0.1")
            .stdout(Stdio::piped())
            .stderr(match log {
                Some(path) => std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map(Stdio::from)
                    .unwrap_or_else(|_| Stdio::null()),
                None if std::env::var_os("TEST_LOG").is_some() => Stdio::inherit(),
                None => Stdio::null(),
            })
            .kill_on_drop(true);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "warn");
        }
        let mut child = cmd.spawn().expect("spawn server");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut ready = tokio::time::timeout(Duration::from_secs(30), async {
            let mut ready = Vec::new();
            while let Ok(Some(line)) = lines.next_line().await {
                if line.starts_with("shaddock admin") {
                    ready.push(line);
                    continue;
                }
                if line.starts_with("shaddock ready") {
                    ready.push(line);
                    if ready.iter().filter(|l| l.starts_with("shaddock ready")).count() >= ready_lines.max(1)
                    {
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
        let admin_port = ready
            .iter()
            .find(|l| l.starts_with("shaddock admin"))
            .and_then(|l| l.split_whitespace().find_map(|kv| kv.strip_prefix("admin_port=")))
            .and_then(|p| p.parse().ok());
        ready.retain(|l| l.starts_with("shaddock ready"));
        let client_port = ready[0]
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix("client_port="))
            .and_then(|p| p.parse().ok());
        let server = Self {
            id: id.to_owned(),
            client_port,
            admin_port,
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

    /// Sends a signal by name (`STOP`, `CONT`, `TERM`...).
    pub fn signal(&self, name: &str) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .arg(format!("-{name}"))
                .arg(pid.to_string())
                .status();
        }
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

/// A free TCP port on 127.0.0.1 (for the private servers of fault tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Waits until `child` listens on `port`; false when it exits first (it could not bind).
async fn wait_listening(child: &mut Child, port: u16) -> bool {
    for _ in 0..100 {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return false;
        }
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nothing listens on {port}");
}

/// A private nats-server or redis-server a fault test may kill; killed on drop.
#[derive(Debug)]
pub struct PrivateServer {
    pub port: u16,
    program: &'static str,
    dir: PathBuf,
    child: Option<Child>,
    /// Further arguments (a NATS cluster node's routes).
    args: Vec<String>,
    /// A nats-server's monitoring port (`/connz`), for a cluster node.
    pub monitor_port: Option<u16>,
}

impl PrivateServer {
    /// `nats-server` on a free port.
    pub async fn nats() -> Self {
        Self::start("nats-server", free_port()).await
    }

    /// `redis-server` on a free port, keeping its data in an append-only file.
    pub async fn redis() -> Self {
        Self::start("redis-server", free_port()).await
    }

    /// `redis-server` on a free port that keeps nothing: a restart loses every key.
    pub async fn redis_without_data() -> Self {
        Self::start("redis-server-volatile", free_port()).await
    }

    /// A NATS cluster of `n` nodes on free ports, each routed to every other.
    pub async fn nats_cluster(n: usize) -> Vec<Self> {
        let cluster_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let routes: Vec<String> = cluster_ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect();
        let mut nodes = Vec::new();
        for (i, cluster_port) in cluster_ports.iter().enumerate() {
            let monitor = free_port();
            let others: Vec<&str> = routes
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, r)| r.as_str())
                .collect();
            let args = vec![
                "--cluster_name".to_owned(),
                "shaddock-test".to_owned(),
                "--cluster".to_owned(),
                format!("nats://127.0.0.1:{cluster_port}"),
                "--routes".to_owned(),
                others.join(","),
                "-m".to_owned(),
                monitor.to_string(),
            ];
            let mut node = Self::prepare("nats-server", free_port(), args);
            node.monitor_port = Some(monitor);
            node.restart().await;
            nodes.push(node);
        }
        nodes
    }

    /// Starts it on `port`, or on another free port when another test took that one first
    /// (a port is only free when it was looked at).
    async fn start(program: &'static str, port: u16) -> Self {
        let mut s = Self::prepare(program, port, Vec::new());
        for _ in 0..10 {
            if s.launch().await {
                return s;
            }
            s = Self::prepare(program, free_port(), Vec::new());
        }
        panic!("{program} did not start");
    }

    fn prepare(program: &'static str, port: u16, args: Vec<String>) -> Self {
        let dir = std::env::temp_dir().join(format!("{}-{program}-{port}", namespace("private")));
        std::fs::create_dir_all(&dir).expect("dir");
        Self {
            port,
            program,
            dir,
            child: None,
            args,
            monitor_port: None,
        }
    }

    pub fn url(&self) -> String {
        match self.program {
            "nats-server" => format!("nats://127.0.0.1:{}", self.port),
            _ => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// Starts it (again) on the same port with the same data directory.
    pub async fn restart(&mut self) {
        assert!(
            self.launch().await,
            "{} exited at once on port {}",
            self.program,
            self.port
        );
    }

    /// Starts it and waits until it listens; false when it exited first.
    async fn launch(&mut self) -> bool {
        let port = self.port.to_string();
        let program = if self.program == "redis-server-volatile" {
            "redis-server"
        } else {
            self.program
        };
        let mut cmd = Command::new(program);
        match self.program {
            "nats-server" => {
                cmd.args(["-a", "127.0.0.1", "-p", &port]).args(&self.args);
            }
            volatile_or_not => {
                cmd.args(["--bind", "127.0.0.1", "--port", &port, "--save", ""]);
                if volatile_or_not == "redis-server-volatile" {
                    cmd.args(["--appendonly", "no"]);
                } else {
                    cmd.args(["--appendonly", "yes", "--appendfsync", "always"])
                        .arg("--dir")
                        .arg(&self.dir);
                }
            }
        }
        cmd.stdout(Stdio::null()).stderr(Stdio::null()).kill_on_drop(true);
        let child = self.child.insert(
            cmd.spawn()
                .unwrap_or_else(|e| panic!("{} cannot start: {e}", self.program)),
        );
        wait_listening(child, self.port).await
    }

    /// Deletes what it keeps on disk (stop it first): a restart then begins empty.
    pub fn wipe(&self) {
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                let _ = std::fs::remove_dir_all(e.path()).or_else(|_| std::fs::remove_file(e.path()));
            }
        }
    }

    /// Sends a signal by name (`STOP`, `CONT`): a network pause, seen from everyone else.
    pub fn signal(&self, name: &str) {
        if let Some(pid) = self.child.as_ref().and_then(Child::id) {
            let _ = std::process::Command::new("kill")
                .arg(format!("-{name}"))
                .arg(pid.to_string())
                .status();
        }
    }

    /// Stops it: SIGTERM (Redis writes its data), then waits for the exit.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                let _ = std::process::Command::new("kill")
                    .arg("-TERM")
                    .arg(pid.to_string())
                    .status();
            }
            if tokio::time::timeout(Duration::from_secs(5), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Server {
    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// A minimal HTTP/1.1 request to 127.0.0.1:`port` (tests need no HTTP client crate):
/// returns the status code and the body.
pub async fn http(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let body = body.unwrap_or("");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A tiny deterministic generator (xorshift64), so load and fuzz inputs repeat run to run.
#[derive(Debug, Clone)]
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}
