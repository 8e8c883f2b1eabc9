//! The client's request body on its way in, with the two limits hyper does not enforce:
//!
//! - a **read allowance** against slow-body clients (THREATS R-03). A client may keep the
//!   gateway waiting for body bytes `body_read_timeout` in total, plus one second for every
//!   `body_min_rate` bytes it has delivered (Apache mod_reqtimeout's `body=…,MinRate=…`).
//!   Only time spent waiting *on the client* counts: while the upstream applies
//!   back-pressure the body is not polled and the clock does not run. Past the allowance the
//!   body fails with [`BodyError::TimedOut`] (408), which aborts the upstream request.
//! - a **size cap** (R-06): more than `max_body_size` bytes fails with
//!   [`BodyError::TooLarge`] (413), streamed, never buffered.
//!
//! A request without a body is never polled, so GETs pay nothing for either.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use crate::config::Limits;
use crate::error::Failure;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a request body could not be read to its end.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the client sent its request body too slowly")]
    TimedOut,
    #[error("the request body exceeds the size limit")]
    TooLarge,
    #[error("the request body ended abnormally: {0}")]
    Client(#[source] BoxError),
}

impl BodyError {
    /// Find a body failure anywhere in an error's cause chain (the upstream client wraps it).
    pub fn find_in<'e>(err: &'e (dyn std::error::Error + 'static)) -> Option<&'e BodyError> {
        let mut cause = Some(err);
        while let Some(err) = cause {
            if let Some(body) = err.downcast_ref::<BodyError>() {
                return Some(body);
            }
            cause = err.source();
        }
        None
    }
}

impl From<&BodyError> for Failure {
    fn from(err: &BodyError) -> Failure {
        match err {
            BodyError::TimedOut => Failure::RequestTimeout,
            BodyError::TooLarge => Failure::PayloadTooLarge,
            BodyError::Client(_) => Failure::BadRequest("the request body ended abnormally"),
        }
    }
}

/// The limits one body is read under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimits {
    pub read_timeout: Duration,
    /// Bytes per second that earn one more second of allowance; at least 1.
    pub min_rate: u64,
    pub max_size: Option<u64>,
}

impl BodyLimits {
    /// The limits for bodies proxied on a route with this cap (if any).
    pub fn for_route(limits: &Limits, route_max_size: Option<u64>) -> Self {
        BodyLimits {
            max_size: route_max_size.or(limits.max_body_size),
            ..Self::from_config(limits)
        }
    }

    /// The limits for proxied bodies.
    pub fn from_config(limits: &Limits) -> Self {
        BodyLimits {
            read_timeout: limits.body_read_timeout,
            min_rate: limits.body_min_rate,
            max_size: limits.max_body_size,
        }
    }

    /// Refuse up front a body whose declared length is already over the cap.
    pub fn check_declared(&self, body: &impl Body) -> Result<(), Failure> {
        match (self.max_size, body.size_hint().exact()) {
            (Some(max), Some(declared)) if declared > max => Err(Failure::PayloadTooLarge),
            _ => Ok(()),
        }
    }
}

/// A request body read under [`BodyLimits`].
#[derive(Debug)]
pub struct GuardedBody<B = Incoming> {
    inner: B,
    limits: BodyLimits,
    received: u64,
    failed: bool,
    /// The books on waiting for the client, from its first wait on. On the heap, with the
    /// frame read ahead: most bodies never need either, and the request carrying this body
    /// is moved from phase to phase and into the upstream connection.
    pacing: Option<Pin<Box<Pacing>>>,
    /// A frame read ahead by [`GuardedBody::first_frame`], handed out first.
    read_ahead: Option<Box<Frame<Bytes>>>,
}

pin_project_lite::pin_project! {
    /// Time spent waiting on the client, and the alarm for the current wait.
    #[derive(Debug)]
    struct Pacing {
        // Time already spent waiting, excluding the current wait.
        waited: Duration,
        // When the current wait began; `None` while the client owes no bytes.
        since: Option<Instant>,
        // Re-armed in place for each wait.
        #[pin]
        alarm: Sleep,
    }
}

