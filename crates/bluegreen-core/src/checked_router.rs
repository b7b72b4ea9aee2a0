//! [`CheckedRouter`]: the rules of the [`Router`] trait that do not depend on the
//! platform, enforced once for every router.

use async_trait::async_trait;

use crate::app::App;
use crate::capabilities::RouterCapabilities;
use crate::error::{Error, Result};
use crate::group::GroupId;
use crate::instance::Instance;
use crate::route::RouteTable;
use crate::router::{Attachment, Router, Serving};

/// Wraps a router so that a call breaking the trait's platform-independent rules
/// never reaches it:
///
/// - [`Router::set_routes`] with an invalid table (weights not summing to 100, a
///   zero weight) is [`Error::Invalid`] naming `routes`;
/// - a table with more than one group on a router without
///   [`RouterCapabilities::weighted_routing`] is [`Error::NotSupported`];
/// - [`Router::attach`] with an instance that has no address is [`Error::Invalid`]
///   naming `instances.<id>`.
///
/// The engine wraps every router in it; a provider's router may rely on it and
/// still keeps its own platform's rules. Everything else is passed through.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use bluegreen_core::{App, CheckedRouter, ErrorKind, GroupId, RouteTable, Router};
/// use bluegreen_testkit::MemoryPlatform;
///
/// let platform = MemoryPlatform::new();
/// platform.without_weights();
/// let router = CheckedRouter::new(platform.router());
/// let app = App::new("web", "production").unwrap();
/// let split = RouteTable::weighted([(GroupId::new("a"), 50), (GroupId::new("b"), 50)]).unwrap();
/// let e = router.set_routes(&app, &split).await.unwrap_err();
/// assert_eq!(e.kind(), ErrorKind::NotSupported);
/// assert!(platform.route_history(&app).is_empty(), "the router was never asked");
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct CheckedRouter<R> {
    inner: R,
}

impl<R: Router> CheckedRouter<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        CheckedRouter { inner }
    }

    /// The wrapped router.
    pub fn inner(&self) -> &R {
        &self.inner
    }

    fn check_table(&self, table: &RouteTable) -> Result<()> {
        table.validate()?;
        if table.groups().count() > 1 && !self.inner.capabilities().weighted_routing {
            return Err(Error::not_supported(format!(
                "a table with {} groups ({table}) on a router without weighted routing",
                table.groups().count()
            )));
        }
        Ok(())
    }
}

#[async_trait]
impl<R: Router> Router for CheckedRouter<R> {
    fn capabilities(&self) -> RouterCapabilities {
        self.inner.capabilities()
    }

    async fn attach(
        &self,
        app: &App,
        group: &GroupId,
        instances: &[Instance],
    ) -> Result<Attachment> {
        if let Some(i) = instances.iter().find(|i| i.address.is_none()) {
            return Err(Error::invalid(
                format!("instances.{}", i.id),
                "has no address to route to",
            ));
        }
        self.inner.attach(app, group, instances).await
    }

    async fn detach(&self, app: &App, group: &GroupId) -> Result<()> {
        self.inner.detach(app, group).await
    }

    async fn routes(&self, app: &App) -> Result<RouteTable> {
        self.inner.routes(app).await
    }

    async fn set_routes(&self, app: &App, table: &RouteTable) -> Result<()> {
        self.check_table(table)?;
        self.inner.set_routes(app, table).await
    }

    async fn set_routes_many(&self, tables: &[(App, RouteTable)]) -> Result<()> {
        if !self.inner.capabilities().multi_app_switch {
            return Err(Error::not_supported(
                "switching several apps at once on a router without multi_app_switch",
            ));
        }
        for (i, (app, table)) in tables.iter().enumerate() {
            if tables[..i].iter().any(|(a, _)| a == app) {
                return Err(Error::invalid(
                    format!("tables[{i}]"),
                    format!("{app} is named twice"),
                ));
            }
            self.check_table(table)?;
        }
        self.inner.set_routes_many(tables).await
    }

    async fn serving(&self, app: &App, group: &GroupId) -> Result<Serving> {
        self.inner.serving(app, group).await
    }
}
