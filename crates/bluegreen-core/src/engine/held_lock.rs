//! The deployment lock while an operation holds it: renewed in the background,
//! checked at every step boundary.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::app::App;
use crate::error::{Error, ErrorKind, Result};
use crate::lock::{FencingToken, Lock, LockHolder};

pub(crate) struct HeldLock {
    lock: Arc<dyn Lock>,
    app: App,
    holder: LockHolder,
    token: FencingToken,
    /// The renewer was told the lock is another's (or free).
    lost: Arc<AtomicBool>,
    /// When this holder's lease ends by its own clock: the start of the last
    /// successful acquire or renew, plus the lease.
    deadline: Arc<Mutex<Instant>>,
    renewer: JoinHandle<()>,
}

impl HeldLock {
    /// Takes the lock, waiting up to `wait` for another holder when asked.
    pub(crate) async fn acquire(
        lock: Arc<dyn Lock>,
        app: &App,
        holder: LockHolder,
        lease: Duration,
        wait: Option<Duration>,
    ) -> Result<HeldLock> {
        let give_up = wait.map(|w| Instant::now() + w);
        let mut pause = Duration::from_millis(100);
        let (token, started) = loop {
            // a lease is counted from before the call: the store's may only end later
            let started = Instant::now();
            match lock.acquire(app, &holder, lease).await {
                Ok(token) => break (token, started),
                Err(e) if e.kind() == ErrorKind::Locked => match give_up {
                    Some(d) if Instant::now() < d => {
                        tokio::time::sleep(pause.min(d - Instant::now())).await;
                        pause = (pause * 2).min(Duration::from_secs(5));
                    }
                    Some(_) => {
                        return Err(Error::Timeout {
                            what: format!("the lock of {app} ({e})"),
                            after: wait.unwrap_or_default(),
                        })
                    }
                    None => return Err(e),
                },
                Err(e) => return Err(e),
            }
        };
        let lost = Arc::new(AtomicBool::new(false));
        let deadline = Arc::new(Mutex::new(started + lease));
        let renewer = tokio::spawn(renew(
            lock.clone(),
            app.clone(),
            holder.clone(),
            token,
            lease,
            lost.clone(),
            deadline.clone(),
        ));
        Ok(HeldLock {
            lock,
            app: app.clone(),
            holder,
            token,
            lost,
            deadline,
            renewer,
        })
    }

    /// The token the lock gave this holder.
    pub(crate) fn token(&self) -> FencingToken {
        self.token
    }

    /// [`Error::Locked`] once the lock was lost to another holder, or once this
    /// holder's lease has passed by its own clock without a successful renewal.
    pub(crate) fn ensure(&self) -> Result<()> {
        if self.lost.load(Ordering::SeqCst) {
            return Err(Error::Locked {
                app: self.app.to_string(),
                holder: format!(
                    "another deployment (this one's lease passed; its token {} is stale)",
                    self.token
                ),
            });
        }
        let deadline = *self.deadline.lock().expect("lock deadline poisoned");
        if Instant::now() >= deadline {
            return Err(Error::Locked {
                app: self.app.to_string(),
                holder: format!(
                    "unknown (this one's lease with token {} passed without a successful renewal)",
                    self.token
                ),
            });
        }
        Ok(())
    }

    pub(crate) async fn release(mut self) {
        self.renewer.abort();
        // wait until the renewer has stopped, so that no renewal follows the release
        let _ = (&mut self.renewer).await;
        if let Err(e) = self.lock.release(&self.app, &self.holder, self.token).await {
            tracing::warn!(app = %self.app, error = %e, "lock release failed; its lease will expire");
        }
    }
}

