//! Threads that run password hashing only on CPU time nobody else wants, with a standby that
//! keeps logins moving when there is none.
//!
//! A login flood must not take CPU from serving threads that have requests to answer. The
//! hashing threads run under `SCHED_IDLE`: a serving thread that wakes up preempts them at
//! once, so a flood adds no scheduling delay to proxied requests. (Under `SCHED_BATCH` at
//! nice 19, tried before, a woken serving thread still waited out the hashing thread's time
//! slice: proxied p99 went from 0.47 to 1.6 ms under a flood, against 0.86 ms under
//! `SCHED_IDLE`.)
//!
//! `SCHED_IDLE` alone starves hashing whenever something keeps every core busy (another
//! process, not only the gateway): admitted logins then never finish. So the answer is not
//! waited for forever: a job that has not answered within its patience (four times the
//! quickest job seen, at least 2 s) is run again by one standby thread at `SCHED_BATCH`
//! nice 19, which still gets its small share of a busy core, and whichever run ends first
//! answers. A thread that has entered `SCHED_IDLE` cannot leave it without privilege
//! (`RLIMIT_NICE`), hence a second thread rather than a promotion.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use thread_priority::{
    set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy, ThreadPriority,
    ThreadSchedulePolicy,
};

/// The least a job is given before the standby runs it too. Long enough that a saturated
/// moment passes without the standby (under the benchmark's flood with 500 ms, the standby
/// ran and proxied p99 rose to 2.3-3.3x; with 2 s it never ran: 1.65-1.9x).
const PATIENCE_FLOOR: Duration = Duration::from_secs(2);
/// Patience in multiples of the quickest job seen (a starved job runs orders slower).
const PATIENCE_FACTOR: u32 = 4;

/// Idle-priority hashing threads plus one standby, started on first use.
#[derive(Debug)]
pub struct HashingPool {
    threads: usize,
    started: OnceLock<Arc<Queues>>,
}

/// The pool's threads could not be started, or every run of the job ended without an answer.
#[derive(Debug, thiserror::Error)]
#[error("the password hashing threads are unavailable")]
pub struct PoolUnavailable;

/// The priority a hashing thread runs at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashingPriority {
    /// `SCHED_IDLE`: only CPU time no other thread wants.
    Idle,
    /// `SCHED_BATCH` at nice 19: lowest weight, and never preempting on wake-up.
    Batch,
    /// `SCHED_OTHER` at nice 19.
    Lowest,
    /// The kernel refused all of those: ordinary priority.
    Normal,
}

/// Thread names, within the 15 bytes Linux keeps (`/proc/PID/task/TID/comm`, `top -H`).
const IDLE_THREAD: &str = "pc-hash-idle";
const STANDBY_THREAD: &str = "pc-hash-standby";

/// One job, runnable by an idle thread and the standby both; the first run to end answers.
type Job = Arc<dyn Fn() + Send + Sync>;

#[derive(Default)]
struct Queues {
    idle: Queue,
    standby: Queue,
    /// Wall time of the quickest run so far, in microseconds (0: none yet).
    quickest_micros: AtomicU64,
}

impl std::fmt::Debug for Queues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queues").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Queue {
    jobs: Mutex<VecDeque<Job>>,
    ready: Condvar,
}

impl Queue {
    fn push(&self, job: Job) {
        self.jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(job);
        self.ready.notify_one();
    }

