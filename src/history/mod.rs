//! Bounded reads of a retained reality: `history.get` queries and the replay part of a
//! replay-then-live subscription.
//!
//! A read is a cursor that moves between the requesting connection's shard and the reality's
//! owner, one chunk at a time: the owner reads up to `storage.history_chunk_bytes` of records
//! and sends them back with the cursor; the connection's shard asks for the next chunk only once
//! the client has drained its outbound queue. Memory stays bounded for any range, and a client
//! that stops reading stops the query.
//!
//! Time on the owner's reactor is bounded too: a step examines at most
//! `storage.history_scan_records` records and `storage.history_scan_bytes` bytes, matching or
//! not, so a pattern that matches little of a long log is read in many short steps with the
//! reactor turning between them, not in one long one.

use arqonbus_proto::frame::{envelope_topic, put_deliver_header, put_history_chunk};
use arqonbus_proto::v1::{history_get, start_position, ArqonMessage, HistoryGet, StartPosition};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;

use crate::delta::{self, DeltaRules};
use crate::filter::{Filter, LazyView};
use crate::routing::Pattern;
use crate::store::RealityLog;

/// Where a read starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The oldest record kept.
    Oldest,
    Sequence(u64),
    Time(u64),
    /// The last n records.
    LastN(u64),
}

/// Where a read stops (exclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// What had been published when the query started.
    Now,
    Sequence(u64),
    Time(u64),
}

/// What the read is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// `history.get`: `HistoryChunk` frames, then `HistoryEnd`.
    History { correlation_id: u64, limit: u64 },
    /// The replay of a subscription: `Deliver` frames, then the switch to live.
    Replay {
        subscription_id: u64,
        correlation_id: u64,
    },
}

/// A read in progress. It travels between shards by value.
#[derive(Debug, Clone)]
pub struct Cursor {
    pub reality: String,
    pub pattern: Pattern,
    /// A replaying subscription's filter: records it refuses are skipped (and counted).
    pub filter: Option<Arc<Filter>>,
    /// A replaying operator's input schemas: records of other types on the topics they cover
    /// are skipped (and counted as filtered).
    pub inputs: Option<Arc<crate::sam::Manifest>>,
    pub purpose: Purpose,
    pub from: Start,
    pub to: Stop,
    /// The next sequence to read, once the start is resolved.
    pub next: Option<u64>,
    /// For history: the exclusive end sequence fixed when the query started.
    pub end: Option<u64>,
    /// Records returned so far.
    pub count: u64,
    /// The last state of each delta-only topic this read returned: later records of the topic
    /// go out as deltas against it (docs/delta.md). A replay hands it to the live subscription.
    pub states: HashMap<String, (u64, Vec<u8>)>,
}

/// Why a read cannot be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable {
    pub message: String,
    pub first_available_sequence: u64,
}

/// How much one step may send and read.
#[derive(Debug, Clone, Copy)]
pub struct StepBounds {
    /// Bytes of records sent per step (`storage.history_chunk_bytes`).
    pub chunk_bytes: usize,
    /// Records examined per step, wanted or not (`storage.history_scan_records`).
    pub scan_records: u64,
    /// Bytes of records examined per step, wanted or not (`storage.history_scan_bytes`).
    pub scan_bytes: usize,
    /// How long a step may run (`storage.history_step_us`), looked at every
    /// [`CLOCK_EVERY`] records.
    pub max_time: std::time::Duration,
}

/// Records a step examines between looks at the clock.
const CLOCK_EVERY: u64 = 16;

/// The result of one step.
pub struct Step {
    /// Frames for the client (chunk; and the end, when done).
    pub frames: Bytes,
    /// True when the read is complete (history) or caught up (replay).
    pub done: bool,
    /// The first sequence this read covers (for `Subscribed`).
    pub first: u64,
    /// Records the pattern matched but the filter refused.
    pub filtered: u64,
}

