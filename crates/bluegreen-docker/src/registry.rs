//! [`RegistryImage`]: images built on a Docker daemon and pushed to a registry, used
//! by digest, for a swarm whose every node pulls the same bytes.

use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use base64::Engine as _;
use bluegreen_core::labels;
use bluegreen_core::redact::HIDDEN;
use bluegreen_core::{
    App, Error, Event, EventSink, Image, ImageCapabilities, ImageId, ImageRef, ImageSource, Result,
};
use bollard::auth::DockerCredentials;
use bollard::query_parameters::{PushImageOptionsBuilder, TagImageOptionsBuilder};
use bollard::Docker;
use futures_util::StreamExt;

use crate::error::{docker_error, has_status, PROVIDER};
use crate::image::{repository, DockerImage};
use crate::labels::labels_of;
use crate::registry_api::{call, MANIFEST_TYPES};

/// The credentials for `registry` (`registry.example.com:5000`) in the Docker
/// configuration, the `docker login` convention: `$DOCKER_CONFIG/config.json`, else
/// `~/.docker/config.json`, its `auths` entry for the registry (with or without an
/// `https://` or `http://` prefix), field `auth` (base64 of `user:password`) or
/// `username` and `password`.
///
/// A missing file or entry is `Ok(None)` (an anonymous registry). A file that is not
/// JSON, or an `auth` that does not decode, is [`Error::Invalid`] naming
/// `docker config`. Credential helpers (`credsStore`, `credHelpers`) are not run.
pub fn registry_credentials(registry: &str) -> Result<Option<DockerCredentials>> {
    let dir = match std::env::var_os("DOCKER_CONFIG") {
        Some(d) => std::path::PathBuf::from(d),
        None => match std::env::var_os("HOME") {
            Some(h) => std::path::PathBuf::from(h).join(".docker"),
            None => return Ok(None),
        },
    };
    let path = dir.join("config.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::invalid(
                "docker config",
                format!("{}: {e}", path.display()),
            ))
        }
    };
    credentials_in(&text, registry)
        .map_err(|reason| Error::invalid("docker config", format!("{}: {reason}", path.display())))
}

fn credentials_in(
    text: &str,
    registry: &str,
) -> std::result::Result<Option<DockerCredentials>, String> {
    let config: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let Some(auths) = config.get("auths").and_then(|a| a.as_object()) else {
        return Ok(None);
    };
    let entry = auths.iter().find(|(k, _)| {
        let k = k
            .trim_start_matches("https://")
            .trim_start_matches("http://");
        k.trim_end_matches('/') == registry
    });
    let Some((_, entry)) = entry else {
        return Ok(None);
    };
    let field = |name: &str| entry.get(name).and_then(|v| v.as_str()).map(str::to_owned);
    let (username, password) = match field("auth").filter(|a| !a.is_empty()) {
        Some(auth) => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|e| format!("the auth of {registry} is not base64: {e}"))?;
            let text = String::from_utf8(decoded)
                .map_err(|_| format!("the auth of {registry} is not text"))?;
            let (u, p) = text
                .split_once(':')
                .ok_or_else(|| format!("the auth of {registry} is not user:password"))?;
            (Some(u.to_owned()), Some(p.to_owned()))
        }
        None => (field("username"), field("password")),
    };
    if username.is_none() && field("identitytoken").is_none() {
        return Ok(None);
    }
    Ok(Some(DockerCredentials {
        username,
        password,
        identitytoken: field("identitytoken"),
        serveraddress: Some(registry.to_owned()),
        ..Default::default()
    }))
}

/// Seconds since the epoch of a UTC RFC 3339 time (`2026-11-30T09:01:02.5Z`), to
/// the second.
fn rfc3339_seconds(t: &str) -> Option<u64> {
    let n = |r: std::ops::Range<usize>| t.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let (hh, mm, ss) = (n(11..13)?, n(14..16)?, n(17..19)?);
    // days from the civil date (Howard Hinnant's algorithm)
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()
}