    /// The lock is held only while waiting for a job, never while one runs.
    fn next(&self) -> Job {
        let mut jobs = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(job) = jobs.pop_front() {
                return job;
            }
            jobs = self
                .ready
                .wait(jobs)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

impl Queues {
    fn patience(&self) -> Duration {
        match self.quickest_micros.load(Ordering::Relaxed) {
            0 => PATIENCE_FLOOR,
            quickest => (Duration::from_micros(quickest) * PATIENCE_FACTOR).max(PATIENCE_FLOOR),
        }
    }

    fn record_run(&self, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
        let mut seen = self.quickest_micros.load(Ordering::Relaxed);
        while seen == 0 || micros < seen {
            match self.quickest_micros.compare_exchange_weak(
                seen,
                micros,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => seen = now,
            }
        }
    }
}

impl HashingPool {
    /// `threads` idle-priority hashing threads (at least one), plus the standby.
    pub fn new(threads: usize) -> Self {
        HashingPool {
            threads: threads.max(1),
            started: OnceLock::new(),
        }
    }

    /// One thread fewer than the cores (at least one): a flood never occupies every core.
    pub fn threads_for(cores: usize) -> usize {
        cores.saturating_sub(1).max(1)
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Run `work` on a hashing thread and wait for its answer without blocking the caller's
    /// runtime. `work` may run twice (see the module comment), so it must be a pure function
    /// of what it captured; the first answer is returned. A job whose caller has gone away
    /// before it reached a thread is not run at all.
    pub async fn run<R: Send + 'static>(
        &self,
        work: impl Fn() -> R + Send + Sync + 'static,
    ) -> Result<R, PoolUnavailable> {
        let queues = self.started.get_or_init(|| start(self.threads));
        let (answer, mut answered) = tokio::sync::oneshot::channel();
        let answer = Mutex::new(Some(answer));
        let timing = queues.clone();
        let job: Job = Arc::new(move || {
            // Nothing to do if the other run answered before this one began, or if nobody
            // waits any more (the client went away while the job was queued).
            let wanted = answer
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_ref()
                .is_some_and(|answer| !answer.is_closed());
            if !wanted {
                return;
            }
            let began = Instant::now();
            let verdict = work();
            timing.record_run(began.elapsed());
            if let Some(answer) = answer.lock().unwrap_or_else(PoisonError::into_inner).take() {
                let _ = answer.send(verdict);
            }
        });
        queues.idle.push(job.clone());
        if let Ok(result) = tokio::time::timeout(queues.patience(), &mut answered).await {
            return result.map_err(|_| PoolUnavailable);
        }
        queues.standby.push(job);
        answered.await.map_err(|_| PoolUnavailable)
    }
}

fn start(threads: usize) -> Arc<Queues> {
    let queues = Arc::new(Queues::default());
    let idle = (0..threads).map(|_| (IDLE_THREAD, lower_to_idle as fn() -> _));
    let standby = std::iter::once((STANDBY_THREAD, lower_this_thread as fn() -> _));
    for (index, (name, lower)) in idle.chain(standby).enumerate() {
        let queues = queues.clone();
        let started = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let priority = lower();
                tracing::debug!(?priority, "password hashing thread started");
                let queue = if index < threads {
                    &queues.idle
                } else {
                    &queues.standby
                };
                loop {
                    queue.next()();
                }
            });
        if let Err(err) = started {
            tracing::error!(error = %err, "cannot start a password hashing thread");
        }
    }
    queues
}

/// `SCHED_IDLE`, or the lowest priority [`lower_this_thread`] finds where that is refused.
pub fn lower_to_idle() -> HashingPriority {
    let idle = set_thread_priority_and_policy(
        thread_native_id(),
        ThreadPriority::Min,
        ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
    );
    match idle {
        Ok(()) => HashingPriority::Idle,
        Err(_) => lower_this_thread(),
    }
}

