//! One shard: a glommio executor pinned to a core. It owns the connections the kernel gave it,
//! sequences the realities that hash to it, and delivers to its own sockets.

mod latest;
mod retained;
mod sequencer;
mod subscriptions;

pub use retained::{ForkImport, Opening, ReadOrigin, ReadStep, Retained, RetainedError};
pub use sequencer::{SequenceError, Sequencer, Stamp};
pub use subscriptions::{LocalSub, SubIndex};

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arqonbus_proto::frame::encode_frame;
use arqonbus_proto::v1::{server_frame, ArqonMessage, ErrorCode, PubAck, ServerFrame};
use bytes::Bytes;
use event_listener::Event;
use glommio::channels::shared_channel::{ConnectedReceiver, ConnectedSender};
use glommio::net::TcpListener;
use glommio::{GlommioError, ResourceType};
use prost::Message;

use crate::audit::AuditLog;
use crate::auth::Revoked;
use crate::config::Config;
use crate::delta::{Chain, OwnerStates};
use crate::metrics::ShardCounters;
use crate::operator::{OperatorHost, ShardOperators};
use crate::param::OwnerParams;
use crate::policy::{PolicyHost, ShardPolicies};
use crate::presence::OwnerPresence;
use crate::routing::owner_shard;
use crate::session::{self, error_frame, Conn, ConnId};
use crate::shield::Shield;
use crate::spsc::{self, MeshEnds, Outbox};
use crate::tenant::lanes::Lanes;
use crate::time::SharedClock;
use crate::transport::Transport;

/// A sequenced pulse: encoded once by its owner, shared by every subscriber on every shard.
#[derive(Debug)]
pub struct Pulse {
    pub reality: Arc<str>,
    pub topic: String,
    pub sequence: u64,
    pub timestamp_unix_nanos: u64,
    /// The encoded `ArqonMessage`.
    pub encoded: Bytes,
    /// The producer's causal context for other realities: what must be delivered first to a
    /// causal subscriber.
    pub deps: Vec<(String, u64)>,
    /// A delta-only topic's pulse: its base and delta form (`crate::delta`); `encoded` is the
    /// keyframe.
    pub chain: Option<Chain>,
    /// A reality parameter (`sys.param.*`): delivered to every connection subscribed to
    /// anything in the reality, whatever its patterns.
    pub broadcast: bool,
}

impl Pulse {
    /// The encoded envelope a subscription is sent: the delta form when `delta` is true and the
    /// pulse has one, else the whole pulse.
    #[inline]
    pub fn body(&self, delta: bool) -> &Bytes {
        match &self.chain {
            Some(Chain {
                delta: Some(form), ..
            }) if delta => form,
            _ => &self.encoded,
        }
    }
}

/// Where a publish came from, so the owner can answer it.
#[derive(Debug, Clone, Copy)]
pub struct Origin {
    pub shard: usize,
    pub conn: ConnId,
    pub correlation_id: u64,
    pub ack: bool,
    /// Bytes the publisher's tenant was charged for this pulse against its
    /// `max_retained_bytes` (0: none). The owner gives them back if it refuses the pulse, and
    /// when retention deletes the segment that holds it.
    pub retained_charge: u64,
}

/// A subscription waiting for its owner's confirmation.
#[derive(Debug, Clone, Copy)]
pub struct SubscribeOrigin {
    pub conn: ConnId,
    pub subscription_id: u64,
    pub correlation_id: u64,
}

/// Requests to a reality's owner (the request mesh).
pub enum ToOwner {
    Publish(Box<(ArqonMessage, Origin)>),
    /// The next chunk of a history query or subscription replay.
    Read(Box<(crate::history::Cursor, ReadOrigin)>),
    Interest {
        reality: String,
        from_shard: usize,
        add: bool,
        confirm: Option<SubscribeOrigin>,
    },
    /// A fork's replayed log, to be written into its new reality by that reality's owner.
    Import(Box<ForkImport>),
    /// A session's presence in a reality began, changed or ended.
    Presence {
        reality: String,
        update: crate::presence::Update,
    },
    /// `PresenceGet`: one page of who is present, answered to one connection.
    PresenceGet {
        reality: String,
        shard: usize,
        conn: ConnId,
        correlation_id: u64,
        offset: u32,
        limit: u32,
    },
    /// `ParamsGet`: the current parameters of a reality, answered to one connection.
    Params {
        reality: String,
        shard: usize,
        conn: ConnId,
        correlation_id: u64,
    },
}

/// What an owner sends back (the delivery mesh). Consuming these never waits.
pub enum FromOwner {
    Pulse(Arc<Pulse>),
    /// A chunk of a read, for the connection that asked.
    Read(Box<ReadStep>),
    /// A ready-encoded answer (ack or error) for one connection.
    Answer {
        conn: ConnId,
        frame: Bytes,
    },
    /// The owner registered (or refused) a subscription.
    Subscribed {
        reality: String,
        origin: SubscribeOrigin,
        result: Result<Confirmed, Bytes>,
    },
}

/// An owner's confirmation of a subscription.
pub struct Confirmed {
    /// The first sequence the subscription is delivered live.
    pub next_sequence: u64,
    /// What it gets first: the latest pulse of each delta-only topic (the subscriber's shard
    /// keeps those its pattern and filter take) and of each parameter, in sequence order.
    pub latest: Vec<Arc<Pulse>>,
}

/// A connection's place in `limits.max_connections_per_shard` between accept and registration.
pub struct Admission {
    admitting: Rc<Cell<u64>>,
    registered: Cell<bool>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        if !self.registered.get() {
            self.admitting.set(self.admitting.get() - 1);
        }
    }
}

/// Everything a shard needs to start, prepared by the server on the main thread.
pub struct ShardStart {
    pub id: usize,
    pub shards: usize,
    pub config: Arc<Config>,
    pub clock: SharedClock,
    pub counters: Arc<ShardCounters>,
    /// This shard's socket of each configured listener.
    pub listeners: Vec<(Transport, socket2::Socket)>,
    pub shield: Arc<Shield>,
    pub requests: MeshEnds<ToOwner>,
    pub deliveries: MeshEnds<FromOwner>,
    pub stop: Arc<AtomicBool>,
    /// Told once the shard has recovered its retained realities, connected its rings, and is
    /// accepting; or why it could not.
    pub ready: std::sync::mpsc::Sender<Result<(), String>>,
    /// CASIL, shared by every shard: the engine and the registry of compiled policies.
    pub policy_host: Arc<PolicyHost>,
    /// Hosted operators, shared by every shard: the registry of compiled operators.
    pub operator_host: Arc<OperatorHost>,
    pub audit: AuditLog,
    /// Which shards have failed: requests for a failed shard's realities are refused here.
    pub failures: Arc<crate::health::ShardFailures>,
}

