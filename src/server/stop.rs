//! The shutdown signal a worker's connections wait on.
//!
//! Each connection's driver polls its stop future on every wake-up, that is several times per
//! request. A `watch` (or `Notify`) future takes its channel's waiter lock on each of those
//! polls, and with one channel for the server that lock is shared by every connection on
//! every core. Here a poll is one atomic load; the lock (one per worker) is taken only when a
//! connection registers its waker, when it ends, and at shutdown.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use slab::Slab;

/// Set once, at shutdown; wakes every connection waiting on it.
#[derive(Debug, Default)]
pub struct StopSignal {
    stopping: AtomicBool,
    waiters: Mutex<Slab<Waker>>,
}

impl StopSignal {
    pub fn new() -> Arc<Self> {
        Arc::new(StopSignal::default())
    }

    /// Stop: every [`Stopped`] future, waiting or not yet polled, completes.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Taken after the flag is set: a waiter registering later sees the flag under it.
        let waiters = self.waiters.lock().unwrap_or_else(PoisonError::into_inner);
        for (_, waker) in waiters.iter() {
            waker.wake_by_ref();
        }
    }

    /// A future that completes once [`stop`](Self::stop) has been called.
    pub fn stopped(self: &Arc<Self>) -> Stopped {
        Stopped {
            signal: self.clone(),
            registered: None,
        }
    }

    fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Connections currently registered.
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// Completes when its [`StopSignal`] stops.
#[derive(Debug)]
pub struct Stopped {
    signal: Arc<StopSignal>,
    /// Our slot in the waiter list and the waker stored there.
    registered: Option<(usize, Waker)>,
}

impl Future for Stopped {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.signal.is_stopping() {
            return Poll::Ready(());
        }
        // A task's waker rarely changes; when it has not, there is nothing to update.
        if let Some((_, waker)) = &self.registered {
            if waker.will_wake(cx.waker()) {
                return Poll::Pending;
            }
        }
        let signal = self.signal.clone();
        let mut waiters = signal
            .waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((key, _)) = self.registered.take() {
            waiters.try_remove(key);
        }
        if signal.is_stopping() {
            return Poll::Ready(());
        }
        let waker = cx.waker().clone();
        let key = waiters.insert(waker.clone());
        self.registered = Some((key, waker));
        Poll::Pending
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        if let Some((key, _)) = self.registered.take() {
            let mut waiters = self
                .signal
                .waiters
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            waiters.try_remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    /// A waker that counts its wake-ups.
    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn poll(stopped: &mut Stopped, waker: &Waker) -> Poll<()> {
        Pin::new(stopped).poll(&mut Context::from_waker(waker))
    }

    #[test]
    fn waiters_register_once_and_are_woken_by_stop() {
        let signal = StopSignal::new();
        let count = Arc::new(Count::default());
        let waker = Waker::from(count.clone());
        let mut first = signal.stopped();
        let mut second = signal.stopped();
        for _ in 0..5 {
            assert!(poll(&mut first, &waker).is_pending());
        }
        assert!(poll(&mut second, &waker).is_pending());
        assert_eq!(signal.waiting(), 2, "repeated polls register once");
        signal.stop();
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
        assert!(poll(&mut first, &waker).is_ready());
        assert!(poll(&mut second, &waker).is_ready());
    }

    #[test]
    fn a_new_waker_replaces_the_old_registration() {
        let signal = StopSignal::new();
        let (old, new) = (Arc::new(Count::default()), Arc::new(Count::default()));
        let mut stopped = signal.stopped();
        assert!(poll(&mut stopped, &Waker::from(old.clone())).is_pending());
        assert!(poll(&mut stopped, &Waker::from(new.clone())).is_pending());
        assert_eq!(signal.waiting(), 1);
        signal.stop();
        assert_eq!(old.0.load(Ordering::SeqCst), 0);
        assert_eq!(new.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn dropping_a_waiter_unregisters_it_and_late_waiters_complete_at_once() {
        let signal = StopSignal::new();
        let waker = Waker::from(Arc::new(Count::default()));
        let mut stopped = signal.stopped();
        assert!(poll(&mut stopped, &waker).is_pending());
        drop(stopped);
        assert_eq!(signal.waiting(), 0);
        signal.stop();
        assert!(poll(&mut signal.stopped(), &waker).is_ready());
        assert_eq!(signal.waiting(), 0);
    }

    #[tokio::test]
    async fn a_spawned_task_finishes_when_stopped() {
        let signal = StopSignal::new();
        let waiting = tokio::spawn(signal.stopped());
        tokio::task::yield_now().await;
        signal.stop();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("woken")
            .expect("joined");
    }
}
