//! The authentication phase of a proxied request (and of logout): find the bearer token,
//! reuse its verification from this generation's cache or verify it — with the local key
//! ring, or with the published keys of the external issuer its `iss` names — then check that
//! it was not revoked since.

use std::sync::Arc;

use crate::auth::bearer::{
    bearer_credential, check_token68, claimed_issuer, identify, identify_external, Identity,
};
use crate::auth::jwt::{read_head, TokenHead};
use crate::config::IssuerSettings;
use crate::error::Failure;
use crate::error::TokenError;
use crate::state::{Shared, Snapshot};

/// Verify the bearer token, if any. `Ok(None)` when the request carries no bearer credentials.
pub async fn authenticate(
    shared: &Shared,
    snapshot: &Snapshot,
    headers: &http::HeaderMap,
    now: u64,
) -> Result<Option<Arc<Identity>>, Failure> {
    let Some(token) = bearer_credential(headers)? else {
        return Ok(None);
    };
    // A cached token passed every check, its characters included, when it was verified.
    let identity = match snapshot.token_cache.get(token, now) {
        Some(identity) => identity,
        None => verify_and_cache(shared, snapshot, check_token68(token)?, now).await?,
    };
    if shared.revocations.is_revoked(&identity.revocation_key, now) {
        return Err(Failure::InvalidToken(TokenError::Revoked));
    }
    Ok(Some(identity))
}

/// Who `token` proves the caller is, from this generation's cache or verified now. Revocation
/// is not checked here.
pub async fn identity_of(
    shared: &Shared,
    snapshot: &Snapshot,
    token: &str,
    now: u64,
) -> Result<Arc<Identity>, TokenError> {
    if let Some(identity) = snapshot.token_cache.get(token.as_bytes(), now) {
        return Ok(identity);
    }
    verify_and_cache(shared, snapshot, token, now).await
}

/// A token the cache does not hold: verify it and keep the answer for this generation.
async fn verify_and_cache(
    shared: &Shared,
    snapshot: &Snapshot,
    token: &str,
    now: u64,
) -> Result<Arc<Identity>, TokenError> {
    let identity = verify(shared, snapshot, token, now).await?;
    snapshot
        .token_cache
        .insert(token.as_bytes(), identity.clone());
    Ok(identity)
}

/// A cache miss: verify with whichever issuer the token names.
async fn verify(
    shared: &Shared,
    snapshot: &Snapshot,
    token: &str,
    now: u64,
) -> Result<Arc<Identity>, TokenError> {
    let head = read_head(token)?;
    let config = &snapshot.config;
    let claimed = claimed_issuer(&head)?;
    let external = claimed.as_deref().and_then(|iss| {
        config
            .issuers
            .iter()
            .find(|issuer| issuer.policy.issuer == iss)
    });
    match external {
        None => identify(
            &snapshot.keys,
            &config.vocabulary,
            &config.users,
            token,
            now,
            &config.claim_paths,
        ),
        // Boxed: a key fetch's state is large, and unboxed it would be part of every
        // request's future (hyper moves that future, and on HTTP/2 spawns it per stream).
        Some(issuer) => {
            Box::pin(verify_external(shared, snapshot, issuer, token, &head, now)).await
        }
    }
}

/// An external issuer's token: its published keys only. A `kid` they lack may mean the
/// provider rotated: one refetch (shared, rate-limited by the cooldown), then a second try.
async fn verify_external(
    shared: &Shared,
    snapshot: &Snapshot,
    issuer: &IssuerSettings,
    token: &str,
    head: &TokenHead<'_>,
    now: u64,
) -> Result<Arc<Identity>, TokenError> {
    let store = shared
        .issuer_keys
        .get(&issuer.policy.name)
        .ok_or(TokenError::Internal)?;
    let vocabulary = &snapshot.config.vocabulary;
    let metrics = &shared.metrics;
    for first_try in [true, false] {
        let seen = store.generation();
        let Some(keys) = store.keys() else {
            if first_try && store.ensure_keys(seen, metrics).await {
                continue;
            }
            return Err(TokenError::UnknownKey);
        };
        let keep = &snapshot.config.claim_paths;
        match identify_external(&issuer.policy, &keys, vocabulary, token, head, now, keep) {
            Err(TokenError::UnknownKey)
                if first_try && store.refetch_for_unknown_kid(seen, metrics).await => {}
            outcome => return outcome,
        }
    }
    Err(TokenError::UnknownKey)
}
