//! The conformance suite: free async functions that any provider calls from its own
//! tests, checking the `# Behavior` contract of each trait method.
//!
//! Each function cleans its fixtures first, panics with a message that names the
//! broken rule, and cleans up after itself. Which checks apply is decided by the
//! provider's declared [`ImageCapabilities`](bluegreen_core::ImageCapabilities),
//! [`FleetCapabilities`](bluegreen_core::FleetCapabilities) and
//! [`RouterCapabilities`](bluegreen_core::RouterCapabilities), never by its name, and
//! by what the [`Settings`] give (a never-healthy source, a [`LookAlikes`] hook).
//! Each returns a [`Report`] of the rules it checked and those it skipped, with the
//! reason, and prints each rule as it ends (`conformance: passed  fleet: ...`), so
//! that a failing test shows what held before the rule that broke. Every wait is
//! bounded by the settings' health timeout, and in [`run_all`] each part by ten
//! times it, so a provider call that never returns fails the suite too. A rule
//! that breaks panics (as an assertion does) with what it expected and what it
//! got; check a failure's message with `#[should_panic(expected = "...")]`.
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
//! let report = conformance::run_all(
//!     Arc::new(platform.image()), Arc::new(platform.fleet()), Arc::new(platform.router()),
//!     &app, &sources, &conformance::Settings::default(),
//! ).await;
//! assert!(report.passed() > 10);
//! // without a never-healthy source, the revert check is skipped, and says why
//! let revert = report.find("deployment", "never becomes healthy").unwrap();
//! assert!(matches!(&revert.outcome, conformance::Outcome::Skipped { reason } if reason.contains("never_healthy")));
//! # }
//! ```

mod deployment;
mod fleet;
mod image;
mod lock;
mod look_alike;
mod report;
mod router;
mod sources;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bluegreen_core::{
    App, DeploymentId, Fleet, Generation, Group, Health, Image, ImageId, ImageSource, Instance,
    Release, Router,
};

pub use deployment::deployment_with_rollback;
pub use fleet::{fleet_launch_list_destroy, fleet_missing_resources, fleet_scale};
pub use image::{image_in_use, image_prepare_list_remove};
pub use lock::{lock_contract, lock_contract_across, lock_many_acquirers, MANY_ACQUIRERS_RULES};
pub use look_alike::{look_alikes_untouched, LookAlikes};
pub use report::{Checked, Outcome, Report};
pub use router::{
    router_contract, router_contract_with, router_never_healthy_members,
    router_routes_and_attachments,
};
pub use sources::{sources_refused, Refused};

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
#[derive(Clone)]
pub struct Settings {
    /// How long instances may take to become healthy, at the fleet and at the
    /// router: every wait of the suite is bounded by it (the engine's health and
    /// confirm timeouts too), and each part of [`run_all`] by ten times it (a
    /// provider call that never returns). Default 120 s.
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
    /// Makes look-alike resources on the provider's platform, for
    /// [`look_alikes_untouched`]. None by default: that check is then skipped.
    pub look_alikes: Option<Arc<dyn LookAlikes>>,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("health_timeout", &self.health_timeout)
            .field("poll_interval", &self.poll_interval)
            .field("size", &self.size)
            .field("release_settings", &self.release_settings)
            .field("release_env", &self.release_env)
            .field("drain", &self.drain)
            .field("look_alikes", &self.look_alikes.is_some())
            .finish()
    }
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
            look_alikes: None,
        }
    }
}

impl Settings {
    /// Sets the health timeout.
    pub fn with_health_timeout(mut self, timeout: Duration) -> Self {
        self.health_timeout = timeout;
        self
    }

