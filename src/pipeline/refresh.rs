//! Refresh tokens at the token endpoint: issued with a password login when `tokens.refresh`
//! is set, and exchanged by `grant_type=refresh_token` (RFC 6749 §6) for a new access token
//! and a new refresh token (rotation, RFC 9700 §4.14.2).
//!
//! A used token presented again ends its whole family (both parties lose the chain; the
//! legitimate one logs in again), unless it comes back within `reuse_grace` of its rotation:
//! then it is a client retrying after losing the answer, and it gets that same answer again.

use std::time::Duration;

use http::Response;

use crate::auth::jwt::IssuedToken;
use crate::auth::rate_limit::Caller;
use crate::auth::refresh::{
    self, classify_reuse, new_family_id, Family, RefreshPolicy, RefreshToken, Reuse, Rotation,
    RotationOutcome, TokenRecord, TokenState,
};
use crate::auth::user::User;
use crate::body::ResponseBody;
use crate::clock::unix_now;
use crate::error::Failure;
use crate::fleet::{StoreError, UNAVAILABLE_RETRY};
use crate::pipeline::context::{Decision, RequestCtx};
use crate::pipeline::token_answer::{token_body, token_response, user_claims};
use crate::policy::authz::Vocabulary;
use crate::policy::rate_limit::{RateLimit, Verdict};
use crate::state::{Shared, Snapshot};

/// Refreshes one family may make: a client refreshes once per access-token lifetime, so this
/// only ever stops a loop or a thief hammering a stolen token.
const FAMILY_LIMIT: RateLimit = RateLimit {
    requests: 10,
    period: Duration::from_secs(60),
    burst: 5,
    headers: false,
};
/// The rate-limit table's route key for families (no route id can contain a NUL).
const FAMILY_ROUTE: &str = "\0refresh";

fn invalid_grant() -> Failure {
    Failure::OAuth {
        error: "invalid_grant",
        description: "refresh token is invalid, expired or revoked",
    }
}

/// A state failure as the client sees it.
pub(super) fn store_failure(err: StoreError) -> Failure {
    match err {
        StoreError::Unavailable(err) => {
            tracing::warn!(error = %err, "shared state unavailable");
            Failure::StateUnavailable {
                retry_after_secs: UNAVAILABLE_RETRY.as_secs(),
            }
        }
        StoreError::Full => Failure::Busy,
        StoreError::Refused(crate::auth::revocation::RevokeRefusal::SubjectFull {
            retry_after_secs,
        }) => Failure::RateLimited { retry_after_secs },
        StoreError::Refused(crate::auth::revocation::RevokeRefusal::TableFull) => Failure::Busy,
    }
}

/// Start a family for a login that was just granted `scopes`: its first refresh token.
pub(super) async fn start_family(
    shared: &Shared,
    policy: &RefreshPolicy,
    user: &User,
    subject: &str,
    scopes: &[String],
    issued: &IssuedToken,
    now: u64,
) -> Result<RefreshToken, StoreError> {
    let token = RefreshToken::generate();
    let family = Family {
        id: new_family_id(),
        subject: subject.to_owned(),
        scopes: scopes.to_vec(),
        credential_version: user.credential_version.clone(),
        expires_at: now.saturating_add(policy.max_lifetime),
    };
    let token_expires_at = now.saturating_add(policy.ttl).min(family.expires_at);
    let access_expires_at = now.saturating_add(issued.expires_in);
    shared
        .fleet
        .create_family(
            family,
            &token.digest(),
            token_expires_at,
            (&issued.jti, access_expires_at),
            now,
        )
        .await?;
    Ok(token)
}

