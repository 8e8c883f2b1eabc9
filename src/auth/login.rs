//! `POST /login` (OAuth2 resource-owner password grant, RFC 6749 §4.3) and `POST /logout`.
//!
//! Every credential failure gets the same bytes and, through the dummy hash, the same time;
//! regulation keys on the username and the client address; hashing runs on the bounded pool.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde::Deserialize;
use tokio::time::{Duration, Instant};

use crate::access_log::AccessRecord;
use crate::auth::bearer::authenticate;
use crate::auth::password::{VerifyError, MAX_PASSWORD_BYTES};
use crate::body::ResponseBody;
use crate::config::Limits;
use crate::error::{no_store, Failure};
use crate::headers;
use crate::request_body::{BodyLimits, GuardedBody};
use crate::service::{unix_now, ConnInfo};
use crate::state::{Shared, Snapshot};

/// The logout endpoint's path.
pub const LOGOUT_PATH: &str = "/logout";
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
    Failure::OAuth {
        status: StatusCode::BAD_REQUEST,
        error,
        description,
    }
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
    record: &mut AccessRecord<'_>,
) -> Result<Response<ResponseBody>, Failure> {
    record.route = "login";
    let result = if request.method() != Method::POST {
        Err(Failure::MethodNotAllowed { allow: "POST" })
    } else {
        attempt(shared, snapshot, conn, request, record).await
    };
    let outcome = match &result {
        Ok(_) => "success",
        Err(Failure::LockedOut { .. }) => "locked",
        Err(Failure::Busy) => "busy",
        Err(Failure::OAuth { error, .. }) => error,
        Err(Failure::PayloadTooLarge) => "too_large",
        Err(_) => "error",
    };
    shared.metrics.login(outcome);
    if matches!(result, Err(Failure::LockedOut { .. } | Failure::Busy)) {
        tokio::time::sleep(REFUSAL_HOLD).await;
    }
    // Every answer of the token endpoint is uncacheable (RFC 6749 §5.1), errors included.
    result.or_else(|failure| {
        record.decision = failure.decision();
        let mut response = failure.into_response();
        no_store(response.headers_mut());
        Ok(response)
    })
}

async fn attempt(
    shared: &Shared,
    snapshot: &Snapshot,
    conn: ConnInfo,
    request: Request<Incoming>,
    record: &mut AccessRecord<'_>,
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
    record.user.clone_from(&username);
    let ip_key = client_ip.to_string();
    let now = Instant::now();
    let locked = shared
        .user_lockouts
        .locked(&username, now)
        .or_else(|| shared.ip_lockouts.locked(&ip_key, now));
    if let Some(retry) = locked {
        return Err(Failure::LockedOut {
            retry_after_secs: retry.as_secs().max(1),
        });
    }
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
    let Some(user) = user.filter(|_| verified) else {
        record_failure(shared, &username, &ip_key);
        return Err(invalid_grant());
    };
    // Only the username's counter: a valid account must not reset its address's counter
    // between guesses at other accounts.
    shared.user_lockouts.record_success(&username);
    let scopes = granted_scopes(snapshot, &user.scopes, form.scope.as_deref())?;
    let scope_refs: Vec<&str> = scopes.iter().map(String::as_str).collect();
    let issued = snapshot
        .keys
        .issue(&username, &scope_refs, unix_now())
        .map_err(|_| Failure::Internal)?;
    record.decision = "login";
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

fn record_failure(shared: &Shared, username: &str, ip_key: &str) {
    let now = Instant::now();
    let user_locked = shared.user_lockouts.record_failure(username, now).is_some();
    let ip_locked = shared.ip_lockouts.record_failure(ip_key, now).is_some();
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
    record: &mut AccessRecord<'_>,
) -> Result<Response<ResponseBody>, Failure> {
    record.route = "logout";
    if request.method() != Method::POST {
        return Err(Failure::MethodNotAllowed { allow: "POST" });
    }
    let identity = authenticate(shared, snapshot, request.headers(), unix_now())?
        .ok_or(Failure::MissingToken)?;
    record.user.clone_from(&identity.token.subject);
    record.decision = "logout";
    let expires = identity.token.expires_at + snapshot.config.tokens.leeway.as_secs();
    if !shared.revocations.revoke(&identity.revocation_key, expires) {
        return Err(Failure::Busy);
    }
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
