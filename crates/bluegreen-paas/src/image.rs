//! [`SlugImage`]: slugs as immutable images.

use std::collections::BTreeMap;
use std::time::SystemTime;

use async_trait::async_trait;
use bluegreen_core::labels as core_labels;
use bluegreen_core::{
    App, Error, ErrorKind, Event, EventSink, Image, ImageCapabilities, ImageId, ImageRef,
    ImageSource, Result,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::api::{self, seg, Build, Formation, Slug, Vars};
use crate::apps;
use crate::client::PlatformClient;
use crate::labels;
use crate::naming::Naming;

/// The config var prefix of an image entry in the control app.
const ENTRY_PREFIX: &str = "BLUEGREEN_SLUG_";

/// What the control app remembers of an image.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Entry {
    id: String,
    created_at: String,
    origin: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
}

/// Slugs as images: the slug id is the immutable image id.
///
/// Slugs belong to an app on Heroku. The slugs of app `web` in `production` belong to
/// its control app, `web-production--slugs` (see [`Naming::control_app`]), created on
/// first use with bluegreen's marks (`BLUEGREEN_OWNER`, `BLUEGREEN_APP`,
/// `BLUEGREEN_ENVIRONMENT`) and never scaled up. Each image is listed in a config var
/// of the control app, `BLUEGREEN_SLUG_<id>`, with its time and origin.
///
/// Sources:
/// - [`ImageSource::Artifact`]: a slug tarball (`./app/...` inside); a slug is
///   created with the process types of [`SlugImage::with_process_type`] (default
///   `web: ./bin/web`) and the tarball uploaded to its blob URL. A tarball already
///   prepared (same SHA-256) gives the same slug back.
/// - [`ImageSource::SourceUrl`]: a source tarball built by the platform (a build of
///   the control app), its output sent as [`Event::BuildOutput`].
/// - [`ImageSource::Id`]: a slug of the control app, by id.
///
/// Retention: the platform cannot delete a slug, so [`Image::remove`] forgets it:
/// the slug leaves the list and is never offered again, while the platform keeps its
/// archive for as long as it keeps slugs. It does not look whether a group still
/// runs the slug (the groups are apps or releases, as the fleet's mode has them), so
/// it declares [`ImageCapabilities::refuses_removal_in_use`] false; forgetting a slug
/// never stops what runs it, and the engine's retention keeps the images of the
/// groups it keeps.
#[derive(Clone, Debug)]
pub struct SlugImage {
    client: PlatformClient,
    naming: Naming,
    process_types: BTreeMap<String, String>,
}

impl SlugImage {
    /// Slugs through `client`, named without a prefix.
    pub fn new(client: PlatformClient) -> Self {
        SlugImage {
            client,
            naming: Naming::new(),
            process_types: BTreeMap::from([("web".to_owned(), "./bin/web".to_owned())]),
        }
    }

    /// Names the control apps with `naming`.
    pub fn with_naming(mut self, naming: Naming) -> Self {
        self.naming = naming;
        self
    }

    /// Sets the command of a process type of slugs created from tarballs (the first
    /// call replaces the default `web: ./bin/web`).
    pub fn with_process_type(mut self, name: &str, command: &str) -> Self {
        if self.process_types.get("web").map(String::as_str) == Some("./bin/web")
            && self.process_types.len() == 1
        {
            self.process_types.clear();
        }
        self.process_types.insert(name.into(), command.into());
        self
    }

    async fn control(&self, app: &App) -> Result<(String, Vars)> {
        let name = self.naming.control_app(app);
        let marks = labels::vars_of(&core_labels::app_labels(app));
        let (_, vars, _) = apps::ensure(&self.client, &name, app, &marks, false).await?;
        Ok((name, vars))
    }

    async fn register(
        &self,
        app: &App,
        control: &str,
        slug: &Slug,
        origin: String,
        sha256: Option<String>,
    ) -> Result<ImageRef> {
        let created_at = slug
            .created_at
            .clone()
            .unwrap_or_else(|| humantime::format_rfc3339_seconds(SystemTime::now()).to_string());
        let entry = Entry {
            id: slug.id.clone(),
            created_at,
            origin,
            sha256,
        };
        let key = format!("{ENTRY_PREFIX}{}", labels::var_key(&slug.id));
        let value = serde_json::to_string(&entry).expect("an entry serializes");
        api::patch_config(&self.client, control, &BTreeMap::from([(key, Some(value))])).await?;
        Ok(image_ref(app, &entry))
    }

