//! `POST /login` (OAuth2 resource-owner password grant, RFC 6749 §4.3) and `POST /logout`.
//!
//! Every credential failure gets the same bytes and, through the dummy hash, the same time;
//! regulation keys on the username and the client address; hashing runs on the bounded pool.

use http::header;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde::Deserialize;
use tokio::time::Duration;

use crate::auth::lockout::{address_key, Refusal};
use crate::auth::password::{VerifyError, MAX_PASSWORD_BYTES};
use crate::body::ResponseBody;
use crate::clock::unix_now;
use crate::config::Limits;
use crate::error::Failure;
use crate::fleet::login_gate::{GateRefusal, LocalTables};
use crate::fleet::{StoreError, UNAVAILABLE_RETRY};
use crate::forward::headers;
use crate::forward::request_body::{BodyLimits, GuardedBody};
use crate::pipeline::context::{ConnInfo, Decision, RequestCtx};
use crate::pipeline::refresh;
use crate::pipeline::token_answer::{token_body, token_response, user_claims};
use crate::policy::decision;
use crate::state::{Shared, Snapshot};

/// Login bodies above this are refused before parsing (SPEC: 8 KiB → 413).
pub const MAX_LOGIN_BODY: usize = 8 * 1024;

/// How long a refusal that costs us nothing (429 locked out, 503 busy) is held before it is
/// sent. Answered at once, a client that retries in a loop turns a login flood into a
/// request flood that crowds proxied traffic off the serving threads (measured: proxied
/// throughput fell 60×); held, each attacking connection makes at most a few attempts a
/// second. A held answer costs one idle connection, which `max_connections` bounds.
const REFUSAL_HOLD: Duration = Duration::from_millis(500);

/// The parameters a token-endpoint request carries (login, refresh, revoke, logout), from a
/// form or JSON body.
#[derive(Default, Deserialize)]
#[doc(hidden)]
pub struct LoginForm {
    pub(super) grant_type: Option<String>,
    pub(super) username: Option<String>,
    pub(super) password: Option<String>,
    pub(super) scope: Option<String>,
    pub(super) refresh_token: Option<String>,
    /// `/revoke` (RFC 7009 §2.1).
    pub(super) token: Option<String>,
    pub(super) token_type_hint: Option<String>,
}

impl std::fmt::Debug for LoginForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only: every other field is a credential.
        f.debug_struct("LoginForm")
            .field("grant_type", &self.grant_type)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

fn oauth(error: &'static str, description: &'static str) -> Failure {
    Failure::OAuth { error, description }
}

/// The one answer for a wrong password, an unknown user and a user without a usable hash.
fn invalid_grant() -> Failure {
    oauth("invalid_grant", "invalid username or password")
}

/// Which grant a token-endpoint request turned out to be, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Grant {
    Password,
    Refresh,
}

/// `POST /login`.
pub async fn login(
    shared: &Shared,
    snapshot: &Snapshot,
    conn: ConnInfo,
    request: Request<Incoming>,
    ctx: &mut RequestCtx<'_>,
) -> Result<Response<ResponseBody>, Failure> {
    ctx.route = "login";
    // Every answer of the token endpoint is uncacheable (RFC 6749 §5.1), errors included.
    ctx.no_store = true;
    let mut grant = Grant::Password;
    let result = if let Err(refusal) = decision::check_endpoint_method(request.method()) {
        Err(refusal)
    } else {
        attempt(shared, snapshot, conn, request, ctx, &mut grant).await
    };
    let outcome = match &result {
        Ok(_) => "success",
        Err(Failure::LockedOut { .. }) => "locked",
        Err(Failure::Busy) => "busy",
        Err(Failure::Saturated { .. }) => "saturated",
        Err(Failure::OAuth { error, .. }) => error,
        Err(Failure::PayloadTooLarge) => "too_large",
        Err(Failure::StateUnavailable { .. }) => "unavailable",
        Err(_) => "error",
    };
    match grant {
        Grant::Password => shared.metrics.login(outcome),
        Grant::Refresh => shared.metrics.refresh(outcome),
    }
    if matches!(
        result,
        Err(Failure::LockedOut { .. } | Failure::Busy | Failure::Saturated { .. })
    ) {
        tokio::time::sleep(REFUSAL_HOLD).await;
    }
    result
}

