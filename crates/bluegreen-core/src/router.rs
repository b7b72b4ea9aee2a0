//! The [`Router`] trait: sends an app's traffic to its groups by a route table.

use std::time::Duration;

use async_trait::async_trait;

use crate::app::App;
use crate::capabilities::RouterCapabilities;
use crate::error::Result;
use crate::group::GroupId;
use crate::instance::Instance;
use crate::route::RouteTable;

/// What [`Router::attach`] gives back.
#[non_exhaustive]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attachment {
    /// An address that reaches the group alone, before it has traffic, where the
    /// router offers one ([`RouterCapabilities::preview`]).
    pub preview: Option<String>,
}

impl Attachment {
    /// An attachment with a preview address.
    pub fn with_preview(preview: impl Into<String>) -> Self {
        Attachment {
            preview: Some(preview.into()),
        }
    }
}

/// How a group is serving, as the router itself sees it (its own health checks,
/// its own counters).
#[non_exhaustive]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Serving {
    /// Members the router considers healthy.
    pub healthy: usize,
    /// Members attached.
    pub total: usize,
    /// Requests served so far, where the router counts them.
    pub requests: Option<u64>,
    /// Responses with a 5xx status so far, where the router counts them.
    pub errors: Option<u64>,
    /// The 99th percentile latency, where the router measures it.
    pub p99: Option<Duration>,
}

impl Serving {
    /// A health-only report.
    pub fn new(healthy: usize, total: usize) -> Self {
        Serving {
            healthy,
            total,
            ..Serving::default()
        }
    }

    /// Adds request counters.
    pub fn with_counts(mut self, requests: u64, errors: u64) -> Self {
        self.requests = Some(requests);
        self.errors = Some(errors);
        self
    }

    /// Adds a p99 latency.
    pub fn with_p99(mut self, p99: Duration) -> Self {
        self.p99 = Some(p99);
        self
    }
}

/// Sends an app's traffic to groups, atomically by route table.
#[async_trait]
pub trait Router: Send + Sync {
    /// What the router can do (weights, holding requests, previews).
    fn capabilities(&self) -> RouterCapabilities {
        RouterCapabilities::default()
    }

    /// Makes a group's instances known to the router, without giving it traffic.
    ///
    /// # Behavior
    /// - Idempotent: attaching again replaces the group's members with `instances`.
    /// - Instances without an address are
    ///   [`Error::Invalid`](crate::Error::Invalid) where the router needs addresses.
    async fn attach(
        &self,
        app: &App,
        group: &GroupId,
        instances: &[Instance],
    ) -> Result<Attachment>;

    /// Forgets a group.
    ///
    /// # Behavior
    /// - Idempotent: detaching a group that is not attached succeeds.
    /// - A group that still has traffic is [`Error::Conflict`](crate::Error::Conflict):
    ///   traffic is never sent to nothing.
    async fn detach(&self, app: &App, group: &GroupId) -> Result<()>;

    /// The app's current route table.
    ///
    /// # Behavior
    /// An app the router does not know has the empty table.
    async fn routes(&self, app: &App) -> Result<RouteTable>;

    /// Replaces the app's route table in one atomic change.
    ///
    /// # Behavior
    /// - Idempotent: setting the current table again changes nothing.
    /// - Every group in `table` must be attached, or the call is
    ///   [`Error::NotFound`](crate::Error::NotFound) and nothing changes.
    /// - A table with more than one group on a router without
    ///   [`RouterCapabilities::weighted_routing`] is
    ///   [`Error::NotSupported`](crate::Error::NotSupported).
    async fn set_routes(&self, app: &App, table: &RouteTable) -> Result<()>;

    /// Replaces several apps' route tables in one atomic change: no request sees a
    /// new table of one app with an old table of another.
    ///
    /// # Behavior
    /// - The rules of [`Router::set_routes`] hold for every table; when any table
    ///   breaks them, nothing changes.
    /// - An app named twice is [`Error::Invalid`](crate::Error::Invalid).
    /// - A router that cannot (the default) is
    ///   [`Error::NotSupported`](crate::Error::NotSupported); it declares
    ///   [`RouterCapabilities::multi_app_switch`] when it can.
    async fn set_routes_many(&self, tables: &[(App, RouteTable)]) -> Result<()> {
        let _ = tables;
        Err(crate::Error::NotSupported {
            what: "switching several apps at once on this router".into(),
        })
    }

    /// How an attached group is serving, as the router sees it.
    ///
    /// # Behavior
    /// A group that is not attached is [`Error::NotFound`](crate::Error::NotFound).
    async fn serving(&self, app: &App, group: &GroupId) -> Result<Serving>;
}

#[async_trait]
impl<T: Router + ?Sized> Router for std::sync::Arc<T> {
    fn capabilities(&self) -> RouterCapabilities {
        (**self).capabilities()
    }
    async fn attach(
        &self,
        app: &App,
        group: &GroupId,
        instances: &[Instance],
    ) -> Result<Attachment> {
        (**self).attach(app, group, instances).await
    }
    async fn detach(&self, app: &App, group: &GroupId) -> Result<()> {
        (**self).detach(app, group).await
    }
    async fn routes(&self, app: &App) -> Result<RouteTable> {
        (**self).routes(app).await
    }
    async fn set_routes(&self, app: &App, table: &RouteTable) -> Result<()> {
        (**self).set_routes(app, table).await
    }
    async fn set_routes_many(&self, tables: &[(App, RouteTable)]) -> Result<()> {
        (**self).set_routes_many(tables).await
    }
    async fn serving(&self, app: &App, group: &GroupId) -> Result<Serving> {
        (**self).serving(app, group).await
    }
}