/// Renews at a third of the lease until the lock is lost. A renewal that fails for
/// another reason is tried again; each attempt is bounded by a third of the lease.
async fn renew(
    lock: Arc<dyn Lock>,
    app: App,
    holder: LockHolder,
    token: FencingToken,
    lease: Duration,
    lost: Arc<AtomicBool>,
    deadline: Arc<Mutex<Instant>>,
) {
    loop {
        tokio::time::sleep(lease / 3).await;
        let started = Instant::now();
        let attempt =
            tokio::time::timeout(lease / 3, lock.renew(&app, &holder, token, lease)).await;
        match attempt {
            Ok(Ok(())) => {
                let mut d = deadline.lock().expect("lock deadline poisoned");
                *d = (*d).max(started + lease);
            }
            Ok(Err(e)) if e.kind() == ErrorKind::Locked => {
                tracing::error!(%app, error = %e, "deployment lock lost");
                lost.store(true, Ordering::SeqCst);
                return;
            }
            Ok(Err(e)) => {
                tracing::warn!(%app, error = %e, "lock renewal failed, retrying");
            }
            Err(_) => {
                tracing::warn!(%app, after = ?lease / 3, "lock renewal timed out, retrying");
            }
        }
    }
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        // A dropped operation stops renewing: its lease runs out like a dead process's.
        self.renewer.abort();
    }
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;

    use super::*;
    use crate::lock::MemoryLock;

    const LEASE: Duration = Duration::from_secs(30);

    /// What [`Flaky`]'s renewals do.
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Renewals {
        Pass,
        FailTransiently,
    }

    /// A [`MemoryLock`] whose acquisitions take `slow` and whose renewals can fail.
    struct Flaky {
        inner: MemoryLock,
        slow: Duration,
        renewals: Mutex<Renewals>,
    }

    impl Flaky {
        fn new(slow: Duration) -> Arc<Flaky> {
            Arc::new(Flaky {
                inner: MemoryLock::new(),
                slow,
                renewals: Mutex::new(Renewals::Pass),
            })
        }

        fn set(&self, renewals: Renewals) {
            *self.renewals.lock().unwrap() = renewals;
        }
    }

    #[async_trait]
    impl Lock for Flaky {
        async fn acquire(
            &self,
            app: &App,
            holder: &LockHolder,
            lease: Duration,
        ) -> Result<FencingToken> {
            tokio::time::sleep(self.slow).await;
            self.inner.acquire(app, holder, lease).await
        }

        async fn renew(
            &self,
            app: &App,
            holder: &LockHolder,
            token: FencingToken,
            lease: Duration,
        ) -> Result<()> {
            if *self.renewals.lock().unwrap() == Renewals::FailTransiently {
                return Err(Error::Provider {
                    provider: "flaky",
                    message: "the lock store does not answer".into(),
                    retryable: true,
                    source: None,
                });
            }
            self.inner.renew(app, holder, token, lease).await
        }

        async fn release(&self, app: &App, holder: &LockHolder, token: FencingToken) -> Result<()> {
            self.inner.release(app, holder, token).await
        }
    }

    fn app() -> App {
        App::new("web", "prod").unwrap()
    }

    async fn hold(lock: Arc<Flaky>, deployment: &str) -> HeldLock {
        HeldLock::acquire(lock, &app(), LockHolder::new(deployment), LEASE, None)
            .await
            .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn renewals_keep_the_lock_for_many_leases() {
        let lock = Flaky::new(Duration::ZERO);
        let held = hold(lock.clone(), "d-a").await;
        tokio::time::sleep(LEASE * 10).await;
        held.ensure().unwrap();
        assert_eq!(lock.inner.holder(&app()).unwrap().deployment, "d-a");
        let e = lock
            .inner
            .acquire(&app(), &LockHolder::new("d-b"), LEASE)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Locked);
        held.release().await;
        assert_eq!(lock.inner.holder(&app()), None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_token_is_the_locks() {
        let lock = Flaky::new(Duration::ZERO);
        let first = hold(lock.clone(), "d-a").await;
        let t1 = first.token();
        first.release().await;
        let second = hold(lock.clone(), "d-b").await;
        assert!(second.token() > t1, "{} > {t1}", second.token());
        // released with its token: the lock is free, and the old token cannot renew it
        let t2 = second.token();
        second.release().await;
        let e = lock
            .renew(&app(), &LockHolder::new("d-b"), t2, LEASE)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Locked);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lock_taken_over_is_lost_at_the_next_renewal() {
        let lock = Flaky::new(Duration::ZERO);
        let held = hold(lock.clone(), "d-a").await;
        // the store cannot be reached: the lease runs out and another takes the lock,
        // does its work and releases it
        lock.set(Renewals::FailTransiently);
        tokio::time::sleep(LEASE + Duration::from_secs(1)).await;
        let b = LockHolder::new("d-b");
        let tb = lock.inner.acquire(&app(), &b, LEASE).await.unwrap();
        lock.inner.release(&app(), &b, tb).await.unwrap();
        // the store answers again: the next renewal is refused
        lock.set(Renewals::Pass);
        tokio::time::sleep(LEASE / 3).await;
        let e = held.ensure().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Locked, "{e}");
        assert!(held.lost.load(Ordering::SeqCst), "the renewer saw Locked");
        assert_eq!(lock.inner.holder(&app()), None, "and took nothing");
    }

    #[tokio::test(start_paused = true)]
    async fn failing_renewals_stop_the_holder_when_its_lease_passes() {
        let lock = Flaky::new(Duration::ZERO);
        let held = hold(lock.clone(), "d-a").await;
        lock.set(Renewals::FailTransiently);
        tokio::time::sleep(LEASE - Duration::from_secs(1)).await;
        held.ensure().unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let e = held.ensure().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Locked, "{e}");
        assert!(!held.lost.load(Ordering::SeqCst), "no renewal was refused");
        // nobody took the lock: once renewals work again, the holder holds it again
        lock.set(Renewals::Pass);
        tokio::time::sleep(LEASE / 3 + Duration::from_secs(1)).await;
        held.ensure().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn the_lease_is_counted_from_the_start_of_the_acquisition() {
        // the acquisition takes 10 s: the store's lease may have started at its start
        let lock = Flaky::new(Duration::from_secs(10));
        let held = hold(lock.clone(), "d-a").await;
        lock.set(Renewals::FailTransiently);
        tokio::time::sleep(LEASE - Duration::from_secs(10) - Duration::from_millis(1)).await;
        held.ensure().unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
        let e = held.ensure().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Locked, "{e}");
    }
}