impl<B> GuardedBody<B> {
    pub fn new(inner: B, limits: BodyLimits) -> Self {
        GuardedBody {
            inner,
            limits,
            received: 0,
            failed: false,
            pacing: None,
            read_ahead: None,
        }
    }

    /// Total waiting the client is allowed so far.
    fn allowance(&self) -> Duration {
        let earned = Duration::from_secs_f64(self.received as f64 / self.limits.min_rate as f64);
        self.limits.read_timeout.saturating_add(earned)
    }

    fn fail(&mut self, err: BodyError) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.failed = true;
        self.pacing = None;
        Poll::Ready(Some(Err(err)))
    }

    /// The client delivered something: close the books on the current wait.
    fn stop_waiting(&mut self) {
        if let Some(pacing) = &mut self.pacing {
            let pacing = pacing.as_mut().project();
            if let Some(since) = pacing.since.take() {
                *pacing.waited += since.elapsed();
            }
        }
    }

    /// The client owes bytes as of `now`: the alarm for when its allowance runs out.
    fn alarm(&mut self, now: Instant) -> Pin<&mut Sleep> {
        let allowance = self.allowance();
        let pacing = self.pacing.get_or_insert_with(|| {
            Box::pin(Pacing {
                waited: Duration::ZERO,
                since: None,
                alarm: tokio::time::sleep_until(now + allowance),
            })
        });
        let pacing = pacing.as_mut().project();
        let since = *pacing.since.get_or_insert(now);
        let deadline = since + allowance.saturating_sub(*pacing.waited);
        let mut alarm = pacing.alarm;
        if alarm.deadline() != deadline {
            alarm.as_mut().reset(deadline);
        }
        alarm
    }
}

impl<B> GuardedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    /// Wait for the body's first frame (under the same limits) and keep it to hand out
    /// first. HTTP/2 checks a declared `content-length` only as DATA arrives, so a request
    /// whose first DATA frame overruns it is refused here, before an upstream hears of it.
    pub async fn first_frame(&mut self) -> Result<(), BodyError> {
        match std::future::poll_fn(|cx| Pin::new(&mut *self).poll_frame(cx)).await {
            Some(Ok(frame)) => self.read_ahead = Some(Box::new(frame)),
            Some(Err(err)) => return Err(err),
            None => {}
        }
        Ok(())
    }
}

