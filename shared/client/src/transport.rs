//! The client's two transports, chosen by the URL's scheme: `ws://` (`wss://`) for WebSocket,
//! `tcp://` (`tls://`) for Pomelo packages straight on a TCP stream, as libpomelo2 and the
//! Unity and cocos2d-x SDKs speak to a hybridconnector.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use shaddock_protocol::package;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::http::Uri;
use tokio_util::codec::{Decoder, FramedRead};

use crate::ClientError;

/// A connection's byte stream: TCP, or TLS over it.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}
type BoxIo = Box<dyn Io>;

pub(crate) enum Reader {
    Ws(SplitStream<WebSocketStream<BoxIo>>),
    Tcp(FramedRead<ReadHalf<BoxIo>, Packages>),
}

pub(crate) enum Writer {
    Ws(SplitSink<WebSocketStream<BoxIo>, Message>),
    Tcp(WriteHalf<BoxIo>),
}

/// Opens `url`; `tls` is used for `wss://` and `tls://`.
pub(crate) async fn open(
    url: &str,
    tls: Option<&Arc<tokio_rustls::rustls::ClientConfig>>,
) -> Result<(Reader, Writer), ClientError> {
    let uri: Uri = url
        .parse()
        .map_err(|e| ClientError::Protocol(format!("bad url {url}: {e}")))?;
    let scheme = uri.scheme_str().unwrap_or("ws");
    let host = uri
        .host()
        .ok_or_else(|| ClientError::Protocol(format!("no host in {url}")))?
        .to_owned();
    let secure = matches!(scheme, "wss" | "tls");
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(io_error)?;
    let _ = tcp.set_nodelay(true);
    let io: BoxIo = if secure {
        let config = tls
            .cloned()
            .ok_or_else(|| ClientError::Protocol(format!("{url} needs ClientOptions::tls")))?;
        let name = tokio_rustls::rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let stream = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(io_error)?;
        Box::new(stream)
    } else {
        Box::new(tcp)
    };
    match scheme {
        "ws" | "wss" => {
            // tungstenite checks the scheme against the stream it is given: a TLS stream
            // here is already encrypted, so it is told `ws`.
            let plain = url.replacen("wss://", "ws://", 1);
            let (ws, _) = tokio_tungstenite::client_async(plain, io).await?;
            let (sink, stream) = ws.split();
            Ok((Reader::Ws(stream), Writer::Ws(sink)))
        }
        "tcp" | "tls" => {
            let (r, w) = tokio::io::split(io);
            Ok((Reader::Tcp(FramedRead::new(r, Packages)), Writer::Tcp(w)))
        }
        other => Err(ClientError::Protocol(format!("unknown scheme {other}"))),
    }
}

fn io_error(e: std::io::Error) -> ClientError {
    ClientError::Protocol(format!("connect: {e}"))
}

impl Reader {
    /// The next frame of package bytes; `None` once the server closed.
    pub(crate) async fn next(&mut self) -> Option<Result<Bytes, ClientError>> {
        match self {
            Reader::Ws(stream) => loop {
                return match stream.next().await? {
                    Err(e) => Some(Err(e.into())),
                    Ok(Message::Binary(b)) => Some(Ok(b)),
                    Ok(Message::Text(t)) => Some(Ok(Bytes::copy_from_slice(t.as_bytes()))),
                    Ok(Message::Close(_)) => None,
                    Ok(_) => continue,
                };
            },
            Reader::Tcp(framed) => framed
                .next()
                .await
                .map(|r| r.map_err(|e| ClientError::Protocol(e.to_string()))),
        }
    }
}

impl Writer {
    /// Sends one frame (WebSocket) or writes the bytes (TCP).
    pub(crate) async fn send(&mut self, bytes: Bytes) -> Result<(), ClientError> {
        match self {
            Writer::Ws(sink) => Ok(sink.send(Message::Binary(bytes)).await?),
            Writer::Tcp(w) => w
                .write_all(&bytes)
                .await
                .map_err(|e| ClientError::Protocol(e.to_string())),
        }
    }

    /// Ends the connection: a close frame, or a TCP shutdown.
    pub(crate) async fn close(&mut self) {
        match self {
            Writer::Ws(sink) => {
                let _ = sink.send(Message::Close(None)).await;
                let _ = sink.close().await;
            }
            Writer::Tcp(w) => {
                let _ = w.shutdown().await;
            }
        }
    }
}

/// Cuts a TCP stream into whole packages.
pub(crate) struct Packages;

impl Decoder for Packages {
    type Item = Bytes;
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, std::io::Error> {
        match package::frame_len(src) {
            Err(e) => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                e.to_string(),
            )),
            Ok(Some(len)) if src.len() >= len => Ok(Some(src.split_to(len).freeze())),
            Ok(_) => Ok(None),
        }
    }
}
