//! One operation of the engine under the app's lock: step bookkeeping, bounded
//! platform calls, and the observations the steps share.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;
use tracing::Instrument;

use super::held_lock::HeldLock;
use super::plan::Observed;
use super::Engine;
use crate::app::App;
use crate::error::{Error, Result};
use crate::event::{Event, EventSink, Step};
use crate::group::{DeploymentId, GroupId};

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
    /// The engine's sink, giving this operation's context with every event.
    pub(crate) events: EventSink,
}

impl Run<'_> {
    /// Runs one step: a check that the lease is still held (a step that changes
    /// nothing, after a long wait, must not pass as done by a deployment that lost
    /// its lock), events, a tracing span, and the step's name on any error.
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

    /// One platform call that reads, bounded by
    /// [`EngineOptions::call_timeout`](crate::EngineOptions::call_timeout).
    pub(crate) async fn call<T>(
        &self,
        what: &str,
        call: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        bounded(what, self.engine.options.call_timeout, call).await
    }

    /// One platform call that changes something: refused with [`Error::Locked`]
    /// unless this operation still holds its lease, then bounded like
    /// [`Run::call`]. Every change of every operation, its revert included, goes
    /// through here.
    pub(crate) async fn change<T>(
        &self,
        what: &str,
        call: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        self.lock.ensure()?;
        self.call(what, call).await
    }

    pub(crate) fn emit(&self, event: Event) {
        self.events.emit(event);
    }

    /// Reads the app's groups and routes.
    pub(crate) async fn observe(&self) -> Result<Observed> {
        self.step(Step::Observe, async {
            let groups = self
                .call("list groups", self.engine.fleet.groups(self.app))
                .await?;
            let routes = self
                .call("read routes", self.engine.router.routes(self.app))
                .await?;
            Ok(Observed {
                app: self.app.clone(),
                deployment: self.deployment.clone(),
                groups,
                routes,
                instances: Default::default(),
                attached: Default::default(),
                warm_scaled: self.engine.options.warm_size.is_some(),
            })
        })
        .await
    }

    /// Lists the instances of every group without all the traffic: the candidates
    /// of a rollback.
    pub(crate) async fn observe_candidates(&self, observed: &mut Observed) -> Result<()> {
        let live = observed.routes.primary().cloned();
        let ids: Vec<GroupId> = observed
            .groups
            .iter()
            .map(|g| g.id.clone())
            .filter(|id| Some(id) != live.as_ref())
            .collect();
        for id in ids {
            let instances = self
                .call("list instances", self.engine.fleet.instances(self.app, &id))
                .await
                .map_err(|e| e.at(Step::Observe, true))?;
            observed.instances.insert(id, instances);
        }
        Ok(())
    }

    /// Detaches and destroys a group.
    pub(crate) async fn destroy_group(&self, group: &GroupId) -> Result<()> {
        self.change("detach group", self.engine.router.detach(self.app, group))
            .await?;
        self.change("destroy group", self.engine.fleet.destroy(self.app, group))
            .await?;
        self.emit(Event::GroupDestroyed {
            group: group.clone(),
        });
        Ok(())
    }
}

impl Run<'_> {
    /// Builds or resolves the request's image, within `prepare_timeout`. Nothing is
    /// launched yet, so a failure here has nothing to revert.
    pub(crate) async fn prepare_image(
        &self,
        request: &super::DeployRequest,
    ) -> Result<crate::image::ImageRef> {
        let engine = self.engine;
        let image = self
            .step(Step::PrepareImage, async {
                self.lock.ensure()?;
                bounded(
                    "the image",
                    engine.options.prepare_timeout,
                    engine
                        .image
                        .prepare(self.app, &request.source, &self.events),
                )
                .await
            })
            .await
            // nothing was launched yet: the platform is as it was
            .map_err(|e| super::execute::mark(e, true))?;
        self.emit(Event::ImageReady {
            image: image.clone(),
        });
        Ok(image)
    }
}
