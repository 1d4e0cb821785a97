//! One client connection: the handshake, the frame loop, and the writer.
//!
//! Each connection is one glommio task on the shard that accepted it, running a reader and a
//! writer side by side. The reader decodes frames and dispatches them to the handlers (one file
//! per frame kind); the writer drains the connection's bounded [`Outbound`] queue into the
//! socket in batches. Neither ever blocks the shard: a slow socket only fills its own queue.

mod causal;
mod control;
mod hello;
mod history;
mod outbound;
mod ping;
mod publish;
mod subscribe;

pub use outbound::{Outbound, Pushed};
pub(crate) use subscribe::release_interest;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::time::Duration;

use arqonbus_proto::frame::{encode_frame, take_frame, FrameError};
use arqonbus_proto::v1::{
    client_frame, server_frame, ClientFrame, Error as WireError, ErrorCode, ServerFrame, Subscribed,
};
use bytes::{Bytes, BytesMut};
use event_listener::Event;
use futures::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use glommio::net::TcpStream;
use prost::Message;

use crate::metrics::ShardCounters;
use crate::shard::{Pulse, Shard, SubscribeOrigin};

/// A connection's id, unique within its shard.
pub type ConnId = u64;

/// Smallest read; an idle connection holds no read buffer at all.
const MIN_READ_BYTES: usize = 512;
/// Largest single read; reads grow toward it while the client keeps them full.
const MAX_READ_BYTES: usize = 64 << 10;
/// Bytes gathered into one socket write.
const WRITE_BATCH_BYTES: usize = 64 << 10;
/// After a fatal protocol error, how long to keep draining what the client still sends, so
/// closing does not reset the connection before the error frame is read.
const LINGER: Duration = Duration::from_secs(1);

/// What a session may do beyond publishing and subscribing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    #[default]
    Client,
    /// Said Hello with a token listed in `control.controller_tokens`: may send `sys.control.*`.
    Controller,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Controller => "controller",
        }
    }
}

/// What a client said about itself in Hello.
#[derive(Debug, Clone, Default)]
pub struct SessionInfo {
    pub session_id: String,
    pub client_name: String,
    pub manifest: Option<arqonbus_proto::v1::OperatorManifest>,
    pub role: Role,
}

/// The shard-side state of one connection.
pub struct Conn {
    pub id: ConnId,
    pub peer: Option<SocketAddr>,
    fd: RawFd,
    out: RefCell<Outbound>,
    writer_wake: Event,
    /// Told whenever the writer has written a batch.
    drained: Event,
    /// subscription id -> reality.
    subscriptions: RefCell<HashMap<u64, String>>,
    session: RefCell<Option<SessionInfo>>,
    /// The reader is draining after a fatal error and will stop by itself.
    lingering: Cell<bool>,
    /// Present once the connection has a causal subscription.
    causal: RefCell<Option<causal::CausalGate>>,
    max_causal_held: usize,
}

impl Conn {
    fn new(id: ConnId, fd: RawFd, peer: Option<SocketAddr>, shard: &Shard) -> Self {
        Self {
            id,
            peer,
            fd,
            out: RefCell::new(Outbound::new(
                shard.config.limits.max_outbound_bytes as usize,
                shard.config.slow_consumer,
            )),
            writer_wake: Event::new(),
            drained: Event::new(),
            subscriptions: RefCell::new(HashMap::new()),
            session: RefCell::new(None),
            lingering: Cell::new(false),
            causal: RefCell::new(None),
            max_causal_held: shard.config.limits.max_causal_held as usize,
        }
    }

    pub fn is_closing(&self) -> bool {
        self.out.borrow().is_closing()
    }

    /// Queues an answer (ack, error, confirmation).
    pub fn push_frame(&self, counters: &ShardCounters, frame: Bytes) {
        let ok = self.out.borrow_mut().push_answer(frame);
        if !ok {
            self.slow_consumer(counters, "answers");
        }
        self.writer_wake.notify(1);
    }

