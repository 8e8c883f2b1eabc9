//! Password hashes from configuration and their (deliberately slow) verification.
//!
//! Verification runs on a [`HashingPool`] of idle-priority threads, fewer than the cores,
//! gated by a semaphore sized to that pool and a bounded wait queue, so a login flood can
//! neither take CPU from the serving threads nor queue unbounded work: excess callers fail
//! fast with [`VerifyError::Busy`].
//!
//! Argon2's working memory (19 MiB at the OWASP parameters) is reused from a small pool
//! while logins keep coming, and freed when they stop. Allocating it per login let the
//! allocator's per-thread arenas keep hundreds of MiB resident under a login flood (350 MiB
//! measured); holding it forever would keep 19 MiB per core resident at idle.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use argon2::password_hash::{PasswordHash as Phc, PasswordHasher as _, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use rand::RngCore as _;
use tokio::sync::Semaphore;

use crate::auth::hashing_pool::HashingPool;

/// Longest password accepted; longer input is refused before any hashing work.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// OWASP minimum for argon2id (2023): m=19 MiB, t=2, p=1.
const OWASP_M_KIB: u32 = 19_456;
const OWASP_T: u32 = 2;
const OWASP_P: u32 = 1;
/// Refuse configured hashes demanding more than 1 GiB per verification (memory DoS).
const MAX_M_KIB: u32 = 1024 * 1024;
/// Working-memory buffers larger than this (64 MiB) are freed after use, not pooled.
const MAX_POOLED_BLOCKS: usize = 64 * 1024;
/// Working memory is reserved with at least this capacity (33 MiB; only the blocks a hash
/// uses are ever touched). That is above glibc's largest mmap threshold (32 MiB), so each
/// buffer is a mapping of its own and freeing it returns it to the OS instead of leaving it
/// resident in a thread's arena.
const MIN_CAPACITY_BLOCKS: usize = 33 * 1024;

/// A stored password hash, as written in the configuration.
#[derive(Clone, PartialEq, Eq)]
pub enum PasswordHash {
    /// PHC string, argon2id only.
    Argon2(String),
    /// Modular-crypt `$2a$`/`$2b$`/`$2y$`.
    Bcrypt(String),
}

// Hashes are offline-crackable: keep them out of `{:?}` output and logs.
impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Argon2(_) => f.write_str("Argon2(<redacted>)"),
            Self::Bcrypt(_) => f.write_str("Bcrypt(<redacted>)"),
        }
    }
}

/// Why a configured hash was refused. Never echoes the hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashFormatError {
    #[error("not a recognised password hash (expected `$argon2id$…` or `$2b$…`)")]
    Unrecognised,
    #[error("only argon2id is accepted, not argon2i or argon2d")]
    WeakArgon2Variant,
    #[error("malformed argon2id hash")]
    MalformedArgon2,
    #[error("argon2id memory cost above 1 GiB")]
    Argon2TooExpensive,
    #[error("argon2id salt shorter than 8 bytes, which argon2 cannot verify against; rehash with `portcullis hash-password`")]
    SaltTooShort,
    #[error("malformed bcrypt hash")]
    MalformedBcrypt,
}

/// Why a verification did not produce an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// Too many verifications running and waiting; the caller should answer 503.
    #[error("too many concurrent logins")]
    Busy,
    #[error("password too long")]
    TooLong,
    #[error("internal error")]
    Internal,
}

/// Why [`hash_password`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    #[error("password too long")]
    TooLong,
    #[error("hashing failed")]
    Internal,
}

impl PasswordHash {
    pub fn parse(s: &str) -> Result<Self, HashFormatError> {
        if s.starts_with("$argon2id$") {
            let phc = Phc::new(s).map_err(|_| HashFormatError::MalformedArgon2)?;
            let params = Params::try_from(&phc).map_err(|_| HashFormatError::MalformedArgon2)?;
            if phc.version.is_some_and(|v| v != u32::from(Version::V0x13)) || phc.hash.is_none() {
                return Err(HashFormatError::MalformedArgon2);
            }
            if params.m_cost() > MAX_M_KIB {
                return Err(HashFormatError::Argon2TooExpensive);
            }
            // Checked here so a hash that can never verify is a config error, not a 500.
            argon2_salt(&phc, &mut [0u8; SALT_BUF])?;
            Ok(Self::Argon2(s.to_owned()))
        } else if s.starts_with("$argon2i$") || s.starts_with("$argon2d$") {
            Err(HashFormatError::WeakArgon2Variant)
        } else if ["$2a$", "$2b$", "$2y$"].iter().any(|p| s.starts_with(p)) {
            s.parse::<bcrypt::HashParts>()
                .map_err(|_| HashFormatError::MalformedBcrypt)?;
            Ok(Self::Bcrypt(s.to_owned()))
        } else {
            Err(HashFormatError::Unrecognised)
        }
    }

