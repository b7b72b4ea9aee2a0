//! The in-memory [`Fleet`] provider.

use async_trait::async_trait;
use bluegreen_core::labels;
use bluegreen_core::{
    App, Error, Fleet, FleetCapabilities, Group, GroupId, Health, Instance, Result, TaskState,
    TaskStatus,
};
use tokio::time::Instant;

use crate::fault::{Behaviour, Op, TaskBehaviour};
use crate::platform::{MemoryPlatform, StoredGroup, StoredInstance, StoredTask};
use futures_util::future::join_all;

/// Groups of the [`MemoryPlatform`]: instances boot over the platform's boot time
/// and behave as their image's [`Behaviour`] says.
#[derive(Clone)]
pub struct MemoryFleet {
    pub(crate) platform: MemoryPlatform,
}

impl std::fmt::Debug for MemoryFleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryFleet").finish_non_exhaustive()
    }
}

pub(crate) fn health_of(instance: &StoredInstance, boot_time: std::time::Duration) -> Health {
    if instance.killed {
        return Health::Stopped {
            reason: "killed".into(),
        };
    }
    let age = Instant::now().saturating_duration_since(instance.launched);
    if age < boot_time {
        return Health::Starting;
    }
    match &instance.behaviour {
        Behaviour::NeverHealthy => Health::Unhealthy {
            reason: "GET /health: 500".into(),
        },
        Behaviour::CrashAfter(after) if age >= boot_time + *after => Health::Stopped {
            reason: "exited with status 101".into(),
        },
        _ => Health::Healthy,
    }
}

#[async_trait]
impl Fleet for MemoryFleet {
    fn capabilities(&self) -> FleetCapabilities {
        let caps = FleetCapabilities::default()
            .with_tasks(true)
            .with_scaling(true);
        match self.platform.state().batch_size {
            Some(b) => caps.with_batch_size(b),
            None => caps,
        }
    }

