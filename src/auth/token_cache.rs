//! Verified tokens, cached per config generation.
//!
//! Verifying an HS256 token costs a few microseconds (base64, HMAC, JSON); a client sends the
//! same token on every request, so verified tokens are cached. The cache lives in the config
//! snapshot and dies with it on reload. A hit still honours `exp` (and the caller checks
//! revocation); only tokens that passed every check are ever inserted.

use std::sync::Arc;

use dashmap::DashMap;

use crate::auth::bearer::Identity;

/// Verified tokens of one config generation, keyed by the exact token text.
///
/// Hashed with foldhash (randomly seeded per process) rather than SipHash: every request
/// hashes its whole token (hundreds of bytes) twice, once to pick the shard and once in it,
/// and SipHash made that most of a cache hit's cost. The seed keeps lookups of chosen tokens
/// from being steered into collisions.
#[derive(Debug)]
pub struct TokenCache {
    /// Keyed by the token's bytes, so a hit needs no UTF-8 check.
    entries: DashMap<Box<[u8]>, Arc<Identity>, foldhash::fast::RandomState>,
    max_entries: usize,
    leeway: u64,
}

impl TokenCache {
    /// A cache of at most `max_entries` tokens; `leeway` as in validation.
    pub fn new(max_entries: usize, leeway: u64) -> Self {
        TokenCache {
            entries: DashMap::with_hasher(foldhash::fast::RandomState::default()),
            max_entries,
            leeway,
        }
    }

    /// The cached identity for `token`, unless it has expired (then it is dropped).
    pub fn get(&self, token: &[u8], now: u64) -> Option<Arc<Identity>> {
        let hit = self.entries.get(token).map(|entry| entry.value().clone())?;
        if now >= hit.token.expires_at.saturating_add(self.leeway) {
            self.entries.remove(token);
            return None;
        }
        Some(hit)
    }

    /// Remember a verified token.
    pub fn insert(&self, token: &[u8], identity: Arc<Identity>) {
        if self.entries.len() >= self.max_entries {
            // Only tokens signed with our key get here, so a full cache means many live
            // clients, not an attack; starting over is cheap and bounded.
            self.entries.clear();
        }
        self.entries.insert(token.into(), identity);
    }

    /// Number of cached tokens.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
