//! When an HTTP/2 connection last did anything, for its idle timeout.
//!
//! hyper never closes an idle HTTP/2 connection itself (its keep-alive pings, which we leave
//! off, only catch a peer that stopped answering), so a client that never sends another
//! request would hold its connection, and a `max_connections` slot, for ever (THREATS R-05,
//! Like nginx's `keepalive_timeout`, a connection with no request in progress for
//! `idle_timeout` is sent GOAWAY.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Requests in progress on one connection and when the last one began or ended.
#[derive(Debug)]
pub struct Activity {
    origin: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds since `origin`.
    last_change_ms: AtomicU64,
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Activity {
            origin: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_change_ms: AtomicU64::new(0),
        })
    }

    /// A request began; it counts as in progress until the guard is dropped (when its
    /// response head has been produced; a body still streaming after that is not held
    /// open by this, and GOAWAY lets it finish).
    pub fn begin(self: &Arc<Self>) -> InFlight {
        // No clock read here: while a request is in progress the connection is not idle, and
        // idleness is counted from when the last one ends.
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// How long the connection has had no request in progress; `None` while one is.
    pub fn idle_for(&self) -> Option<Duration> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let now = self.elapsed_ms();
        let last = self.last_change_ms.load(Ordering::Relaxed);
        Some(Duration::from_millis(now.saturating_sub(last)))
    }

    fn touch(&self) {
        self.last_change_ms
            .store(self.elapsed_ms(), Ordering::Relaxed);
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// Marks one request in progress.
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        // Only the last request to end starts the idle time (one clock read, not one per
        // stream); stamped before the count drops, so idleness is never read from a stale time.
        if self.0.in_flight.load(Ordering::Relaxed) == 1 {
            self.0.touch();
        }
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_only_without_requests_in_progress() {
        let activity = Activity::new();
        assert!(activity.idle_for().is_some());
        let first = activity.begin();
        let second = activity.begin();
        assert_eq!(activity.idle_for(), None);
        drop(first);
        assert_eq!(activity.idle_for(), None);
        drop(second);
        std::thread::sleep(Duration::from_millis(20));
        assert!(activity.idle_for().unwrap() >= Duration::from_millis(20));
    }

    #[test]
    fn idleness_counts_from_the_last_request_to_end() {
        let activity = Activity::new();
        let long = activity.begin();
        std::thread::sleep(Duration::from_millis(30));
        let short = activity.begin();
        drop(short);
        std::thread::sleep(Duration::from_millis(30));
        drop(long);
        let idle = activity.idle_for().unwrap();
        assert!(
            idle < Duration::from_millis(25),
            "idle {idle:?} counted from before the end"
        );
    }
}
