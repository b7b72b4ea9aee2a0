//! [`SwarmFleet`]: each group is one Docker Swarm service, labelled with its group and
//! record.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use bluegreen_core::labels::{self, Labels};
use bluegreen_core::{App, Error, Fleet, Group, GroupId, Health, Instance, Release, Result};
use bollard::auth::DockerCredentials;
use bollard::models::{
    EndpointPortConfig, EndpointPortConfigPublishModeEnum, EndpointSpec, Limit, NodeState, Service,
    ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated, Task, TaskSpec, TaskSpecContainerSpec,
    TaskSpecPlacement, TaskSpecPlacementPreferences, TaskSpecPlacementSpread, TaskSpecResources,
    TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum, TaskState,
};
use bollard::query_parameters::{
    ListNodesOptions, ListServicesOptionsBuilder, ListTasksOptionsBuilder,
};
use bollard::Docker;
use futures_util::future::join_all;

use crate::error::{docker_error, has_status};
use crate::fleet::RECORD_LABEL;
use crate::labels::{groups_of, label_filters, labels_of};
use crate::settings::health_config;
use crate::swarm_settings::{swarm_settings_of, SwarmSettings};
use bluegreen_core::probe::http_probe;

/// Groups as Docker Swarm services, across the nodes of a swarm.
///
/// Group `web-production-v007` is the service `web-production-v007` (with a random
/// suffix when a service without bluegreen's labels already has that name: such a
/// service is never touched). The service and its container spec carry
/// [`Group::labels`] and the group's record in [`RECORD_LABEL`]; it runs
/// `release.size` replicas of the release's image **by registry digest**
/// (`registry:5000/bluegreen/web-production@sha256:...`, what
/// [`RegistryImage`](crate::RegistryImage) gives), so that every node runs the same
/// bytes, with:
///
/// - the release's environment, plus `PORT` (the setting `port`, default 8080),
///   `HOST=0.0.0.0` and `INSTANCE` (the task's name), which the fleet sets last;
/// - the settings of [`SETTINGS`](crate::SETTINGS) and
///   [`SWARM_SETTINGS`](crate::SWARM_SETTINGS): command (the image's `CMD`
///   replaced), memory and CPU limits, a Docker health check, the stop grace, the
///   restart policy, placement constraints, a spread preference and a per-node
///   maximum;
/// - its port published in **host mode** on every node that runs a task, with an
///   ephemeral port per task (or the setting `published_port`): the instance's
///   address is the node's address (`Status.Addr` of the node API) and the task's
///   published port. Swarm's routing mesh (ingress mode) is not used: the router
///   reaches the tasks directly.
///
/// A group is never updated: launching a group that exists with the same record
/// changes nothing (Swarm itself keeps the replicas running); the engine moves
/// traffic between services.
///
/// # Instances and health
///
/// One instance per replica slot: the slot's task that Swarm wants running (or,
/// when there is none, its newest task, reported stopped). Its health:
///
/// - a task on a node that is not `ready` is [`Health::Unhealthy`]: no traffic to
///   a lost node;
/// - a slot whose earlier tasks ended on their own (`failed`, `rejected`,
///   `complete`: a crash, an exit, a failing Docker health check) has restarted:
///   [`Instance::restarts`] counts them, and such an instance is
///   [`Health::Unhealthy`], never healthy. Tasks that Swarm shut down itself (a
///   node lost and the task moved) do not count;
/// - a task being scheduled, pulled or started (or waiting for its Docker health
///   check) is [`Health::Starting`]; one that ended is [`Health::Stopped`] with
///   Swarm's error;
/// - a running task is probed like a container of
///   [`DockerFleet`](crate::DockerFleet): `GET health_path` (default `/health`) at
///   its address, from this host; with `health_path=none`, running is healthy.
///
/// # Missing resources
///
/// `instances` of a group without a service is [`Error::NotFound`]; `destroy` of
/// one succeeds. An image that is not a registry reference by digest is
/// [`Error::Invalid`] naming `image`, and one the registry does not have
/// [`Error::NotFound`], both before the service is created.
#[derive(Clone)]
pub struct SwarmFleet {
    pub(crate) docker: Docker,
    credentials: Option<DockerCredentials>,
}

/// The registry credentials are never shown.
impl std::fmt::Debug for SwarmFleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwarmFleet")
            .field(
                "credentials",
                &self
                    .credentials
                    .as_ref()
                    .map(|_| bluegreen_core::redact::HIDDEN),
            )
            .finish_non_exhaustive()
    }
}