    /// True for bcrypt, and for argon2id weaker than the OWASP minimum (m=19456, t=2, p=1):
    /// worth a warning suggesting a re-hash.
    pub fn is_deprecated(&self) -> bool {
        match self {
            Self::Bcrypt(_) => true,
            Self::Argon2(s) => match Phc::new(s).ok().and_then(|phc| Params::try_from(&phc).ok()) {
                Some(p) => p.m_cost() < OWASP_M_KIB || p.t_cost() < OWASP_T || p.p_cost() < OWASP_P,
                None => true,
            },
        }
    }

    /// The blocking check. bcrypt input over 71 bytes (72 with bcrypt's NUL) is refused (never
    /// matches) rather than silently truncated, so `password + anything` cannot log in.
    /// `memory` is argon2's working memory, grown as needed and left for the next caller.
    fn verify_blocking(
        &self,
        password: &[u8],
        memory: &mut Vec<Block>,
    ) -> Result<bool, VerifyError> {
        match self {
            Self::Argon2(s) => {
                verify_argon2(s, password, memory).map_err(|_| VerifyError::Internal)
            }
            Self::Bcrypt(s) => match bcrypt::non_truncating_verify(password, s) {
                Ok(ok) => Ok(ok),
                Err(bcrypt::BcryptError::Truncation(_)) => Ok(false),
                Err(_) => Err(VerifyError::Internal),
            },
        }
    }
}

/// Room for the longest salt a PHC string can carry (64 base64 characters).
const SALT_BUF: usize = 64;

/// The stored salt, decoded into `buf`: the same check at config load as at login.
fn argon2_salt<'b>(
    phc: &Phc<'_>,
    buf: &'b mut [u8; SALT_BUF],
) -> Result<&'b [u8], HashFormatError> {
    let salt = phc.salt.ok_or(HashFormatError::MalformedArgon2)?;
    let salt = salt
        .decode_b64(buf)
        .map_err(|_| HashFormatError::MalformedArgon2)?;
    if salt.len() < argon2::MIN_SALT_LEN {
        return Err(HashFormatError::SaltTooShort);
    }
    Ok(salt)
}

/// What `PasswordVerifier::verify_password` of the password-hash crate does, but hashing in
/// caller-provided memory. The comparison is constant-time (`Output`'s `PartialEq`).
fn verify_argon2(
    phc: &str,
    password: &[u8],
    memory: &mut Vec<Block>,
) -> Result<bool, argon2::password_hash::Error> {
    use argon2::password_hash::errors::InvalidValue;
    use argon2::password_hash::Error;
    let phc = Phc::new(phc)?;
    let expected = phc.hash.ok_or(Error::PhcStringField)?;
    let mut salt_buf = [0u8; SALT_BUF];
    let salt =
        argon2_salt(&phc, &mut salt_buf).map_err(|_| Error::SaltInvalid(InvalidValue::TooShort))?;
    // Includes the output length, taken from the stored hash.
    let params = Params::try_from(&phc)?;
    let blocks = params.block_count();
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    memory.resize(blocks, Block::default());
    let mut out = [0u8; argon2::password_hash::Output::MAX_LENGTH];
    let out = out.get_mut(..expected.len()).ok_or(Error::OutputSize {
        provided: std::cmp::Ordering::Greater,
        expected: argon2::password_hash::Output::MAX_LENGTH,
    })?;
    argon2.hash_password_into_with_memory(password, salt, out, &mut memory[..blocks])?;
    Ok(argon2::password_hash::Output::new(out)? == expected)
}

fn owasp_argon2() -> Result<Argon2<'static>, HashError> {
    let params =
        Params::new(OWASP_M_KIB, OWASP_T, OWASP_P, None).map_err(|_| HashError::Internal)?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Hash with argon2id at the OWASP parameters (m=19456 KiB, t=2, p=1) and a random salt.