/// Images built (or resolved) on a Docker daemon like [`DockerImage`], then pushed
/// to a registry, and used **by digest**: the image id is
/// `<registry>/bluegreen/<app>-<environment>@sha256:<manifest digest>`, what
/// [`SwarmFleet`](crate::SwarmFleet) runs on every node.
///
/// - [`Image::prepare`]: a build context, a local tag or a local id is prepared by
///   [`DockerImage`], tagged `<registry>/bluegreen/<app>-<env>:<first 12 hex digits
///   of the image id>` and pushed with the credentials (each line of the push is an
///   [`Event::BuildOutput`]). A source that already is this app's reference by
///   digest in the registry is checked to exist there and used as it is.
/// - [`Image::images`]: the repository's tags in the registry (its HTTP API), each
///   manifest whose image carries bluegreen's labels for the app, once per digest.
/// - [`Image::remove`]: only a reference in the app's repository whose image carries
///   the app's labels: its manifest is deleted in the registry by digest (the
///   registry must allow deletes; one that refuses, 405, keeps it, with a log line),
///   and its local copy removed as [`DockerImage`] removes images. A local copy still
///   used by a container (a task of a destroyed group that is still stopping) is
///   kept, listed by `images` under its local id, and removed by a later call.
///   Anything else, or a missing image, succeeds and changes nothing. The registry
///   frees the blobs at its next garbage collection.
///
/// The registry's own API (for `images` and `remove`) is spoken in plain HTTP: a
/// registry behind TLS lists no image here and keeps its manifests. The push itself
/// goes through the daemon, which must trust the registry (for plain HTTP, the
/// daemon's `insecure-registries`).
///
/// The registry does not know which services run an image, and the swarm's nodes
/// run its containers where this daemon cannot look, so `remove` does not refuse an
/// image in use: it declares [`ImageCapabilities::refuses_removal_in_use`] false.
/// The engine's retention keeps the images of the groups it keeps.
#[derive(Clone)]
pub struct RegistryImage {
    local: DockerImage,
    docker: Docker,
    registry: String,
    credentials: Option<DockerCredentials>,
}

/// The registry's credentials are never shown.
impl std::fmt::Debug for RegistryImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryImage")
            .field("registry", &self.registry)
            .field("credentials", &self.credentials.as_ref().map(|_| HIDDEN))
            .finish_non_exhaustive()
    }
}

impl RegistryImage {
    /// Images built on the daemon `docker` talks to and pushed to `registry`
    /// (`host:port`), with the credentials of the Docker configuration
    /// ([`registry_credentials`]).
    ///
    /// A Docker configuration that cannot be read is [`Error::Invalid`].
    pub fn new(docker: Docker, registry: impl Into<String>) -> Result<Self> {
        let registry = registry.into();
        let credentials = registry_credentials(&registry)?;
        Ok(RegistryImage {
            local: DockerImage::new(docker.clone()),
            docker,
            registry,
            credentials,
        })
    }

    /// Replaces the credentials (`None`: anonymous).
    pub fn with_credentials(mut self, credentials: Option<DockerCredentials>) -> Self {
        self.credentials = credentials;
        self
    }

    /// The credentials pushes use; give them to
    /// [`SwarmFleet::with_registry_auth`](crate::SwarmFleet::with_registry_auth) so
    /// that the nodes can pull.
    pub fn credentials(&self) -> Option<&DockerCredentials> {
        self.credentials.as_ref()
    }

    /// The registry's address.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The app's repository in the registry: `<registry>/bluegreen/<app>-<env>`.
    pub fn repository(&self, app: &App) -> String {
        format!("{}/{}", self.registry, repository(app))
    }

