//! The blue/green engine: one algorithm for every platform.
//!
//! Every entry point is an intent to one pure planner (`plan.rs`): it reads what
//! the platform showed and what the run learned, and names the next idempotent
//! step; the executor takes it and asks again. See `docs/architecture.md` for the
//! whole contract.
//!
//! # Expected flow
//! A [`Engine::deploy`] runs these steps, each announced by an [`Event`] and a
//! `tracing` span:
//!
//! 1. **validate** the request: bad input is [`Error::Invalid`] before any platform
//!    call;
//! 2. take the app's **lock** (a lease, renewed while the deployment runs, checked
//!    before every platform change);
//! 3. **observe** the platform: groups from the fleet, routes from the router;
//! 4. **prepare the image**: build or resolve it to an immutable id;
//! 5. **launch** group `v(N+1)`, or adopt the newest group when it runs the same
//!    release (an earlier run of this deployment was interrupted);
//! 6. **wait healthy**: every instance healthy, within `health_timeout`;
//! 7. **attach** it to the router without traffic, then **verify**: the user's
//!    checks against the new group alone, then the router's own report that every
//!    attached member is healthy;
//! 8. **promote**: one atomic switch (blue/green) or weighted steps, each gated on
//!    the router's readiness, confirmed, baked and analysed (canary, where the
//!    router weighs), against fixed limits and against the previous group;
//! 9. **confirm** at the router that the new group serves all traffic;
//! 10. **bake** after the switch when [`Strategy::bake_after`] is set: the previous
//!     group stays warm, and a breach switches traffic back at once;
//! 11. **drain** the groups that lose traffic and **retire**: keep the last `keep`
//!     groups warm, destroy older ones, remove images beyond retention.
//!
//! [`Engine::prepare`] runs 1 to 7 and [`Engine::promote`] 2, 3 and 7 (the router's
//! readiness) to 11, for a manual promotion.
//!
//! # Guarantees
//! - A failure before the bake after the switch ends is reverted on its own:
//!   traffic returns to the table the operation started from (or to the previous
//!   group, after the switch), the new group is destroyed (kept with
//!   [`EngineOptions::keep_failed`]), and the error is an [`Error::Step`] naming the
//!   step and the cause, with `rolled_back` telling whether the revert worked.
//! - Traffic only moves to a group, and only grows on it, when the fleet reports
//!   its instances healthy and the router reports every attached member healthy.
//! - Only the holder of the app's lease changes the platform; an operation that
//!   lost its lease makes no further change, its revert included, and ends with
//!   [`Error::Locked`] and `rolled_back == false`.
//! - [`Engine::rollback`] walks the release history strictly backwards, whatever
//!   `keep` is.
//! - Only resources carrying bluegreen's labels are changed or destroyed.
//! - Running the same deployment again after an interruption converges: the same
//!   release's group is adopted and finished, or found live and left as it is.
//! - Every wait is bounded by [`EngineOptions`], with an [`Error::Timeout`] that
//!   says what was awaited.
//!
//! # Assumptions
//! - Providers keep their trait's `# Behavior` contract: idempotent launch and
//!   destroy, atomic route changes, labels given back unchanged. The testkit's
//!   conformance suite checks it.
//! - All deployments of an app share one [`Lock`]; the default, this process's
//!   [`MemoryLock`], excludes deployments in one process only. A provider's
//!   [`Parts`] carry a lock that excludes every deployer of its platform.
//! - A lock's lease lasts at least as long as the engine counts it on its own clock.
//!
//! # Caveats
//! - A dropped deployment future behaves like a dead process: it stops renewing
//!   the lock, whose lease then expires; run the deployment again to converge.
//! - A failure in the drain or the retirement leaves the new group serving and is
//!   reported with `rolled_back == false`; running again finishes the retirement.
//! - [`Engine::rollback`] is relative: run again after its switch, it goes one more
//!   release back. [`Engine::rollback_to`] names the image and is safe to rerun.