    /// Queues a pulse for one subscription, under the slow-consumer policy.
    pub fn push_deliver(
        &self,
        counters: &ShardCounters,
        subscription_id: u64,
        pulse: &std::sync::Arc<Pulse>,
    ) {
        let pushed = self.out.borrow_mut().push_deliver(subscription_id, pulse);
        match pushed {
            Pushed::Queued => {
                self.writer_wake.notify(1);
            }
            Pushed::Shed => counters.pulses_shed.inc(),
            Pushed::Disconnect => self.slow_consumer(counters, "pulses"),
            Pushed::Ignored => {}
        }
    }

    fn slow_consumer(&self, counters: &ShardCounters, what: &str) {
        counters.slow_consumer_disconnects.inc();
        let frame = error_frame(
            0,
            ErrorCode::SlowConsumer,
            &format!("outbound buffer full of unread {what} (limits.max_outbound_bytes); closing"),
        );
        self.out.borrow_mut().close_now(Some(frame));
        self.writer_wake.notify(1);
    }

    /// Sends `frame` after what is queued, then closes.
    pub fn close_with(&self, frame: Bytes) {
        self.out.borrow_mut().close_after(Some(frame));
        self.writer_wake.notify(1);
    }

    /// Flushes what is queued, then closes.
    pub fn finish(&self) {
        self.out.borrow_mut().close_after(None);
        self.writer_wake.notify(1);
    }

    /// Stops the reader: its pending read sees end of stream.
    pub fn stop_reading(&self) {
        // SAFETY: shutdown(2) on a descriptor this connection owns; it stays open until the
        // connection task ends, which is after both reader and writer are done.
        unsafe { libc::shutdown(self.fd, libc::SHUT_RD) };
    }

    /// Drops what is queued and tears the socket down both ways.
    pub fn abort(&self) {
        self.out.borrow_mut().close_now(None);
        // SAFETY: as in `stop_reading`.
        unsafe { libc::shutdown(self.fd, libc::SHUT_RDWR) };
        self.writer_wake.notify(1);
    }

    pub fn is_causal(&self) -> bool {
        self.causal.borrow().is_some()
    }

    /// Turns on causal delivery for this connection.
    pub fn enable_causal(&self) {
        let mut gate = self.causal.borrow_mut();
        if gate.is_none() {
            *gate = Some(causal::CausalGate::new(self.max_causal_held));
        }
    }

    /// A pulse for a causal subscription: delivered now, or held until its dependencies pass.
    pub fn causal_arrive(
        &self,
        counters: &ShardCounters,
        subs: &crate::shard::SubIndex,
        subscription_id: u64,
        pulse: &std::sync::Arc<Pulse>,
    ) {
        let start_of = |r: &str| subs.start_for_conn(r, self.id);
        let mut deliver = |sub: u64, p: &std::sync::Arc<Pulse>| self.push_deliver(counters, sub, p);
        let overflow = match self.causal.borrow_mut().as_mut() {
            Some(gate) => gate
                .arrive(subscription_id, pulse, &start_of, &mut deliver)
                .err(),
            None => None,
        };
        if let Some(o) = overflow {
            counters.request_errors.inc();
            let msg = format!(
                "causal hold buffer (limits.max_causal_held = {}) overflowed on subscription {}: \
                 its dependencies did not arrive; closing",
                self.max_causal_held, o.subscription_id
            );
            self.out
                .borrow_mut()
                .close_now(Some(error_frame(0, ErrorCode::LimitExceeded, &msg)));
            self.stop_reading();
            self.writer_wake.notify(1);
        }
    }

    /// A pulse of a reality this connection subscribes to went by: held pulses that depended
    /// on it may go now.
    pub fn causal_passed(
        &self,
        counters: &ShardCounters,
        subs: &crate::shard::SubIndex,
        pulse: &std::sync::Arc<Pulse>,
    ) {
        let start_of = |r: &str| subs.start_for_conn(r, self.id);
        let mut deliver = |sub: u64, p: &std::sync::Arc<Pulse>| self.push_deliver(counters, sub, p);
        if let Some(gate) = self.causal.borrow_mut().as_mut() {
            gate.note_seen(&pulse.reality, pulse.sequence);
            gate.release(&start_of, &mut deliver);
        }
    }

