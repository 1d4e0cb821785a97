//! Frame I/O over each transport.
//!
//! A session reads frame bodies from a [`FrameSource`] and writes batches of length-prefixed
//! frames to a [`FrameSink`]. TCP and TLS share one implementation, generic over the byte
//! stream, so plain TCP compiles to exactly the adaptive-read, coalesced-write path it always
//! had. WebSocket carries one frame per binary message: the batch the outbound queue built is
//! frozen once and each frame is sent as a slice of it, without a copy.
//!
//! Deadlines live here, where the waiting is: a partial frame must complete within
//! `limits.frame_timeout_ms` of when the reader first waited on it, and a wait with no partial
//! frame ends after the idle budget the session passes ([`ReadEnd::Idle`]), which the session
//! answers with a keepalive Ping and then, past `limits.idle_timeout_ms`, with TIMED_OUT. The
//! clock is read only when a read has to wait, never per frame. The buffer grows as bytes
//! arrive (by at most one read at a time), never by a frame's declared length.

use std::io;
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use arqonbus_proto::frame::{take_frame, FrameError};
use arqonbus_proto::v1::ErrorCode;
use arqonbus_proto::LENGTH_PREFIX_BYTES;
use async_tungstenite::tungstenite::{self, Message};
use async_tungstenite::{WebSocketReceiver, WebSocketSender};
use bytes::{Bytes, BytesMut};
use futures::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use futures::{SinkExt, StreamExt};

use super::error_frame;
use crate::metrics::ShardCounters;

/// Smallest read.
const MIN_READ_BYTES: usize = 512;
/// Largest single read; reads grow toward it while the client keeps them full.
const MAX_READ_BYTES: usize = 64 << 10;
/// After a fatal protocol error, how long to keep draining what the client still sends, so
/// closing does not reset the connection before the error frame is read.
const LINGER: Duration = Duration::from_secs(1);

/// Why the reader stopped.
pub(crate) enum ReadEnd {
    /// The client closed, or the shard stopped reading.
    Eof,
    /// A protocol error: send this frame, then close.
    Fatal(Bytes),
    Io,
    /// No frame arrived (and none is under way) within the idle budget of this call.
    Idle,
}

fn too_large(declared: usize, max: usize) -> ReadEnd {
    ReadEnd::Fatal(error_frame(
        0,
        ErrorCode::FrameTooLarge,
        &format!("frame of {declared} bytes exceeds max_frame_bytes ({max})"),
    ))
}

fn frame_timed_out(limit: Duration) -> ReadEnd {
    ReadEnd::Fatal(error_frame(
        0,
        ErrorCode::TimedOut,
        &format!(
            "a frame did not complete within limits.frame_timeout_ms ({} ms) of its first byte",
            limit.as_millis()
        ),
    ))
}

/// Where frame bodies come from.
pub(crate) trait FrameSource {
    /// The next frame body; `Ok(None)` at end of stream. `Err(ReadEnd::Idle)` when `idle` has
    /// passed since the reader began waiting with no frame under way (a later call counts from
    /// the same moment, until a frame arrives).
    async fn next(
        &mut self,
        counters: &ShardCounters,
        idle: Duration,
    ) -> Result<Option<Bytes>, ReadEnd>;
    /// Reads and discards until the client closes or `LINGER` passes.
    async fn linger(&mut self);
}

/// Where batches of length-prefixed frames go.
pub(crate) trait FrameSink {
    /// Writes every frame in `batch` and leaves it empty.
    async fn write_batch(&mut self, batch: &mut BytesMut) -> io::Result<()>;
    async fn close(&mut self);
}

/// Length-prefixed frames from a byte stream (TCP, TLS), with an adaptive read size.
pub(crate) struct StreamSource<S> {
    rd: ReadHalf<S>,
    buf: BytesMut,
    read_bytes: usize,
    max_frame_bytes: usize,
    frame_timeout: Duration,
    /// When the reader first waited in the current state: on a partial frame, or with nothing
    /// buffered. Cleared when a frame is taken.
    waiting_since: Option<Instant>,
}

