//! Typed events for every step of a deployment, for progress bars and logs.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::app::App;
use crate::group::{DeploymentId, GroupId};
use crate::image::{ImageId, ImageRef};
use crate::route::RouteTable;

/// The steps of a deployment, in order.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Step {
    /// Check the request; no platform call.
    Validate,
    /// Take the app's deployment lock.
    Lock,
    /// Read the platform's groups and routes.
    Observe,
    /// Build or resolve the image.
    PrepareImage,
    /// Run the release's task ([`ReleaseTask`](crate::ReleaseTask)), before launch or
    /// once the new group is healthy.
    Task,
    /// Call a lifecycle hook ([`Hook`](crate::Hook)).
    Hook,
    /// Launch the new group.
    Launch,
    /// Wait until every instance of the new group is healthy.
    WaitHealthy,
    /// Attach the new group to the router, without traffic.
    Attach,
    /// Run the user's checks against the new group alone.
    Verify,
    /// Shift traffic to the new group, step by step for a canary, each step baked
    /// and analysed, and each weight increase gated on the router reporting every
    /// member of the group healthy.
    Promote,
    /// Confirm at the router that the new group serves.
    Confirm,
    /// Watch the new group after the final switch, the previous one kept warm
    /// ([`Strategy::bake_after`](crate::Strategy::bake_after)).
    Bake,
    /// Let requests in flight on old groups finish.
    Drain,
    /// Destroy groups beyond `keep` and images beyond retention.
    Retire,
    /// Undo a failed operation on its own: traffic back to where it was, the new
    /// group removed. (The user's [`Engine::rollback`](crate::Engine::rollback) is
    /// an operation, not this step.)
    Revert,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Validate => "validate",
            Step::Lock => "lock",
            Step::Observe => "observe",
            Step::PrepareImage => "prepare image",
            Step::Task => "task",
            Step::Hook => "hook",
            Step::Launch => "launch",
            Step::WaitHealthy => "wait healthy",
            Step::Attach => "attach",
            Step::Verify => "verify",
            Step::Promote => "promote",
            Step::Confirm => "confirm",
            Step::Bake => "bake",
            Step::Drain => "drain",
            Step::Retire => "retire",
            Step::Revert => "revert",
        })
    }
}

/// Which entry point of the engine an operation is.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    /// [`Engine::deploy`](crate::Engine::deploy).
    Deploy,
    /// [`Engine::prepare`](crate::Engine::prepare).
    Prepare,
    /// [`Engine::promote`](crate::Engine::promote).
    Promote,
    /// [`Engine::rollback`](crate::Engine::rollback).
    Rollback,
    /// [`Engine::rollback_to`](crate::Engine::rollback_to).
    RollbackTo,
    /// [`Engine::resume`](crate::Engine::resume).
    Resume,
    /// [`Engine::deploy_all`](crate::Engine::deploy_all).
    DeployAll,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operation::Deploy => "deploy",
            Operation::Prepare => "prepare",
            Operation::Promote => "promote",
            Operation::Rollback => "rollback",
            Operation::RollbackTo => "rollback to",
            Operation::Resume => "resume",
            Operation::DeployAll => "deploy all",
        })
    }
}

/// Which operation an event belongs to: given with every event of an operation to
/// sinks made with [`EventSink::with_context`], so that one sink can follow
/// concurrent deployments.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventContext {
    /// The app.
    pub app: App,
    /// The operation's id (a deployment id, also for rollbacks).
    pub deployment: DeploymentId,
    /// The entry point.
    pub operation: Operation,
}

