//! TLS session tickets (stateless resumption): rustls' [`ProducesTickets`] with keys that
//! rotate every [`PERIOD_SECS`]. A ticket sealed in period N opens during N and N+1, so it is
//! good for at least one period and at most two; older keys are gone.
//!
//! Keys come either from fresh randomness per period (one process: keys are erased when they
//! age out), or from HKDF over a shared secret file and the period number, so every replica
//! holding the same file derives the same keys and resumes the others' sessions.
//!
//! A ticket is `key id (8) ‖ nonce (12) ‖ ChaCha20-Poly1305(session state) ‖ tag (16)`; the
//! key id is the associated data. Random nonces keep a key below the AEAD's limit as long as
//! a fleet sharing it seals fewer than 2^32 tickets per period (about 99 000 a second).

use std::fmt;
use std::sync::{RwLock, RwLockReadGuard};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};
use rustls::server::ProducesTickets;

/// How long one ticket key seals new tickets: 12 hours.
pub const PERIOD_SECS: u64 = 12 * 3600;
/// Bytes naming the key a ticket was sealed with.
const KEY_ID_LEN: usize = 8;
const KEY_LEN: usize = 32;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = KEY_ID_LEN + NONCE_LEN;
/// HKDF salt: ties derived keys to this use, so the same file used elsewhere gives other keys.
const HKDF_SALT: &[u8] = b"portcullis tls session tickets v1";

/// Where a period's key comes from.
enum KeySource {
    /// Fresh random keys; a past period's key cannot be made again.
    Random,
    /// HKDF-Expand of the shared secret with the period number.
    Derived(hkdf::Prk),
}

/// One period's sealing key.
struct PeriodKey {
    period: u64,
    id: [u8; KEY_ID_LEN],
    key: LessSafeKey,
}

/// The keys that open tickets now: the current period's (which also seals), the previous
/// one's, and, for derived keys, the next one's (a replica whose clock is a little ahead has
/// already moved on; deriving it gives nothing away that the file does not).
struct Window {
    current: PeriodKey,
    previous: Option<PeriodKey>,
    next: Option<PeriodKey>,
}

impl Window {
    fn opener(&self, id: &[u8]) -> Option<&PeriodKey> {
        [
            Some(&self.current),
            self.previous.as_ref(),
            self.next.as_ref(),
        ]
        .into_iter()
        .flatten()
        .find(|key| key.id == id)
    }
}

/// Seals and opens session tickets; one per process (or per shared secret), used by every
/// serving thread and every config generation.
pub struct TicketKeys {
    source: KeySource,
    window: RwLock<Window>,
    rng: SystemRandom,
}

impl fmt::Debug for TicketKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match self.source {
            KeySource::Random => "random",
            KeySource::Derived(_) => "derived",
        };
        f.debug_struct("TicketKeys")
            .field("source", &source)
            .finish()
    }
}

/// No ticket key could be made (the system's randomness or the crypto library failed).
#[derive(Debug, thiserror::Error)]
#[error("cannot make session ticket keys")]
pub struct NoTicketKey;

impl TicketKeys {
    /// Random keys, rotated every period.
    pub fn random() -> Result<TicketKeys, NoTicketKey> {
        Self::new(KeySource::Random, crate::clock::unix_now())
    }

    /// Keys derived from `secret` (the bytes of `tls.session_ticket_key`).
    pub fn derived(secret: &[u8]) -> Result<TicketKeys, NoTicketKey> {
        Self::derived_at(secret, crate::clock::unix_now())
    }

