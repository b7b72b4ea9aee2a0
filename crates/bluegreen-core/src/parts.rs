//! [`Parts`]: what a provider hands over to an [`Engine`](crate::Engine), its lock
//! included.

use std::fmt;
use std::sync::Arc;

use crate::fleet::Fleet;
use crate::image::Image;
use crate::lock::Lock;
use crate::router::Router;

/// A provider's parts as one value: its [`Image`], [`Fleet`], [`Router`] and the
/// [`Lock`] that excludes every deployer that shares its platform.
///
/// Each provider crate offers a constructor that returns its parts with its own
/// cross-machine lock (the local provider's `FileLock`, the Docker daemon's
/// `DockerLock`, the swarm's `SwarmLock`, the account's `Ec2Lock`, the platform's
/// `PlatformLock`), so that an engine built with [`Engine::from_parts`] never falls
/// back to the in-process [`MemoryLock`](crate::MemoryLock) by accident. The
/// `with_*` methods replace one part (a router from another crate, a lock shared
/// wider).
///
/// [`Engine::from_parts`]: crate::Engine::from_parts
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), bluegreen_core::Error> {
/// use bluegreen_core::{App, DeployRequest, Engine, ImageSource};
/// use bluegreen_testkit::MemoryPlatform;
///
/// let platform = MemoryPlatform::new();
/// // the platform's parts, with the lock of that platform
/// let engine = Engine::from_parts(platform.parts());
/// let app = App::new("web", "production")?;
/// engine.deploy(&DeployRequest::new(app, ImageSource::Reference("web:1".into()))).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct Parts {
    /// Builds or resolves images.
    pub image: Arc<dyn Image>,
    /// Launches, lists and destroys groups.
    pub fleet: Arc<dyn Fleet>,
    /// Moves the traffic.
    pub router: Arc<dyn Router>,
    /// The per-app deployment lock shared by every deployer of the platform.
    pub lock: Arc<dyn Lock>,
}

impl Parts {
    /// Parts from four providers.
    pub fn new(
        image: impl Image + 'static,
        fleet: impl Fleet + 'static,
        router: impl Router + 'static,
        lock: impl Lock + 'static,
    ) -> Self {
        Parts::from_arcs(
            Arc::new(image),
            Arc::new(fleet),
            Arc::new(router),
            Arc::new(lock),
        )
    }

    /// Parts from shared providers.
    pub fn from_arcs(
        image: Arc<dyn Image>,
        fleet: Arc<dyn Fleet>,
        router: Arc<dyn Router>,
        lock: Arc<dyn Lock>,
    ) -> Self {
        Parts {
            image,
            fleet,
            router,
            lock,
        }
    }

    /// The same parts with another image provider.
    pub fn with_image(mut self, image: impl Image + 'static) -> Self {
        self.image = Arc::new(image);
        self
    }

    /// The same parts with another fleet.
    pub fn with_fleet(mut self, fleet: impl Fleet + 'static) -> Self {
        self.fleet = Arc::new(fleet);
        self
    }

    /// The same parts with another router.
    pub fn with_router(mut self, router: impl Router + 'static) -> Self {
        self.router = Arc::new(router);
        self
    }

    /// The same parts with another lock (one shared wider, say).
    pub fn with_lock(mut self, lock: Arc<dyn Lock>) -> Self {
        self.lock = lock;
        self
    }
}

impl fmt::Debug for Parts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Parts").finish_non_exhaustive()
    }
}
