//! The authentication phase of a proxied request (and of logout): find the bearer token,
//! reuse its verification from this generation's cache or verify it, then check that it was
//! not revoked since.

use std::sync::Arc;

use crate::auth::bearer::{bearer_token, identify, Identity};
use crate::error::Failure;
use crate::error::TokenError;
use crate::state::{Shared, Snapshot};

/// Verify the bearer token, if any. `Ok(None)` when the request carries no bearer credentials.
pub fn authenticate(
    shared: &Shared,
    snapshot: &Snapshot,
    headers: &http::HeaderMap,
    now: u64,
) -> Result<Option<Arc<Identity>>, Failure> {
    let Some(token) = bearer_token(headers)? else {
        return Ok(None);
    };
    let identity = match snapshot.token_cache.get(token, now) {
        Some(identity) => identity,
        None => {
            let config = &snapshot.config;
            let identity = identify(
                &snapshot.keys,
                &config.vocabulary,
                &config.users,
                token,
                now,
            )?;
            snapshot.token_cache.insert(token, identity.clone());
            identity
        }
    };
    if shared.revocations.is_revoked(&identity.revocation_key, now) {
        return Err(Failure::InvalidToken(TokenError::Revoked));
    }
    Ok(Some(identity))
}
