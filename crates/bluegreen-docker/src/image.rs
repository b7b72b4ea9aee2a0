//! [`DockerImage`]: images built by the Docker daemon or resolved from its tags,
//! always used by their immutable id.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bluegreen_core::labels;
use bluegreen_core::{App, Error, Event, EventSink, Image, ImageId, ImageRef, ImageSource, Result};
use bollard::query_parameters::{
    BuildImageOptionsBuilder, ListContainersOptionsBuilder, ListImagesOptionsBuilder,
    RemoveImageOptionsBuilder, TagImageOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;

use crate::error::{docker_error, has_status, PROVIDER};
use crate::labels::{label_filters, labels_of};

/// The repository under which images are tagged: `bluegreen/<app>-<environment>`.
pub fn repository(app: &App) -> String {
    format!("bluegreen/{}", app.slug())
}

/// Images on a Docker daemon.
///
/// - [`ImageSource::Build`]: the context directory is sent to the daemon as a tar
///   archive (symbolic links kept as links, no `.dockerignore` filtering) with the
///   build arguments, and built with the classic builder, its `Dockerfile` at the
///   context's root. The image carries bluegreen's labels for the app (the
///   `labels` build parameter) and is tagged `bluegreen/<app>-<environment>:<first
///   12 hex digits of its id>`, so that `docker image prune` leaves it alone. Each
///   line of build output is an [`Event::BuildOutput`].
/// - [`ImageSource::Reference`]: a local tag (`web:2`), resolved to its id once.
///   Nothing is pulled.
/// - [`ImageSource::Id`]: an image id, checked to exist.
///
/// The result is always the immutable id (`sha256:...`). Other sources are
/// [`Error::NotSupported`].
///
/// [`Image::images`] lists the images with bluegreen's labels for the app;
/// [`Image::remove`] removes only those, and only when no container uses them; tags
/// outside `bluegreen/` are never removed, and an image that still has one is kept.
#[derive(Clone, Debug)]
pub struct DockerImage {
    docker: Docker,
}

impl DockerImage {
    /// Images on the daemon `docker` talks to (see [`crate::connect`]).
    pub fn new(docker: Docker) -> Self {
        DockerImage { docker }
    }

    async fn inspect(&self, name: &str) -> Result<Option<bollard::models::ImageInspect>> {
        match self.docker.inspect_image(name).await {
            Ok(i) => Ok(Some(i)),
            Err(e) if has_status(&e, 404) => Ok(None),
            Err(e) => Err(docker_error(format!("image {name}"), e)),
        }
    }

    async fn build(
        &self,
        app: &App,
        context: &Path,
        args: &std::collections::BTreeMap<String, String>,
        events: &EventSink,
    ) -> Result<String> {
        if !context.is_dir() {
            return Err(Error::not_found(format!(
                "build context {}",
                context.display()
            )));
        }
        if !context.join("Dockerfile").is_file() {
            return Err(Error::not_found(format!(
                "{}",
                context.join("Dockerfile").display()
            )));
        }
        let dir = context.to_path_buf();
        let archive = tokio::task::spawn_blocking(move || tar_context(&dir))
            .await
            .map_err(|e| Error::provider_source(PROVIDER, false, e))?
            .map_err(|e| {
                Error::provider_source(
                    PROVIDER,
                    false,
                    format!("archiving {}: {e}", context.display()),
                )
            })?;
        let build_tag = format!("{}:build-{:016x}", repository(app), fastrand::u64(..));
        let image_labels: HashMap<String, String> = labels::app_labels(app).into_iter().collect();
        let build_args: HashMap<String, String> =
            args.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let options = BuildImageOptionsBuilder::new()
            .dockerfile("Dockerfile")
            .t(&build_tag)
            .rm(true)
            .forcerm(true)
            .buildargs(&build_args)
            .labels(&image_labels)
            .build();
        let mut stream =
            self.docker
                .build_image(options, None, Some(bollard::body_full(archive.into())));
        let mut id = None;
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| match e {
                bollard::errors::Error::DockerStreamError { error } => Error::provider(
                    PROVIDER,
                    format!("build of {}: {error}", context.display()),
                    false,
                ),
                e => docker_error(format!("build of {}", context.display()), e),
            })?;
            if let Some(error) = info.error {
                return Err(Error::provider(
                    PROVIDER,
                    format!("build of {}: {}", context.display(), error.trim()),
                    false,
                ));
            }
            for text in [info.stream.as_deref(), info.status.as_deref()]
                .into_iter()
                .flatten()
            {
                for line in text.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
                    events.emit(Event::BuildOutput {
                        line: line.to_owned(),
                    });
                }
            }
            if let Some(aux) = info.aux.and_then(|a| a.id) {
                id = Some(aux);
            }
        }
        let id = match id {
            Some(id) => id,
            None => self
                .inspect(&build_tag)
                .await?
                .and_then(|i| i.id)
                .ok_or_else(|| {
                    Error::provider(
                        PROVIDER,
                        format!("the build of {} gave no image", context.display()),
                        false,
                    )
                })?,
        };
        // the stable tag, then drop the build's own tag
        let short = id.trim_start_matches("sha256:");
        let tag = &short[..short.len().min(12)];
        self.docker
            .tag_image(
                &id,
                Some(
                    TagImageOptionsBuilder::new()
                        .repo(&repository(app))
                        .tag(tag)
                        .build(),
                ),
            )
            .await
            .map_err(|e| docker_error(format!("tagging image {id}"), e))?;
        self.untag(&build_tag).await?;
        Ok(id)
    }

    async fn untag(&self, tag: &str) -> Result<()> {
        match self
            .docker
            .remove_image(tag, Some(RemoveImageOptionsBuilder::new().build()), None)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if has_status(&e, 404) => Ok(()),
            Err(e) => Err(docker_error(format!("untagging {tag}"), e)),
        }
    }
}

