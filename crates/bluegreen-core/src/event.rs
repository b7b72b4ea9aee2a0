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
    /// Launch the new group.
    Launch,
    /// Wait until every instance of the new group is healthy.
    WaitHealthy,
    /// Attach the new group to the router, without traffic.
    Attach,
    /// Run the user's checks against the new group alone.
    Verify,
    /// Shift traffic to the new group.
    Promote,
    /// Confirm at the router that the new group serves.
    Confirm,
    /// Let requests in flight on old groups finish.
    Drain,
    /// Destroy groups beyond `keep` and images beyond retention.
    Retire,
    /// Restore traffic after a failure.
    Rollback,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Validate => "validate",
            Step::Lock => "lock",
            Step::Observe => "observe",
            Step::PrepareImage => "prepare image",
            Step::Launch => "launch",
            Step::WaitHealthy => "wait healthy",
            Step::Attach => "attach",
            Step::Verify => "verify",
            Step::Promote => "promote",
            Step::Confirm => "confirm",
            Step::Drain => "drain",
            Step::Retire => "retire",
            Step::Rollback => "rollback",
        })
    }
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
    /// A failure is being rolled back.
    RollingBack {
        /// The step that failed.
        step: Step,
        /// The cause.
        reason: String,
    },
    /// The rollback restored this table.
    RolledBack {
        /// The restored table.
        routes: RouteTable,
    },
    /// The deployment ended with this group serving all traffic.
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
    },
}

type Callback = Arc<dyn Fn(&Event) + Send + Sync>;

/// Where events go: a callback shared by every step. Every event is also logged
/// through `tracing`, here and only here.
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
}

impl EventSink {
    /// A sink that calls `callback` for every event.
    pub fn new(callback: impl Fn(&Event) + Send + Sync + 'static) -> Self {
        EventSink {
            callback: Some(Arc::new(callback)),
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
        match &event {
            Event::BuildOutput { line } => tracing::debug!(target: "bluegreen::build", "{line}"),
            Event::Health { .. } => tracing::debug!(?event),
            Event::RollingBack { .. } | Event::Failed { .. } => tracing::warn!(?event),
            _ => tracing::info!(?event),
        }
        if let Some(cb) = &self.callback {
            cb(&event);
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
