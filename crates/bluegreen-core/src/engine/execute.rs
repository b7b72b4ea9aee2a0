//! The executor: asks the planner for the next step, takes it, records what it
//! learned, and asks again; undoes a failed operation as the planner says.

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::time::Instant;

use super::plan::{plan, undo, Intent, Observed, Plan, Policy, Progress, Target};
use super::report::Paused;
use super::request::Strategy;
use super::retire::Retired;
use super::run::Run;
use crate::check::{Check, CheckTarget};
use crate::error::{Error, ErrorKind, Result};
use crate::event::{Event, Step};
use crate::group::{Group, GroupId};
use crate::hook::{Decision, Hook, HookContext, Stage};
use crate::instance::{Health, Instance};
use crate::route::RouteTable;
use crate::router::Serving;
use crate::task::TaskState;

/// What an operation ended with.
pub(crate) struct Outcome {
    pub(crate) target: Target,
    pub(crate) progress: Progress,
    /// From the first route change to the confirmed switch.
    pub(crate) switch_time: Duration,
    pub(crate) retired: Option<Retired>,
    /// Set when a hook paused the operation.
    pub(crate) paused: Option<Paused>,
}

/// A deployment's hooks, and whether this run resumes a paused deployment.
#[derive(Clone, Copy, Default)]
pub(crate) struct Lifecycle<'a> {
    pub(crate) hooks: &'a [(Stage, Arc<dyn Hook>)],
    pub(crate) resume: bool,
}

