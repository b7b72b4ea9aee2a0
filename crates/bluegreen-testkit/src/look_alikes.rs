//! [`MemoryLookAlikes`]: the conformance suite's look-alike hook for the in-memory
//! platform.

use async_trait::async_trait;
use bluegreen_core::labels;
use bluegreen_core::{App, GroupId};

use crate::conformance::LookAlikes;
use crate::platform::MemoryPlatform;

/// Look-alikes on a [`MemoryPlatform`] ([`MemoryPlatform::look_alikes`]): a group
/// with the very id asked for and two instances, without bluegreen's labels
/// ([`MemoryPlatform::add_foreign_group`]).
#[derive(Clone, Debug)]
pub struct MemoryLookAlikes {
    pub(crate) platform: MemoryPlatform,
}

/// The instance ids of the groups with id `group` that carry no owner label.
fn foreign(platform: &MemoryPlatform, group: &GroupId) -> Vec<String> {
    let state = platform.state();
    state
        .groups
        .iter()
        .filter(|g| &g.id == group && !g.labels.contains_key(labels::OWNER))
        .flat_map(|g| g.instances.iter().map(|i| i.id.clone()))
        .collect()
}

#[async_trait]
impl LookAlikes for MemoryLookAlikes {
    async fn create(&self, _app: &App, group: &GroupId) -> Vec<String> {
        self.platform.add_foreign_group(group.as_str(), 2);
        foreign(&self.platform, group)
    }

    async fn existing(&self, _app: &App, group: &GroupId) -> Vec<String> {
        foreign(&self.platform, group)
    }

    async fn remove(&self, _app: &App, group: &GroupId) {
        self.platform
            .state()
            .groups
            .retain(|g| &g.id != group || g.labels.contains_key(labels::OWNER));
    }
}
