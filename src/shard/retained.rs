//! The owner shard's side of retained realities: opening and recovering logs, holding pulses
//! until their flush (`sync = "always"`), group commit, checkpoints, retention, and the reads
//! behind `history.get` and replay-then-live subscriptions.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use arqonbus_proto::v1::{ArqonMessage, ErrorCode};
use bytes::Bytes;
use event_listener::Event;
use prost::Message;

use super::{FromOwner, Origin, Pulse, Shard, ToOwner};
use crate::config::{OnCorruption, RetentionRule, SyncMode};
use crate::history::{Cursor, Purpose};
use crate::operator::Sequencing;
use crate::session::{error_frame, subscribed_frame, ConnId};
use crate::store::{self, RealityLog, StoreError};
use crate::tenant::TenantShared;

/// Why a write to a retained reality was refused before anything was stored.
#[derive(Debug, thiserror::Error)]
pub enum RetainedError {
    #[error("shard {shard} already owns {max} retained realities, so `{reality}` cannot be created (limits.max_retained_realities_per_shard)")]
    ShardFull {
        shard: usize,
        reality: String,
        max: u64,
    },
    #[error("reality `{reality}` cannot be created: {why}")]
    TenantFull { reality: String, why: String },
    /// Quarantined at recovery, or failed since.
    #[error("{0}")]
    Refused(String),
    #[error("reality `{reality}` cannot be stored: {why}")]
    Store { reality: String, why: String },
    #[error("the log of reality `{reality}` was not ready within {ms} ms (storage.open_timeout_ms); is the data_dir volume slow?")]
    OpenTimedOut { reality: String, ms: u64 },
}

impl RetainedError {
    /// The stable code the publisher is answered with.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::ShardFull { .. } => ErrorCode::LimitExceeded,
            Self::TenantFull { .. } => ErrorCode::QuotaExceeded,
            Self::Refused(_) | Self::Store { .. } | Self::OpenTimedOut { .. } => {
                ErrorCode::StorageFailed
            }
        }
    }
}

/// Where a read's chunks go.
#[derive(Debug, Clone, Copy)]
pub struct ReadOrigin {
    pub shard: usize,
    pub conn: ConnId,
    /// The compartment of the connection's tenant: a history read's steps run in its queue,
    /// on the owner and on the connection's shard, and its place is given back there.
    pub lane: crate::tenant::lanes::LaneId,
}

/// How long after a flush (under `sync = "always"`, with nothing more to flush) the sync that
/// records its durable position waits for new pulses to carry it instead.
const CONFIRM_AFTER: Duration = Duration::from_millis(2);

/// A pulse sequenced and written, waiting for the flush that makes it durable.
struct Held {
    pulse: Arc<Pulse>,
    /// The publisher to answer; `None` for pulses the bus made (operator outputs).
    origin: Option<Origin>,
    ack: Option<Bytes>,
}

/// One retained reality on its owner shard.
pub struct Retained {
    pub log: RefCell<RealityLog>,
    held: RefCell<VecDeque<Held>>,
    held_bytes: Cell<usize>,
    /// The last sequence fanned out to subscribers (and so visible to reads).
    released_through: Cell<u64>,
    /// Flushes started and not yet applied (see `Shard::start_flush`).
    flushes: Cell<usize>,
    /// A flush task was spawned and has not taken its job yet: everything appended until it
    /// runs joins it, so no other is started meanwhile.
    flush_pending: Cell<bool>,
    /// The last sequence a started flush covers.
    covered: Cell<u64>,
    /// Flush tickets: the last one issued, and the last one whose outcome was applied.
    /// Outcomes are applied in ticket order, whatever order the syncs finish in.
    issued: Cell<u64>,
    applied: Cell<u64>,
    /// Notified each time a flush's outcome is applied.
    flushed: Event,
    /// A sync that only records the durable position is due (`Shard::confirm_later`).
    confirm_scheduled: Cell<bool>,
    /// Set when a flush failed: the reality takes no more pulses until restart.
    failed: RefCell<Option<String>>,
    /// A new segment is being created off the reactor: nothing is appended until it is active.
    rolling: Cell<bool>,
    rolled: Event,
    /// What each segment written since start holds of each tenant's `max_retained_bytes`,
    /// oldest first: given back when retention deletes the segment.
    charges: RefCell<VecDeque<SegmentCharges>>,
}

/// Bytes of one tenant's quota that one pulse holds.
pub struct Charge {
    tenant: Arc<TenantShared>,
    bytes: u64,
}

impl Charge {
    fn give_back(&self) {
        self.tenant.release_retained(self.bytes);
    }
}

/// The tenants' bytes in one segment.
struct SegmentCharges {
    base: u64,
    tenants: Vec<(Arc<TenantShared>, u64)>,
}

/// A retained reality whose log is being created (or found) off the reactor. Publishes to it
/// wait, up to `storage.open_timeout_ms`, then go on in the order they wake.
pub struct Opening {
    /// Why the log could not be made, once it could not.
    failed: RefCell<Option<String>>,
    finished: Cell<bool>,
    done: Event,
}

impl Retained {
    fn new(log: RealityLog) -> Rc<Self> {
        let last = log.last_sequence();
        Rc::new(Self {
            log: RefCell::new(log),
            held: RefCell::new(VecDeque::new()),
            held_bytes: Cell::new(0),
            released_through: Cell::new(last),
            flushes: Cell::new(0),
            flush_pending: Cell::new(false),
            covered: Cell::new(last),
            issued: Cell::new(0),
            applied: Cell::new(0),
            flushed: Event::new(),
            confirm_scheduled: Cell::new(false),
            failed: RefCell::new(None),
            rolling: Cell::new(false),
            rolled: Event::new(),
            charges: RefCell::new(VecDeque::new()),
        })
    }

    /// Records that the segment starting at `base` holds `charge`.
    fn hold(&self, base: u64, charge: Charge) {
        let mut charges = self.charges.borrow_mut();
        if charges.back().is_none_or(|s| s.base != base) {
            charges.push_back(SegmentCharges {
                base,
                tenants: Vec::new(),
            });
        }
        let segment = charges.back_mut().expect("pushed above");
        match segment
            .tenants
            .iter_mut()
            .find(|(t, _)| Arc::ptr_eq(t, &charge.tenant))
        {
            Some((_, bytes)) => *bytes += charge.bytes,
            None => segment.tenants.push((charge.tenant, charge.bytes)),
        }
    }

