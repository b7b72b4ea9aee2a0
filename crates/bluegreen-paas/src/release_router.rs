//! [`ReleaseRouter`]: the router of release mode, the group whose release the one
//! long-lived app serves.

use std::collections::BTreeMap;

use async_trait::async_trait;
use bluegreen_core::{
    App, Attachment, Error, Group, GroupId, Instance, Result, RouteTable, Router,
    RouterCapabilities, Serving,
};

use crate::api;
use crate::release_fleet::{attach_key, ReleaseFleet, State};

/// The router of a [`ReleaseFleet`]: the route table is the group it last switched
/// to (`BLUEGREEN_ROUTED` in the control app), or empty while the app is in
/// maintenance mode. A release launched since is current on the platform (and
/// serves once its dynos boot) but is not in the table until the engine switches to
/// it; an app without the mark has the group of its current release.
///
/// [`Router::set_routes`] to a group marks it routed, makes its release current
/// again when it is not (the platform's rollback: `POST /apps/{app}/releases` with
/// the release id), scales the process type to the group's size and ends
/// maintenance mode; the empty table turns maintenance mode on.
/// [`Router::serving`] counts the dynos of the group's release that the platform
/// reports `up`, whichever release is current. Attachments are marks in the control app
/// (`BLUEGREEN_ATTACHED_<group>`), which has no dynos, so that marking restarts
/// nothing. No weights, no preview: one app serves one release.
#[derive(Clone, Debug)]
pub struct ReleaseRouter {
    pub(crate) fleet: ReleaseFleet,
}

impl ReleaseRouter {
    async fn attached_state(&self, app: &App, group: &GroupId) -> Result<(State, Group)> {
        let missing = || Error::not_found(format!("attached group {group}"));
        let state = self.fleet.state(app).await?.ok_or_else(missing)?;
        if !state.attached(group) {
            return Err(missing());
        }
        let g = self.fleet.group(&state, app, group).await?;
        Ok((state, g))
    }
}

#[async_trait]
impl Router for ReleaseRouter {
    fn capabilities(&self) -> RouterCapabilities {
        RouterCapabilities::default()
    }

    async fn attach(
        &self,
        app: &App,
        group: &GroupId,
        _instances: &[Instance],
    ) -> Result<Attachment> {
        let state = self
            .fleet
            .state(app)
            .await?
            .ok_or_else(|| Error::not_found(format!("group {group}")))?;
        state.release_of(group)?;
        if !state.attached(group) {
            let control = self.fleet.control(app).await?;
            api::patch_config(
                &self.fleet.client,
                &control,
                &BTreeMap::from([(attach_key(group), Some("1".to_owned()))]),
            )
            .await?;
        }
        Ok(Attachment::default())
    }

    async fn detach(&self, app: &App, group: &GroupId) -> Result<()> {
        let Some(state) = self.fleet.state(app).await? else {
            return Ok(());
        };
        if state.table().weight(group) > 0 {
            return Err(Error::conflict(format!(
                "{group} has the traffic: move it first"
            )));
        }
        if state.attached(group) {
            let control = self.fleet.control(app).await?;
            api::patch_config(
                &self.fleet.client,
                &control,
                &BTreeMap::from([(attach_key(group), None)]),
            )
            .await?;
        }
        Ok(())
    }

    async fn routes(&self, app: &App) -> Result<RouteTable> {
        Ok(match self.fleet.state(app).await? {
            Some(state) => state.table(),
            None => RouteTable::empty(),
        })
    }

    async fn set_routes(&self, app: &App, table: &RouteTable) -> Result<()> {
        table.validate()?;
        let groups: Vec<&GroupId> = table.groups().collect();
        if groups.len() > 1 {
            return Err(Error::not_supported(
                "weighted routes: one release of an app is current at a time",
            ));
        }
        let Some(group) = groups.first() else {
            if let Some(state) = self.fleet.state(app).await? {
                if !state.info.maintenance {
                    api::set_maintenance(&self.fleet.client, &state.name, true).await?;
                }
            }
            return Ok(());
        };
        let (state, g) = self.attached_state(app, group).await?;
        // the mark first: a switch interrupted after it reads as this table, which
        // a revert then sets back
        if state.routed().as_ref() != Some(*group) {
            self.fleet.mark_routed(app, Some(group)).await?;
        }
        if state.current_group().as_ref() != Some(*group) {
            self.fleet
                .make_current(&state, state.release_of(group)?)
                .await?;
        }
        self.fleet.scale_to(&state, &g, g.release.size).await?;
        if state.info.maintenance {
            api::set_maintenance(&self.fleet.client, &state.name, false).await?;
        }
        Ok(())
    }

    async fn serving(&self, app: &App, group: &GroupId) -> Result<Serving> {
        let (state, g) = self.attached_state(app, group).await?;
        let dynos = self.fleet.dynos_of(&state, &g).await?;
        let healthy = dynos.iter().filter(|i| i.health.is_healthy()).count();
        Ok(Serving::new(healthy, dynos.len()))
    }
}
