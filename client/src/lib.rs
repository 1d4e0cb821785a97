//! The Rust client for ArqonBus, on tokio.
//!
//! ```no_run
//! # async fn demo() -> Result<(), arqonbus_client::ClientError> {
//! use arqonbus_client::{Client, ConnectOptions, Outgoing};
//! use futures::StreamExt;
//!
//! let bus = Client::connect("127.0.0.1:4720", ConnectOptions::default()).await?;
//! let mut sub = bus.subscribe("lab-1", "rig.*.temp").await?;
//! bus.publish(Outgoing::new("lab-1", "rig.a.temp").bytes(b"21.5".to_vec())).await?;
//! let pulse = sub.next().await.unwrap()?;
//! println!("{} #{}", pulse.topic, pulse.sequence);
//! # Ok(()) }
//! ```
//!
//! The client keeps its own causal context: every pulse it receives and every ack it gets are
//! merged into a vector clock (reality → highest sequence seen), which is attached to every
//! publish, so causality crosses realities without the user doing anything.

mod delta;
mod error;
mod outgoing;
mod tls;

pub use arqonbus_proto as proto;
pub use error::ClientError;
pub use outgoing::Outgoing;
pub use tls::TlsOptions;
pub use tokio_rustls::rustls;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use arqonbus_proto::frame::{put_frame, take_frame};
use arqonbus_proto::v1::{
    client_frame, param, server_frame, ArqonMessage, ClientFrame, ErrorCode, Hello, HistoryEnd,
    HistoryGet, OperatorManifest, Param, Params, ParamsGet, Ping, PresenceEntry, PresenceGet,
    PubAck, Publish, ServerFrame, StartPosition, Subscribe, Unsubscribe, Welcome,
};
use bytes::BytesMut;
use futures::Stream;
use prost::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio::sync::{mpsc, oneshot};

/// How to subscribe, for [`Client::subscribe_with`]. The default is what
/// [`Client::subscribe`] does: from `latest`, not causal, no filter.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SubscribeOptions {
    /// Where to start; `None` is `latest` (replay needs a retained reality).
    pub start: Option<StartPosition>,
    /// Causal delivery (starts at `latest` only).
    pub causal: bool,
    /// A spectral filter (`Subscribe.filter`, grammar in proto/README.md); empty for none.
    pub filter: String,
}

impl SubscribeOptions {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn start(mut self, start: StartPosition) -> Self {
        self.start = Some(start);
        self
    }

    pub fn causal(mut self) -> Self {
        self.causal = true;
        self
    }

    /// Delivers only the pulses for which `expression` holds, e.g.
    /// `coherence >= 0.9 && criticality < 0.1`.
    pub fn filter(mut self, expression: impl Into<String>) -> Self {
        self.filter = expression.into();
        self
    }
}

/// How to connect.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub client_name: String,
    pub token: String,
    pub manifest: Option<OperatorManifest>,
    /// Time allowed for connect plus handshake, and for each acked request.
    pub timeout: Duration,
    /// Largest frame this client accepts from the server.
    pub max_frame_bytes: usize,
    /// Pulses buffered per subscription before the reader stops reading the socket (and the
    /// server's slow-consumer policy takes over).
    pub subscription_buffer: usize,
    /// Speak TLS (to the server's `tls_listen`). A `tls://host:port` address given to
    /// [`Client::connect_url`] needs this too, for the roots to trust.
    pub tls: Option<TlsOptions>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            client_name: "arqonbus-rust".into(),
            token: String::new(),
            manifest: None,
            timeout: Duration::from_secs(10),
            max_frame_bytes: 64 << 20,
            subscription_buffer: 4096,
            tls: None,
        }
    }
}

/// What one subscription yields.
type SubItem = Result<ArqonMessage, ClientError>;

type Pending = oneshot::Sender<Result<ServerFrame, ClientError>>;

struct Shared {
    pending: Mutex<HashMap<u64, Pending>>,
    /// Requests answered by several frames (history), by correlation id.
    streams: Mutex<HashMap<u64, mpsc::Sender<ServerFrame>>>,
    subs: Mutex<HashMap<u64, mpsc::Sender<SubItem>>>,
    causal: Mutex<HashMap<String, u64>>,
    /// Set once the connection has failed or closed; every later call fails with it.
    closed: Mutex<Option<ClientError>>,
}