impl SwarmFleet {
    /// A fleet on the swarm whose **manager** `docker` talks to.
    pub fn new(docker: Docker) -> Self {
        SwarmFleet {
            docker,
            credentials: None,
        }
    }

    /// Registry credentials sent with each service, so that every node can pull
    /// its image (see [`crate::registry_credentials`]). Default none.
    pub fn with_registry_auth(mut self, credentials: Option<DockerCredentials>) -> Self {
        self.credentials = credentials;
        self
    }

    /// Every service with bluegreen's labels for `app`, and for `group` when given.
    async fn services(&self, app: &App, group: Option<&GroupId>) -> Result<Vec<(Service, Labels)>> {
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
            .list_services(Some(
                ListServicesOptionsBuilder::new()
                    .filters(&label_filters(&wanted))
                    .build(),
            ))
            .await
            .map_err(|e| docker_error(format!("services of {app}"), e))?;
        Ok(list
            .into_iter()
            .map(|s| {
                let l = labels_of(s.spec.as_ref().and_then(|s| s.labels.as_ref()));
                (s, l)
            })
            .filter(|(_, l)| {
                labels::is_owned_by(l, app)
                    && group.is_none_or(|g| {
                        l.get(labels::GROUP).map(String::as_str) == Some(g.as_str())
                    })
            })
            .collect())
    }

    fn spec(group: &Group, name: &str, s: &SwarmSettings) -> ServiceSpec {
        let mut group_labels: HashMap<String, String> = group.labels().into_iter().collect();
        group_labels.insert(RECORD_LABEL.into(), group.to_record());
        let d = &s.docker;
        let mut env: BTreeMap<String, String> = group.release.env.clone();
        env.insert("PORT".into(), d.port.to_string());
        env.insert("HOST".into(), "0.0.0.0".into());
        env.insert("INSTANCE".into(), "{{.Task.Name}}".into());
        let nanos = |d: Duration| d.as_nanos().min(i64::MAX as u128) as i64;
        let limits = (d.memory.is_some() || d.nano_cpus.is_some()).then_some(Limit {
            nano_cpus: d.nano_cpus,
            memory_bytes: d.memory,
            pids: None,
        });
        let condition = match s.restart {
            "none" => TaskSpecRestartPolicyConditionEnum::NONE,
            "on-failure" => TaskSpecRestartPolicyConditionEnum::ON_FAILURE,
            _ => TaskSpecRestartPolicyConditionEnum::ANY,
        };
        ServiceSpec {
            name: Some(name.to_owned()),
            labels: Some(group_labels.clone()),
            task_template: Some(TaskSpec {
                container_spec: Some(TaskSpecContainerSpec {
                    image: Some(group.release.image.to_string()),
                    labels: Some(group_labels),
                    args: d.command.clone(),
                    env: Some(env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()),
                    health_check: health_config(d),
                    stop_grace_period: Some(nanos(d.stop_timeout)),
                    ..Default::default()
                }),
                resources: limits.map(|limits| TaskSpecResources {
                    limits: Some(limits),
                    reservations: None,
                }),
                restart_policy: Some(TaskSpecRestartPolicy {
                    condition: Some(condition),
                    delay: s.restart_delay.map(nanos),
                    max_attempts: s.restart_max_attempts,
                    window: None,
                }),
                placement: Some(TaskSpecPlacement {
                    constraints: (!s.constraints.is_empty()).then(|| s.constraints.clone()),
                    preferences: s.spread.as_ref().map(|descriptor| {
                        vec![TaskSpecPlacementPreferences {
                            spread: Some(TaskSpecPlacementSpread {
                                spread_descriptor: Some(descriptor.clone()),
                            }),
                        }]
                    }),
                    max_replicas: s.max_per_node,
                    platforms: None,
                }),
                ..Default::default()
            }),
            mode: Some(ServiceSpecMode {
                replicated: Some(ServiceSpecModeReplicated {
                    replicas: Some(i64::from(group.release.size)),
                }),
                ..Default::default()
            }),
            endpoint_spec: Some(EndpointSpec {
                mode: None,
                ports: Some(vec![EndpointPortConfig {
                    name: None,
                    protocol: Some(bollard::models::EndpointPortConfigProtocolEnum::TCP),
                    target_port: Some(i64::from(d.port)),
                    published_port: s.published_port.map(i64::from),
                    publish_mode: Some(EndpointPortConfigPublishModeEnum::HOST),
                }]),
            }),
            ..Default::default()
        }
    }