mod execute;
mod held_lock;
mod options;
mod plan;
mod report;
mod request;
mod retire;
mod rollback;
mod run;
mod together;

use std::sync::Arc;

use tokio::time::Instant;

pub use options::EngineOptions;
pub use report::{DeployReport, GroupStatus, Paused, Prepared, RollbackReport, Status};
pub use request::{CanaryStep, DeployRequest, Strategy};
pub use rollback::RollbackRequest;
pub use together::{SwitchAll, MAX_APPS_TOGETHER};

use execute::{Lifecycle, Outcome};
use held_lock::HeldLock;
use plan::Intent;
use run::Run;

use crate::app::App;
use crate::checked_router::CheckedRouter;
use crate::error::{Error, Result};
use crate::event::{Event, EventContext, EventSink, Operation, Step};
use crate::fleet::Fleet;
use crate::group::{DeploymentId, GroupId};
use crate::image::{Image, ImageId};
use crate::lock::{Lock, LockHolder, MemoryLock};
use crate::parts::Parts;
use crate::retry::{Retry, RetryOptions};
use crate::router::Router;

/// Deploys apps with an [`Image`], a [`Fleet`] and a [`Router`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), bluegreen_core::Error> {
/// use bluegreen_core::{App, DeployRequest, Engine, ImageSource};
/// use bluegreen_testkit::MemoryPlatform;
///
/// let platform = MemoryPlatform::new();
/// let engine = Engine::new(platform.image(), platform.fleet(), platform.router());
/// let app = App::new("web", "production")?;
///
/// let v1 = engine.deploy(&DeployRequest::new(app.clone(), ImageSource::Reference("web:1".into())).size(3)).await?;
/// let v2 = engine.deploy(&DeployRequest::new(app.clone(), ImageSource::Reference("web:2".into())).size(3)).await?;
/// assert_eq!(v2.previous, Some(v1.live.clone()));
/// assert_eq!(v2.kept_warm, vec![v1.live.clone()]);
///
/// let back = engine.rollback(&app).await?;
/// assert_eq!(back.to, v1.live);
/// # Ok(())
/// # }
/// ```
pub struct Engine {
    image: Arc<dyn Image>,
    fleet: Arc<dyn Fleet>,
    router: Arc<dyn Router>,
    unwrapped: (Arc<dyn Image>, Arc<dyn Fleet>, Arc<dyn Router>),
    lock: Arc<dyn Lock>,
    options: EngineOptions,
    events: EventSink,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// An engine over three providers, with default options, default retries
    /// ([`RetryOptions::default`]) and this process's [`MemoryLock`]
    /// ([`MemoryLock::process`]): it excludes the deployments of every engine in this
    /// process, and nothing outside it. Deployers on several machines need the
    /// provider's own lock: [`Engine::from_parts`], or [`Engine::with_lock`].
    pub fn new(
        image: impl Image + 'static,
        fleet: impl Fleet + 'static,
        router: impl Router + 'static,
    ) -> Self {
        Engine::from_arcs(Arc::new(image), Arc::new(fleet), Arc::new(router))
    }

    /// An engine over a provider's [`Parts`], with their lock.
    pub fn from_parts(parts: Parts) -> Self {
        Engine::from_arcs(parts.image, parts.fleet, parts.router).with_lock(parts.lock)
    }

    /// An engine over shared providers, with this process's [`MemoryLock`] (see
    /// [`Engine::new`]).
    pub fn from_arcs(
        image: Arc<dyn Image>,
        fleet: Arc<dyn Fleet>,
        router: Arc<dyn Router>,
    ) -> Self {
        Engine {
            image: image.clone(),
            fleet: fleet.clone(),
            router: router.clone(),
            unwrapped: (image, fleet, router),
            lock: MemoryLock::process(),
            options: EngineOptions::default(),
            events: EventSink::none(),
        }
        .with_retry(RetryOptions::default())
    }

