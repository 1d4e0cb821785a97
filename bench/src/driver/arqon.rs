//! A lean ArqonBus protocol driver on tokio: just what the scenarios need, written against the
//! wire contract in proto/README.md (length-prefixed `ClientFrame`/`ServerFrame`).
//!
//! It is deliberately not the `arqonbus-client` crate: the harness must keep working while the
//! client evolves, and it wants control over batching (many `Publish` frames per write) and a
//! zero-copy read of `Deliver` payloads.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Context, Result};
use arqonbus_proto::frame::{put_frame, take_frame};
use arqonbus_proto::v1::{
    client_frame, history_get, server_frame, ArqonMessage, ClientFrame, ErrorCode, Hello,
    HistoryGet, OperatorManifest, Pong, Publish, ServerFrame, Subscribe, Welcome,
};
use arqonbus_proto::PROTOCOL_VERSION;
use bytes::{Bytes, BytesMut};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;

use super::{Event, ServerError};
use crate::payload::Header;

/// The topic every benchmark pulse is published on.
pub const TOPIC: &str = "bench.load.pulse";
/// `type_url` of the benchmark payload in `ArqonMessage.payload`.
pub const TYPE_URL: &str = "type.googleapis.com/arqon.bench.Pulse";
/// Largest frame the harness accepts from the server. The server's own `max_frame_bytes`
/// (announced in Welcome) bounds what it sends; this only stops a broken peer from making the
/// harness allocate without bound.
const MAX_INBOUND_FRAME_BYTES: usize = 64 << 20;
/// Publish frames are batched into one write until this many bytes are queued.
const WRITE_BATCH_BYTES: usize = 64 << 10;
const READ_CHUNK_BYTES: usize = 64 << 10;

/// One handshaken connection.
pub struct Session {
    rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
    rbuf: BytesMut,
    next_correlation: u64,
    pub welcome: Welcome,
}

/// One subscription to ask for: its id on the connection, where, what, and an optional filter
/// (`Subscribe.filter`, empty for none).
#[derive(Debug, Clone)]
pub struct SubscriptionSpec {
    pub id: u64,
    pub reality: String,
    pub pattern: String,
    pub filter: String,
}

/// Opens a TCP connection (bound to `source` first when given) and completes Hello -> Welcome.
pub async fn connect(
    addr: SocketAddr,
    source: Option<IpAddr>,
    client_name: &str,
) -> Result<Session> {
    let stream = tcp_connect(addr, source).await?;
    handshake(stream, client_name).await
}

/// [`connect`] with a `Hello.token` (a controller token, say).
pub async fn connect_with_token(
    addr: SocketAddr,
    source: Option<IpAddr>,
    client_name: &str,
    token: &str,
) -> Result<Session> {
    let stream = tcp_connect(addr, source).await?;
    handshake_with_token(stream, client_name, token).await
}

/// [`connect`] as an operator: the Hello carries `manifest` (SAM), which the bus validates and
/// then holds every publish of the session to.
pub async fn connect_with_manifest(
    addr: SocketAddr,
    source: Option<IpAddr>,
    client_name: &str,
    manifest: OperatorManifest,
) -> Result<Session> {
    let stream = tcp_connect(addr, source).await?;
    handshake_with(stream, client_name, "", Some(manifest)).await
}

/// A TCP connection to `addr`, bound to `source` (any port) before connecting when given.
pub async fn tcp_connect(addr: SocketAddr, source: Option<IpAddr>) -> Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = source {
        socket
            .bind(SocketAddr::new(ip, 0))
            .with_context(|| format!("binding the source address {ip}"))?;
    }
    let stream = socket
        .connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Sends Hello on a fresh stream and waits for Welcome.
pub async fn handshake(stream: TcpStream, client_name: &str) -> Result<Session> {
    handshake_with_token(stream, client_name, "").await
}

/// Sends Hello with `token` on a fresh stream and waits for Welcome.
pub async fn handshake_with_token(
    stream: TcpStream,
    client_name: &str,
    token: &str,
) -> Result<Session> {
    handshake_with(stream, client_name, token, None).await
}