impl Shared {
    fn merge_causal(&self, clock: &std::collections::BTreeMap<String, u64>) {
        let mut causal = self.causal.lock().expect("causal lock");
        for (reality, seq) in clock {
            let entry = causal.entry(reality.clone()).or_insert(0);
            *entry = (*entry).max(*seq);
        }
    }

    fn note(&self, reality: &str, sequence: u64) {
        let mut causal = self.causal.lock().expect("causal lock");
        let entry = causal.entry(reality.to_owned()).or_insert(0);
        *entry = (*entry).max(sequence);
    }

    fn fail_all(&self, err: ClientError) {
        self.closed
            .lock()
            .expect("closed lock")
            .get_or_insert(err.clone());
        for (_, tx) in self.pending.lock().expect("pending lock").drain() {
            let _ = tx.send(Err(err.clone()));
        }
        for (_, tx) in self.subs.lock().expect("subs lock").drain() {
            let _ = tx.try_send(Err(err.clone()));
        }
        self.streams.lock().expect("streams lock").clear();
    }
}

/// A connection to the bus. Cheap to clone; all clones share the connection.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
    out: mpsc::Sender<Vec<u8>>,
    next_id: Arc<AtomicU64>,
    welcome: Arc<Welcome>,
    timeout: Duration,
    subscription_buffer: usize,
}

impl Client {
    /// Connects to `tcp://host:port`, `tls://host:port` or `host:port` (TCP, or TLS when
    /// `options.tls` is set).
    pub async fn connect_url(url: &str, mut options: ConnectOptions) -> Result<Self, ClientError> {
        if let Some(addr) = url.strip_prefix("tls://") {
            if options.tls.is_none() {
                return Err(ClientError::Tls(
                    "a tls:// address needs ConnectOptions::tls (the CA to trust)".into(),
                ));
            }
            return Self::connect(addr, options).await;
        }
        if let Some(addr) = url.strip_prefix("tcp://") {
            options.tls = None;
            return Self::connect(addr, options).await;
        }
        Self::connect(url, options).await
    }

