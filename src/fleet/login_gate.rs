//! Login regulation across the fleet: the same rules as `auth::lockout` (failures per
//! username and per address, attempts counted before hashing so concurrent guesses cannot
//! outrun the threshold), counted in this process or, with `state.redis`, in Redis, so a
//! sprayer gains nothing by spreading guesses over replicas.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::redis_state::{LoginGate, RedisState, Unavailable};
use super::Fleet;
use crate::auth::lockout::{retry_after, Attempt, Lockouts, Refusal};

/// One login attempt, counted against both keys while its password is checked. Dropped
/// unsettled, it is refunded.
#[derive(Debug)]
#[must_use = "an admission holds its place until settled or dropped"]
pub enum Admission<'a> {
    Local {
        user: Attempt<'a>,
        address: Attempt<'a>,
        users: &'a Lockouts,
        username: String,
    },
    Shared(SharedAttempt<'a>),
}

/// An attempt counted in Redis.
#[derive(Debug)]
pub struct SharedAttempt<'a> {
    state: Arc<RedisState>,
    _borrows: std::marker::PhantomData<&'a ()>,
    user: String,
    address: String,
    policy: crate::auth::lockout::LockoutPolicy,
    settled: bool,
}

/// Why a login may not go ahead.
#[derive(Debug)]
pub enum GateRefusal {
    Refused(Refusal),
    /// Redis is unreachable and logins fail closed.
    Unavailable(Unavailable),
}

/// The two local tables, for memory mode and for `fail_open`.
#[derive(Debug, Clone, Copy)]
pub struct LocalTables<'a> {
    pub users: &'a Lockouts,
    pub addresses: &'a Lockouts,
}

impl Fleet {
    /// Count an attempt for `username` from `address` (its lockout key), or refuse it.
    pub async fn begin_login<'a>(
        &'a self,
        local: LocalTables<'a>,
        username: &str,
        address: &str,
    ) -> Result<Admission<'a>, GateRefusal> {
        let Fleet::Redis(state) = self else {
            return begin_local(local, username, address);
        };
        let policy = *local.users.policy();
        match state.login_begin(username, address, &policy).await {
            Ok(LoginGate::Admitted) => Ok(Admission::Shared(SharedAttempt {
                state: state.clone(),
                _borrows: std::marker::PhantomData,
                user: username.to_owned(),
                address: address.to_owned(),
                policy,
                settled: false,
            })),
            Ok(LoginGate::Locked(left)) => {
                Err(GateRefusal::Refused(Refusal::Locked(retry_after(left))))
            }
            Ok(LoginGate::Settling) => Err(GateRefusal::Refused(Refusal::Locked(
                Duration::from_secs(1),
            ))),
            Err(_) if state.settings.login_fail_open => {
                tracing::warn!("shared state unavailable: login regulated by this replica alone");
                begin_local(local, username, address)
            }
            Err(err) => Err(GateRefusal::Unavailable(err)),
        }
    }
}

fn begin_local<'a>(
    local: LocalTables<'a>,
    username: &str,
    address: &str,
) -> Result<Admission<'a>, GateRefusal> {
    let now = Instant::now();
    let user = local
        .users
        .begin(username, now)
        .map_err(GateRefusal::Refused)?;
    let address = local
        .addresses
        .begin(address, now)
        .map_err(GateRefusal::Refused)?;
    Ok(Admission::Local {
        user,
        address,
        users: local.users,
        username: username.to_owned(),
    })
}

impl Admission<'_> {
    /// The password was wrong: count it. `Some(retry_after)` if either key is now locked.
    pub async fn failed(self) -> Option<Duration> {
        match self {
            Admission::Local { user, address, .. } => {
                let now = Instant::now();
                let user = user.failed(now);
                let address = address.failed(now);
                user.or(address)
            }
            Admission::Shared(mut attempt) => {
                attempt.settled = true;
                attempt.settle("fail").await.map(retry_after)
            }
        }
    }

    /// The password was right. `Err(retry_after)` if a key was locked meanwhile: that lock
    /// wins over the password.
    pub async fn succeeded(self) -> Result<(), Duration> {
        match self {
            Admission::Local {
                user,
                address,
                users,
                username,
            } => {
                let now = Instant::now();
                let user_locked = user.succeeded(now).err();
                let address_locked = address.succeeded(now).err();
                if let Some(left) = user_locked.or(address_locked) {
                    return Err(left);
                }
                // Only the username's counter: a valid account must not reset its address's
                // counter between guesses at other accounts.
                users.record_success(&username);
                Ok(())
            }
            Admission::Shared(mut attempt) => {
                attempt.settled = true;
                match attempt.settle("ok").await {
                    Some(left) => Err(retry_after(left)),
                    None => Ok(()),
                }
            }
        }
    }
}

impl SharedAttempt<'_> {
    /// A settlement Redis did not take leaves the attempt counted until its key expires:
    /// the safe side.
    async fn settle(&self, outcome: &'static str) -> Option<Duration> {
        self.state
            .login_settle(&self.user, &self.address, &self.policy, outcome)
            .await
            .unwrap_or_else(|err| {
                tracing::warn!(error = %err, "login attempt could not be settled in Redis");
                None
            })
    }
}

impl Drop for SharedAttempt<'_> {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        // Refund asynchronously: the client left (or hashing could not run) and nothing was
        // learned about the password. The clones let the task outlive this borrow.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (user, address, policy) = (self.user.clone(), self.address.clone(), self.policy);
        let state = self.state.clone();
        runtime.spawn(async move {
            let _ = state.login_settle(&user, &address, &policy, "refund").await;
        });
    }
}