    async fn prepare_artifact(
        &self,
        app: &App,
        path: &std::path::Path,
        control: &str,
        vars: &Vars,
    ) -> Result<ImageRef> {
        let bytes = tokio::fs::read(path).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::not_found(format!("slug tarball {}", path.display()))
            } else {
                Error::provider_source(crate::error::PROVIDER, false, e)
            }
        })?;
        let sha: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if let Some(entry) = entries(vars)
            .into_iter()
            .find(|e| e.sha256.as_deref() == Some(sha.as_str()))
        {
            return Ok(image_ref(app, &entry));
        }
        let slug: Slug = self
            .client
            .post(
                &format!("/apps/{}/slugs", seg(control)),
                &json!({ "process_types": self.process_types }),
            )
            .await?;
        let blob = slug.blob.clone().ok_or_else(|| {
            Error::provider(
                crate::error::PROVIDER,
                format!("slug {} came without a blob URL", slug.id),
                false,
            )
        })?;
        self.client.put_blob(&blob.url, bytes).await?;
        self.register(
            app,
            control,
            &slug,
            format!("artifact {}", path.display()),
            Some(sha),
        )
        .await
    }

    async fn prepare_source(
        &self,
        app: &App,
        url: &str,
        control: &str,
        events: &EventSink,
    ) -> Result<ImageRef> {
        let build: Build = self
            .client
            .post(
                &format!("/apps/{}/builds", seg(control)),
                &json!({ "source_blob": { "url": url, "version": null } }),
            )
            .await?;
        if let Some(stream) = &build.output_stream_url {
            let streamed = self
                .client
                .stream_lines(stream, |line| events.emit(Event::BuildOutput { line }))
                .await;
            if let Err(e) = streamed {
                tracing::warn!(build = %build.id, error = %e, "build output unavailable");
            }
        }
        let path = format!("/apps/{}/builds/{}", seg(control), seg(&build.id));
        let mut build = build;
        while build.status == "pending" {
            tokio::time::sleep(self.client.options().build_poll_interval).await;
            build = self.client.get(&path).await?;
        }
        let slug_id = match (&build.status[..], &build.slug) {
            ("succeeded", Some(slug)) => slug.id.clone(),
            (status, _) => {
                return Err(Error::provider(
                    crate::error::PROVIDER,
                    format!("build {} of {url} ended {status}", build.id),
                    false,
                ))
            }
        };
        // a build releases the control app, which may scale it up: it serves nothing
        let formation: Vec<Formation> = self
            .client
            .list(&format!("/apps/{}/formation", seg(control)))
            .await?;
        for f in formation.iter().filter(|f| f.quantity > 0) {
            api::scale(&self.client, control, &f.kind, 0, None).await?;
        }
        let slug: Slug = self
            .client
            .get(&format!("/apps/{}/slugs/{}", seg(control), seg(&slug_id)))
            .await?;
        self.register(app, control, &slug, format!("source {url}"), None)
            .await
    }
}

fn entries(vars: &Vars) -> Vec<Entry> {
    vars.iter()
        .filter(|(k, _)| k.starts_with(ENTRY_PREFIX))
        .filter_map(|(_, v)| serde_json::from_str(v).ok())
        .collect()
}

fn image_ref(app: &App, entry: &Entry) -> ImageRef {
    ImageRef::new(
        ImageId::new(entry.id.clone()),
        app.clone(),
        api::parse_time(Some(&entry.created_at)),
        entry.origin.clone(),
    )
}

/// What slugs come from, for errors.
const KINDS: &str = "slugs come from a tarball, a source URL or a slug id";