    /// Gives back what the segments before `first_kept` (deleted by retention) held.
    fn release_trimmed(&self, first_kept: u64) {
        let mut charges = self.charges.borrow_mut();
        while charges.front().is_some_and(|s| s.base < first_kept) {
            let segment = charges.pop_front().expect("checked");
            for (tenant, bytes) in segment.tenants {
                tenant.release_retained(bytes);
            }
        }
    }

    /// One past the last sequence readers may see.
    pub fn visible_end(&self) -> u64 {
        self.released_through.get() + 1
    }

    fn flushing(&self) -> bool {
        self.flushes.get() > 0
    }

    async fn wait_for_room(&self, max_held_bytes: usize) {
        while self.held_bytes.get() >= max_held_bytes && self.flushing() {
            let listener = self.flushed.listen();
            if self.held_bytes.get() < max_held_bytes || !self.flushing() {
                break;
            }
            listener.await;
        }
    }

    /// Until no flush is running.
    async fn wait_for_flushes(&self) {
        while self.flushing() {
            let listener = self.flushed.listen();
            if !self.flushing() {
                break;
            }
            listener.await;
        }
    }
}

/// Runs a flush job off the reactor: the active segment alone through io_uring (the kernel's
/// own workers run the `fdatasync`; no thread of ours waits on it), anything more on the
/// shard's blocking pool.
async fn sync_job(job: store::FlushJob) -> Result<(), StoreError> {
    use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
    let (file, path, len) = match job.only_segment() {
        Ok(one) => one,
        Err(job) => return glommio::executor().spawn_blocking(move || job.sync()).await,
    };
    // SAFETY: the descriptor is a duplicate this job owns; the glommio file takes it over
    // and closes it.
    let ring_file = unsafe { glommio::io::BufferedFile::from_raw_fd(file.into_raw_fd()) };
    let synced = ring_file.fdatasync().await;
    let checked = synced
        .map_err(|e| StoreError::Io {
            path: path.clone(),
            op: "flush segment",
            source: e.into(),
        })
        .and_then(|()| {
            // SAFETY: a view of the descriptor the glommio file still owns, never closed here.
            let view = std::mem::ManuallyDrop::new(unsafe {
                std::fs::File::from_raw_fd(ring_file.as_raw_fd())
            });
            store::Segment::check_length(&view, &path, len)
        });
    let _ = ring_file.close().await;
    checked
}

/// Brings the unwritten rest of `r`'s active segment into the page cache off the reactor,
/// while appends go on (`store::WarmJob`).
fn warm(r: &Retained) {
    if let Some(job) = r.log.borrow().warm_job() {
        glommio::spawn_local(async move {
            glommio::executor().spawn_blocking(move || job.run()).await;
        })
        .detach();
    }
}

/// The tenant stamped on the oldest record a log keeps.
fn oldest_tenant(log: &RealityLog) -> Option<String> {
    let (record, _) = log.read(log.seek_sequence(log.first_sequence()))?;
    ArqonMessage::decode(record.body).ok().map(|m| m.tenant)
}

/// Room to leave for what the owner adds to an envelope when it stamps it (sequence,
/// timestamp, a UUIDv7 id, the causal entry).
fn stamp_slack(reality: &str) -> usize {
    // The last term: `DeltaInfo` on a delta-only topic, or a parameter's version and setter.
    11 + 11 + 38 + reality.len() + 16 + 24
}

impl Shard {
    fn storage_error(&self, origin: Origin, message: &str) {
        self.counters.request_errors.inc();
        let frame = error_frame(origin.correlation_id, ErrorCode::StorageFailed, message);
        self.answer(origin.shard, origin.conn, frame);
    }

    /// The retained state of a reality this shard owns if its log exists; `Ok(None)` when it
    /// has none (ephemeral, or retained but never written). Creates nothing: reads use this.
    fn retained_existing(&self, reality: &str) -> Result<Option<Rc<Retained>>, String> {
        if let Some(r) = self.retained.borrow().get(reality) {
            return Ok(Some(r.clone()));
        }
        if let Some(why) = self.refused.borrow().get(reality) {
            return Err(why.clone());
        }
        Ok(None)
    }

    /// The retained state of a reality this shard owns, created on first use when a retention
    /// rule matches; `Ok(None)` for an ephemeral reality. Only writes call this. Creating one
    /// counts against `limits.max_retained_realities_per_shard` and against the quota of
    /// `tenant` (the publisher's; empty for what the bus writes itself), both checked before
    /// any file is made. The log is made on the shard's blocking pool (directory, preallocated
    /// segment), never on the reactor: meanwhile this waits, and the shard serves everyone else.
    pub async fn retained_for(
        self: &Rc<Self>,
        reality: &str,
        tenant: &str,
    ) -> Result<Option<Rc<Retained>>, RetainedError> {
        loop {
            if let Some(r) = self
                .retained_existing(reality)
                .map_err(RetainedError::Refused)?
            {
                return Ok(Some(r));
            }
            let Some(rule) = self.config.retention_for(reality).cloned() else {
                return Ok(None);
            };
            let opening = self.opening.borrow().get(reality).cloned();
            let opening = match opening {
                Some(o) => o,
                None => self.start_opening(reality, tenant, rule)?,
            };
            if !opening.finished.get() {
                let ms = self.config.storage.open_timeout_ms;
                let o = opening.clone();
                let waited = glommio::timer::timeout(Duration::from_millis(ms), async move {
                    while !o.finished.get() {
                        let listener = o.done.listen();
                        if o.finished.get() {
                            break;
                        }
                        listener.await;
                    }
                    Ok(())
                })
                .await;
                if waited.is_err() {
                    return Err(RetainedError::OpenTimedOut {
                        reality: reality.to_owned(),
                        ms,
                    });
                }
            }
            let failed = opening.failed.borrow().clone();
            if let Some(why) = failed {
                return Err(RetainedError::Store {
                    reality: reality.to_owned(),
                    why,
                });
            }
        }
    }