/// Returns a PHC string. CPU-heavy: call from a blocking context.
pub fn hash_password(password: &[u8]) -> Result<String, HashError> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(HashError::TooLong);
    }
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|_| HashError::Internal)?;
    let hash = owasp_argon2()?
        .hash_password(password, &salt)
        .map_err(|_| HashError::Internal)?;
    Ok(hash.to_string())
}

/// Hash checked for unknown users so they cost the same as a wrong password.
fn dummy_hash() -> Result<&'static PasswordHash, VerifyError> {
    static DUMMY: OnceLock<Option<PasswordHash>> = OnceLock::new();
    DUMMY
        .get_or_init(|| {
            let mut pw = [0u8; 32];
            rand::rng().fill_bytes(&mut pw);
            hash_password(&pw).ok().map(PasswordHash::Argon2)
        })
        .as_ref()
        .ok_or(VerifyError::Internal)
}

/// Bounded, off-runtime password verification. Cheap to clone; clones share the limits.
#[derive(Clone, Debug)]
pub struct PasswordVerifier {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: HashingPool,
    permits: Arc<Semaphore>,
    total_permits: usize,
    waiting: AtomicUsize,
    queue: usize,
    /// Argon2 working memory, at most one buffer per permit.
    memory: Mutex<Vec<Vec<Block>>>,
}

