//! One operation of the engine under the app's lock: step bookkeeping, bounded
//! platform calls, and the observations the steps share.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;
use tracing::Instrument;

use super::held_lock::HeldLock;
use super::observe::Observed;
use super::Engine;
use crate::app::App;
use crate::error::{Error, Result};
use crate::event::{Event, Step};
use crate::group::{DeploymentId, Group, GroupId};
use crate::instance::{Health, Instance};

/// `call`, or [`Error::Timeout`] naming `what` once `bound` passes.
pub(crate) async fn bounded<T>(
    what: &str,
    bound: Duration,
    call: impl Future<Output = Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(bound, call).await {
        Ok(out) => out,
        Err(_) => Err(Error::Timeout {
            what: what.to_owned(),
            after: bound,
        }),
    }
}

pub(crate) struct Run<'a> {
    pub(crate) engine: &'a Engine,
    pub(crate) app: &'a App,
    pub(crate) deployment: DeploymentId,
    pub(crate) lock: HeldLock,
}

impl Run<'_> {
    /// Runs one step: events, a tracing span, a check that the lock is still ours,
    /// and the step's name on any error.
    pub(crate) async fn step<T>(
        &self,
        step: Step,
        work: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        self.lock.ensure().map_err(|e| e.at(step, false))?;
        self.emit(Event::StepStarted { step });
        let started = Instant::now();
        let span =
            tracing::info_span!("step", %step, app = %self.app, deployment = %self.deployment);
        let out = work.instrument(span).await.map_err(|e| e.at(step, false))?;
        self.emit(Event::StepFinished {
            step,
            elapsed: started.elapsed(),
        });
        Ok(out)
    }

    /// One platform call, bounded by [`EngineOptions::call_timeout`](crate::EngineOptions::call_timeout).
    pub(crate) async fn call<T>(
        &self,
        what: &str,
        call: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        self.bounded(what, self.engine.options.call_timeout, call)
            .await
    }

    pub(crate) async fn bounded<T>(
        &self,
        what: &str,
        bound: Duration,
        call: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        bounded(what, bound, call).await
    }

    pub(crate) fn emit(&self, event: Event) {
        self.engine.events.emit(event);
    }

    pub(crate) async fn observe(&self) -> Result<Observed> {
        self.step(Step::Observe, async {
            let groups = self
                .call("list groups", self.engine.fleet.groups(self.app))
                .await?;
            let routes = self
                .call("read routes", self.engine.router.routes(self.app))
                .await?;
            Ok(Observed { groups, routes })
        })
        .await
    }

    /// Polls the fleet until every wanted instance of `group` is healthy, an
    /// instance stops, or the health timeout passes.
    pub(crate) async fn wait_healthy(&self, group: &Group) -> Result<Vec<Instance>> {
        let options = &self.engine.options;
        let wanted = group.release.size as usize;
        let deadline = Instant::now() + options.health_timeout;
        let mut last_seen = usize::MAX;
        // polls start every `poll_interval`, however long a poll takes
        let mut ticks = tokio::time::interval(options.poll_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let instances = self
                .call(
                    "list instances",
                    self.engine.fleet.instances(self.app, &group.id),
                )
                .await?;
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
            let now = Instant::now();
            if now >= deadline {
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

    /// Detaches and destroys a group.
    pub(crate) async fn destroy_group(&self, group: &GroupId) -> Result<()> {
        self.call("detach group", self.engine.router.detach(self.app, group))
            .await?;
        self.call("destroy group", self.engine.fleet.destroy(self.app, group))
            .await?;
        self.emit(Event::GroupDestroyed {
            group: group.clone(),
        });
        Ok(())
    }
}
