//! Threads that run password hashing at the lowest scheduling priority the kernel offers.
//!
//! A login flood must not take CPU from serving threads that have requests to answer. The
//! hashing threads put themselves under `SCHED_BATCH` at nice 19 (or `SCHED_OTHER` at nice 19
//! where that is refused), and there are fewer of them than cores, so a flood can neither
//! outrank nor outnumber the serving threads: against a busy serving thread a hashing thread
//! gets about 1.5% of a core (CFS weight 15 against 1024), and all of any idle time.
//!
//! Not `SCHED_IDLE`, which was tried first: it starves hashing outright whenever anything on
//! the machine keeps the cores busy (another process, not only the gateway), and admitted
//! logins then never finish; the login-flood test hung that way on a loaded machine.

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, OnceLock};

use thread_priority::{
    set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy, ThreadPriority,
    ThreadSchedulePolicy,
};

type Job = Box<dyn FnOnce() + Send>;

/// A fixed set of low-priority threads, started on first use.
#[derive(Debug)]
pub struct HashingPool {
    threads: usize,
    jobs: OnceLock<Mutex<Sender<Job>>>,
}

/// The pool's threads could not be started, or one ended while running the job.
#[derive(Debug, thiserror::Error)]
#[error("the password hashing threads are unavailable")]
pub struct PoolUnavailable;

/// The priority the hashing threads run at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashingPriority {
    /// `SCHED_BATCH` at nice 19: lowest weight, and never preempting a serving thread on
    /// wake-up.
    Batch,
    /// `SCHED_OTHER` at nice 19.
    Lowest,
    /// The kernel refused both: ordinary priority.
    Normal,
}

impl HashingPool {
    /// `threads` hashing threads (at least one).
    pub fn new(threads: usize) -> Self {
        HashingPool {
            threads: threads.max(1),
            jobs: OnceLock::new(),
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
    /// runtime.
    pub async fn run<R: Send + 'static>(
        &self,
        work: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, PoolUnavailable> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = answer.send(work());
        });
        let jobs = self.jobs.get_or_init(|| Mutex::new(start(self.threads)));
        jobs.lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .send(job)
            .map_err(|_| PoolUnavailable)?;
        answered.await.map_err(|_| PoolUnavailable)
    }
}

fn start(threads: usize) -> Sender<Job> {
    let (jobs, queue) = mpsc::channel::<Job>();
    let queue = Arc::new(Mutex::new(queue));
    for _ in 0..threads {
        let queue = queue.clone();
        let started = std::thread::Builder::new()
            .name("portcullis-hash".into())
            .spawn(move || {
                let priority = lower_this_thread();
                tracing::debug!(?priority, "password hashing thread started");
                work_until_closed(&queue);
            });
        if let Err(err) = started {
            tracing::error!(error = %err, "cannot start a password hashing thread");
        }
    }
    jobs
}

fn work_until_closed(queue: &Mutex<Receiver<Job>>) {
    loop {
        // The lock is held only while waiting for the next job, never while hashing.
        let next = queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .recv();
        match next {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

/// Put the calling thread at the lowest priority it may take (no privilege is needed to
/// lower one's own priority).
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

    #[tokio::test]
    async fn jobs_run_on_low_priority_threads_and_answer() {
        let pool = HashingPool::new(2);
        let answers = futures_util::future::join_all((0..8).map(|i| pool.run(move || i * 2))).await;
        let answers: Vec<_> = answers.into_iter().map(|a| a.unwrap()).collect();
        assert_eq!(answers, vec![0, 2, 4, 6, 8, 10, 12, 14]);
        let (name, policy, nice) = pool
            .run(|| {
                let name = std::thread::current().name().map(str::to_owned);
                (
                    name,
                    thread_priority::thread_schedule_policy().ok(),
                    own_nice(),
                )
            })
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("portcullis-hash"));
        assert_eq!(nice, 19);
        // Unprivileged, a thread may always lower itself on Linux.
        assert_eq!(
            policy,
            Some(ThreadSchedulePolicy::Normal(
                NormalThreadSchedulePolicy::Batch
            ))
        );
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
