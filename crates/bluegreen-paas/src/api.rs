//! The parts of the Platform API's resources that the provider reads.

use std::collections::BTreeMap;
use std::time::SystemTime;

use bluegreen_core::{Health, Instance, Result};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::client::PlatformClient;

/// An id reference (`{"id": "..."}`).
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct IdRef {
    pub(crate) id: String,
}

/// An app.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct AppInfo {
    #[serde(default)]
    pub(crate) maintenance: bool,
    #[serde(default)]
    pub(crate) web_url: Option<String>,
}

/// A slug.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Slug {
    pub(crate) id: String,
    #[serde(default)]
    pub(crate) blob: Option<Blob>,
    #[serde(default)]
    pub(crate) created_at: Option<String>,
}

/// Where a slug's archive is stored.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Blob {
    pub(crate) url: String,
}

/// A build.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Build {
    pub(crate) id: String,
    pub(crate) status: String,
    #[serde(default)]
    pub(crate) output_stream_url: Option<String>,
    #[serde(default)]
    pub(crate) slug: Option<IdRef>,
}

/// A release.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct ReleaseInfo {
    pub(crate) id: String,
    pub(crate) version: u64,
    #[serde(default)]
    pub(crate) description: String,
    #[serde(default)]
    pub(crate) slug: Option<IdRef>,
    #[serde(default)]
    pub(crate) current: bool,
}

/// A dyno.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Dyno {
    pub(crate) name: String,
    pub(crate) state: String,
    #[serde(rename = "type")]
    pub(crate) kind: String,
    pub(crate) release: IdRef,
}

/// A domain.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Domain {
    pub(crate) hostname: String,
    #[serde(default)]
    pub(crate) cname: Option<String>,
}

/// A formation (process type and quantity).
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Formation {
    #[serde(rename = "type")]
    pub(crate) kind: String,
    pub(crate) quantity: i64,
}

/// Config vars, with deleted (`null`) values dropped.
pub(crate) type Vars = BTreeMap<String, String>;

/// A dyno's state as a health.
///
/// `up` is healthy; `starting` and `restarting` are starting; `crashed` is stopped
/// (it will not become healthy by itself); `down`, `idle` and anything else are
/// unhealthy.
pub(crate) fn dyno_health(state: &str) -> Health {
    match state {
        "up" => Health::Healthy,
        "starting" | "restarting" | "provisioning" => Health::Starting,
        "crashed" => Health::Stopped {
            reason: "the dyno crashed".into(),
        },
        other => Health::Unhealthy {
            reason: format!("the dyno is {other}"),
        },
    }
}

/// A dyno as an instance reached at `address` (the app's web URL).
pub(crate) fn dyno_instance(app: &str, dyno: &Dyno, address: Option<&str>) -> Instance {
    Instance::new(
        format!("{app}/{}", dyno.name),
        Some(
            address
                .map(str::to_owned)
                .unwrap_or_else(|| dyno.name.clone()),
        ),
        dyno_health(&dyno.state),
    )
}

/// Parses an RFC 3339 time, or gives the epoch.
pub(crate) fn parse_time(text: Option<&str>) -> SystemTime {
    text.and_then(|t| humantime::parse_rfc3339_weak(t).ok())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// Percent-encodes one path segment.
pub(crate) fn seg(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The config vars of an app, `None` when the app does not exist.
pub(crate) async fn config_vars(client: &PlatformClient, app: &str) -> Result<Option<Vars>> {
    match client
        .get::<BTreeMap<String, Option<String>>>(&format!("/apps/{}/config-vars", seg(app)))
        .await
    {
        Ok(vars) => Ok(Some(
            vars.into_iter()
                .filter_map(|(k, v)| v.map(|v| (k, v)))
                .collect(),
        )),
        Err(e) if e.kind() == bluegreen_core::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Sets (`Some`) and deletes (`None`) config vars in one change (one new release).
pub(crate) async fn patch_config(
    client: &PlatformClient,
    app: &str,
    changes: &BTreeMap<String, Option<String>>,
) -> Result<()> {
    let body: Value = changes
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect::<serde_json::Map<_, _>>()
        .into();
    client
        .patch::<Value>(&format!("/apps/{}/config-vars", seg(app)), &body)
        .await?;
    Ok(())
}

/// An app, `None` when it does not exist.
pub(crate) async fn app_info(client: &PlatformClient, app: &str) -> Result<Option<AppInfo>> {
    match client.get(&format!("/apps/{}", seg(app))).await {
        Ok(info) => Ok(Some(info)),
        Err(e) if e.kind() == bluegreen_core::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Turns maintenance mode on or off.
pub(crate) async fn set_maintenance(client: &PlatformClient, app: &str, on: bool) -> Result<()> {
    client
        .patch::<Value>(
            &format!("/apps/{}", seg(app)),
            &json!({ "maintenance": on }),
        )
        .await?;
    Ok(())
}

/// The description of every release bluegreen creates: `bluegreen <group> release
/// <hash>`, how release mode finds its groups again.
pub(crate) const RELEASE_DESCRIPTION: &str = "bluegreen ";

/// Releases `group`'s slug on `app` (described as bluegreen's), then scales its
/// process type to the group's size.
pub(crate) async fn release_and_scale(
    client: &PlatformClient,
    app: &str,
    group: &bluegreen_core::Group,
    process_type: &str,
    dyno_size: Option<&str>,
) -> Result<()> {
    release(client, app, group).await?;
    scale(client, app, process_type, group.release.size, dyno_size).await
}

/// Releases `group`'s slug on `app`, described as bluegreen's.
pub(crate) async fn release(
    client: &PlatformClient,
    app: &str,
    group: &bluegreen_core::Group,
) -> Result<()> {
    client
        .post::<Value>(
            &format!("/apps/{}/releases", seg(app)),
            &json!({
                "slug": group.release.image.as_str(),
                "description": format!("{RELEASE_DESCRIPTION}{} release {}", group.id, group.release.id()),
            }),
        )
        .await?;
    Ok(())
}

/// Scales a process type.
pub(crate) async fn scale(
    client: &PlatformClient,
    app: &str,
    process_type: &str,
    quantity: u32,
    dyno_size: Option<&str>,
) -> Result<()> {
    let mut body = json!({ "quantity": quantity });
    if let Some(size) = dyno_size {
        body["dyno_size"] = json!({ "name": size });
    }
    client
        .patch::<Value>(
            &format!("/apps/{}/formation/{}", seg(app), seg(process_type)),
            &body,
        )
        .await?;
    Ok(())
}

/// The dynos of an app.
pub(crate) async fn dynos(client: &PlatformClient, app: &str) -> Result<Vec<Dyno>> {
    client.list(&format!("/apps/{}/dynos", seg(app))).await
}

/// The releases of an app, oldest first.
pub(crate) async fn releases(client: &PlatformClient, app: &str) -> Result<Vec<ReleaseInfo>> {
    let mut list: Vec<ReleaseInfo> = client.list(&format!("/apps/{}/releases", seg(app))).await?;
    list.sort_by_key(|r| r.version);
    Ok(list)
}