/// Sends Hello with `token` and an optional operator manifest, and waits for Welcome.
async fn handshake_with(
    stream: TcpStream,
    client_name: &str,
    token: &str,
    manifest: Option<OperatorManifest>,
) -> Result<Session> {
    let (rd, wr) = stream.into_split();
    let mut s = Session {
        rd,
        wr,
        rbuf: BytesMut::with_capacity(READ_CHUNK_BYTES),
        next_correlation: 1,
        welcome: Welcome::default(),
    };
    let corr = s.correlation();
    s.send(&ClientFrame {
        correlation_id: corr,
        kind: Some(client_frame::Kind::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            client_name: client_name.to_string(),
            token: token.to_string(),
            manifest,
        })),
    })
    .await?;
    match s.read_server_frame().await?.kind {
        Some(server_frame::Kind::Welcome(w)) => {
            s.welcome = w;
            Ok(s)
        }
        Some(server_frame::Kind::Error(e)) => Err(ServerError::from_proto(&e).into()),
        other => bail!(
            "expected Welcome in answer to Hello, got {}",
            kind_name(&other)
        ),
    }
}

impl Session {
    fn correlation(&mut self) -> u64 {
        let c = self.next_correlation;
        self.next_correlation += 1;
        c
    }

    async fn send(&mut self, frame: &ClientFrame) -> Result<()> {
        let mut out = BytesMut::new();
        put_frame(&mut out, frame);
        self.wr
            .write_all(&out)
            .await
            .context("writing to the server")?;
        Ok(())
    }

    /// The next frame body; an error at end of stream.
    async fn read_frame(&mut self) -> Result<Bytes> {
        read_frame(&mut self.rd, &mut self.rbuf)
            .await?
            .ok_or_else(|| anyhow!("the server closed the connection"))
    }

    async fn read_server_frame(&mut self) -> Result<ServerFrame> {
        let body = self.read_frame().await?;
        ServerFrame::decode(body).context("decoding a ServerFrame")
    }

    /// Subscribes to `pattern` in each reality (subscription ids 1..=n) and returns once every
    /// subscription is answered by Subscribed: from then on every matching pulse is delivered.
    pub async fn subscribe(&mut self, realities: &[String], pattern: &str) -> Result<()> {
        let subs: Vec<SubscriptionSpec> = realities
            .iter()
            .enumerate()
            .map(|(i, reality)| SubscriptionSpec {
                id: i as u64 + 1,
                reality: reality.clone(),
                pattern: pattern.to_string(),
                filter: String::new(),
            })
            .collect();
        self.subscribe_all(&subs).await
    }

    /// Sends every Subscribe in one write and returns once each is answered by Subscribed.
    /// Deliveries that arrive meanwhile (for subscriptions already registered) are skipped, so
    /// callers subscribe before anything is published to what they subscribe to.
    pub async fn subscribe_all(&mut self, subs: &[SubscriptionSpec]) -> Result<()> {
        let mut out = BytesMut::new();
        for sub in subs {
            let corr = self.correlation();
            put_frame(
                &mut out,
                &ClientFrame {
                    correlation_id: corr,
                    kind: Some(client_frame::Kind::Subscribe(Subscribe {
                        subscription_id: sub.id,
                        reality_id: sub.reality.clone(),
                        pattern: sub.pattern.clone(),
                        start: None,
                        causal: false,
                        filter: sub.filter.clone(),
                    })),
                },
            );
        }
        self.wr.write_all(&out).await.context("sending Subscribe")?;
        let mut pending = subs.len();
        while pending > 0 {
            match self.read_server_frame().await?.kind {
                Some(server_frame::Kind::Subscribed(_)) => pending -= 1,
                Some(server_frame::Kind::Error(e)) => {
                    return Err(
                        anyhow::Error::from(ServerError::from_proto(&e)).context("Subscribe")
                    )
                }
                Some(server_frame::Kind::Deliver(_)) => {
                    // A pulse for a subscription already registered: cannot happen before the
                    // first publish of the run, and harmless to skip.
                }
                other => bail!("expected Subscribed, got {}", kind_name(&other)),
            }
        }
        Ok(())
    }

    /// Asks for the first pulse of `reality`'s history: `Ok(None)` when the server can replay
    /// it (the reality is retained), `Ok(Some(error))` when it answers an error.
    pub async fn history_probe(
        &mut self,
        reality: &str,
        pattern: &str,
    ) -> Result<Option<ServerError>> {
        let corr = self.send_history_get(reality, pattern, 1).await?;
        loop {
            match self.next_history_event().await? {
                HistoryEvent::Error {
                    correlation_id,
                    error,
                } if correlation_id == corr => return Ok(Some(error)),
                HistoryEvent::End { correlation_id, .. } if correlation_id == corr => {
                    return Ok(None)
                }
                _ => continue,
            }
        }
    }

