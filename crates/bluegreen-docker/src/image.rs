//! [`DockerImage`]: images built by the Docker daemon or resolved from its tags,
//! always used by their immutable id.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bluegreen_core::labels;
use bluegreen_core::labels::Labels;
use bluegreen_core::{App, Error, Event, EventSink, Image, ImageId, ImageRef, ImageSource, Result};
use bollard::models::ImageInspect;
use bollard::query_parameters::{
    BuildImageOptionsBuilder, ListContainersOptionsBuilder, ListImagesOptionsBuilder,
    RemoveImageOptions, RemoveImageOptionsBuilder, TagImageOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;

use crate::build;
use crate::error::{docker_error, has_status, PROVIDER};
use crate::labels::{label_filters, labels_of};

/// The repository under which images are tagged: `bluegreen/<app>-<environment>`.
pub fn repository(app: &App) -> String {
    format!("bluegreen/{}", app.slug())
}

/// How every image or tag of bluegreen's is removed: the untagged parent images
/// beneath it stay. They are the classic builder's cache, which a build of another
/// app may be building from at that moment, and they may not be bluegreen's at all
/// (a base image built locally whose tag has since moved on). Docker's default
/// removes them with the image. Only the steps that added bluegreen's labels are
/// removed after it ([`label_steps`]).
pub(crate) fn removal() -> RemoveImageOptions {
    RemoveImageOptionsBuilder::new().noprune(true).build()
}

/// The images beneath `image` that the classic builder made to set `ours`, nearest
/// first, read from the image's history. The builder sets a build's labels one a
/// step, in the order of their keys, so an image built with `ours` is itself the
/// step that set the last of them, and the steps beneath it set the others, from
/// the second last down: exactly those steps are returned, as far as each is on
/// this daemon, untagged, and set that label to that value. An image whose own step
/// set something else has none (it was not built so), and a step of the
/// Dockerfile's own never counts, whatever labels it sets or inherits. A missing
/// image has none.
async fn label_steps(docker: &Docker, image: &str, ours: &Labels) -> Result<Vec<String>> {
    let history = match docker.image_history(image).await {
        Ok(history) => history,
        Err(e) if gone(&e) => return Ok(Vec::new()),
        Err(e) => return Err(docker_error(format!("history of image {image}"), e)),
    };
    let mut wanted = ours.iter().rev();
    let mut history = history.into_iter();
    let (Some(last), Some(top)) = (wanted.next(), history.next()) else {
        return Ok(Vec::new());
    };
    if !sets(&top.created_by, last) {
        return Ok(Vec::new());
    }
    Ok(wanted
        .zip(history)
        .take_while(|(label, step)| {
            step.id.starts_with("sha256:") && step.tags.is_empty() && sets(&step.created_by, *label)
        })
        .map(|(_, step)| step.id)
        .collect())
}

/// Whether a build step's command, as the classic builder records it
/// (`/bin/sh -c #(nop)  LABEL bluegreen.app=web`), sets exactly the one `label`.
fn sets(created_by: &str, (key, value): (&String, &String)) -> bool {
    created_by
        .split_once("#(nop)")
        .and_then(|(_, command)| command.trim().strip_prefix("LABEL "))
        .and_then(|pair| pair.split_once('='))
        .is_some_and(|(k, v)| k == key && v == value)
}

/// Removes the image that bluegreen built (`image`, as inspected), unless it has a
/// tag that does not start with `prefix` (a tag someone else gave it): then only
/// its tags under `prefix` are removed, and the image stays. Otherwise its tags first (one by
/// one: the daemon removes an image of several tags by id only by force), then the
/// steps beneath it that the builder made to set `ours` ([`label_steps`]), nearest
/// first, each once nothing else is built on it; nothing further down. A missing
/// image counts as removed. When the daemon refuses because something still uses
/// the image (a container, or an image built on it), the error is
/// [`Error::Conflict`](bluegreen_core::Error::Conflict) and the steps stay.
pub(crate) async fn remove_built(
    docker: &Docker,
    image: &ImageInspect,
    prefix: &str,
    ours: &Labels,
) -> Result<()> {
    let Some(id) = image.id.as_deref() else {
        return Ok(());
    };
    let (tags, others): (Vec<String>, Vec<String>) = image
        .repo_tags
        .clone()
        .unwrap_or_default()
        .into_iter()
        .partition(|t| t.starts_with(prefix));
    let remove = |image: String| async move {
        match docker.remove_image(&image, Some(removal()), None).await {
            Ok(_) => Ok(()),
            Err(e) if gone(&e) => Ok(()),
            Err(e) => Err(docker_error(format!("image {image}"), e)),
        }
    };
    if !others.is_empty() {
        for tag in tags {
            remove(tag).await?;
        }
        tracing::debug!(image = %id, "kept: it has tags outside {prefix}");
        return Ok(());
    }
    // the history goes with the image: read it first
    let steps = label_steps(docker, id, ours).await?;
    // the last tag's removal removes the image too
    for image in tags.into_iter().chain([id.to_owned()]) {
        remove(image).await?;
    }
    for step in steps {
        match docker.remove_image(&step, Some(removal()), None).await {
            Ok(_) => {}
            Err(e) if gone(&e) => {}
            // something else is built on this step: it stays, with those beneath
            Err(e) if has_status(&e, 409) => break,
            Err(e) => return Err(docker_error(format!("image {step}"), e)),
        }
    }
    Ok(())
}

/// Whether the daemon's error says the image is not there: 404, or the 500 it
/// answers when another client removed the image during this call.
fn gone(e: &bollard::errors::Error) -> bool {
    has_status(e, 404)
        || matches!(e, bollard::errors::Error::DockerResponseServerError { status_code: 500, message }
            if message.contains("unrecognized image ID") || message.contains("No such image"))
}

/// Whether the image `id` (tagged `tags`) is one that bluegreen built with the
/// labels `ours`: it has a tag under `prefix`, or, untagged (a removal that stopped
/// half-way), its own step is the one that set the last of `ours` (see
/// [`label_steps`]). An image built `FROM` one of bluegreen's inherits its labels
/// but not that step.
pub(crate) async fn built_by_bluegreen(
    docker: &Docker,
    id: &str,
    tags: &[String],
    prefix: &str,
    ours: &Labels,
) -> Result<bool> {
    if tags.iter().any(|t| t.starts_with(prefix)) {
        return Ok(true);
    }
    let Some(last) = ours.iter().next_back() else {
        return Ok(false);
    };
    match docker.image_history(id).await {
        Ok(history) => Ok(history
            .first()
            .is_some_and(|top| sets(&top.created_by, last))),
        Err(e) if gone(&e) => Ok(false),
        Err(e) => Err(docker_error(format!("history of image {id}"), e)),
    }
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
/// [`Image::images`] lists the images with bluegreen's labels for the app that it
/// built (an image someone built `FROM` one of them inherits the labels, and is
/// neither listed nor removed); [`Image::remove`] removes only those, and only when
/// no container uses them (a missing image, or one that is not such, succeeds and
/// changes nothing); tags
/// outside `bluegreen/` are never removed, and an image that still has one is kept.
/// The untagged parent images beneath a removed image (the classic builder's cache
/// of the Dockerfile's steps) stay: another app's build may be building from them
/// at that moment, and a parent need not be bluegreen's; only the steps that added
/// bluegreen's labels go with it (told by their `LABEL` command in the image's
/// history, so the steps of a Dockerfile built on an image of bluegreen's stay
/// although they inherit its labels). `docker image prune` removes the rest once
/// no image is built on them.
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
                    build::lost_its_base(&error),
                ),
                e => docker_error(format!("build of {}", context.display()), e),
            })?;
            if let Some(error) = info.error {
                return Err(Error::provider(
                    PROVIDER,
                    format!("build of {}: {}", context.display(), error.trim()),
                    build::lost_its_base(&error),
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
        match self.docker.remove_image(tag, Some(removal()), None).await {
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

/// What a Docker image can be prepared from, for errors.
const KINDS: &str = "use a build context, a tag or an image id";

/// Checks a build context without the daemon: a directory with a `Dockerfile` at its
/// root, inside it, whose first instruction (after comments, parser directives and
/// `ARG`s) is `FROM`, and build arguments with names.
fn check_context(context: &Path, args: &std::collections::BTreeMap<String, String>) -> Result<()> {
    let shown = context.display();
    let meta = match std::fs::metadata(context) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::not_found(format!("build context {shown}")))
        }
        Err(e) => {
            return Err(Error::invalid(
                "source",
                format!("build context {shown} cannot be read: {e}"),
            ))
        }
    };
    if !meta.is_dir() {
        return Err(Error::invalid(
            "source",
            format!("build context {shown} is not a directory"),
        ));
    }
    let dockerfile = context.join("Dockerfile");
    let invalid = |why: String| Error::invalid("source", format!("build context {shown}: {why}"));
    let real = match dockerfile.canonicalize() {
        Ok(real) => real,
        Err(_) if dockerfile.symlink_metadata().is_ok() => {
            return Err(invalid("its Dockerfile is a link to nothing".into()))
        }
        Err(_) => return Err(invalid("it has no Dockerfile at its root".into())),
    };
    let root = context
        .canonicalize()
        .map_err(|e| invalid(format!("it cannot be read: {e}")))?;
    if !real.starts_with(&root) {
        return Err(invalid(format!(
            "its Dockerfile is a link to {}, outside the context (the daemon sees only the context)",
            real.display()
        )));
    }
    if !real.is_file() {
        return Err(invalid("its Dockerfile is not a file".into()));
    }
    let text = std::fs::read_to_string(&real)
        .map_err(|e| invalid(format!("its Dockerfile cannot be read as text: {e}")))?;
    first_instruction_is_from(&text).map_err(|why| invalid(format!("its Dockerfile {why}")))?;
    if let Some(name) = args
        .keys()
        .find(|k| k.is_empty() || k.contains(|c: char| c == '=' || c.is_whitespace()))
    {
        return Err(Error::invalid(
            "source.args",
            format!("`{name}` is not a build argument name (no `=`, no spaces, not empty)"),
        ));
    }
    Ok(())
}

/// Whether a Dockerfile's first instruction is `FROM` (only parser directives,
/// comments and `ARG` may come before it).
fn first_instruction_is_from(text: &str) -> std::result::Result<(), String> {
    let mut continued = false;
    for line in text.lines() {
        let line = line.trim();
        let continues = line.ends_with('\\');
        if continued || line.is_empty() || line.starts_with('#') {
            continued = continues && !line.starts_with('#');
            continue;
        }
        continued = continues;
        let word = line.split_whitespace().next().unwrap_or_default();
        match word.to_ascii_uppercase().as_str() {
            "ARG" => continue,
            "FROM" => return Ok(()),
            _ => return Err(format!("starts with `{word}`, not `FROM`")),
        }
    }
    Err("has no `FROM` instruction".into())
}

/// Checks an image reference's syntax (`[registry[:port]/]path[:tag][@digest]`, the
/// path in lowercase components): `Err` says what is wrong.
pub(crate) fn check_reference(reference: &str) -> std::result::Result<(), String> {
    let (rest, digest) = match reference.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (reference, None),
    };
    if let Some(digest) = digest {
        let (algorithm, hex) = digest
            .split_once(':')
            .ok_or_else(|| format!("its digest `{digest}` is not algorithm:hex"))?;
        let algorithm_ok = !algorithm.is_empty()
            && algorithm.split(['+', '.', '_', '-']).all(|p| {
                !p.is_empty()
                    && p.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            });
        if !algorithm_ok || hex.len() < 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "its digest `{digest}` is not algorithm:hex (32 hex digits or more)"
            ));
        }
    }
    // a tag follows the last `:` after the last `/` (a `:` before it is a port)
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(tag) = tag {
        let ok = (1..=128).contains(&tag.len())
            && !tag.starts_with(['.', '-'])
            && tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !ok {
            return Err(format!(
                "its tag `{tag}` is not 1 to 128 letters, digits, `_`, `.` and `-` (not first)"
            ));
        }
    }
    if name.is_empty() || name.len() > 255 {
        return Err("its name is empty or longer than 255 characters".into());
    }
    let mut components: Vec<&str> = name.split('/').collect();
    let first = components[0];
    if components.len() > 1
        && (first.contains(['.', ':'])
            || first == "localhost"
            || first.bytes().any(|b| b.is_ascii_uppercase()))
    {
        let (host, port) = match first.rsplit_once(':') {
            Some((host, port))
                if !host.ends_with(']') || port.bytes().all(|b| b.is_ascii_digit()) =>
            {
                (host, Some(port))
            }
            _ => (first, None),
        };
        let host_ok = !host.is_empty()
            && (host.starts_with('[') && host.ends_with(']')
                || host.split('.').all(|label| {
                    !label.is_empty()
                        && !label.starts_with('-')
                        && !label.ends_with('-')
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                }));
        let port_ok = port
            .is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
        if !host_ok || !port_ok {
            return Err(format!("its registry `{first}` is not host[:port]"));
        }
        components.remove(0);
    }
    for component in components {
        if !path_component_ok(component) {
            return Err(format!(
                "`{component}` is not a name component (lowercase letters and digits, \
                 separated by one `.`, one or two `_`, or `-`s)"
            ));
        }
    }
    Ok(())
}

