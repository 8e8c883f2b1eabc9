//! A write timeout for client connections (THREATS R-04, "slow read"): a client that stops
//! reading fills its receive window, our writes stall, and without a deadline it would hold
//! the connection, its upstream connection and their buffers for as long as it liked.
//!
//! Like nginx's `send_timeout`, the clock runs only while a write is stalled and restarts at
//! every bit of progress, so a slow but live reader is never cut off. A write stalled longer
//! than the timeout fails with `TimedOut`, which ends the connection.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// `inner`, whose writes may not stall for longer than `timeout`.
#[derive(Debug)]
pub struct WriteDeadline<S> {
    inner: S,
    timeout: Duration,
    /// Armed while a write is stalled; allocated on the first stall only.
    alarm: Option<Pin<Box<Sleep>>>,
    stalled: bool,
}

impl<S> WriteDeadline<S> {
    pub fn new(inner: S, timeout: Duration) -> Self {
        WriteDeadline {
            inner,
            timeout,
            alarm: None,
            stalled: false,
        }
    }

    /// Pass a write-side poll through, watching for a stall.
    fn guard<T>(
        &mut self,
        cx: &mut Context<'_>,
        op: impl FnOnce(Pin<&mut S>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>>
    where
        S: Unpin,
    {
        match op(Pin::new(&mut self.inner), cx) {
            Poll::Ready(result) => {
                self.stalled = false;
                Poll::Ready(result)
            }
            Poll::Pending => {
                if !self.stalled {
                    self.stalled = true;
                    let deadline = Instant::now() + self.timeout;
                    match &mut self.alarm {
                        Some(alarm) => alarm.as_mut().reset(deadline),
                        None => self.alarm = Some(Box::pin(tokio::time::sleep_until(deadline))),
                    }
                }
                let Some(alarm) = &mut self.alarm else {
                    return Poll::Pending;
                };
                match alarm.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client stopped reading",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .guard(cx, |inner, cx| inner.poll_write(cx, data))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().guard(cx, |inner, cx| inner.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut()
            .guard(cx, |inner, cx| inner.poll_shutdown(cx))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .guard(cx, |inner, cx| inner.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_reader_that_stops_reading_is_cut_off() {
        let (ours, theirs) = tokio::io::duplex(1024);
        let mut guarded = WriteDeadline::new(ours, Duration::from_secs(5));
        let started = Instant::now();
        let err = guarded.write_all(&[0; 4096]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        drop(theirs);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_but_live_reader_is_not() {
        let (ours, mut theirs) = tokio::io::duplex(1024);
        let reader = tokio::spawn(async move {
            let mut buf = [0; 512];
            let mut total = 0;
            while total < 8192 {
                // Each read comes 4 s after the last: slower than the buffer fills, but
                // always inside the 5 s deadline.
                tokio::time::sleep(Duration::from_secs(4)).await;
                total += tokio::io::AsyncReadExt::read(&mut theirs, &mut buf)
                    .await
                    .unwrap();
            }
        });
        let mut guarded = WriteDeadline::new(ours, Duration::from_secs(5));
        guarded.write_all(&[0; 8192]).await.unwrap();
        reader.await.unwrap();
    }
}
