//! The per-app deployment lock, held as a lease so that a lock left by a dead
//! process expires instead of blocking forever, and numbered with a fencing token so
//! that a holder that lost its lease can tell.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::app::App;
use crate::error::{Error, Result};

/// Who holds a lock: the deployment's id and the process it runs in.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct LockHolder {
    /// The deployment's id.
    pub deployment: String,
    /// The process: `host:pid`, or any name that tells people where it runs.
    pub process: String,
}

impl LockHolder {
    /// A holder for `deployment` in this process.
    pub fn new(deployment: impl Into<String>) -> Self {
        LockHolder {
            deployment: deployment.into(),
            process: format!("pid {}", std::process::id()),
        }
    }
}

impl fmt::Display for LockHolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.deployment, self.process)
    }
}

impl fmt::Debug for LockHolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The number of one acquisition of an app's lock (a Chubby sequencer, a ZooKeeper
/// zxid).
///
/// Every time a new holder takes an app's lock, the lock gives a token greater than
/// every token it gave before for that app; a holder taking it again while it holds
/// it gets its own token back. Whoever acts for the holder can thus tell a stale
/// holder (a smaller token) from the current one. Tokens of different apps, or of
/// different [`Lock`] stores, are not comparable.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct FencingToken(pub u64);

impl FencingToken {
    /// The token after this one.
    pub fn next(self) -> FencingToken {
        FencingToken(self.0 + 1)
    }
}

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A lease-based lock per app, with fencing tokens.
///
/// The engine acquires it before observing the platform, renews it while it works,
/// and releases it when it ends. A holder that dies stops renewing; once its lease
/// has passed, the next [`Lock::acquire`] takes the lock over with a greater
/// [`FencingToken`], and the old holder's [`Lock::renew`] fails with
/// [`Error::Locked`]: a holder that lost its lease learns it at its next renewal, even
/// when the lock has been released since.
///
/// What a lock excludes is where its state lives:
/// - [`MemoryLock`]: deployments in one process (engines sharing the value;
///   [`MemoryLock::process`], the engine's default, is shared by every engine of the
///   process);
/// - [`RegisterLock`](crate::register::RegisterLock): every program whose store
///   reaches the same resources (the lock behind `DockerLock`, `SwarmLock` and
///   `PlatformLock`, for any store with an atomic create by name);
/// - `FileLock` (`bluegreen-local`): every process on one machine that uses the same
///   state directory;
/// - `DockerLock` (`bluegreen-docker`): every machine that deploys through one Docker
///   daemon; `SwarmLock`: every machine that deploys to one swarm;
/// - `Ec2Lock` (`bluegreen-aws`): every machine that reaches the AWS account and
///   region (and VPC);
/// - `PlatformLock` (`bluegreen-paas`): every machine that deploys through one
///   platform account (with one name prefix).
///
/// An implementation keeps, per app, the current holder with its token and lease,
/// and the last token it gave, also after a release. The testkit's
/// `conformance::lock_contract` checks the rules below.
#[async_trait]
pub trait Lock: Send + Sync {
    /// Takes the lock of `app` for `lease`, and returns the holder's token.
    ///
    /// # Behavior
    /// - Held by another holder whose lease has not passed: [`Error::Locked`] naming
    ///   that holder.
    /// - Held by `holder` itself with a live lease: the same token as before, with a
    ///   new lease (re-entry).
    /// - Held by `holder` itself with a passed lease (nobody took it since): either
    ///   the same token with a new lease, or taken anew as below; each implementation
    ///   says which.
    /// - Free, or held by another holder whose lease has passed: taken, with a new
    ///   lease and a token greater than every token given before for `app`.
    async fn acquire(
        &self,
        app: &App,
        holder: &LockHolder,
        lease: Duration,
    ) -> Result<FencingToken>;

    /// Extends the lease of `holder`, which took the lock with `token`.
    ///
    /// # Behavior
    /// - Held by `holder` with `token` and a live lease: the lease is set to `lease`
    ///   from now.
    /// - Held by `holder` with `token`, but its lease has passed (nobody took the lock
    ///   since): the renewal may succeed, or fail with [`Error::Locked`]; each
    ///   implementation says which.
    /// - Otherwise [`Error::Locked`]: held by another holder, held with another token
    ///   (taken over and taken again), or free (taken over and released, or released
    ///   by `holder`). A renewal never takes the lock.
    async fn renew(
        &self,
        app: &App,
        holder: &LockHolder,
        token: FencingToken,
        lease: Duration,
    ) -> Result<()>;

