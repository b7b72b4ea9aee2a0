//! [`RegisterLock`]: a lease [`Lock`] kept as a **register of versions** in a store
//! that has no compare-and-swap but creates named resources atomically: Docker
//! containers, swarm secrets, platform apps.
//!
//! Every state of an app's lock is a new, never-changed resource of a [`Store`]; the
//! current state is the version with the highest number. Every change (acquire,
//! renew, release) reads the highest version `n`, decides, and creates version
//! `n + 1` under a name that only version `n + 1` of this app's lock has; the store's
//! atomic create by name (a taken name is refused) is the compare-and-swap: of all
//! the writers that read `n`, exactly one lands, the others read again and decide
//! again. After a create the writer checks that no higher version exists (a writer
//! that read long ago can recreate a removed old name: it then removes its own
//! version and decides again), and removes the versions below its own.
//!
//! A version holds its state as labels: [`OWNER`](crate::labels::OWNER),
//! [`ROLE_LABEL`]`=`[`ROLE`], [`LOCK_LABEL`] (the app's slug), the version, the
//! fencing token, and while the lock is held the holder and the end of its lease
//! (Unix milliseconds, on the deployers' wall clocks).
//!
//! # Stores that write after the create
//!
//! Some stores create a resource by name first and give it its data in a second
//! call (a platform app, then its config vars). Such a store reports a version
//! without data as [`Data::Pending`] with a time until which its writer may still
//! write it. A pending version is treated as held by that unknown writer: every
//! change waits until it is written or its time passes; after that it is
//! **abandoned** and skipped, and the state is the highest version that was written.
//! The store's [`Store::create`] must count a write as done only when it landed well
//! within that time, and otherwise remove its own version and report the create as
//! lost: then no reader that skipped an abandoned version can meet its data later.
//!
//! Only resources with the owner label, the lock role and the app's lock label are
//! read or removed; a resource without them that has a version's name is
//! [`Error::Conflict`], never touched.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

use crate::app::App;
use crate::error::{Error, Result};
use crate::labels::{self, Labels};
use crate::lock::{FencingToken, Lock, LockHolder};

/// The label that says what a resource is for; a lock's versions have [`ROLE`].
pub const ROLE_LABEL: &str = "bluegreen.role";
/// The role of a lock's versions ([`ROLE_LABEL`]).
pub const ROLE: &str = "lock";
/// The label naming the lock (the app's slug) on each of its versions.
pub const LOCK_LABEL: &str = "bluegreen.lock";
/// The version's number.
pub const VERSION_LABEL: &str = "bluegreen.lock.version";
/// The fencing token.
pub const TOKEN_LABEL: &str = "bluegreen.lock.token";
/// The holder's deployment, while the lock is held.
pub const DEPLOYMENT_LABEL: &str = "bluegreen.lock.deployment";
/// The holder's process, while the lock is held.
pub const PROCESS_LABEL: &str = "bluegreen.lock.process";
/// The end of the holder's lease, Unix milliseconds, while the lock is held.
pub const UNTIL_LABEL: &str = "bluegreen.lock.until";
/// Every label a version can carry, in the order above.
pub const LABELS: [&str; 8] = [
    labels::OWNER,
    ROLE_LABEL,
    LOCK_LABEL,
    VERSION_LABEL,
    TOKEN_LABEL,
    DEPLOYMENT_LABEL,
    PROCESS_LABEL,
    UNTIL_LABEL,
];
/// How often a change that lost a race is decided again before giving up.
const ATTEMPTS: usize = 64;

/// What a version of a store holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Data {
    /// Its labels (as written at or after its create).
    Labels(Labels),
    /// Nothing yet: created by a writer that has not written its data (only stores
    /// that write after the create have this).
    Pending {
        /// The version's number, from its name.
        version: u64,
        /// Until when its writer may still write it; after that it is abandoned.
        until: SystemTime,
    },
}

/// One resource of a store that carries a version of the lock.
#[derive(Clone, Debug)]
pub struct Stored {
    /// Its name.
    pub name: String,
    /// Its id, for removing it.
    pub id: String,
    /// What it holds.
    pub data: Data,
}

