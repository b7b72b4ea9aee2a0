//! [`DockerLock`]: the deployment lock kept on a Docker daemon, shared by every
//! machine that deploys through that daemon.
//!
//! # Design
//!
//! The register itself (read, decide, create the next version, check, prune) is
//! shared with [`SwarmLock`](crate::SwarmLock); here it is kept in containers.
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

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bluegreen_core::labels::{self, Labels};
use bluegreen_core::{App, FencingToken, Lock, LockHolder, Result};
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, InspectContainerOptions, ListContainersOptionsBuilder,
    RemoveContainerOptionsBuilder,
};
use bollard::Docker;
use tokio::sync::OnceCell;

use crate::build::{self, ContextFile, ROLE_LABEL};
use crate::error::{docker_error, has_status};
use crate::labels::{label_filters, labels_of};
use bluegreen_core::register::{self, Data, Found, RegisterLock, Store, Stored, LOCK_LABEL, ROLE};

/// The image of the lock's containers.
pub const LOCK_IMAGE: &str = "bluegreen/lock:1";

/// A lease lock per app on a Docker daemon, with fencing tokens; its design is
/// described at the top of its source file.
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
    lock: RegisterLock<Containers>,
}

/// The versions as created, never-started containers.
#[derive(Clone, Debug)]
struct Containers {
    docker: Docker,
    image: Arc<OnceCell<String>>,
}

impl Containers {
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
}

#[async_trait]
impl Store for Containers {
    fn kind(&self) -> &'static str {
        "container"
    }

    /// A slug names one app, and the version (digits) follows its last `-`: no two
    /// apps share a name.
    fn name(&self, app: &App, version: u64) -> String {
        container_name(app, version)
    }

    async fn list(&self, slug: &str, app: &App) -> Result<Vec<Stored>> {
        let list = self
            .docker
            .list_containers(Some(
                ListContainersOptionsBuilder::new()
                    .all(true)
                    .filters(&label_filters(&[
                        (labels::OWNER, labels::OWNER_VALUE),
                        (ROLE_LABEL, ROLE),
                        (LOCK_LABEL, slug),
                    ]))
                    .build(),
            ))
            .await
            .map_err(|e| docker_error(format!("the lock of {app}"), e))?;
        Ok(list
            .into_iter()
            .map(|c| {
                let name = c
                    .names
                    .as_ref()
                    .and_then(|n| n.first())
                    .map(|n| n.trim_start_matches('/').to_owned())
                    .unwrap_or_default();
                Stored {
                    data: Data::Labels(labels_of(c.labels.as_ref())),
                    id: c.id.unwrap_or_else(|| name.clone()),
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
        let body = ContainerCreateBody {
            image: Some(self.image().await?),
            labels: Some(labels),
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
                Some(CreateContainerOptionsBuilder::new().name(name).build()),
                body,
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if has_status(&e, 409) => Ok(false),
            Err(e) => Err(docker_error(format!("lock container {name}"), e)),
        }
    }

    async fn find(&self, name: &str) -> Result<Found> {
        match self
            .docker
            .inspect_container(name, None::<InspectContainerOptions>)
            .await
        {
            Ok(c) => Ok(Found::Labelled(labels_of(
                c.config.as_ref().and_then(|c| c.labels.as_ref()),
            ))),
            Err(e) if has_status(&e, 404) => Ok(Found::Missing),
            Err(e) => Err(docker_error(format!("lock container {name}"), e)),
        }
    }

    async fn remove(&self, id: &str) {
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
}

/// The name of version `version` of the app's lock container.
fn container_name(app: &App, version: u64) -> String {
    format!("bluegreen-lock-{}-{version}", app.slug())
}

impl DockerLock {
    /// Locks kept on the daemon `docker` talks to (see [`crate::connect`]). The lock
    /// image is built on first use.
    pub fn new(docker: Docker) -> Self {
        DockerLock {
            lock: RegisterLock::new(Containers {
                docker,
                image: Arc::new(OnceCell::new()),
            }),
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
impl Lock for DockerLock {
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

    #[test]
    fn every_app_has_lock_names_of_its_own() {
        let apps = near_collisions();
        let mut names = std::collections::BTreeMap::new();
        for app in &apps {
            for version in [1, 7, 10, 11, 100] {
                let name = container_name(app, version);
                if let Some(first) = names.insert(name.clone(), (app.clone(), version)) {
                    panic!("{name}: {first:?} and {:?}", (app, version));
                }
            }
        }
        let web = App::new("web", "production").unwrap();
        assert_eq!(container_name(&web, 42), "bluegreen-lock-web-production-42");
    }
}
