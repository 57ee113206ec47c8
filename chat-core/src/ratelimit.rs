//! A token bucket on Tokio's clock.
//!
//! Why not `governor`: it reads its own clock, so tests could not drive it with
//! `tokio::time::pause`/`advance`. A token bucket is a dozen lines; this one reads
//! `tokio::time::Instant`, which makes every rate-limit test deterministic.

use std::time::Duration;
use tokio::time::Instant;

/// A token bucket: `burst` tokens, refilled at `rate` per second.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: f64) -> TokenBucket {
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }

    /// The tokens the bucket holds now (refill included), without taking any. A bucket that
    /// holds `burst` is indistinguishable from a new one.
    pub fn available(&self) -> f64 {
        self.level_at(Instant::now())
    }

    fn level_at(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        (self.tokens + elapsed * self.rate).min(self.burst)
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self) -> bool {
        let now = Instant::now();
        self.tokens = self.level_at(now);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// How long until the bucket holds a token again: zero if it holds one now. A refusal
    /// can tell the client when to come back (HTTP's `Retry-After`) instead of having it
    /// guess. A bucket that can never hold a token (`rate` of zero or less, or a `burst`
    /// below one) answers `Duration::MAX`.
    pub fn until_token(&self) -> Duration {
        if self.burst < 1.0 && self.available() < 1.0 {
            return Duration::MAX;
        }
        let missing = 1.0 - self.available();
        if missing <= 0.0 {
            return Duration::ZERO;
        }
        Duration::try_from_secs_f64(missing / self.rate).unwrap_or(Duration::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn allows_the_burst_then_the_rate() {
        let mut b = TokenBucket::new(2.0, 3.0);
        assert!(b.try_take() && b.try_take() && b.try_take());
        assert!(!b.try_take());
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(b.try_take());
        assert!(!b.try_take());
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(b.available(), 3.0, "refill is capped at the burst");
        let taken = (0..10).filter(|_| b.try_take()).count();
        assert_eq!(taken, 3, "refill is capped at the burst");
        assert!(b.available() < 1.0);
    }

    #[tokio::test(start_paused = true)]
    async fn says_how_long_until_the_next_token() {
        let mut b = TokenBucket::new(4.0, 2.0);
        assert_eq!(b.until_token(), Duration::ZERO);
        assert!(b.try_take() && b.try_take());
        assert_eq!(b.until_token(), Duration::from_millis(250));
        tokio::time::advance(Duration::from_millis(100)).await;
        let left = b.until_token().as_secs_f64();
        assert!((left - 0.150).abs() < 1e-6, "{left}");
        tokio::time::advance(Duration::from_millis(150)).await;
        assert_eq!(b.until_token(), Duration::ZERO);
        assert_eq!(TokenBucket::new(0.0, 1.0).until_token(), Duration::ZERO);
        let mut never = TokenBucket::new(0.0, 1.0);
        assert!(never.try_take());
        assert_eq!(never.until_token(), Duration::MAX);
        assert_eq!(TokenBucket::new(5.0, 0.5).until_token(), Duration::MAX);
    }
}