impl Run<'_> {
    /// Runs `intent` to its end from `observed`.
    pub(crate) async fn drive(
        &self,
        intent: &Intent,
        strategy: &Strategy,
        verify: &[Arc<dyn Check>],
        observed: Observed,
    ) -> Result<Outcome> {
        self.drive_with(intent, strategy, verify, Lifecycle::default(), observed)
            .await
    }

    /// [`Run::drive`] with hooks; `lifecycle.resume` takes the first pause met as
    /// answered.
    pub(crate) async fn drive_with(
        &self,
        intent: &Intent,
        strategy: &Strategy,
        verify: &[Arc<dyn Check>],
        lifecycle: Lifecycle<'_>,
        mut observed: Observed,
    ) -> Result<Outcome> {
        let before = observed.routes.clone();
        let mut resume_pending = lifecycle.resume;
        let mut progress = Progress::default();
        let mut policy = Policy::default();
        let mut first_change: Option<Instant> = None;
        let mut switch_time = Duration::ZERO;
        let mut retired = None;
        let mut last = Step::Observe;
        loop {
            let next = plan(&observed, &progress, intent, &policy);
            last = step_of(&next).unwrap_or(last);
            let target = match (&next, &progress.target) {
                (Plan::Refuse(r), _) => return Err(r.error()),
                (Plan::Choose(t), _) => {
                    if t.adopted {
                        self.emit(Event::GroupAdopted {
                            group: t.group.id.clone(),
                        });
                    }
                    policy = self.policy(strategy, &t.baseline);
                    policy.hooks = lifecycle.hooks.iter().map(|(s, _)| *s).collect();
                    if policy.hooks.contains(&Stage::AfterHealthy)
                        && observed.group(&t.group.id).is_some()
                    {
                        // whether the group was attached already: its hook after
                        // healthy then ran before
                        match self
                            .call(
                                "read serving",
                                self.engine.router.serving(self.app, &t.group.id),
                            )
                            .await
                        {
                            Ok(_) => {
                                observed.attached.insert(t.group.id.clone());
                            }
                            Err(e) if e.kind() == ErrorKind::NotFound => {}
                            Err(e) => return Err(e.at(Step::Observe, true)),
                        }
                    }
                    progress.target = Some((**t).clone());
                    continue;
                }
                (Plan::Done, Some(t)) => {
                    // the last step may have been a long wait that changed nothing:
                    // success is only reported by the holder of the lease
                    if let Err(e) = self.lock.ensure() {
                        return Err(mark(e.at(last, false), false));
                    }
                    return Ok(Outcome {
                        target: t.clone(),
                        progress,
                        switch_time,
                        retired,
                        paused: None,
                    });
                }
                (_, Some(t)) => t.clone(),
                (_, None) => unreachable!("the planner chooses a target before any step"),
            };
            let group = &target.group;
            let done: Result<()> = match next {
                Plan::RunTask => self
                    .step(Step::Task, self.run_task(group))
                    .await
                    .map(|()| progress.task_done = true),
                Plan::Hook { stage, weight } => {
                    let context = HookContext {
                        app: self.app.clone(),
                        deployment: self.deployment.clone(),
                        stage,
                        group: group.id.clone(),
                        release: group.release.clone(),
                        previous: target.baseline.primary().cloned(),
                        weight,
                        preview: progress.attachment.as_ref().and_then(|a| a.preview.clone()),
                        resumed: false,
                    };
                    match self
                        .step(
                            Step::Hook,
                            self.call_hooks(lifecycle.hooks, context, &mut resume_pending),
                        )
                        .await
                    {
                        Ok(None) => {
                            progress.hooks_done.insert((stage, weight));
                            Ok(())
                        }
                        Ok(Some(paused)) => {
                            if let Err(e) = self.lock.ensure() {
                                return Err(mark(e.at(Step::Hook, false), false));
                            }
                            self.emit(Event::Paused {
                                stage: paused.stage,
                                hook: paused.hook.clone(),
                                reason: paused.reason.clone(),
                            });
                            return Ok(Outcome {
                                target: target.clone(),
                                progress,
                                switch_time,
                                retired,
                                paused: Some(paused),
                            });
                        }
                        Err(e) => Err(e),
                    }
                }
                Plan::Launch => self.step(Step::Launch, self.launch(group)).await.map(|()| {
                    progress.launched = true;
                    if observed.group(&group.id).is_none() {
                        observed.groups.push(group.clone());
                    }
                }),
                Plan::ScaleOut => self
                    .step(Step::Launch, self.scale_out(group))
                    .await
                    .map(|()| progress.scaled_out = true),
                Plan::WaitHealthy => self
                    .step(Step::WaitHealthy, self.wait_healthy(group))
                    .await
                    .map(|instances| progress.healthy = Some(instances)),
                Plan::Attach => {
                    let instances = progress.healthy.clone().unwrap_or_default();
                    self.step(
                        Step::Attach,
                        self.change(
                            "attach",
                            self.engine.router.attach(self.app, &group.id, &instances),
                        ),
                    )
                    .await
                    .map(|a| progress.attachment = Some(a))
                }
                Plan::Verify => {
                    let check = CheckTarget {
                        app: self.app.clone(),
                        group: group.id.clone(),
                        instances: progress.healthy.clone().unwrap_or_default(),
                        preview: progress.attachment.as_ref().and_then(|a| a.preview.clone()),
                        weight: 0,
                        serving: None,
                        baseline: None,
                    };
                    self.step(Step::Verify, self.run_checks(verify, &check))
                        .await
                        .map(|()| progress.verified = true)
                }
                Plan::Ready { weight, step } => self
                    .step(step, self.ready(group, weight))
                    .await
                    .map(|()| progress.ready_for = Some(weight)),
                Plan::Shift { table, weight } => {
                    let started = *first_change.get_or_insert_with(Instant::now);
                    let shifted = self
                        .step(Step::Promote, self.set_routes(&table))
                        .await
                        .map(|()| observed.routes = table.clone());
                    match shifted {
                        Ok(()) => self
                            .step(Step::Confirm, self.confirm(group, &table))
                            .await
                            .map(|_| {
                                if weight == 100 {
                                    progress.switched = true;
                                    switch_time = started.elapsed();
                                }
                            }),
                        Err(e) => Err(e),
                    }
                }
                Plan::Bake { weight, bake } => self
                    .step(
                        Step::Promote,
                        self.bake(group, &target.baseline, weight, bake, strategy, &progress),
                    )
                    .await
                    .map(|()| progress.baked = Some(weight)),
                Plan::Watch { duration, fallback } => {
                    match self
                        .step(
                            Step::Bake,
                            self.watch(group, &fallback, duration, strategy, &progress),
                        )
                        .await
                    {
                        Ok(()) => {
                            progress.watched = true;
                            Ok(())
                        }
                        Err(e) => {
                            return Err(self.switch_back(&observed, &target, &fallback, e).await)
                        }
                    }
                }
                Plan::Retire => match self.retire(group, &before).await {
                    Ok(r) => {
                        retired = Some(r);
                        progress.retired = true;
                        Ok(())
                    }
                    // the new group serves; running again finishes the retirement
                    Err(e) => return Err(e),
                },
                Plan::Refuse(_) | Plan::Choose(_) | Plan::Done => unreachable!(),
            };
            if let Err(e) = done {
                return Err(self.revert(&observed, &target, e).await);
            }
        }
    }

    /// The strategy as the router and the platform allow it.
    pub(crate) fn policy(&self, strategy: &Strategy, baseline: &RouteTable) -> Policy {
        let mut steps: Vec<(u8, Duration)> =
            strategy.steps.iter().map(|s| (s.weight, s.bake)).collect();
        if !steps.is_empty() && baseline.is_empty() {
            self.emit(Event::StrategyAdapted {
                reason: "no group serves yet: switching in one step".into(),
            });
            steps.clear();
        }
        if !steps.is_empty() && !self.engine.router.capabilities().weighted_routing {
            self.emit(Event::StrategyAdapted {
                reason: "the router cannot weigh traffic: switching in one step".into(),
            });
            steps.clear();
        }
        let fleet = self.engine.fleet.capabilities();
        if !steps.is_empty() && fleet.launch_is_switch {
            self.emit(Event::StrategyAdapted {
                reason: "launching is the switch on this platform: switching in one step".into(),
            });
            steps.clear();
        }
        let mut bake_after = strategy.bake_after;
        if !bake_after.is_zero() && (!fleet.warm_groups || fleet.launch_is_switch) {
            self.emit(Event::StrategyAdapted {
                reason: "the fleet keeps no warm group to switch back to: no bake after the switch"
                    .into(),
            });
            bake_after = Duration::ZERO;
        }
        Policy {
            steps,
            bake_after,
            hooks: Default::default(),
        }
    }

    /// Calls the hooks of `context.stage` in order. `Ok(Some)` when one paused; a
    /// pause is taken as answered while `resume_pending` (then cleared).
    async fn call_hooks(
        &self,
        hooks: &[(Stage, Arc<dyn Hook>)],
        mut context: HookContext,
        resume_pending: &mut bool,
    ) -> Result<Option<Paused>> {
        for (_, hook) in hooks.iter().filter(|(s, _)| *s == context.stage) {
            let name = hook.name().to_owned();
            context.resumed = *resume_pending;
            let stage = context.stage;
            let call = std::panic::AssertUnwindSafe(hook.call(&context)).catch_unwind();
            let decision = match tokio::time::timeout(hook.timeout(), call).await {
                Ok(Ok(d)) => d,
                // a panicking hook is a failing hook: the deployment fails closed
                Ok(Err(panic)) => {
                    Decision::Fail(format!("the hook panicked: {}", panic_text(&*panic)))
                }
                Err(_) => {
                    return Err(Error::Timeout {
                        what: format!("hook {name} at {stage}"),
                        after: hook.timeout(),
                    })
                }
            };
            let said = match &decision {
                Decision::Continue => "continue".to_owned(),
                Decision::Fail(r) => format!("fail: {r}"),
                Decision::Pause(r) if *resume_pending => format!("pause, passed on resume: {r}"),
                Decision::Pause(r) => format!("pause: {r}"),
            };
            self.emit(Event::HookCalled {
                stage,
                hook: name.clone(),
                decision: said,
            });
            match decision {
                Decision::Continue => {}
                Decision::Fail(reason) => {
                    return Err(Error::unhealthy(format!(
                        "hook {name} at {stage} failed the deployment: {reason}"
                    )))
                }
                Decision::Pause(_) if *resume_pending => *resume_pending = false,
                Decision::Pause(reason) => {
                    return Ok(Some(Paused {
                        stage,
                        hook: name,
                        reason,
                        weight: context.weight,
                    }))
                }
            }
        }
        Ok(None)
    }

    /// Runs the release's task of `group` and waits for it: starts it unless this
    /// release's task already runs or succeeded under the group's id (a leftover of
    /// another release, or a failed earlier attempt, is removed first), streams
    /// its output, and fails on a failed task or at the task's timeout.
    async fn run_task(&self, group: &Group) -> Result<()> {
        let Some(task) = group.release.task.as_ref() else {
            return Ok(());
        };
        let fleet = &self.engine.fleet;
        let release = group.release.id();
        let found = self
            .call("read task", fleet.task(self.app, &group.id))
            .await?;
        match found {
            // an earlier run's task of this release finished: nothing to wait for
            Some(s) if s.release == release && s.state == TaskState::Succeeded => {
                self.emit(Event::TaskSucceeded {
                    group: group.id.clone(),
                });
                return Ok(());
            }
            Some(s) if s.release == release && s.state == TaskState::Running => {}
            Some(_) => {
                self.change("remove task", fleet.destroy(self.app, &group.id))
                    .await?;
                self.change("start task", fleet.start_task(group)).await?;
            }
            None => self.change("start task", fleet.start_task(group)).await?,
        }
        self.emit(Event::TaskStarted {
            group: group.id.clone(),
            command: task.command.clone(),
        });
        let options = &self.engine.options;
        let deadline = Instant::now() + task.timeout;
        let mut printed: u64 = 0;
        let mut ticks = tokio::time::interval(options.poll_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let Some(status) = self
                .call("read task", fleet.task(self.app, &group.id))
                .await?
            else {
                return Err(Error::unhealthy(format!(
                    "the task of {} is gone from the platform",
                    group.id
                )));
            };
            for (i, line) in status.output.iter().enumerate() {
                let n = status.dropped + i as u64;
                if n >= printed {
                    printed = n + 1;
                    self.emit(Event::TaskOutput {
                        group: group.id.clone(),
                        line: line.clone(),
                    });
                }
            }
            match status.state {
                TaskState::Succeeded => {
                    self.emit(Event::TaskSucceeded {
                        group: group.id.clone(),
                    });
                    return Ok(());
                }
                TaskState::Failed { exit_code, reason } => {
                    let last = status.output.last().map(|l| format!("; last line: {l}"));
                    return Err(Error::unhealthy(format!(
                        "the task `{}` of {} failed ({reason}{}){}",
                        task.command.join(" "),
                        group.id,
                        exit_code
                            .map(|c| format!(", exit status {c}"))
                            .unwrap_or_default(),
                        last.unwrap_or_default()
                    )));
                }
                TaskState::Running => {}
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!("the task `{}` of {}", task.command.join(" "), group.id),
                    after: task.timeout,
                });
            }
        }
    }

    async fn launch(&self, group: &Group) -> Result<()> {
        self.change("launch", self.engine.fleet.launch(group))
            .await?;
        self.emit(Event::GroupLaunched {
            group: group.id.clone(),
            size: group.release.size,
        });
        Ok(())
    }

    /// Scales a warm group back to its release's size.
    async fn scale_out(&self, group: &Group) -> Result<()> {
        let size = group.release.size;
        self.change(
            "scale out",
            self.engine.fleet.scale(self.app, &group.id, size),
        )
        .await?;
        self.emit(Event::GroupScaledOut {
            group: group.id.clone(),
            size,
        });
        Ok(())
    }

    /// Polls the fleet until every wanted instance of `group` is healthy, an
    /// instance stops, or the health timeout passes.
    async fn wait_healthy(&self, group: &Group) -> Result<Vec<Instance>> {
        let options = &self.engine.options;
        let wanted = group.release.size as usize;
        let deadline = Instant::now() + options.health_timeout;
        let mut last_seen = usize::MAX;
        // polls start every `poll_interval`, however long a poll takes
        let mut ticks = tokio::time::interval(options.poll_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let instances = match self
                .call(
                    "list instances",
                    self.engine.fleet.instances(self.app, &group.id),
                )
                .await
            {
                Ok(list) => list,
                // just launched: the platform may not list it yet
                Err(e) if e.kind() == ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(e),
            };
            let healthy: Vec<Instance> = instances
                .iter()
                .filter(|i| i.health.is_healthy())
                .cloned()
                .collect();
            if healthy.len() != last_seen {
                last_seen = healthy.len();
                self.emit(Event::Health {
                    group: group.id.clone(),
                    healthy: healthy.len(),
                    wanted,
                });
            }
            if healthy.len() >= wanted {
                return Ok(healthy);
            }
            if let Some((id, reason)) = instances.iter().find_map(|i| match &i.health {
                Health::Stopped { reason } => Some((&i.id, reason)),
                _ => None,
            }) {
                return Err(Error::unhealthy(format!(
                    "instance {id} of {} stopped: {reason}",
                    group.id
                )));
            }
            if Instant::now() >= deadline {
                let why = instances
                    .iter()
                    .find_map(|i| match &i.health {
                        Health::Unhealthy { reason } => Some(format!("; {}: {reason}", i.id)),
                        _ => None,
                    })
                    .unwrap_or_default();
                return Err(Error::Timeout {
                    what: format!(
                        "{wanted} healthy instances of {} ({} healthy, {} running{why})",
                        group.id,
                        healthy.len(),
                        instances.len()
                    ),
                    after: options.health_timeout,
                });
            }
        }
    }

    pub(crate) async fn run_checks(
        &self,
        checks: &[Arc<dyn Check>],
        target: &CheckTarget,
    ) -> Result<()> {
        for check in checks {
            let outcome = self
                .call(&format!("check {}", check.name()), async {
                    // a panicking check is a failing check
                    Ok(std::panic::AssertUnwindSafe(check.run(target))
                        .catch_unwind()
                        .await
                        .unwrap_or_else(|panic| {
                            Err(format!("it panicked: {}", panic_text(&*panic)))
                        }))
                })
                .await?;
            outcome.map_err(|reason| {
                Error::unhealthy(format!(
                    "check `{}` failed on {}: {reason}",
                    check.name(),
                    target.group
                ))
            })?;
            self.emit(Event::CheckPassed {
                check: check.name().to_owned(),
                group: target.group.clone(),
            });
        }
        Ok(())
    }

    /// Polls the router until it reports every attached member of `group` healthy
    /// (and at least as many as the group launched), within the confirm timeout:
    /// no weight increase without it.
    pub(crate) async fn ready(&self, group: &Group, weight: u8) -> Result<()> {
        let options = &self.engine.options;
        let deadline = Instant::now() + options.confirm_timeout;
        let wanted = group.release.size as usize;
        let mut last = None;
        loop {
            let serving = self
                .call(
                    "read serving",
                    self.engine.router.serving(self.app, &group.id),
                )
                .await?;
            if last != Some((serving.healthy, serving.total)) {
                last = Some((serving.healthy, serving.total));
                self.emit(Event::Ready {
                    group: group.id.clone(),
                    healthy: serving.healthy,
                    total: serving.total,
                    weight,
                });
            }
            if fully_serving(&serving, wanted) {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::unhealthy(format!(
                    "the router reports {} of {} members of {} healthy ({} launched): \
                     not moving it to {weight}% (waited {:?})",
                    serving.healthy, serving.total, group.id, wanted, options.confirm_timeout
                )));
            }
            tokio::time::sleep(options.poll_interval.min(deadline - now)).await;
        }
    }

    async fn set_routes(&self, table: &RouteTable) -> Result<()> {
        self.change("set routes", self.engine.router.set_routes(self.app, table))
            .await?;
        self.emit(Event::TrafficShifted {
            routes: table.clone(),
        });
        Ok(())
    }

    /// Polls the router until it reports `table` and every member of `group`
    /// healthy, within the confirm timeout.
    pub(crate) async fn confirm(&self, group: &Group, table: &RouteTable) -> Result<Serving> {
        let options = &self.engine.options;
        let deadline = Instant::now() + options.confirm_timeout;
        loop {
            let routes = self
                .call("read routes", self.engine.router.routes(self.app))
                .await?;
            let serving = self
                .call(
                    "read serving",
                    self.engine.router.serving(self.app, &group.id),
                )
                .await?;
            if &routes == table && serving.total > 0 && serving.healthy == serving.total {
                return Ok(serving);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Timeout {
                    what: format!(
                        "the router to serve {} (routes {routes}, {} of {} members healthy)",
                        group.id, serving.healthy, serving.total
                    ),
                    after: options.confirm_timeout,
                });
            }
            tokio::time::sleep(options.poll_interval.min(deadline - now)).await;
        }
    }

    /// One canary step's bake: wait, then judge the window.
    async fn bake(
        &self,
        group: &Group,
        baseline: &RouteTable,
        weight: u8,
        bake: Duration,
        strategy: &Strategy,
        progress: &Progress,
    ) -> Result<()> {
        let window = Window::open(self, &group.id, baseline.primary()).await;
        self.emit(Event::Baking {
            weight,
            duration: bake,
        });
        tokio::time::sleep(bake).await;
        let serving = self
            .call(
                "read serving",
                self.engine.router.serving(self.app, &group.id),
            )
            .await?;
        let wanted = group.release.size as usize;
        if !fully_serving(&serving, wanted) {
            return Err(Error::unhealthy(format!(
                "the router reports {} of {} members of {} healthy after the bake at {weight}% ({wanted} launched)",
                serving.healthy, serving.total, group.id
            )));
        }
        let base = window.baseline_now(self).await;
        self.analyse(group, weight, strategy, progress, &window, serving, base)
            .await
    }

    /// The bake after the final switch: polls the new group every `poll_interval`
    /// for `duration`; any breach is an error (the caller switches back).
    pub(crate) async fn watch(
        &self,
        group: &Group,
        fallback: &RouteTable,
        duration: Duration,
        strategy: &Strategy,
        progress: &Progress,
    ) -> Result<()> {
        let options = &self.engine.options;
        self.emit(Event::Watching {
            group: group.id.clone(),
            duration,
        });
        let window = Window::open(self, &group.id, fallback.primary()).await;
        let restarts_at_start = self
            .call(
                "list instances",
                self.engine.fleet.instances(self.app, &group.id),
            )
            .await?;
        let deadline = Instant::now() + duration;
        let wanted = group.release.size as usize;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Ok(());
            }
            tokio::time::sleep(options.poll_interval.min(deadline - now)).await;
            let instances = self
                .call(
                    "list instances",
                    self.engine.fleet.instances(self.app, &group.id),
                )
                .await?;
            if let Some(why) = crash_loop(&restarts_at_start, &instances, wanted) {
                return Err(Error::unhealthy(format!(
                    "{} after the switch: {why}",
                    group.id
                )));
            }
            let serving = self
                .call(
                    "read serving",
                    self.engine.router.serving(self.app, &group.id),
                )
                .await?;
            if !fully_serving(&serving, wanted) {
                return Err(Error::unhealthy(format!(
                    "{} after the switch: the router reports {} of {} members healthy ({wanted} launched)",
                    group.id, serving.healthy, serving.total
                )));
            }
            let base = window.baseline_now(self).await;
            self.analyse(group, 100, strategy, progress, &window, serving, base)
                .await
                .map_err(|e| match e {
                    Error::Unhealthy { message } => {
                        Error::unhealthy(format!("after the switch: {message}"))
                    }
                    other => other,
                })?;
        }
    }

    /// Judges a window: fixed limits, limits against the baseline, user checks.
    #[allow(clippy::too_many_arguments)]
    async fn analyse(
        &self,
        group: &Group,
        weight: u8,
        strategy: &Strategy,
        progress: &Progress,
        window: &Window,
        serving: Serving,
        baseline: Option<Serving>,
    ) -> Result<()> {
        let ours = window.ours.as_ref().map(|start| delta(start, &serving));
        let theirs = match (&window.theirs, &baseline) {
            (Some(start), Some(now)) => Some(delta(start, now)),
            _ => None,
        };
        let ours = ours.unwrap_or_else(|| serving.clone());
        if let Some(limit) = strategy.max_error_rate {
            if let Some((errors, requests, rate)) = error_rate(&ours) {
                if rate > limit {
                    return Err(Error::unhealthy(format!(
                        "{} answered {errors} of {requests} requests with 5xx at {weight}% ({:.1}% > {:.1}%)",
                        group.id,
                        rate * 100.0,
                        limit * 100.0
                    )));
                }
            }
        }
        if let (Some(limit), Some(theirs)) = (strategy.max_error_rate_increase, &theirs) {
            if let (Some((_, _, ours_rate)), Some((_, _, base_rate))) =
                (error_rate(&ours), error_rate(theirs))
            {
                if ours_rate - base_rate > limit {
                    return Err(Error::unhealthy(format!(
                        "{}'s 5xx rate {:.1}% passes the baseline's {:.1}% by more than {:.1} points at {weight}%",
                        group.id,
                        ours_rate * 100.0,
                        base_rate * 100.0,
                        limit * 100.0
                    )));
                }
            }
        }
        if let (Some(limit), Some(ours_p99), Some(base_p99)) = (
            strategy.max_p99_ratio,
            ours.p99,
            theirs.as_ref().and_then(|t| t.p99),
        ) {
            if !base_p99.is_zero() && ours_p99.as_secs_f64() / base_p99.as_secs_f64() > limit {
                return Err(Error::unhealthy(format!(
                    "{}'s p99 {ours_p99:?} is more than {limit}x the baseline's {base_p99:?} at {weight}%",
                    group.id
                )));
            }
        }
        let target = CheckTarget {
            app: self.app.clone(),
            group: group.id.clone(),
            instances: progress.healthy.clone().unwrap_or_default(),
            preview: None,
            weight,
            serving: Some(ours),
            baseline: theirs,
        };
        self.run_checks(&strategy.analysis, &target).await
    }

    /// Undoes a failed operation: traffic back to the baseline, the new group
    /// removed when it was launched for it. Makes no change once the lease is lost.
    pub(crate) async fn revert(&self, observed: &Observed, target: &Target, error: Error) -> Error {
        if error.kind() == ErrorKind::Locked {
            return mark(error, false);
        }
        let step = error.step().unwrap_or(Step::Revert);
        let reason = match &error {
            Error::Step { source, .. } => source.to_string(),
            other => other.to_string(),
        };
        self.emit(Event::Reverting { step, reason });
        let plan = undo(observed, target, self.engine.options.keep_failed);
        let undone: Result<()> = async {
            // what the router has now, not what this run last set: a call that
            // failed may still have changed it
            let now = self
                .call("read routes", self.engine.router.routes(self.app))
                .await?;
            if now != target.baseline || plan.restore.is_some() {
                self.set_routes(&target.baseline).await?;
            }
            if plan.destroy {
                self.destroy_group(&target.group.id).await?;
            }
            Ok(())
        }
        .await;
        match undone {
            Ok(()) => {
                self.emit(Event::Reverted {
                    routes: target.baseline.clone(),
                });
                mark(error, true)
            }
            Err(e) if e.kind() == ErrorKind::Locked => {
                tracing::error!(app = %self.app, error = %e, "lock lost while reverting; no further change");
                e.at(Step::Revert, false)
            }
            Err(e) => {
                tracing::error!(app = %self.app, error = %e, "revert failed; run the operation again to converge");
                mark(error, false)
            }
        }
    }

    /// A breach after the final switch: traffic back to `fallback` at once, in one
    /// confirmed change, then the new group removed as for any failure.
    async fn switch_back(
        &self,
        observed: &Observed,
        target: &Target,
        fallback: &RouteTable,
        error: Error,
    ) -> Error {
        let back = Target {
            baseline: fallback.clone(),
            already_live: false,
            ..target.clone()
        };
        let error = self.revert(observed, &back, error).await;
        if error.rolled_back() {
            if let Some(g) = fallback.primary().and_then(|id| observed.group(id)) {
                if let Err(e) = self.confirm(g, fallback).await {
                    tracing::error!(app = %self.app, error = %e, "the group switched back to does not confirm");
                }
            }
        }
        error
    }
}

