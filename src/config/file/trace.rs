//! The serde mirror of `trace:`: exporting one span per request over OTLP. Part of
//! [`super`], the only module that knows YAML.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;

/// `trace:` — what the gateway does with the trace context beyond propagating it.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TraceFile {
    /// Export one span per request to an OpenTelemetry collector (OTLP/HTTP, JSON). Needs a
    /// build with the `otlp` cargo feature.
    #[schemars(with = "Option<OtlpFile>")]
    pub otlp: Option<Spanned<OtlpFile>>,
}

/// `trace.otlp:` — where spans go and how many may wait.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OtlpFile {
    /// The collector's traces URL, `http://host:port/path`, used as given (e.g.
    /// `http://127.0.0.1:4318/v1/traces`; `${VAR}` allowed).
    #[schemars(with = "String")]
    pub endpoint: Spanned<String>,
    /// `service.name` of the exported spans (default `portcullis`).
    #[schemars(with = "Option<String>")]
    pub service_name: Option<Spanned<String>>,
    /// Share of new traces exported, 0.0 to 1.0 (default 1.0); a caller's `traceparent`
    /// decides by its sampled flag instead.
    #[schemars(with = "Option<f64>")]
    pub sample_ratio: Option<Spanned<f64>>,
    /// Deadline for one export request (duration, default 10s).
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Spanned<String>>,
    /// Most spans sent in one export request (default 512).
    #[schemars(with = "Option<u64>")]
    pub max_batch: Option<Spanned<u64>>,
    /// Most spans waiting to be sent; beyond it new spans are dropped and counted
    /// (default 2048).
    #[schemars(with = "Option<u64>")]
    pub max_queue: Option<Spanned<u64>>,
    /// Longest a span waits for its batch to fill before it is sent (duration, default 1s).
    #[schemars(with = "Option<String>")]
    pub flush_interval: Option<Spanned<String>>,
}