    /// Wraps the providers in the [`Retry`] layer with `options`
    /// ([`RetryOptions::none`] turns retries off). The router is also wrapped in
    /// [`CheckedRouter`], which refuses a call that breaks the trait's rules before
    /// it reaches the platform.
    pub fn with_retry(mut self, options: RetryOptions) -> Self {
        let (image, fleet, router) = self.unwrapped.clone();
        self.image = Arc::new(Retry::new(image, options.clone()));
        self.fleet = Arc::new(Retry::new(fleet, options.clone()));
        self.router = Arc::new(CheckedRouter::new(Retry::new(router, options)));
        self
    }

    /// Sets the options.
    pub fn with_options(mut self, options: EngineOptions) -> Self {
        self.options = options;
        self
    }

    /// Sends events to `events`.
    pub fn with_events(mut self, events: EventSink) -> Self {
        self.events = events;
        self
    }

    /// Uses `lock` instead of the one the engine has, so that engines sharing it
    /// exclude each other.
    pub fn with_lock(mut self, lock: Arc<dyn Lock>) -> Self {
        self.lock = lock;
        self
    }

    /// The options.
    pub fn options(&self) -> &EngineOptions {
        &self.options
    }

    /// Deploys: prepares a new group and promotes it (see the module docs for the
    /// steps and guarantees). Runs the release's task and calls the request's
    /// hooks at their stages; a hook that pauses ends the call with
    /// [`DeployReport::paused`] set (see [`Engine::resume`]).
    pub async fn deploy(&self, request: &DeployRequest) -> Result<DeployReport> {
        self.deploy_or_resume(request, Operation::Deploy, false)
            .await
    }

    /// Goes on with a deployment a hook paused ([`Decision::Pause`](crate::Decision::Pause)),
    /// from this program or another one: the same request as the deployment's,
    /// planned again from the platform's state like any rerun, with the first
    /// pause it meets (the stage it stopped at, reached again) taken as answered.
    /// The hooks of that stage are called again with
    /// [`HookContext::resumed`](crate::HookContext::resumed) set and may still fail
    /// the deployment; later stages pause as usual.
    ///
    /// A deployment that did not pause just runs (as [`Engine::deploy`] would, but
    /// passing one pause): resuming a finished deployment changes nothing.
    pub async fn resume(&self, request: &DeployRequest) -> Result<DeployReport> {
        self.deploy_or_resume(request, Operation::Resume, true)
            .await
    }

    async fn deploy_or_resume(
        &self,
        request: &DeployRequest,
        operation: Operation,
        resume: bool,
    ) -> Result<DeployReport> {
        let started = Instant::now();
        let run = self
            .start(&request.app, operation, || self.validate(request))
            .await?;
        let out = async {
            let observed = run.observe().await?;
            let image = run.prepare_image(request).await?;
            let intent = Intent::Deploy {
                release: request.release(image.id.clone()),
                stop_before_traffic: false,
            };
            let lifecycle = Lifecycle {
                hooks: &request.hooks,
                resume,
            };
            let outcome = run
                .drive_with(
                    &intent,
                    &request.strategy,
                    &request.verify,
                    lifecycle,
                    observed,
                )
                .await?;
            Ok(report(&request.app, outcome, started))
        }
        .await;
        self.finish(run, out).await
    }

