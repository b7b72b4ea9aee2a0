//! [`SwarmLock`]: the deployment lock kept in a Docker Swarm's own replicated store,
//! shared by every machine that deploys to the swarm through any of its managers.
//!
//! # Design
//!
//! The same register of versions as [`DockerLock`](crate::DockerLock) (one code for
//! both), kept in **swarm secrets** instead of containers: version `n` of the lock of
//! app `web.production` is the secret `bluegreen-lock-web-production-n`, its labels
//! hold the fencing token and, while the lock is held, the holder and the end of its
//! lease; the current state is the highest version. Every change creates version
//! `n + 1`: the swarm gives secret names out once across the cluster, and a create
//! of a taken name is `409 Conflict`, so of the programs that decided on version
//! `n`, exactly one writes `n + 1`; the others read again and decide again. Old
//! versions are removed after each change; the current one (which keeps the last
//! token after a release) never.
//!
//! Secrets rather than configs: they give the same guarantees (cluster-unique
//! names, an atomic create, stored in the managers' Raft log) and the Docker client
//! this crate uses speaks the secrets API. Each secret holds one line of text
//! naming the lock; nothing mounts it.
//!
//! Names longer than the swarm allows (64 characters) are shortened to
//! `bluegreen-lockh-<start of the slug>-<hash of the slug>-<version>`; the
//! `bluegreen.lock` label keeps the whole slug.
//!
//! # What it excludes, and its clock
//!
//! Every program that deploys to the same swarm, through any of its managers: a
//! manager forwards every secret call to the Raft leader, which orders it in the
//! replicated log, so two programs on two machines talking to two managers exclude
//! each other (the tests do exactly that). Programs deploying to different swarms do
//! not. Without a quorum of managers the swarm refuses every change: acquiring
//! fails (a retryable [`Error::Provider`](bluegreen_core::Error::Provider)) and no
//! deployment starts; a lock is never taken on a partial view.
//!
//! Leases are measured on the deploying programs' wall clocks (the end of a lease is
//! written as Unix milliseconds): their clocks must agree far better than the lease.
//!
//! # Resources
//!
//! Every secret carries `bluegreen.owner=bluegreen`, `bluegreen.role=lock` and
//! `bluegreen.lock=<slug>`; the lock reads, creates and removes only such secrets, and
//! a secret without them that has a version's name is an error
//! ([`Error::Conflict`](bluegreen_core::Error::Conflict)), never touched. The lock
//! never updates a secret (the API can change a secret's labels: nothing else
//! should either).

use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use bluegreen_core::labels::{self, Labels};
use bluegreen_core::{App, FencingToken, Lock, LockHolder, Result};
use bollard::models::SecretSpec;
use bollard::query_parameters::ListSecretsOptionsBuilder;
use bollard::Docker;

use crate::build::ROLE_LABEL;
use crate::error::{docker_error, has_status};
use crate::labels::{label_filters, labels_of};
use bluegreen_core::register::{self, Data, Found, RegisterLock, Store, Stored, LOCK_LABEL, ROLE};

/// The longest name the swarm gives a secret.
const MAX_NAME: usize = 64;

/// A lease lock per app in a Docker Swarm, with fencing tokens; its design is
/// described at the top of its source file.
///
/// Tokens count from 1 per app (and per swarm). A holder whose lease passed while
/// nobody took the lock keeps it: its renewal succeeds, and taking it again gives
/// the same token.
///
/// ```no_run
/// # async fn run() -> bluegreen_core::Result<()> {
/// use std::sync::Arc;
/// use bluegreen_core::Engine;
/// use bluegreen_docker::{connect, EmbeddedProxy, RegistryImage, SwarmFleet, SwarmLock};
/// let manager = connect().await?; // DOCKER_HOST: any manager of the swarm
/// let image = RegistryImage::new(manager.clone(), "registry.internal:5000")?;
/// let proxy = EmbeddedProxy::start("127.0.0.1:8080".parse().unwrap(), Default::default()).await?;
/// let engine = Engine::new(image, SwarmFleet::new(manager.clone()), proxy.router())
///     .with_lock(Arc::new(SwarmLock::new(manager)));
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct SwarmLock {
    lock: RegisterLock<Secrets>,
}

/// The versions as swarm secrets.
#[derive(Clone, Debug)]
struct Secrets {
    docker: Docker,
}