/// Where a store found something at a version's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    /// Nothing has that name.
    Missing,
    /// A version without data yet (stores that write after the create).
    Pending,
    /// A resource with these labels (perhaps not the lock's).
    Labelled(Labels),
}

/// Where the versions live: resources with store-wide unique names, an atomic create
/// by name, and data that the register never changes.
#[async_trait]
pub trait Store: Send + Sync {
    /// What a version is, in messages (`container`, `secret`, `app`).
    fn kind(&self) -> &'static str;

    /// The provider's name, for [`Error::Provider`].
    fn provider(&self) -> &'static str;

    /// The name of version `version` of the app's lock: no other app and no other
    /// version has it.
    fn name(&self, app: &App, version: u64) -> String;

    /// Every resource that may be a version of the app's lock (`slug` is the app's
    /// slug), any order: at least every one labelled with the owner, [`ROLE`] and
    /// `LOCK_LABEL=slug`, and every pending one. The register skips labelled ones
    /// that are not the lock's.
    async fn list(&self, slug: &str, app: &App) -> Result<Vec<Stored>>;

    /// Creates the resource `name` with `labels`: `true` when it was created and
    /// holds `labels`; `false` when the name is taken, or when this store writes
    /// after the create and the write did not land in time (the store then removed
    /// the resource it created).
    async fn create(&self, name: &str, labels: Labels) -> Result<bool>;

    /// What the resource named `name` is.
    async fn find(&self, name: &str) -> Result<Found>;

    /// Removes a resource by id (best effort: an old version left behind is removed
    /// by the next change).
    async fn remove(&self, id: &str);
}

/// The state one version holds.
#[derive(Clone, Debug, PartialEq, Eq)]
struct State {
    /// The highest version that exists (the next change creates the one after it).
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

/// What reading the versions found.
enum Read {
    /// The current state.
    State(State),
    /// The highest version is being written until this time.
    Pending(SystemTime),
}

/// A lease [`Lock`] per app with fencing tokens, kept as a register of versions in
/// the store `S`; see the [module documentation](self).
///
/// Any [`Store`] gives a lock: `RegisterLock::new(store)` is the lock, ready for
/// [`Engine::with_lock`](crate::Engine::with_lock). It excludes every program whose
/// store reaches the same resources (the same Docker daemon, swarm, or platform
/// account): what one lock excludes is where its store keeps the versions. Leases are
/// measured on the programs' wall clocks, whose clocks must agree far better than
/// the lease.
///
/// Tokens count from 1 per app (and per store). A holder whose lease passed while
/// nobody took the lock keeps it: its renewal succeeds, and taking it again gives
/// the same token.
///
/// Clones share the store (clone a store that is a handle on a remote service).
#[derive(Clone, Debug)]
pub struct RegisterLock<S> {
    store: S,
}

impl<S: Store> RegisterLock<S> {
    /// A lock kept in `store`.
    pub fn new(store: S) -> Self {
        RegisterLock { store }
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The versions of the app's lock that exist: (version, id, data), any order. A
    /// labelled resource whose version label does not match its name is an error.
    async fn versions(&self, app: &App) -> Result<Vec<(u64, String, Data)>> {
        let slug = app.slug();
        let mut out = Vec::new();
        for s in self.store.list(&slug, app).await? {
            let version = match &s.data {
                Data::Pending { version, .. } => {
                    if s.name != self.store.name(app, *version) {
                        continue;
                    }
                    *version
                }
                // the store's filters may be loose; check again what is ours
                Data::Labels(l) if !ours(l, &slug) => continue,
                Data::Labels(l) => l
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
                    })?,
            };
            out.push((version, s.id, s.data));
        }
        Ok(out)
    }

