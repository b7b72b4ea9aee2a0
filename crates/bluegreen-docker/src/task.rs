//! Release tasks on Docker: a one-off container from the release's image, never
//! restarted, whose exited container is the task's record.

use bluegreen_core::labels::{self, Labels};
use bluegreen_core::{App, Error, Group, GroupId, ReleaseId, Result, TaskState, TaskStatus};
use bollard::container::LogOutput;
use bollard::models::{
    ContainerCreateBody, ContainerStateStatusEnum, ContainerSummary, HostConfig, RestartPolicy,
    RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, InspectContainerOptions, ListContainersOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;
use std::collections::{HashMap, VecDeque};

use crate::error::{docker_error, has_status};
use crate::fleet::DockerFleetOptions;
use crate::labels::{label_filters, labels_of};
use crate::settings::settings_of;

/// The label marking a group's task container; its value is the id of the release
/// the task was started for.
pub const TASK_LABEL: &str = "bluegreen.task";

/// How many lines of a task's output [`DockerFleet::task`](crate::DockerFleet)
/// reports: the last ones, the earlier counted in [`TaskStatus::dropped`].
pub const TASK_OUTPUT_LINES: usize = 1000;

/// The task container's name: `web-production-v007-task` (instances end in a
/// number, so the names never meet).
fn task_name(group: &GroupId) -> String {
    format!("{group}-task")
}

/// The task containers of a group (running or not) with bluegreen's labels.
pub(crate) async fn task_containers(
    docker: &Docker,
    app: &App,
    group: &GroupId,
) -> Result<Vec<(ContainerSummary, Labels)>> {
    let wanted = [
        (labels::OWNER, labels::OWNER_VALUE),
        (labels::APP, app.name()),
        (labels::ENVIRONMENT, app.environment()),
        (labels::GROUP, group.as_str()),
    ];
    let mut filters = label_filters(&wanted);
    filters
        .get_mut("label")
        .expect("label filters")
        .push(TASK_LABEL.to_owned());
    let list = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::new()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .map_err(|e| docker_error(format!("the task of {group}"), e))?;
    Ok(list
        .into_iter()
        .map(|c| {
            let l = labels_of(c.labels.as_ref());
            (c, l)
        })
        .filter(|(_, l)| {
            labels::is_owned_by(l, app)
                && l.get(labels::GROUP).map(String::as_str) == Some(group.as_str())
                && l.contains_key(TASK_LABEL)
        })
        .collect())
}

/// Whether a container's labels mark it as a task (which is no instance).
pub(crate) fn is_task(l: &Labels) -> bool {
    l.contains_key(TASK_LABEL)
}

pub(crate) async fn start(
    docker: &Docker,
    options: &DockerFleetOptions,
    group: &Group,
) -> Result<()> {
    let task =
        group.release.task.as_ref().ok_or_else(|| {
            Error::invalid("task", format!("the release of {} has none", group.id))
        })?;
    task.validate()?;
    let s = settings_of(&group.release)?;
    if let Some((c, _)) = task_containers(docker, &group.app, &group.id)
        .await?
        .into_iter()
        .next()
    {
        // created by a start that stopped before starting it: the command never
        // ran (a start the daemon refused left an error: that is the task's end)
        if c.state == Some(bollard::models::ContainerSummaryStateEnum::CREATED) {
            let id = c.id.unwrap_or_default();
            let refused = docker
                .inspect_container(&id, None::<InspectContainerOptions>)
                .await
                .map_err(|e| docker_error(format!("the task container of {}", group.id), e))?
                .state
                .and_then(|s| s.error)
                .is_some_and(|e| !e.is_empty());
            if !refused {
                return start_container(docker, &id).await;
            }
        }
        return Ok(());
    }
    if let Err(e) = docker.inspect_image(group.release.image.as_str()).await {
        return Err(docker_error(format!("image {}", group.release.image), e));
    }
    let mut container_labels: HashMap<String, String> = group.labels().into_iter().collect();
    container_labels.insert(TASK_LABEL.into(), group.release.id().to_string());
    let body = ContainerCreateBody {
        image: Some(group.release.image.to_string()),
        entrypoint: Some(vec![task.command[0].clone()]),
        cmd: Some(task.command[1..].to_vec()),
        env: Some(
            group
                .release
                .env
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
        ),
        labels: Some(container_labels),
        stop_timeout: Some(s.stop_timeout.as_secs_f64().ceil() as i64),
        host_config: Some(HostConfig {
            network_mode: options.network.clone(),
            memory: s.memory,
            nano_cpus: s.nano_cpus,
            binds: (!options.task_binds.is_empty()).then(|| options.task_binds.clone()),
            auto_remove: Some(false),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::NO),
                maximum_retry_count: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut name = task_name(&group.id);
    let id = loop {
        match docker
            .create_container(
                Some(CreateContainerOptionsBuilder::new().name(&name).build()),
                body.clone(),
            )
            .await
        {
            Ok(created) => break created.id,
            Err(e) if has_status(&e, 409) => {
                let theirs = docker
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
                    && is_task(&found)
                {
                    // another start of the same task got there first
                    return Ok(());
                }
                tracing::warn!(
                    container = %name,
                    "a container without bluegreen's labels has this name; using another"
                );
                name = format!("{}-{:04x}", task_name(&group.id), fastrand::u16(..));
            }
            Err(e) => return Err(docker_error(format!("container {name}"), e)),
        }
    };
    start_container(docker, &id).await
}

async fn start_container(docker: &Docker, id: &str) -> Result<()> {
    match docker
        .start_container(id, None::<bollard::query_parameters::StartContainerOptions>)
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if has_status(&e, 304) => Ok(()),
        Err(e) => Err(docker_error(format!("starting the task container {id}"), e)),
    }
}

pub(crate) async fn status(
    docker: &Docker,
    app: &App,
    group: &GroupId,
) -> Result<Option<TaskStatus>> {
    let Some((c, l)) = task_containers(docker, app, group)
        .await?
        .into_iter()
        .next()
    else {
        return Ok(None);
    };
    let id = c.id.clone().unwrap_or_default();
    let release = ReleaseId::new(l.get(TASK_LABEL).cloned().unwrap_or_default());
    let inspect = match docker
        .inspect_container(&id, None::<InspectContainerOptions>)
        .await
    {
        Ok(i) => i,
        // removed between the list and now
        Err(e) if has_status(&e, 404) => return Ok(None),
        Err(e) => return Err(docker_error(format!("the task container of {group}"), e)),
    };
    let st = inspect.state.unwrap_or_default();
    let state = match st.status {
        Some(ContainerStateStatusEnum::EXITED) | Some(ContainerStateStatusEnum::DEAD) => {
            let code = st.exit_code.map(|c| c as i32);
            let error = st.error.filter(|e| !e.is_empty());
            match (code, &error) {
                (Some(0), None) => TaskState::Succeeded,
                _ => {
                    let mut reason = match code {
                        Some(code) => format!("exited with status {code}"),
                        None => "ended without an exit status".to_owned(),
                    };
                    if st.oom_killed == Some(true) {
                        reason.push_str(" (killed: out of memory)");
                    }
                    if let Some(error) = error {
                        reason.push_str(&format!(": {error}"));
                    }
                    TaskState::Failed {
                        exit_code: code,
                        reason,
                    }
                }
            }
        }
        // a start the daemon refused (a command the image does not have)
        Some(ContainerStateStatusEnum::CREATED)
            if st.error.as_ref().is_some_and(|e| !e.is_empty()) =>
        {
            TaskState::Failed {
                exit_code: st.exit_code.map(|c| c as i32),
                reason: format!("did not start: {}", st.error.as_deref().unwrap_or_default()),
            }
        }
        // created (about to start), running, paused, restarting, removing
        _ => TaskState::Running,
    };
    let (output, dropped) = logs(docker, &id).await?;
    Ok(Some(
        TaskStatus::new(release, state).with_output(output, dropped),
    ))
}

/// The container's whole log (stdout and stderr), as its last lines and the number
/// of lines before them.
async fn logs(docker: &Docker, id: &str) -> Result<(Vec<String>, u64)> {
    let mut stream = docker.logs(
        id,
        Some(
            LogsOptionsBuilder::new()
                .stdout(true)
                .stderr(true)
                .follow(false)
                .build(),
        ),
    );
    let mut kept: VecDeque<String> = VecDeque::new();
    let mut dropped = 0u64;
    let mut partial = String::new();
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) if has_status(&e, 404) => break,
            Err(e) => return Err(docker_error(format!("the logs of container {id}"), e)),
        };
        let bytes = match chunk {
            LogOutput::StdOut { message }
            | LogOutput::StdErr { message }
            | LogOutput::Console { message } => message,
            LogOutput::StdIn { .. } => continue,
        };
        partial.push_str(&String::from_utf8_lossy(&bytes));
        while let Some(i) = partial.find('\n') {
            let line: String = partial.drain(..=i).collect();
            push(&mut kept, &mut dropped, line.trim_end_matches(['\n', '\r']));
        }
    }
    if !partial.is_empty() {
        push(&mut kept, &mut dropped, &partial);
    }
    Ok((kept.into(), dropped))
}

