//! Giving tokens up: `POST /logout` (the bearer token, and the refresh token's family when the
//! body names it) and RFC 7009 `POST /revoke` (an access token or a refresh token, named in
//! the body). Nothing is answered as done before the fleet's state has it.

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::auth::bearer::Identity;
use crate::auth::refresh::RefreshToken;
use crate::body::ResponseBody;
use crate::clock::unix_now;
use crate::error::{no_store, Failure};
use crate::pipeline::authenticate::{authenticate, identity_of};
use crate::pipeline::context::{Decision, RequestCtx};
use crate::pipeline::login::{read_form, LoginForm};
use crate::pipeline::refresh::{end_family, store_failure};
use crate::policy::decision;
use crate::state::{Shared, Snapshot};

/// `POST /logout` with a bearer token: its `jti` is refused on every replica until it
/// expires. A `refresh_token` in the body (form or JSON) ends that login's family too, when it
/// belongs to the same user.
pub async fn logout(
    shared: &Shared,
    snapshot: &Snapshot,
    request: Request<Incoming>,
    ctx: &mut RequestCtx<'_>,
) -> Result<Response<ResponseBody>, Failure> {
    ctx.route = "logout";
    decision::check_endpoint_method(request.method())?;
    let now = unix_now();
    let identity = authenticate(shared, snapshot, request.headers(), now)
        .await?
        .ok_or(Failure::MissingToken)?;
    ctx.identity = Some(identity.clone());
    ctx.decision = Decision::Logout;
    // The body is optional here: one that is not a form or JSON object names nothing more.
    let form = match read_form(request, &snapshot.config.limits).await {
        Ok(form) => form,
        Err(Failure::OAuth { .. }) => LoginForm::default(),
        Err(failure) => return Err(failure),
    };
    if let Some(presented) = form.refresh_token.as_deref() {
        revoke_refresh(
            shared,
            snapshot,
            presented,
            Some(&identity.token.subject),
            now,
        )
        .await?;
    }
    revoke_access(shared, snapshot, &identity, now).await?;
    Ok(done(StatusCode::NO_CONTENT))
}

/// `POST /revoke` (RFC 7009): `token` and an optional `token_type_hint`. 200 whether or not
/// the token was known (§2.2): the answer tells nothing about it. No client authentication:
/// holding the token is what entitles one to give it up.
pub async fn revoke(
    shared: &Shared,
    snapshot: &Snapshot,
    request: Request<Incoming>,
    ctx: &mut RequestCtx<'_>,
) -> Result<Response<ResponseBody>, Failure> {
    ctx.route = "revoke";
    ctx.no_store = true;
    decision::check_endpoint_method(request.method())?;
    let form = read_form(request, &snapshot.config.limits).await?;
    let token = form.token.ok_or(Failure::OAuth {
        error: "invalid_request",
        description: "token is required",
    })?;
    let now = unix_now();
    ctx.decision = Decision::Logout;
    // The hint only says where to look first (§2.1); both kinds are tried.
    let refresh_first = form.token_type_hint.as_deref() == Some("refresh_token");
    let is_refresh = RefreshToken::parse(&token).is_some();
    if (is_refresh || refresh_first) && revoke_refresh(shared, snapshot, &token, None, now).await? {
        return Ok(done(StatusCode::OK));
    }
    if !is_refresh {
        // An invalid, expired or foreign access token is nothing to revoke.
        if let Ok(identity) = identity_of(shared, snapshot, &token, now).await {
            ctx.identity = Some(identity.clone());
            revoke_access(shared, snapshot, &identity, now).await?;
        }
    }
    Ok(done(StatusCode::OK))
}

/// End the family of refresh token `presented` (if known and, with `owner`, theirs).
/// `Ok(true)` when it named a family.
async fn revoke_refresh(
    shared: &Shared,
    snapshot: &Snapshot,
    presented: &str,
    owner: Option<&str>,
    now: u64,
) -> Result<bool, Failure> {
    let Some(token) = RefreshToken::parse(presented) else {
        return Ok(false);
    };
    let Some(record) = shared
        .fleet
        .lookup(&token.digest())
        .await
        .map_err(store_failure)?
    else {
        return Ok(false);
    };
    if owner.is_some_and(|owner| owner != record.family.subject) {
        return Err(Failure::OAuth {
            error: "invalid_request",
            description: "the refresh token belongs to another user",
        });
    }
    end_family(shared, snapshot, &record.family.id, now).await?;
    Ok(true)
}

async fn revoke_access(
    shared: &Shared,
    snapshot: &Snapshot,
    identity: &Identity,
    now: u64,
) -> Result<(), Failure> {
    let leeway = snapshot.config.tokens.leeway.as_secs();
    shared
        .fleet
        .revoke_access(
            &shared.revocations,
            &identity.token.subject,
            &identity.revocation_key,
            identity.token.expires_at.saturating_add(leeway),
            now,
            snapshot.config.login.max_revocations_per_subject,
        )
        .await
        .map_err(store_failure)
}

fn done(status: StatusCode) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::empty());
    *response.status_mut() = status;
    no_store(response.headers_mut());
    response
}