    /// Releases the lock that `holder` took with `token`.
    ///
    /// # Behavior
    /// - Held by `holder` with `token`: the lock is free. The last token given is
    ///   kept, so that the next holder's token is greater.
    /// - Otherwise nothing changes, and the call succeeds: releasing is idempotent, and
    ///   a stale holder cannot free the lock of the holder that replaced it.
    async fn release(&self, app: &App, holder: &LockHolder, token: FencingToken) -> Result<()>;
}

/// One app's entry in a [`MemoryLock`].
#[derive(Default)]
struct Entry {
    /// The last token given; the holder's, while there is one.
    token: FencingToken,
    /// The current holder and the end of its lease.
    holder: Option<(LockHolder, Instant)>,
}

/// A lock in this process's memory, on tokio's clock (so that a paused clock
/// expires leases too). Engines that share it exclude each other; nothing outside
/// this process sees it.
///
/// [`MemoryLock::process`] is the one every engine of the process uses unless given
/// another: two engines of one process deploying one app exclude each other. A
/// [`MemoryLock::new`] is a table of its own, shared only by the engines given it.
///
/// Tokens count from 1 per app. A holder whose lease passed while nobody took the
/// lock keeps it: its renewal succeeds, and taking it again gives the same token.
#[derive(Default)]
pub struct MemoryLock {
    held: Mutex<HashMap<App, Entry>>,
}

impl std::fmt::Debug for MemoryLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let held = self.held.lock().map(|h| h.len()).unwrap_or_default();
        f.debug_struct("MemoryLock").field("apps", &held).finish()
    }
}

impl MemoryLock {
    /// An empty lock table of its own.
    pub fn new() -> Self {
        MemoryLock::default()
    }

    /// This process's lock table: the same value on every call, the default lock of
    /// every [`Engine`](crate::Engine). Its leases run on the clock of the tokio
    /// runtime that calls it; programs that run several runtimes with paused clocks
    /// should give each its own [`MemoryLock::new`].
    ///
    /// That includes tests: cargo runs the tests of one file in one process, at the
    /// same time, each `#[tokio::test]` on a runtime (and, with `start_paused`, a
    /// clock) of its own. Two such tests whose engines deploy the same app through
    /// this table exclude each other, and a lease written on one test's paused clock
    /// is read on the other's: one of them fails with [`Error::Locked`] or sees a
    /// lease that never ends. Give each test's engines their own table
    /// (`Engine::new(..).with_lock(Arc::new(MemoryLock::new()))`), or distinct app
    /// names.
    pub fn process() -> Arc<MemoryLock> {
        static PROCESS: OnceLock<Arc<MemoryLock>> = OnceLock::new();
        PROCESS.get_or_init(|| Arc::new(MemoryLock::new())).clone()
    }

    /// The current holder of `app`'s lock, if its lease has not passed.
    pub fn holder(&self, app: &App) -> Option<LockHolder> {
        let held = self.held.lock().expect("lock table poisoned");
        held.get(app)
            .and_then(|e| e.holder.as_ref())
            .filter(|(_, until)| *until > Instant::now())
            .map(|(h, _)| h.clone())
    }
}

fn locked(app: &App, holder: &LockHolder) -> Error {
    Error::Locked {
        app: app.to_string(),
        holder: holder.to_string(),
    }
}

/// [`Error::Locked`] for a holder whose token is stale and whose lock is free now.
fn lost(app: &App, token: FencingToken) -> Error {
    Error::Locked {
        app: app.to_string(),
        holder: format!("none now (the lock was lost: token {token} is stale)"),
    }
}

#[async_trait]
impl Lock for MemoryLock {
    async fn acquire(
        &self,
        app: &App,
        holder: &LockHolder,
        lease: Duration,
    ) -> Result<FencingToken> {
        let mut held = self.held.lock().expect("lock table poisoned");
        let now = Instant::now();
        let entry = held.entry(app.clone()).or_default();
        match &entry.holder {
            Some((h, _)) if h == holder => {
                entry.holder = Some((holder.clone(), now + lease));
                return Ok(entry.token);
            }
            Some((other, until)) if *until > now => return Err(locked(app, other)),
            Some((other, _)) => {
                tracing::warn!(%app, stale = %other, "taking over a lock whose lease passed");
            }
            None => {}
        }
        entry.token = entry.token.next();
        entry.holder = Some((holder.clone(), now + lease));
        Ok(entry.token)
    }

