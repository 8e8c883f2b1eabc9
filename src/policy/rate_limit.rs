//! Per-identity rate limits: the policy a route carries and the GCRA arithmetic that applies
//! it (the generic cell rate algorithm: one timestamp per key, no counters to reset, bursts
//! bounded exactly). Pure: the table of timestamps lives in `auth::rate_limit`.

use core::time::Duration;

/// `rate_limit:` of a route (or the global default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests allowed per `period` on average…
    pub requests: u32,
    pub period: Duration,
    /// …and at most this many back to back.
    pub burst: u32,
    /// Send `RateLimit-Policy` / `RateLimit` on allowed responses too (always on 429).
    pub headers: bool,
}

/// What the limit says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Allowed: the key's new timestamp, and how many more requests would pass right now.
    Allow {
        tat: u64,
        remaining: u32,
        reset: Duration,
    },
    /// Refused: retry after this long.
    Deny { retry_after: Duration },
}

impl RateLimit {
    /// Nanoseconds between requests at the sustained rate.
    pub fn interval_nanos(&self) -> u64 {
        let period = u64::try_from(self.period.as_nanos()).unwrap_or(u64::MAX);
        (period / u64::from(self.requests.max(1))).max(1)
    }

    /// GCRA: `tat` is the key's theoretical arrival time (0 for a new key), `now` the clock,
    /// both in nanoseconds on one monotonic scale.
    pub fn check(&self, tat: u64, now: u64) -> Verdict {
        let interval = self.interval_nanos();
        let tolerance = interval.saturating_mul(u64::from(self.burst.max(1)));
        let start = tat.max(now);
        let new_tat = start.saturating_add(interval);
        let ahead = new_tat - now;
        if ahead > tolerance {
            return Verdict::Deny {
                retry_after: Duration::from_nanos(ahead - tolerance),
            };
        }
        let remaining = (tolerance - ahead) / interval;
        Verdict::Allow {
            tat: new_tat,
            remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
            reset: Duration::from_nanos(ahead),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    fn limit(requests: u32, secs: u64, burst: u32) -> RateLimit {
        RateLimit {
            requests,
            period: Duration::from_secs(secs),
            burst,
            headers: false,
        }
    }

    /// Run `count` requests at `now`, returning how many passed and the final tat.
    fn burst(limit: &RateLimit, mut tat: u64, now: u64, count: u32) -> (u32, u64) {
        let mut passed = 0;
        for _ in 0..count {
            if let Verdict::Allow { tat: next, .. } = limit.check(tat, now) {
                tat = next;
                passed += 1;
            }
        }
        (passed, tat)
    }

    #[test]
    fn exactly_the_burst_passes_at_once_then_the_sustained_rate() {
        let l = limit(10, 1, 5); // 10/s, bursts of 5
        let now = 1_000 * SECOND;
        let (passed, tat) = burst(&l, 0, now, 20);
        assert_eq!(passed, 5);
        // One interval (100 ms) later exactly one more passes.
        let (passed, tat) = burst(&l, tat, now + SECOND / 10, 5);
        assert_eq!(passed, 1);
        // Idle for a long time: the full burst again, never more.
        let (passed, _) = burst(&l, tat, now + 100 * SECOND, 50);
        assert_eq!(passed, 5);
    }

    #[test]
    fn retry_after_is_when_the_next_request_would_pass() {
        let l = limit(1, 60, 1);
        let now = 5_000 * SECOND;
        let Verdict::Allow { tat, remaining, .. } = l.check(0, now) else {
            panic!("first passes");
        };
        assert_eq!(remaining, 0);
        let Verdict::Deny { retry_after } = l.check(tat, now + 20 * SECOND) else {
            panic!("second is refused");
        };
        assert_eq!(retry_after, Duration::from_secs(40));
        assert!(matches!(
            l.check(tat, now + 60 * SECOND),
            Verdict::Allow { .. }
        ));
    }

    #[test]
    fn remaining_counts_down_within_a_burst() {
        let l = limit(3, 1, 3);
        let now = 10 * SECOND;
        let mut tat = 0;
        let mut seen = Vec::new();
        for _ in 0..3 {
            let Verdict::Allow {
                tat: next,
                remaining,
                ..
            } = l.check(tat, now)
            else {
                panic!("within the burst");
            };
            tat = next;
            seen.push(remaining);
        }
        assert_eq!(seen, [2, 1, 0]);
    }
}
