//! [`DockerFleet`]: each instance is a container carrying its group's labels and
//! record.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use async_trait::async_trait;
use bluegreen_core::labels::{self, Labels};
use bluegreen_core::{
    App, Error, Fleet, FleetCapabilities, Group, GroupId, Health, Instance, Result, TaskStatus,
};
use bollard::models::{
    ContainerCreateBody, ContainerSummary, ContainerSummaryStateEnum, HostConfig, PortBinding,
    RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, InspectContainerOptions, ListContainersOptionsBuilder,
    RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::future::join_all;

use crate::error::{docker_error, has_status};
use crate::labels::{groups_of, label_filters, labels_of};
use crate::settings::{settings_of, Settings};
use bluegreen_core::probe::http_probe;

/// The label holding a group's whole record ([`Group::to_record`]).
pub const RECORD_LABEL: &str = "bluegreen.record";
/// The label holding an instance's index in its group (`0`, `1`, ...).
pub const INDEX_LABEL: &str = "bluegreen.index";

/// Where a [`DockerFleet`] puts its containers.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DockerFleetOptions {
    /// The host address the container port is published on, with an ephemeral host
    /// port. Default `127.0.0.1`: reachable from this host only.
    pub host_ip: IpAddr,
    /// A user-defined network to attach containers to instead of publishing their
    /// port. Default none.
    pub network: Option<String>,
    /// Bind mounts of release task containers, in Docker's `host-path:container-path[:ro]`
    /// form. Default none.
    pub task_binds: Vec<String>,
}

impl Default for DockerFleetOptions {
    fn default() -> Self {
        DockerFleetOptions {
            host_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            network: None,
            task_binds: Vec::new(),
        }
    }
}

impl DockerFleetOptions {
    /// Sets [`DockerFleetOptions::host_ip`].
    pub fn with_host_ip(mut self, ip: IpAddr) -> Self {
        self.host_ip = ip;
        self
    }

    /// Sets [`DockerFleetOptions::network`].
    pub fn with_network(mut self, network: impl Into<String>) -> Self {
        self.network = Some(network.into());
        self
    }

    /// Adds a bind mount to [`DockerFleetOptions::task_binds`].
    pub fn with_task_bind(mut self, bind: impl Into<String>) -> Self {
        self.task_binds.push(bind.into());
        self
    }
}

/// Groups of containers on a Docker daemon.
///
/// Instance `n` of group `web-production-v007` is the container
/// `web-production-v007-n` (with a random suffix when a container without
/// bluegreen's labels already has that name: such a container is never touched). It
/// carries [`Group::labels`], [`INDEX_LABEL`] and the group's record in
/// [`RECORD_LABEL`], and runs the release's image by id with:
///
/// - the release's environment, plus `PORT` (the setting `port`, default 8080),
///   `HOST=0.0.0.0` and `INSTANCE` (the container's name), which the fleet sets last;
/// - the settings listed in [`SETTINGS`](crate::SETTINGS): command, memory and CPU
///   limits, restart policy (default `unless-stopped`), a Docker health check, the
///   stop grace;
/// - its port published on [`DockerFleetOptions::host_ip`] with an ephemeral host
///   port: the instance's address is `host_ip:host_port` (`127.0.0.1` when the host
///   address is unspecified). On a [`DockerFleetOptions::network`], nothing is
///   published and the address is `container-name:port`, for a router on that
///   network.
///
/// # Health
///
/// Docker's state first: a container that is not running (exited, dead,
/// restarting) is [`Health::Stopped`] with its exit code (a container created but
/// not yet started is [`Health::Starting`]). A container that Docker **restarted
/// since it was launched** (its `RestartCount`, also in
/// [`Instance::restarts`]) is [`Health::Stopped`] too, even while it runs and
/// answers: a restart policy hides a crash loop between two crashes, and such a
/// container never becomes healthy again, so the engine fails the deployment before
/// any traffic instead of routing to it (and a live group's container that
/// restarts breaks the bake after the switch). A Docker health check (`HEALTHCHECK` of the image or the
/// setting `health_cmd`) that is `starting` gives [`Health::Starting`], `unhealthy`
/// gives [`Health::Unhealthy`] with the check's last output. Then the fleet's own
/// HTTP probe, `GET health_path` (default `/health`) on the instance's address,
/// decides: 2xx is healthy, a refused or closed connection is starting, another
/// status or no answer within 2 s is unhealthy. With `health_path=none` and no Docker
/// health check, a running container is healthy.
///
/// The probe exists because a `FROM scratch` image has no shell and often no binary
/// that could serve as a Docker `HEALTHCHECK`; it runs from this host, so on a
/// network the probe uses the container's address on that network.
#[derive(Clone, Debug)]
pub struct DockerFleet {
    pub(crate) docker: Docker,
    options: DockerFleetOptions,
}

