//! The open-loop send schedule of the latency scenario.
//!
//! Pulse `i` is meant to leave at `start + i / rate`, whatever happened to pulse `i - 1`. When
//! the sender falls behind (the bus pushed back, the harness was descheduled) it does not move
//! the schedule: it sends every pulse that is already due, back to back, each still stamped
//! with its own intended time. Latency measured from that intended time therefore includes the
//! stall instead of hiding it (the "coordinated omission" of closed-loop load generators).

use std::ops::Range;

const NANOS_PER_SEC: u128 = 1_000_000_000;

#[derive(Debug, Clone)]
pub struct OpenLoop {
    start_ns: u64,
    rate_per_sec: u64,
    total: u64,
    /// Index of the next pulse not yet handed out by [`OpenLoop::due`].
    next: u64,
}

impl OpenLoop {
    /// `total` pulses at `rate_per_sec`, the first one intended at `start_ns`.
    pub fn new(start_ns: u64, rate_per_sec: u64, total: u64) -> Self {
        assert!(
            rate_per_sec > 0,
            "an open-loop schedule needs a rate above zero"
        );
        OpenLoop {
            start_ns,
            rate_per_sec,
            total,
            next: 0,
        }
    }

    /// When pulse `i` is meant to be sent. Computed from the start every time, so rounding
    /// never accumulates into drift.
    pub fn intended_ns(&self, i: u64) -> u64 {
        self.start_ns + (u128::from(i) * NANOS_PER_SEC / u128::from(self.rate_per_sec)) as u64
    }

    /// Hands out the indices of every pulse whose intended time is at or before `now_ns`, at
    /// most `max_burst` of them (the caller loops without sleeping while it is behind).
    pub fn due(&mut self, now_ns: u64, max_burst: u64) -> Range<u64> {
        let first = self.next;
        let mut end = first;
        let limit = self.total.min(first.saturating_add(max_burst));
        if now_ns >= self.start_ns {
            // The last index due by now: floor((now - start) * rate / 1e9).
            let elapsed = u128::from(now_ns - self.start_ns);
            let last_due = elapsed * u128::from(self.rate_per_sec) / NANOS_PER_SEC;
            end = limit
                .min((last_due + 1).min(u128::from(u64::MAX)) as u64)
                .max(first);
        }
        self.next = end;
        first..end
    }

    /// Nanoseconds until the next pulse is due (zero when it already is); `None` when every
    /// pulse has been handed out.
    pub fn wait_ns(&self, now_ns: u64) -> Option<u64> {
        if self.is_done() {
            return None;
        }
        Some(self.intended_ns(self.next).saturating_sub(now_ns))
    }

    /// How late the oldest pulse not yet sent is (zero when on schedule).
    pub fn lag_ns(&self, now_ns: u64) -> u64 {
        if self.is_done() {
            return 0;
        }
        now_ns.saturating_sub(self.intended_ns(self.next))
    }

    pub fn is_done(&self) -> bool {
        self.next >= self.total
    }

    /// Pulses handed out so far.
    #[cfg(test)]
    pub fn handed_out(&self) -> u64 {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intended_times_follow_the_rate_without_drift() {
        let s = OpenLoop::new(1_000, 3, 10);
        assert_eq!(s.intended_ns(0), 1_000);
        assert_eq!(s.intended_ns(1), 1_000 + 333_333_333);
        assert_eq!(s.intended_ns(2), 1_000 + 666_666_666);
        assert_eq!(s.intended_ns(3), 1_000 + 1_000_000_000);
        // A million pulses at 50k/s end exactly 20 s later: rounding does not accumulate.
        let s = OpenLoop::new(0, 50_000, 2_000_000);
        assert_eq!(s.intended_ns(1_000_000), 20_000_000_000);
        assert_eq!(s.intended_ns(1) - s.intended_ns(0), 20_000);
    }

    #[test]
    fn on_schedule_hands_out_one_pulse_at_a_time() {
        let mut s = OpenLoop::new(0, 1_000, 5); // one pulse per millisecond
        assert_eq!(s.due(0, 64), 0..1);
        assert_eq!(s.due(0, 64), 1..1, "pulse 1 is not due before 1 ms");
        assert_eq!(s.wait_ns(400_000), Some(600_000));
        assert_eq!(s.due(999_999, 64), 1..1);
        assert_eq!(s.due(1_000_000, 64), 1..2);
        assert_eq!(s.lag_ns(1_000_000), 0);
    }

    #[test]
    fn nothing_is_due_before_the_start() {
        let mut s = OpenLoop::new(5_000_000, 1_000, 5);
        assert_eq!(s.due(1_000, 64), 0..0);
        assert_eq!(s.wait_ns(1_000), Some(4_999_000));
    }

    #[test]
    fn when_behind_it_catches_up_in_bursts_keeping_intended_times() {
        let mut s = OpenLoop::new(0, 1_000, 100);
        assert_eq!(s.due(0, 64), 0..1);
        // The sender stalls for 50 ms: pulses 1..=50 are all due now.
        let now = 50_000_000;
        assert_eq!(s.lag_ns(now), 49_000_000, "pulse 1 was due at 1 ms");
        assert_eq!(s.wait_ns(now), Some(0));
        assert_eq!(s.due(now, 20), 1..21, "the burst is capped");
        assert_eq!(s.due(now, 20), 21..41);
        assert_eq!(s.due(now, 20), 41..51, "then the rest of the backlog");
        assert_eq!(s.due(now, 20), 51..51, "and nothing ahead of schedule");
        // The schedule did not move: pulse 30 still says it was meant for 30 ms.
        assert_eq!(s.intended_ns(30), 30_000_000);
        assert_eq!(s.wait_ns(now), Some(1_000_000));
    }

    #[test]
    fn stops_at_total_even_when_far_behind() {
        let mut s = OpenLoop::new(0, 1_000_000, 10);
        assert_eq!(s.due(u64::MAX / 2, 1_000), 0..10);
        assert!(s.is_done());
        assert_eq!(s.due(u64::MAX / 2, 1_000), 10..10);
        assert_eq!(s.wait_ns(0), None);
        assert_eq!(s.lag_ns(u64::MAX), 0);
        assert_eq!(s.handed_out(), 10);
    }
}