    async fn renew(
        &self,
        app: &App,
        holder: &LockHolder,
        token: FencingToken,
        lease: Duration,
    ) -> Result<()> {
        let mut held = self.held.lock().expect("lock table poisoned");
        match held.get_mut(app) {
            Some(Entry {
                token: current,
                holder: Some((h, until)),
            }) => {
                if h != holder || *current != token {
                    return Err(locked(app, h));
                }
                *until = Instant::now() + lease;
                Ok(())
            }
            _ => Err(lost(app, token)),
        }
    }

    async fn release(&self, app: &App, holder: &LockHolder, token: FencingToken) -> Result<()> {
        let mut held = self.held.lock().expect("lock table poisoned");
        if let Some(entry) = held.get_mut(app) {
            if entry.token == token && entry.holder.as_ref().is_some_and(|(h, _)| h == holder) {
                entry.holder = None;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    const LEASE: Duration = Duration::from_secs(30);

    fn app() -> App {
        App::new("web", "prod").unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn lease_expires() {
        let lock = MemoryLock::new();
        let app = app();
        let a = LockHolder::new("d-a");
        let b = LockHolder::new("d-b");
        let ta = lock.acquire(&app, &a, LEASE).await.unwrap();
        let e = lock.acquire(&app, &b, LEASE).await.unwrap_err();
        assert!(e.to_string().contains("d-a"), "{e}");
        tokio::time::advance(LEASE + Duration::from_secs(1)).await;
        let tb = lock.acquire(&app, &b, LEASE).await.unwrap();
        assert!(tb > ta, "{tb} > {ta}");
        assert!(lock.renew(&app, &a, ta, LEASE).await.is_err());
        lock.release(&app, &a, ta).await.unwrap();
        assert_eq!(lock.holder(&app), Some(b.clone()));
        lock.release(&app, &b, tb).await.unwrap();
        assert_eq!(lock.holder(&app), None);
    }

    /// The defect found by trials: a holder whose lease passed, while another took the
    /// lock and released it, got `Ok` from `renew` and held the lock again.
    #[tokio::test(start_paused = true)]
    async fn a_holder_that_lost_its_lease_cannot_renew_a_released_lock() {
        let lock = MemoryLock::new();
        let app = app();
        let (a, b) = (LockHolder::new("d-a"), LockHolder::new("d-b"));
        let ta = lock.acquire(&app, &a, LEASE).await.unwrap();
        tokio::time::advance(LEASE + Duration::from_secs(1)).await;
        let tb = lock.acquire(&app, &b, LEASE).await.unwrap();
        lock.release(&app, &b, tb).await.unwrap();

        let e = lock.renew(&app, &a, ta, LEASE).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Locked, "{e}");
        assert_eq!(lock.holder(&app), None, "a failed renewal takes nothing");
        lock.release(&app, &a, ta).await.unwrap();
        let c = LockHolder::new("d-c");
        let tc = lock.acquire(&app, &c, LEASE).await.unwrap();
        assert!(tc > tb, "{tc} > {tb}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_holder_may_renew_its_passed_lease_while_nobody_took_it() {
        let lock = MemoryLock::new();
        let app = app();
        let a = LockHolder::new("d-a");
        let ta = lock.acquire(&app, &a, LEASE).await.unwrap();
        tokio::time::advance(LEASE * 2).await;
        lock.renew(&app, &a, ta, LEASE).await.unwrap();
        assert_eq!(lock.holder(&app), Some(a.clone()));
        assert_eq!(lock.acquire(&app, &a, LEASE).await.unwrap(), ta);
    }

    #[test]
    fn tokens_print_and_serialize_as_numbers() {
        let t = FencingToken(42);
        assert_eq!(t.to_string(), "42");
        assert_eq!(serde_json::to_string(&t).unwrap(), "42");
        assert_eq!(
            serde_json::from_str::<FencingToken>("43").unwrap(),
            t.next()
        );
    }
}
