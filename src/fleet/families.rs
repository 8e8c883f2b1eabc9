//! Refresh-token families in this process's memory (`state:` unset).
//!
//! Refreshing is rare next to proxying (once per access-token lifetime per client), so one
//! mutex over both tables is simpler than sharding and never on the request hot path.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use crate::auth::refresh::{Family, Rotation, RotationOutcome, TokenRecord, TokenState};

/// Upper bound on stored refresh tokens (used ones are kept until they expire, to detect
/// reuse); a full table refuses new logins' tokens instead of evicting live ones.
const MAX_TOKENS: usize = 1_000_000;

#[derive(Debug)]
struct StoredToken {
    family_id: String,
    state: TokenState,
    expires_at: u64,
}

#[derive(Debug)]
struct StoredFamily {
    family: Family,
    revoked: bool,
    /// Access tokens issued in the family, `(jti, exp)`: revoked with it.
    access: Vec<(String, u64)>,
}

#[derive(Debug, Default)]
struct Tables {
    tokens: HashMap<String, StoredToken>,
    families: HashMap<String, StoredFamily>,
}

/// The families and their tokens, by token digest.
#[derive(Debug, Default)]
pub struct MemoryFamilies {
    tables: Mutex<Tables>,
}

/// The table is full of live tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

impl MemoryFamilies {
    /// Start a family with its first token (digest) and first access token.
    pub fn create(
        &self,
        family: Family,
        digest: &str,
        token_expires_at: u64,
        access: (&str, u64),
        now: u64,
    ) -> Result<(), Full> {
        let mut tables = self.lock();
        if tables.tokens.len() >= MAX_TOKENS {
            tables.purge(now);
            if tables.tokens.len() >= MAX_TOKENS {
                return Err(Full);
            }
        }
        tables.tokens.insert(
            digest.to_owned(),
            StoredToken {
                family_id: family.id.clone(),
                state: TokenState::Current,
                expires_at: token_expires_at,
            },
        );
        tables.families.insert(
            family.id.clone(),
            StoredFamily {
                family,
                revoked: false,
                access: vec![(access.0.to_owned(), access.1)],
            },
        );
        Ok(())
    }

    /// What is known of the token with this digest.
    pub fn lookup(&self, digest: &str) -> Option<TokenRecord> {
        let tables = self.lock();
        let token = tables.tokens.get(digest)?;
        let family = tables.families.get(&token.family_id)?;
        Some(TokenRecord {
            family: family.family.clone(),
            family_revoked: family.revoked,
            state: token.state.clone(),
            expires_at: token.expires_at,
        })
    }

    /// Replace `rotation.old_digest` by `rotation.new_digest` if it is still current.
    pub fn rotate(&self, rotation: &Rotation<'_>) -> RotationOutcome {
        let mut tables = self.lock();
        let live = tables
            .families
            .get(rotation.family_id)
            .is_some_and(|f| !f.revoked);
        let Some(old) = tables.tokens.get_mut(rotation.old_digest) else {
            return RotationOutcome::Gone;
        };
        if !live {
            return RotationOutcome::Gone;
        }
        if let TokenState::Rotated { at, sealed } = &old.state {
            return RotationOutcome::AlreadyRotated {
                at: *at,
                sealed: sealed.clone(),
            };
        }
        old.state = TokenState::Rotated {
            at: rotation.now,
            sealed: rotation.sealed.to_owned(),
        };
        tables.tokens.insert(
            rotation.new_digest.to_owned(),
            StoredToken {
                family_id: rotation.family_id.to_owned(),
                state: TokenState::Current,
                expires_at: rotation.new_expires_at,
            },
        );
        if let Some(family) = tables.families.get_mut(rotation.family_id) {
            family.access.retain(|(_, exp)| *exp > rotation.now);
            family
                .access
                .push((rotation.access_jti.to_owned(), rotation.access_expires_at));
        }
        RotationOutcome::Rotated
    }

    /// End a family; the access tokens it issued that may still be live, to revoke.
    pub fn revoke(&self, family_id: &str, now: u64) -> Vec<(String, u64)> {
        let mut tables = self.lock();
        match tables.families.get_mut(family_id) {
            Some(family) if !family.revoked => {
                family.revoked = true;
                std::mem::take(&mut family.access)
                    .into_iter()
                    .filter(|(_, exp)| *exp > now)
                    .collect()
            }
            _ => Vec::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Tables {
    /// Forget expired tokens and the families none of whose tokens is left.
    fn purge(&mut self, now: u64) {
        self.tokens.retain(|_, t| t.expires_at > now);
        let families = &mut self.families;
        let tokens = &self.tokens;
        families.retain(|id, f| {
            f.family.expires_at > now && tokens.values().any(|t| &t.family_id == id)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn family(id: &str) -> Family {
        Family {
            id: id.into(),
            subject: "alex".into(),
            scopes: vec!["read".into()],
            credential_version: "cv".into(),
            expires_at: 1_000,
        }
    }

    fn rotation<'a>(old: &'a str, new: &'a str, now: u64) -> Rotation<'a> {
        Rotation {
            family_id: "f",
            old_digest: old,
            new_digest: new,
            new_expires_at: 500,
            sealed: "sealed",
            access_jti: new,
            access_expires_at: now + 60,
            now,
        }
    }

    #[test]
    fn one_rotation_wins_and_a_revoked_family_is_gone() {
        let store = MemoryFamilies::default();
        store
            .create(family("f"), "a", 100, ("j0", 160), 10)
            .unwrap();
        assert_eq!(
            store.rotate(&rotation("a", "b", 20)),
            RotationOutcome::Rotated
        );
        assert_eq!(
            store.rotate(&rotation("a", "c", 21)),
            RotationOutcome::AlreadyRotated {
                at: 20,
                sealed: "sealed".into()
            }
        );
        assert_eq!(store.lookup("b").unwrap().state, TokenState::Current);
        assert_eq!(store.lookup("c"), None);
        let live = store.revoke("f", 30);
        assert_eq!(live, vec![("j0".to_owned(), 160), ("b".to_owned(), 80)]);
        assert!(store.lookup("b").unwrap().family_revoked);
        assert_eq!(store.rotate(&rotation("b", "d", 31)), RotationOutcome::Gone);
        assert!(store.revoke("f", 32).is_empty(), "revoked once");
    }
}