/// Put the calling thread at the lowest weight it may take short of `SCHED_IDLE` (no
/// privilege is needed to lower one's own priority).
pub fn lower_this_thread() -> HashingPriority {
    let lower = |policy| {
        set_thread_priority_and_policy(
            thread_native_id(),
            ThreadPriority::Min,
            ThreadSchedulePolicy::Normal(policy),
        )
        .is_ok()
    };
    if lower(NormalThreadSchedulePolicy::Batch) {
        HashingPriority::Batch
    } else if lower(NormalThreadSchedulePolicy::Other) {
        HashingPriority::Lowest
    } else {
        HashingPriority::Normal
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn this_thread() -> (Option<String>, Option<ThreadSchedulePolicy>, i32) {
        let name = std::thread::current().name().map(str::to_owned);
        (
            name,
            thread_priority::thread_schedule_policy().ok(),
            own_nice(),
        )
    }

    #[tokio::test]
    async fn jobs_run_on_idle_priority_threads_and_answer() {
        let pool = HashingPool::new(2);
        let answers = futures_util::future::join_all((0..8).map(|i| pool.run(move || i * 2))).await;
        let answers: Vec<_> = answers.into_iter().map(|a| a.unwrap()).collect();
        assert_eq!(answers, vec![0, 2, 4, 6, 8, 10, 12, 14]);
        let (name, policy, _) = pool.run(this_thread).await.unwrap();
        assert_eq!(name.as_deref(), Some(IDLE_THREAD));
        // Unprivileged, a thread may always lower itself on Linux.
        assert_eq!(
            policy,
            Some(ThreadSchedulePolicy::Normal(
                NormalThreadSchedulePolicy::Idle
            ))
        );
    }

    /// What a hashing thread starved by a busy machine looks like from outside: its run does
    /// not end. The standby runs the job again and answers, at nice 19 rather than idle.
    #[tokio::test]
    async fn a_job_starved_on_an_idle_thread_is_answered_by_the_standby() {
        let pool = HashingPool::new(1);
        let (release, starved) = std::sync::mpsc::channel::<()>();
        let starved = Mutex::new(starved);
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        let began = Instant::now();
        let (name, policy, nice) = pool
            .run(move || {
                if counted.fetch_add(1, Ordering::SeqCst) == 0 {
                    // The first run, on the idle thread, makes no progress until released.
                    let _ = starved.lock().unwrap().recv();
                }
                this_thread()
            })
            .await
            .unwrap();
        assert!(
            began.elapsed() >= PATIENCE_FLOOR,
            "answered before its patience ran out"
        );
        assert_eq!(name.as_deref(), Some(STANDBY_THREAD));
        assert_eq!(
            policy,
            Some(ThreadSchedulePolicy::Normal(
                NormalThreadSchedulePolicy::Batch
            ))
        );
        assert_eq!(nice, 19);
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        // The starved run ends later and must not answer again or disturb the next job.
        release.send(()).unwrap();
        assert_eq!(pool.run(|| 7).await.unwrap(), 7);
    }

    #[tokio::test]
    async fn a_job_that_answers_in_time_runs_once() {
        let pool = HashingPool::new(1);
        let runs = Arc::new(AtomicUsize::new(0));
        for _ in 0..5 {
            let counted = runs.clone();
            pool.run(move || {
                counted.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(20));
            })
            .await
            .unwrap();
        }
        tokio::time::sleep(PATIENCE_FLOOR + Duration::from_millis(100)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 5);
    }

    #[tokio::test]
    async fn a_job_nobody_waits_for_any_more_is_not_run() {
        let pool = HashingPool::new(1);
        let (release, held) = std::sync::mpsc::channel::<()>();
        let held = Mutex::new(held);
        let mut busy = std::pin::pin!(pool.run(move || {
            let _ = held.lock().unwrap().recv();
        }));
        // Polled once, so the job is queued and takes the only idle thread.
        tokio::select! {
            _ = &mut busy => panic!("answered while held"),
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        let abandoned = pool.run(move || {
            counted.fetch_add(1, Ordering::SeqCst);
        });
        // Queued behind it; then its caller leaves.
        tokio::select! {
            _ = abandoned => panic!("answered while the only thread was held"),
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
        release.send(()).unwrap();
        busy.await.unwrap();
        assert_eq!(pool.run(|| 1).await.unwrap(), 1);
        assert_eq!(
            runs.load(Ordering::SeqCst),
            0,
            "ran for a caller that had left"
        );
    }

    #[test]
    fn patience_is_four_quickest_runs_but_never_below_the_floor() {
        let queues = Queues::default();
        assert_eq!(queues.patience(), PATIENCE_FLOOR);
        queues.record_run(Duration::from_millis(700));
        assert_eq!(queues.patience(), Duration::from_millis(2800));
        queues.record_run(Duration::from_millis(900));
        assert_eq!(queues.patience(), Duration::from_millis(2800));
        queues.record_run(Duration::from_millis(10));
        assert_eq!(queues.patience(), PATIENCE_FLOOR);
    }

    /// The calling thread's nice value (field 19 of its `stat`).
    fn own_nice() -> i32 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        after_name
            .split_whitespace()
            .nth(16)
            .unwrap()
            .parse()
            .unwrap()
    }

    #[test]
    fn fewer_hashing_threads_than_cores() {
        assert_eq!(HashingPool::threads_for(1), 1);
        assert_eq!(HashingPool::threads_for(2), 1);
        assert_eq!(HashingPool::threads_for(16), 15);
    }
}