/// A tar archive of a directory, its entries relative to it.
fn tar_context(dir: &Path) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    builder.mode(tar::HeaderMode::Deterministic);
    builder.append_dir_all(".", dir)?;
    builder.into_inner()
}

fn system_time(date: Option<bollard::models::BollardDate>) -> SystemTime {
    date.map(SystemTime::from).unwrap_or(UNIX_EPOCH)
}

#[async_trait]
impl Image for DockerImage {
    async fn prepare(
        &self,
        app: &App,
        source: &ImageSource,
        events: &EventSink,
    ) -> Result<ImageRef> {
        let id = match source {
            ImageSource::Build { context, args } => self.build(app, context, args, events).await?,
            ImageSource::Reference(tag) => self
                .inspect(tag)
                .await?
                .and_then(|i| i.id)
                .ok_or_else(|| Error::not_found(format!("image {tag}")))?,
            ImageSource::Id(id) => self
                .inspect(id.as_str())
                .await?
                .and_then(|i| i.id)
                .ok_or_else(|| Error::not_found(format!("image {id}")))?,
            other => {
                return Err(Error::not_supported(format!(
                    "{other} on Docker (use a build context, a tag or an image id)"
                )))
            }
        };
        let inspect = self
            .inspect(&id)
            .await?
            .ok_or_else(|| Error::not_found(format!("image {id}")))?;
        Ok(ImageRef::new(
            ImageId::new(id),
            app.clone(),
            system_time(inspect.created),
            source.to_string(),
        ))
    }

    async fn images(&self, app: &App) -> Result<Vec<ImageRef>> {
        let owned = labels::app_labels(app);
        let pairs: Vec<(&str, &str)> = owned
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let list = self
            .docker
            .list_images(Some(
                ListImagesOptionsBuilder::new()
                    .filters(&label_filters(&pairs))
                    .build(),
            ))
            .await
            .map_err(|e| docker_error(format!("images of {app}"), e))?;
        Ok(list
            .into_iter()
            .filter(|i| labels::is_owned_by(&labels_of(Some(&i.labels)), app))
            .map(|i| {
                let origin = i.repo_tags.first().cloned().unwrap_or_else(|| i.id.clone());
                ImageRef::new(
                    ImageId::new(i.id),
                    app.clone(),
                    UNIX_EPOCH + Duration::from_secs(i.created.max(0) as u64),
                    origin,
                )
            })
            .collect())
    }

    async fn remove(&self, app: &App, id: &ImageId) -> Result<()> {
        let Some(inspect) = self.inspect(id.as_str()).await? else {
            return Ok(());
        };
        let found = labels_of(inspect.config.as_ref().and_then(|c| c.labels.as_ref()));
        if !labels::is_owned_by(&found, app) {
            tracing::debug!(image = %id, "not removed: without bluegreen's labels for {app}");
            return Ok(());
        }
        let full_id = inspect.id.clone().unwrap_or_else(|| id.to_string());
        let users = self
            .docker
            .list_containers(Some(
                ListContainersOptionsBuilder::new()
                    .all(true)
                    .filters(&HashMap::from([("ancestor", vec![full_id.clone()])]))
                    .build(),
            ))
            .await
            .map_err(|e| docker_error(format!("containers of image {id}"), e))?;
        if !users.is_empty() {
            let names: Vec<String> = users
                .iter()
                .filter_map(|c| c.names.as_ref()?.first().cloned())
                .collect();
            return Err(Error::conflict(format!(
                "image {id} is used by containers {}",
                names.join(", ")
            )));
        }
        let prefix = format!("{}:", repository(app));
        let tags = inspect.repo_tags.unwrap_or_default();
        for tag in tags.iter().filter(|t| t.starts_with(&prefix)) {
            self.untag(tag).await?;
        }
        if tags.iter().any(|t| !t.starts_with(&prefix)) {
            tracing::debug!(image = %id, "kept: it has tags outside {prefix}");
            return Ok(());
        }
        match self
            .docker
            .remove_image(
                &full_id,
                Some(RemoveImageOptionsBuilder::new().build()),
                None,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if has_status(&e, 404) => Ok(()),
            Err(e) => Err(docker_error(format!("image {id}"), e)),
        }
    }
}
