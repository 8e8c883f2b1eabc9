//! The `trace:` part of the builder: `trace.otlp`, refused with its position by a build
//! without the `otlp` cargo feature (a config must not silently lose its span export).

use std::time::Duration;

use super::file::{OtlpFile, Spanned, TraceFile};
use super::*;

const DEFAULT_SERVICE_NAME: &str = "portcullis";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_MAX_BATCH: u64 = 512;
const MAX_BATCH: u64 = 10_000;
const DEFAULT_MAX_QUEUE: u64 = 2048;
const MAX_QUEUE: u64 = 1_000_000;
const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(1);
const MAX_FLUSH_INTERVAL: Duration = Duration::from_secs(60);

impl Builder {
    pub(super) fn otlp(&self, raw: &TraceFile) -> Result<Option<OtlpSettings>, ConfigError> {
        let Some(block) = &raw.otlp else {
            return Ok(None);
        };
        if !cfg!(feature = "otlp") {
            return Err(self.at(
                block,
                "trace.otlp: this build of portcullis lacks the `otlp` cargo feature (build it with `cargo build --release --features otlp`, or remove the block)",
            ));
        }
        self.otlp_settings(&block.value).map(Some)
    }

    fn otlp_settings(&self, raw: &OtlpFile) -> Result<OtlpSettings, ConfigError> {
        let endpoint = self.otlp_endpoint(&raw.endpoint)?;
        let service_name = match &raw.service_name {
            None => DEFAULT_SERVICE_NAME.to_owned(),
            Some(v) if v.value.trim().is_empty() => {
                return Err(self.at(v, "trace.otlp.service_name: must not be empty"))
            }
            Some(v) => v.value.clone(),
        };
        let sample_ratio = match &raw.sample_ratio {
            None => 1.0,
            Some(v) if (0.0..=1.0).contains(&v.value) => v.value,
            Some(v) => {
                return Err(self.at(v, "trace.otlp.sample_ratio: must be between 0.0 and 1.0"))
            }
        };
        let timeout = self.positive(&raw.timeout, "timeout", DEFAULT_TIMEOUT, MAX_TIMEOUT)?;
        let flush_interval = self.positive(
            &raw.flush_interval,
            "flush_interval",
            DEFAULT_FLUSH_INTERVAL,
            MAX_FLUSH_INTERVAL,
        )?;
        let max_batch =
            self.bounded(&raw.max_batch, "max_batch", DEFAULT_MAX_BATCH, 1, MAX_BATCH)?;
        let max_queue =
            self.bounded(&raw.max_queue, "max_queue", DEFAULT_MAX_QUEUE, 1, MAX_QUEUE)?;
        if max_queue < max_batch {
            let at = raw.max_queue.as_ref().or(raw.max_batch.as_ref());
            return Err(self.err(
                at.map(|v| &v.referenced),
                "trace.otlp.max_queue: must be at least max_batch",
            ));
        }
        Ok(OtlpSettings {
            endpoint,
            service_name,
            sample_ratio,
            timeout,
            max_batch,
            max_queue,
            flush_interval,
        })
    }

    fn otlp_endpoint(&self, value: &Spanned<String>) -> Result<http::Uri, ConfigError> {
        let key = "trace.otlp.endpoint";
        let text = self.string(value, key)?;
        let uri: http::Uri = text
            .parse()
            .map_err(|_| self.at(value, format!("{key}: `{text}` is not a URL")))?;
        match uri.scheme_str() {
            Some("http") if uri.authority().is_some() => Ok(uri),
            Some("https") => Err(self.at(
                value,
                format!("{key}: only http:// is supported; send spans to a local collector, which forwards them over TLS"),
            )),
            _ => Err(self.at(
                value,
                format!("{key}: expected a URL like http://127.0.0.1:4318/v1/traces"),
            )),
        }
    }

    /// A duration above zero and at most `max`.
    fn positive(
        &self,
        value: &Option<Spanned<String>>,
        key: &str,
        default: Duration,
        max: Duration,
    ) -> Result<Duration, ConfigError> {
        let key = format!("trace.otlp.{key}");
        let duration = self.duration(value, &key, default, max)?;
        match value {
            Some(v) if duration.is_zero() => Err(self.at(v, format!("{key}: must be above 0"))),
            _ => Ok(duration),
        }
    }

    fn bounded(
        &self,
        value: &Option<Spanned<u64>>,
        key: &str,
        default: u64,
        min: u64,
        max: u64,
    ) -> Result<usize, ConfigError> {
        let count = match value {
            None => default,
            Some(v) if (min..=max).contains(&v.value) => v.value,
            Some(v) => {
                return Err(self.at(
                    v,
                    format!("trace.otlp.{key}: must be between {min} and {max}"),
                ))
            }
        };
        Ok(usize::try_from(count).unwrap_or(usize::MAX))
    }
}