impl<S: AsyncRead + AsyncWrite> StreamSource<S> {
    pub(crate) fn new(rd: ReadHalf<S>, max_frame_bytes: usize, frame_timeout: Duration) -> Self {
        Self {
            rd,
            buf: BytesMut::new(),
            read_bytes: MIN_READ_BYTES,
            max_frame_bytes,
            frame_timeout,
            waiting_since: None,
        }
    }
}

/// A TLS peer that closes without close_notify, and a read side shut down by the shard, both
/// read as the end of the stream.
fn is_eof(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::UnexpectedEof
}

impl<S: AsyncRead + AsyncWrite> FrameSource for StreamSource<S> {
    async fn next(
        &mut self,
        counters: &ShardCounters,
        idle: Duration,
    ) -> Result<Option<Bytes>, ReadEnd> {
        loop {
            match take_frame(&mut self.buf, self.max_frame_bytes) {
                Ok(Some(body)) => {
                    self.waiting_since = None;
                    return Ok(Some(body));
                }
                Ok(None) => {}
                Err(FrameError::TooLarge { declared, max }) => {
                    return Err(too_large(declared, max))
                }
            }
            if self.buf.is_empty() && self.buf.capacity() > MAX_READ_BYTES {
                // Give back what a burst grew.
                self.buf = BytesMut::new();
            }
            let partial = !self.buf.is_empty();
            let now = Instant::now();
            let since = *self.waiting_since.get_or_insert(now);
            let budget = if partial { self.frame_timeout } else { idle };
            let Some(left) = (since + budget).checked_duration_since(now) else {
                return Err(if partial {
                    counters.frame_timeouts.inc();
                    frame_timed_out(self.frame_timeout)
                } else {
                    ReadEnd::Idle
                });
            };
            let (rd, buf, want) = (&mut self.rd, &mut self.buf, self.read_bytes);
            let read = futures::future::poll_fn(|cx| {
                let start = buf.len();
                buf.resize(start + want, 0);
                let polled = Pin::new(&mut *rd).poll_read(cx, &mut buf[start..]);
                let n = match &polled {
                    Poll::Ready(Ok(n)) => *n,
                    _ => 0,
                };
                buf.truncate(start + n);
                if polled.is_pending() && buf.is_empty() {
                    // Nothing to read and no partial frame: while it waits, an idle connection
                    // holds no read buffer at all.
                    *buf = BytesMut::new();
                }
                polled
            });
            let read = glommio::timer::timeout(left, async { Ok(read.await) }).await;
            let n = match read {
                // The deadline passed: the loop above says which one.
                Err(_) => continue,
                Ok(Ok(n)) => n,
                Ok(Err(e)) if is_eof(&e) => 0,
                Ok(Err(_)) => return Err(ReadEnd::Io),
            };
            if n == 0 {
                return Ok(None);
            }
            if !partial {
                // The first bytes of a frame: its own deadline starts now.
                self.waiting_since = None;
            }
            counters.bytes_in.add(n as u64);
            if n == self.read_bytes {
                self.read_bytes = (self.read_bytes * 2).min(MAX_READ_BYTES);
            } else if n < self.read_bytes / 4 {
                self.read_bytes = (self.read_bytes / 2).max(MIN_READ_BYTES);
            }
        }
    }

    async fn linger(&mut self) {
        // On the heap: this future is part of every connection's task.
        let mut scratch = vec![0u8; 4096];
        let _ = glommio::timer::timeout(LINGER, async {
            while let Ok(n) = self.rd.read(&mut scratch).await {
                if n == 0 {
                    break;
                }
            }
            Ok(())
        })
        .await;
    }
}

/// Coalesced writes to a byte stream: the batch goes out as it is.
pub(crate) struct StreamSink<S> {
    wr: WriteHalf<S>,
}

impl<S> StreamSink<S> {
    pub(crate) fn new(wr: WriteHalf<S>) -> Self {
        Self { wr }
    }
}

impl<S: AsyncRead + AsyncWrite> FrameSink for StreamSink<S> {
    async fn write_batch(&mut self, batch: &mut BytesMut) -> io::Result<()> {
        self.wr.write_all(batch).await?;
        batch.clear();
        Ok(())
    }

    async fn close(&mut self) {
        let _ = self.wr.close().await;
    }
}