    /// Connects, says Hello, and waits for Welcome. With `options.tls` set the connection is
    /// TLS, and the server's certificate is checked against the address's host (or
    /// `TlsOptions::server_name`).
    pub async fn connect(
        addr: impl ToSocketAddrs + std::fmt::Display,
        options: ConnectOptions,
    ) -> Result<Self, ClientError> {
        let host = addr.to_string();
        let host = host
            .rsplit_once(':')
            .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']').to_owned())
            .unwrap_or(host);
        let stream = tokio::time::timeout(options.timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ClientError::Timeout)??;
        stream.set_nodelay(true)?;
        match options.tls.clone() {
            None => {
                let (rd, wr) = stream.into_split();
                Self::start(rd, wr, options).await
            }
            Some(tls) => {
                let name = tls.name_for(&host)?;
                let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
                let stream = tokio::time::timeout(options.timeout, connector.connect(name, stream))
                    .await
                    .map_err(|_| ClientError::Timeout)?
                    .map_err(|e| ClientError::Tls(format!("handshake failed: {e}")))?;
                let (rd, wr) = tokio::io::split(stream);
                Self::start(rd, wr, options).await
            }
        }
    }

    async fn start<R, W>(rd: R, wr: W, options: ConnectOptions) -> Result<Self, ClientError>
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let shared = Arc::new(Shared {
            pending: Mutex::new(HashMap::new()),
            streams: Mutex::new(HashMap::new()),
            subs: Mutex::new(HashMap::new()),
            causal: Mutex::new(HashMap::new()),
            closed: Mutex::new(None),
        });
        let (out_tx, out_rx) = mpsc::channel(1024);
        tokio::spawn(write_loop(wr, out_rx, shared.clone()));
        // Weak: the writer ends (and shuts the socket down) when the client's own senders are
        // gone; the reader must not keep it alive.
        tokio::spawn(read_loop(
            rd,
            shared.clone(),
            out_tx.downgrade(),
            options.max_frame_bytes,
        ));

        let mut client = Self {
            shared,
            out: out_tx,
            next_id: Arc::new(AtomicU64::new(1)),
            welcome: Arc::new(Welcome::default()),
            timeout: options.timeout,
            subscription_buffer: options.subscription_buffer,
        };
        let hello = client_frame::Kind::Hello(Hello {
            protocol_version: arqonbus_proto::PROTOCOL_VERSION,
            client_name: options.client_name,
            token: options.token,
            manifest: options.manifest,
        });
        match client.request(hello).await?.kind {
            Some(server_frame::Kind::Welcome(w)) => client.welcome = Arc::new(w),
            other => return Err(unexpected("Welcome", other)),
        }
        Ok(client)
    }

    /// What the server said in Welcome (session id, shard, limits).
    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    /// True once the connection has failed or been closed: every later call fails.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.lock().expect("closed lock").is_some()
    }

    /// The causal context this client would attach to its next publish.
    pub fn causal_context(&self) -> HashMap<String, u64> {
        self.shared.causal.lock().expect("causal lock").clone()
    }

    fn next_correlation(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn closed_error(&self) -> ClientError {
        self.shared
            .closed
            .lock()
            .expect("closed lock")
            .clone()
            .unwrap_or(ClientError::Closed)
    }

    async fn send(&self, correlation_id: u64, kind: client_frame::Kind) -> Result<(), ClientError> {
        let frame = ClientFrame {
            correlation_id,
            kind: Some(kind),
        };
        let mut buf = BytesMut::with_capacity(frame.encoded_len() + 4);
        put_frame(&mut buf, &frame);
        self.out
            .send(buf.to_vec())
            .await
            .map_err(|_| self.closed_error())
    }

    /// Sends a request and waits for the answer with its correlation id. An `Error` answer
    /// becomes `ClientError::Server`.
    async fn request(&self, kind: client_frame::Kind) -> Result<ServerFrame, ClientError> {
        let id = self.next_correlation();
        let (tx, rx) = oneshot::channel();
        self.shared
            .pending
            .lock()
            .expect("pending lock")
            .insert(id, tx);
        if let Err(e) = self.send(id, kind).await {
            self.shared
                .pending
                .lock()
                .expect("pending lock")
                .remove(&id);
            return Err(e);
        }
        let answer = match tokio::time::timeout(self.timeout, rx).await {
            Err(_) => {
                self.shared
                    .pending
                    .lock()
                    .expect("pending lock")
                    .remove(&id);
                return Err(ClientError::Timeout);
            }
            Ok(Err(_)) => return Err(self.closed_error()),
            Ok(Ok(answer)) => answer?,
        };
        match answer.kind {
            Some(server_frame::Kind::Error(e)) => Err(ClientError::from_wire(&e)),
            _ => Ok(answer),
        }
    }

    fn envelope(&self, outgoing: Outgoing) -> ArqonMessage {
        let mut message = outgoing.into_message();
        let causal = self.shared.causal.lock().expect("causal lock");
        for (reality, seq) in causal.iter() {
            message.causal.entry(reality.clone()).or_insert(*seq);
        }
        message
    }

    /// Publishes without waiting for the bus (fire and forget). Errors the server reports for
    /// it (bad topic, policy) are logged, not returned; use [`Client::publish_acked`] to see them.
    pub async fn publish(&self, outgoing: Outgoing) -> Result<(), ClientError> {
        let message = self.envelope(outgoing);
        let kind = client_frame::Kind::Publish(Publish {
            message: Some(message),
            ack: false,
        });
        self.send(self.next_correlation(), kind).await
    }

    /// Publishes and waits until the reality's owner has sequenced the pulse.
    pub async fn publish_acked(&self, outgoing: Outgoing) -> Result<PubAck, ClientError> {
        let message = self.envelope(outgoing);
        let kind = client_frame::Kind::Publish(Publish {
            message: Some(message),
            ack: true,
        });
        match self.request(kind).await?.kind {
            Some(server_frame::Kind::PubAck(ack)) => {
                self.shared.note(&ack.reality_id, ack.sequence);
                Ok(ack)
            }
            other => Err(unexpected("PubAck", other)),
        }
    }

    /// Subscribes to the pulses of `reality` whose topic matches `pattern`, from now on.
    pub async fn subscribe(
        &self,
        reality: &str,
        pattern: &str,
    ) -> Result<Subscription, ClientError> {
        self.subscribe_from(reality, pattern, None).await
    }

    /// Subscribes from a start position (retained realities only).
    pub async fn subscribe_from(
        &self,
        reality: &str,
        pattern: &str,
        start: Option<StartPosition>,
    ) -> Result<Subscription, ClientError> {
        let options = SubscribeOptions {
            start,
            ..SubscribeOptions::default()
        };
        self.subscribe_with(reality, pattern, options).await
    }

    /// Subscribes with causal delivery: a pulse arrives only after the pulses it depends on, in
    /// realities this client also subscribes to, have arrived.
    pub async fn subscribe_causal(
        &self,
        reality: &str,
        pattern: &str,
    ) -> Result<Subscription, ClientError> {
        self.subscribe_with(reality, pattern, SubscribeOptions::new().causal())
            .await
    }

    /// Subscribes with every option: start position, causal delivery, spectral filter.
    ///
    /// ```no_run
    /// # async fn demo(bus: arqonbus_client::Client) -> Result<(), arqonbus_client::ClientError> {
    /// use arqonbus_client::SubscribeOptions;
    /// let options = SubscribeOptions::new().filter("coherence >= 0.9 && criticality < 0.1");
    /// let sub = bus.subscribe_with("lab-1", "rig.>", options).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// A filter the server cannot parse is refused with INVALID_REQUEST, naming the byte of
    /// the error.
    pub async fn subscribe_with(
        &self,
        reality: &str,
        pattern: &str,
        options: SubscribeOptions,
    ) -> Result<Subscription, ClientError> {
        let SubscribeOptions {
            start,
            causal,
            filter,
        } = options;
        let id = self.next_correlation();
        let (tx, rx) = mpsc::channel(self.subscription_buffer);
        self.shared.subs.lock().expect("subs lock").insert(id, tx);
        let kind = client_frame::Kind::Subscribe(Subscribe {
            subscription_id: id,
            reality_id: reality.to_owned(),
            pattern: pattern.to_owned(),
            start,
            causal,
            filter,
        });
        let answer = match self.request(kind).await {
            Ok(a) => a,
            Err(e) => {
                self.shared.subs.lock().expect("subs lock").remove(&id);
                return Err(e);
            }
        };
        match answer.kind {
            Some(server_frame::Kind::Subscribed(s)) => Ok(Subscription {
                id,
                next_sequence: s.next_sequence,
                rx,
                client: self.clone(),
                active: true,
                rebuild: delta::Rebuild::new(self.max_state_bytes()),
            }),
            other => {
                self.shared.subs.lock().expect("subs lock").remove(&id);
                Err(unexpected("Subscribed", other))
            }
        }
    }

    /// Reads a bounded range of a retained reality. The stream ends after the last pulse of the
    /// range; the server sends chunks only as fast as they are read.
    pub async fn history(&self, query: HistoryGet) -> Result<History, ClientError> {
        let id = self.next_correlation();
        let (tx, rx) = mpsc::channel(4);
        self.shared
            .streams
            .lock()
            .expect("streams lock")
            .insert(id, tx);
        if let Err(e) = self.send(id, client_frame::Kind::HistoryGet(query)).await {
            self.shared
                .streams
                .lock()
                .expect("streams lock")
                .remove(&id);
            return Err(e);
        }
        Ok(History {
            rx,
            buffered: std::collections::VecDeque::new(),
            end: None,
            shared: self.shared.clone(),
            rebuild: delta::Rebuild::new(self.max_state_bytes()),
        })
    }

    /// The largest state a delta may rebuild: no pulse is larger than a frame.
    fn max_state_bytes(&self) -> usize {
        match self.welcome.max_frame_bytes {
            0 => 64 << 20,
            n => n as usize,
        }
    }

    /// Who is present in a reality (sessions with a subscription there), every page of it.
    pub async fn presence(&self, reality: &str) -> Result<Vec<PresenceEntry>, ClientError> {
        let mut entries = Vec::new();
        loop {
            let kind = client_frame::Kind::PresenceGet(PresenceGet {
                reality_id: reality.to_owned(),
                offset: entries.len() as u32,
                limit: 0,
            });
            match self.request(kind).await?.kind {
                Some(server_frame::Kind::Presence(p)) => {
                    let got = p.entries.len();
                    entries.extend(p.entries);
                    if got == 0 || entries.len() >= p.total as usize {
                        return Ok(entries);
                    }
                }
                other => return Err(unexpected("Presence", other)),
            }
        }
    }

    /// The current parameters of a reality (`sys.control.param.set`), each with its version
    /// and the sequence it was set at.
    pub async fn params(&self, reality: &str) -> Result<Params, ClientError> {
        let kind = client_frame::Kind::ParamsGet(ParamsGet {
            reality_id: reality.to_owned(),
        });
        match self.request(kind).await?.kind {
            Some(server_frame::Kind::Params(p)) => Ok(p),
            other => Err(unexpected("Params", other)),
        }
    }

    /// Sets a parameter of a reality (a controller session only): every session subscribed to
    /// the reality receives it on `sys.param.<name>`. The ack's sequence is where it was set.
    pub async fn set_param(
        &self,
        reality: &str,
        name: &str,
        value: param::Value,
    ) -> Result<PubAck, ClientError> {
        let set = Param {
            name: name.to_owned(),
            value: Some(value),
            ..Param::default()
        };
        let outgoing = Outgoing::new(reality, "sys.control.param.set")
            .payload(&<Param as prost::Name>::type_url(), set.encode_to_vec());
        self.publish_acked(outgoing).await
    }

    /// Installs a typed circuit (a controller session only; audited, replaces the circuit of
    /// its name). The bus type-checks every edge, and the operators online now against their
    /// stages; a refusal (`INVALID_REQUEST`) names the edge or stage.
    pub async fn apply_circuit(
        &self,
        circuit: &arqonbus_proto::circuit::v1::Circuit,
    ) -> Result<PubAck, ClientError> {
        let outgoing =
            Outgoing::new(&circuit.reality_id, "sys.control.circuit.apply").message(circuit);
        self.publish_acked(outgoing).await
    }

    /// Removes a circuit by name (a controller session only; audited).
    pub async fn remove_circuit(&self, name: &str) -> Result<PubAck, ClientError> {
        let remove = arqonbus_proto::circuit::v1::CircuitRemove {
            name: name.to_owned(),
        };
        let outgoing = Outgoing::new("sys", "sys.control.circuit.remove").message(&remove);
        self.publish_acked(outgoing).await
    }

    /// Round trip to the server; returns the server's clock.
    pub async fn ping(&self) -> Result<u64, ClientError> {
        let nonce = self.next_correlation();
        match self
            .request(client_frame::Kind::Ping(Ping { nonce }))
            .await?
            .kind
        {
            Some(server_frame::Kind::Pong(p)) if p.nonce == nonce => Ok(p.server_time_unix_nanos),
            other => Err(unexpected("Pong", other)),
        }
    }

    /// Waits until everything sent before it has been processed by the server (a ping round
    /// trip: the server answers frames of one connection in order).
    pub async fn flush(&self) -> Result<(), ClientError> {
        self.ping().await.map(|_| ())
    }

    /// Flushes and closes the connection.
    pub async fn close(self) -> Result<(), ClientError> {
        let flushed = self.flush().await;
        self.shared.fail_all(ClientError::Closed);
        flushed
    }
}

