//! The provider's parts as one value, with the machine's lock.

use bluegreen_core::{Parts, Router};

use crate::fleet::LocalFleet;
use crate::lock::FileLock;

impl LocalFleet {
    /// The provider's parts: the fleet's [`LocalImage`](crate::LocalImage), this
    /// fleet, `router` (the proxy's, [`LocalProxy::router`](crate::LocalProxy::router)),
    /// and the [`FileLock`] of the fleet's state directory. Engines built from them,
    /// in any program on this machine that uses the same state directory, exclude
    /// each other.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), bluegreen_core::Error> {
    /// use bluegreen_core::Engine;
    /// use bluegreen_local::{LocalFleet, LocalImage, LocalProxy, StateDir};
    /// let state = StateDir::default_location()?;
    /// let fleet = LocalFleet::new(state.clone(), LocalImage::new(state));
    /// let proxy = LocalProxy::embedded("127.0.0.1:8080".parse().unwrap(), Default::default()).await?;
    /// let engine = Engine::from_parts(fleet.parts(proxy.router()));
    /// # Ok(()) }
    /// ```
    pub fn parts(&self, router: impl Router + 'static) -> Parts {
        Parts::new(
            self.images.clone(),
            self.clone(),
            router,
            FileLock::new(&self.state),
        )
    }
}
