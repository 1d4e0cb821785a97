//! Latency histograms and loss accounting.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Largest latency the histogram tracks exactly: one minute. Longer values are clamped to it
/// and counted in [`Latency::clamped`], so a pathological stall still shows up as the maximum.
pub const MAX_TRACKABLE_NS: u64 = 60_000_000_000;
/// Three significant digits: 1 µs resolution at 1 ms, 1 ms at 1 s.
const SIGNIFICANT_DIGITS: u8 = 3;

/// A latency histogram in nanoseconds.
#[derive(Clone)]
pub struct Latency {
    hist: Histogram<u64>,
    clamped: u64,
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    pub fn new() -> Self {
        let hist = Histogram::new_with_bounds(1, MAX_TRACKABLE_NS, SIGNIFICANT_DIGITS)
            .expect("static histogram bounds are valid");
        Latency { hist, clamped: 0 }
    }

    pub fn record_ns(&mut self, ns: u64) {
        let v = ns.clamp(1, MAX_TRACKABLE_NS);
        if ns > MAX_TRACKABLE_NS {
            self.clamped += 1;
        }
        self.hist
            .record(v)
            .expect("value is clamped into the histogram's range");
    }

    pub fn merge(&mut self, other: &Latency) {
        self.hist
            .add(&other.hist)
            .expect("histograms share their bounds");
        self.clamped += other.clamped;
    }

    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    /// The value at percentile `p` (0..=100) in nanoseconds; 100 is the maximum.
    pub fn percentile_ns(&self, p: f64) -> u64 {
        if self.hist.is_empty() {
            return 0;
        }
        if p >= 100.0 {
            return self.hist.max();
        }
        self.hist.value_at_percentile(p)
    }

    pub fn summary(&self) -> LatencySummary {
        let us = |ns: u64| ns as f64 / 1_000.0;
        LatencySummary {
            count: self.count(),
            min_us: if self.hist.is_empty() {
                0.0
            } else {
                us(self.hist.min())
            },
            mean_us: if self.hist.is_empty() {
                0.0
            } else {
                self.hist.mean() / 1_000.0
            },
            p50_us: us(self.percentile_ns(50.0)),
            p90_us: us(self.percentile_ns(90.0)),
            p99_us: us(self.percentile_ns(99.0)),
            p999_us: us(self.percentile_ns(99.9)),
            p9999_us: us(self.percentile_ns(99.99)),
            max_us: us(self.percentile_ns(100.0)),
            clamped: self.clamped,
        }
    }

    /// Points of the percentile curve (percentile, µs), denser towards the tail: the shape
    /// HdrHistogram's own plots use.
    pub fn curve(&self) -> Vec<(f64, f64)> {
        if self.hist.is_empty() {
            return Vec::new();
        }
        let mut points: Vec<(f64, f64)> = self
            .hist
            .iter_quantiles(4)
            .map(|v| {
                (
                    v.quantile_iterated_to() * 100.0,
                    v.value_iterated_to() as f64 / 1_000.0,
                )
            })
            .filter(|(p, _)| *p < 100.0)
            .collect();
        points.push((100.0, self.hist.max() as f64 / 1_000.0));
        points.dedup_by(|a, b| a.0 == b.0);
        points
    }
}

/// Latency over time: for each window of `WINDOW_NS` of intended send time, how many pulses
/// and the worst latency. A periodic stall shows up as a row of bad windows.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    windows: std::collections::BTreeMap<u64, (u64, u64)>,
}

/// Width of a timeline window: 100 ms.
pub const WINDOW_NS: u64 = 100_000_000;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Window {
    /// Start of the window, in ms from the first window.
    pub t_ms: u64,
    pub count: u64,
    pub max_us: f64,
}

impl Timeline {
    pub fn record(&mut self, intended_ns: u64, latency_ns: u64) {
        let w = self
            .windows
            .entry(intended_ns / WINDOW_NS)
            .or_insert((0, 0));
        w.0 += 1;
        w.1 = w.1.max(latency_ns);
    }

    pub fn merge(&mut self, other: &Timeline) {
        for (k, (c, m)) in &other.windows {
            let w = self.windows.entry(*k).or_insert((0, 0));
            w.0 += c;
            w.1 = w.1.max(*m);
        }
    }

    pub fn windows(&self) -> Vec<Window> {
        let Some(first) = self.windows.keys().next().copied() else {
            return Vec::new();
        };
        self.windows
            .iter()
            .map(|(k, (c, m))| Window {
                t_ms: (k - first) * WINDOW_NS / 1_000_000,
                count: *c,
                max_us: *m as f64 / 1e3,
            })
            .collect()
    }
}

