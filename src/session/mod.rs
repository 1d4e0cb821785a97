//! One client connection: the handshake, the frame loop, and the writer.
//!
//! Each connection is one glommio task on the shard that accepted it, running a reader and a
//! writer side by side. The reader decodes frames and dispatches them to the handlers (one file
//! per frame kind); the writer drains the connection's bounded [`Outbound`] queue into the
//! socket in batches. Neither ever blocks the shard: a slow socket only fills its own queue.
//!
//! The transport (TCP, TLS, WebSocket, secure WebSocket) is settled before the session starts:
//! the TLS handshake and WebSocket upgrade run first, in this same task, and the reader and
//! writer then see only frames (`io.rs`). Hello settles the session's identity and tenant
//! (`hello.rs`); every later request is checked against them.

mod causal;
mod circuit_control;
mod control;
mod hello;
mod history;
mod io;
mod operator_control;
mod outbound;
mod param_control;
mod ping;
mod publish;
mod subscribe;

pub(crate) use control::flush_refusals;
pub(crate) use hello::close_if_revoked;
pub use outbound::{Outbound, Pushed};
pub(crate) use subscribe::release_interest;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arqonbus_proto::frame::encode_frame;
use arqonbus_proto::v1::{
    client_frame, server_frame, ClientFrame, Error as WireError, ErrorCode, ServerFrame, Subscribed,
};
use bytes::{Bytes, BytesMut};
use event_listener::Event;
use futures::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use glommio::net::TcpStream;
use prost::Message;

use crate::auth::{CertIdentity, Identity};
use crate::metrics::ShardCounters;
use crate::shard::{Pulse, Shard, SubscribeOrigin};
use crate::tenant::lanes::{Lane, LaneId, DEFAULT_LANE};
use crate::tenant::TenantShared;
use crate::transport::Transport;
use io::{FrameSink, FrameSource, ReadEnd, StreamSink, StreamSource, WsSink, WsSource};

/// A connection's id, unique within its shard.
pub type ConnId = u64;

/// Bytes gathered into one socket write.
const WRITE_BATCH_BYTES: usize = 64 << 10;
/// Frames a connection's reader serves before it lets the shard's other tasks run.
const FRAMES_PER_TURN: u32 = 32;

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
    /// When Hello was accepted (presence).
    pub connected_since_unix_nanos: u64,
    /// The SAM manifest, validated: the session is an operator.
    pub manifest: Option<std::sync::Arc<crate::sam::Manifest>>,
    pub role: Role,
}

/// What the shield knows about a session once Hello has settled it.
pub struct Shielded {
    pub identity: Identity,
    /// The tenant's shared counters, when it has a counted quota (released on close).
    pub tenant: Option<Arc<TenantShared>>,
    /// The tenant's compartment on this shard: its task queue, buckets and fault window.
    pub lane: Rc<Lane>,
}

/// The shard-side state of one connection.
pub struct Conn {
    pub id: ConnId,
    pub peer: Option<SocketAddr>,
    pub transport: Transport,
    /// The identity in the client's certificate (mTLS), if it sent one.
    pub cert: Option<CertIdentity>,
    /// Set by Hello.
    shielded: RefCell<Option<Rc<Shielded>>>,
    fd: RawFd,
    out: RefCell<Outbound>,
    writer_wake: Event,
    /// Told whenever the writer has written a batch.
    drained: Event,
    /// subscription id -> (reality, pattern).
    subscriptions: RefCell<HashMap<u64, (String, String)>>,
    session: RefCell<Option<SessionInfo>>,
    /// The reader is draining after a fatal error and will stop by itself.
    lingering: Cell<bool>,
    /// Publishes without ack refused since the last report, and when that report went out
    /// (see [`reject_unacked`]).
    unacked_refusals: Cell<u64>,
    last_refusal_report_nanos: Cell<u64>,
    /// Present once the connection has a causal subscription.
    causal: RefCell<Option<causal::CausalGate>>,
    /// Told when the gate starts holding a pulse, so its timer knows a deadline is running.
    causal_wake: Event,
    /// Drops held pulses whose `limits.causal_hold_ms` ran out; dropped (cancelled) with the
    /// connection.
    causal_timer: RefCell<Option<glommio::Task<()>>>,
    /// The timer that closes the session when its token expires; dropped (cancelled) with the
    /// connection.
    expiry: RefCell<Option<glommio::Task<()>>>,
    /// Paces this connection's control pulses while it is not a controller.
    control_pacer: control::Pacer,
}