    /// Waits until the outbound queue is at most half full (or the connection is closing).
    pub async fn wait_drained(&self) {
        loop {
            if self.out.borrow().has_room_for_more() {
                return;
            }
            let listener = self.drained.listen();
            if self.out.borrow().has_room_for_more() {
                return;
            }
            listener.await;
        }
    }

    pub fn subscription_count(&self) -> usize {
        self.subscriptions.borrow().len()
    }

    pub fn has_subscription(&self, id: u64) -> bool {
        self.subscriptions.borrow().contains_key(&id)
    }

    pub fn remember_subscription(&self, id: u64, reality: String) {
        self.subscriptions.borrow_mut().insert(id, reality);
    }

    /// Forgets a subscription; returns its reality.
    pub fn forget_subscription(&self, id: u64) -> Option<String> {
        if let Some(gate) = self.causal.borrow_mut().as_mut() {
            gate.drop_subscription(id);
        }
        self.subscriptions.borrow_mut().remove(&id)
    }

    pub fn session(&self) -> Option<SessionInfo> {
        self.session.borrow().clone()
    }

    /// The session's role; `Client` before Hello.
    pub fn role(&self) -> Role {
        self.session
            .borrow()
            .as_ref()
            .map_or(Role::Client, |s| s.role)
    }
}

/// Encodes an error answer.
pub fn error_frame(correlation_id: u64, code: ErrorCode, message: &str) -> Bytes {
    encode_frame(&ServerFrame {
        correlation_id,
        kind: Some(server_frame::Kind::Error(WireError {
            code: code as i32,
            message: message.to_owned(),
            first_available_sequence: 0,
        })),
    })
}

/// Encodes an error answer that names the first sequence still kept (HISTORY_UNAVAILABLE).
pub fn error_frame_with_first(
    correlation_id: u64,
    code: ErrorCode,
    message: &str,
    first_available_sequence: u64,
) -> Bytes {
    encode_frame(&ServerFrame {
        correlation_id,
        kind: Some(server_frame::Kind::Error(WireError {
            code: code as i32,
            message: message.to_owned(),
            first_available_sequence,
        })),
    })
}

/// Encodes the confirmation of a subscription.
pub fn subscribed_frame(origin: SubscribeOrigin, next_sequence: u64) -> Bytes {
    encode_frame(&ServerFrame {
        correlation_id: origin.correlation_id,
        kind: Some(server_frame::Kind::Subscribed(Subscribed {
            subscription_id: origin.subscription_id,
            next_sequence,
        })),
    })
}

/// Starts serving a freshly accepted connection on this shard.
pub fn spawn(shard: Rc<Shard>, stream: TcpStream) {
    glommio::spawn_local(run(shard, stream)).detach();
}

async fn run(shard: Rc<Shard>, stream: TcpStream) {
    // Pulses are small and latency matters more than segment count.
    let _ = stream.set_nodelay(true);
    let fd = stream.as_raw_fd();
    let peer = stream.peer_addr().ok();
    let Some(conn) = shard.register(|id| Conn::new(id, fd, peer, &shard)) else {
        return;
    };
    let (reader, writer) = stream.split();
    futures::future::join(
        read_loop(&shard, &conn, reader),
        write_loop(&shard, &conn, writer),
    )
    .await;
    release_subscriptions(&shard, &conn).await;
    shard.unregister(conn.id);
}

/// Why the reader stopped.
enum ReadEnd {
    /// The client closed, or the shard stopped reading.
    Eof,
    /// A protocol error: send this frame, then close.
    Fatal(Bytes),
    Io,
}

/// Splits the byte stream into frames with an adaptive read size.
struct FrameReader {
    rd: ReadHalf<TcpStream>,
    buf: BytesMut,
    read_bytes: usize,
    max_frame_bytes: usize,
}

