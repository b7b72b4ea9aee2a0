//! [`ReleaseFleet`]: one long-lived app, a group per release (release mode; its
//! router is [`ReleaseRouter`](crate::ReleaseRouter)).

use std::collections::BTreeMap;

use async_trait::async_trait;
use bluegreen_core::labels as core_labels;
use bluegreen_core::{
    App, Error, Fleet, FleetCapabilities, Group, GroupId, Instance, Result, RouteTable,
};
use serde_json::{json, Value};

use crate::api::{self, seg, AppInfo, ReleaseInfo, Vars};
use crate::apps::{self, Found};
use crate::client::PlatformClient;
use crate::labels;
use crate::naming::Naming;
use crate::release_router::ReleaseRouter;
use crate::settings;

/// The start of the description of every release bluegreen creates.
use crate::api::RELEASE_DESCRIPTION as DESCRIPTION;
pub(crate) const ATTACHED_PREFIX: &str = "BLUEGREEN_ATTACHED_";
const FORGOTTEN_PREFIX: &str = "BLUEGREEN_FORGOTTEN_";
/// The control app's mark of the group the router last switched to.
pub(crate) const ROUTED_VAR: &str = "BLUEGREEN_ROUTED";

/// Groups as releases of one long-lived app (`web-production`, or the name given with
/// [`ReleaseFleet::with_app_name`]).
///
/// `launch` enables the app's `preboot` feature (new dynos boot before the old ones
/// stop), sets the release's environment and bluegreen's marks as config vars,
/// removing the variables the previous group set that this one lacks, creates a
/// release of the slug (described `bluegreen <group> release <hash>`) and scales the
/// process type to the release's size. The platform makes a new release current at
/// once: **launching is the switch** on the platform. The route table the paired
/// [`ReleaseRouter`] reports still names the group it last switched to until the
/// engine switches to the new one (after its dynos are healthy and the router's
/// readiness check), so that a deployment interrupted in between and run again
/// waits for the new release's dynos instead of finding it live. The router puts an
/// older group back with the platform's rollback (a new release with that
/// release's slug and config vars).
///
/// A group's instances are the dynos running its release. Only the current release
/// has dynos, so an older group kept by the engine is a rollback target, not a warm
/// group: [`Engine::rollback`](bluegreen_core::Engine::rollback) launches the
/// previous release again. Releases cannot be deleted: `destroy` forgets the group
/// (a mark in the control app, see [`Naming::control_app`]); when its release is
/// current, the release of the group the router last switched to is made current
/// again (a launch that failed before its switch is undone), or, without one, the
/// group's dynos are scaled to zero.
///
/// The app must carry `BLUEGREEN_OWNER=bluegreen`, `BLUEGREEN_APP` and
/// `BLUEGREEN_ENVIRONMENT`, or not exist (it is then created in maintenance mode,
/// so that nothing is served before the first switch). An existing app is handed
/// over by setting those three config vars.
#[derive(Clone, Debug)]
pub struct ReleaseFleet {
    pub(crate) client: PlatformClient,
    pub(crate) naming: Naming,
    pub(crate) names: BTreeMap<App, String>,
    pub(crate) preboot: bool,
}

/// What the platform says about an app in release mode.
pub(crate) struct State {
    pub(crate) name: String,
    pub(crate) info: AppInfo,
    /// The groups bluegreen released and has not forgotten, with their releases
    /// (oldest first).
    pub(crate) groups: BTreeMap<GroupId, Vec<ReleaseInfo>>,
    pub(crate) current: Option<ReleaseInfo>,
    pub(crate) current_vars: Vars,
    pub(crate) control: Vars,
}

impl State {
    /// The group the current release runs: its config vars name the group and its
    /// slug is the group's.
    pub(crate) fn current_group(&self) -> Option<GroupId> {
        let current = self.current.as_ref()?;
        let group = GroupId::new(
            self.current_vars
                .get(&labels::var_for_label(core_labels::GROUP))?
                .clone(),
        );
        let ours = self.groups.get(&group)?.last()?;
        let slug = |r: &ReleaseInfo| r.slug.as_ref().map(|s| s.id.clone());
        (slug(ours).is_some() && slug(ours) == slug(current)).then_some(group)
    }

