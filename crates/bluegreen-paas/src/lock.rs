//! [`PlatformLock`]: the deployment lock kept on the platform itself, shared by every
//! machine that deploys through one account.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bluegreen_core::labels::Labels;
use bluegreen_core::register::{self, Data, Found, RegisterLock, Store, Stored};
use bluegreen_core::{App, Error, ErrorKind, FencingToken, Lock, LockHolder, Result};
use serde::Deserialize;
use tokio::time::Instant;

use crate::api::{self, Vars};
use crate::client::PlatformClient;
use crate::labels::var_for_label;
use crate::naming::Naming;

/// The default write window: how long after its `created_at` a version's app may
/// still be waiting for its config vars before it counts as abandoned.
pub const WRITE_WINDOW: Duration = Duration::from_secs(20);

/// A lease lock per app kept in platform apps, with fencing tokens.
///
/// # Design
///
/// The Platform API has no compare-and-swap on config vars, but an app's name is
/// taken atomically: of two `POST /apps` with one name, one gets `201`, the other
/// `422` ("Name is already taken"). The lock of an app is therefore the core's
/// register of versions ([`bluegreen_core::register`], the same code as the Docker
/// locks), each version an app of its own: version `n` of the lock of
/// `web.production` is the app `web-production--l<n in base 36>` ([`Naming::lock_app`]).
/// Its config vars hold the version's state: bluegreen's owner mark,
/// `BLUEGREEN_ROLE=lock`, `BLUEGREEN_LOCK=<slug>`, the version, the fencing token,
/// and while the lock is held the holder and the end of its lease
/// (`BLUEGREEN_LOCK_UNTIL`, Unix milliseconds). The current state is the highest
/// version. Every change (acquire, renew, release) reads it, decides, and creates the
/// next version's app; of all the programs that decided on version `n`, one creates
/// `n + 1`, the others get `422`, read again and decide again. Old versions are
/// deleted after each change; the current one (which keeps the last token after a
/// release) never.
///
/// # Not yet written
///
/// An app is created empty: its config vars are written by a second call. A version
/// whose app has no config vars is **pending**: held by a writer that has not
/// written yet, until its `created_at` plus the write window ([`WRITE_WINDOW`], 20 s
/// by default); every change waits for it. A writer counts its version as written
/// only when its config vars landed within half the window on its own clock;
/// otherwise it deletes the app it created and decides again. After the window a
/// pending version is **abandoned** (its writer died between the two calls): it is
/// skipped, the state is the highest version written, and the next change takes the
/// version after the abandoned one. An abandoned app carries no mark, so nothing
/// proves it is bluegreen's: it is left in place (delete it by hand).
///
/// # What it excludes, and its clock
///
/// Every program that deploys the app through the same platform with the same
/// [`Naming`] prefix and a token that sees the lock's apps (one account or team).
/// App names are global on the platform: a lock name taken by an app this account
/// cannot see is [`Error::Conflict`](bluegreen_core::Error::Conflict) (choose another
/// prefix). Leases and the write window are measured on the deployers' wall clocks
/// against the platform's `created_at`: the clocks must agree far better than a
/// quarter of the window and than the lease.
///
/// # Cost
///
/// Each change lists the account's apps (`GET /apps`, every page), reads the config
/// vars of each lock app of the app (one or two), creates an app, sets its config
/// vars, lists again and deletes the old version: about seven calls per acquire,
/// renewal or release. Each version is an app, so creating one needs a free app
/// slot in the account.
///
/// Apps at a lock name that carry config vars without the lock's marks are never
/// read as versions, changed or deleted; creating over one is
/// [`Error::Conflict`](bluegreen_core::Error::Conflict).
///
/// Tokens count from 1 per app (and per platform and prefix). A holder whose lease
/// passed while nobody took the lock keeps it: its renewal succeeds, and taking it
/// again gives the same token.
///
/// ```no_run
/// # async fn run() -> bluegreen_core::Result<()> {
/// use std::sync::Arc;
/// use bluegreen_core::Engine;
/// use bluegreen_paas::{PlatformClient, PlatformLock, ReleaseFleet};
/// let client = PlatformClient::from_env(None)?;
/// let fleet = ReleaseFleet::new(client.clone());
/// // the fleet's parts come with this lock; by hand:
/// let engine = Engine::from_parts(fleet.parts()).with_lock(Arc::new(PlatformLock::new(client)));
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct PlatformLock {
    lock: RegisterLock<LockApps>,
}

/// The versions as apps.
#[derive(Clone, Debug)]
struct LockApps {
    client: PlatformClient,
    naming: Naming,
    window: Duration,
}

/// An app as `GET /apps` lists it.
#[derive(Deserialize)]
struct Listed {
    name: String,
    #[serde(default)]
    created_at: Option<String>,
}

impl LockApps {
    /// The lock's labels kept in config vars.
    fn labels_of(vars: &Vars) -> Labels {
        register::LABELS
            .iter()
            .filter_map(|k| {
                vars.get(&var_for_label(k))
                    .map(|v| ((*k).to_owned(), v.clone()))
            })
            .collect()
    }

    /// What the app `name`, created at `created`, holds; `None` when it is gone.
    async fn data(&self, name: &str, version: u64, created: SystemTime) -> Result<Option<Data>> {
        let Some(vars) = api::config_vars(&self.client, name).await? else {
            return Ok(None);
        };
        Ok(Some(if vars.is_empty() {
            Data::Pending {
                version,
                until: created + self.window,
            }
        } else {
            Data::Labels(Self::labels_of(&vars))
        }))
    }
}

