//! [`FileLock`]: the deployment lock in the state directory, shared by every program
//! on this machine.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bluegreen_core::{App, Error, FencingToken, Lock, LockHolder, Result};
use serde::{Deserialize, Serialize};

use crate::config::{read_json, write_json, StateDir};
use crate::error::io_error;
use crate::process::ProcessId;

/// A lease lock per app in `<state>/locks/<app>.json`. A lock whose lease passed, or
/// whose holding process no longer runs (an owner check: the pid and its start time),
/// is taken over at once.
///
/// The file keeps the last [`FencingToken`] given for the app, also once the lock is
/// released; every change happens under an exclusive `flock` of
/// `<state>/locks/<app>.flock`. It excludes every program on this machine that uses
/// the same state directory, and nothing beyond it. Tokens count from 1 per app.
///
/// A holder whose lease passed while nobody took the lock keeps it: its renewal
/// succeeds, and taking it again gives the same token.
#[derive(Clone, Debug)]
pub struct FileLock {
    dir: PathBuf,
}

/// The lock file of an app: `{"token": 7}` once released, with the lease's fields
/// while held. A file written before tokens existed is a lease without `token`: it
/// reads as token 0.
#[derive(Default, Serialize)]
struct LockFile {
    /// The last token given for the app; the holder's while there is one.
    token: u64,
    /// The current holder's lease; none once released.
    #[serde(flatten)]
    lease: Option<Lease>,
}

#[derive(Serialize, Deserialize)]
struct Lease {
    deployment: String,
    process: String,
    owner: Option<ProcessId>,
    until: SystemTime,
}

impl LockFile {
    /// Reads `path` (none: token 0, free). A lease that is there must read whole: a
    /// damaged one is an error, never a free lock.
    fn read(path: &Path) -> Result<LockFile> {
        let Some(value) = read_json::<serde_json::Value>(path)? else {
            return Ok(LockFile::default());
        };
        let unreadable = |what: String| {
            Error::conflict(format!("{} is not a readable lock: {what}", path.display()))
        };
        let token = match value.get("token") {
            None => 0,
            Some(t) => t.as_u64().ok_or_else(|| unreadable(format!("token {t}")))?,
        };
        let lease = match value.get("deployment") {
            None => None,
            Some(_) => Some(serde_json::from_value(value).map_err(|e| unreadable(e.to_string()))?),
        };
        Ok(LockFile { token, lease })
    }
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

    /// Runs `f` on the app's lock file while holding an exclusive `flock`; `f` returns
    /// the file to write, if any, and the result.
    fn with_file<T>(
        &self,
        app: &App,
        f: impl FnOnce(&LockFile) -> Result<(Option<LockFile>, T)>,
    ) -> Result<T> {
        std::fs::create_dir_all(&self.dir).map_err(|e| io_error(&self.dir, e))?;
        let (guard_path, path) = self.paths(app);
        let guard = File::create(&guard_path).map_err(|e| io_error(&guard_path, e))?;
        // held while this function owns the descriptor
        rustix::fs::flock(&guard, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| io_error(&guard_path, e.into()))?;
        let current = LockFile::read(&path)?;
        let out = f(&current).and_then(|(next, out)| match next {
            Some(next) => write_json(&path, &next).map(|()| out),
            None => Ok(out),
        });
        drop(guard); // closing the descriptor releases the flock
        out
    }
}

fn holder_name(lease: &Lease) -> String {
    format!("{} ({})", lease.deployment, lease.process)
}

fn held_by(lease: &Lease, holder: &LockHolder) -> bool {
    lease.deployment == holder.deployment && lease.process == holder.process
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

fn locked(app: &App, holder: String) -> Error {
    Error::Locked {
        app: app.to_string(),
        holder,
    }
}

#[async_trait]
impl Lock for FileLock {
    async fn acquire(
        &self,
        app: &App,
        holder: &LockHolder,
        lease: Duration,
    ) -> Result<FencingToken> {
        self.with_file(app, |current| {
            let token = match &current.lease {
                // re-entry: the same token, a new lease
                Some(held) if held_by(held, holder) => current.token,
                Some(held) if !stale(held) => return Err(locked(app, holder_name(held))),
                other => {
                    if let Some(held) = other {
                        tracing::warn!(%app, stale = %holder_name(held), "taking over a stale lock");
                    }
                    current.token + 1
                }
            };
            let next = LockFile {
                token,
                lease: Some(lease_for(holder, lease)),
            };
            Ok((Some(next), FencingToken(token)))
        })
    }

    async fn renew(
        &self,
        app: &App,
        holder: &LockHolder,
        token: FencingToken,
        lease: Duration,
    ) -> Result<()> {
        self.with_file(app, |current| match &current.lease {
            Some(held) if held_by(held, holder) && current.token == token.0 => {
                let next = LockFile {
                    token: current.token,
                    lease: Some(lease_for(holder, lease)),
                };
                Ok((Some(next), ()))
            }
            Some(held) => Err(locked(app, holder_name(held))),
            // a renewal never takes a free lock
            None => Err(locked(
                app,
                format!("none now (the lock was lost: token {token} is stale)"),
            )),
        })
    }

    async fn release(&self, app: &App, holder: &LockHolder, token: FencingToken) -> Result<()> {
        self.with_file(app, |current| match &current.lease {
            Some(held) if held_by(held, holder) && current.token == token.0 => {
                // the token stays, so that the next holder's is greater
                let next = LockFile {
                    token: current.token,
                    lease: None,
                };
                Ok((Some(next), ()))
            }
            _ => Ok((None, ())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bluegreen_core::ErrorKind;
    use bluegreen_testkit::names::{assert_distinct, near_collisions};
    use bluegreen_testkit::scratch::Scratch;

    /// A fresh state directory, removed when the returned scratch is dropped.
    fn state() -> (StateDir, Scratch) {
        let root = Scratch::new("filelock");
        (StateDir::new(root.path()).unwrap(), root)
    }

    #[tokio::test]
    async fn an_old_lock_file_reads_as_token_zero_and_a_damaged_one_is_refused() {
        let (state, root) = state();
        let lock = FileLock::new(&state);
        let app = App::new("web", "prod").unwrap();
        std::fs::create_dir_all(state.locks()).unwrap();
        let old = Lease {
            deployment: "d-old".into(),
            process: "pid 1".into(),
            owner: None,
            until: SystemTime::now() + Duration::from_secs(60),
        };
        let path = state.locks().join("web-prod.json");
        std::fs::write(&path, serde_json::to_vec(&old).unwrap()).unwrap();
        // held by the old holder, with a live lease
        let b = LockHolder::new("d-b");
        let e = lock
            .acquire(&app, &b, Duration::from_secs(60))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Locked);
        assert!(e.to_string().contains("d-old"), "{e}");
        // passed: taken over with token 1
        let passed = Lease {
            until: SystemTime::now() - Duration::from_secs(1),
            ..old
        };
        std::fs::write(&path, serde_json::to_vec(&passed).unwrap()).unwrap();
        let t = lock
            .acquire(&app, &b, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(t, FencingToken(1));
        lock.release(&app, &b, t).await.unwrap();
        let kept: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(
            kept,
            serde_json::json!({ "token": 1 }),
            "a released lock keeps its token"
        );
        // a damaged lease is an error, never a free lock
        std::fs::write(
            &path,
            br#"{"token": 3, "deployment": "d-x", "until": "soon"}"#,
        )
        .unwrap();
        let e = lock
            .acquire(&app, &b, Duration::from_secs(60))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
        drop(root);
    }

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
