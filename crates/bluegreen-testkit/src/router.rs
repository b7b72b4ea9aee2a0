//! The in-memory [`Router`] provider.

use async_trait::async_trait;
use bluegreen_core::{
    App, Attachment, Capabilities, Error, GroupId, Instance, Result, RouteTable, Router, Serving,
};

use crate::fault::{Behaviour, Op};
use crate::fleet::health_of;
use crate::platform::MemoryPlatform;

/// The router of the [`MemoryPlatform`]: it sees its members' health as the
/// platform has it (like a router's own health checks) and records every route
/// table it is given ([`MemoryPlatform::route_history`]).
#[derive(Clone)]
pub struct MemoryRouter {
    pub(crate) platform: MemoryPlatform,
}

#[async_trait]
impl Router for MemoryRouter {
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
            .with_weighted_routing(!self.platform.state().unweighted)
            .with_holds_requests(true)
            .with_preview(true)
    }

    async fn attach(
        &self,
        app: &App,
        group: &GroupId,
        instances: &[Instance],
    ) -> Result<Attachment> {
        self.platform.call(Op::Attach).await?;
        if let Some(i) = instances.iter().find(|i| i.address.is_none()) {
            return Err(Error::invalid(
                format!("instances.{}", i.id),
                "has no address to route to",
            ));
        }
        let mut state = self.platform.state();
        state
            .routers
            .entry(app.clone())
            .or_default()
            .attached
            .insert(group.clone(), instances.to_vec());
        Ok(Attachment::with_preview(format!("mem://preview/{group}")))
    }

    async fn detach(&self, app: &App, group: &GroupId) -> Result<()> {
        self.platform.call(Op::Detach).await?;
        let mut state = self.platform.state();
        let Some(routes) = state.routers.get_mut(app) else {
            return Ok(());
        };
        if routes.table.weight(group) > 0 {
            return Err(Error::conflict(format!(
                "{group} still has {}% of {app}'s traffic",
                routes.table.weight(group)
            )));
        }
        routes.attached.remove(group);
        Ok(())
    }

    async fn routes(&self, app: &App) -> Result<RouteTable> {
        self.platform.call(Op::Routes).await?;
        let state = self.platform.state();
        Ok(state
            .routers
            .get(app)
            .map(|r| r.table.clone())
            .unwrap_or_default())
    }

    async fn set_routes(&self, app: &App, table: &RouteTable) -> Result<()> {
        self.platform.call(Op::SetRoutes).await?;
        table.validate()?;
        let mut state = self.platform.state();
        if state.unweighted && table.groups().count() > 1 {
            return Err(Error::not_supported("weighted routing on this router"));
        }
        let routes = state.routers.entry(app.clone()).or_default();
        if let Some(g) = table.groups().find(|g| !routes.attached.contains_key(*g)) {
            return Err(Error::not_found(format!(
                "group {g} at the router of {app}"
            )));
        }
        if routes.table != *table {
            routes.table = table.clone();
            state.history.push((app.clone(), table.clone()));
        }
        Ok(())
    }

    async fn serving(&self, app: &App, group: &GroupId) -> Result<Serving> {
        self.platform.call(Op::Serving).await?;
        let state = self.platform.state();
        let routes = state.routers.get(app);
        let members = routes
            .and_then(|r| r.attached.get(group))
            .ok_or_else(|| Error::not_found(format!("group {group} at the router of {app}")))?;
        let weight = routes.map(|r| r.table.weight(group)).unwrap_or(0);
        let stored = state
            .groups
            .iter()
            .find(|g| &g.id == group && bluegreen_core::labels::is_owned_by(&g.labels, app));
        let mut healthy = 0;
        let mut error_rate = 0.0;
        for member in members {
            let instance =
                stored.and_then(|g| g.instances.iter().find(|i| i.id == member.id.as_str()));
            if let Some(i) = instance {
                if health_of(i, state.boot_time).is_healthy() {
                    healthy += 1;
                }
                if let Behaviour::ErrorRate(r) = i.behaviour {
                    error_rate = r;
                }
            }
        }
        // a synthetic traffic count: 10 requests per percent of weight
        let requests = u64::from(weight) * 10;
        let errors = (requests as f64 * error_rate).round() as u64;
        Ok(Serving::new(healthy, members.len()).with_counts(requests, errors))
    }
}