    /// The current state: the highest version written (none: token 0, free), or the
    /// time until which a higher one may still be written. A version that does not
    /// read whole is an error, never a free lock.
    async fn current(&self, app: &App) -> Result<Read> {
        let mut versions = self.versions(app).await?;
        versions.sort_by_key(|(v, _, _)| std::cmp::Reverse(*v));
        let highest = versions.first().map_or(0, |(v, _, _)| *v);
        let now = SystemTime::now();
        for (version, _, data) in versions {
            let l = match data {
                Data::Pending { until, .. } if until > now => return Ok(Read::Pending(until)),
                // abandoned: its writer never counted it as written
                Data::Pending { .. } => continue,
                Data::Labels(l) => l,
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
            return Ok(Read::State(State {
                version: highest,
                token,
                lease,
            }));
        }
        Ok(Read::State(State {
            version: highest,
            token: 0,
            lease: None,
        }))
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
        let mut l = Labels::from([
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
            return match self.store.find(&name).await? {
                // gone again (removed as an old version, or withdrawn): decide again
                Found::Missing | Found::Pending => Ok(false),
                Found::Labelled(found) if ours(&found, &app.slug()) => Ok(false),
                Found::Labelled(_) => Err(Error::conflict(format!(
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
        for (_, id, data) in versions.iter().filter(|(v, _, _)| *v < version) {
            // an abandoned version has no mark to prove whose it is: left alone
            if matches!(data, Data::Labels(_)) {
                self.store.remove(id).await;
            }
        }
        Ok(true)
    }

    /// Reads the state, decides with `decide`, writes the next version; again when
    /// another program wrote first, or once a pending version is written or abandoned.
    async fn change<T>(
        &self,
        app: &App,
        mut decide: impl FnMut(&State) -> Decision<T>,
    ) -> Result<T> {
        let mut attempt = 0;
        let mut waits = 0u64;
        while attempt < ATTEMPTS {
            let state = match self.current(app).await? {
                Read::State(s) => s,
                Read::Pending(until) => {
                    // bounded by the pending version's time, after which it is skipped
                    let left = until
                        .duration_since(SystemTime::now())
                        .unwrap_or(Duration::ZERO);
                    let pause = Duration::from_millis(20 * (1 << waits.min(4)));
                    waits += 1;
                    tokio::time::sleep(pause.min(left + Duration::from_millis(1))).await;
                    continue;
                }
            };
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
                    attempt += 1;
                }
            }
        }
        Err(Error::provider(
            self.store.provider(),
            format!("the lock of {app} changed {ATTEMPTS} times while this change was decided"),
            true,
        ))
    }

    /// The current holder of the app's lock, if its lease has not passed. While a
    /// version is being written, the holder is not known: `Err(Locked)` naming the
    /// writer as unknown.
    pub async fn holder(&self, app: &App) -> Result<Option<LockHolder>> {
        match self.current(app).await? {
            Read::Pending(_) => Err(locked(
                app,
                "a writer whose version is not written yet".into(),
            )),
            Read::State(s) => Ok(s.lease.filter(Lease::live).map(|l| LockHolder {
                deployment: l.deployment,
                process: l.process,
            })),
        }
    }

    /// Removes every version of the app's lock that carries its labels (a version
    /// abandoned before its write carries none, and is left alone): its holder and
    /// its last token are forgotten, and the next token is 1 again. Only when no
    /// deployment of the app can run (tests, an app taken down for good).
    /// Idempotent: nothing to remove is `Ok`.
    pub async fn forget(&self, app: &App) -> Result<()> {
        for (_, id, data) in self.versions(app).await? {
            if matches!(data, Data::Labels(_)) {
                self.store.remove(&id).await;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl<S: Store> Lock for RegisterLock<S> {
    async fn acquire(
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

    async fn renew(
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

    async fn release(&self, app: &App, holder: &LockHolder, token: FencingToken) -> Result<()> {
        self.change(app, |state| match &state.lease {
            Some(l) if l.is(holder) && state.token == token.0 => {
                Decision::Write(None, state.token, ())
            }
            _ => Decision::Done(Ok(())),
        })
        .await
    }
}

/// Whether `labels` carry the marks of a version of the lock of `slug`.
pub fn ours(labels: &Labels, slug: &str) -> bool {
    labels.get(labels::OWNER).map(String::as_str) == Some(labels::OWNER_VALUE)
        && labels.get(ROLE_LABEL).map(String::as_str) == Some(ROLE)
        && labels.get(LOCK_LABEL).map(String::as_str) == Some(slug)
}

/// Labels as the `HashMap` some platform clients take.
pub fn to_map(labels: &Labels) -> HashMap<String, String> {
    labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}
