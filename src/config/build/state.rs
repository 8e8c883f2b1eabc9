//! `tokens.refresh` and `state:`: refresh-token lifetimes, and where the state a fleet of
//! replicas shares lives.

use std::time::Duration;

use super::*;
use crate::auth::refresh::RefreshPolicy;
use crate::config::{RedisSettings, StateSettings};

/// Longest `tokens.refresh.reuse_grace`: a retry after a lost answer comes within seconds; a
/// long window would let a stolen token be replayed unnoticed.
const MAX_REUSE_GRACE: Duration = Duration::from_secs(300);

impl Builder {
    pub(super) fn refresh(&self, raw: &file::RefreshFile) -> Result<RefreshPolicy, ConfigError> {
        let day = 24 * 3600;
        let ttl = self.duration(
            &raw.ttl,
            "tokens.refresh.ttl",
            Duration::from_secs(14 * day),
            MAX_PERIOD,
        )?;
        let max_lifetime = self.duration(
            &raw.max_lifetime,
            "tokens.refresh.max_lifetime",
            Duration::from_secs(90 * day),
            MAX_PERIOD,
        )?;
        if ttl.is_zero() {
            return Err(self.err(
                raw.ttl.as_ref().map(|v| &v.referenced),
                "tokens.refresh.ttl: must be positive",
            ));
        }
        if max_lifetime < ttl {
            return Err(self.err(
                raw.max_lifetime.as_ref().map(|v| &v.referenced),
                "tokens.refresh.max_lifetime: must be at least tokens.refresh.ttl",
            ));
        }
        let reuse_grace = self.duration(
            &raw.reuse_grace,
            "tokens.refresh.reuse_grace",
            Duration::from_secs(10),
            MAX_REUSE_GRACE,
        )?;
        Ok(RefreshPolicy {
            ttl: ttl.as_secs(),
            max_lifetime: max_lifetime.as_secs(),
            reuse_grace: reuse_grace.as_secs(),
        })
    }

    pub(super) fn state(&self, raw: &file::StateFile) -> Result<StateSettings, ConfigError> {
        let Some(redis) = &raw.redis else {
            return Ok(StateSettings::Memory);
        };
        let fail = |message: String| self.at(redis, message);
        let r = &redis.value;
        let url = interpolate(&r.url).map_err(|e| fail(format!("state.redis.url: {e}")))?;
        let scheme = url.split_once("://").map(|(s, _)| s);
        if !matches!(scheme, Some("redis" | "rediss")) {
            return Err(fail(
                "state.redis.url: expected redis://host:port or rediss://host:port".into(),
            ));
        }
        let key_prefix = r.key_prefix.clone().unwrap_or_else(|| "portcullis:".into());
        if key_prefix.is_empty()
            || key_prefix.len() > 64
            || key_prefix.contains(char::is_whitespace)
        {
            return Err(fail(
                "state.redis.key_prefix: 1 to 64 characters without spaces".into(),
            ));
        }
        let ca = match &r.ca {
            None => None,
            Some(path) => {
                let path = interpolate(path).map_err(|e| fail(format!("state.redis.ca: {e}")))?;
                let path = self.resolve(&path);
                Some(std::fs::read(&path).map_err(|e| {
                    fail(format!(
                        "state.redis.ca: cannot read {}: {e}",
                        path.display()
                    ))
                })?)
            }
        };
        // The exact client the server will make, so a bad URL or CA fails here, not at start.
        let client = match &ca {
            Some(ca) => redis::Client::build_with_tls(
                url.as_str(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(ca.clone()),
                },
            ),
            None => redis::Client::open(url.as_str()),
        };
        if let Err(err) = client {
            return Err(fail(format!("state.redis: {err}")));
        }
        let timeout = match &r.timeout {
            None => Duration::from_secs(1),
            Some(text) => parse_duration(text, Duration::from_secs(60))
                .map_err(|e| fail(format!("state.redis.timeout: {e}")))?,
        };
        if timeout.is_zero() {
            return Err(fail("state.redis.timeout: must be positive".into()));
        }
        let login_fail_open = match r.on_unavailable.login.as_deref() {
            None | Some("fail_closed") => false,
            Some("fail_open") => true,
            Some(other) => {
                return Err(fail(format!(
                "state.redis.on_unavailable.login: `{other}` is not `fail_closed` or `fail_open`"
            )))
            }
        };
        match r.on_unavailable.refresh.as_deref() {
            None | Some("fail_closed") => {}
            Some("fail_open") => {
                return Err(fail(
                    "state.redis.on_unavailable.refresh: only `fail_closed`: a rotation made \
                     without Redis could be made twice"
                        .into(),
                ))
            }
            Some(other) => {
                return Err(fail(format!(
                    "state.redis.on_unavailable.refresh: `{other}` is not `fail_closed`"
                )))
            }
        }
        Ok(StateSettings::Redis(RedisSettings {
            url,
            key_prefix,
            ca,
            timeout,
            login_fail_open,
        }))
    }
}