fn unexpected(wanted: &str, got: Option<server_frame::Kind>) -> ClientError {
    ClientError::Protocol(format!("expected {wanted}, got {got:?}"))
}

/// A live subscription: a `Stream` of pulses. A gap the server reports (the connection was
/// too slow and pulses were shed) arrives as `Err(ClientError::Dropped)`; the stream goes on.
pub struct Subscription {
    id: u64,
    next_sequence: u64,
    rx: mpsc::Receiver<SubItem>,
    client: Client,
    active: bool,
    /// Delta-only topics' states (docs/delta.md).
    rebuild: delta::Rebuild,
}

impl Subscription {
    /// The subscription id on the wire.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The first sequence this subscription will see.
    pub fn next_sequence(&self) -> u64 {
        self.next_sequence
    }

    /// Stops the subscription. Pulses already received stay readable.
    pub async fn unsubscribe(mut self) -> Result<(), ClientError> {
        self.active = false;
        self.client
            .shared
            .subs
            .lock()
            .expect("subs lock")
            .remove(&self.id);
        let kind = client_frame::Kind::Unsubscribe(Unsubscribe {
            subscription_id: self.id,
        });
        self.client.send(self.client.next_correlation(), kind).await
    }
}

impl Stream for Subscription {
    type Item = SubItem;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<SubItem>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(Ok(mut message))) => {
                let rebuilt = self.rebuild.whole(&mut message).map(|()| message);
                Poll::Ready(Some(rebuilt))
            }
            // A `Dropped` report comes after the pulses that followed the gap (the server sent
            // those whole where the gap broke a chain): the states held stay valid.
            other => other,
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if !self.active {
            return;
        }
        self.client
            .shared
            .subs
            .lock()
            .expect("subs lock")
            .remove(&self.id);
        let frame = ClientFrame {
            correlation_id: 0,
            kind: Some(client_frame::Kind::Unsubscribe(Unsubscribe {
                subscription_id: self.id,
            })),
        };
        let mut buf = BytesMut::new();
        put_frame(&mut buf, &frame);
        // Best effort: a full or closed queue means the connection is busy or gone.
        let _ = self.client.out.try_send(buf.to_vec());
    }
}