impl DockerFleet {
    /// A fleet on the daemon `docker` talks to (see [`crate::connect`]).
    pub fn new(docker: Docker, options: DockerFleetOptions) -> Self {
        DockerFleet { docker, options }
    }

    /// The options.
    pub fn options(&self) -> &DockerFleetOptions {
        &self.options
    }

    /// Every container (running or not) with bluegreen's labels for `app`, and for
    /// `group` when given.
    async fn containers(
        &self,
        app: &App,
        group: Option<&GroupId>,
    ) -> Result<Vec<(ContainerSummary, Labels)>> {
        let mut wanted = vec![
            (labels::OWNER, labels::OWNER_VALUE),
            (labels::APP, app.name()),
            (labels::ENVIRONMENT, app.environment()),
        ];
        if let Some(g) = group {
            wanted.push((labels::GROUP, g.as_str()));
        }
        let list = self
            .docker
            .list_containers(Some(
                ListContainersOptionsBuilder::new()
                    .all(true)
                    .filters(&label_filters(&wanted))
                    .build(),
            ))
            .await
            .map_err(|e| docker_error(format!("containers of {app}"), e))?;
        Ok(list
            .into_iter()
            .map(|c| {
                let l = labels_of(c.labels.as_ref());
                (c, l)
            })
            .filter(|(_, l)| {
                // a release task's container is no instance (crate::task)
                !crate::task::is_task(l)
                    && labels::is_owned_by(l, app)
                    && group.is_none_or(|g| {
                        l.get(labels::GROUP).map(String::as_str) == Some(g.as_str())
                    })
            })
            .collect())
    }