/// `grant_type=refresh_token`.
pub(super) async fn grant(
    shared: &Shared,
    snapshot: &Snapshot,
    policy: &RefreshPolicy,
    presented: Option<&str>,
    requested_scope: Option<&str>,
    ctx: &mut RequestCtx<'_>,
) -> Result<Response<ResponseBody>, Failure> {
    let presented = presented.ok_or(Failure::OAuth {
        error: "invalid_request",
        description: "refresh_token is required",
    })?;
    let token = RefreshToken::parse(presented).ok_or_else(invalid_grant)?;
    let now = unix_now();
    let record = shared
        .fleet
        .lookup(&token.digest())
        .await
        .map_err(store_failure)?
        .ok_or_else(invalid_grant)?;
    ctx.login_user.clone_from(&record.family.subject);
    if record.family_revoked || record.expires_at <= now || record.family.expires_at <= now {
        return Err(invalid_grant());
    }
    let caller = Caller::Subject {
        issuer: FAMILY_ROUTE,
        subject: &record.family.id,
    };
    if let Some(Verdict::Deny { retry_after }) =
        shared
            .rate_limits
            .check(FAMILY_ROUTE, caller, &FAMILY_LIMIT)
    {
        return Err(Failure::RateLimited {
            retry_after_secs: crate::auth::rate_limit::whole_seconds(retry_after),
        });
    }
    if let TokenState::Rotated { at, sealed } = &record.state {
        return reused(
            shared,
            snapshot,
            policy,
            &token,
            &record.family,
            *at,
            sealed,
            now,
            ctx,
        )
        .await;
    }
    let config = &snapshot.config;
    let Some(user) = config
        .users
        .get(&record.family.subject)
        .filter(|user| still_entitled(snapshot, user, &record))
    else {
        // Removed, disabled, password changed or scopes narrowed since login: the family
        // ends here (a reload cannot reach into every replica's store; this check does).
        end_family(shared, snapshot, &record.family.id, now).await?;
        return Err(invalid_grant());
    };
    let scopes = narrowed(&config.vocabulary, &record.family.scopes, requested_scope)?;
    let scope_refs: Vec<&str> = scopes.iter().map(String::as_str).collect();
    let issued = snapshot
        .keys
        .issue(&record.family.subject, &scope_refs, user_claims(user), now)
        .map_err(|_| Failure::Internal)?;
    let next = RefreshToken::generate();
    let body = token_body(&issued, &scopes, Some(&next));
    let sealed = refresh::seal(&token, body.as_bytes());
    let rotation = Rotation {
        family_id: &record.family.id,
        old_digest: &token.digest(),
        new_digest: &next.digest(),
        new_expires_at: now.saturating_add(policy.ttl).min(record.family.expires_at),
        sealed: &sealed,
        access_jti: &issued.jti,
        access_expires_at: now.saturating_add(issued.expires_in),
        now,
    };
    match shared
        .fleet
        .rotate(&rotation)
        .await
        .map_err(store_failure)?
    {
        RotationOutcome::Rotated => {
            ctx.decision = Decision::Login;
            Ok(token_response(body))
        }
        // Another request (maybe on another replica) rotated this token first.
        RotationOutcome::AlreadyRotated { at, sealed } => {
            reused(
                shared,
                snapshot,
                policy,
                &token,
                &record.family,
                at,
                &sealed,
                now,
                ctx,
            )
            .await
        }
        RotationOutcome::Gone => Err(invalid_grant()),
    }
}

/// A token that was already rotated: the same answer again within the grace window, else
/// the end of the family.
#[allow(clippy::too_many_arguments)]
async fn reused(
    shared: &Shared,
    snapshot: &Snapshot,
    policy: &RefreshPolicy,
    token: &RefreshToken,
    family: &Family,
    rotated_at: u64,
    sealed: &str,
    now: u64,
    ctx: &mut RequestCtx<'_>,
) -> Result<Response<ResponseBody>, Failure> {
    if classify_reuse(rotated_at, now, policy.reuse_grace) == Reuse::Replay {
        if let Some(answer) = refresh::open(token, sealed) {
            ctx.decision = Decision::Login;
            return Ok(token_response(answer));
        }
    }
    tracing::warn!(
        user = %family.subject,
        "refresh token reused after rotation: ending its family"
    );
    end_family(shared, snapshot, &family.id, now).await?;
    Err(invalid_grant())
}

/// End a family and the access tokens it issued.
pub(super) async fn end_family(
    shared: &Shared,
    snapshot: &Snapshot,
    family_id: &str,
    now: u64,
) -> Result<(), Failure> {
    let leeway = snapshot.config.tokens.leeway.as_secs();
    shared
        .fleet
        .revoke_family(&shared.revocations, family_id, now, leeway)
        .await
        .map_err(store_failure)
}

/// Whether `user` may still hold what the family was granted: enabled, the same password,
/// and every granted scope still within the user's scopes (through `implies`).
fn still_entitled(snapshot: &Snapshot, user: &User, record: &TokenRecord) -> bool {
    if user.disabled || user.credential_version != record.family.credential_version {
        return false;
    }
    let vocabulary = &snapshot.config.vocabulary;
    let holds = vocabulary.expand(user.scopes.iter().map(String::as_str));
    record
        .family
        .scopes
        .iter()
        .all(|name| vocabulary.id(name).is_some_and(|id| holds.contains(id)))
}

/// RFC 6749 §6: the requested scopes must all be within the family's grant (through
/// `implies`, as at login); none requested means the whole grant.
fn narrowed(
    vocabulary: &Vocabulary,
    granted: &[String],
    requested: Option<&str>,
) -> Result<Vec<String>, Failure> {
    let Some(requested) = requested.map(str::trim).filter(|r| !r.is_empty()) else {
        return Ok(granted.to_vec());
    };
    let holds = vocabulary.expand(granted.iter().map(String::as_str));
    let mut scopes: Vec<String> = Vec::new();
    for name in requested.split(' ').filter(|s| !s.is_empty()) {
        let id = vocabulary
            .id(name)
            .filter(|id| holds.contains(*id))
            .ok_or(Failure::OAuth {
                error: "invalid_scope",
                description: "requested scope exceeds the scope originally granted",
            })?;
        let name = vocabulary.name(id).to_owned();
        if !scopes.contains(&name) {
            scopes.push(name);
        }
    }
    Ok(scopes)
}
