//! [`AppFleet`]: one app per group.

use async_trait::async_trait;
use bluegreen_core::{
    App, Error, Fleet, FleetCapabilities, Group, GroupId, Instance, Result, TaskStatus,
};

use crate::api::{self, AppInfo};
use crate::apps::{self, Found};
use crate::client::PlatformClient;
use crate::labels;
use crate::naming::Naming;
use crate::settings;

/// Groups as apps: group `web-production-v007` is the app `web-production-v007`
/// (shortened deterministically past 30 characters, see [`Naming`]).
///
/// `launch` creates the app in maintenance mode (it serves nothing until a router
/// attaches it), sets the release's environment and bluegreen's marks as config vars
/// (`BLUEGREEN_OWNER`, `BLUEGREEN_APP`, `BLUEGREEN_ENVIRONMENT`, `BLUEGREEN_GROUP`,
/// `BLUEGREEN_GENERATION`, `BLUEGREEN_RELEASE`, `BLUEGREEN_IMAGE`,
/// `BLUEGREEN_DEPLOYMENT` and the record in `BLUEGREEN_RECORD`), releases the slug
/// and scales the process type (`process_type` setting, default `web`) to the
/// release's size, with the `dyno_size` setting when given. Instances are the
/// dynos of that process type, reached at the app's web URL.
///
/// Only apps whose config vars carry the app's marks are listed, changed or
/// deleted. One exception keeps launches convergent: an app with the group's name
/// that has no config var and never ran a slug (what an interrupted create leaves)
/// is adopted by `launch`.
///
/// # Release tasks
///
/// A task is a one-off dyno of the group's app (`POST /apps/{app}/dynos` with the
/// command, `type: run`, `time_to_live` the task's timeout and the `dyno_size`
/// setting), running the group's slug with its config vars: `start_task` creates the
/// app and releases the slug first when the group is not launched yet (the task runs
/// before launch by default), without scaling any process type. The record is the
/// app's config var [`TASK_VAR`](crate::TASK_VAR); the state and output come from
/// the dyno list and the app's log (see the crate's README for the limits), and
/// [`Fleet::destroy`] deleting the app stops the dyno and removes the record.
#[derive(Clone, Debug)]
pub struct AppFleet {
    client: PlatformClient,
    naming: Naming,
}

/// A group's app as found on the platform.
pub(crate) struct GroupApp {
    pub(crate) name: String,
    pub(crate) info: AppInfo,
    pub(crate) group: Group,
}

impl AppFleet {
    /// Apps through `client`, named without a prefix.
    pub fn new(client: PlatformClient) -> Self {
        AppFleet {
            client,
            naming: Naming::new(),
        }
    }

    /// Names the apps with `naming`.
    pub fn with_naming(mut self, naming: Naming) -> Self {
        self.naming = naming;
        self
    }

    /// The client.
    pub fn client(&self) -> &PlatformClient {
        &self.client
    }

    /// The naming.
    pub fn naming(&self) -> &Naming {
        &self.naming
    }

    /// The app of a group and its record, when the app carries the group's marks.
    pub(crate) async fn group_app(&self, app: &App, group: &GroupId) -> Result<Option<GroupApp>> {
        let Some(name) = self.naming.group_app(app, group) else {
            return Ok(None);
        };
        match apps::find(&self.client, &name, app).await? {
            Found::Ours(info, vars) => match labels::group_of(&vars, app) {
                Some(Ok(g)) if &g.id == group => Ok(Some(GroupApp {
                    name,
                    info,
                    group: g,
                })),
                _ => Ok(None),
            },
            _ => Ok(None),
        }
    }

    /// The group's instances: dynos of its process type.
    pub(crate) async fn dynos_of(&self, found: &GroupApp) -> Result<Vec<Instance>> {
        let settings = settings::check_release(&found.group.release)?;
        Ok(api::dynos(&self.client, &found.name)
            .await?
            .iter()
            .filter(|d| d.kind == settings.process_type)
            .map(|d| api::dyno_instance(&found.name, d, found.info.web_url.as_deref()))
            .collect())
    }
}

#[async_trait]
impl Fleet for AppFleet {
    fn capabilities(&self) -> FleetCapabilities {
        FleetCapabilities::default().with_tasks(true)
    }

    fn check_release(&self, release: &bluegreen_core::Release) -> Result<()> {
        settings::check_release(release).map(|_| ())
    }

    async fn launch(&self, group: &Group) -> Result<()> {
        let settings = settings::check_release(&group.release)?;
        let name = self
            .naming
            .group_app(&group.app, &group.id)
            .ok_or_else(|| {
                Error::invalid(
                    "group",
                    format!("{} does not fit a 30-character app name", group.id),
                )
            })?;
        if let Found::Ours(_, vars) = apps::find(&self.client, &name, &group.app).await? {
            match labels::group_of(&vars, &group.app) {
                Some(Ok(found)) if &found == group => {}
                Some(Ok(found)) => {
                    return Err(Error::conflict(format!(
                        "app {name} holds {} of release {}, not release {}",
                        found.id,
                        found.release.id(),
                        group.release.id()
                    )))
                }
                Some(Err(e)) => return Err(e),
                None => {
                    return Err(Error::conflict(format!(
                        "app {name} carries {}'s marks but no group record",
                        group.app
                    )))
                }
            }
        }
        apps::ensure(
            &self.client,
            &name,
            &group.app,
            &labels::group_vars(group),
            true,
        )
        .await?;
        let releases = api::releases(&self.client, &name).await?;
        let current_slug = releases
            .iter()
            .rev()
            .find(|r| r.current)
            .and_then(|r| r.slug.as_ref())
            .map(|s| s.id.clone());
        if current_slug.as_deref() == Some(group.release.image.as_str()) {
            return api::scale(
                &self.client,
                &name,
                &settings.process_type,
                group.release.size,
                settings.dyno_size.as_deref(),
            )
            .await;
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
        let mut out = Vec::new();
        for name in apps::named_like(&self.client, &self.naming.group_prefix(app)).await? {
            let Some(vars) = api::config_vars(&self.client, &name).await? else {
                continue;
            };
            match labels::group_of(&vars, app) {
                Some(Ok(group))
                    if self.naming.group_app(app, &group.id).as_ref() == Some(&name) =>
                {
                    out.push(group)
                }
                Some(Err(e)) => {
                    tracing::warn!(app = %name, error = %e, "an app with an untrusted record is ignored")
                }
                _ => {}
            }
        }
        Ok(out)
    }

    async fn instances(&self, app: &App, group: &GroupId) -> Result<Vec<Instance>> {
        let found = self
            .group_app(app, group)
            .await?
            .ok_or_else(|| Error::not_found(format!("group {group}")))?;
        self.dynos_of(&found).await
    }

    async fn destroy(&self, app: &App, group: &GroupId) -> Result<()> {
        match self.group_app(app, group).await? {
            Some(found) => apps::delete(&self.client, &found.name).await,
            None => Ok(()),
        }
    }

    async fn start_task(&self, group: &Group) -> Result<()> {
        crate::task::start(self, group).await
    }

    async fn task(&self, app: &App, group: &GroupId) -> Result<Option<TaskStatus>> {
        crate::task::status(self, app, group).await
    }
}