    /// Sends `HistoryGet` of `reality` from sequence 1, at most `limit` pulses (0: all), and
    /// returns its correlation id without waiting: requests can be pipelined, each answered by
    /// `HistoryChunk`s and one `HistoryEnd` (or an `Error`) under its id.
    pub async fn send_history_get(
        &mut self,
        reality: &str,
        pattern: &str,
        limit: u32,
    ) -> Result<u64> {
        let corr = self.correlation();
        self.send(&ClientFrame {
            correlation_id: corr,
            kind: Some(client_frame::Kind::HistoryGet(HistoryGet {
                reality_id: reality.to_string(),
                pattern: pattern.to_string(),
                from: Some(history_get::From::FromSequence(1)),
                to: None,
                limit,
            })),
        })
        .await?;
        Ok(corr)
    }

    /// The next answer to a `HistoryGet`. Chunks are counted, not decoded, so a reader can go
    /// as fast as the server sends; keepalive Pings are answered on the way.
    pub async fn next_history_event(&mut self) -> Result<HistoryEvent> {
        loop {
            let body = self.read_frame().await?;
            if let Some(nonce) = keepalive_nonce(&body) {
                self.send(&pong(nonce)).await?;
                continue;
            }
            let correlation_id =
                find_varint_field(&body, 0, body.len(), SERVER_FRAME_CORRELATION)?.unwrap_or(0);
            if let Some(chunk) = find_len_field(&body, 0, body.len(), SERVER_FRAME_HISTORY_CHUNK)? {
                let pulses = count_len_fields(&body, chunk.0, chunk.1, HISTORY_CHUNK_MESSAGES)?;
                return Ok(HistoryEvent::Chunk {
                    correlation_id,
                    pulses,
                });
            }
            let frame = ServerFrame::decode(body).context("decoding a ServerFrame")?;
            return Ok(match frame.kind {
                Some(server_frame::Kind::HistoryEnd(end)) => HistoryEvent::End {
                    correlation_id,
                    count: end.count,
                },
                Some(server_frame::Kind::Error(e)) => HistoryEvent::Error {
                    correlation_id,
                    error: ServerError::from_proto(&e),
                },
                _ => HistoryEvent::Other,
            });
        }
    }

    /// The connection itself, for holding it idle.
    pub fn into_stream(self) -> TcpStream {
        self.rd
            .reunite(self.wr)
            .expect("the two halves of one stream")
    }

    pub fn into_subscriber(self) -> Subscriber {
        Subscriber {
            session: self,
            wire_bytes: 0,
        }
    }

    pub fn into_publisher(self, realities: &[String], producer_id: &str) -> Publisher {
        let routes: Vec<(String, String)> = realities
            .iter()
            .map(|r| (r.clone(), TOPIC.to_string()))
            .collect();
        Publisher::new(self, &routes, producer_id)
    }

    /// A publisher whose route `i` is `routes[i]` = (reality, topic).
    pub fn into_publisher_on(self, routes: &[(String, String)], producer_id: &str) -> Publisher {
        Publisher::new(self, routes, producer_id)
    }
}

/// Reads frames until one is complete; `Ok(None)` on a clean end of stream between frames.
/// Cancel-safe: bytes read stay in `rbuf`.
async fn read_frame(rd: &mut OwnedReadHalf, rbuf: &mut BytesMut) -> Result<Option<Bytes>> {
    loop {
        if let Some(frame) = take_frame(rbuf, MAX_INBOUND_FRAME_BYTES)? {
            return Ok(Some(frame));
        }
        rbuf.reserve(READ_CHUNK_BYTES);
        let n = rd.read_buf(rbuf).await.context("reading from the server")?;
        if n == 0 {
            if rbuf.is_empty() {
                return Ok(None);
            }
            bail!("the server closed the connection in the middle of a frame");
        }
    }
}

/// The receiving side of a subscribed connection.
pub struct Subscriber {
    session: Session,
    /// Bytes of every frame read so far, length prefixes included: what the wire carried.
    wire_bytes: u64,
}

/// A frame as the scenarios that need more than the payload see it.
#[derive(Debug)]
pub enum Incoming {
    /// A Deliver, sliced without decoding the envelope.
    Deliver {
        subscription_id: u64,
        payload: Bytes,
    },
    Dropped {
        subscription_id: u64,
        count: u64,
    },
    ServerError(ServerError),
    Other,
    Closed,
}

