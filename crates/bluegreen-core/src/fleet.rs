//! The [`Fleet`] trait: launches, lists and destroys groups of instances.

use async_trait::async_trait;

use crate::app::App;
use crate::capabilities::FleetCapabilities;
use crate::error::Result;
use crate::group::{Group, GroupId};
use crate::instance::Instance;
use crate::release::Release;
use crate::task::TaskStatus;

/// Runs groups of instances on a platform.
///
/// Providers write only these primitives; waiting for health, retries and timeouts
/// live in the engine and in wrappers.
#[async_trait]
pub trait Fleet: Send + Sync {
    /// What the fleet can do: its batch size, whether older groups stay warm,
    /// whether launching is the switch.
    fn capabilities(&self) -> FleetCapabilities {
        FleetCapabilities::default()
    }

    /// Checks what the fleet reads of a release (its settings, environment names,
    /// size) before anything happens: the engine calls it while it validates a
    /// request, with a release whose image is not prepared yet.
    ///
    /// # Behavior
    /// Makes no platform call. An unknown or malformed setting is
    /// [`Error::Invalid`](crate::Error::Invalid) naming `settings.<key>`. The default
    /// accepts everything.
    fn check_release(&self, release: &Release) -> Result<()> {
        let _ = release;
        Ok(())
    }

    /// Launches `group.release.size` instances of `group`, each carrying
    /// [`Group::labels`], and returns without waiting for them to become healthy.
    ///
    /// # Behavior
    /// - Idempotent by group id: launching a group that exists with the same record
    ///   starts only the instances it lacks (none when it is complete) and succeeds.
    /// - A group id that exists with another record is
    ///   [`Error::Conflict`](crate::Error::Conflict).
    /// - An image the platform does not have is
    ///   [`Error::NotFound`](crate::Error::NotFound).
    /// - On failure, the instances already started stay labelled, so that
    ///   [`Fleet::destroy`] removes them.
    async fn launch(&self, group: &Group) -> Result<()>;

    /// The groups of `app` that carry bluegreen's labels, in any order.
    ///
    /// # Behavior
    /// An app with no group gives an empty list. Resources without bluegreen's labels
    /// are never listed, whatever their names.
    async fn groups(&self, app: &App) -> Result<Vec<Group>>;

    /// The instances of a group with their health, as the platform reports them.
    ///
    /// # Behavior
    /// A group that does not exist is [`Error::NotFound`](crate::Error::NotFound).
    async fn instances(&self, app: &App, group: &GroupId) -> Result<Vec<Instance>>;

    /// Destroys a group and all its instances, gracefully where the platform allows.
    ///
    /// # Behavior
    /// - Idempotent: destroying a missing group succeeds.
    /// - Touches only resources with bluegreen's labels for this group.
    /// - Removes the group's task ([`Fleet::start_task`]) too, stopping it when it
    ///   still runs, even when the group has no instance.
    async fn destroy(&self, app: &App, group: &GroupId) -> Result<()>;

    /// Sets how many instances `group` runs to `size` (0 allowed), and returns
    /// without waiting for new instances to become healthy. The engine scales a
    /// group kept warm in after it lost its traffic, and back to its release's size
    /// before a rollback moves traffic to it
    /// ([`EngineOptions::warm_size`](crate::EngineOptions::warm_size)).
    ///
    /// # Behavior
    /// - Idempotent: scaling to the size the group has changes nothing. Instances
    ///   beyond `size` are stopped (the platform chooses which); missing ones are
    ///   started as [`Fleet::launch`] starts them, with [`Group::labels`].
    /// - The group's record is unchanged (`release.size` stays the full size);
    ///   [`Fleet::instances`] lists the instances it runs now.
    /// - A group that does not exist is [`Error::NotFound`](crate::Error::NotFound).
    /// - The engine scales only between 1 and `release.size`; a fleet may refuse a
    ///   size above `release.size` with [`Error::Invalid`](crate::Error::Invalid)
    ///   naming `size` (an Auto Scaling group keeps its launch size as maximum).
    /// - A fleet that cannot scale (the default) is
    ///   [`Error::NotSupported`](crate::Error::NotSupported); it declares
    ///   [`FleetCapabilities::scaling`] when it can.
    async fn scale(&self, app: &App, group: &GroupId, size: u32) -> Result<()> {
        let _ = (app, group, size);
        Err(crate::Error::NotSupported {
            what: "scaling a group on this fleet".into(),
        })
    }

    /// Starts the release task of `group` (`group.release.task`): its command, run
    /// once from the group's image with the release's environment and settings,
    /// labelled with [`Group::labels`]. Returns without waiting for it to finish.
    ///
    /// # Behavior
    /// - Idempotent by group id: when a task of the group exists, running or
    ///   finished, it is left as it is and the call succeeds (a deployment run
    ///   again after a crash never runs a finished task twice).
    /// - A group whose release has no task is [`Error::Invalid`](crate::Error::Invalid)
    ///   naming `task`.
    /// - A fleet that cannot run tasks (the default) is
    ///   [`Error::NotSupported`](crate::Error::NotSupported); it declares
    ///   [`FleetCapabilities::tasks`] when it can.
    async fn start_task(&self, group: &Group) -> Result<()> {
        let _ = group;
        Err(crate::Error::NotSupported {
            what: "release tasks on this fleet".into(),
        })
    }

    /// The task of a group, as the platform keeps it.
    ///
    /// # Behavior
    /// `None` when no task was started for the group id (or it was removed with the
    /// group by [`Fleet::destroy`]). The default (a fleet without tasks) is `None`.
    async fn task(&self, app: &App, group: &GroupId) -> Result<Option<TaskStatus>> {
        let _ = (app, group);
        Ok(None)
    }
}

#[async_trait]
impl<T: Fleet + ?Sized> Fleet for std::sync::Arc<T> {
    fn capabilities(&self) -> FleetCapabilities {
        (**self).capabilities()
    }
    fn check_release(&self, release: &Release) -> Result<()> {
        (**self).check_release(release)
    }
    async fn launch(&self, group: &Group) -> Result<()> {
        (**self).launch(group).await
    }
    async fn groups(&self, app: &App) -> Result<Vec<Group>> {
        (**self).groups(app).await
    }
    async fn instances(&self, app: &App, group: &GroupId) -> Result<Vec<Instance>> {
        (**self).instances(app, group).await
    }
    async fn destroy(&self, app: &App, group: &GroupId) -> Result<()> {
        (**self).destroy(app, group).await
    }
    async fn scale(&self, app: &App, group: &GroupId, size: u32) -> Result<()> {
        (**self).scale(app, group, size).await
    }
    async fn start_task(&self, group: &Group) -> Result<()> {
        (**self).start_task(group).await
    }
    async fn task(&self, app: &App, group: &GroupId) -> Result<Option<TaskStatus>> {
        (**self).task(app, group).await
    }
}
