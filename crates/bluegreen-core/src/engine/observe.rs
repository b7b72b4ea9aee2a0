//! What the engine reads from the platform before it acts.

use crate::group::{Generation, Group, GroupId};
use crate::release::ReleaseId;
use crate::route::RouteTable;

/// An app's groups (from the fleet) and routes (from the router).
#[derive(Clone, Debug)]
pub(crate) struct Observed {
    pub(crate) groups: Vec<Group>,
    pub(crate) routes: RouteTable,
}

impl Observed {
    pub(crate) fn group(&self, id: &GroupId) -> Option<&Group> {
        self.groups.iter().find(|g| &g.id == id)
    }

    /// The group with the most traffic.
    pub(crate) fn live(&self) -> Option<&Group> {
        self.routes.primary().and_then(|id| self.group(id))
    }

    pub(crate) fn next_generation(&self) -> Generation {
        self.groups
            .iter()
            .map(|g| g.generation)
            .max()
            .unwrap_or(Generation(0))
            .next()
    }

    /// The newest group, when it runs `release`: what an interrupted run of the same
    /// deployment left behind.
    pub(crate) fn resumable(&self, release: &ReleaseId) -> Option<&Group> {
        self.groups
            .iter()
            .max_by_key(|g| g.generation)
            .filter(|g| &g.release.id() == release)
    }
}