#[async_trait]
impl Store for Secrets {
    fn kind(&self) -> &'static str {
        "secret"
    }

    fn name(&self, app: &App, version: u64) -> String {
        secret_name(app, version)
    }

    async fn list(&self, slug: &str, app: &App) -> Result<Vec<Stored>> {
        let list = self
            .docker
            .list_secrets(Some(
                ListSecretsOptionsBuilder::new()
                    .filters(&label_filters(&[
                        (labels::OWNER, labels::OWNER_VALUE),
                        (ROLE_LABEL, ROLE),
                        (LOCK_LABEL, slug),
                    ]))
                    .build(),
            ))
            .await
            .map_err(|e| docker_error(format!("the swarm lock of {app}"), e))?;
        Ok(list
            .into_iter()
            .map(|s| {
                let spec = s.spec.as_ref();
                let name = spec.and_then(|s| s.name.clone()).unwrap_or_default();
                Stored {
                    data: Data::Labels(labels_of(spec.and_then(|s| s.labels.as_ref()))),
                    id: s.id.unwrap_or_else(|| name.clone()),
                    name,
                }
            })
            .collect())
    }

    fn provider(&self) -> &'static str {
        crate::error::PROVIDER
    }

    async fn create(&self, name: &str, labels: Labels) -> Result<bool> {
        let labels = register::to_map(&labels);
        let data = format!(
            "bluegreen lock {} version {}\n",
            labels.get(LOCK_LABEL).map_or("", String::as_str),
            name.rsplit('-').next().unwrap_or_default()
        );
        let spec = SecretSpec {
            name: Some(name.to_owned()),
            labels: Some(labels),
            data: Some(base64::engine::general_purpose::STANDARD.encode(data)),
            ..Default::default()
        };
        match self.docker.create_secret(spec).await {
            Ok(_) => Ok(true),
            Err(e) if has_status(&e, 409) => Ok(false),
            Err(e) => Err(docker_error(format!("lock secret {name}"), e)),
        }
    }

    async fn find(&self, name: &str) -> Result<Found> {
        match self.docker.inspect_secret(name).await {
            Ok(s) => Ok(Found::Labelled(labels_of(
                s.spec.as_ref().and_then(|s| s.labels.as_ref()),
            ))),
            Err(e) if has_status(&e, 404) => Ok(Found::Missing),
            Err(e) => Err(docker_error(format!("lock secret {name}"), e)),
        }
    }

    async fn remove(&self, id: &str) {
        if let Err(e) = self.docker.delete_secret(id).await {
            if !has_status(&e, 404) {
                tracing::debug!(secret = id, error = %e, "removing an old lock version");
            }
        }
    }
}

/// The name of version `version` of the app's lock secret:
/// `bluegreen-lock-<slug>-<version>`, or when that is longer than the swarm allows,
/// `bluegreen-lockh-<start of the slug>-<FNV-1a hash of the slug>-<version>`. The
/// two forms differ at their 15th character, so no name of one form is a name of
/// the other; the version (digits) follows the last `-`.
fn secret_name(app: &App, version: u64) -> String {
    let slug = app.slug();
    let full = format!("bluegreen-lock-{slug}-{version}");
    if full.len() <= MAX_NAME {
        return full;
    }
    let hash = slug.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let tail = format!("-{hash:016x}-{version}");
    let room = MAX_NAME - "bluegreen-lockh-".len() - tail.len();
    let start = slug[..room.min(slug.len())].trim_end_matches('-');
    format!("bluegreen-lockh-{start}{tail}")
}

impl SwarmLock {
    /// Locks kept in the swarm whose **manager** `docker` talks to (any manager: see
    /// [`crate::connect`]). A daemon that is not a swarm manager fails every call
    /// with a retryable [`Error::Provider`](bluegreen_core::Error::Provider).
    pub fn new(docker: Docker) -> Self {
        SwarmLock {
            lock: RegisterLock::new(Secrets { docker }),
        }
    }

    /// The current holder of the app's lock, if its lease has not passed.
    pub async fn holder(&self, app: &App) -> Result<Option<LockHolder>> {
        self.lock.holder(app).await
    }

    /// Removes every version of the app's lock: its holder and its last token are
    /// forgotten, and the next token is 1 again. Only when no deployment of the app
    /// can run (tests, an app taken down for good). Idempotent.
    pub async fn forget(&self, app: &App) -> Result<()> {
        self.lock.forget(app).await
    }
}

#[async_trait]
impl Lock for SwarmLock {
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

#[cfg(test)]
mod tests {
    use super::*;
    use bluegreen_testkit::names::near_collisions;

    fn valid(name: &str) -> bool {
        name.len() <= MAX_NAME
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            && name.as_bytes()[0].is_ascii_alphanumeric()
            && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric()
    }

    #[test]
    fn every_app_has_secret_names_of_its_own_that_the_swarm_accepts() {
        let mut apps = near_collisions();
        let long = "a".repeat(bluegreen_core::MAX_NAME_LEN);
        for (n, e) in [
            (&long[..], &long[..]),
            (&long[..], "b"),
            (&long[..29], "b-"),
        ] {
            if let Ok(app) = App::new(n, e.trim_end_matches('-')) {
                apps.push(app);
            }
        }
        apps.push(App::new(&long[..], &long[..29]).unwrap());
        let mut seen = std::collections::BTreeSet::new();
        apps.retain(|a| seen.insert(a.slug()));
        let mut names = std::collections::BTreeMap::new();
        for app in &apps {
            for version in [1, 7, 10, 11, 100, u64::MAX] {
                let name = secret_name(app, version);
                assert!(valid(&name), "{name} ({} characters)", name.len());
                assert!(name.ends_with(&format!("-{version}")), "{name}");
                if let Some(first) = names.insert(name.clone(), (app.clone(), version)) {
                    panic!("{name}: {first:?} and {:?}", (app, version));
                }
            }
        }
        let web = App::new("web", "production").unwrap();
        assert_eq!(secret_name(&web, 42), "bluegreen-lock-web-production-42");
        let long = App::new(&long[..], &long[..]).unwrap();
        assert!(secret_name(&long, 3).starts_with("bluegreen-lockh-aaaa"));
    }
}