/// Consecutive phases of equal length on the schedule's clock (ns since the harness's epoch),
/// each with a settling time at its start that is not measured: a pulse belongs to the phase
/// its *intended* send time falls in, so a stall is charged to the phase that caused it, not to
/// the one in which the pulse finally arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhaseWindows {
    /// Start of phase 0.
    pub first_ns: u64,
    pub phase_ns: u64,
    /// The first this-many ns of every phase are not measured.
    pub settle_ns: u64,
    pub phases: usize,
}

impl PhaseWindows {
    /// The phase whose measured part holds `intended_ns`; `None` before the first phase, in a
    /// phase's settling time, and after the last phase.
    pub fn phase_of(&self, intended_ns: u64) -> Option<usize> {
        let offset = intended_ns.checked_sub(self.first_ns)?;
        let phase = usize::try_from(offset / self.phase_ns.max(1)).ok()?;
        if phase >= self.phases || offset % self.phase_ns.max(1) < self.settle_ns {
            return None;
        }
        Some(phase)
    }

    /// Where phase `p` starts and ends (end exclusive), settling time included.
    pub fn bounds(&self, p: usize) -> (u64, u64) {
        let start = self.first_ns + p as u64 * self.phase_ns;
        (start, start + self.phase_ns)
    }

    /// The end of the last phase.
    pub fn end_ns(&self) -> u64 {
        self.bounds(self.phases).0
    }
}

/// One latency histogram per phase of [`PhaseWindows`].
#[derive(Clone)]
pub struct PhasedLatency {
    pub windows: PhaseWindows,
    pub phases: Vec<Latency>,
    /// Samples that fell in no phase's measured part (warm-up, settling, after the end).
    pub outside: u64,
}

impl PhasedLatency {
    pub fn new(windows: PhaseWindows) -> Self {
        PhasedLatency {
            windows,
            phases: vec![Latency::new(); windows.phases],
            outside: 0,
        }
    }