    /// Runs steps 1 to 7 only: the new group ends launched, healthy, verified and
    /// attached without traffic, ready for [`Engine::promote`]. A failure reverts
    /// as in [`Engine::deploy`]. A release that already has all the traffic is
    /// [`Error::Conflict`].
    pub async fn prepare(&self, request: &DeployRequest) -> Result<Prepared> {
        let run = self
            .start(&request.app, Operation::Prepare, || self.validate(request))
            .await?;
        let out = async {
            let observed = run.observe().await?;
            let image = run.prepare_image(request).await?;
            let release = request.release(image.id.clone());
            if let Some(g) = observed.resumable(&release.id()) {
                if observed.routes == crate::RouteTable::single(g.id.clone()) {
                    return Err(
                        Error::conflict(format!("{} already serves this release", g.id))
                            .at(Step::Launch, true),
                    );
                }
            }
            let intent = Intent::Deploy {
                release,
                stop_before_traffic: true,
            };
            let lifecycle = Lifecycle {
                hooks: &request.hooks,
                resume: false,
            };
            let outcome = run
                .drive_with(
                    &intent,
                    &request.strategy,
                    &request.verify,
                    lifecycle,
                    observed,
                )
                .await?;
            if let Some(p) = &outcome.paused {
                return Err(Error::conflict(format!(
                    "hook {} paused the preparation at {}: {} (prepare does not pause; use deploy and resume)",
                    p.hook, p.stage, p.reason
                ))
                .at(Step::Hook, false));
            }
            let progress = outcome.progress;
            Ok(Prepared {
                group: outcome.target.group,
                image,
                instances: progress.healthy.unwrap_or_default(),
                preview: progress.attachment.and_then(|a| a.preview),
                adopted: outcome.target.adopted,
            })
        }
        .await;
        self.finish(run, out).await
    }

    /// Promotes a prepared group (steps 2, 3, the router's readiness of 7, and 8 to
    /// 11 of the module docs): checks that the router reports
    /// every member healthy, shifts traffic by `strategy` (with its analysis and
    /// its bake after the switch, as [`Engine::deploy`] does), confirms, drains and
    /// retires. A failure before the bake ends returns traffic to where it was and
    /// destroys the group. An unknown group is [`Error::NotFound`] before any
    /// change.
    pub async fn promote(
        &self,
        app: &App,
        group: &GroupId,
        strategy: &Strategy,
    ) -> Result<DeployReport> {
        let started = Instant::now();
        let run = self
            .start(app, Operation::Promote, || {
                self.validate_options()?;
                validate_group_id(app, group)?;
                strategy.validate()
            })
            .await?;
        let out = async {
            let observed = run.observe().await?;
            let intent = Intent::Promote {
                group: group.clone(),
            };
            let outcome = run.drive(&intent, strategy, &[], observed).await?;
            Ok(report(app, outcome, started))
        }
        .await;
        self.finish(run, out).await
    }

    /// The app's groups with their instances' health, and its routes. Takes no lock,
    /// changes nothing, and bounds each call by `call_timeout`.
    pub async fn status(&self, app: &App) -> Result<Status> {
        let bound = self.options.call_timeout;
        let mut groups = run::bounded("list groups", bound, self.fleet.groups(app)).await?;
        let routes = run::bounded("read routes", bound, self.router.routes(app)).await?;
        groups.sort_by_key(|g| std::cmp::Reverse(g.generation));
        let mut out = Vec::with_capacity(groups.len());
        for group in groups {
            let instances = run::bounded(
                "list instances",
                bound,
                self.fleet.instances(app, &group.id),
            )
            .await?;
            out.push(GroupStatus {
                weight: routes.weight(&group.id),
                group,
                instances,
            });
        }
        Ok(Status {
            app: app.clone(),
            routes,
            groups: out,
        })
    }

    fn validate_options(&self) -> Result<()> {
        self.options.validate()?;
        if self.options.warm_size.is_some() {
            let fleet = self.fleet.capabilities();
            if !fleet.scaling || !fleet.warm_groups || fleet.launch_is_switch {
                return Err(Error::invalid(
                    "options.warm_size",
                    "this fleet cannot scale a warm group (it does not declare \
                     FleetCapabilities::scaling, or keeps no warm group)",
                ));
            }
        }
        Ok(())
    }

    fn validate(&self, request: &DeployRequest) -> Result<()> {
        self.validate_options()?;
        request.validate()?;
        if request.task.is_some() && !self.fleet.capabilities().tasks {
            return Err(Error::invalid(
                "task",
                "this fleet cannot run release tasks (it does not declare FleetCapabilities::tasks)",
            ));
        }
        // what the fleet reads of the release and whether the source can run, before
        // any image is prepared
        let release = request.release(ImageId::new("(not prepared yet)"));
        self.fleet.check_release(&release)?;
        self.image.check_source(&request.source, &release)
    }

