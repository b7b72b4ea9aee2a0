//! What the engine's operations return.

use std::time::Duration;

use crate::app::App;
use crate::group::{Group, GroupId};
use crate::hook::Stage;
use crate::image::{ImageId, ImageRef};
use crate::instance::Instance;
use crate::route::RouteTable;

/// A group launched, healthy, verified and attached without traffic: the result of
/// [`Engine::prepare`](crate::Engine::prepare), ready for
/// [`Engine::promote`](crate::Engine::promote).
#[non_exhaustive]
#[derive(Clone, Debug)]
pub struct Prepared {
    /// The new group.
    pub group: Group,
    /// Its image.
    pub image: ImageRef,
    /// Its instances.
    pub instances: Vec<Instance>,
    /// The router's preview address, where it gives one.
    pub preview: Option<String>,
    /// Whether the group was left by an earlier run of the same release and adopted.
    pub adopted: bool,
}

/// Where a hook paused a deployment ([`Decision::Pause`](crate::Decision::Pause)).
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paused {
    /// The stage it stopped at.
    pub stage: Stage,
    /// The hook that paused it.
    pub hook: String,
    /// The hook's reason.
    pub reason: String,
    /// The new group's share of traffic, 0 to 100.
    pub weight: u8,
}

/// A finished deployment, or one a hook paused ([`DeployReport::paused`]).
#[non_exhaustive]
#[derive(Clone, Debug)]
pub struct DeployReport {
    /// The app.
    pub app: App,
    /// The group now serving all traffic; when the deployment paused, the new group
    /// it goes to.
    pub live: GroupId,
    /// Set when a hook paused the deployment: nothing was reverted, the platform is
    /// as the pause found it, and [`Engine::resume`](crate::Engine::resume) with the
    /// same request goes on. Retirement has not happened.
    pub paused: Option<Paused>,
    /// The group that served before, if any.
    pub previous: Option<GroupId>,
    /// Whether the release was already live, so nothing moved.
    pub unchanged: bool,
    /// Earlier groups kept warm.
    pub kept_warm: Vec<GroupId>,
    /// Groups destroyed.
    pub destroyed: Vec<GroupId>,
    /// Images removed by retention.
    pub images_removed: Vec<ImageId>,
    /// How long the whole deployment took.
    pub elapsed: Duration,
    /// How long the promotion took, from the first route change to the confirmed
    /// switch.
    pub switch_time: Duration,
}

/// A finished rollback.
#[non_exhaustive]
#[derive(Clone, Debug)]
pub struct RollbackReport {
    /// The app.
    pub app: App,
    /// The group that served before the rollback.
    pub from: GroupId,
    /// The group serving now.
    pub to: GroupId,
    /// Whether `to` was launched anew because no warm group of the previous release
    /// was left.
    pub relaunched: bool,
    /// How long it took.
    pub elapsed: Duration,
}

/// One group in a [`Status`].
#[non_exhaustive]
#[derive(Clone, Debug)]
pub struct GroupStatus {
    /// The group.
    pub group: Group,
    /// Its share of traffic.
    pub weight: u8,
    /// Its instances and their health.
    pub instances: Vec<Instance>,
}

impl GroupStatus {
    /// Healthy instances.
    pub fn healthy(&self) -> usize {
        self.instances
            .iter()
            .filter(|i| i.health.is_healthy())
            .count()
    }
}

/// An app's groups, routes and health.
#[non_exhaustive]
#[derive(Clone, Debug)]
pub struct Status {
    /// The app.
    pub app: App,
    /// The router's table.
    pub routes: RouteTable,
    /// Every group, newest first.
    pub groups: Vec<GroupStatus>,
}

impl Status {
    /// The group with the most traffic.
    pub fn live(&self) -> Option<&GroupStatus> {
        let id = self.routes.primary()?;
        self.groups.iter().find(|g| &g.group.id == id)
    }
}