    pub fn record(&mut self, intended_ns: u64, latency_ns: u64) {
        match self.windows.phase_of(intended_ns) {
            Some(p) => self.phases[p].record_ns(latency_ns),
            None => self.outside += 1,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LatencySummary {
    pub count: u64,
    pub min_us: f64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub p9999_us: f64,
    pub max_us: f64,
    /// Samples above the histogram's one-minute ceiling (recorded as one minute).
    pub clamped: u64,
}

/// Which pulses of each publisher one subscriber saw.
#[derive(Debug, Default, Clone)]
pub struct LossTracker {
    publishers: Vec<PublisherSeen>,
}

#[derive(Debug, Default, Clone)]
struct PublisherSeen {
    /// One bit per sequence number.
    bits: Vec<u64>,
    received: u64,
    duplicates: u64,
    out_of_order: u64,
    /// Highest sequence seen per reality (pulses of one reality must arrive in order).
    last_per_reality: Vec<Option<u64>>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct LossReport {
    pub expected: u64,
    /// Distinct pulses received.
    pub received: u64,
    pub lost: u64,
    pub duplicates: u64,
    /// Pulses of one reality from one publisher that arrived after a later one.
    pub out_of_order: u64,
    /// Pulses received with a sequence the publisher never reported sending.
    pub unexpected: u64,
}

impl LossTracker {
    /// Records one arrival; `true` when it is the first of this pulse, `false` for a duplicate.
    pub fn observe(&mut self, publisher: u32, reality: u32, seq: u64) -> bool {
        let p = publisher as usize;
        if self.publishers.len() <= p {
            self.publishers.resize_with(p + 1, PublisherSeen::default);
        }
        let seen = &mut self.publishers[p];
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if seen.bits.len() <= word {
            seen.bits.resize(word + 1, 0);
        }
        if seen.bits[word] & (1 << bit) != 0 {
            seen.duplicates += 1;
            return false;
        }
        seen.bits[word] |= 1 << bit;
        seen.received += 1;
        let r = reality as usize;
        if seen.last_per_reality.len() <= r {
            seen.last_per_reality.resize(r + 1, None);
        }
        match seen.last_per_reality[r] {
            Some(last) if seq < last => seen.out_of_order += 1,
            _ => seen.last_per_reality[r] = Some(seq),
        }
        true
    }

    /// Distinct pulses received so far.
    #[cfg(test)]
    pub fn received(&self) -> u64 {
        self.publishers.iter().map(|p| p.received).sum()
    }

    /// Compares what arrived with `sent[p]`, the number of pulses publisher `p` sent (sequences
    /// `0..sent[p]`).
    pub fn report(&self, sent: &[u64]) -> LossReport {
        let mut r = LossReport::default();
        for (p, &n) in sent.iter().enumerate() {
            r.expected += n;
            let Some(seen) = self.publishers.get(p) else {
                r.lost += n;
                continue;
            };
            let in_range = count_bits_below(&seen.bits, n);
            r.received += in_range;
            r.lost += n - in_range;
            r.unexpected += seen.received - in_range;
            r.duplicates += seen.duplicates;
            r.out_of_order += seen.out_of_order;
        }
        for seen in self.publishers.iter().skip(sent.len()) {
            r.unexpected += seen.received;
            r.duplicates += seen.duplicates;
        }
        r
    }
}

/// Number of set bits among the first `n` bits.
fn count_bits_below(bits: &[u64], n: u64) -> u64 {
    let full = (n / 64) as usize;
    let mut count: u64 = bits
        .iter()
        .take(full)
        .map(|w| u64::from(w.count_ones()))
        .sum();
    let rest = n % 64;
    if rest > 0 {
        if let Some(w) = bits.get(full) {
            count += u64::from((w & ((1u64 << rest) - 1)).count_ones());
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    fn within(actual: f64, expected: f64, rel: f64) -> bool {
        (actual - expected).abs() <= expected * rel
    }

    #[test]
    fn percentiles_of_a_uniform_distribution() {
        let mut h = Latency::new();
        for us in 1..=10_000u64 {
            h.record_ns(us * 1_000);
        }
        let s = h.summary();
        assert_eq!(s.count, 10_000);
        // Three significant digits: each value is within 0.1 % of the exact one.
        assert!(within(s.p50_us, 5_000.0, 0.001), "p50 {}", s.p50_us);
        assert!(within(s.p90_us, 9_000.0, 0.001), "p90 {}", s.p90_us);
        assert!(within(s.p99_us, 9_900.0, 0.001), "p99 {}", s.p99_us);
        assert!(within(s.p999_us, 9_990.0, 0.001), "p99.9 {}", s.p999_us);
        assert!(within(s.max_us, 10_000.0, 0.001), "max {}", s.max_us);
        assert!(within(s.min_us, 1.0, 0.001), "min {}", s.min_us);
        assert!(within(s.mean_us, 5_000.5, 0.001), "mean {}", s.mean_us);
    }

    #[test]
    fn a_single_stall_shows_in_the_tail_not_the_median() {
        let mut h = Latency::new();
        for _ in 0..99_999 {
            h.record_ns(50_000);
        }
        h.record_ns(2_000_000_000); // one 2 s stall
        let s = h.summary();
        assert!(within(s.p50_us, 50.0, 0.001));
        assert!(within(s.p9999_us, 50.0, 0.001), "p99.99 {}", s.p9999_us);
        assert!(within(s.max_us, 2_000_000.0, 0.001), "max {}", s.max_us);
    }

    #[test]
    fn out_of_range_values_are_clamped_and_counted() {
        let mut h = Latency::new();
        h.record_ns(0);
        h.record_ns(MAX_TRACKABLE_NS * 10);
        let s = h.summary();
        assert_eq!(s.count, 2);
        assert_eq!(s.clamped, 1);
        assert!(within(s.max_us, MAX_TRACKABLE_NS as f64 / 1_000.0, 0.001));
    }

    #[test]
    fn empty_histogram_reports_zeros_and_no_curve() {
        let h = Latency::new();
        assert_eq!(h.summary(), LatencySummary::default());
        assert!(h.curve().is_empty());
    }

    #[test]
    fn merged_histograms_add_up() {
        let mut a = Latency::new();
        let mut b = Latency::new();
        for _ in 0..900 {
            a.record_ns(10_000);
        }
        for _ in 0..100 {
            b.record_ns(1_000_000);
        }
        a.merge(&b);
        let s = a.summary();
        assert_eq!(s.count, 1_000);
        assert!(within(s.p50_us, 10.0, 0.001));
        assert!(within(s.p99_us, 1_000.0, 0.001));
    }

    #[test]
    fn curve_is_monotonic_and_ends_at_the_max() {
        let mut h = Latency::new();
        for us in 1..=1_000u64 {
            h.record_ns(us * us * 1_000);
        }
        let c = h.curve();
        assert!(c.len() > 10);
        assert!(c.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
        assert_eq!(c.last().unwrap().0, 100.0);
        assert!(within(c.last().unwrap().1, 1_000_000.0, 0.001));
    }

    #[test]
    fn timeline_keeps_the_worst_latency_per_window() {
        let mut a = Timeline::default();
        let base = 7 * WINDOW_NS;
        a.record(base + 5, 1_000);
        a.record(base + 10, 9_000);
        a.record(base + WINDOW_NS * 2, 2_000);
        let mut b = Timeline::default();
        b.record(base + 1, 50_000);
        a.merge(&b);
        let w = a.windows();
        assert_eq!(w.len(), 2);
        assert_eq!(
            w[0],
            Window {
                t_ms: 0,
                count: 3,
                max_us: 50.0
            }
        );
        assert_eq!(
            w[1],
            Window {
                t_ms: 200,
                count: 1,
                max_us: 2.0
            }
        );
    }

    #[test]
    fn pulses_belong_to_the_phase_of_their_intended_time_after_its_settling() {
        let w = PhaseWindows {
            first_ns: 2_000,
            phase_ns: 1_000,
            settle_ns: 100,
            phases: 3,
        };
        assert_eq!(w.phase_of(0), None, "warm-up, before phase 0");
        assert_eq!(w.phase_of(1_999), None);
        assert_eq!(w.phase_of(2_000), None, "phase 0 settling");
        assert_eq!(w.phase_of(2_099), None);
        assert_eq!(w.phase_of(2_100), Some(0));
        assert_eq!(w.phase_of(2_999), Some(0));
        assert_eq!(w.phase_of(3_000), None, "phase 1 settling");
        assert_eq!(w.phase_of(3_100), Some(1));
        assert_eq!(w.phase_of(4_999), Some(2));
        assert_eq!(w.phase_of(5_000), None, "after the last phase");
        assert_eq!(w.phase_of(u64::MAX), None);
        assert_eq!(w.bounds(0), (2_000, 3_000));
        assert_eq!(w.bounds(2), (4_000, 5_000));
        assert_eq!(w.end_ns(), 5_000);
    }

    #[test]
    fn phased_latency_keeps_phases_apart() {
        let w = PhaseWindows {
            first_ns: 0,
            phase_ns: 1_000,
            settle_ns: 0,
            phases: 2,
        };
        let mut p = PhasedLatency::new(w);
        for i in 0..100 {
            p.record(i * 10, 5_000); // phase 0: 5 µs
            p.record(1_000 + i * 10, 900_000); // phase 1: 900 µs
        }
        p.record(2_000, 1); // after the end
        assert_eq!(p.outside, 1);
        let (a, b) = (p.phases[0].summary(), p.phases[1].summary());
        assert_eq!((a.count, b.count), (100, 100));
        assert!(within(a.p99_us, 5.0, 0.001), "{}", a.p99_us);
        assert!(within(b.p50_us, 900.0, 0.001), "{}", b.p50_us);
    }

    #[test]
    fn loss_tracker_counts_gaps_duplicates_and_reordering() {
        let mut t = LossTracker::default();
        // Publisher 0 sent 0..10 over two realities (even and odd sequences): 3 and 7 never
        // arrive, 5 arrives twice, and 4 arrives after 6 of the same reality.
        let fresh: Vec<bool> = [0u64, 1, 2, 6, 4, 5, 5, 8, 9]
            .iter()
            .map(|&seq| t.observe(0, (seq % 2) as u32, seq))
            .collect();
        assert_eq!(
            fresh,
            [true, true, true, true, true, true, false, true, true]
        );
        // Publisher 1 sent 0..3, all arrive; publisher 2 sent 4 and none arrived.
        for seq in 0..3 {
            t.observe(1, 0, seq);
        }
        let r = t.report(&[10, 3, 4]);
        assert_eq!(r.expected, 17);
        assert_eq!(r.received, 11);
        assert_eq!(r.lost, 6);
        assert_eq!(r.duplicates, 1);
        assert_eq!(r.out_of_order, 1);
        assert_eq!(r.unexpected, 0);
        assert_eq!(t.received(), 11);
    }

    #[test]
    fn pulses_beyond_what_was_sent_are_unexpected_not_received() {
        let mut t = LossTracker::default();
        for seq in 0..70 {
            t.observe(0, 0, seq);
        }
        t.observe(3, 0, 0);
        let r = t.report(&[65]);
        assert_eq!(r.received, 65);
        assert_eq!(r.lost, 0);
        assert_eq!(r.unexpected, 6);
    }
}