    async fn launch(&self, group: &Group) -> Result<()> {
        let wanted = group.release.size as usize;
        let (missing, behaviour) = {
            let state = self.platform.state();
            let image = state
                .images
                .get(&group.release.image)
                .ok_or_else(|| Error::not_found(format!("image {}", group.release.image)))?;
            let behaviour = image.behaviour.clone();
            let ours =
                |g: &&StoredGroup| g.id == group.id && labels::is_owned_by(&g.labels, &group.app);
            match state.groups.iter().find(ours) {
                Some(existing) if existing.record != group.to_record() => {
                    return Err(Error::conflict(format!(
                        "group {} exists with another release",
                        group.id
                    )))
                }
                Some(existing) => (wanted.saturating_sub(existing.instances.len()), behaviour),
                None => (wanted, behaviour),
            }
        };
        if missing == 0 {
            return Ok(());
        }
        // the batches go out at once, like a provider's concurrent batch calls; each
        // batch is one platform call that starts all of its instances or none
        let batch = self.platform.state().batch_size.unwrap_or(usize::MAX);
        let sizes: Vec<usize> = (0..missing.div_ceil(batch))
            .map(|i| batch.min(missing - i * batch))
            .collect();
        let outcomes = join_all(sizes.iter().map(|_| self.platform.call(Op::Launch))).await;
        let mut state = self.platform.state();
        let now = Instant::now();
        let mut first_error = None;
        for (n, outcome) in sizes.into_iter().zip(outcomes) {
            if let Err(e) = outcome {
                first_error.get_or_insert(e);
                continue;
            }
            let mut started = Vec::with_capacity(n);
            for _ in 0..n {
                state.next_instance += 1;
                started.push(StoredInstance {
                    id: format!("i-{:08x}", state.next_instance),
                    launched: now,
                    behaviour: behaviour.clone(),
                    killed: false,
                });
            }
            match state
                .groups
                .iter_mut()
                .find(|g| g.id == group.id && labels::is_owned_by(&g.labels, &group.app))
            {
                Some(g) => g.instances.extend(started),
                None => state.groups.push(StoredGroup {
                    id: group.id.clone(),
                    labels: group.labels(),
                    record: group.to_record(),
                    instances: started,
                }),
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    async fn groups(&self, app: &App) -> Result<Vec<Group>> {
        self.platform.call(Op::Groups).await?;
        let state = self.platform.state();
        state
            .groups
            .iter()
            .filter(|g| labels::is_owned_by(&g.labels, app))
            .map(|g| Group::from_record(&g.record, &g.labels))
            .collect()
    }

    async fn instances(&self, app: &App, group: &GroupId) -> Result<Vec<Instance>> {
        let count = {
            let state = self.platform.state();
            state
                .groups
                .iter()
                .find(|g| &g.id == group && labels::is_owned_by(&g.labels, app))
                .map(|g| g.instances.len())
        };
        self.platform
            .calls_in_batches(Op::Instances, count.unwrap_or(0))
            .await?;
        let state = self.platform.state();
        let g = state
            .groups
            .iter()
            .find(|g| &g.id == group && labels::is_owned_by(&g.labels, app))
            .ok_or_else(|| Error::not_found(format!("group {group}")))?;
        Ok(g.instances
            .iter()
            .map(|i| {
                Instance::new(
                    i.id.as_str(),
                    Some(format!("mem://{}", i.id)),
                    health_of(i, state.boot_time),
                )
            })
            .collect())
    }

    async fn destroy(&self, app: &App, group: &GroupId) -> Result<()> {
        let count = {
            let state = self.platform.state();
            state
                .groups
                .iter()
                .find(|g| &g.id == group && labels::is_owned_by(&g.labels, app))
                .map(|g| g.instances.len())
        };
        let Some(count) = count else {
            self.platform.call(Op::Destroy).await?;
            remove_task(&self.platform, app, group);
            return Ok(());
        };
        let batch = self.platform.state().batch_size.unwrap_or(usize::MAX);
        let batches = count.div_ceil(batch).max(1);
        let outcomes = join_all((0..batches).map(|_| self.platform.call(Op::Destroy))).await;
        let done = outcomes.iter().filter(|o| o.is_ok()).count();
        let mut state = self.platform.state();
        if let Some(pos) = state
            .groups
            .iter()
            .position(|g| &g.id == group && labels::is_owned_by(&g.labels, app))
        {
            let g = &mut state.groups[pos];
            let n = (done * batch).min(g.instances.len());
            g.instances.drain(..n);
            if g.instances.is_empty() {
                state.groups.remove(pos);
            }
        }
        let out = outcomes.into_iter().find(|o| o.is_err()).unwrap_or(Ok(()));
        if out.is_ok() {
            drop(state);
            remove_task(&self.platform, app, group);
        }
        out
    }

    async fn scale(&self, app: &App, group: &GroupId, size: u32) -> Result<()> {
        self.platform.call(Op::Scale).await?;
        let mut state = self.platform.state();
        let state = &mut *state;
        let g = state
            .groups
            .iter_mut()
            .find(|g| &g.id == group && labels::is_owned_by(&g.labels, app))
            .ok_or_else(|| Error::not_found(format!("group {group}")))?;
        let size = size as usize;
        if g.instances.len() > size {
            // like an Auto Scaling group's default policy: the oldest go first
            g.instances.drain(..g.instances.len() - size);
            return Ok(());
        }
        let record = Group::from_record(&g.record, &g.labels)?;
        let behaviour = state
            .images
            .get(&record.release.image)
            .ok_or_else(|| Error::not_found(format!("image {}", record.release.image)))?
            .behaviour
            .clone();
        let now = Instant::now();
        while g.instances.len() < size {
            state.next_instance += 1;
            g.instances.push(StoredInstance {
                id: format!("i-{:08x}", state.next_instance),
                launched: now,
                behaviour: behaviour.clone(),
                killed: false,
            });
        }
        Ok(())
    }

    async fn start_task(&self, group: &Group) -> Result<()> {
        let task = group.release.task.as_ref().ok_or_else(|| {
            Error::invalid("task", format!("the release of {} has none", group.id))
        })?;
        self.platform.call(Op::StartTask).await?;
        let mut state = self.platform.state();
        let exists = state
            .tasks
            .iter()
            .any(|t| t.group == group.id && labels::is_owned_by(&t.labels, &group.app));
        if exists {
            return Ok(());
        }
        let image = state
            .images
            .get(&group.release.image)
            .ok_or_else(|| Error::not_found(format!("image {}", group.release.image)))?;
        let behaviour = state
            .task_behaviours
            .get(&image.reference)
            .cloned()
            .unwrap_or_default();
        state.tasks.push(StoredTask {
            group: group.id.clone(),
            labels: group.labels(),
            release: group.release.id(),
            command: task.command.clone(),
            started: Instant::now(),
            behaviour,
        });
        state
            .task_starts
            .push((group.app.clone(), group.id.clone(), task.command.clone()));
        Ok(())
    }

    async fn task(&self, app: &App, group: &GroupId) -> Result<Option<TaskStatus>> {
        self.platform.call(Op::Task).await?;
        let state = self.platform.state();
        let Some(t) = state
            .tasks
            .iter()
            .find(|t| &t.group == group && labels::is_owned_by(&t.labels, app))
        else {
            return Ok(None);
        };
        let age = Instant::now().saturating_duration_since(t.started);
        let mut output = vec![format!("$ {}", t.command.join(" "))];
        let state = match &t.behaviour {
            TaskBehaviour::Succeed(after) if age >= *after => {
                output.push("done".into());
                TaskState::Succeeded
            }
            TaskBehaviour::Fail(after, code) if age >= *after => {
                output.push(format!("error: exit {code}"));
                TaskState::Failed {
                    exit_code: Some(*code),
                    reason: format!("exited with status {code}"),
                }
            }
            _ => TaskState::Running,
        };
        Ok(Some(
            TaskStatus::new(t.release.clone(), state).with_output(output, 0),
        ))
    }
}

/// Removes a group's task record (stopping it): part of destroying the group.
fn remove_task(platform: &MemoryPlatform, app: &App, group: &GroupId) {
    platform
        .state()
        .tasks
        .retain(|t| !(&t.group == group && labels::is_owned_by(&t.labels, app)));
}
