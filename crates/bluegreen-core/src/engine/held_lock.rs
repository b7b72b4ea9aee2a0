//! The deployment lock while an operation holds it: renewed in the background,
//! checked at every step boundary.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
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
    lost: Arc<AtomicBool>,
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
        let deadline = wait.map(|w| Instant::now() + w);
        let mut pause = Duration::from_millis(100);
        let token = loop {
            match lock.acquire(app, &holder, lease).await {
                Ok(token) => break token,
                Err(e) if e.kind() == ErrorKind::Locked => match deadline {
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
        let renewer = tokio::spawn({
            let (lock, app, holder, lost) =
                (lock.clone(), app.clone(), holder.clone(), lost.clone());
            async move {
                loop {
                    tokio::time::sleep(lease / 3).await;
                    match lock.renew(&app, &holder, token, lease).await {
                        Ok(()) => {}
                        Err(e) if e.kind() == ErrorKind::Locked => {
                            tracing::error!(%app, error = %e, "deployment lock lost");
                            lost.store(true, Ordering::SeqCst);
                            return;
                        }
                        Err(e) => tracing::warn!(%app, error = %e, "lock renewal failed, retrying"),
                    }
                }
            }
        });
        Ok(HeldLock {
            lock,
            app: app.clone(),
            holder,
            token,
            lost,
            renewer,
        })
    }

    /// The token the lock gave this holder.
    pub(crate) fn token(&self) -> FencingToken {
        self.token
    }

    /// [`Error::Locked`] once the lease was lost to another holder.
    pub(crate) fn ensure(&self) -> Result<()> {
        if self.lost.load(Ordering::SeqCst) {
            return Err(Error::Locked {
                app: self.app.to_string(),
                holder: "another deployment (this one's lease passed)".into(),
            });
        }
        Ok(())
    }

    pub(crate) async fn release(self) {
        self.renewer.abort();
        if let Err(e) = self.lock.release(&self.app, &self.holder, self.token).await {
            tracing::warn!(app = %self.app, error = %e, "lock release failed; its lease will expire");
        }
    }
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        // A dropped operation stops renewing: its lease runs out like a dead process's.
        self.renewer.abort();
    }
}
