//! Operating the gateway: Prometheus [`metrics`] (with [`request_stats`] sharded per
//! thread), the [`access_log`] line, and the log path from serving threads to one writer
//! ([`log_buffer`] batches per thread, [`log_sink`] bounds the queue in bytes), and a
//! request's [`span`] for OTLP export (`otlp`, behind the cargo feature of that name).
//!
//! Records what happened; never decides anything. Must never import `pipeline` or `state`.

pub mod access_log;
pub mod log_buffer;
pub mod log_sink;
pub mod log_text;
pub mod metrics;
#[cfg(feature = "otlp")]
pub mod otlp;
pub mod request_stats;
pub mod span;
