//! Per-thread batching of log lines on the serving threads, in the spirit of nginx's
//! `access_log ... buffer=32k flush=1s`.
//!
//! Every request writes one access-log line. Handing each line to the log writer thread on
//! its own costs a channel send and often a thread wake-up per request; instead each serving
//! thread appends lines to its own buffer and hands over the whole buffer when it is full, on
//! a short timer, and when the thread ends. Other threads write through directly.

use std::cell::RefCell;
use std::io::{self, Write};
use std::sync::OnceLock;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

use crate::config::LogFormat;
use crate::ops::log_sink::LogSink;

/// Hand the buffer over once it holds this much.
const FLUSH_BYTES: usize = 32 * 1024;
/// Longest a line waits in a quiet thread's buffer.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(250);

static SINK: OnceLock<(LogSink, LogFormat)> = OnceLock::new();

thread_local! {
    /// `Some` on threads that batch (serving threads, once a sink exists).
    static BUFFER: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
}

/// The `MakeWriter` installed in the tracing subscriber.
#[derive(Debug, Clone)]
pub struct BatchingWriter;

impl BatchingWriter {
    /// Route log output to `sink` (the non-blocking writer thread); `format` is what the
    /// subscriber renders, so hand-rendered lines ([`write_line`]) can match it.
    pub fn new(sink: LogSink, format: LogFormat) -> Self {
        let _ = SINK.set((sink, format));
        BatchingWriter
    }
}

impl<'a> MakeWriter<'a> for BatchingWriter {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        LineWriter
    }
}

/// Receives one formatted log line per `write_all`.
#[derive(Debug)]
pub struct LineWriter;

impl Write for LineWriter {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let buffered = BUFFER.with(|buffer| match buffer.borrow_mut().as_mut() {
            Some(bytes) => {
                bytes.extend_from_slice(line);
                if bytes.len() >= FLUSH_BYTES {
                    hand_over(bytes);
                }
                true
            }
            None => false,
        });
        if !buffered {
            if let Some((sink, _)) = SINK.get() {
                sink.submit(line.to_vec());
            }
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Give the lines in `bytes` to the writer thread, leaving `bytes` empty and as large as
/// before. A full buffer changes hands as it is and this thread starts a new one; a partly
/// filled one (a timed flush) is copied, so what waits for the writer is never mostly spare
/// capacity.
fn hand_over(bytes: &mut Vec<u8>) {
    if bytes.is_empty() {
        return;
    }
    let batch = if bytes.len() >= FLUSH_BYTES {
        std::mem::replace(bytes, Vec::with_capacity(bytes.capacity()))
    } else {
        let batch = bytes.to_vec();
        bytes.clear();
        batch
    };
    if let Some((sink, _)) = SINK.get() {
        sink.submit(batch);
    }
}

/// Start batching on the current thread (a no-op when no sink is installed, e.g. when the
/// library is used without the binary's logging setup).
pub fn batch_this_thread() {
    if SINK.get().is_some() {
        BUFFER.with(|buffer| *buffer.borrow_mut() = Some(Vec::with_capacity(FLUSH_BYTES + 4096)));
    }
}

/// Hand this thread's buffered lines to the writer thread now.
pub fn flush_this_thread() {
    BUFFER.with(|buffer| {
        if let Some(bytes) = buffer.borrow_mut().as_mut() {
            hand_over(bytes);
        }
    });
}

/// Render a line straight into this thread's buffer (or hand it over directly on other
/// threads) in the configured format. `false` when no sink is installed (library use), so the
/// caller can fall back to a tracing event.
pub fn write_line(render: impl FnOnce(&mut Vec<u8>, LogFormat)) -> bool {
    let Some((_, format)) = SINK.get() else {
        return false;
    };
    let batched = BUFFER.with(|buffer| match buffer.borrow_mut().as_mut() {
        Some(bytes) => {
            render(bytes, *format);
            if bytes.len() >= FLUSH_BYTES {
                hand_over(bytes);
            }
            None
        }
        None => Some(render),
    });
    if let Some(render) = batched {
        let mut line = Vec::with_capacity(256);
        render(&mut line, *format);
        hand_over(&mut line);
    }
    true
}