impl Cursor {
    /// A cursor for a `HistoryGet`.
    pub fn history(q: &HistoryGet, correlation_id: u64, pattern: Pattern) -> Self {
        let from = match q.from {
            None => Start::Oldest,
            Some(history_get::From::FromSequence(s)) => Start::Sequence(s),
            Some(history_get::From::FromTimeUnixNanos(t)) => Start::Time(t),
        };
        let to = match q.to {
            None => Stop::Now,
            Some(history_get::To::ToSequence(s)) => Stop::Sequence(s),
            Some(history_get::To::ToTimeUnixNanos(t)) => Stop::Time(t),
        };
        Self {
            reality: q.reality_id.clone(),
            pattern,
            filter: None,
            inputs: None,
            purpose: Purpose::History {
                correlation_id,
                limit: if q.limit == 0 {
                    u64::MAX
                } else {
                    u64::from(q.limit)
                },
            },
            from,
            to,
            next: None,
            end: None,
            count: 0,
            states: HashMap::new(),
        }
    }

    /// A cursor for the replay of a subscription; `None` for a `latest` start.
    pub fn replay(
        reality: &str,
        start: Option<&StartPosition>,
        subscription_id: u64,
        correlation_id: u64,
        pattern: Pattern,
    ) -> Option<Self> {
        let from = match start.and_then(|s| s.position) {
            None | Some(start_position::Position::Latest(_)) => return None,
            Some(start_position::Position::FromSequence(s)) => Start::Sequence(s),
            Some(start_position::Position::FromTimeUnixNanos(t)) => Start::Time(t),
            Some(start_position::Position::LastN(n)) => Start::LastN(n),
        };
        Some(Self {
            reality: reality.to_owned(),
            pattern,
            filter: None,
            inputs: None,
            purpose: Purpose::Replay {
                subscription_id,
                correlation_id,
            },
            from,
            to: Stop::Now,
            next: None,
            end: None,
            count: 0,
            states: HashMap::new(),
        })
    }

    /// Resolves the start on the first step; refuses ranges retention already trimmed. `None`
    /// is a retained reality that has no log yet: nothing was ever published to it.
    fn resolve(&mut self, log: Option<&RealityLog>, visible_end: u64) -> Result<u64, Unavailable> {
        if let Some(next) = self.next {
            return Ok(next);
        }
        let first_kept = log.map_or(1, RealityLog::first_sequence);
        let trimmed = first_kept > 1;
        let unavailable = |what: String| Unavailable {
            message: format!(
                "reality `{}`: {what}; retention keeps sequences from {first_kept}",
                self.reality
            ),
            first_available_sequence: first_kept,
        };
        let start = match self.from {
            Start::Oldest => first_kept,
            Start::Sequence(s) => {
                let s = s.max(1);
                if s < first_kept {
                    return Err(unavailable(format!("sequence {s} was trimmed")));
                }
                s
            }
            Start::Time(t) => {
                let first_time = log.and_then(RealityLog::first_timestamp);
                if trimmed && first_time.is_some_and(|first| t < first) {
                    return Err(unavailable(format!("time {t} was trimmed")));
                }
                log.and_then(|log| log.read(log.seek_time(t)))
                    .map(|(r, _)| r.sequence.min(visible_end))
                    .unwrap_or(visible_end)
            }
            Start::LastN(n) => visible_end.saturating_sub(n).max(first_kept),
        };
        if let Purpose::History { .. } = self.purpose {
            self.end = Some(match self.to {
                Stop::Sequence(s) => s.min(visible_end),
                Stop::Now | Stop::Time(_) => visible_end,
            });
        }
        self.next = Some(start);
        Ok(start)
    }

