//! The log writer thread. Serving threads hand it whole batches of rendered lines
//! ([`crate::ops::log_buffer`]) and never wait on stderr.
//!
//! The queue between them is bounded in bytes, not in messages: a batch can be one line or
//! 32 KiB of them, so a message count bounds nothing. When the writer falls behind (a
//! blocked pipe, a slow terminal) and the queue is full, new batches are dropped and counted,
//! and the writer says how much was lost once it catches up, as nginx does when its log
//! buffer cannot be written.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// Bytes that may wait for the writer.
pub const DEFAULT_LIMIT_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, Default)]
struct Pending {
    batches: VecDeque<Vec<u8>>,
    bytes: usize,
    dropped_bytes: u64,
    closed: bool,
}

#[derive(Debug, Default)]
struct Queue {
    pending: Mutex<Pending>,
    ready: Condvar,
}

/// A handle serving threads write through; cheap to clone.
#[derive(Debug, Clone)]
pub struct LogSink {
    queue: Arc<Queue>,
    limit_bytes: usize,
}

/// Stops the writer thread when dropped, after it has written everything queued.
#[derive(Debug)]
pub struct LogSinkGuard {
    queue: Arc<Queue>,
    writer: Option<JoinHandle<()>>,
}

impl LogSink {
    /// Start a writer thread writing to `out`, with at most `limit_bytes` queued.
    pub fn start(
        limit_bytes: usize,
        out: impl Write + Send + 'static,
    ) -> io::Result<(LogSink, LogSinkGuard)> {
        let queue = Arc::new(Queue::default());
        let writer = {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name("portcullis-log".into())
                .spawn(move || write_until_closed(&queue, out))?
        };
        Ok((
            LogSink {
                queue: queue.clone(),
                limit_bytes,
            },
            LogSinkGuard {
                queue,
                writer: Some(writer),
            },
        ))
    }

    /// Queue `bytes` for the writer; `false` when they were dropped because the queue is full.
    /// Taken by value: a serving thread's whole batch changes hands without a copy.
    pub fn submit(&self, bytes: Vec<u8>) -> bool {
        let Ok(mut pending) = self.queue.pending.lock() else {
            return false;
        };
        if pending.closed || pending.bytes + bytes.len() > self.limit_bytes {
            pending.dropped_bytes += bytes.len() as u64;
            return false;
        }
        pending.bytes += bytes.len();
        pending.batches.push_back(bytes);
        drop(pending);
        self.queue.ready.notify_one();
        true
    }

    /// Bytes waiting for the writer (for tests and diagnostics).
    pub fn queued_bytes(&self) -> usize {
        self.queue.pending.lock().map_or(0, |p| p.bytes)
    }
}

impl Write for LogSink {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        // Dropping under overload is the policy, not an error for the caller.
        self.submit(bytes.to_vec());
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn write_until_closed(queue: &Queue, mut out: impl Write) {
    loop {
        let (batches, dropped, closed) = {
            let Ok(mut pending) = queue.pending.lock() else {
                return;
            };
            while pending.batches.is_empty() && pending.dropped_bytes == 0 && !pending.closed {
                pending = match queue.ready.wait(pending) {
                    Ok(pending) => pending,
                    Err(_) => return,
                };
            }
            pending.bytes = 0;
            (
                std::mem::take(&mut pending.batches),
                std::mem::take(&mut pending.dropped_bytes),
                pending.closed,
            )
        };
        // One write per batch and one flush per drain: under load many lines share a syscall.
        for batch in &batches {
            let _ = out.write_all(batch);
        }
        if dropped > 0 {
            let _ = writeln!(
                out,
                "portcullis: {dropped} bytes of log output dropped: the log writer could not keep up"
            );
        }
        let _ = out.flush();
        if closed {
            return;
        }
    }
}

impl Drop for LogSinkGuard {
    fn drop(&mut self) {
        if let Ok(mut pending) = self.queue.pending.lock() {
            pending.closed = true;
        }
        self.queue.ready.notify_all();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    /// Output the test can read afterwards.
    #[derive(Clone, Default)]
    struct SharedOut(Arc<Mutex<Vec<u8>>>);

    impl SharedOut {
        fn bytes(&self) -> Vec<u8> {
            self.0.lock().map(|out| out.clone()).unwrap_or_default()
        }
    }

    impl Write for SharedOut {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            let mut out = self.0.lock().map_err(|_| io::ErrorKind::Other)?;
            out.extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A writer that blocks until told to go on, like a stalled pipe.
    struct Stalled {
        go: mpsc::Receiver<()>,
        out: SharedOut,
    }

    impl Write for Stalled {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            let _ = self.go.recv_timeout(Duration::from_secs(10));
            self.out.write(bytes)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_writer_bounds_the_queue_in_bytes_and_reports_what_was_dropped() {
        let (go, wait) = mpsc::channel();
        let out = SharedOut::default();
        let stalled = Stalled {
            go: wait,
            out: out.clone(),
        };
        let (sink, guard) = LogSink::start(64 * 1024, stalled).expect("start");
        let batch = vec![b'x'; 32 * 1024];
        let accepted = (0..1000).filter(|_| sink.submit(batch.clone())).count();
        // The writer may already hold what it took from the queue (at most one queue's worth:
        // on a busy machine it wakes late and takes two batches at once); the rest wait in
        // the queue, within its bound.
        assert!(accepted <= 4, "{accepted} batches of 32 KiB accepted");
        assert!(sink.queued_bytes() <= 64 * 1024);
        // Let every write through from now on.
        for _ in 0..16 {
            let _ = go.send(());
        }
        drop(guard);
        let out = out.bytes();
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.contains("bytes of log output dropped"),
            "{}",
            text.len()
        );
        assert_eq!(
            out.iter().filter(|b| **b == b'x').count(),
            accepted * batch.len()
        );
    }

    #[test]
    fn everything_queued_is_written_before_the_guard_returns() {
        let out = SharedOut::default();
        let (mut sink, guard) = LogSink::start(1024, out.clone()).expect("start");
        for i in 0..100 {
            writeln!(sink, "line {i}").expect("write");
        }
        drop(guard);
        let text = String::from_utf8(out.bytes()).expect("utf8");
        assert!(text.starts_with("line 0\n"));
        assert!(text.ends_with("line 99\n"), "{text}");
    }
}