/// The state of one shard, shared by its tasks (single-threaded: `Rc` and `RefCell`).
pub struct Shard {
    pub id: usize,
    pub shards: usize,
    pub config: Arc<Config>,
    pub clock: SharedClock,
    pub counters: Arc<ShardCounters>,
    pub shield: Arc<Shield>,
    /// This shard's TLS acceptor and the configuration generation it was built from.
    tls_acceptor: RefCell<Option<(u64, futures_rustls::TlsAcceptor)>>,
    /// The revocation list this shard last took, and its generation.
    revoked: RefCell<Option<(u64, Arc<Revoked>)>>,
    /// The revocation list generation this shard's sessions were last checked against.
    revocations_swept: Cell<u64>,
    /// This shard's tenant compartments: task queues, buckets, fault windows.
    lanes: Lanes,
    /// Wall-clock seconds, refreshed every few milliseconds, for token expiry checks.
    now_secs: Cell<u64>,
    conns: RefCell<HashMap<ConnId, Rc<Conn>>>,
    /// Connections admitted and not yet registered (in their handshakes).
    admitting: Rc<Cell<u64>>,
    next_conn: Cell<ConnId>,
    pub subs: RefCell<SubIndex>,
    sequencer: RefCell<Sequencer>,
    /// Retained realities this shard owns.
    retained: RefCell<HashMap<Arc<str>, Rc<Retained>>>,
    /// Retained realities whose logs are being made off the reactor.
    opening: RefCell<HashMap<Arc<str>, Rc<Opening>>>,
    /// Realities refused after recovery found them corrupt (quarantined), with the reason.
    refused: RefCell<HashMap<String, String>>,
    /// Realities a fork is being imported into: publishes to them wait for the fork.
    importing: RefCell<std::collections::HashSet<String>>,
    requests: Vec<Option<ConnectedSender<ToOwner>>>,
    deliveries: Vec<Option<Rc<Outbox<FromOwner>>>>,
    stopping: Cell<bool>,
    stopped: Event,
    /// This shard's policy instances (its own stores; nothing shared with other cores).
    pub policies: RefCell<ShardPolicies>,
    pub policy_host: Arc<PolicyHost>,
    /// Hosted operators: this shard's instances, met only at `ShardOperators::on_sequenced`.
    operators: RefCell<ShardOperators>,
    operator_host: Arc<OperatorHost>,
    /// The current state of each delta-only topic of the realities this shard owns.
    deltas: RefCell<OwnerStates>,
    /// The versions of the parameters of the realities this shard owns.
    params: RefCell<OwnerParams>,
    /// What a new subscription gets first (latest delta-topic states and parameters).
    latest: RefCell<latest::LatestPulses>,
    /// Who is present in the realities this shard owns.
    presence: RefCell<OwnerPresence>,
    pub audit: AuditLog,
    /// Refused control pulses of non-controllers, gathered into few audit records.
    control_refusals: RefCell<crate::audit::coalesce::Coalescer>,
    failures: Arc<crate::health::ShardFailures>,
}

impl Shard {
    pub fn is_stopping(&self) -> bool {
        self.stopping.get()
    }

    /// The process-wide operator host (loading, unloading, checking parameter changes).
    pub fn operator_host(&self) -> &Arc<OperatorHost> {
        &self.operator_host
    }

    /// Publishes the bytes each retained reality of this shard holds, for `/metrics`.
    pub fn report_retained_bytes(&self) {
        let realities = self
            .retained
            .borrow()
            .iter()
            .map(|(name, r)| (name.clone(), r.log.borrow().bytes()))
            .collect();
        self.counters.retained.publish(realities);
        let counts = self.operators.borrow_mut().counts();
        self.counters.operators.publish(counts);
    }

    /// Wall-clock Unix seconds, good to a few milliseconds (expiry checks).
    pub fn now_secs(&self) -> u64 {
        self.now_secs.get()
    }

    /// The acceptor for new TLS handshakes: this shard's copy, refreshed after a reload.
    pub fn tls_acceptor(&self) -> Option<futures_rustls::TlsAcceptor> {
        let tls = self.shield.tls.as_ref()?;
        let generation = tls.generation();
        let mut cached = self.tls_acceptor.borrow_mut();
        match &*cached {
            Some((g, acceptor)) if *g == generation => Some(acceptor.clone()),
            _ => {
                let (g, config) = tls.current();
                let acceptor = futures_rustls::TlsAcceptor::from(config);
                *cached = Some((g, acceptor.clone()));
                Some(acceptor)
            }
        }
    }

    /// The revocation list new sessions are checked against (`auth.revocation_file`), when
    /// one is configured: this shard's copy, taken again after a reload.
    pub fn revoked(&self) -> Option<Arc<Revoked>> {
        let list = self.shield.auth.revocations.as_ref()?;
        let generation = list.generation();
        let mut cached = self.revoked.borrow_mut();
        match &*cached {
            Some((g, revoked)) if *g == generation => Some(revoked.clone()),
            _ => {
                let (g, revoked) = list.current();
                *cached = Some((g, revoked.clone()));
                Some(revoked)
            }
        }
    }

    /// After a reload of the revocation list, closes this shard's sessions whose token it now
    /// revokes. One atomic load when nothing changed.
    fn sweep_revocations(&self) {
        let Some(list) = self.shield.auth.revocations.as_ref() else {
            return;
        };
        if list.generation() == self.revocations_swept.get() {
            return;
        }
        let Some(revoked) = self.revoked() else {
            return;
        };
        // The generation of the list just taken (not re-read: a reload in between is swept
        // next time).
        let generation = self.revoked.borrow().as_ref().map_or(0, |(g, _)| *g);
        self.revocations_swept.set(generation);
        let conns: Vec<Rc<Conn>> = self.conns.borrow().values().cloned().collect();
        let closed = conns
            .iter()
            .filter(|conn| session::close_if_revoked(self, conn, &revoked))
            .count();
        tracing::info!(
            shard = self.id,
            generation,
            entries = revoked.len(),
            closed,
            "revocation list taken; sessions it revokes are closed"
        );
    }

    /// This shard's tenant compartments.
    pub fn lanes(&self) -> &Lanes {
        &self.lanes
    }

