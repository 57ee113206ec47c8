//! The statistics: latency percentiles (an HDR histogram) and loss accounting.
//!
//! Kept free of I/O so that the arithmetic a published figure rests on is unit-tested.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies in microseconds, from 1 µs to 10 minutes, at 3 significant digits (a recorded
/// value is off by at most 0.1 %).
///
/// Why HDR: percentiles of millions of samples in fixed memory (~100 KiB), mergeable across
/// tasks, without keeping or sorting the samples. Values outside the range are clamped, not
/// dropped, so a sample is never silently lost from the count.
#[derive(Debug, Clone)]
pub struct Latency {
    hist: Histogram<u64>,
}

/// The highest latency the histogram tracks exactly, in microseconds (10 minutes).
const MAX_MICROS: u64 = 600_000_000;

impl Default for Latency {
    fn default() -> Self {
        Latency::new()
    }
}

impl Latency {
    /// An empty histogram.
    pub fn new() -> Latency {
        Latency {
            // Bounds are constants known to be valid: 1 ≤ low, high ≥ 2·low, sigfig ≤ 5.
            hist: Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid histogram bounds"),
        }
    }

    /// Records one latency in nanoseconds (stored with microsecond resolution; values under
    /// 1 µs count as 1 µs).
    pub fn record_nanos(&mut self, nanos: u64) {
        let micros = (nanos / 1_000).clamp(1, MAX_MICROS);
        self.hist.saturating_record(micros);
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &Latency) {
        // Same bounds on both sides, so adding cannot fail; saturate rather than panic anyway.
        if self.hist.add(&other.hist).is_err() {
            for v in other.hist.iter_recorded() {
                self.hist
                    .saturating_record_n(v.value_iterated_to(), v.count_at_value());
            }
        }
    }

    /// How many samples.
    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    /// The summary: count and p50 / p90 / p99 / p99.9 / max, in milliseconds.
    pub fn summary(&self) -> LatencySummary {
        let ms = |micros: u64| micros as f64 / 1_000.0;
        if self.hist.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            count: self.hist.len(),
            p50_ms: ms(self.hist.value_at_quantile(0.50)),
            p90_ms: ms(self.hist.value_at_quantile(0.90)),
            p99_ms: ms(self.hist.value_at_quantile(0.99)),
            p999_ms: ms(self.hist.value_at_quantile(0.999)),
            max_ms: ms(self.hist.max()),
            mean_ms: self.hist.mean() / 1_000.0,
        }
    }
}

/// Percentiles of a [`Latency`] histogram, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest sample.
    pub max_ms: f64,
    /// Mean.
    pub mean_ms: f64,
}

/// What one receiving connection got, and from which room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiverTally {
    /// Index of the room it subscribed to.
    pub room: usize,
    /// Messages of this run it received.
    pub received: u64,
}

/// Deliveries expected against deliveries received.
///
/// Every receiver subscribes before the first send and is still subscribed after the last
/// acknowledged one, so each should receive exactly the messages acknowledged in its room.
/// Loss is counted per receiver (a surplus at one receiver never hides a loss at another).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LossReport {
    /// Σ over receivers of the messages acknowledged in its room.
    pub expected: u64,
    /// Σ over receivers of the messages received.
    pub received: u64,
    /// Σ over receivers of `max(0, expected − received)`.
    pub lost: u64,
    /// Σ over receivers of `max(0, received − expected)`: messages whose send was not
    /// acknowledged (timed out) but was stored and delivered anyway.
    pub extra: u64,
    /// Receivers that received fewer than expected.
    pub receivers_short: u64,
}

impl LossReport {
    /// Accounts `receivers` against `acked_per_room[room]`. A receiver naming a room outside
    /// the slice expected nothing.
    pub fn account(acked_per_room: &[u64], receivers: &[ReceiverTally]) -> LossReport {
        let mut r = LossReport::default();
        for t in receivers {
            let expected = acked_per_room.get(t.room).copied().unwrap_or(0);
            r.expected += expected;
            r.received += t.received;
            if t.received < expected {
                r.lost += expected - t.received;
                r.receivers_short += 1;
            } else {
                r.extra += t.received - expected;
            }
        }
        r
    }

    /// Lost deliveries as a fraction of those expected (0 when none were expected).
    pub fn loss_ratio(&self) -> f64 {
        if self.expected == 0 {
            0.0
        } else {
            self.lost as f64 / self.expected as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_uniform_distribution() {
        let mut h = Latency::new();
        // 1 ms, 2 ms, ..., 1000 ms.
        for i in 1..=1000u64 {
            h.record_nanos(i * 1_000_000);
        }
        let s = h.summary();
        assert_eq!(s.count, 1000);
        let close = |got: f64, want: f64| (got - want).abs() <= want * 0.001 + 0.001;
        assert!(close(s.p50_ms, 500.0), "{s:?}");
        assert!(close(s.p90_ms, 900.0), "{s:?}");
        assert!(close(s.p99_ms, 990.0), "{s:?}");
        assert!(close(s.p999_ms, 999.0), "{s:?}");
        assert!(close(s.max_ms, 1000.0), "{s:?}");
        assert!(close(s.mean_ms, 500.5), "{s:?}");
    }

    #[test]
    fn a_tail_shows_in_p99_not_p50() {
        let mut h = Latency::new();
        for _ in 0..985 {
            h.record_nanos(2_000_000);
        }
        for _ in 0..15 {
            h.record_nanos(80_000_000);
        }
        let s = h.summary();
        assert!((s.p50_ms - 2.0).abs() < 0.01, "{s:?}");
        assert!((s.p99_ms - 80.0).abs() < 0.1, "{s:?}");
    }

    #[test]
    fn merging_adds_counts_and_keeps_extremes() {
        let mut a = Latency::new();
        let mut b = Latency::new();
        a.record_nanos(1_000_000);
        b.record_nanos(3_000_000);
        b.record_nanos(5_000_000);
        a.merge(&b);
        let s = a.summary();
        assert_eq!(s.count, 3);
        assert!((s.max_ms - 5.0).abs() < 0.01 && (s.p50_ms - 3.0).abs() < 0.01);
    }

    #[test]
    fn out_of_range_samples_are_clamped_not_dropped() {
        let mut h = Latency::new();
        h.record_nanos(0);
        h.record_nanos(u64::MAX);
        assert_eq!(h.count(), 2);
        assert_eq!(h.summary().p50_ms, 0.001);
        assert!(h.summary().max_ms >= 599_000.0);
        assert_eq!(Latency::new().summary(), LatencySummary::default());
    }

    #[test]
    fn loss_is_per_receiver_and_a_surplus_never_hides_it() {
        let acked = [10, 4];
        let r = LossReport::account(
            &acked,
            &[
                ReceiverTally {
                    room: 0,
                    received: 10,
                },
                ReceiverTally {
                    room: 0,
                    received: 7,
                },
                ReceiverTally {
                    room: 1,
                    received: 5,
                },
                ReceiverTally {
                    room: 1,
                    received: 4,
                },
            ],
        );
        assert_eq!(r.expected, 28);
        assert_eq!(r.received, 26);
        assert_eq!(r.lost, 3);
        assert_eq!(r.extra, 1);
        assert_eq!(r.receivers_short, 1);
        assert!((r.loss_ratio() - 3.0 / 28.0).abs() < 1e-12);
    }

    #[test]
    fn nothing_expected_is_no_loss() {
        let r = LossReport::account(
            &[],
            &[ReceiverTally {
                room: 3,
                received: 0,
            }],
        );
        assert_eq!(r, LossReport::default());
        assert_eq!(r.loss_ratio(), 0.0);
    }
}