    fn derived_at(secret: &[u8], now: u64) -> Result<TicketKeys, NoTicketKey> {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT).extract(secret);
        Self::new(KeySource::Derived(prk), now)
    }

    fn new(source: KeySource, now: u64) -> Result<TicketKeys, NoTicketKey> {
        let rng = SystemRandom::new();
        let period = now / PERIOD_SECS;
        let window = match &source {
            KeySource::Random => Window {
                current: random_key(&rng, period)?,
                previous: None,
                next: None,
            },
            KeySource::Derived(prk) => derived_window(prk, period).ok_or(NoTicketKey)?,
        };
        Ok(TicketKeys {
            source,
            window: RwLock::new(window),
            rng,
        })
    }

    /// The window for the period `now` falls in, rotated first if that period has begun. A
    /// clock that steps back keeps the newer keys.
    fn window_at(&self, now: u64) -> RwLockReadGuard<'_, Window> {
        let period = now / PERIOD_SECS;
        {
            let window = read(&self.window);
            if window.current.period >= period {
                return window;
            }
        }
        let mut window = self.window.write().unwrap_or_else(|p| p.into_inner());
        if window.current.period < period {
            match &self.source {
                // A failure keeps sealing with the old key a while longer: tickets then live
                // longer than planned, which beats none at all.
                KeySource::Derived(prk) => {
                    if let Some(rotated) = derived_window(prk, period) {
                        *window = rotated;
                    }
                }
                KeySource::Random => {
                    if let Ok(current) = random_key(&self.rng, period) {
                        let old = std::mem::replace(&mut window.current, current);
                        window.previous = (old.period + 1 == period).then_some(old);
                    }
                }
            }
        }
        drop(window);
        read(&self.window)
    }

    fn seal_at(&self, plain: &[u8], now: u64) -> Option<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).ok()?;
        let window = self.window_at(now);
        let key = &window.current;
        let mut ticket = Vec::with_capacity(HEADER_LEN + plain.len() + TAG_LEN);
        ticket.extend_from_slice(&key.id);
        ticket.extend_from_slice(&nonce);
        ticket.extend_from_slice(plain);
        let tag = key
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(key.id),
                &mut ticket[HEADER_LEN..],
            )
            .ok()?;
        ticket.extend_from_slice(tag.as_ref());
        Some(ticket)
    }

    fn open_at(&self, ticket: &[u8], now: u64) -> Option<Vec<u8>> {
        if ticket.len() < HEADER_LEN + TAG_LEN {
            return None;
        }
        let (id, rest) = ticket.split_at(KEY_ID_LEN);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let window = self.window_at(now);
        let key = window.opener(id)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buffer = sealed.to_vec();
        let plain_len = key
            .key
            .open_in_place(nonce, Aad::from(id), &mut buffer)
            .ok()?
            .len();
        buffer.truncate(plain_len);
        Some(buffer)
    }
}

impl ProducesTickets for TicketKeys {
    fn enabled(&self) -> bool {
        true
    }

    /// The hint clients get: one period, the least a ticket stays good for.
    fn lifetime(&self) -> u32 {
        PERIOD_SECS as u32
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.seal_at(plain, crate::clock::unix_now())
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        self.open_at(cipher, crate::clock::unix_now())
    }
}

fn read(window: &RwLock<Window>) -> RwLockReadGuard<'_, Window> {
    window.read().unwrap_or_else(|p| p.into_inner())
}

fn random_key(rng: &SystemRandom, period: u64) -> Result<PeriodKey, NoTicketKey> {
    let mut id = [0u8; KEY_ID_LEN];
    let mut bytes = [0u8; KEY_LEN];
    rng.fill(&mut id).map_err(|_| NoTicketKey)?;
    rng.fill(&mut bytes).map_err(|_| NoTicketKey)?;
    period_key(period, id, &bytes).ok_or(NoTicketKey)
}

fn derived_window(prk: &hkdf::Prk, period: u64) -> Option<Window> {
    let previous = match period.checked_sub(1) {
        Some(p) => Some(derived_key(prk, p)?),
        None => None,
    };
    Some(Window {
        current: derived_key(prk, period)?,
        previous,
        next: Some(derived_key(prk, period + 1)?),
    })
}

/// The key and key id for `period`, from separate HKDF outputs.
fn derived_key(prk: &hkdf::Prk, period: u64) -> Option<PeriodKey> {
    let period_bytes = period.to_be_bytes();
    let mut id = [0u8; KEY_ID_LEN];
    let mut bytes = [0u8; KEY_LEN];
    expand(prk, b"ticket key id", &period_bytes, &mut id)?;
    expand(prk, b"ticket key", &period_bytes, &mut bytes)?;
    period_key(period, id, &bytes)
}

fn expand(prk: &hkdf::Prk, label: &[u8], period: &[u8], out: &mut [u8]) -> Option<()> {
    let info = [label, period];
    prk.expand(&info, Len(out.len())).ok()?.fill(out).ok()
}

fn period_key(period: u64, id: [u8; KEY_ID_LEN], bytes: &[u8; KEY_LEN]) -> Option<PeriodKey> {
    let key = UnboundKey::new(&CHACHA20_POLY1305, bytes).ok()?;
    Some(PeriodKey {
        period,
        id,
        key: LessSafeKey::new(key),
    })
}