/// An answer to `HistoryGet`, as [`Session::next_history_event`] reads it.
#[derive(Debug)]
pub enum HistoryEvent {
    /// A `HistoryChunk` of `pulses` pulses (counted, not decoded).
    Chunk { correlation_id: u64, pulses: u64 },
    /// The request is complete: `count` pulses in all.
    End { correlation_id: u64, count: u64 },
    Error {
        correlation_id: u64,
        error: ServerError,
    },
    /// Any other frame (a Deliver, a Pong, ...).
    Other,
}

impl Subscriber {
    /// The next thing the server said. Cancel-safe.
    pub async fn next(&mut self) -> Result<Event> {
        Ok(match self.next_incoming().await? {
            Incoming::Deliver { payload, .. } => Event::Msg(payload),
            Incoming::Dropped { count, .. } => Event::Dropped(count),
            Incoming::ServerError(e) => Event::ServerError(e),
            Incoming::Other => Event::Other,
            Incoming::Closed => Event::Closed,
        })
    }

    /// The next frame, with the subscription a Deliver or Dropped is for. Cancel-safe.
    pub async fn next_incoming(&mut self) -> Result<Incoming> {
        let Some(body) = self.next_body().await? else {
            return Ok(Incoming::Closed);
        };
        if let Some(parts) = deliver_parts(&body) {
            let (subscription_id, payload) = parts?;
            return Ok(Incoming::Deliver {
                subscription_id,
                payload,
            });
        }
        let frame = ServerFrame::decode(body).context("decoding a ServerFrame")?;
        Ok(match frame.kind {
            Some(server_frame::Kind::Deliver(d)) => Incoming::Deliver {
                subscription_id: d.subscription_id,
                payload: d
                    .message
                    .and_then(|m| m.payload)
                    .map(|a| Bytes::from(a.value))
                    .unwrap_or_default(),
            },
            Some(server_frame::Kind::Dropped(d)) => Incoming::Dropped {
                subscription_id: d.subscription_id,
                count: d.count,
            },
            Some(server_frame::Kind::Error(e)) => {
                Incoming::ServerError(ServerError::from_proto(&e))
            }
            _ => Incoming::Other,
        })
    }

    /// The next frame decoded whole (envelope, spectral metadata, delta information), `None`
    /// at the end of the stream. For scenarios that check more than the payload. Cancel-safe.
    pub async fn next_frame(&mut self) -> Result<Option<ServerFrame>> {
        match self.next_body().await? {
            Some(body) => Ok(Some(
                ServerFrame::decode(body).context("decoding a ServerFrame")?,
            )),
            None => Ok(None),
        }
    }

    async fn next_body(&mut self) -> Result<Option<Bytes>> {
        loop {
            let s = &mut self.session;
            let body = read_frame(&mut s.rd, &mut s.rbuf).await?;
            if let Some(b) = &body {
                self.wire_bytes += (arqonbus_proto::LENGTH_PREFIX_BYTES + b.len()) as u64;
                // The server's keepalive: answered here, so a subscriber that waits longer than
                // half the server's idle limit between pulses keeps its session.
                if let Some(nonce) = keepalive_nonce(b) {
                    let mut out = BytesMut::new();
                    put_frame(&mut out, &pong(nonce));
                    s.wr.write_all(&out).await.context("answering a Ping")?;
                    continue;
                }
            }
            return Ok(body);
        }
    }

    /// Bytes read off the wire so far (frames with their length prefixes).
    pub fn wire_bytes(&self) -> u64 {
        self.wire_bytes
    }

    /// The shard that serves this connection (from Welcome).
    pub fn shard(&self) -> u32 {
        self.session.welcome.shard
    }
}

/// The sending side: Publish frames batched into large writes, and a task that reads what the
/// server answers (PubAck, Error).
pub struct Publisher {
    wr: OwnedWriteHalf,
    wbuf: BytesMut,
    /// One prepared `Publish` frame per reality; only the payload and correlation id change.
    templates: Vec<ClientFrame>,
    next_correlation: u64,
    answers: Arc<Answers>,
    acks: Option<mpsc::UnboundedReceiver<Ack>>,
    reader: tokio::task::JoinHandle<()>,
}

/// What the server answered on a publishing connection, shared with the reader task.
#[derive(Default)]
pub struct Answers {
    pub errors: AtomicU64,
    pub last_error: Mutex<Option<ServerError>>,
    pub closed: AtomicU64,
    /// The nonce of a server keepalive Ping not yet answered: the reader cannot write, so the
    /// next flush sends the Pong.
    pong_due: Mutex<Option<u64>>,
}

