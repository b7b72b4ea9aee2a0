//! Instances: one running unit of a group, with an address and a health.

use serde::{Deserialize, Serialize};

use crate::id::string_id;

string_id!(
    /// A platform's instance id: a pid-based name, a container id, `i-0abc...`, a dyno.
    InstanceId
);

/// The health of an instance as the fleet sees it.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Health {
    /// Booting, or not yet checked.
    Starting,
    /// Passing its health check.
    Healthy,
    /// Running but failing its health check.
    Unhealthy {
        /// Why, as far as the platform says.
        reason: String,
    },
    /// Exited, crashed or terminated: it will not become healthy.
    Stopped {
        /// Why, as far as the platform says.
        reason: String,
    },
}

impl Health {
    /// Whether the instance may serve traffic.
    pub fn is_healthy(&self) -> bool {
        matches!(self, Health::Healthy)
    }
}

/// One running unit: a process, a container, an EC2 instance, a dyno.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// The platform's id.
    pub id: InstanceId,
    /// Where a router reaches it (`127.0.0.1:49153`, `10.0.1.7:8080`), when it has an
    /// address yet.
    pub address: Option<String>,
    /// Its health.
    pub health: Health,
    /// How often the platform restarted it since it was launched, where the
    /// platform restarts instances (0 otherwise). A count that grows is a crash
    /// loop: the engine treats it as unhealthy while it watches a group.
    #[serde(default)]
    pub restarts: u32,
}

impl Instance {
    /// An instance.
    pub fn new(id: impl Into<InstanceId>, address: Option<String>, health: Health) -> Self {
        Instance {
            id: id.into(),
            address,
            health,
            restarts: 0,
        }
    }

    /// Sets [`Instance::restarts`].
    pub fn with_restarts(mut self, restarts: u32) -> Self {
        self.restarts = restarts;
        self
    }
}