    /// Checks the bounds on retained realities, then makes the log of `reality` in the
    /// background; it is in `retained` once `Opening::done` fires without `failed`.
    fn start_opening(
        self: &Rc<Self>,
        reality: &str,
        tenant: &str,
        rule: RetentionRule,
    ) -> Result<Rc<Opening>, RetainedError> {
        let max = self.config.limits.max_retained_realities_per_shard;
        let owned = self.retained.borrow().len() + self.opening.borrow().len();
        if owned as u64 >= max {
            return Err(RetainedError::ShardFull {
                shard: self.id,
                reality: reality.to_owned(),
                max,
            });
        }
        let quota = self.shield.tenants.get(tenant).cloned();
        if let Some(t) = &quota {
            t.reserve_retained_reality()
                .map_err(|over| RetainedError::TenantFull {
                    reality: reality.to_owned(),
                    why: over.0,
                })?;
        }
        let opening = Rc::new(Opening {
            failed: RefCell::new(None),
            finished: Cell::new(false),
            done: Event::new(),
        });
        let name: Arc<str> = Arc::from(reality);
        self.opening
            .borrow_mut()
            .insert(name.clone(), opening.clone());
        let (shard, waiting) = (self.clone(), opening.clone());
        self.spawn_own(async move {
            let opened = shard.open_log(name.clone(), rule).await;
            shard.opening.borrow_mut().remove(&name);
            match opened {
                Ok((log, _)) => {
                    let r = Retained::new(log);
                    warm(&r);
                    shard.retained.borrow_mut().insert(name, r);
                }
                Err(e) => {
                    if let Some(t) = &quota {
                        t.release_retained_reality();
                    }
                    *waiting.failed.borrow_mut() = Some(e.to_string());
                }
            }
            waiting.finished.set(true);
            waiting.done.notify(usize::MAX);
        })
        .detach();
        Ok(opening)
    }

    /// Makes room for a record of `room` bytes in `r`'s active segment. `Ok(true)`: it fits,
    /// and nothing was awaited, so the caller may stamp and append in the same step. `Ok(false)`:
    /// this waited (a new segment was made off the reactor, by this call or another), so
    /// whatever the caller checked before may have changed: check again, then call again.
    async fn make_room(&self, r: &Rc<Retained>, room: usize) -> Result<bool, String> {
        if r.rolling.get() {
            let listener = r.rolled.listen();
            if r.rolling.get() {
                listener.await;
            }
            return Ok(false);
        }
        let next = r.log.borrow().room_for(room).map_err(|e| e.to_string())?;
        let Some(next) = next else {
            return Ok(true);
        };
        // Nothing is appended to this reality until the new segment is active: its name is the
        // sequence that follows the active segment's last.
        r.rolling.set(true);
        let created = glommio::executor()
            .spawn_blocking(move || next.create())
            .await;
        let rolled = created.and_then(|seg| r.log.borrow_mut().roll_to(seg));
        r.rolling.set(false);
        r.rolled.notify(usize::MAX);
        if rolled.is_ok() {
            warm(r);
        }
        rolled.map(|()| false).map_err(|e| e.to_string())
    }

    /// Opens (recovering what is there) or creates a reality's log on the shard's blocking
    /// pool: directories, reads of every record, preallocation and syncs stay off the reactor.
    async fn open_log(
        &self,
        reality: Arc<str>,
        rule: RetentionRule,
    ) -> Result<(RealityLog, store::RecoveryReport), StoreError> {
        let segment_bytes = self.config.segment_bytes_for(&rule) as usize;
        let data_dir = self.config.data_dir.clone();
        glommio::executor()
            .spawn_blocking(move || RealityLog::open(&data_dir, reality, &rule, segment_bytes))
            .await
    }

    /// Recovers every retained reality this shard owns. Runs before the shard accepts, with
    /// the reading and checking on the blocking pool.
    pub async fn recover_all(&self) -> Result<(), String> {
        let data_dir = self.config.data_dir.clone();
        let names = glommio::executor()
            .spawn_blocking(move || store::list_realities(&data_dir))
            .await
            .map_err(|e| {
                format!(
                    "cannot list {}: {e}",
                    self.config.data_dir.join("realities").display()
                )
            })?;
        // A reality whose rule was removed from the config keeps its log: sequences are
        // never reused, so it goes on as retained, keeping everything.
        let keep_all = RetentionRule {
            realities: String::new(),
            max_age_ms: 0,
            max_bytes: 0,
            sync: SyncMode::Always,
            sync_interval_ms: 100,
            segment_bytes: None,
        };
        for name in names.into_iter().filter(|n| self.owner_of(n) == self.id) {
            let rule = self
                .config
                .retention_for(&name)
                .cloned()
                .unwrap_or(keep_all.clone());
            match self.open_log(Arc::from(name.as_str()), rule).await {
                Ok((log, report)) => {
                    tracing::info!(
                        shard = self.id,
                        reality = %name,
                        segments = report.segments,
                        records = report.records,
                        truncated = ?report.truncated_at,
                        "recovered retained reality"
                    );
                    // The creator is not recorded apart; the tenant of the oldest record kept
                    // is (unless retention trimmed the first pulses, it is the creator).
                    if let Some(t) = oldest_tenant(&log).and_then(|t| self.shield.tenants.get(&t)) {
                        t.count_recovered_reality();
                    }
                    self.counters.recovered_records.add(report.records);
                    if report.truncated_at.is_some() {
                        self.counters.recovery_truncations.inc();
                    }
                    self.sequencer.borrow_mut().restore(
                        &name,
                        log.last_sequence() + 1,
                        log.last_timestamp(),
                        &|r| self.forget_idle(r),
                    );
                    let r = Retained::new(log);
                    warm(&r);
                    self.retained
                        .borrow_mut()
                        .insert(Arc::from(name.as_str()), r);
                }
                Err(e @ StoreError::Corrupt { .. })
                    if self.config.storage.on_corruption == OnCorruption::Quarantine =>
                {
                    let moved = self.quarantine(&name).await;
                    tracing::error!(reality = %name, error = %e, quarantine = %moved, "reality quarantined");
                    self.refused.borrow_mut().insert(
                        name.clone(),
                        format!("reality `{name}` is quarantined after corruption ({e}); its files are in {moved}"),
                    );
                }
                Err(e) => return Err(format!("cannot recover reality `{name}`: {e}")),
            }
        }
        Ok(())
    }

