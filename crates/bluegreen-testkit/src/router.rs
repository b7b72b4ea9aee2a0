//! The in-memory [`Router`] provider.

use async_trait::async_trait;
use bluegreen_core::{
    App, Attachment, Error, GroupId, Instance, Result, RouteTable, Router, RouterCapabilities,
    Serving,
};

use crate::fault::{Behaviour, Op};
use crate::fleet::health_of;
use crate::platform::MemoryPlatform;

/// The router of the [`MemoryPlatform`]: it sees its members' health as the
/// platform has it (like a router's own health checks) and records every route
/// table it is given ([`MemoryPlatform::route_history`]).
///
/// It works with the [`MemoryFleet`](crate::MemoryFleet) of the same platform only:
/// it reads its members' health from that platform's instances, not from the
/// instances themselves. [`Router::attach`] of an instance this platform did not
/// make (another fleet's, or another `MemoryPlatform`'s) is
/// [`Error::Invalid`](bluegreen_core::Error::Invalid) naming `instances.<id>` and
/// saying so, before anything changes, so a deployment of another fleet through it
/// fails at its attach step. To test your own fleet, pair it with a router that
/// reaches its instances (the bluegreen proxy's `EmbeddedProxy`, as
/// `examples/custom_provider.rs` does).
#[derive(Clone)]
pub struct MemoryRouter {
    pub(crate) platform: MemoryPlatform,
}

impl std::fmt::Debug for MemoryRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryRouter").finish_non_exhaustive()
    }
}

#[async_trait]
impl Router for MemoryRouter {
    fn capabilities(&self) -> RouterCapabilities {
        let (unweighted, single_app_switch) = {
            let state = self.platform.state();
            (state.unweighted, state.single_app_switch)
        };
        RouterCapabilities::default()
            .with_weighted_routing(!unweighted)
            .with_holds_requests(true)
            .with_preview(true)
            .with_multi_app_switch(!single_app_switch)
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
        if let Some(i) = instances.iter().find(|i| !made_by(&state, i.id.as_str())) {
            return Err(Error::invalid(
                format!("instances.{}", i.id),
                "is not an instance of this MemoryPlatform: MemoryRouter reads health from its \
                 own platform, so it routes only to its MemoryFleet's groups (pair another \
                 fleet with a router that reaches its instances, such as the bluegreen proxy)",
            ));
        }
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
        let mut guard = self.platform.state();
        let state = &mut *guard;
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
            account(routes, &state.groups, app, state.boot_time);
            routes.table = table.clone();
            state.history.push((app.clone(), table.clone()));
        }
        Ok(())
    }

    async fn set_routes_many(&self, tables: &[(App, RouteTable)]) -> Result<()> {
        self.platform.call(Op::SetRoutesMany).await?;
        let mut guard = self.platform.state();
        let state = &mut *guard;
        if state.single_app_switch {
            return Err(Error::not_supported(
                "switching several apps at once on this router",
            ));
        }
        // every table is checked before any changes: all or nothing
        for (i, (app, table)) in tables.iter().enumerate() {
            table.validate()?;
            if tables[..i].iter().any(|(a, _)| a == app) {
                return Err(Error::invalid(
                    format!("tables[{i}]"),
                    format!("{app} is named twice"),
                ));
            }
            if state.unweighted && table.groups().count() > 1 {
                return Err(Error::not_supported("weighted routing on this router"));
            }
            let attached = state.routers.get(app).map(|r| &r.attached);
            if let Some(g) = table
                .groups()
                .find(|g| !attached.is_some_and(|a| a.contains_key(*g)))
            {
                return Err(Error::not_found(format!(
                    "group {g} at the router of {app}"
                )));
            }
        }
        for (app, table) in tables {
            let routes = state.routers.entry(app.clone()).or_default();
            if routes.table != *table {
                account(routes, &state.groups, app, state.boot_time);
                routes.table = table.clone();
                state.history.push((app.clone(), table.clone()));
            }
        }
        Ok(())
    }

    async fn serving(&self, app: &App, group: &GroupId) -> Result<Serving> {
        self.platform.call(Op::Serving).await?;
        let mut guard = self.platform.state();
        let state = &mut *guard;
        let boot_time = state.boot_time;
        let routes = state
            .routers
            .get_mut(app)
            .ok_or_else(|| Error::not_found(format!("group {group} at the router of {app}")))?;
        account(routes, &state.groups, app, boot_time);
        let members = routes
            .attached
            .get(group)
            .ok_or_else(|| Error::not_found(format!("group {group} at the router of {app}")))?;
        let stored = state
            .groups
            .iter()
            .find(|g| &g.id == group && bluegreen_core::labels::is_owned_by(&g.labels, app));
        let by_id: std::collections::HashMap<&str, &crate::platform::StoredInstance> = stored
            .map(|g| g.instances.iter().map(|i| (i.id.as_str(), i)).collect())
            .unwrap_or_default();
        let mut healthy = 0;
        for member in members {
            if let Some(i) = by_id.get(member.id.as_str()) {
                if health_of(i, boot_time).is_healthy()
                    && i.behaviour != Behaviour::UnhealthyAtRouter
                {
                    healthy += 1;
                }
            }
        }
        let (requests, errors) = routes.served.get(group).copied().unwrap_or_default();
        Ok(Serving::new(healthy, members.len()).with_counts(requests as u64, errors as u64))
    }
}

/// Whether the platform gave out the instance id `id` (`i-` and its counter in hex),
/// now or before: a destroyed group's instance is still one of its own.
fn made_by(state: &crate::platform::State, id: &str) -> bool {
    id.strip_prefix("i-")
        .filter(|n| n.len() >= 8)
        .and_then(|n| u64::from_str_radix(n, 16).ok())
        .is_some_and(|n| n >= 1 && n <= state.next_instance)
}

/// Synthetic traffic: 1,000 requests a second per app, shared by weight since the
/// last count; a group whose instances answer with an error rate counts that
/// share as errors.
pub(crate) fn account(
    routes: &mut crate::platform::AppRoutes,
    groups: &[crate::platform::StoredGroup],
    app: &App,
    boot_time: std::time::Duration,
) {
    let now = tokio::time::Instant::now();
    let since = routes.counted_at.replace(now).unwrap_or(now);
    let seconds = now.saturating_duration_since(since).as_secs_f64();
    if seconds == 0.0 {
        return;
    }
    for (group, weight) in routes.table.iter() {
        let requests = 10.0 * f64::from(weight) * seconds;
        let stored = groups
            .iter()
            .find(|g| &g.id == group && bluegreen_core::labels::is_owned_by(&g.labels, app));
        let rate = stored
            .map(|g| {
                let live: Vec<_> = g
                    .instances
                    .iter()
                    .filter(|i| health_of(i, boot_time).is_healthy())
                    .collect();
                if live.is_empty() {
                    return 1.0;
                }
                let sum: f64 = live
                    .iter()
                    .map(|i| match i.behaviour {
                        Behaviour::ErrorRate(r) => r,
                        Behaviour::UnhealthyAtRouter => 1.0,
                        _ => 0.0,
                    })
                    .sum();
                sum / live.len() as f64
            })
            .unwrap_or(1.0);
        let entry = routes.served.entry(group.clone()).or_default();
        entry.0 += requests;
        entry.1 += requests * rate;
    }
}