/// `[a-z0-9]+` joined by `.`, `_`, `__` or one or more `-`.
fn path_component_ok(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let separator = &component[start..i];
        let ok = matches!(separator, "." | "_" | "__") || separator.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// Whether `id` can be an image id: `sha256:` and 64 hex digits, or 12 to 64 hex
/// digits (an id or its short form).
fn id_ok(id: &str) -> bool {
    let hex = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    match id.strip_prefix("sha256:") {
        Some(digits) => digits.len() == 64 && hex(digits),
        None => (12..=64).contains(&id.len()) && hex(id),
    }
}

#[async_trait]
impl Image for DockerImage {
    /// Refuses, without asking the daemon: a build context that is missing
    /// (`NotFound`), not a directory, without a `Dockerfile` at its root (or with
    /// one that links outside the context or does not begin with `FROM`), build
    /// arguments without a name; a tag that is not an image reference; an id that
    /// is not `sha256:<64 hex>` or 12 to 64 hex digits (`Invalid` naming `source`);
    /// and kinds of source Docker does not take (`NotSupported`).
    fn check_source(&self, source: &ImageSource, _release: &bluegreen_core::Release) -> Result<()> {
        match source {
            ImageSource::Build { context, args } => check_context(context, args),
            ImageSource::Reference(reference) => check_reference(reference).map_err(|why| {
                Error::invalid(
                    "source",
                    format!("`{reference}` is not an image reference: {why}"),
                )
            }),
            ImageSource::Id(id) if !id_ok(id.as_str()) => Err(Error::invalid(
                "source",
                format!(
                    "`{id}` is not an image id (sha256:<64 hex digits>, or 12 to 64 hex digits)"
                ),
            )),
            ImageSource::Id(_) => Ok(()),
            other => Err(Error::not_supported(format!("{other} on Docker ({KINDS})"))),
        }
    }

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
            other => return Err(Error::not_supported(format!("{other} on Docker ({KINDS})"))),
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
        let prefix = format!("{}:", repository(app));
        let mut built = Vec::new();
        for i in list {
            if labels::is_owned_by(&labels_of(Some(&i.labels)), app)
                && built_by_bluegreen(&self.docker, &i.id, &i.repo_tags, &prefix, &owned).await?
            {
                built.push(i);
            }
        }
        Ok(built
            .into_iter()
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
        let prefix = format!("{}:", repository(app));
        let tags = inspect.repo_tags.clone().unwrap_or_default();
        let owned = labels::app_labels(app);
        if !built_by_bluegreen(&self.docker, &full_id, &tags, &prefix, &owned).await? {
            tracing::debug!(image = %id, "not removed: built on one of bluegreen's, not by it");
            return Ok(());
        }
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
        remove_built(&self.docker, &inspect, &prefix, &owned).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_steps_are_told_by_their_command() {
        let (app, web) = ("bluegreen.app".to_owned(), "web".to_owned());
        for (command, label_step) in [
            ("/bin/sh -c #(nop)  LABEL bluegreen.app=web", true),
            // another value, another key, more than the one label
            ("/bin/sh -c #(nop)  LABEL bluegreen.app=api", false),
            ("/bin/sh -c #(nop)  LABEL bluegreen.app=webx", false),
            ("/bin/sh -c #(nop)  LABEL bluegreen.owner=web", false),
            (
                "/bin/sh -c #(nop)  LABEL bluegreen.app=web bluegreen.owner=x",
                false,
            ),
            ("/bin/sh -c #(nop)  LABEL ", false),
            ("/bin/sh -c #(nop)  LABEL bluegreen.app", false),
            // the Dockerfile's own steps
            ("/bin/sh -c #(nop) COPY file:85 in /f ", false),
            ("/bin/sh -c echo LABEL bluegreen.app=web", false),
            ("/bin/sh -c #(nop)  ENV LABEL bluegreen.app=web", false),
            ("", false),
        ] {
            assert_eq!(sets(command, (&app, &web)), label_step, "{command}");
        }
    }

    #[test]
    fn image_references_parse_as_docker_parses_them() {
        for good in [
            "web",
            "web:2",
            "bluegreen/web-production:0123456789ab",
            "library/busybox:1.36.1",
            "127.0.0.1:5000/bluegreen/web-x@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "registry.example.com/team/web:v1.2-rc_3",
            "localhost/web",
            "localhost:5000/a__b/c.d/e---f:latest",
            "[::1]:5000/web:1",
        ] {
            check_reference(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        for (bad, why) in [
            ("", "name is empty"),
            ("Web:2", "`Web` is not a name component"),
            ("web:", "tag ``"),
            ("web:-x", "tag `-x`"),
            ("web:a b", "tag `a b`"),
            ("web/", "`` is not a name component"),
            ("we..b", "`we..b`"),
            ("web_", "`web_`"),
            ("a___b", "`a___b`"),
            ("web@sha256:xyz", "digest"),
            ("web@md5", "digest"),
            ("exa_mple.com/web", "`exa_mple.com` is not host[:port]"),
            ("example.com:port/web", "is not host[:port]"),
            ("/etc/hostname", "`` is not a name component"),
        ] {
            let e = check_reference(bad).expect_err(bad);
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert!(check_reference(&"a".repeat(256)).is_err());
        assert!(check_reference(&format!("web:{}", "t".repeat(129))).is_err());
    }

    #[test]
    fn a_dockerfile_starts_with_from() {
        first_instruction_is_from("FROM scratch\n").unwrap();
        first_instruction_is_from(
            "# syntax=docker/dockerfile:1\n\nARG BASE=\\\n  scratch\nfrom ${BASE}\n",
        )
        .unwrap();
        let e = first_instruction_is_from("COPY x /x\nFROM scratch\n").unwrap_err();
        assert!(e.contains("starts with `COPY`"), "{e}");
        let e = first_instruction_is_from("# only a comment\n\n").unwrap_err();
        assert!(e.contains("no `FROM`"), "{e}");
        let e = first_instruction_is_from("just words\n").unwrap_err();
        assert!(e.contains("`just`"), "{e}");
    }

    #[test]
    fn image_ids_are_digests_or_hex() {
        assert!(id_ok(&format!("sha256:{}", "a".repeat(64))));
        assert!(id_ok("0123456789ab"));
        assert!(!id_ok("sha256:abc"));
        assert!(!id_ok("web:2"));
        assert!(!id_ok("0123456789AB"));
        assert!(!id_ok("0123"));
    }
}
