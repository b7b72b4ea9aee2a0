//! [`FileLock`]: the deployment lock in the state directory, shared by every program
//! on this machine.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bluegreen_core::{App, Error, Lock, LockHolder, Result};
use serde::{Deserialize, Serialize};

use crate::process::ProcessId;
use crate::state_dir::{io_error, read_json, write_json, StateDir};

/// A lease lock per app in `<state>/locks/<app>.json`. A lock whose lease passed, or
/// whose holding process no longer runs (an owner check: the pid and its start time),
/// is taken over at once.
#[derive(Clone, Debug)]
pub struct FileLock {
    dir: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct Lease {
    deployment: String,
    process: String,
    owner: Option<ProcessId>,
    until: SystemTime,
}

impl FileLock {
    /// Locks kept in `state`.
    pub fn new(state: &StateDir) -> Self {
        FileLock { dir: state.locks() }
    }

    /// The app's `flock` guard and lease file: `<slug>.flock` and `<slug>.json`. The
    /// slug names one app, so two apps never share a lock.
    fn paths(&self, app: &App) -> (PathBuf, PathBuf) {
        (
            self.dir.join(format!("{}.flock", app.slug())),
            self.dir.join(format!("{}.json", app.slug())),
        )
    }

    /// Runs `f` on the app's lease file while holding an exclusive `flock`.
    fn with_file<T>(
        &self,
        app: &App,
        f: impl FnOnce(&PathBuf, Option<Lease>) -> Result<T>,
    ) -> Result<T> {
        std::fs::create_dir_all(&self.dir).map_err(|e| io_error(&self.dir, e))?;
        let (guard_path, path) = self.paths(app);
        let guard = File::create(&guard_path).map_err(|e| io_error(&guard_path, e))?;
        // SAFETY: flock(2) on a descriptor this function owns for the whole call.
        if unsafe { libc::flock(guard.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io_error(&guard_path, std::io::Error::last_os_error()));
        }
        let current = read_json::<Lease>(&path)?;
        let out = f(&path, current);
        drop(guard); // closing the descriptor releases the flock
        out
    }
}

fn holder_name(lease: &Lease) -> String {
    format!("{} ({})", lease.deployment, lease.process)
}

fn stale(lease: &Lease) -> bool {
    lease.until <= SystemTime::now() || lease.owner.is_some_and(|p| !p.is_alive())
}

fn lease_for(holder: &LockHolder, lease: Duration) -> Lease {
    Lease {
        deployment: holder.deployment.clone(),
        process: holder.process.clone(),
        owner: ProcessId::of(std::process::id()),
        until: SystemTime::now() + lease,
    }
}

#[async_trait]
impl Lock for FileLock {
    async fn acquire(&self, app: &App, holder: &LockHolder, lease: Duration) -> Result<()> {
        self.with_file(app, |path, current| {
            if let Some(current) = current {
                let mine = current.deployment == holder.deployment && current.process == holder.process;
                if !mine && !stale(&current) {
                    return Err(Error::Locked {
                        app: app.to_string(),
                        holder: holder_name(&current),
                    });
                }
                if !mine {
                    tracing::warn!(%app, stale = %holder_name(&current), "taking over a stale lock");
                }
            }
            write_json(path, &lease_for(holder, lease))
        })
    }

    async fn renew(&self, app: &App, holder: &LockHolder, lease: Duration) -> Result<()> {
        self.with_file(app, |path, current| match current {
            Some(c) if c.deployment != holder.deployment || c.process != holder.process => {
                Err(Error::Locked {
                    app: app.to_string(),
                    holder: holder_name(&c),
                })
            }
            _ => write_json(path, &lease_for(holder, lease)),
        })
    }

    async fn release(&self, app: &App, holder: &LockHolder) -> Result<()> {
        self.with_file(app, |path, current| {
            if current
                .is_some_and(|c| c.deployment == holder.deployment && c.process == holder.process)
            {
                std::fs::remove_file(path).map_err(|e| io_error(path, e))?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bluegreen_testkit::names::{assert_distinct, near_collisions};

    #[test]
    fn every_app_has_a_lock_of_its_own() {
        let lock = FileLock {
            dir: PathBuf::from("/state/locks"),
        };
        let apps = near_collisions();
        assert_distinct("lock guard", &apps, |a| lock.paths(a).0);
        assert_distinct("lease", &apps, |a| lock.paths(a).1);
        let web = App::new("web", "production").unwrap();
        assert_eq!(
            lock.paths(&web),
            (
                PathBuf::from("/state/locks/web-production.flock"),
                PathBuf::from("/state/locks/web-production.json")
            )
        );
    }
}