    /// Sets how often the suite polls.
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Gives the hook that makes look-alike resources.
    pub fn with_look_alikes(mut self, hook: Arc<dyn LookAlikes>) -> Self {
        self.look_alikes = Some(hook);
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

/// Runs every part of the suite, checking each rule that the providers'
/// capabilities and the settings allow, prints the [`Report`] and returns it.
pub async fn run_all(
    image: Arc<dyn Image>,
    fleet: Arc<dyn Fleet>,
    router: Arc<dyn Router>,
    app: &App,
    sources: &Sources,
    settings: &Settings,
) -> Report {
    type Part<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Report> + Send + 'a>>;
    let (i, f, r) = (&*image, &*fleet, &*router);
    let good = &sources.good;
    // in order; each bounded on its own (the futures start only when awaited)
    let parts: Vec<(&str, Part<'_>)> = vec![
        ("image", Box::pin(image_prepare_list_remove(i, app, good))),
        ("image", Box::pin(image_in_use(i, f, app, good, settings))),
        ("fleet", Box::pin(fleet_missing_resources(f, app))),
        (
            "fleet",
            Box::pin(fleet_launch_list_destroy(i, f, app, good, settings)),
        ),
        ("fleet", Box::pin(fleet_scale(i, f, app, good, settings))),
        (
            "router",
            Box::pin(router_routes_and_attachments(
                i, f, r, app, sources, settings,
            )),
        ),
        (
            "router",
            Box::pin(router_never_healthy_members(
                i, f, r, app, sources, settings,
            )),
        ),
        (
            "look-alikes",
            Box::pin(look_alikes_untouched(i, f, r, app, good, settings)),
        ),
        (
            "deployment",
            Box::pin(deployment_with_rollback(
                image.clone(),
                fleet.clone(),
                router.clone(),
                app,
                sources,
                settings,
            )),
        ),
    ];
    let limit = settings.health_timeout * PART_BOUND;
    let mut report = Report::default();
    for (part, run) in parts {
        report.extend(bounded(part, limit, run).await);
    }
    println!("{report}");
    report
}

/// How many health timeouts one part of [`run_all`] may take in all: its waits are
/// each bounded by the health timeout, and this bounds the provider's calls too (a
/// call that never returns).
const PART_BOUND: u32 = 10;

/// Runs one part of the suite, or panics when it takes longer than `limit`.
async fn bounded(
    part: &str,
    limit: Duration,
    run: impl std::future::Future<Output = Report>,
) -> Report {
    tokio::time::timeout(limit, run).await.unwrap_or_else(|_| {
        panic!(
            "conformance: the {part} part did not finish within {limit:?} ({PART_BOUND} times \
             the health timeout): a provider call never returned (the rules that passed \
             before it are printed above)"
        )
    })
}

/// Destroys every group of `app` the fleet lists.
async fn remove_groups(fleet: &dyn Fleet, app: &App) {
    for g in fleet.groups(app).await.expect("groups must list") {
        fleet
            .destroy(app, &g.id)
            .await
            .expect("destroy must succeed");
    }
}

/// Prepares `source` and launches a [`test_group`] of it as `generation`: the
/// fixture of the parts that need a running group. Panics, naming the call, when
/// either fails.
async fn launch_test_group(
    image: &dyn Image,
    fleet: &dyn Fleet,
    app: &App,
    source: &ImageSource,
    generation: Generation,
    settings: &Settings,
) -> (ImageId, Group) {
    let img = image
        .prepare(app, source, &bluegreen_core::EventSink::none())
        .await
        .unwrap_or_else(|e| panic!("prepare({source}) must succeed: {e}"));
    let group = test_group(app, generation, img.id.clone(), settings);
    fleet
        .launch(&group)
        .await
        .unwrap_or_else(|e| panic!("launch of {} must succeed: {e}", group.id));
    (img.id, group)
}

/// A group of `app` the suite launches itself: `image`, the settings' size,
/// instance settings and environment.
fn test_group(app: &App, generation: Generation, image: ImageId, settings: &Settings) -> Group {
    let mut release = Release::new(image, settings.size);
    release.settings = settings.release_settings.clone();
    release.env = settings.release_env.clone();
    Group::new(
        app.clone(),
        generation,
        release,
        DeploymentId::new("d-conformance"),
        None,
    )
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
    let enough = |instances: &[Instance]| {
        instances
            .iter()
            .filter(|i| i.health == Health::Healthy)
            .count()
            >= size as usize
    };
    poll_instances(
        fleet,
        app,
        group,
        settings,
        enough,
        &format!("list {size} healthy instances"),
    )
    .await
}

/// Polls `fleet` until `group`'s instances satisfy `done` and returns them, or
/// panics after the settings' health timeout, saying it did not reach `what`.
async fn poll_instances(
    fleet: &dyn Fleet,
    app: &App,
    group: &bluegreen_core::GroupId,
    settings: &Settings,
    done: impl Fn(&[Instance]) -> bool,
    what: &str,
) -> Vec<Instance> {
    poll_until(fleet, app, group, settings, done)
        .await
        .unwrap_or_else(|instances| {
            let healthy = instances
                .iter()
                .filter(|i| i.health == Health::Healthy)
                .count();
            panic!(
                "{group} did not {what} within {:?}: {} instances listed, {healthy} of them \
                 healthy (a count that stays wrong while all are healthy is a launch or \
                 scale that starts too few or too many): {instances:?}",
                settings.health_timeout,
                instances.len()
            )
        })
}

/// Polls `fleet` every `settings.poll_interval` until `group`'s instances satisfy
/// `done`: `Ok` with them, or `Err` with the last list once the settings' health
/// timeout has passed.
async fn poll_until(
    fleet: &dyn Fleet,
    app: &App,
    group: &bluegreen_core::GroupId,
    settings: &Settings,
    done: impl Fn(&[Instance]) -> bool,
) -> std::result::Result<Vec<Instance>, Vec<Instance>> {
    let deadline = tokio::time::Instant::now() + settings.health_timeout;
    loop {
        let instances = fleet
            .instances(app, group)
            .await
            .unwrap_or_else(|e| panic!("instances of a launched group {group} must list: {e}"));
        if done(&instances) {
            return Ok(instances);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(instances);
        }
        tokio::time::sleep(settings.poll_interval).await;
    }
}