    /// Spawns work of the shard's own — a reality's flushes, the opening of its log, presence
    /// announcements — into the shard's default queue, whichever tenant's task came upon it: it
    /// serves every tenant of the reality alike, so no tenant's share may hold it back.
    pub(crate) fn spawn_own<T: 'static>(
        &self,
        work: impl std::future::Future<Output = T> + 'static,
    ) -> glommio::Task<T> {
        glommio::spawn_local_into(work, self.lanes.own())
            .expect("the executor's default queue lives as long as the executor")
    }

    pub fn owner_of(&self, reality: &str) -> usize {
        owner_shard(reality, self.shards)
    }

    /// Gives a connection just accepted its place in `limits.max_connections_per_shard`, held
    /// through its handshakes; `None` when the shard is full (counting connections still in
    /// their handshake) or stopping.
    pub fn admit(&self) -> Option<Admission> {
        let taken = self.conns.borrow().len() as u64 + self.admitting.get();
        if self.stopping.get() || taken >= self.config.limits.max_connections_per_shard {
            self.counters.connections_refused.inc();
            return None;
        }
        self.admitting.set(self.admitting.get() + 1);
        Some(Admission {
            admitting: self.admitting.clone(),
            registered: Cell::new(false),
        })
    }

    /// Registers a connection that was admitted; `None` when the shard is stopping. Its place
    /// passes from `admission` (released when that is dropped) to the registered connection.
    pub fn register(
        &self,
        admission: &Admission,
        make: impl FnOnce(ConnId) -> Conn,
    ) -> Option<Rc<Conn>> {
        if self.stopping.get() {
            self.counters.connections_refused.inc();
            return None;
        }
        let id = self.next_conn.get();
        self.next_conn.set(id + 1);
        let conn = Rc::new(make(id));
        self.conns.borrow_mut().insert(id, conn.clone());
        // The connection counts itself from now on.
        admission.registered.set(true);
        self.admitting.set(self.admitting.get() - 1);
        self.counters.connections_accepted.inc();
        Some(conn)
    }

    pub fn unregister(&self, conn: ConnId) {
        if self.conns.borrow_mut().remove(&conn).is_some() {
            self.counters.connections_closed.inc();
        }
        if self.stopping.get() && self.conns.borrow().is_empty() {
            self.stopped.notify(usize::MAX);
        }
    }

    /// Counts a control pulse refused to a non-controller; `Some` when a record of the
    /// refusals gathered so far is due (see `audit::coalesce`).
    pub fn note_control_refusal(
        &self,
        peer: &str,
        topic: &str,
    ) -> Option<crate::audit::coalesce::Digest> {
        let now = self.clock.now_unix_nanos();
        self.control_refusals.borrow_mut().refused(now, peer, topic)
    }

    /// The refusals gathered but not yet recorded (at shutdown).
    pub fn take_control_refusals(&self) -> Option<crate::audit::coalesce::Digest> {
        self.control_refusals.borrow_mut().flush()
    }

    pub fn conn(&self, id: ConnId) -> Option<Rc<Conn>> {
        self.conns.borrow().get(&id).cloned()
    }

    /// Hands a pulse the bus wrote itself (a parameter, an operator parameter) to its reality's
    /// owner to be sequenced; the owner answers `origin`.
    pub async fn sequence_at_owner(self: &Rc<Self>, message: ArqonMessage, origin: Origin) {
        let owner = self.owner_of(&message.reality_id);
        if owner == self.id {
            self.sequence(message, origin).await;
        } else {
            self.send_to_owner(owner, ToOwner::Publish(Box::new((message, origin))))
                .await;
        }
    }

    /// After a subscription was refused late (by the owner, or its replay): the session's
    /// presence in `reality` no longer counts it.
    pub fn presence_changed(self: &Rc<Self>, conn: &Conn, reality: &str) {
        if let Some(update) = conn.presence_update(reality) {
            let (shard, reality) = (self.clone(), reality.to_owned());
            glommio::spawn_local(async move { shard.tell_presence(reality, update).await })
                .detach();
        }
    }

    /// Tells a reality's owner that a session's presence there began, changed or ended.
    pub async fn tell_presence(self: &Rc<Self>, reality: String, update: crate::presence::Update) {
        let owner = self.owner_of(&reality);
        if owner == self.id {
            self.on_presence(&reality, update);
        } else {
            self.send_to_owner(owner, ToOwner::Presence { reality, update })
                .await;
        }
    }

    /// `PresenceGet`: asks the reality's owner, which answers the connection.
    pub async fn request_presence(
        &self,
        get: arqonbus_proto::v1::PresenceGet,
        conn: ConnId,
        correlation_id: u64,
    ) {
        let owner = self.owner_of(&get.reality_id);
        if owner == self.id {
            self.answer_presence(
                get.reality_id,
                self.id,
                conn,
                correlation_id,
                get.offset,
                get.limit,
            );
        } else {
            let request = ToOwner::PresenceGet {
                reality: get.reality_id,
                shard: self.id,
                conn,
                correlation_id,
                offset: get.offset,
                limit: get.limit,
            };
            self.send_to_owner(owner, request).await;
        }
    }

    /// Owner side of `PresenceGet`.
    fn answer_presence(
        &self,
        reality: String,
        shard: usize,
        conn: ConnId,
        correlation_id: u64,
        offset: u32,
        limit: u32,
    ) {
        let page = self
            .presence
            .borrow()
            .page(&reality, offset as usize, limit as usize);
        let frame = encode_frame(&ServerFrame {
            correlation_id,
            kind: Some(server_frame::Kind::Presence(page)),
        });
        self.answer(shard, conn, frame);
    }

    /// Owner side of a presence change: recorded now, announced once the coalescing window of
    /// its reality closes.
    fn on_presence(self: &Rc<Self>, reality: &str, update: crate::presence::Update) {
        if !self.presence.borrow_mut().apply(reality, update) {
            return;
        }
        let shard = self.clone();
        let window = Duration::from_millis(self.config.limits.presence_coalesce_ms);
        self.spawn_own(async move {
            glommio::timer::sleep(window).await;
            shard.announce_presence().await;
        })
        .detach();
    }

    /// Sequences every reality's pending presence changes, one `sys.presence.changes` each.
    async fn announce_presence(self: &Rc<Self>) {
        let pending = self.presence.borrow_mut().take_pending();
        for (reality, change) in pending {
            let message = ArqonMessage {
                topic: crate::presence::TOPIC.into(),
                reality_id: reality,
                producer_id: "arqonbus".into(),
                payload: Some(prost_types::Any {
                    type_url: <arqonbus_proto::v1::PresenceChange as prost::Name>::type_url(),
                    value: change.encode_to_vec(),
                }),
                ..Default::default()
            };
            // Nobody waits for an answer: a refusal (storage) is logged by the owner.
            let origin = Origin {
                shard: self.id,
                conn: 0,
                correlation_id: 0,
                ack: false,
                retained_charge: 0,
            };
            self.sequence(message, origin).await;
        }
    }

    /// `ParamsGet`: asks the reality's owner, which answers the connection.
    pub async fn request_params(&self, reality: String, conn: ConnId, correlation_id: u64) {
        let owner = self.owner_of(&reality);
        if owner == self.id {
            self.answer_params(reality, self.id, conn, correlation_id);
        } else {
            let request = ToOwner::Params {
                reality,
                shard: self.id,
                conn,
                correlation_id,
            };
            self.send_to_owner(owner, request).await;
        }
    }

    /// Sends a request to another shard's owner role, waiting while its ring is full. A request
    /// to a shard that has failed is answered here with an error.
    pub async fn send_to_owner(&self, owner: usize, request: ToOwner) {
        let Some(ring) = self.requests[owner].as_ref() else {
            unreachable!("requests to self are handled locally");
        };
        if self.failures.is_failed(owner) {
            self.refuse_for_failed_owner(owner, request);
            return;
        }
        let unsent = match ring.try_send(request) {
            Ok(()) => return,
            Err(GlommioError::WouldBlock(ResourceType::Channel(request))) => {
                self.counters.ring_full_waits.inc();
                match ring.send(request).await {
                    Ok(()) => return,
                    Err(e) => e,
                }
            }
            Err(e) => e,
        };
        // The ring is closed: its owner has stopped. In a shutdown the request is moot; if the
        // owner failed, its requester is told so rather than left waiting.
        if let GlommioError::Closed(ResourceType::Channel(request)) = unsent {
            if self.failures.is_failed(owner) {
                self.refuse_for_failed_owner(owner, request);
            }
        }
    }

    /// Answers a request whose owner shard has failed (panicked): the requester gets INTERNAL
    /// naming the shard, where it expects an answer at all.
    fn refuse_for_failed_owner(&self, owner: usize, request: ToOwner) {
        self.counters.owner_failed_refusals.inc();
        let why = |reality: &str| {
            format!(
                "shard {owner}, which owns reality {reality:?}, has failed; the bus is stopping \
                 so its service manager restarts it: retry after reconnecting"
            )
        };
        let (conn, correlation_id, message) = match request {
            ToOwner::Publish(publish) => {
                let (message, origin) = *publish;
                (origin.conn, origin.correlation_id, why(&message.reality_id))
            }
            ToOwner::Interest {
                reality,
                confirm: Some(origin),
                ..
            } => (origin.conn, origin.correlation_id, why(&reality)),
            ToOwner::PresenceGet {
                reality,
                conn,
                correlation_id,
                ..
            }
            | ToOwner::Params {
                reality,
                conn,
                correlation_id,
                ..
            } => (conn, correlation_id, why(&reality)),
            ToOwner::Read(read) => {
                let (cursor, origin) = *read;
                if let crate::history::Purpose::History { .. } = cursor.purpose {
                    self.lanes.get(origin.lane).end_history_read();
                }
                (
                    origin.conn,
                    0,
                    format!("shard {owner} has failed; this read cannot go on"),
                )
            }
            // Nobody waits for these: interest without a confirmation, presence updates, and
            // fork imports (whose controller is answered when the bus stops).
            ToOwner::Interest { confirm: None, .. }
            | ToOwner::Presence { .. }
            | ToOwner::Import(_) => return,
        };
        if let Some(c) = self.conn(conn) {
            c.push_frame(
                &self.counters,
                error_frame(correlation_id, ErrorCode::Internal, &message),
            );
        }
    }

    /// Stamps a pulse of a reality this shard owns and encodes it once. Answers the publisher
    /// itself when the reality cannot take another sequence.
    fn stamp(
        &self,
        message: &mut ArqonMessage,
        origin: Origin,
    ) -> Option<(Arc<Pulse>, Option<Bytes>)> {
        let now = self.clock.now_unix_nanos();
        let param = if crate::param::is_param_topic(&message.topic) {
            match self.params.borrow().prepare(message) {
                Ok(p) => Some(p),
                Err(why) => {
                    log_refused(self.id, message, &why);
                    let frame = error_frame(origin.correlation_id, ErrorCode::LimitExceeded, &why);
                    self.answer(origin.shard, origin.conn, frame);
                    return None;
                }
            }
        } else {
            None
        };
        let stamp = self
            .sequencer
            .borrow_mut()
            .stamp(&message.reality_id, now, &|r| self.forget_idle(r));
        let stamp = match stamp {
            Ok(stamp) => stamp,
            Err(e) => {
                log_refused(self.id, message, &e.to_string());
                let frame = error_frame(
                    origin.correlation_id,
                    ErrorCode::LimitExceeded,
                    &e.to_string(),
                );
                self.answer(origin.shard, origin.conn, frame);
                return None;
            }
        };
        stamp_message(message, &stamp);
        let broadcast = param.is_some();
        if let Some((name, version)) = param {
            self.params
                .borrow_mut()
                .record(&message.reality_id, name, version);
        }
        tracing::debug!(
            shard = self.id,
            reality = %message.reality_id,
            topic = %message.topic,
            sequence = stamp.sequence,
            traceparent = traceparent(message),
            "pulse sequenced"
        );
        let deps = deps_of(message);
        let ack = origin.ack.then(|| {
            encode_frame(&ServerFrame {
                correlation_id: origin.correlation_id,
                kind: Some(server_frame::Kind::PubAck(PubAck {
                    reality_id: message.reality_id.clone(),
                    sequence: stamp.sequence,
                    id: message.id.clone(),
                    timestamp_unix_nanos: stamp.timestamp_unix_nanos,
                })),
            })
        });
        let (encoded, chain) = self.encode_forms(message);
        let pulse = Arc::new(Pulse {
            reality: stamp.reality,
            sequence: stamp.sequence,
            timestamp_unix_nanos: stamp.timestamp_unix_nanos,
            encoded,
            topic: std::mem::take(&mut message.topic),
            deps,
            chain,
            broadcast,
        });
        self.counters.pulses_sequenced.inc();
        Some((pulse, ack))
    }

    /// May the sequencer forget `reality` (idle, no subscriber anywhere) to make room for
    /// another? Only an ephemeral reality with nothing hanging off it: its sequence restarts at
    /// 1 when it is next used, which nobody can see. Never a retained reality (its sequences
    /// must never repeat), nor one with parameters, delta states, latest pulses, presence,
    /// hosted operator instances or a fork on its way: those hold sequences or per-reality
    /// state that a restarted sequence would contradict. A state that is in use right now
    /// (borrowed) counts as held.
    fn may_forget(&self, reality: &str) -> bool {
        fn free<T>(cell: &RefCell<T>, holds: impl FnOnce(&T) -> bool) -> bool {
            cell.try_borrow().is_ok_and(|v| !holds(&v))
        }
        self.config.retention_for(reality).is_none()
            && free(&self.retained, |m| m.contains_key(reality))
            && free(&self.importing, |s| s.contains(reality))
            && free(&self.params, |p| p.holds(reality))
            && free(&self.deltas, |d| d.holds(reality))
            && free(&self.latest, |l| l.holds(reality))
            && free(&self.presence, |p| p.holds(reality))
            && free(&self.operators, |o| o.holds(reality))
    }

    /// Asked by the sequencer for an idle reality its eviction hand chose: true forgets it
    /// (counted in `realities_evicted`).
    fn forget_idle(&self, reality: &str) -> bool {
        let forget = self.may_forget(reality);
        if forget {
            self.counters.realities_evicted.inc();
            tracing::debug!(
                shard = self.id,
                reality,
                "idle reality forgotten to make room"
            );
        }
        forget
    }

    /// Encodes a stamped envelope once, and on a delta-only topic its delta form besides.
    fn encode_forms(&self, message: &mut ArqonMessage) -> (Bytes, Option<Chain>) {
        let stamped = self.deltas.borrow_mut().stamp(message);
        let encoded = Bytes::from(message.encode_to_vec());
        let chain = stamped.map(|(base_sequence, delta, tracked)| {
            if delta.is_some() {
                self.counters.delta_pulses.inc();
            }
            Chain {
                base_sequence,
                delta: delta.map(|d| crate::delta::encode_delta_form(message, d)),
                tracked,
            }
        });
        (encoded, chain)
    }

    /// Turns a producer's own delta into the whole state (before anything is reserved for it);
    /// answers the publisher with INVALID_REQUEST when it does not apply.
    fn resolve_delta(&self, message: &mut ArqonMessage, origin: Origin) -> bool {
        if message.delta.is_none() {
            return true;
        }
        match self.deltas.borrow().resolve(message) {
            Ok(()) => true,
            Err(why) => {
                log_refused(self.id, message, &why);
                self.counters.request_errors.inc();
                let frame = error_frame(origin.correlation_id, ErrorCode::InvalidRequest, &why);
                self.answer(origin.shard, origin.conn, frame);
                false
            }
        }
    }

    /// Stamps an operator's output of a reality this shard owns (sequence, the causal entry, a
    /// deterministic id; the input's timestamp) and encodes it once.
    fn stamp_output(&self, output: &mut ArqonMessage) -> Option<Arc<Pulse>> {
        let stamp = self
            .sequencer
            .borrow_mut()
            .stamp(&output.reality_id, output.timestamp_unix_nanos, &|r| {
                self.forget_idle(r)
            })
            .ok()?;
        crate::operator::stamp_output(output, stamp.sequence, stamp.timestamp_unix_nanos);
        self.counters.pulses_sequenced.inc();
        let (encoded, chain) = self.encode_forms(output);
        Some(Arc::new(Pulse {
            reality: stamp.reality,
            sequence: stamp.sequence,
            timestamp_unix_nanos: stamp.timestamp_unix_nanos,
            encoded,
            topic: output.topic.clone(),
            deps: deps_of(output),
            chain,
            broadcast: false,
        }))
    }

    async fn wait_for_delivery_room(&self, reality: &str) {
        loop {
            let full = {
                let seq = self.sequencer.borrow();
                let Some(interest) = seq.interest(reality) else {
                    return;
                };
                interest.iter().enumerate().find_map(|(peer, n)| {
                    let outbox = self.deliveries[peer].as_ref()?;
                    (*n > 0 && outbox.is_full()).then(|| outbox.clone())
                })
            };
            match full {
                None => return,
                Some(outbox) => {
                    self.counters.ring_full_waits.inc();
                    outbox.wait_for_room().await;
                }
            }
        }
    }

    fn fan_out(&self, pulse: &Arc<Pulse>) {
        let seq = self.sequencer.borrow();
        let Some(interest) = seq.interest(&pulse.reality) else {
            return;
        };
        for (peer, n) in interest.iter().enumerate() {
            if *n == 0 {
                continue;
            }
            match &self.deliveries[peer] {
                Some(outbox) => outbox.push(FromOwner::Pulse(pulse.clone())),
                None => self.deliver_local(pulse),
            }
        }
    }

    /// Queues a pulse for every matching subscription on this shard. Causal subscriptions go
    /// through their connection's gate, which may hold the pulse until its dependencies pass.
    /// A parameter goes to one subscription of every connection subscribed to the reality.
    pub fn deliver_local(&self, pulse: &Arc<Pulse>) {
        let subs = self.subs.borrow();
        let list = subs.for_reality(&pulse.reality);
        let chosen = pulse.broadcast.then(|| broadcast_targets(list, pulse));
        let mut delivered = 0;
        let mut filtered = 0;
        let mut view = crate::filter::LazyView::new(&pulse.encoded);
        let mut gated: Vec<&Rc<Conn>> = Vec::new();
        for sub in list {
            let mut wants = match &chosen {
                Some(targets) => targets.contains(&(sub.conn.id, sub.subscription_id)),
                None => sub.wants(pulse.sequence, &pulse.topic),
            };
            if wants && chosen.is_none() && !sub.admits(&mut view) {
                // Refused by its filter: for a causal gate this pulse has gone by unwanted.
                wants = false;
                filtered += 1;
            }
            if !sub.conn.is_causal() {
                if wants {
                    sub.deliver(&self.counters, pulse);
                    delivered += 1;
                }
                continue;
            }
            if wants {
                if sub.causal {
                    let now = self.clock.now_unix_nanos();
                    sub.conn
                        .causal_arrive(&self.counters, &subs, sub.subscription_id, pulse, now);
                } else {
                    sub.deliver(&self.counters, pulse);
                }
                delivered += 1;
            }
            if !gated.iter().any(|c| c.id == sub.conn.id) {
                gated.push(&sub.conn);
            }
        }
        for conn in gated {
            conn.causal_passed(&self.counters, &subs, pulse);
        }
        self.counters.pulses_delivered.add(delivered);
        if filtered > 0 {
            self.counters.pulses_filtered.add(filtered);
        }
    }

    /// Sends a ready-encoded answer to a connection on `shard` (this one or another).
    pub fn answer(&self, shard: usize, conn: ConnId, frame: Bytes) {
        match &self.deliveries[shard] {
            Some(outbox) => outbox.push(FromOwner::Answer { conn, frame }),
            None => {
                if let Some(c) = self.conn(conn) {
                    c.push_frame(&self.counters, frame);
                }
            }
        }
    }

    /// Owner side of a subscription change.
    pub fn change_interest(
        self: &Rc<Self>,
        reality: String,
        from_shard: usize,
        add: bool,
        confirm: Option<SubscribeOrigin>,
    ) {
        let result = self
            .sequencer
            .borrow_mut()
            .change_interest(&reality, from_shard, add, &|r| self.forget_idle(r));
        let Some(origin) = confirm else { return };
        let result = result.map(|next_sequence| Confirmed {
            next_sequence,
            latest: self.latest.borrow().of(&reality),
        });
        let result = result.map_err(|e| {
            error_frame(
                origin.correlation_id,
                ErrorCode::LimitExceeded,
                &e.to_string(),
            )
        });
        match &self.deliveries[from_shard] {
            Some(outbox) => outbox.push(FromOwner::Subscribed {
                reality,
                origin,
                result,
            }),
            None => self.confirm_subscription(&reality, origin, result),
        }
    }

    /// Subscriber side: the owner has registered the subscription (or refused it).
    pub fn confirm_subscription(
        self: &Rc<Self>,
        reality: &str,
        origin: SubscribeOrigin,
        result: Result<Confirmed, Bytes>,
    ) {
        let Some(conn) = self.conn(origin.conn) else {
            return;
        };
        match result {
            Ok(confirmed) => {
                let found = self
                    .subs
                    .borrow()
                    .find(reality, origin.conn, origin.subscription_id)
                    .cloned();
                // Unsubscribed before the confirmation came back: nothing to confirm.
                if let Some(sub) = found {
                    sub.activate(confirmed.next_sequence);
                    conn.push_frame(
                        &self.counters,
                        session::subscribed_frame(origin, confirmed.next_sequence),
                    );
                    self.deliver_latest(&sub, &confirmed.latest);
                }
            }
            Err(frame) => {
                self.subs
                    .borrow_mut()
                    .remove(reality, origin.conn, origin.subscription_id);
                conn.forget_subscription(origin.subscription_id);
                conn.push_frame(&self.counters, frame);
                self.presence_changed(&conn, reality);
            }
        }
    }

    /// A new subscription's first pulses: the current value of every parameter of the reality,
    /// and the current state (a keyframe) of every delta-only topic it takes.
    fn deliver_latest(&self, sub: &LocalSub, latest: &[Arc<Pulse>]) {
        let mut delivered = 0;
        for pulse in latest {
            let takes = pulse.broadcast
                || (sub.pattern.matches(&pulse.topic)
                    && sub.admits(&mut crate::filter::LazyView::new(&pulse.encoded)));
            if takes {
                sub.deliver(&self.counters, pulse);
                delivered += 1;
            }
        }
        self.counters.pulses_delivered.add(delivered);
    }

    /// Owner side of `ParamsGet`.
    fn answer_params(&self, reality: String, shard: usize, conn: ConnId, correlation_id: u64) {
        let params = self
            .latest
            .borrow()
            .params_of(&reality)
            .iter()
            .filter_map(|p| crate::param::entry_of(&p.encoded))
            .collect();
        let frame = encode_frame(&ServerFrame {
            correlation_id,
            kind: Some(server_frame::Kind::Params(arqonbus_proto::v1::Params {
                reality_id: reality,
                params,
            })),
        });
        self.answer(shard, conn, frame);
    }

    fn handle_delivery(self: &Rc<Self>, msg: FromOwner) {
        match msg {
            FromOwner::Pulse(pulse) => self.deliver_local(&pulse),
            FromOwner::Read(step) => self.on_read_step(*step),
            FromOwner::Answer { conn, frame } => {
                if let Some(c) = self.conn(conn) {
                    c.push_frame(&self.counters, frame);
                }
            }
            FromOwner::Subscribed {
                reality,
                origin,
                result,
            } => self.confirm_subscription(&reality, origin, result),
        }
    }

    async fn handle_request(self: &Rc<Self>, msg: ToOwner) {
        match msg {
            ToOwner::Publish(boxed) => {
                let (message, origin) = *boxed;
                self.sequence(message, origin).await;
            }
            ToOwner::Read(boxed) => {
                let (cursor, origin) = *boxed;
                match cursor.purpose {
                    // A history read is the tenant's work: its step runs in the tenant's
                    // queue here too, after the requests already taken.
                    crate::history::Purpose::History { .. } => {
                        let shard = self.clone();
                        let queue = self.lanes.get(origin.lane).queue();
                        let step = async move { shard.read_step(cursor, origin) };
                        match glommio::spawn_local_into(step, queue) {
                            Ok(task) => {
                                task.detach();
                            }
                            Err(e) => tracing::error!(error = %e, "cannot run a history read"),
                        }
                    }
                    // A replay step stays in order with the requests around it: the step that
                    // catches up registers the subscriber's interest, which a later request
                    // (an unsubscribe) may take back.
                    crate::history::Purpose::Replay { .. } => self.read_step(cursor, origin),
                }
            }
            ToOwner::Interest {
                reality,
                from_shard,
                add,
                confirm,
            } => self.change_interest(reality, from_shard, add, confirm),
            ToOwner::Params {
                reality,
                shard,
                conn,
                correlation_id,
            } => self.answer_params(reality, shard, conn, correlation_id),
            ToOwner::Presence { reality, update } => self.on_presence(&reality, update),
            ToOwner::PresenceGet {
                reality,
                shard,
                conn,
                correlation_id,
                offset,
                limit,
            } => self.answer_presence(reality, shard, conn, correlation_id, offset, limit),
            ToOwner::Import(import) => {
                // Its own task: a long import yields to the shard's other work as it goes.
                glommio::spawn_local(self.clone().import(*import)).detach();
            }
        }
    }
}