    pub(crate) fn release_of(&self, group: &GroupId) -> Result<&ReleaseInfo> {
        self.groups
            .get(group)
            .and_then(|r| r.last())
            .ok_or_else(|| Error::not_found(format!("group {group}")))
    }

    pub(crate) fn attached(&self, group: &GroupId) -> bool {
        self.control.contains_key(&attach_key(group))
    }

    /// The group the router last switched to, while bluegreen still knows it.
    pub(crate) fn routed(&self) -> Option<GroupId> {
        let group = GroupId::new(self.control.get(ROUTED_VAR)?.clone());
        self.groups.contains_key(&group).then_some(group)
    }

    /// The route table: empty in maintenance mode; else the group the router last
    /// switched to, even while a newer release launched since is current (the
    /// engine has not switched to it yet); else, on an app that has no such mark,
    /// the group of the current release.
    pub(crate) fn table(&self) -> RouteTable {
        if self.info.maintenance {
            return RouteTable::empty();
        }
        self.routed()
            .or_else(|| self.current_group())
            .map(RouteTable::single)
            .unwrap_or_default()
    }
}

pub(crate) fn attach_key(group: &GroupId) -> String {
    format!("{ATTACHED_PREFIX}{}", labels::var_key(group.as_str()))
}

pub(crate) fn forgotten_key(release: &str) -> String {
    format!("{FORGOTTEN_PREFIX}{}", labels::var_key(release))
}

impl ReleaseFleet {
    /// Releases through `client`, with the app of each bluegreen app named by the
    /// default [`Naming`] and preboot on.
    pub fn new(client: PlatformClient) -> Self {
        ReleaseFleet {
            client,
            naming: Naming::new(),
            names: BTreeMap::new(),
            preboot: true,
        }
    }

    /// Names the apps with `naming`.
    pub fn with_naming(mut self, naming: Naming) -> Self {
        self.naming = naming;
        self
    }

    /// Deploys `app` to the platform app called `name`.
    pub fn with_app_name(mut self, app: &App, name: impl Into<String>) -> Self {
        self.names.insert(app.clone(), name.into());
        self
    }

    /// Whether `launch` enables the `preboot` feature (default true).
    pub fn with_preboot(mut self, on: bool) -> Self {
        self.preboot = on;
        self
    }

    /// The router that goes with this fleet.
    pub fn router(&self) -> ReleaseRouter {
        ReleaseRouter {
            fleet: self.clone(),
        }
    }

    /// The platform app of `app`.
    pub fn app_name(&self, app: &App) -> String {
        self.names
            .get(app)
            .cloned()
            .unwrap_or_else(|| self.naming.base(app))
    }

    pub(crate) async fn state(&self, app: &App) -> Result<Option<State>> {
        let name = self.app_name(app);
        let (info, current_vars) = match apps::find(&self.client, &name, app).await? {
            Found::Ours(info, vars) => (info, vars),
            _ => return Ok(None),
        };
        let control = match api::config_vars(&self.client, &self.naming.control_app(app)).await? {
            Some(vars) if labels::owned_by(&vars, app) => vars,
            _ => Vars::new(),
        };
        let releases = api::releases(&self.client, &name).await?;
        let current = releases.iter().rev().find(|r| r.current).cloned();
        let mut groups: BTreeMap<GroupId, Vec<ReleaseInfo>> = BTreeMap::new();
        for r in releases {
            let Some(rest) = r.description.strip_prefix(DESCRIPTION) else {
                continue;
            };
            let Some(group) = rest.split_whitespace().next() else {
                continue;
            };
            if control.contains_key(&forgotten_key(&r.id)) {
                continue;
            }
            groups.entry(GroupId::new(group)).or_default().push(r);
        }
        Ok(Some(State {
            name,
            info,
            groups,
            current,
            current_vars,
            control,
        }))
    }

