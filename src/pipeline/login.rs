//! `POST /login` (OAuth2 resource-owner password grant, RFC 6749 §4.3) and `POST /logout`.
//!
//! Every credential failure gets the same bytes and, through the dummy hash, the same time;
//! regulation keys on the username and the client address; hashing runs on the bounded pool.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde::Deserialize;
use tokio::time::{Duration, Instant};

use crate::auth::jwt::UserClaims;
use crate::auth::lockout::{address_key, Attempt, Refusal};
use crate::auth::password::{VerifyError, MAX_PASSWORD_BYTES};
use crate::auth::revocation::RevokeRefusal;
use crate::auth::user::User;
use crate::body::ResponseBody;
use crate::clock::unix_now;
use crate::config::Limits;
use crate::error::{no_store, Failure};
use crate::forward::headers;
use crate::forward::request_body::{BodyLimits, GuardedBody};
use crate::pipeline::authenticate::authenticate;
use crate::pipeline::context::{ConnInfo, Decision, RequestCtx};
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

/// The credentials a login request carries, from a form or JSON body.
#[derive(Debug, Default, Deserialize)]
#[doc(hidden)]
pub struct LoginForm {
    grant_type: Option<String>,
    username: Option<String>,
    password: Option<String>,
    scope: Option<String>,
}

fn oauth(error: &'static str, description: &'static str) -> Failure {
    Failure::OAuth { error, description }
}

/// The one answer for a wrong password, an unknown user and a user without a usable hash.
fn invalid_grant() -> Failure {
    oauth("invalid_grant", "invalid username or password")
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
    let result = if let Err(refusal) = decision::check_endpoint_method(request.method()) {
        Err(refusal)
    } else {
        attempt(shared, snapshot, conn, request, ctx).await
    };
    let outcome = match &result {
        Ok(_) => "success",
        Err(Failure::LockedOut { .. }) => "locked",
        Err(Failure::Busy) => "busy",
        Err(Failure::Saturated { .. }) => "saturated",
        Err(Failure::OAuth { error, .. }) => error,
        Err(Failure::PayloadTooLarge) => "too_large",
        Err(_) => "error",
    };
    shared.metrics.login(outcome);
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
    if form.grant_type.as_deref().is_some_and(|g| g != "password") {
        return Err(oauth(
            "unsupported_grant_type",
            "only the password grant is supported",
        ));
    }
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
    let now = Instant::now();
    let user_attempt = shared
        .user_lockouts
        .begin(&username, now)
        .map_err(refused)?;
    let ip_attempt = shared.ip_lockouts.begin(&ip_key, now).map_err(refused)?;
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
    let now = Instant::now();
    // A disabled user gets the same answer as a wrong password, after the same work.
    let Some(user) = user.filter(|user| verified && !user.disabled) else {
        record_failure(shared, user_attempt, ip_attempt, &username, &ip_key);
        return Err(invalid_grant());
    };
    // A lock set while the password was being checked holds even against the right one.
    let user_locked = user_attempt.succeeded(now).err();
    let ip_locked = ip_attempt.succeeded(now).err();
    if let Some(retry) = user_locked.or(ip_locked) {
        return Err(refused(Refusal::Locked(retry)));
    }
    // Only the username's counter: a valid account must not reset its address's counter
    // between guesses at other accounts.
    shared.user_lockouts.record_success(&username);
    let scopes = granted_scopes(snapshot, &user.scopes, form.scope.as_deref())?;
    let scope_refs: Vec<&str> = scopes.iter().map(String::as_str).collect();
    let issued = snapshot
        .keys
        .issue(&username, &scope_refs, user_claims(user), unix_now())
        .map_err(|_| Failure::Internal)?;
    ctx.decision = Decision::Login;
    let body = serde_json::json!({
        "access_token": issued.token,
        "token_type": "bearer",
        "expires_in": issued.expires_in,
        "scope": scopes.join(" "),
    });
    let mut response = Response::new(ResponseBody::full(Bytes::from(body.to_string())));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    no_store(response.headers_mut());
    Ok(response)
}

/// What an issued token says about `user`: its credential version (so a password change
/// ends it) and the profile fields `tokens.claims` asks for.
fn user_claims(user: &User) -> UserClaims<'_> {
    UserClaims {
        credential_version: Some(&user.credential_version),
        email: user.profile.email.as_deref(),
        name: user.profile.name.as_deref(),
    }
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

fn record_failure(
    shared: &Shared,
    user_attempt: Attempt<'_>,
    ip_attempt: Attempt<'_>,
    username: &str,
    ip_key: &str,
) {
    let now = Instant::now();
    let user_locked = user_attempt.failed(now).is_some();
    let ip_locked = ip_attempt.failed(now).is_some();
    for (locked, kind) in [(user_locked, "username"), (ip_locked, "address")] {
        if locked {
            shared.metrics.lockout();
            tracing::warn!(
                kind,
                username,
                client = ip_key,
                "login locked after repeated failures"
            );
        }
    }
}

/// RFC 6749 §3.3: the requested scopes must be within what the user holds (through
/// `implies`); none requested means all of the user's own scopes.
fn granted_scopes(
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
async fn read_form(request: Request<Incoming>, limits: &Limits) -> Result<LoginForm, Failure> {
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

/// `POST /logout` with a bearer token: the token's `jti` is refused until it expires.
pub async fn logout(
    shared: &Shared,
    snapshot: &Snapshot,
    request: Request<Incoming>,
    ctx: &mut RequestCtx<'_>,
) -> Result<Response<ResponseBody>, Failure> {
    ctx.route = "logout";
    decision::check_endpoint_method(request.method())?;
    let identity = authenticate(shared, snapshot, request.headers(), unix_now())
        .await?
        .ok_or(Failure::MissingToken)?;
    ctx.identity = Some(identity.clone());
    ctx.decision = Decision::Logout;
    let leeway = snapshot.config.tokens.leeway.as_secs();
    let expires = identity.token.expires_at.saturating_add(leeway);
    shared
        .revocations
        .revoke(
            &identity.token.subject,
            &identity.revocation_key,
            expires,
            unix_now(),
            snapshot.config.login.max_revocations_per_subject,
        )
        .map_err(|refusal| match refusal {
            // The token stays valid: the client is told so, and when to try again.
            RevokeRefusal::SubjectFull { retry_after_secs } => {
                Failure::RateLimited { retry_after_secs }
            }
            RevokeRefusal::TableFull => Failure::Busy,
        })?;
    let mut response = Response::new(ResponseBody::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    no_store(response.headers_mut());
    Ok(response)
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