/// Decrements the waiting count however the wait ends (including the future being dropped).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl PasswordVerifier {
    /// `permits` concurrent verifications on as many hashing threads (at least 1), at most
    /// `queue` callers waiting.
    pub fn new(permits: usize, queue: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                pool: HashingPool::new(permits),
                permits: Arc::new(Semaphore::new(permits.max(1))),
                total_permits: permits.max(1),
                waiting: AtomicUsize::new(0),
                queue,
                memory: Mutex::new(Vec::new()),
            }),
        }
    }

    /// One hashing thread fewer than the cores, and a queue of four callers per core.
    pub fn for_this_host() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Self::new(HashingPool::threads_for(cores), cores.saturating_mul(4))
    }

    /// `hash` = None for an unknown user: a dummy argon2id hash (OWASP parameters, computed
    /// once) is checked instead and the answer is `Ok(false)`, so timing matches a wrong
    /// password for users with OWASP-parameter hashes.
    pub async fn verify(
        &self,
        hash: Option<&PasswordHash>,
        password: &[u8],
    ) -> Result<bool, VerifyError> {
        if password.len() > MAX_PASSWORD_BYTES {
            return Err(VerifyError::TooLong);
        }
        let inner = &self.inner;
        let permit = match inner.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if inner.waiting.fetch_add(1, Ordering::AcqRel) >= inner.queue {
                    inner.waiting.fetch_sub(1, Ordering::AcqRel);
                    return Err(VerifyError::Busy);
                }
                let _waiting = Waiting(&inner.waiting);
                inner
                    .permits
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| VerifyError::Internal)?
            }
        };
        let hash = hash.cloned();
        let password = password.to_vec();
        let this = self.clone();
        // Given back when the first run ends: a second run (see `HashingPool::run`) must not
        // hold a permit that a run starved of CPU might keep for minutes.
        let permit = Mutex::new(Some(permit));
        let job = inner.pool.run(move || {
            let mut memory = this.take_memory();
            let verdict = match &hash {
                Some(h) => h.verify_blocking(&password, &mut memory),
                None => dummy_hash()
                    .and_then(|dummy| dummy.verify_blocking(&password, &mut memory).map(|_| false)),
            };
            this.return_memory(memory);
            drop(permit.lock().unwrap_or_else(|p| p.into_inner()).take());
            verdict
        });
        job.await.map_err(|_| VerifyError::Internal)?
    }

    fn take_memory(&self) -> Vec<Block> {
        let mut pool = self.inner.memory.lock().unwrap_or_else(|p| p.into_inner());
        pool.pop()
            .unwrap_or_else(|| Vec::with_capacity(MIN_CAPACITY_BLOCKS))
    }

    /// Called while the caller still holds its permit: keep the buffer only if another
    /// verification is running or waiting, so memory is recycled during a burst and given
    /// back once it ends.
    fn return_memory(&self, memory: Vec<Block>) {
        let inner = &self.inner;
        let others_running = inner.permits.available_permits() + 1 < inner.total_permits;
        let busy = others_running || inner.waiting.load(Ordering::Acquire) > 0;
        if busy && memory.len() <= MAX_POOLED_BLOCKS {
            let mut pool = self.inner.memory.lock().unwrap_or_else(|p| p.into_inner());
            pool.push(memory);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::PasswordVerifier as _;
    use std::time::{Duration, Instant};

    #[test]
    fn pooled_memory_verification_agrees_with_the_reference_across_parameters() {
        let mut memory = Vec::new();
        let salt = SaltString::encode_b64(b"sixteen byte slt").unwrap();
        for (m, t, out_len) in [
            (8, 1, 32),
            (19_456, 2, 32),
            (64, 3, 16),
            (8, 1, 64),
            (1024, 1, 32),
        ] {
            let params = Params::new(m, t, 1, Some(out_len)).unwrap();
            let hasher = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
            let phc = hasher.hash_password(b"right", &salt).unwrap().to_string();
            let parsed = Phc::new(&phc).unwrap();
            for attempt in [&b"right"[..], b"wrong", b""] {
                let reference = Argon2::default().verify_password(attempt, &parsed).is_ok();
                let pooled = verify_argon2(&phc, attempt, &mut memory).unwrap();
                assert_eq!(pooled, reference, "m={m} t={t} len={out_len}");
                assert_eq!(pooled, attempt == b"right");
            }
        }
    }

    #[tokio::test]
    async fn working_memory_is_kept_during_a_burst_and_freed_after_it() {
        let v = PasswordVerifier::new(2, 8);
        let h = argon(b"pw");
        // Alone: nothing is kept once the login is answered.
        assert_eq!(v.verify(Some(&h), b"pw").await, Ok(true));
        assert!(v.inner.memory.lock().unwrap().is_empty());
        // While another verification holds a permit, the buffer is kept for the next one.
        let other = v.inner.permits.clone().try_acquire_owned().unwrap();
        assert_eq!(v.verify(Some(&h), b"pw").await, Ok(true));
        {
            let pool = v.inner.memory.lock().unwrap();
            assert_eq!(pool.len(), 1);
            assert_eq!(pool[0].len(), OWASP_M_KIB as usize);
            assert!(pool[0].capacity() >= MIN_CAPACITY_BLOCKS);
        }
        // ...and reused rather than a second one allocated.
        assert_eq!(v.verify(Some(&h), b"pw").await, Ok(true));
        assert_eq!(v.inner.memory.lock().unwrap().len(), 1);
        drop(other);
    }

    fn argon(pw: &[u8]) -> PasswordHash {
        PasswordHash::parse(&hash_password(pw).expect("hash")).expect("parse")
    }

    #[tokio::test]
    async fn argon2_roundtrip() {
        let v = PasswordVerifier::new(2, 8);
        let h = argon(b"correct horse");
        assert!(!h.is_deprecated());
        assert_eq!(v.verify(Some(&h), b"correct horse").await, Ok(true));
        assert_eq!(v.verify(Some(&h), b"correct horsf").await, Ok(false));
        assert_eq!(v.verify(Some(&h), b"").await, Ok(false));
        assert_eq!(format!("{h:?}"), "Argon2(<redacted>)");
    }

    #[tokio::test]
    async fn bcrypt_verify() {
        let v = PasswordVerifier::new(1, 1);
        let h = PasswordHash::parse(&bcrypt::hash("hunter2", 4).expect("bcrypt")).expect("parse");
        assert!(h.is_deprecated());
        assert_eq!(v.verify(Some(&h), b"hunter2").await, Ok(true));
        assert_eq!(v.verify(Some(&h), b"hunter3").await, Ok(false));
        // bcrypt would truncate past 71 bytes (72 with its NUL); we refuse instead.
        let long = "a".repeat(71);
        let h = PasswordHash::parse(&bcrypt::hash(&long, 4).expect("bcrypt")).expect("parse");
        assert_eq!(v.verify(Some(&h), long.as_bytes()).await, Ok(true));
        assert_eq!(
            v.verify(Some(&h), format!("{long}zzz").as_bytes()).await,
            Ok(false)
        );
    }

    #[tokio::test]
    async fn unknown_user_runs_argon2_and_fails() {
        let v = PasswordVerifier::new(1, 1);
        dummy_hash().expect("dummy");
        let start = Instant::now();
        assert_eq!(v.verify(None, b"anything").await, Ok(false));
        assert!(start.elapsed() > Duration::from_millis(1));
    }

    #[tokio::test]
    async fn too_long() {
        let v = PasswordVerifier::new(1, 1);
        let pw = vec![b'a'; MAX_PASSWORD_BYTES + 1];
        assert_eq!(v.verify(None, &pw).await, Err(VerifyError::TooLong));
        assert_eq!(hash_password(&pw), Err(HashError::TooLong));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn busy_when_queue_full() {
        let v = PasswordVerifier::new(1, 0);
        let h = argon(b"pw");
        // Hold the only permit, as a running verification would.
        let held = v.inner.permits.clone().try_acquire_owned().expect("permit");
        assert_eq!(v.verify(Some(&h), b"pw").await, Err(VerifyError::Busy));
        drop(held);
        assert_eq!(v.verify(Some(&h), b"pw").await, Ok(true));

        // queue = 1: one waiter is admitted, the next is refused.
        let v = PasswordVerifier::new(1, 1);
        let held = v.inner.permits.clone().try_acquire_owned().expect("permit");
        let (v2, h2) = (v.clone(), h.clone());
        let waiter = tokio::spawn(async move { v2.verify(Some(&h2), b"pw").await });
        while v.inner.waiting.load(Ordering::Acquire) == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(v.verify(Some(&h), b"pw").await, Err(VerifyError::Busy));
        drop(held);
        assert_eq!(waiter.await.expect("join"), Ok(true));
        assert_eq!(v.inner.waiting.load(Ordering::Acquire), 0);
    }

    #[tokio::test]
    async fn permit_held_until_hashing_ends() {
        let v = PasswordVerifier::new(1, 0);
        let h = argon(b"pw");
        let (v2, h2) = (v.clone(), h.clone());
        let running = tokio::spawn(async move { v2.verify(Some(&h2), b"pw").await });
        while v.inner.permits.available_permits() == 1 {
            tokio::task::yield_now().await;
        }
        running.abort(); // the caller gives up; the blocking hash still owns the permit
        assert_eq!(v.verify(Some(&h), b"pw").await, Err(VerifyError::Busy));
    }

    #[test]
    fn parse_rules() {
        use HashFormatError::*;
        let weak = "$argon2id$v=19$m=4096,t=1,p=1$c29tZXNhbHRzb21lc2FsdA$9Jw1ALyIEyYwS5Sj7ZqCjQvzhzMzS8Ao6xs0EH6Qtv4";
        assert!(PasswordHash::parse(weak).expect("weak").is_deprecated());
        let i = weak.replace("argon2id", "argon2i");
        assert_eq!(PasswordHash::parse(&i), Err(WeakArgon2Variant));
        assert_eq!(
            PasswordHash::parse(&weak.replace("argon2id", "argon2d")),
            Err(WeakArgon2Variant)
        );
        assert_eq!(
            PasswordHash::parse("$argon2id$garbage"),
            Err(MalformedArgon2)
        );
        let huge = weak.replace("m=4096", "m=4194304");
        assert_eq!(PasswordHash::parse(&huge), Err(Argon2TooExpensive));
        // argon2 needs at least 8 bytes of salt: `salt` (4) cannot verify, `saltsalt` can.
        let short_salt = weak.replace("c29tZXNhbHRzb21lc2FsdA", "c2FsdA");
        assert_eq!(PasswordHash::parse(&short_salt), Err(SaltTooShort));
        let eight = weak.replace("c29tZXNhbHRzb21lc2FsdA", "c2FsdHNhbHQ");
        assert!(PasswordHash::parse(&eight).is_ok());
        assert_eq!(PasswordHash::parse("$2b$04$short"), Err(MalformedBcrypt));
        for s in [
            "",
            "hunter2",
            "$1$abc",
            "$2x$04$abcdefghijklmnopqrstuu",
            "{SSHA}abc",
        ] {
            assert_eq!(PasswordHash::parse(s), Err(Unrecognised), "{s}");
        }
    }
}