/// What happened, as it happens.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A deployment (or a rollback) began.
    Started {
        /// The app.
        app: App,
        /// The deployment's id.
        deployment: DeploymentId,
        /// The entry point.
        operation: Operation,
    },
    /// A step began.
    StepStarted {
        /// The step.
        step: Step,
    },
    /// A step ended well.
    StepFinished {
        /// The step.
        step: Step,
        /// How long it took.
        elapsed: Duration,
    },
    /// A line of build output from the image provider.
    BuildOutput {
        /// The line.
        line: String,
    },
    /// The image is ready.
    ImageReady {
        /// The image.
        image: ImageRef,
    },
    /// A new group was launched.
    GroupLaunched {
        /// The group.
        group: GroupId,
        /// Its size.
        size: u32,
    },
    /// A group left by an earlier, interrupted run of the same release was adopted.
    GroupAdopted {
        /// The group.
        group: GroupId,
    },
    /// Progress while waiting for health.
    Health {
        /// The group.
        group: GroupId,
        /// Healthy instances.
        healthy: usize,
        /// Instances wanted.
        wanted: usize,
    },
    /// A user check passed.
    CheckPassed {
        /// The check's name.
        check: String,
        /// The group checked.
        group: GroupId,
    },
    /// The route table changed.
    TrafficShifted {
        /// The new table.
        routes: RouteTable,
    },
    /// Waiting after a canary step before the next one.
    Baking {
        /// The new group's weight.
        weight: u8,
        /// How long.
        duration: Duration,
    },
    /// The engine changed the requested strategy to fit the router.
    StrategyAdapted {
        /// Why.
        reason: String,
    },
    /// Waiting for requests in flight on old groups.
    Draining {
        /// How long.
        duration: Duration,
    },
    /// An older group stays warm for instant rollback.
    GroupKeptWarm {
        /// The group.
        group: GroupId,
    },
    /// A group kept warm was scaled in to `size` instances
    /// ([`EngineOptions::warm_size`](crate::EngineOptions::warm_size)).
    GroupScaledIn {
        /// The group.
        group: GroupId,
        /// The instances it keeps.
        size: u32,
    },
    /// A warm group was scaled back to its release's size before a rollback moves
    /// traffic to it; the rollback waits until every instance is healthy.
    GroupScaledOut {
        /// The group.
        group: GroupId,
        /// Its release's size.
        size: u32,
    },
    /// A group was destroyed.
    GroupDestroyed {
        /// The group.
        group: GroupId,
    },
    /// An image was removed by retention.
    ImageRemoved {
        /// The image.
        image: ImageId,
    },
    /// The router reported the new group's members before a move to `weight`
    /// percent; the move happens only when all are healthy.
    Ready {
        /// The group.
        group: GroupId,
        /// Members the router considers healthy.
        healthy: usize,
        /// Members attached.
        total: usize,
        /// The weight the group is about to get.
        weight: u8,
    },
    /// The bake after the final switch began: the previous group stays warm.
    Watching {
        /// The new group.
        group: GroupId,
        /// How long.
        duration: Duration,
    },
    /// A failure is being undone on its own ([`Step::Revert`]).
    Reverting {
        /// The step that failed.
        step: Step,
        /// The cause.
        reason: String,
    },
    /// The undo restored this table.
    Reverted {
        /// The restored table.
        routes: RouteTable,
    },
    /// The release task was started (or found started by an earlier run).
    TaskStarted {
        /// The group the task belongs to.
        group: GroupId,
        /// Its command.
        command: Vec<String>,
    },
    /// A line the release task printed.
    TaskOutput {
        /// The group the task belongs to.
        group: GroupId,
        /// The line.
        line: String,
    },
    /// The release task exited 0.
    TaskSucceeded {
        /// The group the task belongs to.
        group: GroupId,
    },
    /// A hook answered.
    HookCalled {
        /// The stage.
        stage: crate::Stage,
        /// The hook's name.
        hook: String,
        /// What it decided, as text (`continue`, `pause: …`, `fail: …`).
        decision: String,
    },
    /// A hook paused the deployment: it stops here until
    /// [`Engine::resume`](crate::Engine::resume).
    Paused {
        /// The stage.
        stage: crate::Stage,
        /// The hook's name.
        hook: String,
        /// Why.
        reason: String,
    },
    /// The deployment ended with this group serving all traffic (or, when it
    /// paused, the group it goes to).
    Finished {
        /// The live group.
        group: GroupId,
        /// How long the whole deployment took.
        elapsed: Duration,
    },
    /// The deployment ended with an error.
    Failed {
        /// The error, as text.
        error: String,
        /// The error's kind.
        kind: crate::ErrorKind,
        /// The step that failed, when one did.
        step: Option<Step>,
        /// Whether the platform was put back as it was ([`Error::rolled_back`](crate::Error::rolled_back)).
        reverted: bool,
    },
}

impl Event {
    /// The `Failed` event of `error`.
    pub(crate) fn failed(error: &crate::Error) -> Event {
        Event::Failed {
            error: error.to_string(),
            kind: error.kind(),
            step: error.step(),
            reverted: error.rolled_back(),
        }
    }
}