/// Checks a slug tarball without the platform: a file that starts as gzip does.
fn check_tarball(path: &std::path::Path) -> Result<()> {
    use std::io::Read;
    let shown = path.display();
    let invalid = |why: &str| Error::invalid("source", format!("slug tarball {shown} {why}"));
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::not_found(format!("slug tarball {shown}")),
        _ => Error::invalid(
            "source",
            format!("slug tarball {shown} cannot be read: {e}"),
        ),
    })?;
    if !meta.is_file() {
        return Err(invalid("is not a file"));
    }
    let mut magic = [0u8; 2];
    let read = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut magic))
        .map_err(|e| {
            Error::invalid(
                "source",
                format!("slug tarball {shown} cannot be read: {e}"),
            )
        })?;
    if read < 2 || magic != [0x1f, 0x8b] {
        return Err(invalid(
            "is not a gzip-compressed tar archive (a slug is `tar czf slug.tgz ./app`)",
        ));
    }
    Ok(())
}

/// Checks a source tarball's URL: `http` or `https`, with a host.
fn check_source_url(url: &str) -> Result<()> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| Error::invalid("source", format!("`{url}` is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        return Err(Error::invalid(
            "source",
            format!("`{url}` is not an http(s) URL with a host, which the platform fetches"),
        ));
    }
    Ok(())
}

/// Whether `id` is a UUID (`8-4-4-4-12` hex digits), as slug ids are.
fn is_uuid(id: &str) -> bool {
    let parts: Vec<&str> = id.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[async_trait]
impl Image for SlugImage {
    /// Refuses, without a platform call: a tarball that is missing (`NotFound`), not
    /// a file or not gzip-compressed; a source URL that is not `http(s)` with a host;
    /// a slug id that is not a UUID (`Invalid` naming `source`); and kinds of source
    /// slugs do not come from (`NotSupported`).
    fn check_source(&self, source: &ImageSource, _release: &bluegreen_core::Release) -> Result<()> {
        match source {
            ImageSource::Artifact(path) => check_tarball(path),
            ImageSource::SourceUrl(url) => check_source_url(url),
            ImageSource::Id(id) if !is_uuid(id.as_str()) => Err(Error::invalid(
                "source",
                format!("`{id}` is not a slug id (a UUID, 8-4-4-4-12 hex digits)"),
            )),
            ImageSource::Id(_) => Ok(()),
            other => Err(Error::not_supported(format!("{other}: {KINDS}"))),
        }
    }

    async fn prepare(
        &self,
        app: &App,
        source: &ImageSource,
        events: &EventSink,
    ) -> Result<ImageRef> {
        if !matches!(
            source,
            ImageSource::Artifact(_) | ImageSource::SourceUrl(_) | ImageSource::Id(_)
        ) {
            return Err(Error::not_supported(format!("{source}: {KINDS}")));
        }
        let (control, vars) = self.control(app).await?;
        match source {
            ImageSource::Artifact(path) => self.prepare_artifact(app, path, &control, &vars).await,
            ImageSource::SourceUrl(url) => self.prepare_source(app, url, &control, events).await,
            ImageSource::Id(id) => {
                if let Some(entry) = entries(&vars).into_iter().find(|e| e.id == id.as_str()) {
                    return Ok(image_ref(app, &entry));
                }
                let slug: Slug = self
                    .client
                    .get(&format!(
                        "/apps/{}/slugs/{}",
                        seg(&control),
                        seg(id.as_str())
                    ))
                    .await?;
                self.register(app, &control, &slug, format!("slug {id}"), None)
                    .await
            }
            _ => unreachable!("checked above"),
        }
    }

    async fn images(&self, app: &App) -> Result<Vec<ImageRef>> {
        let name = self.naming.control_app(app);
        match api::config_vars(&self.client, &name).await? {
            Some(vars) if labels::owned_by(&vars, app) => {
                Ok(entries(&vars).iter().map(|e| image_ref(app, e)).collect())
            }
            _ => Ok(Vec::new()),
        }
    }

    fn capabilities(&self) -> ImageCapabilities {
        ImageCapabilities::default().with_refuses_removal_in_use(false)
    }

    async fn remove(&self, app: &App, id: &ImageId) -> Result<()> {
        let name = self.naming.control_app(app);
        let vars = match api::config_vars(&self.client, &name).await? {
            Some(vars) if labels::owned_by(&vars, app) => vars,
            _ => return Ok(()),
        };
        let key = format!("{ENTRY_PREFIX}{}", labels::var_key(id.as_str()));
        if !vars.contains_key(&key) {
            return Ok(());
        }
        match api::patch_config(&self.client, &name, &BTreeMap::from([(key, None)])).await {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}
