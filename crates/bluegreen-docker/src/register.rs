//! The register of versions behind [`DockerLock`](crate::DockerLock) and
//! [`SwarmLock`](crate::SwarmLock): a lease lock per app whose every state is a new,
//! never-changed resource of a [`Store`] (a created container, a swarm secret).
//!
//! The current state is the version with the highest number. Every change (acquire,
//! renew, release) reads the highest version `n`, decides, and creates version
//! `n + 1` under a name that only version `n + 1` of this app has; the store's
//! atomic create by name (`409 Conflict` for a taken name) is the compare-and-swap:
//! of all the writers that read `n`, exactly one lands, the others read again and
//! decide again. After a create the writer checks that no higher version exists (a
//! writer that read long ago can recreate a removed old name: it then removes its own
//! version and decides again), and removes the versions below its own.
//!
//! Only resources with bluegreen's owner label, the lock role and the app's lock
//! label are read or removed; a resource without them that has a version's name is
//! [`Error::Conflict`], never touched.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bluegreen_core::labels::{self, Labels};
use bluegreen_core::{App, Error, FencingToken, LockHolder, Result};

use crate::build::ROLE_LABEL;

/// The label naming the lock (the app's slug) on each of its versions.
pub const LOCK_LABEL: &str = "bluegreen.lock";
/// The role of a lock's resources ([`ROLE_LABEL`]).
pub(crate) const ROLE: &str = "lock";
const VERSION_LABEL: &str = "bluegreen.lock.version";
const TOKEN_LABEL: &str = "bluegreen.lock.token";
const DEPLOYMENT_LABEL: &str = "bluegreen.lock.deployment";
const PROCESS_LABEL: &str = "bluegreen.lock.process";
const UNTIL_LABEL: &str = "bluegreen.lock.until";
/// How often a change that lost a race is decided again before giving up.
const ATTEMPTS: usize = 64;

/// One resource of a store that carries the lock's labels.
pub(crate) struct Stored {
    /// Its name.
    pub name: String,
    /// Its id, for removing it.
    pub id: String,
    /// Its labels.
    pub labels: Labels,
}

/// Where the versions live: resources with cluster- (or daemon-) unique names, an
/// atomic create by name, and labels that the lock never changes.
#[async_trait]
pub(crate) trait Store: Send + Sync {
    /// What a version is, in messages (`container`, `secret`).
    fn kind(&self) -> &'static str;

    /// The name of version `version` of the app's lock: no other app and no other
    /// version has it.
    fn name(&self, app: &App, version: u64) -> String;

    /// Every resource labelled with bluegreen's owner, the lock role and
    /// `LOCK_LABEL=slug`, any order.
    async fn list(&self, slug: &str, app: &App) -> Result<Vec<Stored>>;

    /// Creates the resource `name` with `labels`; `false` when the name is taken.
    async fn create(&self, name: &str, labels: HashMap<String, String>) -> Result<bool>;

    /// The labels of the resource named `name`; `None` when none has that name.
    async fn labels_of(&self, name: &str) -> Result<Option<Labels>>;

    /// Removes a resource by id (best effort: an old version left behind is removed
    /// by the next change).
    async fn remove(&self, id: &str);
}

/// The state one version holds.
#[derive(Clone, Debug, PartialEq, Eq)]
struct State {
    version: u64,
    token: u64,
    lease: Option<Lease>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Lease {
    deployment: String,
    process: String,
    /// Unix milliseconds.
    until: u64,
}

impl Lease {
    fn holder(&self) -> String {
        format!("{} ({})", self.deployment, self.process)
    }

    fn is(&self, holder: &LockHolder) -> bool {
        self.deployment == holder.deployment && self.process == holder.process
    }