/// An HKDF output length.
struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-fleet";
    const PLAIN: &[u8] = b"resumption state";
    /// Some moment well inside a period.
    const T0: u64 = 1_700_000_000 / PERIOD_SECS * PERIOD_SECS + 100;

    fn random_at(now: u64) -> TicketKeys {
        TicketKeys::new(KeySource::Random, now).unwrap_or_else(|e| panic!("{e}"))
    }

    fn derived_at(secret: &[u8], now: u64) -> TicketKeys {
        TicketKeys::derived_at(secret, now).unwrap_or_else(|e| panic!("{e}"))
    }

    fn seal(keys: &TicketKeys, now: u64) -> Vec<u8> {
        keys.seal_at(PLAIN, now).unwrap_or_else(|| panic!("sealed"))
    }

    #[test]
    fn a_sealed_ticket_opens_to_its_plaintext_and_hides_it() {
        for keys in [random_at(T0), derived_at(SECRET, T0)] {
            let ticket = seal(&keys, T0);
            assert_eq!(ticket.len(), HEADER_LEN + PLAIN.len() + TAG_LEN);
            assert!(!ticket.windows(PLAIN.len()).any(|w| w == PLAIN));
            assert_eq!(keys.open_at(&ticket, T0 + 5).as_deref(), Some(PLAIN));
        }
    }

    #[test]
    fn two_tickets_of_the_same_state_differ() {
        let keys = random_at(T0);
        assert_ne!(seal(&keys, T0), seal(&keys, T0));
    }

    #[test]
    fn any_changed_byte_or_a_cut_ticket_opens_to_nothing() {
        let keys = derived_at(SECRET, T0);
        let ticket = seal(&keys, T0);
        for at in 0..ticket.len() {
            let mut tampered = ticket.clone();
            tampered[at] ^= 0x01;
            assert_eq!(keys.open_at(&tampered, T0), None, "byte {at} flipped");
        }
        for len in 0..ticket.len() {
            assert_eq!(keys.open_at(&ticket[..len], T0), None, "cut to {len}");
        }
        assert_eq!(keys.open_at(&[], T0), None);
    }

    #[test]
    fn a_ticket_opens_in_the_next_period_and_not_in_the_one_after() {
        for keys in [random_at(T0), derived_at(SECRET, T0)] {
            let ticket = seal(&keys, T0);
            let next = T0 + PERIOD_SECS;
            // Sealing in the next period rotates: the old key only opens now.
            let fresh = seal(&keys, next);
            assert_ne!(fresh[..KEY_ID_LEN], ticket[..KEY_ID_LEN]);
            assert_eq!(keys.open_at(&ticket, next).as_deref(), Some(PLAIN));
            assert_eq!(keys.open_at(&fresh, next).as_deref(), Some(PLAIN));
            let after = T0 + 2 * PERIOD_SECS;
            assert_eq!(keys.open_at(&ticket, after), None);
            assert_eq!(keys.open_at(&fresh, after).as_deref(), Some(PLAIN));
        }
    }

    #[test]
    fn random_keys_idle_for_two_periods_keep_no_old_key() {
        let keys = random_at(T0);
        let ticket = seal(&keys, T0);
        assert_eq!(keys.open_at(&ticket, T0 + 3 * PERIOD_SECS), None);
        // A clock that steps back again does not bring the erased key back.
        assert_eq!(keys.open_at(&ticket, T0), None);
    }

    #[test]
    fn the_same_secret_opens_the_other_replicas_tickets_and_another_does_not() {
        let a = derived_at(SECRET, T0);
        let b = derived_at(SECRET, T0 + 60);
        let other = derived_at(b"another fleet's secret, 32 bytes or more", T0);
        let ticket = seal(&a, T0);
        assert_eq!(b.open_at(&ticket, T0 + 60).as_deref(), Some(PLAIN));
        assert_eq!(other.open_at(&ticket, T0), None);
        // Two processes with random keys share nothing.
        assert_eq!(random_at(T0).open_at(&seal(&random_at(T0), T0), T0), None);
    }

    #[test]
    fn a_replica_whose_clock_is_a_period_behind_still_opens_a_ticket() {
        let ahead = derived_at(SECRET, T0 + PERIOD_SECS);
        let behind = derived_at(SECRET, T0);
        let ticket = seal(&ahead, T0 + PERIOD_SECS);
        assert_eq!(behind.open_at(&ticket, T0).as_deref(), Some(PLAIN));
        let far_ahead = derived_at(SECRET, T0 + 2 * PERIOD_SECS);
        let ticket = seal(&far_ahead, T0 + 2 * PERIOD_SECS);
        assert_eq!(behind.open_at(&ticket, T0), None);
    }

    #[test]
    fn the_lifetime_hint_is_one_period_and_the_debug_form_shows_no_key() {
        let keys = derived_at(SECRET, T0);
        assert_eq!(u64::from(keys.lifetime()), PERIOD_SECS);
        assert_eq!(format!("{keys:?}"), "TicketKeys { source: \"derived\" }");
    }
}
