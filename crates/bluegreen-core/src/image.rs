//! Images: immutable artifacts with immutable ids, and the [`Image`] trait that
//! prepares them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::SystemTime;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::app::App;
use crate::capabilities::ImageCapabilities;
use crate::error::Result;
use crate::event::EventSink;
use crate::id::string_id;
use crate::release::Release;

string_id!(
    /// An immutable image id: a Docker image id, an AMI id, a slug id, a content hash.
    /// Never a mutable tag.
    ImageId
);

/// Where an image comes from. A provider supports the kinds that make sense on its
/// platform and answers [`Error::NotSupported`](crate::Error::NotSupported) for the others.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ImageSource {
    /// An image that already exists, by its immutable id.
    Id(ImageId),
    /// A mutable reference to resolve to an id: a Docker tag, an AMI name or
    /// `tag:Key=Value`, a name known to the in-memory provider.
    Reference(String),
    /// A local artifact taken as it is: an executable or a directory, a slug tarball.
    Artifact(PathBuf),
    /// A build context (a directory with a Dockerfile), with build arguments.
    Build {
        /// The context directory.
        context: PathBuf,
        /// Build arguments.
        args: BTreeMap<String, String>,
    },
    /// A source tarball at a URL, built by the platform.
    SourceUrl(String),
    /// A base image and a provisioning script run on a builder (an AMI bake).
    Bake {
        /// The base image (an AMI id).
        base: String,
        /// The provisioning script (user data).
        script: String,
    },
}

impl std::fmt::Display for ImageSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImageSource::Id(id) => write!(f, "image {id}"),
            ImageSource::Reference(r) => write!(f, "reference {r}"),
            ImageSource::Artifact(p) => write!(f, "artifact {}", p.display()),
            ImageSource::Build { context, .. } => write!(f, "build of {}", context.display()),
            ImageSource::SourceUrl(u) => write!(f, "source {u}"),
            ImageSource::Bake { base, .. } => write!(f, "bake from {base}"),
        }
    }
}

/// A prepared image of an app.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRef {
    /// The immutable id.
    pub id: ImageId,
    /// The app the image belongs to.
    pub app: App,
    /// When the platform created it; retention keeps the newest.
    pub created_at: SystemTime,
    /// What it was prepared from, for people (`reference web:v2`).
    pub origin: String,
}

impl ImageRef {
    /// An image reference.
    pub fn new(id: ImageId, app: App, created_at: SystemTime, origin: impl Into<String>) -> Self {
        ImageRef {
            id,
            app,
            created_at,
            origin: origin.into(),
        }
    }
}

/// Turns a source into an immutable image, lists an app's images and removes one.
///
/// Images that bluegreen prepares carry its labels (see [`crate::labels`]); `images`
/// and `remove` see only those.
#[async_trait]
pub trait Image: Send + Sync {
    /// Prepares an image of `app` from `source`, building it where needed, and
    /// reports build output through `events`.
    ///
    /// # Behavior
    /// - Idempotent: preparing the same source twice may build twice but must return
    ///   an image with the same content; a provider that can tell reuses the first.
    /// - A mutable reference is resolved to the immutable id once, here.
    /// - A missing source is [`Error::NotFound`](crate::Error::NotFound); a kind of
    ///   source the provider cannot handle is
    ///   [`Error::NotSupported`](crate::Error::NotSupported).
    async fn prepare(
        &self,
        app: &App,
        source: &ImageSource,
        events: &EventSink,
    ) -> Result<ImageRef>;

    /// Checks a source before anything happens: the engine calls it while it
    /// validates a request, with the release the request gives (its image not
    /// prepared yet), so that a source that cannot possibly run (an artifact that is
    /// not a program, a build context without its recipe) is refused before any side
    /// effect.
    ///
    /// # Behavior
    /// Makes no platform call and changes nothing (it may read local files). A source
    /// that cannot work is [`Error::Invalid`](crate::Error::Invalid) naming `source`
    /// and why; a local path that does not exist is
    /// [`Error::NotFound`](crate::Error::NotFound). The default accepts everything.
    fn check_source(&self, source: &ImageSource, release: &Release) -> Result<()> {
        let _ = (source, release);
        Ok(())
    }

    /// The images of `app` that carry bluegreen's labels, in any order.
    ///
    /// # Behavior
    /// An app with no image gives an empty list, not an error.
    async fn images(&self, app: &App) -> Result<Vec<ImageRef>>;

    /// Removes one image of `app` (retention).
    ///
    /// # Behavior
    /// - Idempotent: removing a missing image succeeds.
    /// - An image without bluegreen's labels for `app` is never removed: the call
    ///   succeeds and leaves it alone.
    /// - An image still used by an instance is
    ///   [`Error::Conflict`](crate::Error::Conflict).
    async fn remove(&self, app: &App, id: &ImageId) -> Result<()>;

    /// What the provider can do: whether `remove` refuses an image still in use.
    /// The default declares the whole contract.
    fn capabilities(&self) -> ImageCapabilities {
        ImageCapabilities::default()
    }
}

#[async_trait]
impl<T: Image + ?Sized> Image for std::sync::Arc<T> {
    async fn prepare(
        &self,
        app: &App,
        source: &ImageSource,
        events: &EventSink,
    ) -> Result<ImageRef> {
        (**self).prepare(app, source, events).await
    }
    fn check_source(&self, source: &ImageSource, release: &Release) -> Result<()> {
        (**self).check_source(source, release)
    }
    async fn images(&self, app: &App) -> Result<Vec<ImageRef>> {
        (**self).images(app).await
    }
    async fn remove(&self, app: &App, id: &ImageId) -> Result<()> {
        (**self).remove(app, id).await
    }
    fn capabilities(&self) -> ImageCapabilities {
        (**self).capabilities()
    }
}