    async fn quarantine(&self, reality: &str) -> String {
        let from = store::reality_dir(&self.config.data_dir, reality);
        let dir = self.config.data_dir.join("quarantine");
        let to = dir.join(format!(
            "{reality}.{}",
            self.clock.now_unix_nanos() / 1_000_000_000
        ));
        let (f, t) = (from.clone(), to.clone());
        let moved = glommio::executor()
            .spawn_blocking(move || {
                std::fs::create_dir_all(&dir).and_then(|_| std::fs::rename(&f, &t))
            })
            .await;
        match moved {
            Ok(()) => to.display().to_string(),
            Err(e) => format!("{} (could not move it: {e})", from.display()),
        }
    }

    /// Sequences, stores (when retained) and fans out a pulse of a reality this shard owns.
    pub async fn sequence(self: &Rc<Self>, mut message: ArqonMessage, origin: Origin) {
        debug_assert_eq!(self.owner_of(&message.reality_id), self.id);
        let charge = self.charge_of(&message, origin);
        // A pulse refused here was never stored: its tenant gets its bytes back.
        let give_back = || {
            if let Some(c) = &charge {
                c.give_back();
            }
        };
        if !self.resolve_delta(&mut message, origin) {
            return give_back();
        }
        let refuse = |why: &str| {
            give_back();
            super::log_refused(self.id, &message, why);
            self.storage_error(origin, why);
        };
        let retained = match self
            .retained_for(&message.reality_id, &message.tenant)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                give_back();
                let why = e.to_string();
                super::log_refused(self.id, &message, &why);
                if e.code() != ErrorCode::StorageFailed {
                    self.counters.quota_exceeded.inc();
                }
                self.counters.request_errors.inc();
                let frame = error_frame(origin.correlation_id, e.code(), &why);
                return self.answer(origin.shard, origin.conn, frame);
            }
        };
        if !self.importing.borrow().is_empty()
            && self.importing.borrow().contains(&message.reality_id)
        {
            let why = format!(
                "reality `{}` is being written by a fork; publish once the fork is done",
                message.reality_id
            );
            return refuse(&why);
        }
        loop {
            self.wait_for_delivery_room(&message.reality_id).await;
            let Some(r) = &retained else { break };
            r.wait_for_room(self.config.storage.max_unflushed_bytes as usize)
                .await;
            if let Some(why) = r.failed.borrow().as_ref() {
                return refuse(why);
            }
            let room = message.encoded_len() + stamp_slack(&message.reality_id);
            match self.make_room(r, room).await {
                Ok(true) => break,
                // Waited for a new segment: the rings and the flush may have filled meanwhile.
                Ok(false) => continue,
                Err(why) => return refuse(&why),
            }
        }
        // From here on nothing waits: sequencing, storing and the pushes into the outboxes
        // happen in one step, so pulses enter every ring in sequence order. Operator outputs
        // are sequenced in the same step, right behind their input.
        let Some((pulse, ack)) = self.stamp(&mut message, origin) else {
            return give_back();
        };
        let operate = self
            .operators
            .borrow_mut()
            .wants(&message.reality_id, &pulse.topic);
        if operate {
            // `stamp` moved the topic into the pulse; the operators read the whole envelope.
            message.topic = pulse.topic.clone();
        }
        self.commit(retained.as_ref(), pulse, Some(origin), ack, charge);
        if operate {
            let mut sink = OwnerSink {
                shard: self,
                retained: retained.as_ref(),
            };
            let counters = self.counters.clone();
            self.operators
                .borrow_mut()
                .on_sequenced(&message, &counters, &mut sink);
        }
    }

    /// What a publish holds of its tenant's `max_retained_bytes`, if anything.
    fn charge_of(&self, message: &ArqonMessage, origin: Origin) -> Option<Charge> {
        if origin.retained_charge == 0 {
            return None;
        }
        let tenant = self.shield.tenants.get(&message.tenant)?.clone();
        Some(Charge {
            tenant,
            bytes: origin.retained_charge,
        })
    }

    /// Stores a stamped pulse (when retained) and releases it: at once, or once its flush
    /// completes under `sync = "always"`. `charge` (the publisher's tenant's bytes) is held by
    /// the segment the pulse is written to until retention deletes it.
    fn commit(
        self: &Rc<Self>,
        retained: Option<&Rc<Retained>>,
        pulse: Arc<Pulse>,
        origin: Option<Origin>,
        ack: Option<Bytes>,
        charge: Option<Charge>,
    ) {
        let Some(r) = retained else {
            if let Some(c) = charge {
                c.give_back();
            }
            self.release(&pulse, origin, ack);
            return;
        };
        r.log
            .borrow_mut()
            .append(pulse.sequence, pulse.timestamp_unix_nanos, &pulse.encoded);
        if let Some(c) = charge {
            let base = r.log.borrow().active_base();
            r.hold(base, c);
        }
        if r.log.borrow().sync == SyncMode::Always {
            r.held_bytes.set(r.held_bytes.get() + pulse.encoded.len());
            r.held.borrow_mut().push_back(Held { pulse, origin, ack });
            self.flush_held(r);
        } else {
            // Acks do not wait for a flush here, so a map that lost its file must be noticed
            // now: the record went nowhere.
            let fault = r.log.borrow().fault();
            if let Some(e) = fault {
                let why = format!("reality `{}` cannot be stored: {e}", pulse.reality);
                self.fail_retained(r, why.clone());
                if let Some(origin) = origin {
                    self.storage_error(origin, &why);
                }
                return;
            }
            r.released_through.set(pulse.sequence);
            self.release(&pulse, origin, ack);
        }
    }

    fn release(&self, pulse: &Arc<Pulse>, origin: Option<Origin>, ack: Option<Bytes>) {
        if pulse.broadcast || pulse.chain.as_ref().is_some_and(|c| c.tracked) {
            self.latest.borrow_mut().released(pulse);
            if pulse.broadcast {
                self.counters.params_set.inc();
            }
        }
        self.fan_out(pulse);
        if let (Some(frame), Some(origin)) = (ack, origin) {
            self.answer(origin.shard, origin.conn, frame);
        }
    }

    /// Starts a flush for pulses held under `sync = "always"` that no started flush covers,
    /// unless one is about to take its job (they join it) or `storage.flushes_in_flight` are
    /// running (the first to finish starts the next).
    fn flush_held(self: &Rc<Self>, r: &Rc<Retained>) {
        let uncovered = r
            .held
            .borrow()
            .back()
            .is_some_and(|h| h.pulse.sequence > r.covered.get());
        if uncovered
            && !r.flush_pending.get()
            && r.flushes.get() < self.config.storage.flushes_in_flight as usize
            && r.failed.borrow().is_none()
        {
            self.start_flush(r);
        }
    }

    /// Starts a group commit: everything written when its task first runs is made durable by
    /// one sync — an io_uring `fdatasync` of the active segment, or, when a segment was rolled
    /// or a directory gained an entry, a job on the blocking pool that syncs those too. Several
    /// may run at once (`flush_held`); their outcomes are applied in the order they started, so
    /// pulses are released in sequence order and only after every flush before theirs. Each
    /// flush also carries the durable position reached before it (the segment trailer); under
    /// `sync = "always"`, when nothing is held after a flush, one more sync records its own
    /// position (`confirm_later`), so every acked record lies before a recorded durable
    /// position within `CONFIRM_AFTER` and one fdatasync of its ack.
    pub fn start_flush(self: &Rc<Self>, r: &Rc<Retained>) {
        r.flushes.set(r.flushes.get() + 1);
        r.flush_pending.set(true);
        let ticket = r.issued.get() + 1;
        r.issued.set(ticket);
        let shard = self.clone();
        let r = r.clone();
        self.spawn_own(async move {
            r.flush_pending.set(false);
            let job = r.log.borrow_mut().flush_job();
            let outcome = match job {
                Ok(job) => {
                    let (through, marker) = (job.through, job.marker);
                    r.covered.set(r.covered.get().max(through.sequence));
                    let started = std::time::Instant::now();
                    let synced = sync_job(job).await;
                    let took = started.elapsed().as_nanos() as u64;
                    shard.counters.flush_latency.observe_nanos(took);
                    synced.map(|_| (through, marker))
                }
                Err(e) => Err(e),
            };
            while r.applied.get() + 1 != ticket {
                let listener = r.flushed.listen();
                if r.applied.get() + 1 == ticket {
                    break;
                }
                listener.await;
            }
            shard.apply_flush(&r, outcome);
            r.applied.set(ticket);
            r.flushes.set(r.flushes.get() - 1);
            r.flushed.notify(usize::MAX);
            if r.failed.borrow().is_some() {
                return;
            }
            if !r.held.borrow().is_empty() {
                shard.flush_held(&r);
            } else if !r.flushing() {
                let confirm = {
                    let log = r.log.borrow();
                    log.sync == SyncMode::Always && log.needs_confirmation()
                };
                if confirm {
                    shard.confirm_later(&r);
                }
            }
        })
        .detach();
    }

    /// What a finished flush means, applied in the order flushes started.
    fn apply_flush(
        &self,
        r: &Retained,
        outcome: Result<(store::Checkpoint, store::Checkpoint), StoreError>,
    ) {
        if r.failed.borrow().is_some() {
            // Failed meanwhile (an earlier flush, or a read found the file gone): nothing
            // more is durable.
            return;
        }
        // A map whose file shrank reads (and takes writes) as zeros: the sync cannot have
        // made those records durable.
        let outcome = match r.log.borrow().fault() {
            Some(e) => Err(e),
            None => outcome,
        };
        match outcome {
            Ok((through, marker)) => {
                let before = r.log.borrow().durable_sequence();
                r.log.borrow_mut().flushed(through, marker);
                self.counters.storage_flushes.inc();
                let made = through.sequence.saturating_sub(before);
                self.counters.storage_flushed_pulses.add(made);
                self.release_held(r, through.sequence);
            }
            Err(e) => {
                let dir = r.log.borrow().dir.display().to_string();
                self.fail_retained(r, format!("flushing {dir} failed: {e}"));
            }
        }
    }

    /// Records the durable position of the last flush with one more sync, unless a flush of
    /// new pulses (which carries it in its trailer) comes first. Waiting a little keeps that
    /// extra sync out of the way of a publisher whose next pulses are on their way: under a
    /// steady load every flush confirms the one before, and only the last one of a burst
    /// costs a sync of its own.
    fn confirm_later(self: &Rc<Self>, r: &Rc<Retained>) {
        if r.confirm_scheduled.replace(true) {
            return;
        }
        let (shard, r) = (self.clone(), r.clone());
        self.spawn_own(async move {
            glommio::timer::sleep(CONFIRM_AFTER).await;
            r.confirm_scheduled.set(false);
            let confirm = r.log.borrow().needs_confirmation();
            if confirm && !r.flushing() && r.failed.borrow().is_none() {
                shard.start_flush(&r);
            }
        })
        .detach();
    }

    fn release_held(&self, r: &Retained, through: u64) {
        loop {
            let next = {
                let mut held = r.held.borrow_mut();
                match held.front() {
                    Some(h) if h.pulse.sequence <= through => held.pop_front(),
                    _ => None,
                }
            };
            let Some(h) = next else { break };
            r.held_bytes.set(r.held_bytes.get() - h.pulse.encoded.len());
            r.released_through.set(h.pulse.sequence);
            self.release(&h.pulse, h.origin, h.ack);
        }
    }

    /// A flush failed: nothing held is acknowledged or delivered, and the reality refuses new
    /// pulses until an operator restarts the bus (recovery then decides what is on disk).
    fn fail_retained(&self, r: &Retained, why: String) {
        tracing::error!(shard = self.id, error = %why, "retained reality failed");
        // Before anyone hears "failed": the refused records must not come back after a restart.
        r.log.borrow_mut().discard_unflushed();
        let held: Vec<Held> = r.held.borrow_mut().drain(..).collect();
        r.held_bytes.set(0);
        for h in held {
            if let Some(origin) = h.origin {
                self.storage_error(origin, &why);
            }
        }
        *r.failed.borrow_mut() = Some(why);
    }

    /// Periodic upkeep: interval flushes, checkpoints, retention. Runs for the life of the shard.
    pub async fn maintain_retained(self: Rc<Self>) {
        let tick = Duration::from_millis(50);
        let checkpoint_every = Duration::from_millis(self.config.storage.checkpoint_interval_ms);
        let mut since_checkpoint = Duration::ZERO;
        let mut since_flush: std::collections::HashMap<Arc<str>, Duration> = Default::default();
        loop {
            glommio::timer::sleep(tick).await;
            since_checkpoint += tick;
            let checkpoint_now = since_checkpoint >= checkpoint_every;
            if checkpoint_now {
                since_checkpoint = Duration::ZERO;
            }
            let all: Vec<(Arc<str>, Rc<Retained>)> = self
                .retained
                .borrow()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            for (name, r) in all {
                if r.failed.borrow().is_some() {
                    continue;
                }
                let (sync, interval, dirty) = {
                    let log = r.log.borrow();
                    (log.sync, log.sync_interval_ms, log.is_dirty())
                };
                let waited = since_flush.entry(name.clone()).or_default();
                *waited += tick;
                let due = match sync {
                    SyncMode::Always => false,
                    SyncMode::Interval => *waited >= Duration::from_millis(interval),
                    SyncMode::Os => checkpoint_now,
                };
                let confirm = r.log.borrow().needs_confirmation();
                if due && (dirty || confirm) && !r.flushing() {
                    *waited = Duration::ZERO;
                    self.start_flush(&r);
                }
                if checkpoint_now {
                    self.checkpoint_and_trim(&r).await;
                }
            }
        }
    }

    async fn checkpoint_and_trim(&self, r: &Rc<Retained>) {
        let due = r.log.borrow().checkpoint_due();
        if let Some(cp) = due {
            let dir = r.log.borrow().dir.clone();
            let written = glommio::executor()
                .spawn_blocking(move || cp.write(&dir))
                .await;
            match written {
                Ok(()) => r.log.borrow_mut().checkpoint_written(cp),
                Err(e) => tracing::warn!(error = %e, "checkpoint write failed; will retry"),
            }
        }
        let removed = r.log.borrow_mut().trim(self.clock.now_unix_nanos());
        if !removed.is_empty() {
            r.release_trimmed(r.log.borrow().first_sequence());
            self.counters.segments_trimmed.add(removed.len() as u64);
            glommio::executor()
                .spawn_blocking(move || {
                    for path in removed {
                        let _ = std::fs::remove_file(path);
                    }
                })
                .await;
        }
    }

    /// On shutdown: flush what is written and record it in the checkpoint.
    pub async fn close_retained(&self) {
        let all: Vec<Rc<Retained>> = self.retained.borrow().values().cloned().collect();
        for r in all {
            r.wait_for_flushes().await;
            if r.failed.borrow().is_some() {
                continue;
            }
            let job = r.log.borrow_mut().flush_job();
            if let Ok(job) = job {
                let (through, marker) = (job.through, job.marker);
                let synced = sync_job(job).await;
                if synced.is_ok() && r.log.borrow().fault().is_none() {
                    r.log.borrow_mut().flushed(through, marker);
                }
            }
            self.checkpoint_and_trim(&r).await;
        }
    }

    /// Sends a read step to the reality's owner (or does it here).
    pub async fn send_read(self: &Rc<Self>, cursor: Cursor, origin: ReadOrigin) {
        let owner = self.owner_of(&cursor.reality);
        if owner == self.id {
            self.read_step(cursor, origin);
        } else {
            self.send_to_owner(owner, ToOwner::Read(Box::new((cursor, origin))))
                .await;
        }
    }

    /// Owner side of a read: one chunk, and the switch to live when a replay has caught up.
    pub fn read_step(self: &Rc<Self>, mut cursor: Cursor, origin: ReadOrigin) {
        let storage = &self.config.storage;
        let bounds = crate::history::StepBounds {
            chunk_bytes: storage
                .history_chunk_bytes
                .min(self.config.limits.max_frame_bytes / 2) as usize,
            scan_records: storage.history_scan_records,
            scan_bytes: storage.history_scan_bytes as usize,
            max_time: Duration::from_micros(storage.history_step_us),
        };
        let rules = self.deltas.borrow();
        let result = match self.retained_existing(&cursor.reality) {
            Ok(Some(r)) => {
                let log = r.log.borrow();
                let step = cursor.step(Some(&log), r.visible_end(), &bounds, rules.rules());
                // A read that touched a map whose file went away read zeros: say so, and
                // stop this reality, rather than hand out a short or wrong history.
                let fault = log.fault();
                drop(log);
                if let Some(e) = fault {
                    let why = format!("reality `{}` is unreadable: {e}", cursor.reality);
                    self.fail_retained(&r, why.clone());
                    Err((ErrorCode::StorageFailed, why, 0))
                } else {
                    step.inspect(|step| {
                        if step.filtered > 0 {
                            self.counters.pulses_filtered.add(step.filtered);
                        }
                    })
                    .map(|step| (step, r.visible_end()))
                    .map_err(|u| {
                        (
                            ErrorCode::HistoryUnavailable,
                            u.message,
                            u.first_available_sequence,
                        )
                    })
                }
            }
            // Retained, but nothing was ever published to it: the read is empty, and it leaves
            // no trace on disk (a reader must not be able to make the bus create logs).
            Ok(None) if self.config.retention_for(&cursor.reality).is_some() => cursor
                .step(None, 1, &bounds, rules.rules())
                .map(|step| (step, 1))
                .map_err(|u| {
                    (
                        ErrorCode::HistoryUnavailable,
                        u.message,
                        u.first_available_sequence,
                    )
                }),
            Ok(None) => Err((
                ErrorCode::HistoryUnavailable,
                format!(
                    "reality `{}` is not retained: no retention rule matches it",
                    cursor.reality
                ),
                0,
            )),
            Err(why) => Err((ErrorCode::StorageFailed, why, 0)),
        };
        drop(rules);
        let correlation_id = match cursor.purpose {
            Purpose::History { correlation_id, .. } | Purpose::Replay { correlation_id, .. } => {
                correlation_id
            }
        };
        let (outcome, live_from) = match result {
            Ok((step, visible_end)) => {
                let live_from = match cursor.purpose {
                    Purpose::Replay { .. } if step.done => {
                        // Caught up: from this moment every pulse reaches the subscriber's shard
                        // live, starting exactly where the replay ended.
                        let _ = self.sequencer.borrow_mut().change_interest(
                            &cursor.reality,
                            origin.shard,
                            true,
                            &|r| self.forget_idle(r),
                        );
                        Some(visible_end)
                    }
                    _ => None,
                };
                (Ok(step), live_from)
            }
            Err((code, message, first)) => {
                let frame =
                    crate::session::error_frame_with_first(correlation_id, code, &message, first);
                (Err(frame), None)
            }
        };
        let step = ReadStep {
            cursor: Box::new(cursor),
            origin,
            outcome,
            live_from,
        };
        match &self.deliveries[origin.shard] {
            Some(outbox) => outbox.push(FromOwner::Read(Box::new(step))),
            None => self.on_read_step(step),
        }
    }

    /// Requesting side of a read: hand the chunk to the client, then ask for the next once the
    /// client has drained its queue.
    pub fn on_read_step(self: &Rc<Self>, step: ReadStep) {
        let ReadStep {
            cursor,
            origin,
            outcome,
            live_from,
        } = step;
        let conn = self.conn(origin.conn);
        let sub = match cursor.purpose {
            Purpose::Replay {
                subscription_id, ..
            } => conn.as_ref().and_then(|c| {
                self.subs
                    .borrow()
                    .find(&cursor.reality, c.id, subscription_id)
                    .cloned()
            }),
            Purpose::History { .. } => None,
        };
        let Some(conn) = conn else {
            if live_from.is_some() {
                self.release_interest_later(cursor.reality.clone());
            }
            if let Purpose::History { .. } = cursor.purpose {
                self.lanes().get(origin.lane).end_history_read();
            }
            return;
        };
        match cursor.purpose {
            Purpose::History { .. } => match outcome {
                Err(frame) => {
                    self.lanes().get(origin.lane).end_history_read();
                    conn.push_frame(&self.counters, frame)
                }
                Ok(s) => {
                    if !s.frames.is_empty() {
                        conn.push_frame(&self.counters, s.frames);
                    }
                    if s.done {
                        self.lanes().get(origin.lane).end_history_read();
                    } else {
                        self.continue_read(conn, *cursor, origin);
                    }
                }
            },
            Purpose::Replay {
                subscription_id,
                correlation_id,
            } => {
                let Some(sub) = sub else {
                    // Unsubscribed while replaying.
                    if live_from.is_some() {
                        self.release_interest_later(cursor.reality.clone());
                    }
                    return;
                };
                match outcome {
                    Err(frame) => {
                        self.subs
                            .borrow_mut()
                            .remove(&cursor.reality, conn.id, subscription_id);
                        conn.forget_subscription(subscription_id);
                        conn.push_frame(&self.counters, frame);
                        self.presence_changed(&conn, &cursor.reality);
                    }
                    Ok(s) => {
                        if !sub.announced() {
                            sub.announce();
                            let origin = super::SubscribeOrigin {
                                conn: conn.id,
                                subscription_id,
                                correlation_id,
                            };
                            conn.push_frame(&self.counters, subscribed_frame(origin, s.first));
                        }
                        if !s.frames.is_empty() {
                            conn.push_frame(&self.counters, s.frames);
                        }
                        match live_from {
                            Some(from) => {
                                // Live deltas go on from the states the replay sent.
                                sub.continue_chains(&cursor.states);
                                sub.go_live(from)
                            }
                            None => self.continue_read(conn, *cursor, origin),
                        }
                    }
                }
            }
        }
    }

    fn continue_read(
        self: &Rc<Self>,
        conn: Rc<crate::session::Conn>,
        cursor: Cursor,
        origin: ReadOrigin,
    ) {
        let shard = self.clone();
        let next = async move {
            // Let the reactor turn before the next step. glommio polls for I/O only when its
            // task queue runs dry or its preemption timer (100 ms) fires, and a yield leaves
            // this task runnable: a long read of a local owner would then hold every socket on
            // the shard for that long. A timer is not runnable until the reactor has polled.
            // (It also keeps the read loop from recursing through spawn.)
            glommio::timer::sleep(STEP_PAUSE).await;
            conn.wait_drained().await;
            if conn.is_closing() {
                // A replay's subscription goes with the connection; it never registered
                // interest. A history read gives back its place.
                if let Purpose::History { .. } = cursor.purpose {
                    shard.lanes().get(origin.lane).end_history_read();
                }
                return;
            }
            shard.send_read(cursor, origin).await;
        };
        // In the tenant's queue: the next step (and, with a local owner, the read itself) is
        // the tenant's work.
        let queue = self.lanes().get(origin.lane).queue();
        match glommio::spawn_local_into(next, queue) {
            Ok(task) => {
                task.detach();
            }
            Err(e) => tracing::error!(error = %e, "cannot continue a read in its tenant's queue"),
        }
    }

    fn release_interest_later(self: &Rc<Self>, reality: String) {
        let shard = self.clone();
        glommio::spawn_local(async move {
            crate::session::release_interest(&shard, reality).await;
        })
        .detach();
    }
}

