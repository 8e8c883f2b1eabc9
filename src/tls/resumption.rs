//! Session resumption state that outlives config reloads: every `ServerConfig` the process
//! builds gets the same ticket keys and the same session cache, so a client that resumed
//! before a reload resumes after it (a new config with fresh keys would send every returning
//! client through a full handshake).

use std::sync::{Arc, Mutex, OnceLock};

use rustls::server::{ProducesTickets, ServerSessionMemoryCache, StoresServerSessions};
use rustls::ServerConfig;
use sha2::{Digest, Sha256};

use super::tickets::{NoTicketKey, TicketKeys};
use crate::config::TicketSecret;

/// Sessions kept for TLS 1.2 clients that resume by session id instead of by ticket.
const SESSION_CACHE_ENTRIES: usize = 4096;

/// The process's resumption state.
struct Resumption {
    /// Without `tls.session_ticket_key`: random keys for this process.
    random: Arc<TicketKeys>,
    /// With it: the keys derived from the last secret seen, by the secret's SHA-256, so a
    /// reload that keeps the file keeps the object.
    derived: Mutex<Option<([u8; 32], Arc<TicketKeys>)>>,
    cache: Arc<ServerSessionMemoryCache>,
}

fn resumption() -> Result<&'static Resumption, NoTicketKey> {
    static RESUMPTION: OnceLock<Resumption> = OnceLock::new();
    if let Some(resumption) = RESUMPTION.get() {
        return Ok(resumption);
    }
    let made = Resumption {
        random: Arc::new(TicketKeys::random()?),
        derived: Mutex::new(None),
        cache: ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES),
    };
    Ok(RESUMPTION.get_or_init(|| made))
}

/// Give `config` the process's ticket keys (derived from `secret` when there is one) and
/// session cache.
pub fn enable(config: &mut ServerConfig, secret: Option<&TicketSecret>) -> Result<(), NoTicketKey> {
    let resumption = resumption()?;
    let ticketer: Arc<dyn ProducesTickets> = match secret {
        None => resumption.random.clone(),
        Some(secret) => derived(resumption, secret.bytes())?,
    };
    config.ticketer = ticketer;
    config.session_storage = resumption.cache.clone() as Arc<dyn StoresServerSessions>;
    Ok(())
}

fn derived(resumption: &Resumption, secret: &[u8]) -> Result<Arc<TicketKeys>, NoTicketKey> {
    let fingerprint: [u8; 32] = Sha256::digest(secret).into();
    let mut last = resumption
        .derived
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((seen, keys)) = last.as_ref() {
        if *seen == fingerprint {
            return Ok(keys.clone());
        }
    }
    let keys = Arc::new(TicketKeys::derived(secret)?);
    *last = Some((fingerprint, keys.clone()));
    Ok(keys)
}
