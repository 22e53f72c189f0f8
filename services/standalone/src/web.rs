//! The web chat client: three static files compiled into the binary.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const INDEX: &str = include_str!("../web/index.html");
const APP_JS: &str = include_str!("../web/app.js");
const POMELO_JS: &str = include_str!("../web/pomelo.js");
const STYLE: &str = include_str!("../web/style.css");

fn router() -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX) }),
        )
        .route(
            "/index.html",
            get(|| async { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX) }),
        )
        .route("/app.js", get(|| async { js(APP_JS) }))
        .route("/pomelo.js", get(|| async { js(POMELO_JS) }))
        .route(
            "/style.css",
            get(|| async { ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE) }),
        )
}

fn js(body: &'static str) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], body)
}

pub async fn bind(bind: &str, port: u16) -> anyhow::Result<TcpListener> {
    Ok(shaddock_server::app::listen(bind, port).await?)
}

pub async fn serve(listener: TcpListener, token: CancellationToken) {
    if let Err(e) = axum::serve(listener, router())
        .with_graceful_shutdown(token.cancelled_owned())
        .await
    {
        tracing::error!(error = %e, "web server failed");
    }
}

/// `shaddock web`: serve until ctrl-c/SIGTERM.
pub async fn run(bind_addr: &str, port: u16) -> anyhow::Result<()> {
    let listener = bind(bind_addr, port).await?;
    let port = listener.local_addr()?.port();
    println!("shaddock ready server_id=web server_type=web client_port={port}");
    let token = CancellationToken::new();
    let stop = token.clone();
    tokio::spawn(async move {
        shaddock_server::shutdown::signal().await;
        stop.cancel();
    });
    serve(listener, token).await;
    Ok(())
}