/// One line for people: what a progress log prints.
///
/// ```
/// use bluegreen_core::{Event, GroupId};
/// let e = Event::GroupLaunched { group: GroupId::new("web-production-v002"), size: 3 };
/// assert_eq!(e.to_string(), "launched web-production-v002 (3 instances)");
/// ```
impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Started {
                app,
                deployment,
                operation,
            } => write!(f, "{operation} {app} ({deployment})"),
            Event::StepStarted { step } => write!(f, "{step}"),
            Event::StepFinished { step, elapsed } => write!(f, "{step} done in {elapsed:?}"),
            Event::BuildOutput { line } => write!(f, "| {line}"),
            Event::ImageReady { image } => write!(f, "image {} ready ({})", image.id, image.origin),
            Event::GroupLaunched { group, size } => {
                write!(f, "launched {group} ({size} instances)")
            }
            Event::GroupAdopted { group } => {
                write!(f, "adopted {group}, left by an interrupted run")
            }
            Event::Health {
                group,
                healthy,
                wanted,
            } => write!(f, "{group}: {healthy}/{wanted} healthy"),
            Event::CheckPassed { check, group } => write!(f, "check {check} passed on {group}"),
            Event::Ready {
                group,
                healthy,
                total,
                weight,
            } => write!(
                f,
                "the router sees {healthy}/{total} of {group} healthy (before {weight}%)"
            ),
            Event::TrafficShifted { routes } => write!(f, "routes {routes}"),
            Event::Baking { weight, duration } => write!(f, "baking at {weight}% for {duration:?}"),
            Event::Watching { group, duration } => {
                write!(f, "watching {group} for {duration:?} after the switch")
            }
            Event::StrategyAdapted { reason } => write!(f, "strategy adapted: {reason}"),
            Event::Draining { duration } => write!(f, "draining for {duration:?}"),
            Event::GroupKeptWarm { group } => write!(f, "{group} kept warm"),
            Event::GroupScaledIn { group, size } => {
                write!(f, "{group} scaled in to {size} instances")
            }
            Event::GroupScaledOut { group, size } => {
                write!(f, "{group} scaled back to {size} instances")
            }
            Event::GroupDestroyed { group } => write!(f, "{group} destroyed"),
            Event::ImageRemoved { image } => write!(f, "image {image} removed"),
            Event::Reverting { step, reason } => write!(f, "{step} failed, reverting: {reason}"),
            Event::Reverted { routes } => write!(f, "reverted to routes {routes}"),
            Event::TaskStarted { group, command } => {
                write!(f, "task of {group}: {}", command.join(" "))
            }
            Event::TaskOutput { group, line } => write!(f, "{group} task | {line}"),
            Event::TaskSucceeded { group } => write!(f, "task of {group} succeeded"),
            Event::HookCalled {
                stage,
                hook,
                decision,
            } => write!(f, "hook {hook} at {stage}: {decision}"),
            Event::Paused {
                stage,
                hook,
                reason,
            } => write!(f, "paused at {stage} by {hook}: {reason}"),
            Event::Finished { group, elapsed } => write!(f, "{group} live after {elapsed:?}"),
            Event::Failed { error, .. } => write!(f, "failed: {error}"),
        }
    }
}

type Callback = Arc<dyn Fn(&Event, Option<&EventContext>) + Send + Sync>;

/// Where events go: a callback shared by every step. Every event is also logged
/// through `tracing`, here and only here, with its app and deployment.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use bluegreen_core::{Event, EventSink};
/// let seen = Arc::new(Mutex::new(Vec::new()));
/// let sink = EventSink::new({
///     let seen = seen.clone();
///     move |e: &Event| seen.lock().unwrap().push(e.clone())
/// });
/// sink.emit(Event::BuildOutput { line: "Step 1/2".into() });
/// assert_eq!(seen.lock().unwrap().len(), 1);
/// ```
#[derive(Clone, Default)]
pub struct EventSink {
    callback: Option<Callback>,
    context: Option<Arc<EventContext>>,
}

impl EventSink {
    /// A sink that calls `callback` for every event.
    pub fn new(callback: impl Fn(&Event) + Send + Sync + 'static) -> Self {
        EventSink {
            callback: Some(Arc::new(move |e, _| callback(e))),
            context: None,
        }
    }

    /// A sink that calls `callback` for every event with the operation it belongs
    /// to (`None` for events emitted outside an engine operation): one sink can
    /// follow concurrent deployments.
    ///
    /// ```
    /// use bluegreen_core::{Event, EventContext, EventSink};
    /// let sink = EventSink::with_context(|e: &Event, ctx: Option<&EventContext>| {
    ///     if let Some(ctx) = ctx {
    ///         println!("{} {}: {e:?}", ctx.app, ctx.deployment);
    ///     }
    /// });
    /// sink.emit(Event::BuildOutput { line: "ok".into() });
    /// ```
    pub fn with_context(
        callback: impl Fn(&Event, Option<&EventContext>) + Send + Sync + 'static,
    ) -> Self {
        EventSink {
            callback: Some(Arc::new(callback)),
            context: None,
        }
    }

    /// This sink, giving `context` with every event.
    pub(crate) fn scoped(&self, context: EventContext) -> Self {
        EventSink {
            callback: self.callback.clone(),
            context: Some(Arc::new(context)),
        }
    }

    /// A sink that only logs.
    pub fn none() -> Self {
        EventSink::default()
    }

    /// A sink that sends every event to a channel.
    pub fn channel() -> (Self, tokio::sync::mpsc::UnboundedReceiver<Event>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        (
            EventSink::new(move |e| {
                let _ = tx.send(e.clone());
            }),
            rx,
        )
    }

    /// Emits an event.
    pub fn emit(&self, event: Event) {
        let (app, deployment) = match self.context.as_deref() {
            Some(c) => (c.app.to_string(), c.deployment.to_string()),
            None => (String::new(), String::new()),
        };
        match &event {
            Event::BuildOutput { line } => {
                tracing::debug!(target: "bluegreen::build", %app, %deployment, "{line}")
            }
            Event::Health { .. } => tracing::debug!(%app, %deployment, ?event),
            Event::Reverting { .. } | Event::Failed { .. } => {
                tracing::warn!(%app, %deployment, ?event)
            }
            _ => tracing::info!(%app, %deployment, ?event),
        }
        if let Some(cb) = &self.callback {
            cb(&event, self.context.as_deref());
        }
    }
}

impl fmt::Debug for EventSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventSink")
            .field("callback", &self.callback.is_some())
            .finish()
    }
}