#[async_trait]
impl Store for LockApps {
    fn kind(&self) -> &'static str {
        "app"
    }

    fn provider(&self) -> &'static str {
        crate::error::PROVIDER
    }

    fn name(&self, app: &App, version: u64) -> String {
        // past 36^11 versions no name fits; the create of this name then fails
        self.naming
            .lock_app(app, version)
            .unwrap_or_else(|| format!("{}{version}", self.naming.lock_prefix(app)))
    }

    async fn list(&self, _slug: &str, app: &App) -> Result<Vec<Stored>> {
        let prefix = self.naming.lock_prefix(app);
        let apps: Vec<Listed> = self.client.list("/apps").await?;
        let mut out = Vec::new();
        for a in apps.into_iter().filter(|a| a.name.starts_with(&prefix)) {
            let Some(version) = self.naming.lock_version(app, &a.name) else {
                continue;
            };
            let created = api::parse_time(a.created_at.as_deref());
            if let Some(data) = self.data(&a.name, version, created).await? {
                // the emulator and the platform both take a name where an id goes
                out.push(Stored {
                    id: a.name.clone(),
                    name: a.name,
                    data,
                });
            }
        }
        Ok(out)
    }

    async fn create(&self, name: &str, labels: Labels) -> Result<bool> {
        let started = Instant::now();
        match self
            .client
            .post::<serde_json::Value>("/apps", &serde_json::json!({ "name": name }))
            .await
        {
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::Invalid | ErrorKind::Conflict) => {
                if api::app_info(&self.client, name).await?.is_none() {
                    return Err(Error::conflict(format!(
                        "cannot create lock app {name}: {e}; an app this account cannot \
                         see has the name; choose another name prefix"
                    )));
                }
                return Ok(false);
            }
            Err(e) => return Err(e),
        }
        let vars = labels
            .iter()
            .map(|(k, v)| (var_for_label(k), Some(v.clone())))
            .collect();
        let written = match api::patch_config(&self.client, name, &vars).await {
            Ok(()) => true,
            // deleted meanwhile, as an old version or an abandoned one
            Err(e) if e.kind() == ErrorKind::NotFound => false,
            Err(e) => {
                self.withdraw(name).await;
                return Err(e);
            }
        };
        if written && started.elapsed() <= self.window / 2 {
            return Ok(true);
        }
        // readers may have taken this version for abandoned: it must not count
        self.withdraw(name).await;
        Ok(false)
    }

    async fn find(&self, name: &str) -> Result<Found> {
        Ok(match api::config_vars(&self.client, name).await? {
            None => Found::Missing,
            Some(vars) if vars.is_empty() => Found::Pending,
            Some(vars) => Found::Labelled(Self::labels_of(&vars)),
        })
    }

    async fn remove(&self, id: &str) {
        if let Err(e) = crate::apps::delete(&self.client, id).await {
            tracing::debug!(app = id, error = %e, "removing an old lock version");
        }
    }
}

impl LockApps {
    /// Deletes an app this writer created and will not count (best effort: a left
    /// app is skipped once its window passes).
    async fn withdraw(&self, name: &str) {
        if let Err(e) = crate::apps::delete(&self.client, name).await {
            tracing::warn!(app = name, error = %e, "deleting a lock version not written in time");
        }
    }
}

impl PlatformLock {
    /// Locks kept in the apps of the account `client` reaches, named without a
    /// prefix, with the default [`WRITE_WINDOW`].
    pub fn new(client: PlatformClient) -> Self {
        PlatformLock {
            lock: RegisterLock::new(LockApps {
                client,
                naming: Naming::new(),
                window: WRITE_WINDOW,
            }),
        }
    }

    /// Names the lock's apps with `naming` (use the fleet's: the prefix keeps the
    /// names of two teams apart).
    pub fn with_naming(self, naming: Naming) -> Self {
        let mut store = self.lock.store().clone();
        store.naming = naming;
        PlatformLock {
            lock: RegisterLock::new(store),
        }
    }

    /// Sets the write window (see [`PlatformLock`]'s design); at least 2 s,
    /// and far above a create and a config var change. Every deployer of an app must
    /// use the same.
    pub fn with_write_window(self, window: Duration) -> Result<Self> {
        if window < Duration::from_secs(2) {
            return Err(Error::invalid(
                "lock.write_window",
                format!("{window:?} is shorter than 2 s"),
            ));
        }
        let mut store = self.lock.store().clone();
        store.window = window;
        Ok(PlatformLock {
            lock: RegisterLock::new(store),
        })
    }

    /// The current holder of the app's lock, if its lease has not passed;
    /// [`Error::Locked`] while a version is being written (its writer is not known
    /// yet).
    pub async fn holder(&self, app: &App) -> Result<Option<LockHolder>> {
        self.lock.holder(app).await
    }

    /// Deletes every version of the app's lock that carries its marks: its holder and
    /// its last token are forgotten, and the next token is 1 again. Only when no
    /// deployment of the app can run (tests, an app taken down for good).
    /// Idempotent.
    pub async fn forget(&self, app: &App) -> Result<()> {
        self.lock.forget(app).await
    }
}

#[async_trait]
impl Lock for PlatformLock {
    async fn acquire(
        &self,
        app: &App,
        holder: &LockHolder,
        lease: Duration,
    ) -> Result<FencingToken> {
        self.lock.acquire(app, holder, lease).await
    }

    async fn renew(
        &self,
        app: &App,
        holder: &LockHolder,
        token: FencingToken,
        lease: Duration,
    ) -> Result<()> {
        self.lock.renew(app, holder, token, lease).await
    }

    async fn release(&self, app: &App, holder: &LockHolder, token: FencingToken) -> Result<()> {
        self.lock.release(app, holder, token).await
    }
}
