//! The per-app deployment lock, held as a lease so that a lock left by a dead
//! process expires instead of blocking forever.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
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

/// A lease-based lock per app.
///
/// The engine acquires it before observing the platform, renews it while it works,
/// and releases it when it ends. A holder that dies stops renewing; once its lease
/// has passed, the next [`Lock::acquire`] takes the lock over.
#[async_trait]
pub trait Lock: Send + Sync {
    /// Takes the lock of `app` for `lease`.
    ///
    /// # Behavior
    /// - Held by another holder whose lease has not passed:
    ///   [`Error::Locked`] naming that holder.
    /// - Held by `holder` itself, or by anyone with a passed lease: taken, with a new
    ///   lease.
    async fn acquire(&self, app: &App, holder: &LockHolder, lease: Duration) -> Result<()>;

    /// Extends `holder`'s lease.
    ///
    /// # Behavior
    /// The lock lost to another holder (after the lease passed) is [`Error::Locked`].
    async fn renew(&self, app: &App, holder: &LockHolder, lease: Duration) -> Result<()>;

    /// Releases the lock.
    ///
    /// # Behavior
    /// Idempotent: releasing a lock that `holder` does not hold succeeds and changes
    /// nothing.
    async fn release(&self, app: &App, holder: &LockHolder) -> Result<()>;
}

/// A lock in this process's memory, on tokio's clock (so that a paused clock
/// expires leases too). Engines that share it exclude each other.
#[derive(Default)]
pub struct MemoryLock {
    held: Mutex<HashMap<App, (LockHolder, Instant)>>,
}

impl MemoryLock {
    /// An empty lock table.
    pub fn new() -> Self {
        MemoryLock::default()
    }

    /// The current holder of `app`'s lock, if its lease has not passed.
    pub fn holder(&self, app: &App) -> Option<LockHolder> {
        let held = self.held.lock().expect("lock table poisoned");
        held.get(app)
            .filter(|(_, until)| *until > Instant::now())
            .map(|(h, _)| h.clone())
    }
}

#[async_trait]
impl Lock for MemoryLock {
    async fn acquire(&self, app: &App, holder: &LockHolder, lease: Duration) -> Result<()> {
        let mut held = self.held.lock().expect("lock table poisoned");
        let now = Instant::now();
        if let Some((other, until)) = held.get(app) {
            if other != holder && *until > now {
                return Err(Error::Locked {
                    app: app.to_string(),
                    holder: other.to_string(),
                });
            }
            if other != holder {
                tracing::warn!(%app, stale = %other, "taking over a lock whose lease passed");
            }
        }
        held.insert(app.clone(), (holder.clone(), now + lease));
        Ok(())
    }

    async fn renew(&self, app: &App, holder: &LockHolder, lease: Duration) -> Result<()> {
        let mut held = self.held.lock().expect("lock table poisoned");
        match held.get_mut(app) {
            Some((h, until)) if h == holder => {
                *until = Instant::now() + lease;
                Ok(())
            }
            Some((other, _)) => Err(Error::Locked {
                app: app.to_string(),
                holder: other.to_string(),
            }),
            None => {
                held.insert(app.clone(), (holder.clone(), Instant::now() + lease));
                Ok(())
            }
        }
    }

    async fn release(&self, app: &App, holder: &LockHolder) -> Result<()> {
        let mut held = self.held.lock().expect("lock table poisoned");
        if held.get(app).is_some_and(|(h, _)| h == holder) {
            held.remove(app);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn lease_expires() {
        let lock = MemoryLock::new();
        let app = App::new("web", "prod").unwrap();
        let a = LockHolder::new("d-a");
        let b = LockHolder::new("d-b");
        lock.acquire(&app, &a, Duration::from_secs(30))
            .await
            .unwrap();
        let e = lock
            .acquire(&app, &b, Duration::from_secs(30))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("d-a"), "{e}");
        tokio::time::advance(Duration::from_secs(31)).await;
        lock.acquire(&app, &b, Duration::from_secs(30))
            .await
            .unwrap();
        assert!(lock.renew(&app, &a, Duration::from_secs(30)).await.is_err());
        lock.release(&app, &a).await.unwrap();
        assert_eq!(lock.holder(&app), Some(b.clone()));
        lock.release(&app, &b).await.unwrap();
        assert_eq!(lock.holder(&app), None);
    }
}
