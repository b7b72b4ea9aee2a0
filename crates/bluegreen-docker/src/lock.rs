//! [`DockerLock`]: the deployment lock kept on a Docker daemon, shared by every
//! machine that deploys through that daemon.
//!
//! # Design
//!
//! The lock of an app is a **register of versions**, each version a container that
//! is created and never started: `bluegreen-lock-<app>-<environment>-<version>`
//! (`bluegreen-lock-web-production-42`). A version's labels hold the whole state of
//! the lock: the fencing token, and while it is held the holder (deployment and
//! process) and the end of its lease. The **current state is the version with the
//! highest number**. Labels cannot change once a container exists, so nothing is
//! ever updated in place: every change (acquire, renew, release) reads the current
//! version `n`, decides, and creates version `n + 1`.
//!
//! That create is the compare-and-swap. Docker reserves container names atomically:
//! of all the programs that read version `n` and try to create `n + 1`, exactly one
//! succeeds; the others get `409 Conflict`, read the state again and decide again (an
//! acquirer then finds the lock held and gets [`Error::Locked`]). A change therefore
//! only lands when it was decided on the latest state: the register is linearizable,
//! and tokens, carried from version to version and raised by one on each new holder,
//! only grow.
//!
//! Old versions are removed after each change, the current one never (it keeps the
//! last token after a release). A writer that read version `n` long ago could
//! recreate a removed name `n + 1`; so after every create the writer checks that no
//! higher version exists, and if one does it removes its own version and decides
//! again. Readers only ever trust the highest number, which a stale write cannot
//! reach.
//!
//! # What it excludes, and its clock
//!
//! Every program that deploys through the same Docker daemon (its local socket, or
//! `DOCKER_HOST=ssh://...`/`tcp://...` from other machines): one daemon is one lock
//! store. Programs that talk to different daemons do not exclude each other. Leases
//! are measured on the deploying programs' wall clocks (the end of a lease is written
//! as Unix milliseconds): their clocks must agree far better than the lease.
//!
//! # Resources
//!
//! The containers use the image `bluegreen/lock:1`, built on first use from an
//! empty `FROM scratch` context (no layer, nothing pulled); they have no network and
//! are never started. Everything carries `bluegreen.owner=bluegreen` and
//! `bluegreen.role=lock`; the lock reads, creates and removes only such containers,
//! and a container of another owner that has a lock's name is an error, never
//! touched. `docker container prune` removes created containers, and with them the
//! lock's last token: exclude them (`--filter label!=bluegreen.role=lock`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bluegreen_core::labels;
use bluegreen_core::{App, Error, FencingToken, Lock, LockHolder, Result};
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, InspectContainerOptions, ListContainersOptionsBuilder,
    RemoveContainerOptionsBuilder,
};
use bollard::Docker;
use tokio::sync::OnceCell;

use crate::build::{self, ContextFile, ROLE_LABEL};
use crate::client::{label_filters, labels_of};
use crate::error::{docker_error, has_status};

/// The image of the lock's containers.
pub const LOCK_IMAGE: &str = "bluegreen/lock:1";
/// The label naming the lock (the app's slug) on each of its versions.
pub const LOCK_LABEL: &str = "bluegreen.lock";
const VERSION_LABEL: &str = "bluegreen.lock.version";
const TOKEN_LABEL: &str = "bluegreen.lock.token";
const DEPLOYMENT_LABEL: &str = "bluegreen.lock.deployment";
const PROCESS_LABEL: &str = "bluegreen.lock.process";
const UNTIL_LABEL: &str = "bluegreen.lock.until";
const ROLE: &str = "lock";
/// How often a change that lost a race is decided again before giving up.
const ATTEMPTS: usize = 64;