/// Pause between the steps of a read: the shortest a timer can wait, which is enough to let
/// the reactor poll for I/O first.
const STEP_PAUSE: Duration = Duration::from_micros(1);

/// A fork's log on its way to the new reality's owner: the records (already carrying the new
/// reality's name), where the fork point is, the pinned parameters, and whom to answer.
pub struct ForkImport {
    pub reality: String,
    pub records: Vec<Bytes>,
    pub fork_at: u64,
    pub pins: Vec<crate::replay::Pin>,
    pub origin: Origin,
}

/// Records an import writes before it lets the shard's other tasks run.
const IMPORT_RECORDS_PER_TURN: usize = 256;

impl Shard {
    /// Owner side of a live fork: writes the replayed records into the new (never used) reality
    /// with their own sequence numbers, delivers them to its subscribers, and runs its inputs
    /// through the operators (outputs dropped: the log has them) so they go on live from the
    /// replayed state, with the pinned parameters from the fork point.
    pub async fn import(self: Rc<Self>, import: ForkImport) {
        let ForkImport {
            reality,
            records,
            fork_at,
            pins,
            origin,
        } = import;
        let fail = |why: &str| {
            self.counters.request_errors.inc();
            let frame = error_frame(origin.correlation_id, ErrorCode::InvalidRequest, why);
            self.answer(origin.shard, origin.conn, frame);
        };
        let retained = match self.retained_for(&reality, "").await {
            Ok(Some(r)) => r,
            Ok(None) => return fail(&format!("no [[retention]] rule matches `{reality}`")),
            Err(e) => return fail(&e.to_string()),
        };
        if !self.sequencer.borrow().is_unused(&reality)
            || retained.log.borrow().last_sequence() != 0
            || !self.importing.borrow_mut().insert(reality.clone())
        {
            return fail(&format!(
                "reality `{reality}` already exists; fork under another name"
            ));
        }
        let first = records
            .first()
            .and_then(|b| ArqonMessage::decode(&b[..]).ok())
            .map_or(1, |m| m.sequence);
        if first > 1 {
            // The source's oldest segments were trimmed: the fork numbers as the source did.
            self.sequencer
                .borrow_mut()
                .restore(&reality, first, 0, &|r| self.forget_idle(r));
        }
        let outcome = self
            .write_import(&retained, &reality, records, fork_at, &pins)
            .await;
        self.importing.borrow_mut().remove(&reality);
        match outcome {
            Ok(last) => {
                let frame = arqonbus_proto::frame::encode_frame(&arqonbus_proto::v1::ServerFrame {
                    correlation_id: origin.correlation_id,
                    kind: Some(arqonbus_proto::v1::server_frame::Kind::PubAck(
                        arqonbus_proto::v1::PubAck {
                            reality_id: reality.clone(),
                            sequence: last,
                            id: String::new(),
                            timestamp_unix_nanos: self.clock.now_unix_nanos(),
                        },
                    )),
                });
                tracing::info!(shard = self.id, %reality, last, "fork imported");
                if origin.ack {
                    self.answer(origin.shard, origin.conn, frame);
                }
            }
            Err(why) => {
                tracing::warn!(shard = self.id, %reality, error = %why, "fork import failed");
                fail(&format!(
                    "the fork stopped part way ({why}); `{reality}` keeps what was written"
                ));
            }
        }
    }

