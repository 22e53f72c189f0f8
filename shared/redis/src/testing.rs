//! A private Redis Cluster on free local ports, for tests: `redis-server` nodes in cluster mode,
//! formed by `redis-cli --cluster create`. Killed when dropped.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

/// One node of a [`LocalCluster`].
#[derive(Debug)]
pub struct Node {
    pub port: u16,
    child: Option<Child>,
}

impl Node {
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

/// A Redis Cluster of `masters` masters with `replicas` replicas each.
#[derive(Debug)]
pub struct LocalCluster {
    pub nodes: Vec<Node>,
    dir: PathBuf,
}

/// A port that is free, with its cluster bus port (+10000) free too.
fn free_port() -> u16 {
    loop {
        let Ok(listener) = std::net::TcpListener::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(port) = listener.local_addr().map(|a| a.port()) else {
            continue;
        };
        if port < 55000 && std::net::TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return port;
        }
    }
}

impl LocalCluster {
    /// Starts the nodes, forms the cluster and waits until every node says it is ok.
    /// Panics when it cannot (a test's set-up).
    pub async fn start(masters: usize, replicas: usize) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let dir = std::env::temp_dir().join(format!("shaddock-redis-cluster-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let mut nodes = Vec::new();
        for _ in 0..masters * (1 + replicas) {
            nodes.push(start_node(&dir).await);
        }
        let addresses: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let formed = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .expect("redis-cli runs");
        assert!(formed.success(), "redis-cli --cluster create failed");
        let cluster = Self { nodes, dir };
        for node in &cluster.nodes {
            let port = node.port;
            wait_for_async(|| async move { cluster_ok(port).await }).await;
            // A replica is only a replica once it has synced: a failover needs it.
            wait_for_async(|| async move {
                let info = cli(port, &["INFO", "replication"]).await.unwrap_or_default();
                info.contains("role:master") || info.contains("master_link_status:up")
            })
            .await;
        }
        cluster
    }

    /// The seeds to give a client: every node, comma-separated.
    pub fn url(&self) -> String {
        self.nodes.iter().map(Node::url).collect::<Vec<_>>().join(",")
    }

    /// Kills node `i` (SIGKILL: no goodbye, as a crashed machine).
    pub async fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill().await;
        }
    }

    /// The index of the node that is master for `slot` now.
    pub async fn master_of(&self, slot: u16) -> Option<usize> {
        for node in self.nodes.iter().filter(|n| n.is_running()) {
            let Some(reply) = cli(node.port, &["CLUSTER", "SLOTS"]).await else {
                continue;
            };
            // redis-cli prints the nested reply flat: start, end, host, port, id, (replicas…).
            let lines: Vec<&str> = reply.lines().collect();
            let mut k = 0;
            while k + 3 < lines.len() {
                let (a, b) = (lines[k].parse::<u16>(), lines[k + 1].parse::<u16>());
                if let (Ok(a), Ok(b)) = (a, b)
                    && (a..=b).contains(&slot)
                    && let Ok(port) = lines[k + 3].parse::<u16>()
                {
                    return self.nodes.iter().position(|n| n.port == port);
                }
                k += 1;
            }
            return None;
        }
        None
    }

    /// Waits until node `i` is a master (its replica took over) and the cluster is ok again.
    pub async fn wait_until_master(&self, i: usize, within: Duration) -> bool {
        let port = self.nodes[i].port;
        let started = Instant::now();
        while started.elapsed() < within {
            let role = cli(port, &["ROLE"]).await.unwrap_or_default();
            if role.starts_with("master") && cluster_ok(port).await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// Waits until replica `r` has every write master `m` has made so far (replication is
    /// asynchronous: a master killed before that loses what its replica lacks).
    pub async fn wait_replicated(&self, m: usize, r: usize, within: Duration) -> bool {
        let offset = |port: u16, field: &'static str| async move {
            let info = cli(port, &["INFO", "replication"]).await.unwrap_or_default();
            info.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let Some(target) = offset(self.nodes[m].port, "master_repl_offset:").await else {
            return false;
        };
        let started = Instant::now();
        while started.elapsed() < within {
            if offset(self.nodes[r].port, "slave_repl_offset:")
                .await
                .is_some_and(|o| o >= target)
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// The replica of node `i` (a master), if one runs.
    pub async fn replica_of(&self, i: usize) -> Option<usize> {
        let id = cli(self.nodes[i].port, &["CLUSTER", "MYID"]).await?;
        let id = id.trim().to_owned();
        for (j, node) in self.nodes.iter().enumerate() {
            if j == i || !node.is_running() {
                continue;
            }
            let role = cli(node.port, &["ROLE"]).await.unwrap_or_default();
            let info = cli(node.port, &["CLUSTER", "NODES"]).await.unwrap_or_default();
            let mine = info.lines().find(|l| l.contains("myself"));
            if role.starts_with("slave") && mine.is_some_and(|l| l.contains(&id)) {
                return Some(j);
            }
        }
        None
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(child) = node.child.as_mut() {
                let _ = child.start_kill();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What `redis-cli -p port args…` prints, if it answers.
/// Starts one cluster-mode node on a free port and waits until it accepts connections. A
/// port is only free when it was looked at: another test may take it (or its bus port) before
/// the node binds it, and the node then exits; it is tried again on another port.
async fn start_node(dir: &std::path::Path) -> Node {
    for _ in 0..10 {
        let port = free_port();
        let mut child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "1000"])
            .arg("--cluster-config-file")
            .arg(dir.join(format!("nodes-{port}.conf")))
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server starts");
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if matches!(child.try_wait(), Ok(Some(_))) {
                break; // it could not bind: another port
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Node {
                    port,
                    child: Some(child),
                };
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    panic!("a redis node did not start");
}

async fn cli(port: u16, args: &[&str]) -> Option<String> {
    let out = tokio::time::timeout(
        Duration::from_secs(2),
        Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(args)
            .output(),
    )
    .await
    .ok()?
    .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

async fn cluster_ok(port: u16) -> bool {
    cli(port, &["CLUSTER", "INFO"])
        .await
        .is_some_and(|info| info.contains("cluster_state:ok"))
}

async fn wait_for_async<F, Fut>(ready: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !ready().await {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the redis cluster did not form"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
