//! Open-loop pacing: the n-th send is due at `start + n / rate`, whatever happened before.
//!
//! Why a schedule rather than "sleep 1/rate after each send": sleeping after each send lets
//! every slow reply push all later sends back, so a struggling server would be offered less
//! load and look better than it is ("coordinated omission"). A schedule computed from the
//! start keeps the offered rate exact; a send that could not go on time goes late, and the
//! lag is reported.

use std::time::Duration;
use tokio::time::Instant;

/// Issues ticks at a fixed rate from `start` until `deadline` (exclusive).
#[derive(Debug)]
pub struct Pacer {
    start: Instant,
    deadline: Instant,
    rate: f64,
    next: u64,
    max_lag: Duration,
}

impl Pacer {
    /// Ticks `rate` times per second (must be positive and finite) from `start`; the last tick
    /// is the last one due strictly before `deadline`.
    pub fn new(rate: f64, start: Instant, deadline: Instant) -> Pacer {
        debug_assert!(rate.is_finite() && rate > 0.0);
        Pacer {
            start,
            deadline,
            rate,
            next: 0,
            max_lag: Duration::ZERO,
        }
    }

    /// When tick `n` (from 0) is due, relative to the start: `n / rate`, computed from `n`
    /// each time so that rounding never accumulates.
    pub fn offset(n: u64, rate: f64) -> Duration {
        Duration::from_secs_f64(n as f64 / rate)
    }

    /// Where sender `index` of several, together sending `total_rate` per second, starts its
    /// own schedule: `index / total_rate` after the common start. Each sender then ticks at
    /// `total_rate / senders`, and together they are evenly spaced at `1 / total_rate`. All
    /// starting at once instead would send the senders' n-th messages in one burst every
    /// `senders / total_rate`: with 200 senders at 2 000 msg/s, 200 messages at once every
    /// 100 ms, and the measured latency would be the queue of that burst (a median of
    /// 29–33 ms, where the same load evenly spaced sees under 1 ms).
    pub fn phase(index: usize, total_rate: f64) -> Duration {
        Pacer::offset(index as u64, total_rate)
    }

    /// How many ticks a pacer of `rate` issues in `window`: ⌈rate · window⌉ (tick 0 is at the
    /// start; ticks are due strictly before the end).
    pub fn ticks_in(rate: f64, window: Duration) -> u64 {
        let mut n = (rate * window.as_secs_f64()).ceil() as u64;
        // Guard the float edge: keep exactly the ticks whose offset is < window.
        while n > 0 && Pacer::offset(n - 1, rate) >= window {
            n -= 1;
        }
        while Pacer::offset(n, rate) < window {
            n += 1;
        }
        n
    }

    /// Waits for the next tick and returns its number, or `None` once the next tick would
    /// fall at or after the deadline.
    pub async fn tick(&mut self) -> Option<u64> {
        let due = self.start + Pacer::offset(self.next, self.rate);
        if due >= self.deadline {
            return None;
        }
        tokio::time::sleep_until(due).await;
        self.max_lag = self
            .max_lag
            .max(Instant::now().saturating_duration_since(due));
        let n = self.next;
        self.next += 1;
        Some(n)
    }

    /// The latest a tick fired after it was due (how far the sender fell behind).
    pub fn max_lag(&self) -> Duration {
        self.max_lag
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn count(rate: f64, window: Duration) -> (u64, Duration) {
        let start = Instant::now();
        let mut p = Pacer::new(rate, start, start + window);
        let mut n = 0;
        let mut last = Duration::ZERO;
        while let Some(i) = p.tick().await {
            assert_eq!(i, n, "ticks are numbered in order");
            n += 1;
            last = start.elapsed();
        }
        (n, last)
    }

    #[tokio::test(start_paused = true)]
    async fn issues_exactly_rate_times_duration() {
        let (n, last) = count(200.0, Duration::from_secs(10)).await;
        assert_eq!(n, 2_000);
        // The last tick is the 1999th interval: 9.995 s.
        assert_eq!(last, Duration::from_millis(9_995));
        assert_eq!(Pacer::ticks_in(200.0, Duration::from_secs(10)), 2_000);
    }

    #[tokio::test(start_paused = true)]
    async fn fractional_rates_and_windows() {
        assert_eq!(count(3.5, Duration::from_secs(2)).await.0, 7);
        assert_eq!(count(0.5, Duration::from_secs(3)).await.0, 2); // at 0 s and 2 s
        assert_eq!(count(1000.0, Duration::from_millis(1500)).await.0, 1_500);
        assert_eq!(Pacer::ticks_in(3.5, Duration::from_secs(2)), 7);
        assert_eq!(Pacer::ticks_in(0.5, Duration::from_secs(3)), 2);
        assert_eq!(Pacer::ticks_in(7.0, Duration::from_millis(1001)), 8);
    }

    /// Senders started at their phases tick evenly spaced at the total rate, together, and
    /// issue the total number of ticks in the window between them.
    #[tokio::test(start_paused = true)]
    async fn phased_senders_interleave_evenly() {
        let (senders, total) = (4usize, 40.0);
        let start = Instant::now();
        let deadline = start + Duration::from_secs(1);
        let times = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = tokio::task::JoinSet::new();
        for j in 0..senders {
            let times = times.clone();
            tasks.spawn(async move {
                let at = start + Pacer::phase(j, total);
                let mut p = Pacer::new(total / senders as f64, at, deadline);
                while p.tick().await.is_some() {
                    times.lock().unwrap().push(start.elapsed());
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        let mut times = times.lock().unwrap().clone();
        times.sort();
        let want: Vec<Duration> = (0..40).map(|k| Pacer::offset(k, total)).collect();
        assert_eq!(times, want);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_sender_catches_up_without_changing_the_schedule() {
        let start = Instant::now();
        let mut p = Pacer::new(100.0, start, start + Duration::from_secs(1));
        assert_eq!(p.tick().await, Some(0));
        // The sender stalls for 250 ms: the ticks due meanwhile fire at once, late.
        tokio::time::sleep(Duration::from_millis(250)).await;
        let mut n = 1;
        while p.tick().await.is_some() {
            n += 1;
        }
        assert_eq!(n, 100, "the offered rate is unchanged");
        assert!(
            p.max_lag() >= Duration::from_millis(240),
            "{:?}",
            p.max_lag()
        );
    }
}