    /// Checks that the registry has the image, through the manager.
    async fn check_image(&self, release: &Release) -> Result<()> {
        let image = release.image.as_str();
        match self
            .docker
            .inspect_registry_image(image, self.credentials.clone())
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if has_status(&e, 401) || has_status(&e, 403) => {
                Err(docker_error(format!("image {image} in its registry"), e))
            }
            Err(e) if has_status(&e, 404) || has_status(&e, 400) || has_status(&e, 500) => {
                Err(Error::not_found(format!(
                    "image {image} in its registry ({})",
                    e.to_string().trim()
                )))
            }
            Err(e) => Err(docker_error(format!("image {image} in its registry"), e)),
        }
    }

    /// Whether a service named `name` exists that is this group's, with `record`;
    /// `None` when no service has the name.
    async fn existing(&self, group: &Group, name: &str) -> Result<Option<bool>> {
        match self
            .docker
            .inspect_service(
                name,
                None::<bollard::query_parameters::InspectServiceOptions>,
            )
            .await
        {
            Ok(service) => {
                let l = labels_of(service.spec.as_ref().and_then(|s| s.labels.as_ref()));
                let ours = labels::is_owned_by(&l, &group.app)
                    && l.get(labels::GROUP).map(String::as_str) == Some(group.id.as_str());
                if ours && l.get(RECORD_LABEL) != Some(&group.to_record()) {
                    return Err(Error::conflict(format!(
                        "group {} exists with another record",
                        group.id
                    )));
                }
                Ok(Some(ours))
            }
            Err(e) if has_status(&e, 404) => Ok(None),
            Err(e) => Err(docker_error(format!("service {name}"), e)),
        }
    }
}

/// Whether a task ended on its own (a crash, an exit, a failed health check, a
/// rejection), rather than being shut down by Swarm.
fn ended_on_its_own(t: &Task) -> bool {
    matches!(
        t.status.as_ref().and_then(|s| s.state),
        Some(TaskState::FAILED | TaskState::REJECTED | TaskState::COMPLETE)
    )
}

fn state_of(t: &Task) -> Option<TaskState> {
    t.status.as_ref().and_then(|s| s.state)
}

/// Whether Swarm wants the task to run: `running`, or `ready` while a replacement
/// waits for its restart delay.
fn wanted_running(t: &Task) -> bool {
    matches!(t.desired_state, Some(TaskState::RUNNING | TaskState::READY))
}

/// The task's name as Docker shows it: `web-production-v007.2`, with the task id's
/// first 12 characters, so that a replaced task is another instance.
fn task_name(service: &str, t: &Task) -> String {
    let id = t.id.as_deref().unwrap_or_default();
    format!(
        "{service}.{}.{}",
        t.slot.unwrap_or_default(),
        &id[..id.len().min(12)]
    )
}

fn published_port(t: &Task, target: u16) -> Option<u16> {
    t.status
        .as_ref()?
        .port_status
        .as_ref()?
        .ports
        .as_ref()?
        .iter()
        .find(|p| {
            p.target_port == Some(i64::from(target))
                && p.publish_mode == Some(EndpointPortConfigPublishModeEnum::HOST)
        })?
        .published_port
        .and_then(|p| u16::try_from(p).ok())
}

/// A node's address and whether it is ready.
#[derive(Clone, Debug)]
struct NodeView {
    name: String,
    addr: Option<String>,
    ready: bool,
}

#[async_trait]
impl Fleet for SwarmFleet {
    fn check_release(&self, release: &Release) -> Result<()> {
        swarm_settings_of(release).map(|_| ())
    }