/// The answer to one acked Publish.
#[derive(Debug)]
pub struct Ack {
    pub correlation_id: u64,
    pub result: Result<u64, ServerError>,
}

impl Publisher {
    fn new(session: Session, routes: &[(String, String)], producer_id: &str) -> Self {
        let templates = routes
            .iter()
            .map(|(reality, topic)| ClientFrame {
                correlation_id: 0,
                kind: Some(client_frame::Kind::Publish(Publish {
                    message: Some(ArqonMessage {
                        topic: topic.clone(),
                        reality_id: reality.clone(),
                        producer_id: producer_id.to_string(),
                        payload: Some(prost_types::Any {
                            type_url: TYPE_URL.to_string(),
                            value: Vec::new(),
                        }),
                        ..Default::default()
                    }),
                    ack: false,
                })),
            })
            .collect();
        let Session {
            rd,
            wr,
            rbuf,
            next_correlation,
            ..
        } = session;
        let answers = Arc::new(Answers::default());
        let (tx, rx) = mpsc::unbounded_channel();
        let reader = tokio::spawn(read_answers(rd, rbuf, answers.clone(), tx));
        Publisher {
            wr,
            wbuf: BytesMut::with_capacity(WRITE_BATCH_BYTES * 2),
            templates,
            next_correlation,
            answers,
            acks: Some(rx),
            reader,
        }
    }

    /// Queues one Publish of a `size`-byte payload carrying `header` to reality `reality`;
    /// writes the batch out when it is large. Returns the frame's correlation id.
    pub async fn send(
        &mut self,
        reality: usize,
        header: &Header,
        size: usize,
        ack: bool,
    ) -> Result<u64> {
        let corr = self.next_correlation;
        self.next_correlation += 1;
        let frame = &mut self.templates[reality];
        frame.correlation_id = corr;
        if let Some(client_frame::Kind::Publish(p)) = &mut frame.kind {
            p.ack = ack;
            if let Some(any) = p.message.as_mut().and_then(|m| m.payload.as_mut()) {
                any.value.clear();
                header.write(&mut any.value, size);
            }
        }
        put_frame(&mut self.wbuf, frame);
        if self.wbuf.len() >= WRITE_BATCH_BYTES {
            self.flush().await?;
        }
        Ok(corr)
    }

    /// Queues one Publish on route `route` whose envelope `fill` completes (it finds the
    /// payload's value empty and may set spectral metadata, delta information, the payload's
    /// type); writes the batch out when it is large. Returns the frame's correlation id.
    pub async fn send_with(
        &mut self,
        route: usize,
        ack: bool,
        fill: impl FnOnce(&mut ArqonMessage),
    ) -> Result<u64> {
        let corr = self.next_correlation;
        self.next_correlation += 1;
        let template = &self.templates[route];
        let mut frame = template.clone();
        frame.correlation_id = corr;
        if let Some(client_frame::Kind::Publish(p)) = &mut frame.kind {
            p.ack = ack;
            if let Some(m) = p.message.as_mut() {
                if let Some(any) = m.payload.as_mut() {
                    any.value.clear();
                }
                fill(m);
            }
        }
        put_frame(&mut self.wbuf, &frame);
        if self.wbuf.len() >= WRITE_BATCH_BYTES {
            self.flush().await?;
        }
        Ok(corr)
    }

    /// Writes every queued frame to the socket.
    pub async fn flush(&mut self) -> Result<()> {
        let due = self.answers.pong_due.lock().expect("not poisoned").take();
        if let Some(nonce) = due {
            put_frame(&mut self.wbuf, &pong(nonce));
        }
        if !self.wbuf.is_empty() {
            self.wr
                .write_all(&self.wbuf)
                .await
                .context("writing Publish frames")?;
            self.wbuf.clear();
        }
        Ok(())
    }

    pub fn answers(&self) -> &Arc<Answers> {
        &self.answers
    }