fn push(kept: &mut VecDeque<String>, dropped: &mut u64, line: &str) {
    if kept.len() == TASK_OUTPUT_LINES {
        kept.pop_front();
        *dropped += 1;
    }
    kept.push_back(line.to_owned());
}

/// Stops (SIGTERM, SIGKILL after the release's `stop_timeout_ms`, default 10 s) and removes a
/// group's task containers. A missing task is no error.
pub(crate) async fn remove(docker: &Docker, app: &App, group: &GroupId) -> Result<()> {
    for (c, _) in task_containers(docker, app, group).await? {
        let id = c.id.clone().unwrap_or_default();
        // no `t`: the daemon uses the container's own stop timeout, set from the
        // release's `stop_timeout_ms` when it was created
        match docker
            .stop_container(&id, None::<bollard::query_parameters::StopContainerOptions>)
            .await
        {
            Ok(()) => {}
            Err(e) if has_status(&e, 304) || has_status(&e, 404) => {}
            Err(e) => return Err(docker_error(format!("stopping the task of {group}"), e)),
        }
        match docker
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
            Ok(()) => {}
            Err(e) if has_status(&e, 404) || has_status(&e, 409) => {}
            Err(e) => return Err(docker_error(format!("removing the task of {group}"), e)),
        }
    }
    Ok(())
}