    async fn launch(&self, group: &Group) -> Result<()> {
        let s = swarm_settings_of(&group.release)?;
        group.release.validate()?;
        let image = group.release.image.as_str();
        if !image.contains("@sha256:") || image.starts_with("sha256:") {
            return Err(Error::invalid(
                "image",
                format!(
                    "`{image}` is not a registry reference by digest (repo@sha256:...): \
                     every node of a swarm pulls it; push it with RegistryImage"
                ),
            ));
        }
        let found = self.services(&group.app, Some(&group.id)).await?;
        let record = group.to_record();
        if let Some((_, l)) = found
            .iter()
            .find(|(_, l)| l.get(RECORD_LABEL) != Some(&record))
        {
            let _ = l;
            return Err(Error::conflict(format!(
                "group {} exists with another record",
                group.id
            )));
        }
        if !found.is_empty() {
            return Ok(());
        }
        self.check_image(&group.release).await?;
        let mut name = group.id.to_string();
        loop {
            match self
                .docker
                .create_service(Self::spec(group, &name, &s), self.credentials.clone())
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if has_status(&e, 409) => match self.existing(group, &name).await? {
                    // another launch of this group created it
                    Some(true) => return Ok(()),
                    Some(false) => {
                        tracing::warn!(
                            service = %name,
                            "a service without bluegreen's labels has this name; using another"
                        );
                        name = format!("{}-{:04x}", group.id, fastrand::u16(..));
                    }
                    None => continue,
                },
                Err(e) => return Err(docker_error(format!("service {name}"), e)),
            }
        }
    }

    async fn groups(&self, app: &App) -> Result<Vec<Group>> {
        let services = self.services(app, None).await?;
        groups_of("services", services.iter().map(|(_, l)| l))
    }

    async fn instances(&self, app: &App, group: &GroupId) -> Result<Vec<Instance>> {
        let services = self.services(app, Some(group)).await?;
        let Some((service, l)) = services.first() else {
            return Err(Error::not_found(format!("group {group}")));
        };
        let record = l
            .get(RECORD_LABEL)
            .ok_or_else(|| Error::conflict(format!("group {group} has no record")))?;
        let g = Group::from_record(record, l)?;
        let s = swarm_settings_of(&g.release)?;
        let service_id = service.id.clone().unwrap_or_default();
        let service_name = service
            .spec
            .as_ref()
            .and_then(|s| s.name.clone())
            .unwrap_or_else(|| group.to_string());
        let tasks = self
            .docker
            .list_tasks(Some(
                ListTasksOptionsBuilder::new()
                    .filters(&HashMap::from([("service", vec![service_id.clone()])]))
                    .build(),
            ))
            .await
            .map_err(|e| docker_error(format!("tasks of service {service_name}"), e))?;
        let nodes: HashMap<String, NodeView> = self
            .docker
            .list_nodes(None::<ListNodesOptions>)
            .await
            .map_err(|e| docker_error("nodes of the swarm", e))?
            .into_iter()
            .filter_map(|n| {
                let id = n.id.clone()?;
                let name = n
                    .description
                    .as_ref()
                    .and_then(|d| d.hostname.clone())
                    .unwrap_or_else(|| id.clone());
                let status = n.status.as_ref();
                let mut addr = status.and_then(|s| s.addr.clone());
                if addr
                    .as_deref()
                    .is_none_or(|a| a.is_empty() || a == "0.0.0.0")
                {
                    // a manager may report 0.0.0.0; its advertised address then
                    addr = n
                        .manager_status
                        .as_ref()
                        .and_then(|m| m.addr.as_deref())
                        .and_then(|a| a.rsplit_once(':').map(|(h, _)| h.to_owned()));
                }
                let ready = status.and_then(|s| s.state) == Some(NodeState::READY);
                Some((id, NodeView { name, addr, ready }))
            })
            .collect();
        let mut slots: BTreeMap<i64, Vec<&Task>> = BTreeMap::new();
        for t in tasks
            .iter()
            .filter(|t| t.service_id.as_deref() == Some(service_id.as_str()))
        {
            slots.entry(t.slot.unwrap_or_default()).or_default().push(t);
        }
        let mut chosen = Vec::new();
        for tasks in slots.values_mut() {
            tasks.sort_by_key(|t| t.created_at);
            let current = tasks
                .iter()
                .rev()
                .find(|t| wanted_running(t))
                .or_else(|| tasks.last())
                .copied();
            let Some(current) = current else { continue };
            let restarts = tasks
                .iter()
                .filter(|t| t.id != current.id && ended_on_its_own(t))
                .count();
            chosen.push((current, restarts as u32));
        }
        let port = s.docker.port;
        let views: Vec<(String, Option<String>, Option<NodeView>)> = chosen
            .iter()
            .map(|(t, _)| {
                let node = t.node_id.as_ref().and_then(|n| nodes.get(n)).cloned();
                let address = match (
                    node.as_ref().and_then(|n| n.addr.clone()),
                    published_port(t, port),
                ) {
                    (Some(ip), Some(p)) => Some(format!("{ip}:{p}")),
                    _ => None,
                };
                (task_name(&service_name, t), address, node)
            })
            .collect();
        let healths = join_all(chosen.iter().zip(&views).map(
            |((t, restarts), (name, address, node))| {
                let s = &s;
                async move {
                    let err = t
                        .status
                        .as_ref()
                        .and_then(|st| {
                            st.err
                                .clone()
                                .filter(|e| !e.is_empty())
                                .or(st.message.clone())
                        })
                        .unwrap_or_default();
                    match state_of(t) {
                        Some(TaskState::RUNNING) if wanted_running(t) => {}
                        Some(
                            TaskState::NEW
                            | TaskState::ALLOCATED
                            | TaskState::PENDING
                            | TaskState::ASSIGNED
                            | TaskState::ACCEPTED
                            | TaskState::PREPARING
                            | TaskState::READY
                            | TaskState::STARTING,
                        ) if wanted_running(t) => {
                            return if *restarts > 0 {
                                Health::Unhealthy {
                                    reason: format!(
                                        "task {name} restarted {restarts} times: {err}"
                                    ),
                                }
                            } else {
                                Health::Starting
                            };
                        }
                        state => {
                            let state = state
                                .map(|s| s.to_string())
                                .unwrap_or_else(|| "unknown".into());
                            return Health::Stopped {
                                reason: format!("task {name} is {state}: {err}"),
                            };
                        }
                    }
                    if let Some(node) = node.as_ref().filter(|n| !n.ready) {
                        return Health::Unhealthy {
                            reason: format!("node {} of task {name} is not ready", node.name),
                        };
                    }
                    if *restarts > 0 {
                        return Health::Unhealthy {
                            reason: format!("task {name} restarted {restarts} times"),
                        };
                    }
                    match (&s.docker.health_path, address) {
                        (None, _) => Health::Healthy,
                        (Some(path), Some(address)) => http_probe(address, path).await,
                        (Some(_), None) => Health::Starting,
                    }
                }
            },
        ))
        .await;
        Ok(chosen
            .iter()
            .zip(views)
            .zip(healths)
            .map(|(((_, restarts), (name, address, _)), health)| {
                Instance::new(name, address, health).with_restarts(*restarts)
            })
            .collect())
    }

    async fn destroy(&self, app: &App, group: &GroupId) -> Result<()> {
        let services = self.services(app, Some(group)).await?;
        let results = join_all(services.iter().map(|(service, _)| async move {
            let id = service.id.clone().unwrap_or_default();
            match self.docker.delete_service(&id).await {
                Ok(()) => Ok(()),
                Err(e) if has_status(&e, 404) => Ok(()),
                Err(e) => Err(docker_error(format!("removing service {id}"), e)),
            }
        }))
        .await;
        results.into_iter().collect::<Result<Vec<()>>>()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bluegreen_core::{DeploymentId, Generation, ImageId};

    fn group(settings: &[(&str, &str)]) -> Group {
        let app = App::new("web", "production").unwrap();
        let release = settings.iter().fold(
            Release::new(
                ImageId::new("10.0.0.1:5000/bluegreen/web-production@sha256:ab"),
                3,
            ),
            |r, (k, v)| r.with_setting(*k, *v),
        );
        Group::new(app, Generation(7), release, DeploymentId::new("d1"), None)
    }

    #[test]
    fn the_spec_carries_the_group() {
        let g = group(&[
            ("max_per_node", "1"),
            ("spread", "node.labels.zone"),
            ("memory", "64m"),
        ]);
        let s = swarm_settings_of(&g.release).unwrap();
        let spec = SwarmFleet::spec(&g, g.id.as_str(), &s);
        assert_eq!(spec.name.as_deref(), Some("web-production-v007"));
        let l = spec.labels.unwrap();
        assert_eq!(l.get(RECORD_LABEL), Some(&g.to_record()));
        assert_eq!(
            l.get(labels::GROUP).map(String::as_str),
            Some("web-production-v007")
        );
        let t = spec.task_template.unwrap();
        let c = t.container_spec.unwrap();
        assert_eq!(c.labels.unwrap().get(labels::GROUP), l.get(labels::GROUP));
        assert_eq!(c.image.as_deref(), Some(g.release.image.as_str()));
        assert!(c.env.unwrap().contains(&"PORT=8080".to_owned()));
        assert_eq!(t.placement.unwrap().max_replicas, Some(1));
        assert_eq!(
            t.resources.unwrap().limits.unwrap().memory_bytes,
            Some(64 << 20)
        );
        assert_eq!(spec.mode.unwrap().replicated.unwrap().replicas, Some(3));
        let port = &spec.endpoint_spec.unwrap().ports.unwrap()[0];
        assert_eq!(
            port.publish_mode,
            Some(EndpointPortConfigPublishModeEnum::HOST)
        );
        assert_eq!(port.published_port, None);
    }
}