/// The answer to a history query: a `Stream` of pulses in sequence order.
pub struct History {
    rx: mpsc::Receiver<ServerFrame>,
    buffered: std::collections::VecDeque<ArqonMessage>,
    end: Option<HistoryEnd>,
    shared: Arc<Shared>,
    /// Delta-only topics' states within this read.
    rebuild: delta::Rebuild,
}

impl History {
    /// The server's summary, once the stream has ended.
    pub fn end(&self) -> Option<&HistoryEnd> {
        self.end.as_ref()
    }

    /// Reads the whole range.
    pub async fn collect_all(mut self) -> Result<(Vec<ArqonMessage>, HistoryEnd), ClientError> {
        use futures::StreamExt;
        let mut out = Vec::new();
        while let Some(m) = self.next().await {
            out.push(m?);
        }
        let end = self.end.take().ok_or(ClientError::Closed)?;
        Ok((out, end))
    }
}

impl Stream for History {
    type Item = Result<ArqonMessage, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(mut m) = self.buffered.pop_front() {
                self.shared.merge_causal(&m.causal);
                let rebuilt = self.rebuild.whole(&mut m).map(|()| m);
                return Poll::Ready(Some(rebuilt));
            }
            if self.end.is_some() {
                return Poll::Ready(None);
            }
            let frame = match self.rx.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => return Poll::Ready(Some(Err(ClientError::Closed))),
                Poll::Ready(Some(frame)) => frame,
            };
            match frame.kind {
                Some(server_frame::Kind::HistoryChunk(chunk)) => {
                    self.buffered.extend(chunk.messages)
                }
                Some(server_frame::Kind::HistoryEnd(end)) => self.end = Some(end),
                Some(server_frame::Kind::Error(e)) => {
                    self.end = Some(HistoryEnd::default());
                    return Poll::Ready(Some(Err(ClientError::from_wire(&e))));
                }
                other => {
                    return Poll::Ready(Some(Err(unexpected("HistoryChunk", other))));
                }
            }
        }
    }
}