/// The router's counters at the start of a window, for the new group and the
/// baseline's main group.
struct Window {
    ours: Option<Serving>,
    theirs: Option<Serving>,
    baseline_group: Option<GroupId>,
}

impl Window {
    async fn open(run: &Run<'_>, group: &GroupId, baseline: Option<&GroupId>) -> Window {
        let router = &run.engine.router;
        let ours = run
            .call("read serving", router.serving(run.app, group))
            .await
            .ok();
        let theirs = match baseline {
            Some(b) => run
                .call("read serving", router.serving(run.app, b))
                .await
                .ok(),
            None => None,
        };
        Window {
            ours,
            theirs,
            baseline_group: baseline.cloned(),
        }
    }

    async fn baseline_now(&self, run: &Run<'_>) -> Option<Serving> {
        let group = self.baseline_group.as_ref()?;
        self.theirs.as_ref()?;
        run.call("read serving", run.engine.router.serving(run.app, group))
            .await
            .ok()
    }
}

/// Whether the router reports every attached member healthy, and at least as many
/// as the group launched.
fn fully_serving(serving: &Serving, wanted: usize) -> bool {
    serving.total > 0 && serving.healthy == serving.total && serving.healthy >= wanted
}

/// The counters of `now` since `start` (cumulative counters; a counter that went
/// down was reset, and counts from zero).
fn delta(start: &Serving, now: &Serving) -> Serving {
    let minus = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) if a >= b => Some(a - b),
        (Some(a), _) => Some(a),
        (None, _) => None,
    };
    let mut out = now.clone();
    out.requests = minus(now.requests, start.requests);
    out.errors = minus(now.errors, start.errors);
    out
}

