//! The provider's parts as one value, with the lock of the daemon or the swarm.

use bluegreen_core::{Parts, Router};

use crate::fleet::DockerFleet;
use crate::image::DockerImage;
use crate::lock::DockerLock;
use crate::registry::RegistryImage;
use crate::swarm_fleet::SwarmFleet;
use crate::swarm_lock::SwarmLock;

impl DockerFleet {
    /// The single host's parts: a [`DockerImage`], this fleet, `router` (a
    /// [`ProxyContainer`](crate::ProxyContainer)'s or an
    /// [`EmbeddedProxy`](crate::EmbeddedProxy)'s), and a [`DockerLock`], all on the
    /// fleet's daemon. Engines built from them, on any machine that deploys through
    /// that daemon, exclude each other.
    ///
    /// ```no_run
    /// # async fn run() -> bluegreen_core::Result<()> {
    /// use bluegreen_core::Engine;
    /// use bluegreen_docker::{connect, DockerFleet, EmbeddedProxy};
    /// let fleet = DockerFleet::new(connect().await?, Default::default());
    /// let proxy = EmbeddedProxy::start("127.0.0.1:8080".parse().unwrap(), Default::default()).await?;
    /// let engine = Engine::from_parts(fleet.parts(proxy.router()));
    /// # Ok(()) }
    /// ```
    pub fn parts(&self, router: impl Router + 'static) -> Parts {
        let docker = self.docker.clone();
        Parts::new(
            DockerImage::new(docker.clone()),
            self.clone(),
            router,
            DockerLock::new(docker),
        )
    }
}

impl SwarmFleet {
    /// The swarm's parts: `image` (a [`RegistryImage`] that pushes where the nodes
    /// pull), this fleet, `router`, and a [`SwarmLock`] in the swarm the fleet's
    /// manager belongs to. Engines built from them, on any machine that deploys to
    /// that swarm through any of its managers, exclude each other.
    ///
    /// ```no_run
    /// # async fn run() -> bluegreen_core::Result<()> {
    /// use bluegreen_core::Engine;
    /// use bluegreen_docker::{connect, EmbeddedProxy, RegistryImage, SwarmFleet};
    /// let manager = connect().await?;
    /// let image = RegistryImage::new(manager.clone(), "registry.internal:5000")?;
    /// let proxy = EmbeddedProxy::start("127.0.0.1:8080".parse().unwrap(), Default::default()).await?;
    /// let engine = Engine::from_parts(SwarmFleet::new(manager).parts(image, proxy.router()));
    /// # Ok(()) }
    /// ```
    pub fn parts(&self, image: RegistryImage, router: impl Router + 'static) -> Parts {
        Parts::new(
            image,
            self.clone(),
            router,
            SwarmLock::new(self.docker.clone()),
        )
    }
}
