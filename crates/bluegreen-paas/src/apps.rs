//! Finding, creating and adopting the apps that bluegreen owns.

use bluegreen_core::{App, Error, ErrorKind, Result};
use serde_json::{json, Value};

use crate::api::{self, AppInfo, Vars};
use crate::client::PlatformClient;
use crate::labels;

/// What stands at an app name.
pub(crate) enum Found {
    /// Nothing.
    Missing,
    /// An app with `app`'s marks.
    Ours(AppInfo, Vars),
    /// An app without config vars or a deployed slug: what an interrupted create
    /// leaves before its marks are set.
    Empty(AppInfo),
    /// Someone else's app: never changed.
    Foreign,
}

/// Looks at the app called `name`.
pub(crate) async fn find(client: &PlatformClient, name: &str, app: &App) -> Result<Found> {
    let Some(info) = api::app_info(client, name).await? else {
        return Ok(Found::Missing);
    };
    let Some(vars) = api::config_vars(client, name).await? else {
        return Ok(Found::Missing);
    };
    if labels::owned_by(&vars, app) {
        return Ok(Found::Ours(info, vars));
    }
    if vars.is_empty() {
        let releases = api::releases(client, name).await?;
        if releases.iter().all(|r| r.slug.is_none()) {
            return Ok(Found::Empty(info));
        }
    }
    Ok(Found::Foreign)
}

/// Creates the app called `name`. A name taken by an app this account cannot see is
/// a conflict.
pub(crate) async fn create(client: &PlatformClient, name: &str) -> Result<AppInfo> {
    match client
        .post::<AppInfo>("/apps", &json!({ "name": name }))
        .await
    {
        Ok(info) => Ok(info),
        Err(e) if matches!(e.kind(), ErrorKind::Invalid | ErrorKind::Conflict) => {
            Err(Error::conflict(format!(
                "cannot create app {name}: {e}; choose another name prefix"
            )))
        }
        Err(e) => Err(e),
    }
}

/// The app called `name` with `app`'s marks and `vars`: created when missing, adopted
/// when empty, refused when it is someone else's. A created or adopted app is put in
/// maintenance mode first when `maintenance` says so, before it carries any mark.
/// Returns the app, its config vars, and whether it was created or adopted now.
pub(crate) async fn ensure(
    client: &PlatformClient,
    name: &str,
    app: &App,
    vars: &Vars,
    maintenance: bool,
) -> Result<(AppInfo, Vars, bool)> {
    let (mut info, current, fresh) = match find(client, name, app).await? {
        Found::Ours(info, current) => (info, current, false),
        Found::Empty(info) => (info, Vars::new(), true),
        Found::Missing => (create(client, name).await?, Vars::new(), true),
        Found::Foreign => {
            return Err(Error::conflict(format!(
                "app {name} exists without bluegreen's marks for {app}; it is left alone"
            )))
        }
    };
    if fresh && maintenance && !info.maintenance {
        api::set_maintenance(client, name, true).await?;
        info.maintenance = true;
    }
    let changes = labels::config_changes(&current, vars, []);
    if !changes.is_empty() {
        api::patch_config(client, name, &changes).await?;
    }
    let mut all = current;
    all.extend(vars.clone());
    Ok((info, all, fresh))
}

/// Deletes the app called `name`; a missing app is fine.
pub(crate) async fn delete(client: &PlatformClient, name: &str) -> Result<()> {
    match client.delete(&format!("/apps/{}", api::seg(name))).await {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Every app of the account whose name starts with `prefix`.
pub(crate) async fn named_like(client: &PlatformClient, prefix: &str) -> Result<Vec<String>> {
    let apps: Vec<Value> = client.list("/apps").await?;
    Ok(apps
        .iter()
        .filter_map(|a| a.get("name").and_then(Value::as_str))
        .filter(|n| n.starts_with(prefix))
        .map(str::to_owned)
        .collect())
}
