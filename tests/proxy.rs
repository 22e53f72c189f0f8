//! A TCP proxy a fault test puts between one server and NATS, to lose exactly what that
//! server sends in a moment (a connection that dies with bytes on their way) without touching
//! anyone else's connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Forwards every connection made to [`TcpProxy::port`] to the target; dropped, it stops.
#[derive(Debug)]
pub struct TcpProxy {
    pub port: u16,
    /// While set, what clients send (`.0`) or are sent (`.1`) is read and thrown away.
    swallow: Arc<(AtomicBool, AtomicBool)>,
    /// Bumped to close every connection open now.
    cuts: watch::Sender<u64>,
    accept: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// A proxy on a free port of 127.0.0.1 to `target` (`host:port`).
    pub async fn start(target: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy bind");
        let port = listener.local_addr().expect("proxy addr").port();
        let swallow = Arc::new((AtomicBool::new(false), AtomicBool::new(false)));
        let cuts = watch::Sender::new(0u64);
        let (target, flag, cut) = (target.to_owned(), swallow.clone(), cuts.clone());
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&target).await else {
                    continue;
                };
                tokio::spawn(forward(client, server, flag.clone(), cut.subscribe()));
            }
        });
        Self {
            port,
            swallow,
            cuts,
            accept,
        }
    }

    /// From now on, what clients send goes nowhere (the connections stay open).
    pub fn swallow_sent(&self) {
        self.swallow.0.store(true, Ordering::SeqCst);
    }

    /// From now on, what is sent to clients goes nowhere (the connections stay open).
    pub fn swallow_received(&self) {
        self.swallow.1.store(true, Ordering::SeqCst);
    }

    /// Closes every open connection and forwards again, whole, on the next ones.
    pub fn cut(&self) {
        self.swallow.0.store(false, Ordering::SeqCst);
        self.swallow.1.store(false, Ordering::SeqCst);
        self.cuts.send_modify(|n| *n += 1);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cuts.send_modify(|n| *n += 1);
    }
}

async fn forward(
    client: TcpStream,
    server: TcpStream,
    swallow: Arc<(AtomicBool, AtomicBool)>,
    mut cut: watch::Receiver<u64>,
) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    tokio::select! {
        _ = pipe(&mut client_read, &mut server_write, &swallow.0) => {}
        _ = pipe(&mut server_read, &mut client_write, &swallow.1) => {}
        _ = cut.changed() => {}
    }
}

/// Copies `from` to `to` until either closes, throwing away what it reads while `swallow` is set.
async fn pipe(
    from: &mut (impl AsyncReadExt + Unpin),
    to: &mut (impl AsyncWriteExt + Unpin),
    swallow: &AtomicBool,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if !swallow.load(Ordering::SeqCst) && to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