/// `(errors, requests, rate)` of a window with requests.
fn error_rate(s: &Serving) -> Option<(u64, u64, f64)> {
    match (s.requests, s.errors) {
        (Some(r), Some(e)) if r > 0 => Some((e, r, e as f64 / r as f64)),
        _ => None,
    }
}

/// A reason when the group is crash-looping or lost members: an instance stopped or
/// unhealthy, a restart count that grew, or fewer instances than launched.
fn crash_loop(start: &[Instance], now: &[Instance], wanted: usize) -> Option<String> {
    for i in now {
        match &i.health {
            Health::Healthy => {}
            Health::Starting => return Some(format!("instance {} restarted", i.id)),
            Health::Unhealthy { reason } | Health::Stopped { reason } => {
                return Some(format!("instance {} is not healthy: {reason}", i.id))
            }
        }
        if let Some(before) = start.iter().find(|s| s.id == i.id) {
            if i.restarts > before.restarts {
                return Some(format!(
                    "instance {} restarted {} times during the bake",
                    i.id,
                    i.restarts - before.restarts
                ));
            }
        }
    }
    let healthy = now.iter().filter(|i| i.health.is_healthy()).count();
    (healthy < wanted).then(|| format!("{healthy} of {wanted} instances healthy"))
}

/// The step a plan runs as.
fn step_of(plan: &Plan) -> Option<Step> {
    Some(match plan {
        Plan::RunTask => Step::Task,
        Plan::Hook { .. } => Step::Hook,
        Plan::Launch | Plan::ScaleOut => Step::Launch,
        Plan::WaitHealthy => Step::WaitHealthy,
        Plan::Attach => Step::Attach,
        Plan::Verify => Step::Verify,
        Plan::Ready { step, .. } => *step,
        Plan::Shift { .. } => Step::Confirm,
        Plan::Bake { .. } => Step::Promote,
        Plan::Watch { .. } => Step::Bake,
        Plan::Retire => Step::Retire,
        Plan::Refuse(_) | Plan::Choose(_) | Plan::Done => return None,
    })
}

/// The message of a caught panic.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}

pub(crate) fn mark(error: Error, rolled_back: bool) -> Error {
    match error {
        Error::Step { step, source, .. } => Error::Step {
            step,
            rolled_back,
            source,
        },
        other => other.at(Step::Revert, rolled_back),
    }
}