impl<B> Body for GuardedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        if this.failed {
            return Poll::Ready(None);
        }
        if let Some(frame) = this.read_ahead.take() {
            return Poll::Ready(Some(Ok(*frame)));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.stop_waiting();
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                    if this.limits.max_size.is_some_and(|max| this.received > max) {
                        return this.fail(BodyError::TooLarge);
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => this.fail(BodyError::Client(err.into())),
            Poll::Ready(None) => {
                this.pacing = None;
                Poll::Ready(None)
            }
            Poll::Pending => match this.alarm(Instant::now()).poll(cx) {
                Poll::Ready(()) => this.fail(BodyError::TimedOut),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed || (self.read_ahead.is_none() && self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let inner = self.inner.size_hint();
        let ahead = match self.read_ahead.as_deref().and_then(Frame::data_ref) {
            Some(data) => data.len() as u64,
            None => return inner,
        };
        // The inner hint counts only what is still to come; the upstream's framing must
        // cover the frame read ahead too.
        let mut hint = SizeHint::new();
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper.saturating_add(ahead));
        }
        hint.set_lower(inner.lower().saturating_add(ahead));
        hint
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http_body_util::BodyExt;
    use tokio::sync::mpsc;

    use super::*;

    /// A body whose chunks a test hands over one at a time.
    struct ChannelBody(mpsc::UnboundedReceiver<Bytes>);

    impl Body for ChannelBody {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            self.get_mut()
                .0
                .poll_recv(cx)
                .map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
        }
    }

    fn guarded(max_size: Option<u64>) -> (mpsc::UnboundedSender<Bytes>, GuardedBody<ChannelBody>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let limits = BodyLimits {
            read_timeout: Duration::from_secs(10),
            min_rate: 100,
            max_size,
        };
        (tx, GuardedBody::new(ChannelBody(rx), limits))
    }

    async fn next(body: &mut GuardedBody<ChannelBody>) -> Option<Result<Bytes, BodyError>> {
        body.frame()
            .await
            .map(|frame| frame.map(|f| f.into_data().unwrap_or_default()))
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_times_out_after_the_allowance() {
        let (tx, mut body) = guarded(None);
        tx.send(Bytes::from_static(&[7; 50])).unwrap();
        let started = Instant::now();
        assert!(matches!(next(&mut body).await, Some(Ok(b)) if b.len() == 50));
        // 10 s plus 0.5 s earned by 50 bytes at 100 B/s.
        assert!(matches!(
            next(&mut body).await,
            Some(Err(BodyError::TimedOut))
        ));
        assert_eq!(started.elapsed(), Duration::from_millis(10_500));
        assert!(next(&mut body).await.is_none(), "a failed body ends");
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_adds_up_across_gaps() {
        let (tx, mut body) = guarded(None);
        let sender = tokio::spawn(async move {
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_secs(4)).await;
                if tx.send(Bytes::from_static(b"x")).is_err() {
                    return;
                }
            }
        });
        let started = Instant::now();
        let mut delivered = 0;
        let outcome = loop {
            match next(&mut body).await {
                Some(Ok(_)) => delivered += 1,
                other => break other,
            }
        };
        assert!(matches!(outcome, Some(Err(BodyError::TimedOut))));
        // Two 4 s gaps pass; the third wait runs out at 10.02 s in total (2 bytes earned 20 ms).
        assert_eq!(delivered, 2);
        assert_eq!(started.elapsed(), Duration::from_millis(10_020));
        sender.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn time_the_body_is_not_polled_does_not_count() {
        let (tx, mut body) = guarded(None);
        tx.send(Bytes::from_static(b"a")).unwrap();
        assert!(next(&mut body).await.unwrap().is_ok());
        // The upstream applies back-pressure for a minute; the client's bytes are waiting.
        tokio::time::sleep(Duration::from_secs(60)).await;
        tx.send(Bytes::from_static(b"b")).unwrap();
        assert!(next(&mut body).await.unwrap().is_ok());
        drop(tx);
        assert!(next(&mut body).await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_over_the_cap_fails_when_it_crosses_it() {
        let (tx, mut body) = guarded(Some(10));
        tx.send(Bytes::from_static(&[1; 6])).unwrap();
        tx.send(Bytes::from_static(&[1; 4])).unwrap();
        tx.send(Bytes::from_static(&[1; 1])).unwrap();
        assert!(next(&mut body).await.unwrap().is_ok());
        assert!(next(&mut body).await.unwrap().is_ok());
        assert!(matches!(
            next(&mut body).await,
            Some(Err(BodyError::TooLarge))
        ));
    }

    /// Stands in for the client errors that carry a body failure as their cause.
    #[derive(Debug, thiserror::Error)]
    #[error("request failed")]
    struct Wrapper(#[source] BodyError);

    #[test]
    fn body_errors_are_found_through_wrapping_errors() {
        let wrapped = Wrapper(BodyError::TimedOut);
        assert!(matches!(
            BodyError::find_in(&wrapped),
            Some(BodyError::TimedOut)
        ));
        let unrelated = std::io::Error::other("reset");
        assert!(BodyError::find_in(&unrelated).is_none());
    }

    #[tokio::test]
    async fn a_frame_read_ahead_is_handed_out_first_and_still_counted_in_the_size() {
        let inner = http_body_util::Full::new(Bytes::from_static(b"hello"));
        let limits = BodyLimits {
            read_timeout: Duration::from_secs(1),
            min_rate: 1,
            max_size: None,
        };
        let mut body = GuardedBody::new(inner, limits);
        assert!(body.first_frame().await.is_ok());
        assert_eq!(body.size_hint().exact(), Some(5));
        assert!(!body.is_end_stream());
        let collected = body.collect().await.map(|c| c.to_bytes());
        assert_eq!(collected.ok().as_deref(), Some(&b"hello"[..]));
    }
}