    fn basic(&self) -> Option<String> {
        let c = self.credentials.as_ref()?;
        let user = c.username.as_deref()?;
        let password = c.password.as_deref().unwrap_or_default();
        Some(base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
    }

    async fn push(&self, app: &App, local_id: &str, events: &EventSink) -> Result<String> {
        let repo = self.repository(app);
        let short = local_id.trim_start_matches("sha256:");
        let tag = &short[..short.len().min(12)];
        self.docker
            .tag_image(
                local_id,
                Some(TagImageOptionsBuilder::new().repo(&repo).tag(tag).build()),
            )
            .await
            .map_err(|e| docker_error(format!("tagging image {local_id} as {repo}:{tag}"), e))?;
        let mut stream = self.docker.push_image(
            &repo,
            Some(PushImageOptionsBuilder::new().tag(tag).build()),
            self.credentials.clone(),
        );
        let mut digest = None;
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| match e {
                bollard::errors::Error::DockerStreamError { error } => {
                    Error::provider(PROVIDER, format!("push of {repo}:{tag}: {error}"), true)
                }
                e => docker_error(format!("push of {repo}:{tag}"), e),
            })?;
            if let Some(error) = info.error {
                return Err(Error::provider(
                    PROVIDER,
                    format!("push of {repo}:{tag}: {}", error.trim()),
                    true,
                ));
            }
            if let Some(status) = info.status {
                if let Some(d) = status
                    .split_whitespace()
                    .skip_while(|w| *w != "digest:")
                    .nth(1)
                {
                    digest = Some(d.to_owned());
                }
                events.emit(Event::BuildOutput {
                    line: format!("push {repo}:{tag}: {}", status.trim()),
                });
            }
        }
        let digest = match digest {
            Some(d) => d,
            None => self
                .docker
                .inspect_image(local_id)
                .await
                .map_err(|e| docker_error(format!("image {local_id}"), e))?
                .repo_digests
                .unwrap_or_default()
                .into_iter()
                .find_map(|d| d.strip_prefix(&format!("{repo}@")).map(str::to_owned))
                .ok_or_else(|| {
                    Error::provider(
                        PROVIDER,
                        format!("the push of {repo}:{tag} gave no digest"),
                        false,
                    )
                })?,
        };
        Ok(format!("{repo}@{digest}"))
    }

    /// The path of the app's repository in the registry API: `bluegreen/<slug>`.
    fn api_repository(app: &App) -> String {
        repository(app)
    }

    /// The digest and the image configuration of `reference` (a tag or a digest) in
    /// the app's repository; `None` when the registry does not have it.
    async fn manifest(
        &self,
        app: &App,
        reference: &str,
    ) -> Result<Option<(String, serde_json::Value)>> {
        let repo = Self::api_repository(app);
        let basic = self.basic();
        let answer = call(
            &self.registry,
            "GET",
            &format!("/v2/{repo}/manifests/{reference}"),
            Some(MANIFEST_TYPES),
            basic.as_deref(),
        )
        .await?;
        if answer.status == 404 {
            return Ok(None);
        }
        let bad = |why: &str| {
            Error::provider(
                PROVIDER,
                format!(
                    "registry {}: manifest {repo}:{reference}: {why}",
                    self.registry
                ),
                false,
            )
        };
        if answer.status != 200 {
            return Err(bad(&format!("status {}", answer.status)));
        }
        let digest = answer
            .header("docker-content-digest")
            .ok_or_else(|| bad("no Docker-Content-Digest"))?
            .to_owned();
        let manifest: serde_json::Value =
            serde_json::from_slice(&answer.body).map_err(|e| bad(&e.to_string()))?;
        let config = manifest
            .pointer("/config/digest")
            .and_then(|d| d.as_str())
            .ok_or_else(|| bad("no config digest (a manifest list?)"))?;
        let blob = call(
            &self.registry,
            "GET",
            &format!("/v2/{repo}/blobs/{config}"),
            None,
            basic.as_deref(),
        )
        .await?;
        if blob.status == 404 {
            return Ok(None);
        }
        if blob.status != 200 {
            return Err(bad(&format!("config blob: status {}", blob.status)));
        }
        let config: serde_json::Value =
            serde_json::from_slice(&blob.body).map_err(|e| bad(&e.to_string()))?;
        Ok(Some((digest, config)))
    }

    fn owned(config: &serde_json::Value, app: &App) -> bool {
        let found: std::collections::HashMap<String, String> = config
            .pointer("/config/Labels")
            .and_then(|l| l.as_object())
            .map(|l| {
                l.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default();
        labels::is_owned_by(&labels_of(Some(&found)), app)
    }

    fn created(config: &serde_json::Value) -> SystemTime {
        config
            .get("created")
            .and_then(|c| c.as_str())
            .and_then(rfc3339_seconds)
            .map(|s| UNIX_EPOCH + std::time::Duration::from_secs(s))
            .unwrap_or(UNIX_EPOCH)
    }

    /// The digest of an id of this app's repository (`<repo>@sha256:...`).
    fn digest_of<'a>(&self, app: &App, id: &'a str) -> Option<&'a str> {
        id.strip_prefix(&format!("{}@", self.repository(app)))
            .filter(|d| d.starts_with("sha256:"))
    }
}