    fn live(&self) -> bool {
        self.until > now_ms()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn lease_for(holder: &LockHolder, lease: Duration) -> Lease {
    Lease {
        deployment: holder.deployment.clone(),
        process: holder.process.clone(),
        until: now_ms().saturating_add(lease.as_millis() as u64),
    }
}

fn locked(app: &App, holder: String) -> Error {
    Error::Locked {
        app: app.to_string(),
        holder,
    }
}

/// What a decision on the current state gives.
enum Decision<T> {
    /// Write this state as the next version, then return the value.
    Write(Option<Lease>, u64, T),
    /// Return without writing.
    Done(Result<T>),
}

/// A register of versions in `S`.
#[derive(Clone, Debug)]
pub(crate) struct Register<S> {
    store: S,
}

impl<S: Store> Register<S> {
    pub(crate) fn new(store: S) -> Self {
        Register { store }
    }

    /// The versions of the app's lock that exist: (version, id, labels), any order. A
    /// resource whose version label does not match its name is an error.
    async fn versions(&self, app: &App) -> Result<Vec<(u64, String, Labels)>> {
        let slug = app.slug();
        let mut out = Vec::new();
        for s in self.store.list(&slug, app).await? {
            // the store's filters are exact; check again what is ours before trusting it
            if !ours(&s.labels, &slug) {
                continue;
            }
            let version = s
                .labels
                .get(VERSION_LABEL)
                .and_then(|v| v.parse().ok())
                .filter(|v| s.name == self.store.name(app, *v))
                .ok_or_else(|| {
                    Error::conflict(format!(
                        "{} {} is not a readable version of the lock of {app} \
                         (label {VERSION_LABEL})",
                        self.store.kind(),
                        s.name
                    ))
                })?;
            out.push((version, s.id, s.labels));
        }
        Ok(out)
    }

    /// The current state: the highest version (none: version 0, token 0, free). A
    /// version that does not read whole is an error, never a free lock.
    async fn current(&self, app: &App) -> Result<State> {
        let versions = self.versions(app).await?;
        let Some((version, _, l)) = versions.into_iter().max_by_key(|(v, _, _)| *v) else {
            return Ok(State {
                version: 0,
                token: 0,
                lease: None,
            });
        };
        let unreadable = |label: &str| {
            Error::conflict(format!(
                "{} {} is not a readable lock: label {label}",
                self.store.kind(),
                self.store.name(app, version)
            ))
        };
        let token = l
            .get(TOKEN_LABEL)
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| unreadable(TOKEN_LABEL))?;
        let lease = match l.get(DEPLOYMENT_LABEL) {
            None => None,
            Some(deployment) => Some(Lease {
                deployment: deployment.clone(),
                process: l
                    .get(PROCESS_LABEL)
                    .cloned()
                    .ok_or_else(|| unreadable(PROCESS_LABEL))?,
                until: l
                    .get(UNTIL_LABEL)
                    .and_then(|u| u.parse().ok())
                    .ok_or_else(|| unreadable(UNTIL_LABEL))?,
            }),
        };
        Ok(State {
            version,
            token,
            lease,
        })
    }

    /// Creates version `version` holding `token` and `lease`; `false` when another
    /// program created that version first, or a higher one exists.
    async fn write(
        &self,
        app: &App,
        version: u64,
        token: u64,
        lease: Option<&Lease>,
    ) -> Result<bool> {
        let name = self.store.name(app, version);
        let mut l: HashMap<String, String> = HashMap::from([
            (labels::OWNER.to_owned(), labels::OWNER_VALUE.to_owned()),
            (ROLE_LABEL.to_owned(), ROLE.to_owned()),
            (LOCK_LABEL.to_owned(), app.slug()),
            (VERSION_LABEL.to_owned(), version.to_string()),
            (TOKEN_LABEL.to_owned(), token.to_string()),
        ]);
        if let Some(lease) = lease {
            l.insert(DEPLOYMENT_LABEL.into(), lease.deployment.clone());
            l.insert(PROCESS_LABEL.into(), lease.process.clone());
            l.insert(UNTIL_LABEL.into(), lease.until.to_string());
        }
        if !self.store.create(&name, l).await? {
            return match self.store.labels_of(&name).await? {
                // gone again (removed as an old version): decide again
                None => Ok(false),
                Some(found) if ours(&found, &app.slug()) => Ok(false),
                Some(_) => Err(Error::conflict(format!(
                    "{} {name} exists without bluegreen's lock labels; the lock of {app} \
                     cannot use its name (it is left alone)",
                    self.store.kind()
                ))),
            };
        }
        // a name removed as an old version can be created again by a program that
        // read the state long ago: only the highest version counts
        let versions = self.versions(app).await?;
        if versions.iter().any(|(v, _, _)| *v > version) {
            if let Some((_, id, _)) = versions.iter().find(|(v, _, _)| *v == version) {
                self.store.remove(id).await;
            }
            return Ok(false);
        }
        for (_, id, _) in versions.iter().filter(|(v, _, _)| *v < version) {
            self.store.remove(id).await;
        }
        Ok(true)
    }

    /// Reads the state, decides with `decide`, writes the next version; again when
    /// another program wrote first.
    async fn change<T>(
        &self,
        app: &App,
        mut decide: impl FnMut(&State) -> Decision<T>,
    ) -> Result<T> {
        for attempt in 0..ATTEMPTS {
            let state = self.current(app).await?;
            match decide(&state) {
                Decision::Done(out) => return out,
                Decision::Write(lease, token, out) => {
                    if self
                        .write(app, state.version + 1, token, lease.as_ref())
                        .await?
                    {
                        return Ok(out);
                    }
                    let pause = 5 + fastrand::u64(..20) * (attempt as u64).min(5);
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
            }
        }
        Err(Error::provider(
            crate::error::PROVIDER,
            format!("the lock of {app} changed {ATTEMPTS} times while this change was decided"),
            true,
        ))
    }

    /// The current holder of the app's lock, if its lease has not passed.
    pub(crate) async fn holder(&self, app: &App) -> Result<Option<LockHolder>> {
        Ok(self
            .current(app)
            .await?
            .lease
            .filter(Lease::live)
            .map(|l| LockHolder {
                deployment: l.deployment,
                process: l.process,
            }))
    }

    /// Removes every version of the app's lock.
    pub(crate) async fn forget(&self, app: &App) -> Result<()> {
        for (_, id, _) in self.versions(app).await? {
            self.store.remove(&id).await;
        }
        Ok(())
    }

    /// [`Lock::acquire`](bluegreen_core::Lock::acquire).
    pub(crate) async fn acquire(
        &self,
        app: &App,
        holder: &LockHolder,
        lease: Duration,
    ) -> Result<FencingToken> {
        self.change(app, |state| match &state.lease {
            Some(l) if l.is(holder) => Decision::Write(
                Some(lease_for(holder, lease)),
                state.token,
                FencingToken(state.token),
            ),
            Some(l) if l.live() => Decision::Done(Err(locked(app, l.holder()))),
            other => {
                if let Some(l) = other {
                    tracing::warn!(%app, stale = %l.holder(), "taking over a lock whose lease passed");
                }
                let token = state.token + 1;
                Decision::Write(Some(lease_for(holder, lease)), token, FencingToken(token))
            }
        })
        .await
    }

    /// [`Lock::renew`](bluegreen_core::Lock::renew).
    pub(crate) async fn renew(
        &self,
        app: &App,
        holder: &LockHolder,
        token: FencingToken,
        lease: Duration,
    ) -> Result<()> {
        self.change(app, |state| match &state.lease {
            Some(l) if l.is(holder) && state.token == token.0 => {
                Decision::Write(Some(lease_for(holder, lease)), state.token, ())
            }
            Some(l) => Decision::Done(Err(locked(app, l.holder()))),
            None => Decision::Done(Err(locked(
                app,
                format!("none now (the lock was lost: token {token} is stale)"),
            ))),
        })
        .await
    }

    /// [`Lock::release`](bluegreen_core::Lock::release).
    pub(crate) async fn release(
        &self,
        app: &App,
        holder: &LockHolder,
        token: FencingToken,
    ) -> Result<()> {
        self.change(app, |state| match &state.lease {
            Some(l) if l.is(holder) && state.token == token.0 => {
                Decision::Write(None, state.token, ())
            }
            _ => Decision::Done(Ok(())),
        })
        .await
    }
}

/// Whether a resource carries the labels of the lock of `slug`.
fn ours(l: &Labels, slug: &str) -> bool {
    l.get(labels::OWNER).map(String::as_str) == Some(labels::OWNER_VALUE)
        && l.get(ROLE_LABEL).map(String::as_str) == Some(ROLE)
        && l.get(LOCK_LABEL).map(String::as_str) == Some(slug)
}