    pub(crate) async fn record(
        &self,
        state: &State,
        app: &App,
        release: &ReleaseInfo,
    ) -> Result<Option<Group>> {
        let vars: BTreeMap<String, Option<String>> = self
            .client
            .get(&format!(
                "/apps/{}/releases/{}/config-vars",
                seg(&state.name),
                seg(&release.id)
            ))
            .await?;
        let vars: Vars = vars
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect();
        match labels::group_of(&vars, app) {
            Some(Ok(g)) => Ok(Some(g)),
            Some(Err(e)) => {
                tracing::warn!(release = %release.id, error = %e, "a release with an untrusted record is ignored");
                Ok(None)
            }
            None => Ok(None),
        }
    }

    pub(crate) async fn group(&self, state: &State, app: &App, group: &GroupId) -> Result<Group> {
        let release = state.release_of(group)?;
        self.record(state, app, release)
            .await?
            .filter(|g| &g.id == group)
            .ok_or_else(|| Error::not_found(format!("group {group}")))
    }

    pub(crate) async fn control(&self, app: &App) -> Result<String> {
        let name = self.naming.control_app(app);
        let marks = labels::vars_of(&core_labels::app_labels(app));
        apps::ensure(&self.client, &name, app, &marks, false).await?;
        Ok(name)
    }

    pub(crate) async fn scale_to(&self, state: &State, group: &Group, quantity: u32) -> Result<()> {
        let settings = settings::check_release(&group.release)?;
        api::scale(
            &self.client,
            &state.name,
            &settings.process_type,
            quantity,
            settings.dyno_size.as_deref(),
        )
        .await
    }

    /// Marks the group that serves now as the routed one, when no group is marked:
    /// the route table stays as it is while a launch makes another release current.
    pub(crate) async fn freeze_routes(&self, state: &State, app: &App) -> Result<()> {
        if state.info.maintenance || state.routed().is_some() {
            return Ok(());
        }
        let Some(serving) = state.current_group() else {
            return Ok(());
        };
        self.mark_routed(app, Some(&serving)).await
    }

    /// Sets (or, with `None`, removes) the routed group's mark in the control app.
    pub(crate) async fn mark_routed(&self, app: &App, group: Option<&GroupId>) -> Result<()> {
        let control = self.control(app).await?;
        api::patch_config(
            &self.client,
            &control,
            &BTreeMap::from([(ROUTED_VAR.to_owned(), group.map(|g| g.to_string()))]),
        )
        .await
    }

    /// Makes `release` current again: the platform's rollback.
    pub(crate) async fn make_current(&self, state: &State, release: &ReleaseInfo) -> Result<()> {
        self.client
            .post::<Value>(
                &format!("/apps/{}/releases", seg(&state.name)),
                &json!({ "release": release.id }),
            )
            .await?;
        Ok(())
    }

    pub(crate) async fn dynos_of(&self, state: &State, group: &Group) -> Result<Vec<Instance>> {
        let settings = settings::check_release(&group.release)?;
        let mut releases: Vec<String> = state
            .groups
            .get(&group.id)
            .map(|r| r.iter().map(|r| r.id.clone()).collect())
            .unwrap_or_default();
        if state.current_group().as_ref() == Some(&group.id) {
            if let Some(current) = &state.current {
                releases.push(current.id.clone());
            }
        }
        Ok(api::dynos(&self.client, &state.name)
            .await?
            .iter()
            .filter(|d| d.kind == settings.process_type && releases.contains(&d.release.id))
            .map(|d| api::dyno_instance(&state.name, d, state.info.web_url.as_deref()))
            .collect())
    }
}

#[async_trait]
impl Fleet for ReleaseFleet {
    /// One release of the app runs at a time: launching is the switch, and no
    /// older group stays warm.
    /// Not supported: a one-off dyno of the app runs the app's current release, not
    /// the new group's, and the new release cannot be made current without becoming
    /// the switch. Use the platform's release phase (a `release` process type in the
    /// slug's `process_types`) instead, or app mode ([`AppFleet`](crate::AppFleet)).
    async fn start_task(&self, group: &Group) -> Result<()> {
        let _ = group;
        Err(Error::NotSupported {
            what: "release tasks in release mode (a one-off dyno would run the current \
                   release, not the new one): use the slug's `release` process type \
                   (the platform's release phase) or app mode"
                .into(),
        })
    }