async fn attempt(
    shared: &Shared,
    snapshot: &Snapshot,
    conn: ConnInfo,
    request: Request<Incoming>,
    ctx: &mut RequestCtx<'_>,
    grant: &mut Grant,
) -> Result<Response<ResponseBody>, Failure> {
    if request
        .uri()
        .query()
        .is_some_and(|q| q.contains("password"))
    {
        // RFC 6749 §3.2: credentials never travel in the URL (where they end up in logs).
        return Err(oauth(
            "invalid_request",
            "credentials must be sent in the request body",
        ));
    }
    let config = &snapshot.config;
    let client_ip = headers::client_address(request.headers(), conn.peer.ip(), |ip| {
        config.is_trusted_proxy(ip)
    });
    let form = read_form(request, &config.limits).await?;
    match form.grant_type.as_deref() {
        None | Some("password") => password_grant(shared, snapshot, client_ip, form, ctx).await,
        Some("refresh_token") => match &config.refresh {
            Some(policy) => {
                *grant = Grant::Refresh;
                refresh::grant(
                    shared,
                    snapshot,
                    policy,
                    form.refresh_token.as_deref(),
                    form.scope.as_deref(),
                    ctx,
                )
                .await
            }
            None => Err(oauth(
                "unsupported_grant_type",
                "refresh tokens are not enabled",
            )),
        },
        Some(_) => Err(oauth(
            "unsupported_grant_type",
            "only the password and refresh_token grants are supported",
        )),
    }
}

/// `grant_type=password` (RFC 6749 §4.3).
async fn password_grant(
    shared: &Shared,
    snapshot: &Snapshot,
    client_ip: std::net::IpAddr,
    form: LoginForm,
    ctx: &mut RequestCtx<'_>,
) -> Result<Response<ResponseBody>, Failure> {
    let config = &snapshot.config;
    let (Some(username), Some(password)) = (form.username, form.password) else {
        return Err(oauth(
            "invalid_request",
            "username and password are required",
        ));
    };
    if password.len() > MAX_PASSWORD_BYTES || username.len() > 256 {
        return Err(oauth("invalid_request", "username or password too long"));
    }
    // Usernames are case-insensitive: `Alex` and `alex` are one identity.
    let username = username.to_ascii_lowercase();
    ctx.login_user.clone_from(&username);
    // Keyed by the table's own policy (fixed for the process), so a key never changes shape
    // under an entry that is already counting.
    let ip_key = address_key(client_ip, shared.ip_lockouts.policy().ipv6_prefix);
    // Counted before hashing, so concurrent guesses cannot all be checked before the first
    // failure locks the key; an attempt whose check never runs is refunded when dropped.
    let tables = LocalTables {
        users: &shared.user_lockouts,
        addresses: &shared.ip_lockouts,
    };
    let admission = shared
        .fleet
        .begin_login(tables, &username, &ip_key)
        .await
        .map_err(|refusal| match refusal {
            GateRefusal::Refused(refusal) => refused(refusal),
            GateRefusal::Unavailable(err) => {
                tracing::warn!(error = %err, "login refused: shared state unavailable");
                Failure::StateUnavailable {
                    retry_after_secs: UNAVAILABLE_RETRY.as_secs(),
                }
            }
        })?;
    let user = config.users.get(&username);
    let verified = shared
        .passwords
        .verify(user.map(|u| &u.hash), password.as_bytes())
        .await
        .map_err(|err| match err {
            VerifyError::Busy => Failure::Busy,
            VerifyError::TooLong => oauth("invalid_request", "username or password too long"),
            _ => Failure::Internal,
        })?;
    // A disabled user gets the same answer as a wrong password, after the same work.
    let Some(user) = user.filter(|user| verified && !user.disabled) else {
        if admission.failed().await.is_some() {
            shared.metrics.lockout();
            tracing::warn!(
                username,
                client = ip_key,
                "login locked after repeated failures"
            );
        }
        return Err(invalid_grant());
    };
    // A lock set while the password was being checked holds even against the right one.
    if let Err(retry) = admission.succeeded().await {
        return Err(refused(Refusal::Locked(retry)));
    }
    let scopes = granted_scopes(snapshot, &user.scopes, form.scope.as_deref())?;
    let scope_refs: Vec<&str> = scopes.iter().map(String::as_str).collect();
    let now = unix_now();
    let issued = snapshot
        .keys
        .issue(&username, &scope_refs, user_claims(user), now)
        .map_err(|_| Failure::Internal)?;
    let refresh_token = match &config.refresh {
        None => None,
        Some(policy) => {
            match refresh::start_family(shared, policy, user, &username, &scopes, &issued, now)
                .await
            {
                Ok(token) => Some(token),
                // With logins failing open, the user still gets in, without a refresh token
                // (RFC 6749 §5.1 makes it optional) rather than one no replica could honour.
                Err(StoreError::Unavailable(err)) if login_fails_open(config) => {
                    tracing::warn!(error = %err, "refresh token not issued: shared state unavailable");
                    None
                }
                Err(err) => return Err(refresh::store_failure(err)),
            }
        }
    };
    ctx.decision = Decision::Login;
    Ok(token_response(token_body(
        &issued,
        &scopes,
        refresh_token.as_ref(),
    )))
}