async fn write_loop(
    mut wr: impl AsyncWrite + Unpin,
    mut rx: mpsc::Receiver<Vec<u8>>,
    shared: Arc<Shared>,
) {
    let mut batch = Vec::with_capacity(64 << 10);
    while let Some(first) = rx.recv().await {
        batch.extend_from_slice(&first);
        // Coalesce what is already queued into one write.
        while batch.len() < (64 << 10) {
            match rx.try_recv() {
                Ok(more) => batch.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        if let Err(e) = async {
            wr.write_all(&batch).await?;
            wr.flush().await
        }
        .await
        {
            shared.fail_all(ClientError::Io(Arc::new(e)));
            return;
        }
        batch.clear();
    }
    let _ = wr.shutdown().await;
}

async fn read_loop(
    mut rd: impl AsyncRead + Unpin,
    shared: Arc<Shared>,
    out: mpsc::WeakSender<Vec<u8>>,
    max_frame_bytes: usize,
) {
    let mut buf = BytesMut::with_capacity(64 << 10);
    let err = loop {
        match take_frame(&mut buf, max_frame_bytes) {
            Ok(Some(body)) => match ServerFrame::decode(body) {
                Ok(ServerFrame {
                    kind: Some(server_frame::Kind::Ping(ping)),
                    ..
                }) => {
                    answer_keepalive(&out, ping.nonce);
                    continue;
                }
                Ok(frame) => {
                    if let Err(e) = route(&shared, frame).await {
                        break e;
                    }
                    continue;
                }
                Err(e) => break ClientError::Protocol(format!("undecodable frame: {e}")),
            },
            Ok(None) => {}
            Err(e) => break ClientError::Protocol(e.to_string()),
        }
        buf.reserve(16 << 10);
        match rd.read_buf(&mut buf).await {
            Ok(0) => break ClientError::Closed,
            Ok(_) => {}
            Err(e) => break ClientError::Io(Arc::new(e)),
        }
    };
    shared.fail_all(err);
}

/// Answers the server's keepalive Ping (the session was idle) with a Pong. When the writer's
/// queue is full the client is sending anyway, and any frame keeps the session alive.
fn answer_keepalive(out: &mpsc::WeakSender<Vec<u8>>, nonce: u64) {
    let Some(out) = out.upgrade() else {
        return; // The client is closing.
    };
    let frame = ClientFrame {
        correlation_id: 0,
        kind: Some(client_frame::Kind::Pong(arqonbus_proto::v1::Pong {
            nonce,
            server_time_unix_nanos: 0,
        })),
    };
    let mut buf = BytesMut::with_capacity(frame.encoded_len() + 4);
    put_frame(&mut buf, &frame);
    let _ = out.try_send(buf.to_vec());
}

/// Hands one server frame to whoever waits for it.
async fn route(shared: &Shared, frame: ServerFrame) -> Result<(), ClientError> {
    match frame.kind {
        Some(server_frame::Kind::Deliver(d)) => {
            let Some(message) = d.message else {
                return Ok(());
            };
            shared.merge_causal(&message.causal);
            let tx = shared
                .subs
                .lock()
                .expect("subs lock")
                .get(&d.subscription_id)
                .cloned();
            if let Some(tx) = tx {
                // Waiting here is the backpressure: the socket is not read while the
                // application is behind.
                let _ = tx.send(Ok(message)).await;
            }
        }
        Some(server_frame::Kind::Dropped(d)) => {
            let tx = shared
                .subs
                .lock()
                .expect("subs lock")
                .get(&d.subscription_id)
                .cloned();
            if let Some(tx) = tx {
                let _ = tx.send(Err(ClientError::Dropped { count: d.count })).await;
            }
        }
        Some(server_frame::Kind::Error(e)) if frame.correlation_id == 0 => {
            // A connection-level error (slow consumer, protocol): the server closes next.
            return Err(ClientError::from_wire(&e));
        }
        _ if shared
            .streams
            .lock()
            .expect("streams lock")
            .contains_key(&frame.correlation_id) =>
        {
            let last = !matches!(frame.kind, Some(server_frame::Kind::HistoryChunk(_)));
            let tx = shared
                .streams
                .lock()
                .expect("streams lock")
                .get(&frame.correlation_id)
                .cloned();
            if last {
                shared
                    .streams
                    .lock()
                    .expect("streams lock")
                    .remove(&frame.correlation_id);
            }
            if let Some(tx) = tx {
                // Waiting here is the flow control of history reads.
                let _ = tx.send(frame).await;
            }
        }
        _ => {
            let waiter = shared
                .pending
                .lock()
                .expect("pending lock")
                .remove(&frame.correlation_id);
            match (waiter, &frame.kind) {
                (Some(tx), _) => {
                    let _ = tx.send(Ok(frame));
                }
                (None, Some(server_frame::Kind::Error(e))) => {
                    let code = ErrorCode::try_from(e.code).unwrap_or(ErrorCode::Unspecified);
                    tracing::warn!(?code, message = %e.message, "server refused a request");
                }
                (None, _) => {}
            }
        }
    }
    Ok(())
}
