//! The two transports of a frontend's port, as Pomelo's hybridconnector has them: WebSocket
//! (each binary or text message holds packages) and raw TCP (a stream of packages, cut by
//! their headers). The socket state machine sees only frames of package bytes.
//!
//! The first byte a client sends decides: an HTTP request starts with a method's capital
//! letter, a Pomelo package with its type (1 to 5).

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use bytes::{Bytes, BytesMut};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use shaddock_protocol::package;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, ReadHalf, WriteHalf};
use tokio_util::codec::{BytesCodec, Decoder, FramedRead, FramedWrite};

/// Any byte stream a client connection runs on: TCP, or TLS over TCP.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// A boxed connection.
pub type BoxIo = Box<dyn Io>;

/// True when a connection's first byte starts an HTTP request (`GET`, `POST`, ...).
pub fn is_http(first: u8) -> bool {
    first.is_ascii_uppercase()
}

/// A connection whose first byte was read to sniff it, and is given back to the next read.
pub struct Sniffed<S> {
    first: Option<u8>,
    inner: S,
}

impl<S> Sniffed<S> {
    pub fn new(first: u8, inner: S) -> Self {
        Self {
            first: Some(first),
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Sniffed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if let Some(b) = self.first
            && buf.remaining() > 0
        {
            buf.put_slice(&[b]);
            self.first = None;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Sniffed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Cuts a TCP stream into whole packages; an unknown type or a package over `max` bytes is
/// an error (the connection closes, as Pomelo's tcpsocket does).
#[derive(Debug)]
pub struct PackageCodec {
    pub max: usize,
}

impl Decoder for PackageCodec {
    type Item = Bytes;
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, std::io::Error> {
        let bad = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        let Some(len) = package::frame_len(src).map_err(|e| bad(e.to_string()))? else {
            return Ok(None);
        };
        if len - package::HEADER_LEN > self.max {
            return Err(bad(format!("package of {len} bytes over the limit")));
        }
        if src.len() < len {
            src.reserve(len - src.len());
            return Ok(None);
        }
        Ok(Some(src.split_to(len).freeze()))
    }
}

/// A TCP client's read buffer to start with; it grows to the largest package.
const TCP_READ_BUFFER: usize = 512;

/// Where a socket's frames come from.
pub enum FrameReader {
    Ws(SplitStream<WebSocket>),
    Tcp(FramedRead<ReadHalf<BoxIo>, PackageCodec>),
}

/// Where a socket's frames go.
pub enum FrameWriter {
    Ws(SplitSink<WebSocket, Message>),
    Tcp(FramedWrite<WriteHalf<BoxIo>, BytesCodec>),
}

/// A transport split in its two halves.
pub fn websocket(ws: WebSocket) -> (FrameReader, FrameWriter) {
    let (sink, stream) = ws.split();
    (FrameReader::Ws(stream), FrameWriter::Ws(sink))
}

/// A raw TCP (or TLS) connection of Pomelo packages.
pub fn tcp(io: BoxIo, max_package: usize) -> (FrameReader, FrameWriter) {
    let (r, w) = tokio::io::split(io);
    let reader = FramedRead::with_capacity(r, PackageCodec { max: max_package }, TCP_READ_BUFFER);
    (
        FrameReader::Tcp(reader),
        FrameWriter::Tcp(FramedWrite::new(w, BytesCodec::new())),
    )
}

impl FrameReader {
    /// The next frame of package bytes; `None` when the client closed.
    pub async fn next(&mut self) -> Option<Result<Bytes, String>> {
        match self {
            FrameReader::Ws(stream) => loop {
                return match stream.next().await? {
                    Err(e) => Some(Err(e.to_string())),
                    Ok(Message::Binary(b)) => Some(Ok(b)),
                    Ok(Message::Text(t)) => Some(Ok(Bytes::copy_from_slice(t.as_str().as_bytes()))),
                    Ok(Message::Close(_)) => None,
                    Ok(_) => continue, // ping, pong
                };
            },
            FrameReader::Tcp(framed) => framed.next().await.map(|r| r.map_err(|e| e.to_string())),
        }
    }
}

impl FrameWriter {
    /// Queues a frame without flushing.
    pub async fn feed(&mut self, frame: Bytes) -> Result<(), String> {
        match self {
            FrameWriter::Ws(sink) => sink.feed(Message::Binary(frame)).await.map_err(|e| e.to_string()),
            FrameWriter::Tcp(w) => w.feed(frame).await.map_err(|e| e.to_string()),
        }
    }

    pub async fn flush(&mut self) -> Result<(), String> {
        match self {
            FrameWriter::Ws(sink) => sink.flush().await.map_err(|e| e.to_string()),
            FrameWriter::Tcp(w) => SinkExt::<Bytes>::flush(w).await.map_err(|e| e.to_string()),
        }
    }

    /// Ends the connection: a close frame (code 1000, as Pomelo's) or a TCP shutdown.
    pub async fn close(&mut self) -> Result<(), String> {
        match self {
            FrameWriter::Ws(sink) => {
                let close = Message::Close(Some(CloseFrame {
                    code: 1000,
                    reason: "".into(),
                }));
                sink.send(close).await.map_err(|e| e.to_string())?;
                sink.close().await.map_err(|e| e.to_string())
            }
            FrameWriter::Tcp(w) => SinkExt::<Bytes>::close(w).await.map_err(|e| e.to_string()),
        }
    }
}

impl<S> std::fmt::Debug for Sniffed<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sniffed")
            .field("first", &self.first)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for FrameReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FrameReader::Ws(_) => "FrameReader::Ws",
            FrameReader::Tcp(_) => "FrameReader::Tcp",
        })
    }
}

impl std::fmt::Debug for FrameWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FrameWriter::Ws(_) => "FrameWriter::Ws",
            FrameWriter::Tcp(_) => "FrameWriter::Tcp",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tcp_stream_is_cut_into_whole_packages() {
        let mut codec = PackageCodec { max: 16 };
        let mut buf = BytesMut::from(&[3u8, 0, 0, 0, 4, 0, 0, 2, b'{'][..]);
        assert_eq!(
            codec.decode(&mut buf).unwrap().as_deref(),
            Some(&[3u8, 0, 0, 0][..])
        );
        assert_eq!(codec.decode(&mut buf).unwrap(), None, "half a package waits");
        buf.extend_from_slice(b"}");
        assert_eq!(
            codec.decode(&mut buf).unwrap().as_deref(),
            Some(&b"\x04\x00\x00\x02{}"[..])
        );
        assert!(codec.decode(&mut BytesMut::from(&[9u8, 0, 0, 0][..])).is_err());
        assert!(
            codec.decode(&mut BytesMut::from(&[4u8, 0, 1, 0][..])).is_err(),
            "over the limit"
        );
        assert!(is_http(b'G') && is_http(b'P') && !is_http(1) && !is_http(0x16));
    }
}