    /// Announces the operation, validates its input (no platform call) and takes the
    /// app's lock.
    async fn start<'a>(
        &'a self,
        app: &'a App,
        operation: Operation,
        validate: impl FnOnce() -> Result<()>,
    ) -> Result<Run<'a>> {
        let deployment = DeploymentId::random();
        let events = self.events.scoped(EventContext {
            app: app.clone(),
            deployment: deployment.clone(),
            operation,
        });
        events.emit(Event::Started {
            app: app.clone(),
            deployment: deployment.clone(),
            operation,
        });
        events.emit(Event::StepStarted {
            step: Step::Validate,
        });
        let started = Instant::now();
        validate().inspect_err(|e| events.emit(Event::failed(e)))?;
        events.emit(Event::StepFinished {
            step: Step::Validate,
            elapsed: started.elapsed(),
        });
        events.emit(Event::StepStarted { step: Step::Lock });
        let started = Instant::now();
        let lock = HeldLock::acquire(
            self.lock.clone(),
            app,
            LockHolder::new(deployment.to_string()),
            self.options.lock_lease,
            self.options.lock_wait,
        )
        .await
        .inspect_err(|e| events.emit(Event::failed(e)))?;
        tracing::debug!(%app, token = %lock.token(), "deployment lock taken");
        events.emit(Event::StepFinished {
            step: Step::Lock,
            elapsed: started.elapsed(),
        });
        Ok(Run {
            engine: self,
            app,
            deployment,
            lock,
            events,
        })
    }

    async fn finish<T: Finished>(&self, run: Run<'_>, out: Result<T>) -> Result<T> {
        let events = run.events.clone();
        run.lock.release().await;
        match &out {
            Ok(done) => events.emit(Event::Finished {
                group: done.live().clone(),
                elapsed: done.elapsed(),
            }),
            Err(e) => events.emit(Event::failed(e)),
        }
        out
    }
}

/// What an operation ends with, for the `Finished` event.
trait Finished {
    fn live(&self) -> &GroupId;
    fn elapsed(&self) -> std::time::Duration;
}

impl Finished for DeployReport {
    fn live(&self) -> &GroupId {
        &self.live
    }
    fn elapsed(&self) -> std::time::Duration {
        self.elapsed
    }
}

impl Finished for RollbackReport {
    fn live(&self) -> &GroupId {
        &self.to
    }
    fn elapsed(&self) -> std::time::Duration {
        self.elapsed
    }
}

impl Finished for Prepared {
    fn live(&self) -> &GroupId {
        &self.group.id
    }
    fn elapsed(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

fn report(app: &App, outcome: Outcome, started: Instant) -> DeployReport {
    let retired = outcome.retired.unwrap_or_default();
    let unchanged = outcome.target.already_live && outcome.paused.is_none();
    DeployReport {
        app: app.clone(),
        live: outcome.target.group.id,
        paused: outcome.paused,
        previous: if unchanged {
            None
        } else {
            outcome.target.baseline.primary().cloned()
        },
        unchanged,
        kept_warm: retired.kept_warm,
        destroyed: retired.destroyed,
        images_removed: retired.images_removed,
        elapsed: started.elapsed(),
        switch_time: outcome.switch_time,
    }
}

/// A group id of `app` is `app-environment-vNNN`.
fn validate_group_id(app: &App, group: &GroupId) -> Result<()> {
    let prefix = format!("{}-v", app.slug());
    let ok = group
        .as_str()
        .strip_prefix(&prefix)
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    if !ok {
        return Err(Error::invalid(
            "group",
            format!("`{group}` is not a group of {app} (`{prefix}NNN`)"),
        ));
    }
    Ok(())
}
