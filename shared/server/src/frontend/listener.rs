//! A frontend's port: accept, the TLS handshake when TLS is on, sniff the first byte within a
//! deadline, then either hand the
//! connection to the HTTP router (the WebSocket upgrade) or run it as a raw TCP client, as
//! Pomelo's hybridconnector does. axum's own `serve` sets no timer on hyper, so a client that
//! connects and never sends its request would hold a socket for ever.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::Frontend;
use super::transport::{BoxIo, Sniffed, is_http};

/// Accepts on `listener` until `token` is cancelled; each connection has `deadline` to send
/// its first byte and then (WebSocket) its HTTP request. HTTP gets `router`, with the peer's
/// address as `ConnectInfo`; anything else is a raw TCP client of `fe`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    fe: Arc<Frontend>,
    token: CancellationToken,
    deadline: Duration,
) {
    loop {
        let accepted = tokio::select! {
            _ = token.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of descriptors, say: back off a little rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let router = router.clone();
        let fe = fe.clone();
        tokio::spawn(async move {
            let io: BoxIo = match &fe.tls {
                None => Box::new(tcp),
                Some(tls) => match tokio::time::timeout(deadline, tls.accept(tcp)).await {
                    Ok(Ok(stream)) => Box::new(stream),
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                },
            };
            let Some((first, io)) = sniff(io, deadline).await else {
                tracing::debug!(%peer, "connection sent nothing in time");
                return;
            };
            if !is_http(first) {
                fe.serve_tcp(Box::new(Sniffed::new(first, io)), peer);
                return;
            }
            let service = router.layer(axum::Extension(ConnectInfo::<SocketAddr>(peer)));
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(deadline)
                .serve_connection(
                    TokioIo::new(Sniffed::new(first, io)),
                    TowerToHyperService::new(service),
                )
                .with_upgrades()
                .await;
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "connection ended before its upgrade");
            }
        });
    }
}

/// The connection's first byte, read within `deadline`; `None` if it closed or sent nothing.
async fn sniff(mut io: BoxIo, deadline: Duration) -> Option<(u8, BoxIo)> {
    let mut first = [0u8; 1];
    match tokio::time::timeout(deadline, io.read(&mut first)).await {
        Ok(Ok(1)) => Some((first[0], io)),
        _ => None,
    }
}
