//! The export thread: takes spans off the queue in batches (`max_batch` spans, or whatever
//! arrived within `flush_interval` of a batch's first span) and POSTs each batch to the
//! collector under `timeout`. A batch the collector does not take is dropped and counted:
//! spans are never retried, so an outage cannot pile work up behind it.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST};
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use super::{json, SpanCounters, SpanRecord, EXPORT_FAILED};
use crate::config::OtlpSettings;

/// Why a batch did not reach the collector.
#[derive(Debug, thiserror::Error)]
enum ExportError {
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("bad request: {0}")]
    Request(#[from] http::Error),
    #[error("the collector answered {0}")]
    Status(http::StatusCode),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// Start the export thread; it ends when every sender of `spans` is gone.
pub(super) fn spawn(
    settings: OtlpSettings,
    spans: Receiver<SpanRecord>,
    counters: SpanCounters,
) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("portcullis-otlp".into())
        .spawn(move || {
            while let Some(batch) = next_batch(&spans, &settings) {
                let body = json::export_request(&settings.service_name, &batch);
                match runtime.block_on(post(&settings, body)) {
                    Ok(()) => {
                        counters.exported.inc_by(batch.len() as u64);
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, spans = batch.len(), endpoint = %settings.endpoint, "OTLP export failed; spans dropped");
                        counters.dropped(EXPORT_FAILED, batch.len());
                    }
                }
            }
        })?;
    Ok(())
}

/// Wait for a span, then gather more until the batch is full or `flush_interval` has passed
/// since the first. `None` once the queue is closed and empty.
fn next_batch(spans: &Receiver<SpanRecord>, settings: &OtlpSettings) -> Option<Vec<SpanRecord>> {
    let first = spans.recv().ok()?;
    let deadline = Instant::now() + settings.flush_interval;
    let mut batch = Vec::with_capacity(settings.max_batch.min(64));
    batch.push(first);
    while batch.len() < settings.max_batch {
        let left = deadline.saturating_duration_since(Instant::now());
        match spans.recv_timeout(left) {
            Ok(span) => batch.push(span),
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
        }
    }
    Some(batch)
}

/// One POST on a new connection (batches leave at most about once per `flush_interval`).
async fn post(settings: &OtlpSettings, body: Vec<u8>) -> Result<(), ExportError> {
    tokio::time::timeout(settings.timeout, send(settings, body))
        .await
        .map_err(|_| ExportError::Timeout(settings.timeout))?
}

async fn send(settings: &OtlpSettings, body: Vec<u8>) -> Result<(), ExportError> {
    let endpoint = &settings.endpoint;
    let authority = endpoint.authority().map_or("", |a| a.as_str());
    let address = match endpoint.port_u16() {
        Some(_) => authority.to_owned(),
        None => format!("{authority}:80"),
    };
    let stream = tokio::net::TcpStream::connect(&address)
        .await
        .map_err(ExportError::Connect)?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let path = endpoint.path_and_query().map_or("/", |p| p.as_str());
    let request = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(HOST, authority)
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    // Read the answer to its end so the connection closes cleanly.
    let _ = response.into_body().collect().await;
    if status.is_success() {
        Ok(())
    } else {
        Err(ExportError::Status(status))
    }
}
