//! Rate limiting for input a peer controls: a token bucket, used by the relay's guard
//! (protocol frames per connection) and by [`crate::ws::WsStream`] (WebSocket messages that
//! carry no frame).

use tokio::time::Instant;

/// A token bucket: `burst` tokens, refilled at `rate_per_s` per second.
#[derive(Debug)]
pub struct TokenBucket {
    capacity: f64,
    rate_per_s: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate_per_s: u32, burst: u32) -> TokenBucket {
        let capacity = f64::from(burst.max(1));
        TokenBucket {
            capacity,
            rate_per_s: f64::from(rate_per_s),
            tokens: capacity,
            last: Instant::now(),
        }
    }

    /// Take one token at time `now`; false when there is none.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate_per_s).min(self.capacity);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn token_bucket_refills() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 3);
        b.last = t0;
        assert!((0..3).all(|_| b.take(t0)));
        assert!(!b.take(t0));
        assert!(b.take(t0 + Duration::from_millis(100)));
        assert!(!b.take(t0 + Duration::from_millis(100)));
    }
}