    /// The stream of PubAck/Error answers to acked publishes (taken once).
    pub fn take_acks(&mut self) -> Option<mpsc::UnboundedReceiver<Ack>> {
        self.acks.take()
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

async fn read_answers(
    mut rd: OwnedReadHalf,
    mut rbuf: BytesMut,
    answers: Arc<Answers>,
    acks: mpsc::UnboundedSender<Ack>,
) {
    loop {
        let body = match read_frame(&mut rd, &mut rbuf).await {
            Ok(Some(body)) => body,
            Ok(None) | Err(_) => {
                answers.closed.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        if let Some(nonce) = keepalive_nonce(&body) {
            *answers.pong_due.lock().expect("not poisoned") = Some(nonce);
            continue;
        }
        let Ok(frame) = ServerFrame::decode(body) else {
            answers.errors.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let correlation_id = frame.correlation_id;
        match frame.kind {
            Some(server_frame::Kind::PubAck(a)) => {
                let _ = acks.send(Ack {
                    correlation_id,
                    result: Ok(a.sequence),
                });
            }
            Some(server_frame::Kind::Error(e)) => {
                let err = ServerError::from_proto(&e);
                answers.errors.fetch_add(1, Ordering::Relaxed);
                *answers.last_error.lock().expect("not poisoned") = Some(err.clone());
                let _ = acks.send(Ack {
                    correlation_id,
                    result: Err(err),
                });
            }
            _ => {}
        }
    }
}

impl ServerError {
    pub fn from_proto(e: &arqonbus_proto::v1::Error) -> Self {
        let name = ErrorCode::try_from(e.code)
            .map(|c| c.as_str_name().to_string())
            .unwrap_or_else(|_| "UNKNOWN".to_string());
        ServerError {
            code: e.code,
            name,
            message: e.message.clone(),
        }
    }
}

fn kind_name(kind: &Option<server_frame::Kind>) -> &'static str {
    match kind {
        None => "an empty frame",
        Some(server_frame::Kind::Welcome(_)) => "Welcome",
        Some(server_frame::Kind::Deliver(_)) => "Deliver",
        Some(server_frame::Kind::PubAck(_)) => "PubAck",
        Some(server_frame::Kind::Error(_)) => "Error",
        Some(server_frame::Kind::HistoryChunk(_)) => "HistoryChunk",
        Some(server_frame::Kind::HistoryEnd(_)) => "HistoryEnd",
        Some(server_frame::Kind::Dropped(_)) => "Dropped",
        Some(server_frame::Kind::Pong(_)) => "Pong",
        Some(server_frame::Kind::Subscribed(_)) => "Subscribed",
        Some(server_frame::Kind::Params(_)) => "Params",
        Some(server_frame::Kind::Presence(_)) => "Presence",
        Some(server_frame::Kind::Ping(_)) => "Ping",
    }
}

/// The nonce of a server keepalive `Ping`, `None` for any other frame. A Ping has correlation
/// id 0, so its body starts with the tag of `ServerFrame.ping` (field 13, length-delimited): one
/// byte compared per frame, nothing decoded on the delivery path.
fn keepalive_nonce(body: &[u8]) -> Option<u64> {
    const PING_TAG: u8 = (13 << 3) | 2;
    if body.first() != Some(&PING_TAG) {
        return None;
    }
    match ServerFrame::decode(body).ok()?.kind {
        Some(server_frame::Kind::Ping(p)) => Some(p.nonce),
        _ => None,
    }
}

/// The answer to a keepalive Ping.
fn pong(nonce: u64) -> ClientFrame {
    ClientFrame {
        correlation_id: 0,
        kind: Some(client_frame::Kind::Pong(Pong {
            nonce,
            server_time_unix_nanos: 0,
        })),
    }
}

// Field numbers on the path ServerFrame.deliver(3) -> Deliver.message(2) ->
// ArqonMessage.payload(8) -> Any.value(2), and of ServerFrame.history_chunk(6) ->
// HistoryChunk.messages(1).
const SERVER_FRAME_CORRELATION: u32 = 1;
const SERVER_FRAME_DELIVER: u32 = 3;
const SERVER_FRAME_HISTORY_CHUNK: u32 = 6;
const HISTORY_CHUNK_MESSAGES: u32 = 1;
const DELIVER_SUBSCRIPTION_ID: u32 = 1;
const DELIVER_MESSAGE: u32 = 2;
const MESSAGE_PAYLOAD: u32 = 8;
const ANY_VALUE: u32 = 2;

/// The subscription id and payload bytes of a Deliver frame, sliced out of `body` without
/// decoding the envelope. `None` when the frame is not a Deliver.
pub fn deliver_parts(body: &Bytes) -> Option<Result<(u64, Bytes)>> {
    let deliver = match find_len_field(body, 0, body.len(), SERVER_FRAME_DELIVER) {
        Ok(Some(range)) => range,
        Ok(None) => return None,
        Err(e) => return Some(Err(e)),
    };
    let payload = deliver_payload(body)?;
    Some(payload.and_then(|p| {
        let id = find_varint_field(body, deliver.0, deliver.1, DELIVER_SUBSCRIPTION_ID)?;
        Ok((id.unwrap_or(0), p))
    }))
}

/// The payload bytes of a Deliver frame, sliced out of `body` without decoding the envelope.
/// `None` when the frame is not a Deliver (the caller decodes it fully); `Some(Err)` when it is
/// malformed.
pub fn deliver_payload(body: &Bytes) -> Option<Result<Bytes>> {
    let deliver = match find_len_field(body, 0, body.len(), SERVER_FRAME_DELIVER) {
        Ok(Some(range)) => range,
        Ok(None) => return None,
        Err(e) => return Some(Err(e)),
    };
    let inner = || -> Result<Bytes> {
        let Some(msg) = find_len_field(body, deliver.0, deliver.1, DELIVER_MESSAGE)? else {
            return Ok(Bytes::new());
        };
        let Some(any) = find_len_field(body, msg.0, msg.1, MESSAGE_PAYLOAD)? else {
            return Ok(Bytes::new());
        };
        let Some(value) = find_len_field(body, any.0, any.1, ANY_VALUE)? else {
            return Ok(Bytes::new());
        };
        Ok(body.slice(value.0..value.1))
    };
    Some(inner())
}

/// Finds the last length-delimited field `field` in `buf[start..end]` (protobuf keeps the last
/// occurrence of a non-repeated field) and returns its byte range.
fn find_len_field(
    buf: &[u8],
    start: usize,
    end: usize,
    field: u32,
) -> Result<Option<(usize, usize)>> {
    let mut found = None;
    walk_fields(buf, start, end, |number, value| {
        if let (true, Value::Len(range)) = (number == field, value) {
            found = Some(range);
        }
    })?;
    Ok(found)
}

/// How many times the length-delimited field `field` occurs in `buf[start..end]`: the length of
/// a repeated message field.
fn count_len_fields(buf: &[u8], start: usize, end: usize, field: u32) -> Result<u64> {
    let mut count = 0;
    walk_fields(buf, start, end, |number, value| {
        if let (true, Value::Len(_)) = (number == field, value) {
            count += 1;
        }
    })?;
    Ok(count)
}

/// The last varint field `field` in `buf[start..end]`.
fn find_varint_field(buf: &[u8], start: usize, end: usize, field: u32) -> Result<Option<u64>> {
    let mut found = None;
    walk_fields(buf, start, end, |number, value| {
        if let (true, Value::Varint(v)) = (number == field, value) {
            found = Some(v);
        }
    })?;
    Ok(found)
}

/// A field's value as [`walk_fields`] sees it.
enum Value {
    Varint(u64),
    /// The byte range of a length-delimited field's contents.
    Len((usize, usize)),
    /// A 32- or 64-bit fixed-width field (not read).
    Fixed,
}

/// Calls `each` with the number and value of every field in `buf[start..end]`, in order.
fn walk_fields(
    buf: &[u8],
    start: usize,
    end: usize,
    mut each: impl FnMut(u32, Value),
) -> Result<()> {
    let mut pos = start;
    while pos < end {
        let key = read_varint(buf, &mut pos, end)?;
        let (number, wire) = ((key >> 3) as u32, (key & 7) as u32);
        let value = match wire {
            0 => Value::Varint(read_varint(buf, &mut pos, end)?),
            1 => {
                pos += 8;
                Value::Fixed
            }
            2 => {
                let len = read_varint(buf, &mut pos, end)? as usize;
                let field_start = pos;
                pos = pos
                    .checked_add(len)
                    .filter(|e| *e <= end)
                    .ok_or_else(|| anyhow!("truncated field"))?;
                Value::Len((field_start, pos))
            }
            5 => {
                pos += 4;
                Value::Fixed
            }
            other => bail!("unsupported protobuf wire type {other}"),
        };
        if pos > end {
            bail!("truncated field");
        }
        each(number, value);
    }
    Ok(())
}

fn read_varint(buf: &[u8], pos: &mut usize, end: usize) -> Result<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let Some(&b) = buf.get(*pos).filter(|_| *pos < end) else {
            bail!("truncated varint");
        };
        *pos += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    bail!("varint longer than 10 bytes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use arqonbus_proto::v1::{Deliver, Dropped, HistoryChunk, HistoryEnd, Ping};

    fn frame_body(kind: server_frame::Kind) -> Bytes {
        Bytes::from(
            ServerFrame {
                correlation_id: 0,
                kind: Some(kind),
            }
            .encode_to_vec(),
        )
    }

    #[test]
    fn keepalive_pings_are_told_from_other_frames() {
        let ping = frame_body(server_frame::Kind::Ping(Ping { nonce: 42 }));
        assert_eq!(keepalive_nonce(&ping), Some(42));
        let zero = frame_body(server_frame::Kind::Ping(Ping { nonce: 0 }));
        assert_eq!(keepalive_nonce(&zero), Some(0));
        let deliver = frame_body(server_frame::Kind::Deliver(Deliver::default()));
        assert_eq!(keepalive_nonce(&deliver), None);
        assert_eq!(keepalive_nonce(&[]), None);
        assert_eq!(keepalive_nonce(&[(13 << 3) | 2, 0xff]), None, "truncated");
    }

    #[test]
    fn fast_deliver_path_matches_prost() {
        for size in [0usize, 1, 40, 127, 128, 1024, 70_000] {
            let value: Vec<u8> = (0..size).map(|i| i as u8).collect();
            let message = ArqonMessage {
                id: "0190-abc".into(),
                sequence: 12345,
                topic: TOPIC.into(),
                producer_id: "p".into(),
                reality_id: "bench-r0".into(),
                trace_context: std::collections::BTreeMap::from([(
                    "traceparent".to_string(),
                    "00-x".to_string(),
                )]),
                payload: Some(prost_types::Any {
                    type_url: TYPE_URL.into(),
                    value: value.clone(),
                }),
                timestamp_unix_nanos: 99,
                causal: std::collections::BTreeMap::from([("bench-r0".to_string(), 12345)]),
                ..Default::default()
            };
            let body = frame_body(server_frame::Kind::Deliver(Deliver {
                subscription_id: 300,
                message: Some(message),
            }));
            let got = deliver_payload(&body)
                .expect("is a Deliver")
                .expect("well formed");
            assert_eq!(&got[..], &value[..], "size {size}");
            let (id, again) = deliver_parts(&body)
                .expect("is a Deliver")
                .expect("well formed");
            assert_eq!((id, &again[..]), (300, &value[..]), "size {size}");
        }
    }

    #[test]
    fn history_chunks_are_counted_like_prost_decodes_them() {
        for n in [0usize, 1, 2, 300] {
            let messages: Vec<ArqonMessage> = (0..n)
                .map(|i| ArqonMessage {
                    sequence: i as u64 + 1,
                    topic: TOPIC.into(),
                    reality_id: "tenant-a-hist-0".into(),
                    payload: Some(prost_types::Any {
                        type_url: TYPE_URL.into(),
                        value: vec![7; 256],
                    }),
                    ..Default::default()
                })
                .collect();
            let body = Bytes::from(
                ServerFrame {
                    correlation_id: 77,
                    kind: Some(server_frame::Kind::HistoryChunk(HistoryChunk { messages })),
                }
                .encode_to_vec(),
            );
            let chunk = find_len_field(&body, 0, body.len(), SERVER_FRAME_HISTORY_CHUNK)
                .unwrap()
                .expect("a HistoryChunk");
            assert_eq!(
                count_len_fields(&body, chunk.0, chunk.1, HISTORY_CHUNK_MESSAGES).unwrap(),
                n as u64
            );
            assert_eq!(
                find_varint_field(&body, 0, body.len(), SERVER_FRAME_CORRELATION).unwrap(),
                Some(77)
            );
        }
        let end = frame_body(server_frame::Kind::HistoryEnd(HistoryEnd {
            count: 5,
            next_sequence: 6,
        }));
        assert_eq!(
            find_len_field(&end, 0, end.len(), SERVER_FRAME_HISTORY_CHUNK).unwrap(),
            None
        );
    }

    #[test]
    fn other_frames_are_left_to_prost() {
        let body = frame_body(server_frame::Kind::Dropped(Dropped {
            subscription_id: 1,
            count: 5,
        }));
        assert!(deliver_payload(&body).is_none());
    }

    #[test]
    fn truncated_deliver_is_an_error() {
        let body = frame_body(server_frame::Kind::Deliver(Deliver {
            subscription_id: 1,
            message: Some(ArqonMessage {
                payload: Some(prost_types::Any {
                    type_url: "t".into(),
                    value: vec![1; 100],
                }),
                ..Default::default()
            }),
        }));
        let cut = body.slice(0..body.len() - 10);
        assert!(deliver_payload(&cut)
            .expect("starts like a Deliver")
            .is_err());
    }
}