    fn capabilities(&self) -> FleetCapabilities {
        FleetCapabilities::default()
            .with_warm_groups(false)
            .with_launch_is_switch(true)
    }

    fn check_release(&self, release: &bluegreen_core::Release) -> Result<()> {
        settings::check_release(release).map(|_| ())
    }

    async fn launch(&self, group: &Group) -> Result<()> {
        let settings = settings::check_release(&group.release)?;
        let app = &group.app;
        let name = self.app_name(app);
        self.control(app).await?;
        let app_marks = labels::vars_of(&core_labels::app_labels(app));
        let (_, vars, _) = apps::ensure(&self.client, &name, app, &app_marks, true).await?;
        let state = self
            .state(app)
            .await?
            .ok_or_else(|| Error::not_found(format!("app {name}")))?;
        if let Ok(release) = state.release_of(&group.id) {
            return match self.record(&state, app, release).await? {
                Some(found) if &found == group => {
                    if state.current_group().as_ref() != Some(&group.id) {
                        self.freeze_routes(&state, app).await?;
                        self.make_current(&state, release).await?;
                    }
                    self.scale_to(&state, group, group.release.size).await
                }
                _ => Err(Error::conflict(format!(
                    "{} was released with another record",
                    group.id
                ))),
            };
        }
        if self.preboot {
            self.client
                .patch::<Value>(
                    &format!("/apps/{}/features/preboot", seg(&name)),
                    &json!({ "enabled": true }),
                )
                .await?;
        }
        let stale: Vec<String> = vars
            .get(labels::RECORD_VAR)
            .and_then(|r| serde_json::from_str::<Group>(r).ok())
            .map(|g| g.release.env.into_keys().collect())
            .unwrap_or_default();
        self.freeze_routes(&state, app).await?;
        let changes = labels::config_changes(&vars, &labels::group_vars(group), stale);
        if !changes.is_empty() {
            api::patch_config(&self.client, &name, &changes).await?;
        }
        api::release_and_scale(
            &self.client,
            &name,
            group,
            &settings.process_type,
            settings.dyno_size.as_deref(),
        )
        .await
    }

    async fn groups(&self, app: &App) -> Result<Vec<Group>> {
        let Some(state) = self.state(app).await? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for (id, releases) in &state.groups {
            let Some(release) = releases.last() else {
                continue;
            };
            if let Some(g) = self.record(&state, app, release).await? {
                if &g.id == id {
                    out.push(g);
                }
            }
        }
        Ok(out)
    }

    async fn instances(&self, app: &App, group: &GroupId) -> Result<Vec<Instance>> {
        let state = self
            .state(app)
            .await?
            .ok_or_else(|| Error::not_found(format!("group {group}")))?;
        let g = self.group(&state, app, group).await?;
        self.dynos_of(&state, &g).await
    }

    async fn destroy(&self, app: &App, group: &GroupId) -> Result<()> {
        let Some(state) = self.state(app).await? else {
            return Ok(());
        };
        let Some(releases) = state.groups.get(group) else {
            return Ok(());
        };
        if state.current_group().as_ref() == Some(group) {
            // launched, never switched to: the routed group's release serves again
            let routed = state.routed().filter(|r| r != group);
            let back = match &routed {
                Some(r) => Some((state.release_of(r)?, self.group(&state, app, r).await?)),
                None => None,
            };
            match back {
                Some((release, g)) => {
                    self.make_current(&state, release).await?;
                    self.scale_to(&state, &g, g.release.size).await?;
                }
                None => {
                    if let Ok(g) = self.group(&state, app, group).await {
                        self.scale_to(&state, &g, 0).await?;
                    }
                }
            }
        }
        let mut changes: BTreeMap<String, Option<String>> = releases
            .iter()
            .map(|r| (forgotten_key(&r.id), Some("1".to_owned())))
            .collect();
        if state.attached(group) {
            changes.insert(attach_key(group), None);
        }
        if state.control.get(ROUTED_VAR) == Some(&group.to_string()) {
            changes.insert(ROUTED_VAR.to_owned(), None);
        }
        let control = self.control(app).await?;
        api::patch_config(&self.client, &control, &changes).await
    }
}