    /// Reads the next chunk. `visible_end` is one past the last sequence subscribers may see
    /// (with `sync = "always"`, what is durable). Records of delta-only topics (`deltas`) go out
    /// as a keyframe, then deltas. A step ends when its chunk is full or it has examined what
    /// `bounds` allow; either way the read goes on in the next step. A retained reality that
    /// has no log yet (`None`) reads as empty: a read never creates one.
    pub fn step(
        &mut self,
        log: Option<&RealityLog>,
        visible_end: u64,
        bounds: &StepBounds,
        deltas: &DeltaRules,
    ) -> Result<Step, Unavailable> {
        let chunk_bytes = bounds.chunk_bytes;
        let first = self.resolve(log, visible_end)?;
        let start = self.next.expect("resolved");
        let end = self.end.unwrap_or(visible_end);
        let limit = match self.purpose {
            Purpose::History { limit, .. } => limit,
            Purpose::Replay { .. } => u64::MAX,
        };
        let mut bodies: Vec<Cow<'_, [u8]>> = Vec::new();
        let mut bytes = 0;
        let mut next = start;
        let mut done = true;
        let mut filtered = 0;
        let (mut scanned_records, mut scanned_bytes) = (0u64, 0usize);
        let mut at = log.map(|log| log.seek_sequence(start));
        let started = std::time::Instant::now();
        while let Some((record, after)) = log.zip(at).and_then(|(log, at)| log.read(at)) {
            if record.sequence >= end
                || matches!(self.to, Stop::Time(t) if record.timestamp_unix_nanos >= t)
                || self.count >= limit
            {
                break;
            }
            let out_of_time = scanned_records > 0
                && scanned_records % CLOCK_EVERY == 0
                && started.elapsed() >= bounds.max_time;
            if out_of_time
                || scanned_records >= bounds.scan_records
                || scanned_bytes >= bounds.scan_bytes
            {
                // This step has had its share of the reactor; the read goes on in the next.
                done = false;
                break;
            }
            scanned_records += 1;
            scanned_bytes += record.body.len();
            let topic = envelope_topic(record.body);
            let mut wanted = topic.is_some_and(|t| self.pattern.matches(t));
            if wanted && (self.filter.is_some() || self.inputs.is_some()) {
                let mut view = LazyView::new(record.body);
                wanted = self.filter.as_ref().is_none_or(|f| f.admits(&mut view))
                    && self.inputs.as_ref().is_none_or(|m| {
                        view.get()
                            .is_some_and(|v| m.takes_input(v.topic, v.type_url))
                    });
                filtered += u64::from(!wanted);
            }
            if wanted && bytes > 0 && bytes + record.body.len() > chunk_bytes {
                // The chunk is full; this record starts the next one.
                done = false;
                break;
            }
            if wanted {
                let body = match topic {
                    Some(t) if deltas.keyframe_every(&self.reality, t).is_some() => {
                        self.delta_form(record.body)
                    }
                    _ => Cow::Borrowed(record.body),
                };
                bytes += body.len();
                bodies.push(body);
                self.count += 1;
            }
            next = record.sequence + 1;
            at = Some(after);
        }
        self.next = Some(next);
        let mut out = BytesMut::new();
        match self.purpose {
            Purpose::History { correlation_id, .. } => {
                if !bodies.is_empty() {
                    let bodies: Vec<&[u8]> = bodies.iter().map(|b| &b[..]).collect();
                    put_history_chunk(&mut out, correlation_id, &bodies);
                }
                if done {
                    put_history_end(&mut out, correlation_id, self.count, next);
                }
            }
            Purpose::Replay {
                subscription_id, ..
            } => {
                for body in &bodies {
                    put_deliver_header(&mut out, subscription_id, body.len());
                    out.put_slice(body);
                }
            }
        }
        Ok(Step {
            frames: out.freeze(),
            done,
            first,
            filtered,
        })
    }

    /// A stored (whole) record of a delta-only topic as this read sends it: a delta against the
    /// topic's previous record in the read when that is smaller, else whole.
    fn delta_form<'a>(&mut self, body: &'a [u8]) -> Cow<'a, [u8]> {
        let Ok(mut message) = ArqonMessage::decode(body) else {
            return Cow::Borrowed(body);
        };
        if message.delta.is_none() {
            return Cow::Borrowed(body);
        }
        let Some(payload) = message.payload.as_mut() else {
            return Cow::Borrowed(body);
        };
        let whole = std::mem::take(&mut payload.value);
        let sequence = message.sequence;
        let form = match self.states.get(&message.topic) {
            Some((base, prev)) => {
                let d = delta::codec::encode(prev, &whole);
                if d.len() < whole.len() {
                    payload.value = d;
                    let info = message.delta.as_mut().expect("checked");
                    info.keyframe = false;
                    info.base_sequence = *base;
                    info.checksum = delta::checksum(&whole);
                    Some(Cow::Owned(message.encode_to_vec()))
                } else {
                    None
                }
            }
            None => None,
        };
        let topic = std::mem::take(&mut message.topic);
        self.states.insert(topic, (sequence, whole));
        form.unwrap_or(Cow::Borrowed(body))
    }
}

fn put_history_end(out: &mut BytesMut, correlation_id: u64, count: u64, next_sequence: u64) {
    use arqonbus_proto::v1::{server_frame, HistoryEnd, ServerFrame};
    arqonbus_proto::frame::put_frame(
        out,
        &ServerFrame {
            correlation_id,
            kind: Some(server_frame::Kind::HistoryEnd(HistoryEnd {
                count,
                next_sequence,
            })),
        },
    );
}