/// Where a parameter goes on this shard: one subscription of each connection subscribed to the
/// reality (and delivering at its sequence) — the first whose pattern matches it, else the first.
fn broadcast_targets(
    subs: &[Rc<LocalSub>],
    pulse: &Pulse,
) -> std::collections::HashSet<(ConnId, u64)> {
    let mut conns = std::collections::HashSet::new();
    let mut targets = std::collections::HashSet::new();
    for sub in subs {
        if sub.wants(pulse.sequence, &pulse.topic) && conns.insert(sub.conn.id) {
            targets.insert((sub.conn.id, sub.subscription_id));
        }
    }
    for sub in subs {
        if sub.live_at(pulse.sequence) && conns.insert(sub.conn.id) {
            targets.insert((sub.conn.id, sub.subscription_id));
        }
    }
    targets
}

/// The producer's causal context for other realities than the pulse's own.
pub(crate) fn deps_of(message: &ArqonMessage) -> Vec<(String, u64)> {
    message
        .causal
        .iter()
        .filter(|(r, _)| **r != *message.reality_id)
        .map(|(r, s)| (r.clone(), *s))
        .collect()
}

/// Writes the owner's stamp into the envelope: sequence, time, id (UUIDv7 when the producer left
/// it empty) and the vector-clock entry for this reality. The producer's entries for other
/// realities are kept.
fn stamp_message(message: &mut ArqonMessage, stamp: &Stamp) {
    // Only the bus marks a pulse as an operator's output.
    message.emitted_by.clear();
    message.input_sequence = 0;
    message.sequence = stamp.sequence;
    message.timestamp_unix_nanos = stamp.timestamp_unix_nanos;
    if message.id.is_empty() {
        message.id = uuid_v7(stamp.timestamp_unix_nanos);
    }
    match message.causal.get_mut(&*stamp.reality) {
        Some(entry) => *entry = stamp.sequence,
        None => {
            message
                .causal
                .insert(stamp.reality.to_string(), stamp.sequence);
        }
    }
}