fn login_fails_open(config: &crate::config::Config) -> bool {
    matches!(&config.state, crate::config::StateSettings::Redis(redis) if redis.login_fail_open)
}

/// What a login refused before any hashing is answered with.
fn refused(refusal: Refusal) -> Failure {
    match refusal {
        Refusal::Locked(retry) => Failure::LockedOut {
            retry_after_secs: retry.as_secs().max(1),
        },
        Refusal::Full(retry) => Failure::Saturated {
            retry_after_secs: retry.as_secs().max(1),
        },
    }
}

/// RFC 6749 §3.3: the requested scopes must be within what the user holds (through
/// `implies`); none requested means all of the user's own scopes.
pub(super) fn granted_scopes(
    snapshot: &Snapshot,
    held: &[String],
    requested: Option<&str>,
) -> Result<Vec<String>, Failure> {
    let Some(requested) = requested.map(str::trim).filter(|r| !r.is_empty()) else {
        return Ok(held.to_vec());
    };
    let vocabulary = &snapshot.config.vocabulary;
    let holds = vocabulary.expand(held.iter().map(String::as_str));
    let mut granted: Vec<String> = Vec::new();
    for name in requested.split(' ').filter(|s| !s.is_empty()) {
        let id = vocabulary
            .id(name)
            .filter(|id| holds.contains(*id))
            .ok_or_else(|| {
                oauth(
                    "invalid_scope",
                    "requested scope is unknown or not granted to this user",
                )
            })?;
        let name = vocabulary.name(id).to_owned();
        if !granted.contains(&name) {
            granted.push(name);
        }
    }
    Ok(granted)
}

/// Read a login body (form or JSON), capped at [`MAX_LOGIN_BODY`] and read under the body
/// deadline; repeated parameters are refused (RFC 6749 §3.1).
pub(super) async fn read_form(
    request: Request<Incoming>,
    limits: &Limits,
) -> Result<LoginForm, Failure> {
    let (parts, body) = request.into_parts();
    let limits = BodyLimits {
        max_size: Some(MAX_LOGIN_BODY as u64),
        ..BodyLimits::from_config(limits)
    };
    limits.check_declared(&body)?;
    let media_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    let bytes = GuardedBody::new(body, limits)
        .collect()
        .await
        .map_err(|err| Failure::from(&err))?
        .to_bytes();
    match media_type.as_str() {
        "application/x-www-form-urlencoded" | "" => parse_form(&bytes),
        "application/json" => serde_json::from_slice::<LoginForm>(&bytes)
            .map_err(|_| oauth("invalid_request", "body is not a valid JSON login object")),
        _ => Err(oauth(
            "invalid_request",
            "use application/x-www-form-urlencoded or application/json",
        )),
    }
}

#[doc(hidden)]
pub fn parse_form(bytes: &[u8]) -> Result<LoginForm, Failure> {
    let mut form = LoginForm::default();
    for (key, value) in form_urlencoded::parse(bytes) {
        let slot = match key.as_ref() {
            "grant_type" => &mut form.grant_type,
            "username" => &mut form.username,
            "password" => &mut form.password,
            "scope" => &mut form.scope,
            "refresh_token" => &mut form.refresh_token,
            "token" => &mut form.token,
            "token_type_hint" => &mut form.token_type_hint,
            _ => continue,
        };
        if slot.replace(value.into_owned()).is_some() {
            return Err(oauth(
                "invalid_request",
                "a parameter was given more than once",
            ));
        }
    }
    Ok(form)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_parsing_refuses_duplicates_and_ignores_extras() {
        let form = parse_form(b"grant_type=password&username=alex&password=p%26w&client_id=x").ok();
        let form = form.unwrap_or_default();
        assert_eq!(form.username.as_deref(), Some("alex"));
        assert_eq!(form.password.as_deref(), Some("p&w"));
        assert!(parse_form(b"username=alex&username=root&password=x").is_err());
    }
}