    async fn write_import(
        self: &Rc<Self>,
        retained: &Rc<Retained>,
        reality: &str,
        records: Vec<Bytes>,
        fork_at: u64,
        pins: &[crate::replay::Pin],
    ) -> Result<u64, String> {
        let mut last = 0;
        let mut pinned = false;
        for (i, bytes) in records.into_iter().enumerate() {
            if i % IMPORT_RECORDS_PER_TURN == IMPORT_RECORDS_PER_TURN - 1 {
                futures_lite::future::yield_now().await;
            }
            let message = ArqonMessage::decode(&bytes[..]).map_err(|e| e.to_string())?;
            if !pinned && message.sequence >= fork_at {
                pinned = true;
                let mut operators = self.operators.borrow_mut();
                for pin in pins {
                    operators.pin_reality_param(
                        reality,
                        &pin.operator,
                        &pin.name,
                        pin.value.clone(),
                    );
                }
            }
            loop {
                self.wait_for_delivery_room(reality).await;
                retained
                    .wait_for_room(self.config.storage.max_unflushed_bytes as usize)
                    .await;
                if let Some(why) = retained.failed.borrow().as_ref() {
                    return Err(why.clone());
                }
                if self.make_room(retained, bytes.len()).await? {
                    break;
                }
            }
            let stamp = self
                .sequencer
                .borrow_mut()
                .stamp(reality, message.timestamp_unix_nanos, &|r| {
                    self.forget_idle(r)
                })
                .map_err(|e| e.to_string())?;
            if stamp.sequence != message.sequence {
                return Err(format!(
                    "record {} would be sequence {} here",
                    message.sequence, stamp.sequence
                ));
            }
            let pulse = Arc::new(Pulse {
                reality: stamp.reality,
                sequence: stamp.sequence,
                timestamp_unix_nanos: stamp.timestamp_unix_nanos,
                topic: message.topic.clone(),
                deps: super::deps_of(&message),
                broadcast: crate::param::is_param_topic(&message.topic),
                encoded: bytes,
                chain: None,
            });
            self.counters.pulses_sequenced.inc();
            self.commit(Some(retained), pulse, None, None, None);
            let counters = self.counters.clone();
            self.operators.borrow_mut().warm(&message, &counters);
            last = message.sequence;
        }
        Ok(last)
    }
}