/// A lease lock per app on a Docker daemon, with fencing tokens; see the [module
/// documentation](self) for its design.
///
/// Tokens count from 1 per app (and per daemon). A holder whose lease passed while
/// nobody took the lock keeps it: its renewal succeeds, and taking it again gives
/// the same token.
///
/// ```no_run
/// # async fn run() -> bluegreen_core::Result<()> {
/// use std::sync::Arc;
/// use bluegreen_core::Engine;
/// use bluegreen_docker::{
///     connect, DockerFleet, DockerFleetOptions, DockerImage, DockerLock, EmbeddedProxy,
/// };
/// let docker = connect().await?;
/// let proxy = EmbeddedProxy::start("127.0.0.1:8080".parse().unwrap(), Default::default()).await?;
/// let engine = Engine::new(
///     DockerImage::new(docker.clone()),
///     DockerFleet::new(docker.clone(), DockerFleetOptions::default()),
///     proxy.router(),
/// )
/// .with_lock(Arc::new(DockerLock::new(docker)));
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct DockerLock {
    docker: Docker,
    image: Arc<OnceCell<String>>,
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

/// How a write went.
enum Written {
    Yes,
    /// Another program wrote first: decide again.
    Raced,
}

impl DockerLock {
    /// Locks kept on the daemon `docker` talks to (see [`crate::connect`]). The lock
    /// image is built on first use.
    pub fn new(docker: Docker) -> Self {
        DockerLock {
            docker,
            image: Arc::new(OnceCell::new()),
        }
    }

    /// The name of version `version` of the app's lock. A slug names one app, and
    /// the version (digits) follows its last `-`: no two apps share a name.
    fn name(app: &App, version: u64) -> String {
        format!("bluegreen-lock-{}-{version}", app.slug())
    }

    /// The id of the lock image, built when missing.
    async fn image(&self) -> Result<String> {
        self.image
            .get_or_try_init(|| async {
                if let Some(id) = build::image_id(&self.docker, LOCK_IMAGE).await? {
                    return Ok(id);
                }
                build::build(
                    &self.docker,
                    LOCK_IMAGE,
                    ROLE,
                    &[ContextFile {
                        path: "Dockerfile".into(),
                        bytes: b"FROM scratch\nCMD [\"/bluegreen-lock\"]\n".to_vec(),
                        mode: 0o644,
                    }],
                )
                .await
            })
            .await
            .cloned()
    }

    /// The versions of the app's lock that exist: (version, id, labels), any order.
    async fn versions(&self, app: &App) -> Result<Vec<(u64, String, labels::Labels)>> {
        let slug = app.slug();
        let list = self
            .docker
            .list_containers(Some(
                ListContainersOptionsBuilder::new()
                    .all(true)
                    .filters(&label_filters(&[
                        (labels::OWNER, labels::OWNER_VALUE),
                        (ROLE_LABEL, ROLE),
                        (LOCK_LABEL, &slug),
                    ]))
                    .build(),
            ))
            .await
            .map_err(|e| docker_error(format!("the lock of {app}"), e))?;
        let mut out = Vec::new();
        for c in list {
            let l = labels_of(c.labels.as_ref());
            // the filters are exact; check again what is ours before trusting it
            if l.get(labels::OWNER).map(String::as_str) != Some(labels::OWNER_VALUE)
                || l.get(LOCK_LABEL) != Some(&slug)
            {
                continue;
            }
            let name = c
                .names
                .as_ref()
                .and_then(|n| n.first())
                .map(|n| n.trim_start_matches('/').to_owned())
                .unwrap_or_default();
            let version = l
                .get(VERSION_LABEL)
                .and_then(|v| v.parse().ok())
                .filter(|v| name == Self::name(app, *v))
                .ok_or_else(|| {
                    Error::conflict(format!(
                        "container {name} is not a readable version of the lock of {app} \
                         (label {VERSION_LABEL})"
                    ))
                })?;
            out.push((version, c.id.unwrap_or(name), l));
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
                "{} is not a readable lock: label {label}",
                Self::name(app, version)
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

    /// Creates version `version` holding `token` and `lease`; [`Written::Raced`]
    /// when another program created that version first, or a higher one exists.
    async fn write(
        &self,
        app: &App,
        version: u64,
        token: u64,
        lease: Option<&Lease>,
    ) -> Result<Written> {
        let image = self.image().await?;
        let name = Self::name(app, version);
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
        let body = ContainerCreateBody {
            image: Some(image),
            labels: Some(l),
            network_disabled: Some(true),
            host_config: Some(HostConfig {
                network_mode: Some("none".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        match self
            .docker
            .create_container(
                Some(CreateContainerOptionsBuilder::new().name(&name).build()),
                body,
            )
            .await
        {
            Ok(_) => {}
            Err(e) if has_status(&e, 409) => {
                let found = self
                    .docker
                    .inspect_container(&name, None::<InspectContainerOptions>)
                    .await
                    .ok();
                let found = labels_of(
                    found
                        .as_ref()
                        .and_then(|c| c.config.as_ref())
                        .and_then(|c| c.labels.as_ref()),
                );
                if found.is_empty() {
                    // gone again (removed as an old version): decide again
                    return Ok(Written::Raced);
                }
                if found.get(labels::OWNER).map(String::as_str) != Some(labels::OWNER_VALUE)
                    || found.get(LOCK_LABEL) != Some(&app.slug())
                {
                    return Err(Error::conflict(format!(
                        "container {name} exists without bluegreen's lock labels; \
                         the lock of {app} cannot use its name (it is left alone)"
                    )));
                }
                return Ok(Written::Raced);
            }
            Err(e) => return Err(docker_error(format!("lock container {name}"), e)),
        }
        // a name removed as an old version can be created again by a program that
        // read the state long ago: only the highest version counts
        let versions = self.versions(app).await?;
        if versions.iter().any(|(v, _, _)| *v > version) {
            self.remove_version(&name).await;
            return Ok(Written::Raced);
        }
        for (_, id, _) in versions.iter().filter(|(v, _, _)| *v < version) {
            self.remove_version(id).await;
        }
        Ok(Written::Yes)
    }

    /// Removes one version (best effort: an old version left behind is removed by
    /// the next change).
    async fn remove_version(&self, id: &str) {
        if let Err(e) = self
            .docker
            .remove_container(
                id,
                Some(RemoveContainerOptionsBuilder::new().force(true).build()),
            )
            .await
        {
            if !has_status(&e, 404) && !has_status(&e, 409) {
                tracing::debug!(container = id, error = %e, "removing an old lock version");
            }
        }
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
                    match self
                        .write(app, state.version + 1, token, lease.as_ref())
                        .await?
                    {
                        Written::Yes => return Ok(out),
                        Written::Raced => {
                            let pause = 5 + fastrand::u64(..20) * (attempt as u64).min(5);
                            tokio::time::sleep(Duration::from_millis(pause)).await;
                        }
                    }
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
    pub async fn holder(&self, app: &App) -> Result<Option<LockHolder>> {
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

    /// Removes every version of the app's lock: its holder and its last token are
    /// forgotten, and the next token is 1 again. Only when no deployment of the app
    /// can run (tests, an app taken down for good). Idempotent.
    pub async fn forget(&self, app: &App) -> Result<()> {
        for (_, id, _) in self.versions(app).await? {
            self.remove_version(&id).await;
        }
        Ok(())
    }
}

#[async_trait]
impl Lock for DockerLock {
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

#[cfg(test)]
mod tests {
    use super::*;
    use bluegreen_testkit::names::near_collisions;

    #[test]
    fn every_app_has_lock_names_of_its_own() {
        let apps = near_collisions();
        let mut names = std::collections::BTreeMap::new();
        for app in &apps {
            for version in [1, 7, 10, 11, 100] {
                let name = DockerLock::name(app, version);
                if let Some(first) = names.insert(name.clone(), (app.clone(), version)) {
                    panic!("{name}: {first:?} and {:?}", (app, version));
                }
            }
        }
        let web = App::new("web", "production").unwrap();
        assert_eq!(
            DockerLock::name(&web, 42),
            "bluegreen-lock-web-production-42"
        );
    }
}
