//! A TCP proxy a fault test puts between one server and NATS, to lose exactly what that
//! server sends in a moment (a connection that dies with bytes on their way) without touching
//! anyone else's connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What a connection throws away: what clients send (`.0`), what they are sent (`.1`).
type Swallow = Arc<(AtomicBool, AtomicBool)>;

/// Forwards every connection made to [`TcpProxy::port`] to the target; dropped, it stops.
#[derive(Debug)]
pub struct TcpProxy {
    pub port: u16,
    /// The open connections' switches (a new connection forwards everything).
    open: Arc<Mutex<Vec<Swallow>>>,
    /// Bumped to close every connection open now.
    cuts: watch::Sender<u64>,
    accept: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// A proxy on a free port of 127.0.0.1 to `target` (`host:port`).
    pub async fn start(target: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy bind");
        let port = listener.local_addr().expect("proxy addr").port();
        let open: Arc<Mutex<Vec<Swallow>>> = Arc::default();
        let cuts = watch::Sender::new(0u64);
        let (target, conns, cut) = (target.to_owned(), open.clone(), cuts.clone());
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&target).await else {
                    continue;
                };
                let swallow = Swallow::default();
                conns.lock().push(swallow.clone());
                tokio::spawn(forward(client, server, swallow, cut.subscribe()));
            }
        });
        Self {
            port,
            open,
            cuts,
            accept,
        }
    }

    /// From now on, what clients send on the open connections goes nowhere (they stay open).
    pub fn swallow_sent(&self) {
        for s in self.open.lock().iter() {
            s.0.store(true, Ordering::SeqCst);
        }
    }

    /// From now on, what is sent to clients on the open connections goes nowhere.
    pub fn swallow_received(&self) {
        for s in self.open.lock().iter() {
            s.1.store(true, Ordering::SeqCst);
        }
    }

    /// Closes every open connection (swallowing to the end); the next ones forward whole.
    pub fn cut(&self) {
        self.open.lock().clear();
        self.cuts.send_modify(|n| *n += 1);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cuts.send_modify(|n| *n += 1);
    }
}

async fn forward(client: TcpStream, server: TcpStream, swallow: Swallow, mut cut: watch::Receiver<u64>) {
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