/// Logs (at debug level) a publish its owner refused, with the pulse's traceparent.
pub fn log_refused(shard: usize, message: &ArqonMessage, reason: &str) {
    tracing::debug!(
        shard,
        reality = %message.reality_id,
        topic = %message.topic,
        traceparent = traceparent(message),
        reason,
        "publish refused"
    );
}

/// The W3C `traceparent` a pulse carries in its `trace_context`, or "" (for log fields).
pub fn traceparent(message: &ArqonMessage) -> &str {
    message
        .trace_context
        .get("traceparent")
        .map_or("", String::as_str)
}

/// A UUIDv7 from the owner's timestamp and random bits.
pub fn uuid_v7(unix_nanos: u64) -> String {
    let millis = unix_nanos / 1_000_000;
    let random: [u8; 10] = fastrand::u128(..).to_le_bytes()[..10]
        .try_into()
        .expect("ten bytes");
    uuid::Builder::from_unix_timestamp_millis(millis, &random)
        .into_uuid()
        .to_string()
}

/// Runs one shard until the stop flag is raised and its connections have drained.
pub async fn run(start: ShardStart) {
    let ShardStart {
        id,
        shards,
        config,
        clock,
        counters,
        listeners,
        shield,
        requests,
        deliveries,
        stop,
        ready,
        policy_host,
        operator_host,
        audit,
        failures,
    } = start;

    // Every end waits for its peer's end to connect, so all of them connect at once.
    let (request_senders, delivery_senders, request_rx, delivery_rx) = futures::join!(
        spsc::connect_senders(requests.senders),
        spsc::connect_senders(deliveries.senders),
        spsc::connect_receivers(requests.receivers),
        spsc::connect_receivers(deliveries.receivers),
    );
    let outbox_capacity = config.limits.outbox_capacity as usize;
    let outboxes: Vec<Option<Rc<Outbox<FromOwner>>>> = delivery_senders
        .into_iter()
        .map(|tx| tx.map(|tx| Outbox::new(tx, outbox_capacity)))
        .collect();

    let deltas = RefCell::new(OwnerStates::new(&config));
    let params = RefCell::new(OwnerParams::new(
        config.limits.max_params_per_reality as usize,
    ));
    let presence = RefCell::new(OwnerPresence::new(
        config.limits.max_presence_per_reality as usize,
        &config.presence.announce,
    ));
    let config_window_nanos = config.control.refusal_record_window_ms * 1_000_000;
    let lanes = Lanes::new(&config, shards, clock.now_unix_nanos());
    counters.lanes.publish(lanes.counters());
    lanes.start_probes();
    let shard = Rc::new(Shard {
        id,
        shards,
        sequencer: RefCell::new(Sequencer::new(
            shards,
            config.limits.max_realities_per_shard as usize,
        )),
        retained: RefCell::new(HashMap::new()),
        opening: RefCell::new(HashMap::new()),
        refused: RefCell::new(HashMap::new()),
        importing: RefCell::new(Default::default()),
        now_secs: Cell::new(clock.now_unix_nanos() / 1_000_000_000),
        config,
        clock,
        counters,
        shield,
        tls_acceptor: RefCell::new(None),
        revoked: RefCell::new(None),
        // The list loaded at start (generation 1) has nothing to sweep: no session predates it.
        revocations_swept: Cell::new(1),
        lanes,
        conns: RefCell::new(HashMap::new()),
        admitting: Rc::new(Cell::new(0)),
        next_conn: Cell::new(1),
        subs: RefCell::new(SubIndex::default()),
        requests: request_senders,
        deliveries: outboxes.clone(),
        stopping: Cell::new(false),
        stopped: Event::new(),
        policies: RefCell::new(ShardPolicies::new(policy_host.clone())),
        policy_host,
        operators: RefCell::new(ShardOperators::new(operator_host.clone())),
        operator_host,
        deltas,
        params,
        presence,
        latest: RefCell::new(latest::LatestPulses::default()),
        audit,
        control_refusals: RefCell::new(crate::audit::coalesce::Coalescer::new(config_window_nanos)),
        failures,
    });

    if let Err(why) = shard.recover_all().await {
        let _ = ready.send(Err(why));
        return;
    }
    if !shard.config.retention.is_empty() || !shard.retained.borrow().is_empty() {
        glommio::spawn_local(shard.clone().maintain_retained()).detach();
    }
    for outbox in outboxes.into_iter().flatten() {
        glommio::spawn_local(outbox.pump()).detach();
    }
    for (_, rx) in request_rx {
        glommio::spawn_local(consume_requests(shard.clone(), rx)).detach();
    }
    for (_, rx) in delivery_rx {
        glommio::spawn_local(consume_deliveries(shard.clone(), rx)).detach();
    }

    let accept_stop = Rc::new(Event::new());
    let acceptors: Vec<glommio::Task<()>> = listeners
        .into_iter()
        .map(|(transport, socket)| {
            // SAFETY: the socket was created, bound and set listening by the server on the main
            // thread and handed to this shard alone; ownership of the descriptor moves into the
            // listener.
            let listener = unsafe {
                use std::os::fd::{FromRawFd, IntoRawFd};
                TcpListener::from_raw_fd(socket.into_raw_fd())
            };
            glommio::spawn_local(accept_loop(
                shard.clone(),
                listener,
                transport,
                accept_stop.clone(),
            ))
        })
        .collect();
    let _ = ready.send(Ok(()));

    // The heartbeat shows the reactor turns: a shard stuck in a busy loop or a blocking call stops
    // bumping it, and the systemd watchdog and /healthz notice.
    let mut ticks = 0u64;
    while !stop.load(Ordering::Acquire) {
        shard.counters.heartbeat.inc();
        if shard.failures.take_injected(id) {
            // The fault seam (tests): a panic in a task of the shard's, as in a handler.
            glommio::spawn_local(async move { panic!("shard {id}: injected fault") }).detach();
        }
        if ticks % RETAINED_REPORT_TICKS == 0 {
            shard.report_retained_bytes();
        }
        ticks += 1;
        glommio::timer::sleep(Duration::from_millis(20)).await;
        shard
            .now_secs
            .set(shard.clock.now_unix_nanos() / 1_000_000_000);
        shard.sweep_revocations();
    }
    drain(&shard, accept_stop, acceptors).await;
}