impl FrameReader {
    /// The next frame body; `Ok(None)` at end of stream.
    async fn next(&mut self, counters: &ShardCounters) -> Result<Option<Bytes>, ReadEnd> {
        loop {
            match take_frame(&mut self.buf, self.max_frame_bytes) {
                Ok(Some(body)) => return Ok(Some(body)),
                Ok(None) => {}
                Err(FrameError::TooLarge { declared, max }) => {
                    return Err(ReadEnd::Fatal(error_frame(
                        0,
                        ErrorCode::FrameTooLarge,
                        &format!("frame of {declared} bytes exceeds max_frame_bytes ({max})"),
                    )))
                }
            }
            if self.buf.is_empty() && self.buf.capacity() > MAX_READ_BYTES {
                // Give back what a burst grew; an idle connection keeps no buffer.
                self.buf = BytesMut::new();
            }
            let start = self.buf.len();
            self.buf.resize(start + self.read_bytes, 0);
            let n = match self.rd.read(&mut self.buf[start..]).await {
                Ok(n) => n,
                Err(_) => return Err(ReadEnd::Io),
            };
            self.buf.truncate(start + n);
            if n == 0 {
                return Ok(None);
            }
            counters.bytes_in.add(n as u64);
            if n == self.read_bytes {
                self.read_bytes = (self.read_bytes * 2).min(MAX_READ_BYTES);
            } else if n < self.read_bytes / 4 {
                self.read_bytes = (self.read_bytes / 2).max(MIN_READ_BYTES);
            }
        }
    }

