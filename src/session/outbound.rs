//! A connection's bounded outbound queue and its slow-consumer policy.
//!
//! Deliveries count against `max_outbound_bytes`; when one does not fit, the policy decides:
//! `shed` drops it for this connection only and remembers how many each subscription missed
//! (reported with `Dropped` once the queue has drained to half), `disconnect` clears the queue,
//! sends SLOW_CONSUMER and closes. Answers (acks, errors, confirmations) are never shed, but a
//! client that never reads them is disconnected once they pass twice the budget.

use std::collections::VecDeque;
use std::sync::Arc;

use arqonbus_proto::frame::{deliver_frame_len, encode_frame, put_deliver_header};
use arqonbus_proto::v1::{server_frame, Dropped, ServerFrame};
use bytes::{Bytes, BytesMut};

use crate::config::SlowConsumerPolicy;
use crate::shard::Pulse;

/// One frame waiting to be written.
enum OutFrame {
    /// A complete encoded frame.
    Encoded(Bytes),
    /// A pulse for one subscription: the header is written at send time, the body is shared.
    Deliver {
        subscription_id: u64,
        pulse: Arc<Pulse>,
        /// Its delta form (a delta-only topic's pulse whose base the subscription holds).
        delta: bool,
    },
}

/// What became of a pushed delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    Shed,
    /// The connection is over budget under the disconnect policy: close it.
    Disconnect,
    /// The connection is closing; nothing more is queued.
    Ignored,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    /// Write what is queued, then close.
    Closing,
}

pub struct Outbound {
    frames: VecDeque<OutFrame>,
    queued_bytes: usize,
    max_bytes: usize,
    policy: SlowConsumerPolicy,
    /// (subscription, pulses shed) not yet reported.
    shed: Vec<(u64, u64)>,
    state: State,
}

impl Outbound {
    pub fn new(max_bytes: usize, policy: SlowConsumerPolicy) -> Self {
        Self {
            frames: VecDeque::new(),
            queued_bytes: 0,
            max_bytes,
            policy,
            shed: Vec::new(),
            state: State::Open,
        }
    }

    pub fn is_closing(&self) -> bool {
        self.state == State::Closing
    }

    /// Nothing left to write (shed reports included).
    pub fn is_idle(&self) -> bool {
        self.frames.is_empty() && (self.shed.is_empty() || self.state == State::Closing)
    }

    /// True when the queue is at most half full, or closing (nothing more will be queued).
    pub fn has_room_for_more(&self) -> bool {
        self.state == State::Closing || self.queued_bytes <= self.max_bytes / 2
    }

    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// Queues an answer. Returns false when the client has let answers pile up past twice the
    /// budget: it must be disconnected.
    pub fn push_answer(&mut self, frame: Bytes) -> bool {
        if self.state == State::Closing {
            return true;
        }
        if self.queued_bytes + frame.len() > self.max_bytes.saturating_mul(2) {
            return false;
        }
        self.queued_bytes += frame.len();
        self.frames.push_back(OutFrame::Encoded(frame));
        true
    }

    pub fn push_deliver(
        &mut self,
        subscription_id: u64,
        pulse: &Arc<Pulse>,
        delta: bool,
    ) -> Pushed {
        if self.state == State::Closing {
            return Pushed::Ignored;
        }
        let len = deliver_frame_len(subscription_id, pulse.body(delta).len());
        if self.queued_bytes + len > self.max_bytes {
            return match self.policy {
                SlowConsumerPolicy::Shed => {
                    match self.shed.iter_mut().find(|(s, _)| *s == subscription_id) {
                        Some((_, n)) => *n += 1,
                        None => self.shed.push((subscription_id, 1)),
                    }
                    Pushed::Shed
                }
                SlowConsumerPolicy::Disconnect => Pushed::Disconnect,
            };
        }
        self.queued_bytes += len;
        self.frames.push_back(OutFrame::Deliver {
            subscription_id,
            pulse: pulse.clone(),
            delta,
        });
        Pushed::Queued
    }

