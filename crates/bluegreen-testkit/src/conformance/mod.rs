//! The conformance suite: free async functions that any provider calls from its own
//! tests, checking the `# Behavior` contract of each trait method.
//!
//! Each function cleans its fixtures first, panics with a message that names the
//! broken rule, and cleans up after itself. Which checks apply is decided by the
//! provider's declared [`FleetCapabilities`](bluegreen_core::FleetCapabilities) and [`RouterCapabilities`](bluegreen_core::RouterCapabilities), never by its
//! name.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! use std::sync::Arc;
//! use bluegreen_core::{App, ImageSource};
//! use bluegreen_testkit::{conformance, MemoryPlatform};
//!
//! let platform = MemoryPlatform::new();
//! let app = App::new("conformance", "test").unwrap();
//! let sources = conformance::Sources {
//!     good: ImageSource::Reference("app:1".into()),
//!     other: ImageSource::Reference("app:2".into()),
//!     never_healthy: None,
//! };
//! conformance::run_all(
//!     Arc::new(platform.image()), Arc::new(platform.fleet()), Arc::new(platform.router()),
//!     &app, &sources, &conformance::Settings::default(),
//! ).await;
//! # }
//! ```

mod deployment;
mod fleet;
mod image;
mod lock;
mod router;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bluegreen_core::{App, Fleet, Health, Image, ImageSource, Instance, Router};

pub use deployment::deployment_with_rollback;
pub use fleet::{fleet_launch_list_destroy, fleet_missing_resources};
pub use image::image_prepare_list_remove;
pub use lock::{lock_contract, lock_contract_across};
pub use router::{router_contract, router_routes_and_attachments};

/// The image sources a provider's suite deploys.
#[derive(Clone, Debug)]
pub struct Sources {
    /// A source whose instances become healthy.
    pub good: ImageSource,
    /// A second, different source whose instances become healthy.
    pub other: ImageSource,
    /// A source whose instances never become healthy, where the provider can make one
    /// (it enables the automatic-rollback check).
    pub never_healthy: Option<ImageSource>,
}

/// Bounds and settings for a provider's suite.
#[non_exhaustive]
#[derive(Clone, Debug)]
pub struct Settings {
    /// How long instances may take to become healthy.
    pub health_timeout: Duration,
    /// How often to poll.
    pub poll_interval: Duration,
    /// How many instances a test group has.
    pub size: u32,
    /// Instance settings the provider needs in every release.
    pub release_settings: BTreeMap<String, String>,
    /// Environment every release gets.
    pub release_env: BTreeMap<String, String>,
    /// How long requests drain after a switch (short in tests).
    pub drain: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            health_timeout: Duration::from_secs(120),
            poll_interval: Duration::from_millis(250),
            size: 2,
            release_settings: BTreeMap::new(),
            release_env: BTreeMap::new(),
            drain: Duration::from_millis(100),
        }
    }
}

impl Settings {
    /// Sets the health timeout.
    pub fn with_health_timeout(mut self, timeout: Duration) -> Self {
        self.health_timeout = timeout;
        self
    }

    /// Sets the group size.
    pub fn with_size(mut self, size: u32) -> Self {
        self.size = size;
        self
    }

    /// Adds an instance setting to every release.
    pub fn with_setting(mut self, key: &str, value: &str) -> Self {
        self.release_settings.insert(key.into(), value.into());
        self
    }

    /// Adds an environment variable to every release.
    pub fn with_env(mut self, key: &str, value: &str) -> Self {
        self.release_env.insert(key.into(), value.into());
        self
    }
}

/// Runs every check of the suite that the providers' capabilities allow.
pub async fn run_all(
    image: Arc<dyn Image>,
    fleet: Arc<dyn Fleet>,
    router: Arc<dyn Router>,
    app: &App,
    sources: &Sources,
    settings: &Settings,
) {
    image_prepare_list_remove(&*image, app, &sources.good).await;
    fleet_missing_resources(&*fleet, app).await;
    fleet_launch_list_destroy(&*image, &*fleet, app, &sources.good, settings).await;
    router_routes_and_attachments(&*image, &*fleet, &*router, app, sources, settings).await;
    deployment_with_rollback(image, fleet, router, app, sources, settings).await;
}

/// Destroys every group of `app` and clears its routes: the fixture cleaning each
/// check does first and last.
pub async fn clean(fleet: &dyn Fleet, router: &dyn Router, app: &App) {
    router
        .set_routes(app, &bluegreen_core::RouteTable::empty())
        .await
        .expect("clearing the routes (set_routes with the empty table) must succeed");
    let groups = fleet.groups(app).await.expect("groups must list");
    for g in groups {
        router
            .detach(app, &g.id)
            .await
            .expect("detach must succeed");
        fleet
            .destroy(app, &g.id)
            .await
            .expect("destroy must succeed");
    }
}

/// Polls `fleet` until `group` has `size` healthy instances, or panics after the
/// settings' health timeout.
pub async fn wait_healthy(
    fleet: &dyn Fleet,
    app: &App,
    group: &bluegreen_core::GroupId,
    size: u32,
    settings: &Settings,
) -> Vec<Instance> {
    let deadline = tokio::time::Instant::now() + settings.health_timeout;
    loop {
        let instances = fleet
            .instances(app, group)
            .await
            .unwrap_or_else(|e| panic!("instances of a launched group {group} must list: {e}"));
        if instances
            .iter()
            .filter(|i| i.health == Health::Healthy)
            .count()
            >= size as usize
        {
            return instances;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{group} did not become healthy within {:?}: {instances:?}",
            settings.health_timeout
        );
        tokio::time::sleep(settings.poll_interval).await;
    }
}