#[async_trait]
impl Image for RegistryImage {
    /// An id or reference with a digest (`<registry>/<repository>@sha256:...`) must
    /// parse as an image reference; anything else is checked as the local daemon's
    /// image checks it ([`DockerImage`](crate::DockerImage)).
    fn check_source(&self, source: &ImageSource, release: &bluegreen_core::Release) -> Result<()> {
        let pushed = match source {
            ImageSource::Id(id) if id.as_str().contains('@') => id.as_str(),
            ImageSource::Reference(r) if r.contains('@') => r.as_str(),
            _ => return self.local.check_source(source, release),
        };
        crate::image::check_reference(pushed).map_err(|why| {
            Error::invalid(
                "source",
                format!("`{pushed}` is not an image reference: {why}"),
            )
        })
    }

    async fn prepare(
        &self,
        app: &App,
        source: &ImageSource,
        events: &EventSink,
    ) -> Result<ImageRef> {
        let pushed = match source {
            ImageSource::Id(id) => Some(id.as_str().to_owned()),
            ImageSource::Reference(r) => Some(r.clone()),
            _ => None,
        };
        if let Some(reference) = pushed {
            if let Some(digest) = self.digest_of(app, &reference) {
                let (_, config) = self.manifest(app, digest).await?.ok_or_else(|| {
                    Error::not_found(format!("image {reference} in its registry"))
                })?;
                return Ok(ImageRef::new(
                    ImageId::new(reference.clone()),
                    app.clone(),
                    Self::created(&config),
                    source.to_string(),
                ));
            }
        }
        let local = self.local.prepare(app, source, events).await?;
        let id = self.push(app, local.id.as_str(), events).await?;
        Ok(ImageRef::new(
            ImageId::new(id),
            app.clone(),
            local.created_at,
            source.to_string(),
        ))
    }

    async fn images(&self, app: &App) -> Result<Vec<ImageRef>> {
        let mut images = self.pushed(app).await?;
        // local copies whose manifest is gone (they were in use when it was deleted)
        let listed: std::collections::BTreeSet<String> =
            images.iter().map(|i| i.id.to_string()).collect();
        let prefix = format!("{}@", self.repository(app));
        for local in self.local.images(app).await? {
            let digests = match self.docker.inspect_image(local.id.as_str()).await {
                Ok(i) => i.repo_digests.unwrap_or_default(),
                Err(e) if has_status(&e, 404) => continue,
                Err(e) => return Err(docker_error(format!("image {}", local.id), e)),
            };
            let ours: Vec<&String> = digests.iter().filter(|d| d.starts_with(&prefix)).collect();
            if !ours.is_empty() && ours.iter().all(|d| !listed.contains(d.as_str())) {
                images.push(local);
            }
        }
        Ok(images)
    }

    fn capabilities(&self) -> ImageCapabilities {
        ImageCapabilities::default().with_refuses_removal_in_use(false)
    }

    async fn remove(&self, app: &App, id: &ImageId) -> Result<()> {
        if id.as_str().starts_with("sha256:") {
            // a local copy left by an earlier removal
            return self.remove_local(app, id).await;
        }
        self.remove_pushed(app, id).await
    }
}

impl RegistryImage {
    /// Removes the local copy as [`DockerImage`] does; one still used by a container
    /// (a task that is stopping) is kept, and listed by `images` until removed.
    async fn remove_local(&self, app: &App, id: &ImageId) -> Result<()> {
        match self.local.remove(app, id).await {
            Err(e) if e.kind() == bluegreen_core::ErrorKind::Conflict => {
                tracing::debug!(image = %id, "local copy kept for now: {e}");
                Ok(())
            }
            other => other,
        }
    }