/// One frame per binary WebSocket message.
/// WebSocket framing is the library's, so a partial message is not visible here: a message
/// under way counts as idle time, and a stalled one ends at the idle deadline. (tungstenite grows
/// its buffer as bytes arrive, as the stream reader does.)
pub(crate) struct WsSource<S> {
    rx: WebSocketReceiver<S>,
    waiting_since: Option<Instant>,
}

impl<S> WsSource<S> {
    pub(crate) fn new(rx: WebSocketReceiver<S>) -> Self {
        Self {
            rx,
            waiting_since: None,
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> FrameSource for WsSource<S> {
    async fn next(
        &mut self,
        counters: &ShardCounters,
        idle: Duration,
    ) -> Result<Option<Bytes>, ReadEnd> {
        use tungstenite::error::{CapacityError, Error, ProtocolError};
        loop {
            let now = Instant::now();
            let since = *self.waiting_since.get_or_insert(now);
            let Some(left) = (since + idle).checked_duration_since(now) else {
                return Err(ReadEnd::Idle);
            };
            let next = glommio::timer::timeout(left, async { Ok(self.rx.next().await) }).await;
            let Ok(next) = next else { continue };
            let message = match next {
                None => return Ok(None),
                Some(Ok(m)) => m,
                Some(Err(Error::Capacity(CapacityError::MessageTooLong { size, max_size }))) => {
                    return Err(too_large(size, max_size))
                }
                Some(Err(
                    Error::ConnectionClosed
                    | Error::AlreadyClosed
                    | Error::Protocol(ProtocolError::ResetWithoutClosingHandshake),
                )) => return Ok(None),
                Some(Err(Error::Io(e))) if is_eof(&e) => return Ok(None),
                Some(Err(Error::Protocol(e))) => {
                    return Err(ReadEnd::Fatal(error_frame(
                        0,
                        ErrorCode::DecodeFailed,
                        &format!("WebSocket protocol error: {e}"),
                    )))
                }
                Some(Err(_)) => return Err(ReadEnd::Io),
            };
            match message {
                Message::Binary(body) => {
                    counters.bytes_in.add(body.len() as u64);
                    self.waiting_since = None;
                    return Ok(Some(body));
                }
                Message::Close(_) => return Ok(None),
                // Pings are answered by the WebSocket layer itself.
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                Message::Text(_) => {
                    return Err(ReadEnd::Fatal(error_frame(
                        0,
                        ErrorCode::DecodeFailed,
                        "frames are binary WebSocket messages; a text message is not a frame",
                    )))
                }
            }
        }
    }

    async fn linger(&mut self) {
        let _ = glommio::timer::timeout(LINGER, async {
            while let Some(Ok(_)) = self.rx.next().await {}
            Ok(())
        })
        .await;
    }
}

pub(crate) struct WsSink<S> {
    tx: WebSocketSender<S>,
}

impl<S> WsSink<S> {
    pub(crate) fn new(tx: WebSocketSender<S>) -> Self {
        Self { tx }
    }
}

fn ws_io(e: tungstenite::Error) -> io::Error {
    match e {
        tungstenite::Error::Io(e) => e,
        other => io::Error::other(other),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> FrameSink for WsSink<S> {
    async fn write_batch(&mut self, batch: &mut BytesMut) -> io::Result<()> {
        let frames = batch.split().freeze();
        let mut at = 0;
        while at + LENGTH_PREFIX_BYTES <= frames.len() {
            let prefix: [u8; LENGTH_PREFIX_BYTES] = frames[at..at + LENGTH_PREFIX_BYTES]
                .try_into()
                .expect("a four-byte prefix");
            let start = at + LENGTH_PREFIX_BYTES;
            let end = start + u32::from_be_bytes(prefix) as usize;
            debug_assert!(
                end <= frames.len(),
                "the outbound queue writes whole frames"
            );
            self.tx
                .feed(Message::Binary(frames.slice(start..end.min(frames.len()))))
                .await
                .map_err(ws_io)?;
            at = end;
        }
        self.tx.flush().await.map_err(ws_io)
    }

    async fn close(&mut self) {
        let _ = self.tx.close(None).await;
    }
}