/// Sequences what the operators emit behind their input, on the owner: reserve room (when
/// retained), stamp, store, release — the same steps as a publish, in the same synchronous step.
struct OwnerSink<'a> {
    shard: &'a Rc<Shard>,
    retained: Option<&'a Rc<Retained>>,
}

impl Sequencing for OwnerSink<'_> {
    fn sequence_output(&mut self, mut output: ArqonMessage) -> Option<ArqonMessage> {
        let shard = self.shard;
        if let Some(r) = self.retained {
            if r.failed.borrow().is_some() {
                return None;
            }
            let room = output.encoded_len() + stamp_slack(&output.reality_id);
            let base = r.log.borrow().active_base();
            let reserved = r.log.borrow_mut().reserve(room);
            if reserved.is_ok() && r.log.borrow().active_base() != base {
                warm(r);
            }
            if let Err(e) = reserved {
                tracing::warn!(
                    shard = shard.id,
                    reality = %output.reality_id,
                    operator = %output.emitted_by,
                    error = %e,
                    "operator output not stored; the rest of this input's outputs are dropped"
                );
                shard.counters.operator_faults.inc();
                return None;
            }
        }
        let pulse = shard.stamp_output(&mut output)?;
        shard.commit(self.retained, pulse, None, None, None);
        Some(output)
    }

    fn check_hop(&self, reality: &str, topic: &str, type_url: &str) -> Result<(), String> {
        self.shard
            .shield
            .circuits
            .check_publish(reality, topic, type_url)
    }
}

/// One chunk of a read, on its way back to the requesting shard.
pub struct ReadStep {
    pub cursor: Box<Cursor>,
    pub origin: ReadOrigin,
    pub outcome: Result<crate::history::Step, Bytes>,
    /// Set when a replay caught up: the sequence live delivery starts at.
    pub live_from: Option<u64>,
}
