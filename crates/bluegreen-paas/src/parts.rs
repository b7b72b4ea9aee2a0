//! The provider's parts as one value, with the platform's lock.

use bluegreen_core::Parts;

use crate::image::SlugImage;
use crate::lock::PlatformLock;
use crate::release_fleet::ReleaseFleet;
use crate::router::DomainRouter;

impl DomainRouter {
    /// App mode's parts: a [`SlugImage`], the router's [`AppFleet`](crate::AppFleet),
    /// this router, and a [`PlatformLock`], all through the fleet's client and
    /// [`Naming`](crate::Naming). Engines on any machine built from them exclude each
    /// other.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), bluegreen_core::Error> {
    /// use bluegreen_core::{App, Engine};
    /// use bluegreen_paas::{AppFleet, DomainRouter, PlatformClient};
    /// let app = App::new("web", "production")?;
    /// let fleet = AppFleet::new(PlatformClient::from_env(None)?);
    /// let router = DomainRouter::new(fleet).with_domains(&app, ["www.example.com"]);
    /// let engine = Engine::from_parts(router.parts());
    /// # Ok(()) }
    /// ```
    pub fn parts(&self) -> Parts {
        let fleet = self.fleet.clone();
        let client = fleet.client().clone();
        let naming = fleet.naming().clone();
        Parts::new(
            SlugImage::new(client.clone()).with_naming(naming.clone()),
            fleet,
            self.clone(),
            PlatformLock::new(client).with_naming(naming),
        )
    }
}

impl ReleaseFleet {
    /// Release mode's parts: a [`SlugImage`], this fleet, its
    /// [`router`](ReleaseFleet::router), and a [`PlatformLock`], all through the
    /// fleet's client and [`Naming`](crate::Naming). Engines on any machine built from
    /// them exclude each other.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), bluegreen_core::Error> {
    /// use bluegreen_core::Engine;
    /// use bluegreen_paas::{PlatformClient, ReleaseFleet};
    /// let fleet = ReleaseFleet::new(PlatformClient::from_env(None)?);
    /// let engine = Engine::from_parts(fleet.parts());
    /// # Ok(()) }
    /// ```
    pub fn parts(&self) -> Parts {
        let client = self.client.clone();
        let naming = self.naming.clone();
        Parts::new(
            SlugImage::new(client.clone()).with_naming(naming.clone()),
            self.clone(),
            self.router(),
            PlatformLock::new(client).with_naming(naming),
        )
    }
}