    /// A pulse for `subscription_id` was dropped before it reached this queue (a causal hold
    /// ran out): reported with `Dropped`, with the pulses shed.
    pub fn note_missed(&mut self, subscription_id: u64) {
        if self.state == State::Closing {
            return;
        }
        match self.shed.iter_mut().find(|(s, _)| *s == subscription_id) {
            Some((_, n)) => *n += 1,
            None => self.shed.push((subscription_id, 1)),
        }
    }

    /// Stops queueing; what is queued is still written.
    pub fn close_after(&mut self, last: Option<Bytes>) {
        if self.state == State::Closing {
            return;
        }
        if let Some(frame) = last {
            self.queued_bytes += frame.len();
            self.frames.push_back(OutFrame::Encoded(frame));
        }
        self.state = State::Closing;
    }

    /// Drops everything queued, then queues `last` and closes (slow consumer, abort).
    pub fn close_now(&mut self, last: Option<Bytes>) {
        self.frames.clear();
        self.queued_bytes = 0;
        self.shed.clear();
        self.state = State::Open;
        self.close_after(last);
    }

    /// Moves queued frames into `out` until it holds about `batch_bytes`. Reports shed pulses
    /// once the queue has drained below half its budget, so the report itself is not shed.
    ///
    /// Each pulse's publish-to-deliver latency (`now_unix_nanos` less its owner's timestamp) is
    /// recorded in `latency`: one clock read per batch, not per pulse.
    /// `delivered` is told each pulse written and its latency (sequenced to written).
    pub fn drain_into(
        &mut self,
        out: &mut BytesMut,
        batch_bytes: usize,
        now_unix_nanos: u64,
        mut delivered: impl FnMut(&Pulse, u64),
    ) {
        while out.len() < batch_bytes {
            let Some(frame) = self.frames.pop_front() else {
                break;
            };
            match frame {
                OutFrame::Encoded(bytes) => {
                    self.queued_bytes -= bytes.len();
                    out.extend_from_slice(&bytes);
                }
                OutFrame::Deliver {
                    subscription_id,
                    pulse,
                    delta,
                } => {
                    let body = pulse.body(delta);
                    self.queued_bytes -= deliver_frame_len(subscription_id, body.len());
                    put_deliver_header(out, subscription_id, body.len());
                    out.extend_from_slice(body);
                    delivered(
                        &pulse,
                        now_unix_nanos.saturating_sub(pulse.timestamp_unix_nanos),
                    );
                }
            }
        }
        if !self.shed.is_empty()
            && self.state == State::Open
            && self.queued_bytes <= self.max_bytes / 2
        {
            for (subscription_id, count) in self.shed.drain(..) {
                let frame = encode_frame(&ServerFrame {
                    correlation_id: 0,
                    kind: Some(server_frame::Kind::Dropped(Dropped {
                        subscription_id,
                        count,
                    })),
                });
                out.extend_from_slice(&frame);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arqonbus_proto::frame::take_frame;
    use prost::Message;

    /// A pulse whose encoded envelope is exactly `body` bytes long.
    fn pulse(body: usize) -> Arc<Pulse> {
        use arqonbus_proto::v1::ArqonMessage;
        let mut m = ArqonMessage {
            topic: "a.b".into(),
            ..Default::default()
        };
        while m.encoded_len() < body {
            m.producer_id.push('x');
        }
        let encoded = Bytes::from(m.encode_to_vec());
        assert_eq!(encoded.len(), body, "pick a body size a string can hit");
        Arc::new(Pulse {
            reality: Arc::from("r"),
            topic: "a.b".into(),
            sequence: 1,
            timestamp_unix_nanos: 0,
            encoded,
            deps: Vec::new(),
            chain: None,
            broadcast: false,
        })
    }

    fn frames(mut buf: BytesMut) -> Vec<ServerFrame> {
        let mut out = Vec::new();
        while let Some(body) = take_frame(&mut buf, 1 << 20).unwrap() {
            out.push(ServerFrame::decode(body).unwrap());
        }
        out
    }

    #[test]
    fn shed_counts_and_reports_after_draining() {
        let p = pulse(100);
        let one = deliver_frame_len(9, 100);
        let mut q = Outbound::new(one * 3, SlowConsumerPolicy::Shed);
        for _ in 0..3 {
            assert_eq!(q.push_deliver(9, &p, false), Pushed::Queued);
        }
        assert_eq!(q.push_deliver(9, &p, false), Pushed::Shed);
        assert_eq!(q.push_deliver(9, &p, false), Pushed::Shed);
        let mut out = BytesMut::new();
        q.drain_into(&mut out, usize::MAX, 0, |_, _| {});
        assert_eq!(q.queued_bytes(), 0);
        let got = frames(out);
        assert_eq!(got.len(), 4);
        match &got[3].kind {
            Some(server_frame::Kind::Dropped(d)) => {
                assert_eq!((d.subscription_id, d.count), (9, 2))
            }
            other => panic!("expected Dropped, got {other:?}"),
        }
        assert!(q.is_idle());
    }

    #[test]
    fn draining_a_delivery_records_its_latency() {
        let p = pulse(12); // stamped at 0 ns
        let mut q = Outbound::new(1 << 20, SlowConsumerPolicy::Shed);
        q.push_deliver(1, &p, false);
        q.push_deliver(2, &p, false);
        q.push_answer(Bytes::from_static(&[0, 0, 0, 0]));
        let latency = crate::metrics::LatencyHistogram::default();
        let mut out = BytesMut::new();
        q.drain_into(&mut out, usize::MAX, 30_000, |_, nanos| {
            latency.observe_nanos(nanos)
        });
        let counters = crate::metrics::ShardCounters {
            deliver_latency: latency,
            ..Default::default()
        };
        let s = crate::metrics::Snapshot::sum([&counters]).deliver_latency;
        assert_eq!(s.count(), 2, "two deliveries, the answer is not a pulse");
        assert_eq!(s.sum_nanos, 60_000);
        assert_eq!(
            s.cumulative().find(|(b, _)| *b == 50_000),
            Some((50_000, 2))
        );
        assert_eq!(
            s.cumulative().find(|(b, _)| *b == 25_000),
            Some((25_000, 0))
        );
    }

    #[test]
    fn disconnect_policy_asks_to_close() {
        let p = pulse(100);
        let mut q = Outbound::new(deliver_frame_len(1, 100), SlowConsumerPolicy::Disconnect);
        assert_eq!(q.push_deliver(1, &p, false), Pushed::Queued);
        assert_eq!(q.push_deliver(1, &p, false), Pushed::Disconnect);
    }

    #[test]
    fn answers_are_not_shed_but_are_bounded() {
        let mut q = Outbound::new(1024, SlowConsumerPolicy::Shed);
        let frame = Bytes::from(vec![0u8; 600]);
        // Past the delivery budget, answers are still queued...
        assert!(q.push_answer(frame.clone()));
        assert!(q.push_answer(frame.clone()));
        assert!(q.push_answer(frame.clone()));
        // ...but not past twice the budget.
        assert!(!q.push_answer(frame.clone()));
    }

    #[test]
    fn closing_keeps_queued_frames_and_takes_no_more() {
        let p = pulse(12);
        let mut q = Outbound::new(1 << 20, SlowConsumerPolicy::Shed);
        q.push_deliver(1, &p, false);
        q.close_after(Some(Bytes::from_static(&[0, 0, 0, 0])));
        assert_eq!(q.push_deliver(1, &p, false), Pushed::Ignored);
        let mut out = BytesMut::new();
        q.drain_into(&mut out, usize::MAX, 0, |_, _| {});
        assert_eq!(out.len(), deliver_frame_len(1, 12) + 4);
        assert!(q.is_idle() && q.is_closing());
    }
}