impl Conn {
    fn new(id: ConnId, accepted: &Accepted, shard: &Shard) -> Self {
        Self {
            id,
            peer: accepted.peer,
            transport: accepted.transport,
            cert: accepted.cert.clone(),
            shielded: RefCell::new(None),
            fd: accepted.fd,
            out: RefCell::new(Outbound::new(
                shard.config.limits.max_outbound_bytes as usize,
                shard.config.slow_consumer,
            )),
            writer_wake: Event::new(),
            drained: Event::new(),
            subscriptions: RefCell::new(HashMap::new()),
            session: RefCell::new(None),
            lingering: Cell::new(false),
            unacked_refusals: Cell::new(0),
            last_refusal_report_nanos: Cell::new(0),
            causal: RefCell::new(None),
            causal_wake: Event::new(),
            causal_timer: RefCell::new(None),
            expiry: RefCell::new(None),
            control_pacer: control::Pacer::default(),
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
    /// Queues a pulse (its delta form when `delta`); true when it was queued.
    pub fn push_deliver(
        &self,
        counters: &ShardCounters,
        subscription_id: u64,
        pulse: &std::sync::Arc<Pulse>,
        delta: bool,
    ) -> bool {
        let pushed = self
            .out
            .borrow_mut()
            .push_deliver(subscription_id, pulse, delta);
        match pushed {
            Pushed::Queued => {
                self.writer_wake.notify(1);
                return true;
            }
            Pushed::Shed => {
                counters.pulses_shed.inc();
                if let Some(s) = self.shielded() {
                    s.lane.counters.sheds.inc();
                }
            }
            Pushed::Disconnect => self.slow_consumer(counters, "pulses"),
            Pushed::Ignored => {}
        }
        false
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

    /// The compartment of the session's tenant (the default one before Hello).
    pub fn lane_id(&self) -> LaneId {
        self.shielded().map_or(DEFAULT_LANE, |s| s.lane.id)
    }

    /// The session's SAM manifest, when it is an operator.
    pub fn manifest(&self) -> Option<std::sync::Arc<crate::sam::Manifest>> {
        self.session.borrow().as_ref()?.manifest.clone()
    }

    pub fn is_causal(&self) -> bool {
        self.causal.borrow().is_some()
    }

    /// Turns on causal delivery for this connection, with the timer that ends holds.
    pub fn enable_causal(self: &Rc<Self>, shard: &Rc<Shard>) {
        let mut gate = self.causal.borrow_mut();
        if gate.is_some() {
            return;
        }
        let limits = &shard.config.limits;
        *gate = Some(causal::CausalGate::new(
            limits.max_causal_held as usize,
            limits.causal_hold_ms.saturating_mul(1_000_000),
        ));
        // glommio may run a new task at once, and the timer borrows the gate.
        drop(gate);
        let timer = causal_timer(shard, self);
        *self.causal_timer.borrow_mut() = Some(timer);
    }

    /// A pulse for a causal subscription: delivered now, or held until its dependencies pass.
    pub fn causal_arrive(
        &self,
        counters: &ShardCounters,
        subs: &crate::shard::SubIndex,
        subscription_id: u64,
        pulse: &std::sync::Arc<Pulse>,
        now_nanos: u64,
    ) {
        let start_of = |r: &str| subs.start_for_conn(r, self.id);
        let mut out = |o: causal::Outcome<'_>| self.causal_outcome(counters, o);
        let holding = match self.causal.borrow_mut().as_mut() {
            Some(gate) => {
                gate.arrive(subscription_id, pulse, now_nanos, &start_of, &mut out);
                gate.is_holding()
            }
            None => false,
        };
        if holding {
            self.causal_wake.notify(1);
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
        let mut out = |o: causal::Outcome<'_>| self.causal_outcome(counters, o);
        if let Some(gate) = self.causal.borrow_mut().as_mut() {
            gate.passed(&pulse.reality, pulse.sequence, &start_of, &mut out);
        }
    }

    /// Drops held pulses whose hold ran out by `now_nanos`; returns when the next one runs out.
    fn causal_expire(
        &self,
        counters: &ShardCounters,
        subs: &crate::shard::SubIndex,
        now_nanos: u64,
    ) -> Option<u64> {
        let start_of = |r: &str| subs.start_for_conn(r, self.id);
        let mut out = |o: causal::Outcome<'_>| self.causal_outcome(counters, o);
        let mut gate = self.causal.borrow_mut();
        let gate = gate.as_mut()?;
        gate.expire(now_nanos, &start_of, &mut out);
        gate.next_deadline()
    }

    fn causal_outcome(&self, counters: &ShardCounters, outcome: causal::Outcome<'_>) {
        match outcome {
            causal::Outcome::Deliver(sub, pulse) => {
                // Held pulses go whole: a causal subscription keeps no delta chain.
                self.push_deliver(counters, sub, pulse, false);
            }
            causal::Outcome::Expired(sub) => {
                counters.causal_expired.inc();
                self.note_missed(sub);
            }
            causal::Outcome::Evicted(sub) => {
                counters.causal_evicted.inc();
                self.note_missed(sub);
            }
        }
    }

    /// A pulse this subscription wanted will never reach it: it is told with `Dropped`, as for
    /// a shed pulse.
    fn note_missed(&self, subscription_id: u64) {
        self.out.borrow_mut().note_missed(subscription_id);
        self.writer_wake.notify(1);
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

    pub fn remember_subscription(&self, id: u64, reality: String, pattern: String) {
        self.subscriptions
            .borrow_mut()
            .insert(id, (reality, pattern));
    }

    /// This session's entry in the presence of `reality`: who it is and its patterns there.
    /// `None` before Hello.
    pub fn presence_entry(&self, reality: &str) -> Option<arqonbus_proto::v1::PresenceEntry> {
        let session = self.session.borrow();
        let session = session.as_ref()?;
        let shielded = self.shielded();
        let mut patterns: Vec<String> = self
            .subscriptions
            .borrow()
            .values()
            .filter(|(r, _)| r == reality)
            .map(|(_, p)| p.clone())
            .collect();
        patterns.sort();
        Some(arqonbus_proto::v1::PresenceEntry {
            session_id: session.session_id.clone(),
            client_name: session.client_name.clone(),
            tenant: shielded
                .as_ref()
                .map(|s| s.identity.tenant.to_string())
                .unwrap_or_default(),
            subject: shielded
                .as_ref()
                .map(|s| s.identity.subject.clone())
                .unwrap_or_default(),
            manifest_name: session
                .manifest
                .as_ref()
                .map(|m| m.name.clone())
                .unwrap_or_default(),
            capabilities: session
                .manifest
                .as_ref()
                .map(|m| m.capabilities.clone())
                .unwrap_or_default(),
            patterns,
            connected_since_unix_nanos: session.connected_since_unix_nanos,
        })
    }

    /// The presence update for `reality` after this session's subscriptions there changed.
    pub fn presence_update(&self, reality: &str) -> Option<crate::presence::Update> {
        let entry = self.presence_entry(reality)?;
        Some(if entry.patterns.is_empty() {
            crate::presence::Update::Left(entry.session_id)
        } else {
            crate::presence::Update::Present(entry)
        })
    }

    /// Forgets a subscription; returns its reality.
    pub fn forget_subscription(&self, id: u64) -> Option<String> {
        if let Some(gate) = self.causal.borrow_mut().as_mut() {
            gate.drop_subscription(id);
        }
        let reality = self.subscriptions.borrow_mut().remove(&id).map(|(r, _)| r);
        if reality.is_some() {
            if let Some(tenant) = self.shielded().and_then(|s| s.tenant.clone()) {
                tenant.release_subscription();
            }
        }
        reality
    }

    pub fn session(&self) -> Option<SessionInfo> {
        self.session.borrow().clone()
    }

    /// The session's identity and tenant, once Hello has settled them.
    pub fn shielded(&self) -> Option<Rc<Shielded>> {
        self.shielded.borrow().clone()
    }

    pub(crate) fn set_shielded(&self, shielded: Shielded) {
        *self.shielded.borrow_mut() = Some(Rc::new(shielded));
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

/// What is known of a connection before its session starts.
struct Accepted {
    fd: RawFd,
    peer: Option<SocketAddr>,
    transport: Transport,
    cert: Option<CertIdentity>,
    /// Its place in `limits.max_connections_per_shard`, held from accept on.
    admission: crate::shard::Admission,
    /// When the whole handshake (TLS, WebSocket upgrade, Hello) must be done:
    /// `limits.handshake_timeout_ms` after accept.
    handshake_deadline: Instant,
}

/// What is left of the handshake's time (zero once it has passed).
fn left_of(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// Starts serving a freshly accepted connection on this shard.
/// TCP keepalive: a peer that vanished without closing (cable pulled, host gone) stops answering
/// probes and the kernel ends the connection after about `2 * secs`, which ends its session
/// (and its presence). Probes start after `secs` idle, then every `secs / 3`, three of them.
/// Shortest sleep of a causal gate's timer: deadlines this close together are served by one
/// wake-up.
const CAUSAL_TIMER_MIN: Duration = Duration::from_millis(1);

/// A causal connection's timer: sleeps until its oldest held pulse runs out of
/// `limits.causal_hold_ms` (or, holding nothing, until something is held), then drops what ran
/// out. It holds the connection and shard weakly; the connection owns the task.
fn causal_timer(shard: &Rc<Shard>, conn: &Rc<Conn>) -> glommio::Task<()> {
    let (weak_shard, weak_conn) = (Rc::downgrade(shard), Rc::downgrade(conn));
    glommio::spawn_local(async move {
        loop {
            let wait = {
                let (Some(shard), Some(conn)) = (weak_shard.upgrade(), weak_conn.upgrade()) else {
                    return;
                };
                if conn.is_closing() {
                    return;
                }
                let now = shard.clock.now_unix_nanos();
                let subs = shard.subs.borrow();
                match conn.causal_expire(&shard.counters, &subs, now) {
                    Some(deadline) => Ok(
                        Duration::from_nanos(deadline.saturating_sub(now)).max(CAUSAL_TIMER_MIN)
                    ),
                    None => Err(conn.causal_wake.listen()),
                }
            };
            match wait {
                Ok(pause) => glommio::timer::sleep(pause).await,
                Err(listener) => listener.await,
            }
        }
    })
}

fn set_keepalive(stream: &TcpStream, secs: u64) {
    if secs == 0 {
        return;
    }
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(secs))
        .with_interval(Duration::from_secs((secs / 3).max(1)))
        .with_retries(3);
    // SAFETY: the descriptor belongs to `stream`, which outlives this borrow.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(stream.as_raw_fd()) };
    if let Err(e) = socket2::SockRef::from(&fd).set_tcp_keepalive(&keepalive) {
        tracing::debug!(error = %e, "cannot set TCP keepalive");
    }
}

/// Serves a connection just accepted, in the shard's handshake queue until its Hello settles
/// a tenant (see [`serve`]).
pub fn spawn(shard: Rc<Shard>, stream: TcpStream, transport: Transport) {
    let queue = shard.lanes().handshake();
    match glommio::spawn_local_into(run(shard, stream, transport), queue) {
        Ok(task) => {
            task.detach();
        }
        Err(e) => tracing::error!(error = %e, "cannot start a connection's task; closing it"),
    }
}

async fn run(shard: Rc<Shard>, stream: TcpStream, transport: Transport) {
    let handshake_deadline =
        Instant::now() + Duration::from_millis(shard.config.limits.handshake_timeout_ms);
    // Counted from accept: a connection still in its TLS or WebSocket handshake holds a place
    // in limits.max_connections_per_shard like any other.
    let Some(admission) = shard.admit() else {
        return;
    };
    // Pulses are small and latency matters more than segment count.
    let _ = stream.set_nodelay(true);
    set_keepalive(&stream, shard.config.limits.keepalive_secs);
    let peer = stream.peer_addr().ok();
    if let Some(ip) = peer.map(|p| p.ip()) {
        if shard.shield.auth.guard.is_blocked(ip) {
            // Too many failed authentications from there: closed before any handshake.
            shard.counters.auth_blocked_connections.inc();
            return;
        }
    }
    let accepted = Accepted {
        fd: stream.as_raw_fd(),
        peer,
        transport,
        cert: None,
        admission,
        handshake_deadline,
    };
    match transport {
        Transport::Tcp => serve_stream(shard, accepted, stream).await,
        // The other transports carry their handshake and protocol state in a box of their
        // own, so a plain TCP connection's task holds none of it.
        other => Box::pin(serve_wrapped(shard, accepted, stream, other)).await,
    }
}

/// Serves a TLS, WebSocket or secure WebSocket connection.
async fn serve_wrapped(
    shard: Rc<Shard>,
    mut accepted: Accepted,
    stream: TcpStream,
    transport: Transport,
) {
    // One deadline for every stage: each gets what the earlier ones left.
    let deadline = accepted.handshake_deadline;
    match transport {
        Transport::Tcp => serve_stream(shard, accepted, stream).await,
        Transport::Ws => {
            if let Some(ws) = ws_handshake(&shard, stream, left_of(deadline)).await {
                serve_ws(shard, accepted, ws).await
            }
        }
        Transport::Tls | Transport::Wss => {
            let Some(tls) = tls_handshake(&shard, stream, left_of(deadline)).await else {
                return;
            };
            accepted.cert = client_cert_identity(&tls);
            if transport == Transport::Tls {
                serve_stream(shard, accepted, tls).await
            } else if let Some(ws) = ws_handshake(&shard, tls, left_of(deadline)).await {
                serve_ws(shard, accepted, ws).await
            }
        }
    }
}

type TlsStream = futures_rustls::server::TlsStream<TcpStream>;

async fn tls_handshake(shard: &Shard, stream: TcpStream, limit: Duration) -> Option<TlsStream> {
    let acceptor = shard.tls_acceptor()?;
    let handshake =
        glommio::timer::timeout(limit, async { Ok(acceptor.accept(stream).await) }).await;
    match handshake {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            shard.counters.tls_handshake_failures.inc();
            tracing::debug!(shard = shard.id, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            shard.counters.tls_handshake_failures.inc();
            None
        }
    }
}

/// The identity named by the client certificate rustls verified, if there is one.
fn client_cert_identity(tls: &TlsStream) -> Option<CertIdentity> {
    let (_, session) = tls.get_ref();
    let leaf = session.peer_certificates()?.first()?;
    crate::auth::subject_common_name(leaf).map(|cn| CertIdentity::from_common_name(&cn))
}

async fn ws_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    shard: &Shard,
    stream: S,
    limit: Duration,
) -> Option<async_tungstenite::WebSocketStream<S>> {
    let max = shard.config.limits.max_frame_bytes as usize;
    let config = async_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
        .read_buffer_size(4 << 10)
        .write_buffer_size(WRITE_BATCH_BYTES);
    let handshake = glommio::timer::timeout(limit, async {
        Ok(async_tungstenite::accept_async_with_config(stream, Some(config)).await)
    })
    .await;
    match handshake {
        Ok(Ok(ws)) => Some(ws),
        _ => {
            shard.counters.ws_handshake_failures.inc();
            None
        }
    }
}

async fn serve_stream<S: AsyncRead + AsyncWrite + 'static>(
    shard: Rc<Shard>,
    accepted: Accepted,
    stream: S,
) {
    let max = shard.config.limits.max_frame_bytes as usize;
    let frame_timeout = Duration::from_millis(shard.config.limits.frame_timeout_ms);
    let (rd, wr) = stream.split();
    serve(
        shard,
        accepted,
        StreamSource::new(rd, max, frame_timeout),
        StreamSink::new(wr),
    )
    .await
}

async fn serve_ws<S: AsyncRead + AsyncWrite + Unpin + 'static>(
    shard: Rc<Shard>,
    accepted: Accepted,
    ws: async_tungstenite::WebSocketStream<S>,
) {
    let (tx, rx) = ws.split();
    serve(shard, accepted, WsSource::new(rx), WsSink::new(tx)).await
}

/// Serves a session: its Hello here, in the handshake queue, and the rest of it — reading and
/// serving frames, writing — in the task queue of the tenant Hello settled, so that the
/// reactor gives each tenant's sessions their share of the shard, not their share of its
/// arrivals.
async fn serve(
    shard: Rc<Shard>,
    accepted: Accepted,
    mut source: impl FrameSource + 'static,
    sink: impl FrameSink + 'static,
) {
    let deadline = accepted.handshake_deadline;
    let Some(conn) = shard.register(&accepted.admission, |id| Conn::new(id, &accepted, &shard))
    else {
        return;
    };
    let settled = settle(&shard, &conn, &mut source, deadline).await;
    let lane = settled.is_ok().then(|| conn.shielded()).flatten();
    let session = {
        let (shard, conn) = (shard.clone(), conn.clone());
        async move {
            futures::future::join(
                read_loop(&shard, &conn, source, settled),
                write_loop(&shard, &conn, sink),
            )
            .await;
        }
    };
    match lane {
        Some(s) => match glommio::spawn_local_into(session, s.lane.queue()) {
            Ok(task) => task.await,
            Err(e) => {
                tracing::error!(error = %e, "cannot move a session to its tenant's queue");
                conn.abort();
            }
        },
        // Refused at Hello (or gone before it): what is left is the error and the close.
        None => session.await,
    }
    release_subscriptions(&shard, &conn).await;
    if let Some(m) = conn.manifest() {
        shard.shield.circuits.left(&m.name);
    }
    if let Some(tenant) = conn.shielded().and_then(|s| s.tenant.clone()) {
        tenant.release_connection();
    }
    shard.unregister(conn.id);
}

async fn read_loop(
    shard: &Rc<Shard>,
    conn: &Rc<Conn>,
    mut reader: impl FrameSource,
    settled: Result<(), ReadEnd>,
) {
    let end = match settled {
        Ok(()) => serve_frames(shard, conn, &mut reader).await,
        Err(end) => end,
    };
    match end {
        // `Idle` ends only a wait, never the loop; read as the end of the stream regardless.
        ReadEnd::Eof | ReadEnd::Idle => conn.finish(),
        ReadEnd::Io => conn.abort(),
        ReadEnd::Fatal(frame) => {
            shard.counters.protocol_errors.inc();
            // A tenant whose clients keep breaking the protocol is throttled like one whose
            // policies keep faulting.
            if let Some(s) = conn.shielded() {
                s.lane.note_fault(shard.clock.now_unix_nanos());
            }
            conn.lingering.set(true);
            conn.close_with(frame);
            reader.linger().await;
        }
    }
}

/// Reads and answers the session's Hello: `Ok` once it settled who the session is.
async fn settle(
    shard: &Rc<Shard>,
    conn: &Rc<Conn>,
    reader: &mut impl FrameSource,
    handshake_deadline: Instant,
) -> Result<(), ReadEnd> {
    // What the TLS and WebSocket handshakes left of limits.handshake_timeout_ms, counted from
    // accept, bounds Hello too, a partial one included.
    let left = left_of(handshake_deadline);
    let first =
        glommio::timer::timeout(left, async { Ok(reader.next(&shard.counters, left).await) }).await;
    let first = match first {
        Err(_) | Ok(Err(ReadEnd::Idle)) => {
            return Err(ReadEnd::Fatal(error_frame(
                0,
                ErrorCode::HelloRequired,
                "no Hello within limits.handshake_timeout_ms of accept",
            )))
        }
        Ok(Err(end)) => return Err(end),
        Ok(Ok(None)) => return Err(ReadEnd::Eof),
        Ok(Ok(Some(body))) => body,
    };
    shard.counters.frames_in.inc();
    let frame = ClientFrame::decode(first).map_err(|e| ReadEnd::Fatal(decode_failed(e)))?;
    match frame.kind {
        Some(client_frame::Kind::Hello(h)) => {
            hello::handle(shard, conn, frame.correlation_id, h).map_err(ReadEnd::Fatal)
        }
        _ => Err(ReadEnd::Fatal(error_frame(
            frame.correlation_id,
            ErrorCode::HelloRequired,
            "the first frame of a session must be Hello",
        ))),
    }
}

/// Serves the frames of a settled session until it ends.
async fn serve_frames(
    shard: &Rc<Shard>,
    conn: &Rc<Conn>,
    reader: &mut impl FrameSource,
) -> ReadEnd {
    let lane = conn.shielded().map(|s| s.lane.clone());
    let idle = Duration::from_millis(shard.config.limits.idle_timeout_ms);
    let mut pinged = false;
    let mut since_yield = 0u32;
    loop {
        // Frames already buffered are served without waiting on the socket, so a client that
        // writes as fast as it can would otherwise keep the shard to itself: every few frames,
        // let the shard's other connections run.
        since_yield += 1;
        if since_yield == FRAMES_PER_TURN {
            since_yield = 0;
            futures_lite::future::yield_now().await;
        }
        // A throttled tenant's sessions are not read until the throttle ends: what they send
        // waits in the socket, and TCP flow control slows their clients down.
        if let Some(lane) = lane.as_ref().filter(|l| l.ever_throttled()) {
            while let Some(left) = lane.throttled_for(shard.clock.now_unix_nanos()) {
                glommio::timer::sleep(left).await;
            }
        }
        // Half the idle budget, then a keepalive Ping and the rest of it.
        let budget = if pinged { idle } else { idle / 2 };
        let body = match reader.next(&shard.counters, budget).await {
            Ok(Some(body)) => body,
            Ok(None) => return ReadEnd::Eof,
            Err(ReadEnd::Idle) if !pinged => {
                pinged = true;
                ping::keepalive(shard, conn);
                continue;
            }
            Err(ReadEnd::Idle) => {
                shard.counters.idle_disconnects.inc();
                return ReadEnd::Fatal(error_frame(
                    0,
                    ErrorCode::TimedOut,
                    &format!(
                        "no frame for limits.idle_timeout_ms ({} ms), not even the answer to a \
                         keepalive Ping; closing",
                        idle.as_millis()
                    ),
                ));
            }
            Err(end) => return end,
        };
        pinged = false;
        shard.counters.frames_in.inc();
        let frame_bytes = body.len();
        let frame = match ClientFrame::decode(body) {
            Ok(f) => f,
            Err(e) => return ReadEnd::Fatal(decode_failed(e)),
        };
        // Boxed: serving a request is the largest state of the connection's task, and an idle
        // connection would carry it inline. One short-lived allocation per frame keeps an idle
        // connection's task near 1 KiB (the `conns` scenario of the bench measures it).
        Box::pin(dispatch(shard, conn, frame, frame_bytes)).await;
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

/// How often a connection is told about publishes without ack that were refused.
const REFUSAL_REPORT_INTERVAL_NANOS: u64 = 100_000_000;

/// Refuses a publish the client did not ask an ack for. Answering each one would let a client
/// flooding over its quota (or outside its grants) turn its flood into a flood of error frames
/// it cannot read; instead the first refusal is answered at once and later ones at most every
/// 100 ms, with the number refused since the last answer.
pub(crate) fn reject_unacked(
    shard: &Shard,
    conn: &Conn,
    correlation_id: u64,
    code: ErrorCode,
    message: &str,
) {
    shard.counters.request_errors.inc();
    let refused = conn.unacked_refusals.get() + 1;
    let now = shard.clock.now_unix_nanos();
    let last = conn.last_refusal_report_nanos.get();
    if last != 0 && now.saturating_sub(last) < REFUSAL_REPORT_INTERVAL_NANOS {
        conn.unacked_refusals.set(refused);
        return;
    }
    conn.unacked_refusals.set(0);
    conn.last_refusal_report_nanos.set(now.max(1));
    let message = if refused > 1 {
        format!("{message} ({refused} publishes without ack refused since the last report)")
    } else {
        message.to_owned()
    };
    conn.push_frame(&shard.counters, error_frame(correlation_id, code, &message));
}

async fn dispatch(shard: &Rc<Shard>, conn: &Rc<Conn>, frame: ClientFrame, frame_bytes: usize) {
    let corr = frame.correlation_id;
    match frame.kind {
        Some(client_frame::Kind::Publish(p)) => {
            publish::handle(shard, conn, corr, p, frame_bytes).await
        }
        // The rarer requests run in boxes of their own, so the box each publish is served in
        // stays the size of a publish.
        Some(client_frame::Kind::Subscribe(s)) => {
            Box::pin(subscribe::subscribe(shard, conn, corr, s)).await
        }
        Some(client_frame::Kind::Unsubscribe(u)) => {
            Box::pin(subscribe::unsubscribe(shard, conn, corr, u)).await
        }
        Some(client_frame::Kind::HistoryGet(h)) => {
            Box::pin(history::handle(shard, conn, corr, h)).await
        }
        Some(client_frame::Kind::Ping(p)) => ping::handle(shard, conn, corr, p),
        // The answer to a keepalive: arriving was all it had to do.
        Some(client_frame::Kind::Pong(_)) => {}
        Some(client_frame::Kind::ParamsGet(p)) => Box::pin(params_get(shard, conn, corr, p)).await,
        Some(client_frame::Kind::PresenceGet(p)) => {
            Box::pin(presence_get(shard, conn, corr, p)).await
        }
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

/// Whether the session may read a reality's parameters or presence: a valid reality it may
/// subscribe to something in (the sessions parameters are broadcast to). Answers the refusal.
fn may_read_reality(shard: &Shard, conn: &Rc<Conn>, correlation_id: u64, reality: &str) -> bool {
    if let Err(e) = crate::routing::validate_reality(reality) {
        let msg = format!("reality `{reality}` is invalid: {e}");
        reject(shard, conn, correlation_id, ErrorCode::InvalidReality, &msg);
        return false;
    }
    if let Some(shielded) = conn.shielded() {
        if let Err(why) = shielded.identity.check_params(reality, shard.now_secs()) {
            shard.counters.permission_denied.inc();
            reject(
                shard,
                conn,
                correlation_id,
                ErrorCode::PermissionDenied,
                &why,
            );
            return false;
        }
    }
    true
}

/// `ParamsGet` → the reality's owner → `Params`.
async fn params_get(
    shard: &Rc<Shard>,
    conn: &Rc<Conn>,
    correlation_id: u64,
    get: arqonbus_proto::v1::ParamsGet,
) {
    if !may_read_reality(shard, conn, correlation_id, &get.reality_id) {
        return;
    }
    shard
        .request_params(get.reality_id, conn.id, correlation_id)
        .await;
}

/// `PresenceGet` → the reality's owner → `Presence`.
async fn presence_get(
    shard: &Rc<Shard>,
    conn: &Rc<Conn>,
    correlation_id: u64,
    get: arqonbus_proto::v1::PresenceGet,
) {
    if !may_read_reality(shard, conn, correlation_id, &get.reality_id) {
        return;
    }
    shard.request_presence(get, conn.id, correlation_id).await;
}

async fn write_loop(shard: &Rc<Shard>, conn: &Rc<Conn>, mut wr: impl FrameSink) {
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
                wr.close().await;
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
        // An operator serving a circuit's stage: each pulse written is a hop of an edge.
        // The circuits first: with none installed that is one atomic load, and the session
        // is not borrowed at all.
        let hop_of = shard
            .shield
            .circuits
            .any()
            .then(|| conn.manifest())
            .flatten()
            .filter(|m| m.has_inputs());
        let latency = &shard.counters.deliver_latency;
        conn.out.borrow_mut().drain_into(
            &mut batch,
            WRITE_BATCH_BYTES,
            shard.clock.now_unix_nanos(),
            |pulse, nanos| {
                latency.observe_nanos(nanos);
                if let Some(m) = &hop_of {
                    let circuits = &shard.shield.circuits;
                    circuits.hop_delivered(&pulse.reality, &pulse.topic, &m.name, nanos);
                }
            },
        );
        if batch.is_empty() {
            continue;
        }
        let written = batch.len() as u64;
        if wr.write_batch(&mut batch).await.is_err() {
            conn.abort();
            conn.drained.notify(usize::MAX);
            return;
        }
        shard.counters.bytes_out.add(written);
        conn.drained.notify(usize::MAX);
        if conn.out.borrow().is_idle() {
            // An idle connection keeps no write buffer.
            batch = BytesMut::new();
        }
    }
}

/// Tells each reality's owner that this connection's subscriptions are gone.
async fn release_subscriptions(shard: &Rc<Shard>, conn: &Rc<Conn>) {
    let subs: Vec<(u64, (String, String))> = conn.subscriptions.borrow_mut().drain().collect();
    let tenant = conn.shielded().and_then(|s| s.tenant.clone());
    let session_id = conn.session.borrow().as_ref().map(|s| s.session_id.clone());
    let mut left: Vec<String> = subs.iter().map(|(_, (r, _))| r.clone()).collect();
    left.sort();
    left.dedup();
    if let Some(id) = session_id {
        for reality in left {
            shard
                .tell_presence(reality, crate::presence::Update::Left(id.clone()))
                .await;
        }
    }
    for (id, (reality, _)) in subs {
        if let Some(t) = &tenant {
            t.release_subscription();
        }
        let removed = shard.subs.borrow_mut().remove(&reality, conn.id, id);
        if removed.is_some_and(|s| s.interest_registered()) {
            subscribe::release_interest(shard, reality).await;
        }
    }
}