    /// The app's images in the registry.
    async fn pushed(&self, app: &App) -> Result<Vec<ImageRef>> {
        let repo = Self::api_repository(app);
        let answer = call(
            &self.registry,
            "GET",
            &format!("/v2/{repo}/tags/list"),
            None,
            self.basic().as_deref(),
        )
        .await?;
        if answer.status == 404 {
            return Ok(Vec::new());
        }
        let list: serde_json::Value = serde_json::from_slice(&answer.body).unwrap_or_default();
        let tags: Vec<String> = list
            .get("tags")
            .and_then(|t| t.as_array())
            .map(|t| {
                t.iter()
                    .filter_map(|t| t.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let mut seen = std::collections::BTreeSet::new();
        let mut images = Vec::new();
        for tag in tags {
            let Some((digest, config)) = self.manifest(app, &tag).await? else {
                continue;
            };
            if !Self::owned(&config, app) || !seen.insert(digest.clone()) {
                continue;
            }
            images.push(ImageRef::new(
                ImageId::new(format!("{}@{digest}", self.repository(app))),
                app.clone(),
                Self::created(&config),
                format!("{}:{tag}", self.repository(app)),
            ));
        }
        Ok(images)
    }

    async fn remove_pushed(&self, app: &App, id: &ImageId) -> Result<()> {
        let Some(digest) = self.digest_of(app, id.as_str()) else {
            tracing::debug!(image = %id, "not removed: not in the repository of {app}");
            return Ok(());
        };
        let Some((_, config)) = self.manifest(app, digest).await? else {
            return Ok(());
        };
        if !Self::owned(&config, app) {
            tracing::debug!(image = %id, "not removed: without bluegreen's labels for {app}");
            return Ok(());
        }
        let repo = Self::api_repository(app);
        let answer = call(
            &self.registry,
            "DELETE",
            &format!("/v2/{repo}/manifests/{digest}"),
            None,
            self.basic().as_deref(),
        )
        .await?;
        match answer.status {
            200..=299 | 404 => {}
            405 => tracing::info!(image = %id, "kept in the registry: it does not allow deletes"),
            s => {
                return Err(Error::provider(
                    PROVIDER,
                    format!("registry {}: deleting {id}: status {s}", self.registry),
                    false,
                ))
            }
        }
        // the local copy: our registry tags, then the image as DockerImage removes it
        let local = match self.docker.inspect_image(id.as_str()).await {
            Ok(i) => i,
            Err(e) if has_status(&e, 404) => return Ok(()),
            Err(e) => return Err(docker_error(format!("image {id}"), e)),
        };
        let prefix = format!("{}:", self.repository(app));
        for tag in local
            .repo_tags
            .unwrap_or_default()
            .iter()
            .filter(|t| t.starts_with(&prefix))
        {
            match self
                .docker
                .remove_image(tag, Some(crate::image::removal()), None)
                .await
            {
                Ok(_) => {}
                Err(e) if has_status(&e, 404) => {}
                Err(e) => return Err(docker_error(format!("untagging {tag}"), e)),
            }
        }
        match local.id {
            Some(local_id) => self.remove_local(app, &ImageId::new(local_id)).await,
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_no_credentials() {
        let credentials = DockerCredentials {
            username: Some("ci".into()),
            password: Some("pa55word".into()),
            identitytoken: Some("id-t0ken".into()),
            ..Default::default()
        };
        // a client that has not connected: nothing is contacted
        let docker =
            Docker::connect_with_http("http://127.0.0.1:9", 1, bollard::API_DEFAULT_VERSION)
                .unwrap();
        let image = RegistryImage {
            local: DockerImage::new(docker.clone()),
            docker: docker.clone(),
            registry: "registry.example.com:5000".into(),
            credentials: Some(credentials.clone()),
        };
        let fleet = crate::SwarmFleet::new(docker).with_registry_auth(Some(credentials));
        for shown in [format!("{image:?}"), format!("{fleet:?}")] {
            assert!(
                !shown.contains("pa55word")
                    && !shown.contains("id-t0ken")
                    && shown.contains(HIDDEN),
                "{shown}"
            );
        }
    }

    #[test]
    fn times_are_read() {
        assert_eq!(rfc3339_seconds("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            rfc3339_seconds("2026-11-30T09:01:02.123Z"),
            Some(1_796_029_262)
        );
        assert_eq!(rfc3339_seconds("x"), None);
    }

    #[test]
    fn credentials_come_from_the_docker_config() {
        let auth = base64::engine::general_purpose::STANDARD.encode("ann:s3cret");
        let text = format!(
            r#"{{"auths": {{"https://reg.example:5000": {{"auth": "{auth}"}}, "other:1": {{"username": "u", "password": "p"}}}}}}"#
        );
        let c = credentials_in(&text, "reg.example:5000").unwrap().unwrap();
        assert_eq!(c.username.as_deref(), Some("ann"));
        assert_eq!(c.password.as_deref(), Some("s3cret"));
        assert_eq!(c.serveraddress.as_deref(), Some("reg.example:5000"));
        let c = credentials_in(&text, "other:1").unwrap().unwrap();
        assert_eq!(c.username.as_deref(), Some("u"));
        assert!(credentials_in(&text, "nowhere:5000").unwrap().is_none());
        assert!(credentials_in("{}", "reg.example:5000").unwrap().is_none());
        assert!(credentials_in("not json", "x").is_err());
        assert!(credentials_in(r#"{"auths": {"x": {"auth": "%%%"}}}"#, "x").is_err());
    }
}