    /// Reads and discards until the client closes or `LINGER` passes.
    async fn linger(&mut self) {
        let mut scratch = [0u8; 4096];
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

async fn read_loop(shard: &Rc<Shard>, conn: &Rc<Conn>, rd: ReadHalf<TcpStream>) {
    let mut reader = FrameReader {
        rd,
        buf: BytesMut::new(),
        read_bytes: MIN_READ_BYTES,
        max_frame_bytes: shard.config.limits.max_frame_bytes as usize,
    };
    let end = serve_frames(shard, conn, &mut reader).await;
    match end {
        ReadEnd::Eof => conn.finish(),
        ReadEnd::Io => conn.abort(),
        ReadEnd::Fatal(frame) => {
            shard.counters.protocol_errors.inc();
            conn.lingering.set(true);
            conn.close_with(frame);
            reader.linger().await;
        }
    }
}

async fn serve_frames(shard: &Rc<Shard>, conn: &Rc<Conn>, reader: &mut FrameReader) -> ReadEnd {
    let handshake = Duration::from_millis(shard.config.limits.handshake_timeout_ms);
    let first =
        glommio::timer::timeout(handshake, async { Ok(reader.next(&shard.counters).await) }).await;
    let first = match first {
        Err(_) => {
            return ReadEnd::Fatal(error_frame(
                0,
                ErrorCode::HelloRequired,
                "no Hello within limits.handshake_timeout_ms",
            ))
        }
        Ok(Err(end)) => return end,
        Ok(Ok(None)) => return ReadEnd::Eof,
        Ok(Ok(Some(body))) => body,
    };
    shard.counters.frames_in.inc();
    let frame = match ClientFrame::decode(first) {
        Ok(f) => f,
        Err(e) => return ReadEnd::Fatal(decode_failed(e)),
    };
    match frame.kind {
        Some(client_frame::Kind::Hello(h)) => {
            if let Err(fatal) = hello::handle(shard, conn, frame.correlation_id, h) {
                return ReadEnd::Fatal(fatal);
            }
        }
        _ => {
            return ReadEnd::Fatal(error_frame(
                frame.correlation_id,
                ErrorCode::HelloRequired,
                "the first frame of a session must be Hello",
            ))
        }
    }

    loop {
        let body = match reader.next(&shard.counters).await {
            Ok(Some(body)) => body,
            Ok(None) => return ReadEnd::Eof,
            Err(end) => return end,
        };
        shard.counters.frames_in.inc();
        let frame_bytes = body.len();
        let frame = match ClientFrame::decode(body) {
            Ok(f) => f,
            Err(e) => return ReadEnd::Fatal(decode_failed(e)),
        };
        dispatch(shard, conn, frame, frame_bytes).await;
        if conn.is_closing() {
            return ReadEnd::Eof;
        }
    }
}

fn decode_failed(e: prost::DecodeError) -> Bytes {
    error_frame(
        0,
        ErrorCode::DecodeFailed,
        &format!("frame is not a ClientFrame: {e}"),
    )
}

/// Answers a request with a non-fatal error.
pub(crate) fn reject(
    shard: &Shard,
    conn: &Conn,
    correlation_id: u64,
    code: ErrorCode,
    message: &str,
) {
    shard.counters.request_errors.inc();
    conn.push_frame(&shard.counters, error_frame(correlation_id, code, message));
}

async fn dispatch(shard: &Rc<Shard>, conn: &Rc<Conn>, frame: ClientFrame, frame_bytes: usize) {
    let corr = frame.correlation_id;
    match frame.kind {
        Some(client_frame::Kind::Publish(p)) => {
            publish::handle(shard, conn, corr, p, frame_bytes).await
        }
        Some(client_frame::Kind::Subscribe(s)) => subscribe::subscribe(shard, conn, corr, s).await,
        Some(client_frame::Kind::Unsubscribe(u)) => {
            subscribe::unsubscribe(shard, conn, corr, u).await
        }
        Some(client_frame::Kind::HistoryGet(h)) => history::handle(shard, conn, corr, h).await,
        Some(client_frame::Kind::Ping(p)) => ping::handle(shard, conn, corr, p),
        Some(client_frame::Kind::Hello(_)) => reject(
            shard,
            conn,
            corr,
            ErrorCode::InvalidRequest,
            "Hello was already received on this connection",
        ),
        None => reject(
            shard,
            conn,
            corr,
            ErrorCode::InvalidRequest,
            "frame has no request in it",
        ),
    }
}

async fn write_loop(shard: &Rc<Shard>, conn: &Rc<Conn>, mut wr: WriteHalf<TcpStream>) {
    let mut batch = BytesMut::new();
    loop {
        // Wait until there is something to write, or the queue is closed and empty.
        loop {
            let (idle, closing) = {
                let out = conn.out.borrow();
                (out.is_idle(), out.is_closing())
            };
            if !idle {
                break;
            }
            if closing {
                conn.drained.notify(usize::MAX);
                let _ = wr.close().await;
                if !conn.lingering.get() {
                    conn.stop_reading();
                }
                return;
            }
            let listener = conn.writer_wake.listen();
            let still_idle = {
                let out = conn.out.borrow();
                out.is_idle() && !out.is_closing()
            };
            if still_idle {
                listener.await;
            }
        }
        conn.out.borrow_mut().drain_into(
            &mut batch,
            WRITE_BATCH_BYTES,
            &shard.counters.deliver_latency,
            shard.clock.now_unix_nanos(),
        );
        if batch.is_empty() {
            continue;
        }
        if wr.write_all(&batch).await.is_err() {
            conn.abort();
            conn.drained.notify(usize::MAX);
            return;
        }
        shard.counters.bytes_out.add(batch.len() as u64);
        conn.drained.notify(usize::MAX);
        batch.clear();
        if conn.out.borrow().is_idle() {
            // An idle connection keeps no write buffer.
            batch = BytesMut::new();
        }
    }
}

/// Tells each reality's owner that this connection's subscriptions are gone.
async fn release_subscriptions(shard: &Rc<Shard>, conn: &Rc<Conn>) {
    let subs: Vec<(u64, String)> = conn.subscriptions.borrow_mut().drain().collect();
    for (id, reality) in subs {
        let removed = shard.subs.borrow_mut().remove(&reality, conn.id, id);
        if removed.is_some_and(|s| s.interest_registered()) {
            subscribe::release_interest(shard, reality).await;
        }
    }
}