    fn create_body(
        &self,
        group: &Group,
        name: &str,
        index: u32,
        s: &Settings,
    ) -> ContainerCreateBody {
        let mut container_labels: HashMap<String, String> = group.labels().into_iter().collect();
        container_labels.insert(RECORD_LABEL.into(), group.to_record());
        container_labels.insert(INDEX_LABEL.into(), index.to_string());
        let mut env: BTreeMap<String, String> = group.release.env.clone();
        env.insert("PORT".into(), s.port.to_string());
        env.insert("HOST".into(), "0.0.0.0".into());
        env.insert("INSTANCE".into(), name.to_owned());
        let port_key = format!("{}/tcp", s.port);
        let healthcheck = crate::settings::health_config(s);
        let restart = match s.restart.as_str() {
            "no" => RestartPolicyNameEnum::NO,
            "always" => RestartPolicyNameEnum::ALWAYS,
            "on-failure" => RestartPolicyNameEnum::ON_FAILURE,
            _ => RestartPolicyNameEnum::UNLESS_STOPPED,
        };
        let (port_bindings, network_mode) = match &self.options.network {
            Some(network) => (None, Some(network.clone())),
            None => (
                Some(HashMap::from([(
                    port_key.clone(),
                    Some(vec![PortBinding {
                        host_ip: Some(self.options.host_ip.to_string()),
                        host_port: Some(String::new()),
                    }]),
                )])),
                None,
            ),
        };
        ContainerCreateBody {
            image: Some(group.release.image.to_string()),
            env: Some(env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()),
            cmd: s.command.clone(),
            labels: Some(container_labels),
            exposed_ports: Some(HashMap::from([(port_key, HashMap::new())])),
            healthcheck,
            stop_timeout: Some(s.stop_timeout.as_secs_f64().ceil() as i64),
            host_config: Some(HostConfig {
                port_bindings,
                network_mode,
                memory: s.memory,
                nano_cpus: s.nano_cpus,
                restart_policy: Some(RestartPolicy {
                    name: Some(restart),
                    maximum_retry_count: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Creates and starts instance `index` of `group`.
    async fn start_instance(&self, group: &Group, index: u32, s: &Settings) -> Result<()> {
        let mut name = instance_name(&group.id, index);
        let id = loop {
            let body = self.create_body(group, &name, index, s);
            match self
                .docker
                .create_container(
                    Some(CreateContainerOptionsBuilder::new().name(&name).build()),
                    body,
                )
                .await
            {
                Ok(created) => break created.id,
                Err(e) if has_status(&e, 409) => {
                    // a container has this name: ours (another launch) or not
                    let theirs = self
                        .docker
                        .inspect_container(&name, None::<InspectContainerOptions>)
                        .await
                        .ok();
                    let found = labels_of(
                        theirs
                            .as_ref()
                            .and_then(|c| c.config.as_ref())
                            .and_then(|c| c.labels.as_ref()),
                    );
                    if labels::is_owned_by(&found, &group.app)
                        && found.get(labels::GROUP).map(String::as_str) == Some(group.id.as_str())
                    {
                        if found.get(RECORD_LABEL) != Some(&group.to_record()) {
                            return Err(Error::conflict(format!(
                                "group {} exists with another record",
                                group.id
                            )));
                        }
                        break theirs.and_then(|c| c.id).unwrap_or(name.clone());
                    }
                    tracing::warn!(
                        container = %name,
                        "a container without bluegreen's labels has this name; using another"
                    );
                    name = format!(
                        "{}-{:04x}",
                        instance_name(&group.id, index),
                        fastrand::u16(..)
                    );
                }
                Err(e) => return Err(docker_error(format!("container {name}"), e)),
            }
        };
        self.start(&id, &name).await
    }

    async fn start(&self, id: &str, name: &str) -> Result<()> {
        match self
            .docker
            .start_container(id, None::<bollard::query_parameters::StartContainerOptions>)
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if has_status(&e, 304) => Ok(()),
            Err(e) => Err(docker_error(format!("starting container {name}"), e)),
        }
    }

    /// The address a router uses, and the one this host probes.
    fn addresses(&self, c: &ContainerSummary, port: u16) -> (Option<String>, Option<String>) {
        match &self.options.network {
            Some(network) => {
                let name = container_name(c);
                let ip = c
                    .network_settings
                    .as_ref()
                    .and_then(|n| n.networks.as_ref())
                    .and_then(|n| n.get(network))
                    .and_then(|e| e.ip_address.clone())
                    .filter(|ip| !ip.is_empty());
                (
                    Some(format!("{name}:{port}")),
                    ip.map(|ip| format!("{ip}:{port}")),
                )
            }
            None => {
                let public = c
                    .ports
                    .iter()
                    .flatten()
                    .find_map(|p| (p.private_port == port).then_some(p.public_port).flatten());
                let ip = if self.options.host_ip.is_unspecified() {
                    IpAddr::V4(Ipv4Addr::LOCALHOST)
                } else {
                    self.options.host_ip
                };
                let address = public.map(|p| std::net::SocketAddr::new(ip, p).to_string());
                (address.clone(), address)
            }
        }
    }

    /// The health of one container, as described on [`DockerFleet`], and how often
    /// Docker restarted it since it was launched.
    async fn health_of(
        &self,
        c: &ContainerSummary,
        probe_at: Option<&str>,
        s: &Settings,
    ) -> (Health, u32) {
        let name = container_name(c);
        let inspect = self
            .docker
            .inspect_container(
                c.id.as_deref().unwrap_or(&name),
                None::<InspectContainerOptions>,
            )
            .await
            .ok();
        let restarts = inspect
            .as_ref()
            .and_then(|i| i.restart_count)
            .unwrap_or(0)
            .clamp(0, i64::from(u32::MAX)) as u32;
        let state = inspect.as_ref().and_then(|i| i.state.clone());
        let restarting = state.as_ref().and_then(|s| s.restarting) == Some(true);
        match c.state {
            Some(ContainerSummaryStateEnum::RUNNING) if !restarting => {}
            Some(ContainerSummaryStateEnum::CREATED) if restarts == 0 => {
                return (Health::Starting, restarts)
            }
            summary => {
                let code = state.as_ref().and_then(|s| s.exit_code);
                let error = state
                    .as_ref()
                    .and_then(|s| s.error.clone())
                    .filter(|e| !e.is_empty());
                let what = if restarting {
                    "restarting".to_owned()
                } else {
                    summary
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| "gone".into())
                };
                let mut reason = format!("container {name} is {what}");
                // while Docker restarts it, the exit status reads 0
                if let Some(code) = code.filter(|_| !restarting) {
                    reason.push_str(&format!(", exit status {code}"));
                }
                if let Some(error) = error {
                    reason.push_str(&format!(": {error}"));
                }
                if restarts > 0 {
                    reason.push_str(&format!(
                        " (restarted {restarts} times since it was launched)"
                    ));
                }
                return (Health::Stopped { reason }, restarts);
            }
        }
        if restarts > 0 {
            // running again, and perhaps answering: a crash loop that the restart
            // policy hides between two crashes
            return (
                Health::Stopped {
                    reason: format!(
                        "container {name} restarted {restarts} times since it was launched \
                         (a crash loop that its restart policy hides)"
                    ),
                },
                restarts,
            );
        }
        let status = c.status.as_deref().unwrap_or_default();
        if status.contains("(health: starting)") {
            return (Health::Starting, restarts);
        }
        if status.contains("(unhealthy)") {
            let last = state
                .and_then(|s| s.health?.log?.pop())
                .and_then(|r| r.output)
                .map(|o| o.trim().lines().last().unwrap_or_default().to_owned())
                .unwrap_or_default();
            return (
                Health::Unhealthy {
                    reason: format!("docker health check of {name} fails: {last}"),
                },
                restarts,
            );
        }
        let health = match (&s.health_path, probe_at) {
            (None, _) => Health::Healthy,
            (Some(path), Some(address)) => http_probe(address, path).await,
            (Some(_), None) => Health::Starting,
        };
        (health, restarts)
    }
}

/// The container name of instance `index` of `group`: `web-production-v007-0`. Group
/// ids name one group of one app, and the index follows the last `-`.
fn instance_name(group: &GroupId, index: u32) -> String {
    format!("{group}-{index}")
}

fn container_name(c: &ContainerSummary) -> String {
    c.names
        .as_ref()
        .and_then(|n| n.first())
        .map(|n| n.trim_start_matches('/').to_owned())
        .or_else(|| c.id.clone())
        .unwrap_or_default()
}

fn index_of(l: &Labels) -> Option<u32> {
    l.get(INDEX_LABEL)?.parse().ok()
}

#[async_trait]
impl Fleet for DockerFleet {
    fn capabilities(&self) -> FleetCapabilities {
        FleetCapabilities::default().with_tasks(true)
    }

    fn check_release(&self, release: &bluegreen_core::Release) -> Result<()> {
        settings_of(release).map(|_| ())
    }

    async fn launch(&self, group: &Group) -> Result<()> {
        let s = settings_of(&group.release)?;
        group.release.validate()?;
        match self
            .docker
            .inspect_image(group.release.image.as_str())
            .await
        {
            Ok(_) => {}
            Err(e) => return Err(docker_error(format!("image {}", group.release.image), e)),
        }
        let existing = self.containers(&group.app, Some(&group.id)).await?;
        let record = group.to_record();
        if existing
            .iter()
            .any(|(_, l)| l.get(RECORD_LABEL) != Some(&record))
        {
            return Err(Error::conflict(format!(
                "group {} exists with another record",
                group.id
            )));
        }
        let present: Vec<u32> = existing.iter().filter_map(|(_, l)| index_of(l)).collect();
        let mut work: Vec<futures_util::future::BoxFuture<'_, Result<()>>> = Vec::new();
        for (c, _) in &existing {
            // created by an interrupted launch, never started
            if c.state == Some(ContainerSummaryStateEnum::CREATED) {
                let id = c.id.clone().unwrap_or_default();
                let name = container_name(c);
                work.push(Box::pin(async move { self.start(&id, &name).await }));
            }
        }
        for index in (0..group.release.size).filter(|i| !present.contains(i)) {
            let s = &s;
            work.push(Box::pin(self.start_instance(group, index, s)));
        }
        let results = join_all(work).await;
        results.into_iter().collect::<Result<Vec<()>>>()?;
        Ok(())
    }

    async fn groups(&self, app: &App) -> Result<Vec<Group>> {
        let containers = self.containers(app, None).await?;
        groups_of("containers", containers.iter().map(|(_, l)| l))
    }

    async fn instances(&self, app: &App, group: &GroupId) -> Result<Vec<Instance>> {
        let mut containers = self.containers(app, Some(group)).await?;
        if containers.is_empty() {
            return Err(Error::not_found(format!("group {group}")));
        }
        containers.sort_by_key(|(_, l)| index_of(l));
        let record = containers[0]
            .1
            .get(RECORD_LABEL)
            .ok_or_else(|| Error::conflict(format!("group {group} has no record")))?;
        let g = Group::from_record(record, &containers[0].1)?;
        let s = settings_of(&g.release)?;
        let healths = join_all(containers.iter().map(|(c, _)| {
            let (_, probe_at) = self.addresses(c, s.port);
            let s = &s;
            async move { self.health_of(c, probe_at.as_deref(), s).await }
        }))
        .await;
        Ok(containers
            .iter()
            .zip(healths)
            .map(|((c, _), (health, restarts))| {
                let (address, _) = self.addresses(c, s.port);
                Instance::new(container_name(c), address, health).with_restarts(restarts)
            })
            .collect())
    }

    async fn destroy(&self, app: &App, group: &GroupId) -> Result<()> {
        crate::task::remove(&self.docker, app, group).await?;
        let containers = self.containers(app, Some(group)).await?;
        let results = join_all(containers.iter().map(|(c, l)| async move {
            let id = c.id.clone().unwrap_or_default();
            let name = container_name(c);
            let grace = l
                .get(RECORD_LABEL)
                .and_then(|r| Group::from_record(r, l).ok())
                .and_then(|g| settings_of(&g.release).ok())
                .map(|s| s.stop_timeout)
                .unwrap_or(Duration::from_secs(10));
            let t = grace.as_secs_f64().ceil() as i32;
            match self
                .docker
                .stop_container(&id, Some(StopContainerOptionsBuilder::new().t(t).build()))
                .await
            {
                Ok(()) => {}
                Err(e) if has_status(&e, 304) || has_status(&e, 404) => {}
                Err(e) => return Err(docker_error(format!("stopping container {name}"), e)),
            }
            match self
                .docker
                .remove_container(
                    &id,
                    Some(
                        RemoveContainerOptionsBuilder::new()
                            .force(true)
                            .v(true)
                            .build(),
                    ),
                )
                .await
            {
                Ok(()) => Ok(()),
                // 409: already being removed
                Err(e) if has_status(&e, 404) || has_status(&e, 409) => Ok(()),
                Err(e) => Err(docker_error(format!("removing container {name}"), e)),
            }
        }))
        .await;
        results.into_iter().collect::<Result<Vec<()>>>()?;
        Ok(())
    }

    async fn start_task(&self, group: &Group) -> Result<()> {
        crate::task::start(&self.docker, &self.options, group).await
    }

    async fn task(&self, app: &App, group: &GroupId) -> Result<Option<TaskStatus>> {
        crate::task::status(&self.docker, app, group).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bluegreen_core::Generation;
    use bluegreen_testkit::names::{assert_distinct, near_collisions};

    #[test]
    fn every_instance_has_a_container_name_of_its_own() {
        let apps = near_collisions();
        let mut names = std::collections::BTreeMap::new();
        for app in &apps {
            for g in [1, 7, 10, 999, 1000, 1001] {
                for index in [0, 1, 10, 11] {
                    let name = instance_name(&Group::id_for(app, Generation(g)), index);
                    if let Some(first) = names.insert(name.clone(), (app.clone(), g, index)) {
                        panic!("{name}: {first:?} and {:?}", (app, g, index));
                    }
                }
            }
        }
        let web = App::new("web", "production").unwrap();
        assert_eq!(
            instance_name(&Group::id_for(&web, Generation(7)), 0),
            "web-production-v007-0"
        );
        assert_distinct("repository", &apps, crate::image::repository);
    }
}