async fn accept_loop(
    shard: Rc<Shard>,
    listener: TcpListener,
    transport: Transport,
    stop: Rc<Event>,
) {
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            stop.listen().await;
            None
        })
        .await;
        match accepted {
            None => return,
            Some(Ok(stream)) => session::spawn(shard.clone(), stream, transport),
            Some(Err(e)) => {
                // Out of descriptors or memory: back off briefly instead of spinning.
                tracing::warn!(shard = shard.id, error = %e, "accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Graceful stop: close the listener, stop reading from clients, let in-flight pulses reach
/// the queues, then flush every queue to its socket (bounded by `shutdown_drain_ms`).
async fn drain(shard: &Rc<Shard>, accept_stop: Rc<Event>, acceptors: Vec<glommio::Task<()>>) {
    shard.stopping.set(true);
    accept_stop.notify(usize::MAX);
    for acceptor in acceptors {
        acceptor.await;
    }
    let conns: Vec<Rc<Conn>> = shard.conns.borrow().values().cloned().collect();
    for conn in &conns {
        conn.stop_reading();
    }
    // Let requests already in the rings be sequenced and their deliveries queued.
    glommio::timer::sleep(Duration::from_millis(50)).await;
    let bye = error_frame(
        0,
        ErrorCode::ShuttingDown,
        "the server is shutting down; everything queued for this connection was sent first",
    );
    for conn in &conns {
        conn.close_with(bye.clone());
    }
    let deadline = Duration::from_millis(shard.config.limits.shutdown_drain_ms);
    let all_closed = async {
        while !shard.conns.borrow().is_empty() {
            let listener = shard.stopped.listen();
            if shard.conns.borrow().is_empty() {
                break;
            }
            listener.await;
        }
    };
    if glommio::timer::timeout(deadline, async {
        all_closed.await;
        Ok(())
    })
    .await
    .is_err()
    {
        let left = shard.conns.borrow().len();
        tracing::warn!(
            shard = shard.id,
            connections = left,
            "shutdown_drain_ms elapsed; closing connections that had not flushed"
        );
        let conns: Vec<Rc<Conn>> = shard.conns.borrow().values().cloned().collect();
        for conn in conns {
            conn.abort();
        }
    }
    shard.close_retained().await;
    session::flush_refusals(shard).await;
}

/// Messages a ring consumer handles before it lets the shard's other tasks run: a ring that
/// never empties (a peer shard flooding) must not keep this shard's connections waiting.
const RING_MESSAGES_PER_TURN: u32 = 64;
/// Heartbeats (20 ms each) between reports of retained bytes: about once a second.
const RETAINED_REPORT_TICKS: u64 = 50;

async fn consume_requests(shard: Rc<Shard>, rx: ConnectedReceiver<ToOwner>) {
    let mut handled = 0u32;
    while let Some(msg) = rx.recv().await {
        shard.handle_request(msg).await;
        handled += 1;
        if handled == RING_MESSAGES_PER_TURN {
            handled = 0;
            futures_lite::future::yield_now().await;
        }
    }
}

async fn consume_deliveries(shard: Rc<Shard>, rx: ConnectedReceiver<FromOwner>) {
    let mut handled = 0u32;
    while let Some(msg) = rx.recv().await {
        shard.handle_delivery(msg);
        handled += 1;
        if handled == RING_MESSAGES_PER_TURN {
            handled = 0;
            futures_lite::future::yield_now().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_keeps_other_realities_and_sets_own() {
        let mut m = ArqonMessage {
            reality_id: "a".into(),
            ..Default::default()
        };
        m.causal.insert("b".into(), 7);
        m.causal.insert("a".into(), 99);
        let stamp = Stamp {
            reality: Arc::from("a"),
            sequence: 3,
            timestamp_unix_nanos: 1_700_000_000_000_000_000,
        };
        stamp_message(&mut m, &stamp);
        assert_eq!(m.causal["a"], 3);
        assert_eq!(m.causal["b"], 7);
        assert_eq!(m.sequence, 3);
        let id = uuid::Uuid::parse_str(&m.id).unwrap();
        assert_eq!(id.get_version_num(), 7);
        let (secs, _) = id.get_timestamp().unwrap().to_unix();
        assert_eq!(secs, 1_700_000_000);
    }

    #[test]
    fn stamp_keeps_producer_id() {
        let mut m = ArqonMessage {
            id: "given".into(),
            ..Default::default()
        };
        let stamp = Stamp {
            reality: Arc::from("a"),
            sequence: 1,
            timestamp_unix_nanos: 5,
        };
        stamp_message(&mut m, &stamp);
        assert_eq!(m.id, "given");
    }
}
