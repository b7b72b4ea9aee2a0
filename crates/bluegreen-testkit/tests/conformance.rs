//! The in-memory providers pass the conformance suite, directly and through
//! `Arc<dyn ...>`, with weights and without.

use std::sync::Arc;
use std::time::Duration;

use bluegreen_core::{App, Fleet, Image, ImageSource, Router};
use bluegreen_testkit::conformance::{self, Outcome, Settings, Sources};
use bluegreen_testkit::{Behaviour, MemoryPlatform};

fn sources(platform: &MemoryPlatform) -> Sources {
    platform.set_behaviour("app:never", Behaviour::NeverHealthy);
    Sources {
        good: ImageSource::Reference("app:1".into()),
        other: ImageSource::Reference("app:2".into()),
        never_healthy: Some(ImageSource::Reference("app:never".into())),
    }
}

#[tokio::test(start_paused = true)]
async fn memory_platform_passes_the_suite() {
    let platform = MemoryPlatform::new();
    platform.set_boot_time(Duration::from_secs(5));
    let app = App::new("conformance", "test").unwrap();
    let image: Arc<dyn Image> = Arc::new(platform.image());
    let fleet: Arc<dyn Fleet> = Arc::new(platform.fleet());
    let router: Arc<dyn Router> = Arc::new(platform.router());
    let report = conformance::run_all(
        image,
        fleet,
        router,
        &app,
        &sources(&platform),
        &Settings::default().with_look_alikes(Arc::new(platform.look_alikes())),
    )
    .await;
    assert_eq!(
        platform.instance_count(),
        0,
        "the suite cleans up after itself"
    );
    // the report names every rule: these held, and only the split refusal (for
    // routers without weights) was skipped
    for (part, rule) in [
        ("image", "a running instance uses is Conflict"),
        ("router", "weights read back as set"),
        ("look-alikes", "destroy and the clean-up leave look-alikes"),
        ("deployment", "never becomes healthy is reverted"),
    ] {
        let checked = report.find(part, rule).expect(rule);
        assert_eq!(checked.outcome, Outcome::Passed, "{checked}");
    }
    let skipped = report
        .find("router", "a split is refused")
        .expect("the rule is reported");
    assert!(
        matches!(&skipped.outcome, Outcome::Skipped { reason } if reason.contains("weighted_routing = true")),
        "{skipped}"
    );
    assert_eq!(report.skipped(), 1, "{report}");
    assert!(report.passed() >= 15, "{report}");
    // the memory fleet scales: the scaling rules ran
    let scaled = report
        .find("fleet", "scaling in twice leaves one instance")
        .expect("the scaling rule is reported");
    assert_eq!(scaled.outcome, Outcome::Passed, "{scaled}");
    assert!(report.to_string().contains("rules passed"), "{report}");
}

#[tokio::test(start_paused = true)]
async fn an_unweighted_memory_router_passes_the_suite() {
    let platform = MemoryPlatform::new();
    platform.without_weights().set_batch_size(2);
    let app = App::new("conformance", "unweighted").unwrap();
    let report = conformance::run_all(
        Arc::new(platform.image()),
        Arc::new(platform.fleet()),
        Arc::new(platform.router()),
        &app,
        &sources(&platform),
        &Settings::default().with_size(5),
    )
    .await;
    let weights = report.find("router", "weights read back").unwrap();
    assert!(
        matches!(&weights.outcome, Outcome::Skipped { reason } if reason.contains("weighted_routing = false")),
        "{weights}"
    );
    assert_eq!(
        report.find("router", "a split is refused").unwrap().outcome,
        Outcome::Passed
    );
    // without a hook, the look-alike rules are skipped and say so
    for c in report.checks.iter().filter(|c| c.part == "look-alikes") {
        assert!(
            matches!(&c.outcome, Outcome::Skipped { reason } if reason.contains("no LookAlikes hook")),
            "{c}"
        );
    }
}

/// The suite can fail: a router that forgets its attachments is caught.
#[tokio::test(start_paused = true)]
#[should_panic(expected = "routing to an unattached group must fail")]
async fn the_suite_catches_a_broken_router() {
    use async_trait::async_trait;
    use bluegreen_core::{Attachment, GroupId, Instance, Result, RouteTable, Serving};

    struct Careless(
        bluegreen_testkit::MemoryRouter,
        std::sync::Mutex<RouteTable>,
    );
    #[async_trait]
    impl Router for Careless {
        async fn attach(&self, app: &App, g: &GroupId, i: &[Instance]) -> Result<Attachment> {
            self.0.attach(app, g, i).await
        }
        async fn detach(&self, app: &App, g: &GroupId) -> Result<()> {
            self.0.detach(app, g).await
        }
        async fn routes(&self, _: &App) -> Result<RouteTable> {
            Ok(self.1.lock().unwrap().clone())
        }
        async fn set_routes(&self, _: &App, t: &RouteTable) -> Result<()> {
            *self.1.lock().unwrap() = t.clone();
            Ok(())
        }
        async fn serving(&self, app: &App, g: &GroupId) -> Result<Serving> {
            self.0.serving(app, g).await
        }
    }
    let platform = MemoryPlatform::new();
    let app = App::new("conformance", "broken").unwrap();
    let router = Careless(platform.router(), Default::default());
    conformance::router_routes_and_attachments(
        &platform.image(),
        &platform.fleet(),
        &router,
        &app,
        &sources(&platform),
        &Settings::default(),
    )
    .await;
}

/// The suite can fail: a fleet wrapper that forwards `capabilities()` (declaring
/// scaling) but not the defaulted `scale` is caught.
#[tokio::test(start_paused = true)]
#[should_panic(expected = "scaling a missing group: not supported")]
async fn the_suite_catches_a_wrapper_that_declares_scaling_but_does_not_forward_it() {
    use async_trait::async_trait;
    use bluegreen_core::{FleetCapabilities, Group, GroupId, Instance, Release, Result};

    struct Forgetful(bluegreen_testkit::MemoryFleet);
    #[async_trait]
    impl Fleet for Forgetful {
        fn capabilities(&self) -> FleetCapabilities {
            self.0.capabilities()
        }
        fn check_release(&self, release: &Release) -> Result<()> {
            self.0.check_release(release)
        }
        async fn launch(&self, group: &Group) -> Result<()> {
            self.0.launch(group).await
        }
        async fn groups(&self, app: &App) -> Result<Vec<Group>> {
            self.0.groups(app).await
        }
        async fn instances(&self, app: &App, group: &GroupId) -> Result<Vec<Instance>> {
            self.0.instances(app, group).await
        }
        async fn destroy(&self, app: &App, group: &GroupId) -> Result<()> {
            self.0.destroy(app, group).await
        }
    }
    let platform = MemoryPlatform::new();
    let app = App::new("conformance", "noscale").unwrap();
    assert!(platform.fleet().capabilities().scaling);
    conformance::fleet_scale(
        &platform.image(),
        &Forgetful(platform.fleet()),
        &app,
        &sources(&platform).good,
        &Settings::default(),
    )
    .await;
}

/// `MemoryLock` keeps the lock contract on tokio's paused clock, directly and through
/// `Arc<dyn Lock>`.
#[tokio::test(start_paused = true)]
async fn the_memory_lock_keeps_the_lock_contract() {
    let lock = bluegreen_core::MemoryLock::new();
    let (app, other) = (
        App::new("conformance", "lock").unwrap(),
        App::new("conformance", "other").unwrap(),
    );
    conformance::lock_contract(&lock, &app, &other, Duration::from_secs(30)).await;
    // again on the same store: the tokens go on growing
    let shared: Arc<dyn bluegreen_core::Lock> = Arc::new(lock);
    conformance::lock_contract_across(&*shared, &*shared, &app, &other, Duration::from_secs(30))
        .await;
}

/// `MemoryLock` keeps the many-acquirers rules: four handles on one table, three
/// acquirers each, on a multi-threaded runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_many_acquirers_of_a_memory_lock_exactly_one_wins() {
    let lock: Arc<dyn bluegreen_core::Lock> = Arc::new(bluegreen_core::MemoryLock::new());
    let locks = vec![lock.clone(), lock.clone(), lock.clone(), lock];
    let app = App::new("conformance", "many").unwrap();
    let (report, tokens) =
        conformance::lock_many_acquirers(&locks, &app, 3, 10, Duration::from_secs(30)).await;
    assert_eq!(
        report.passed(),
        conformance::MANY_ACQUIRERS_RULES.len(),
        "{report}"
    );
    assert!(tokens.windows(2).all(|w| w[1] > w[0]), "{tokens:?}");
}

/// The many-acquirers rules catch a lock that lets every acquirer win.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[should_panic(expected = "of many acquirers at once exactly one wins")]
async fn the_many_acquirers_rules_catch_a_lock_that_lets_two_win() {
    use async_trait::async_trait;
    use bluegreen_core::{FencingToken, Lock, LockHolder, MemoryLock, Result};

    /// A table per acquirer: nobody excludes anybody.
    struct Everyone;
    #[async_trait]
    impl Lock for Everyone {
        async fn acquire(
            &self,
            app: &App,
            h: &LockHolder,
            lease: Duration,
        ) -> Result<FencingToken> {
            MemoryLock::new().acquire(app, h, lease).await
        }
        async fn renew(&self, _: &App, _: &LockHolder, _: FencingToken, _: Duration) -> Result<()> {
            Ok(())
        }
        async fn release(&self, _: &App, _: &LockHolder, _: FencingToken) -> Result<()> {
            Ok(())
        }
    }
    let locks: Vec<Arc<dyn Lock>> = vec![Arc::new(Everyone), Arc::new(Everyone)];
    let app = App::new("conformance", "everyone").unwrap();
    conformance::lock_many_acquirers(&locks, &app, 2, 1, Duration::from_secs(30)).await;
}

/// The contract catches the defect it was written for: a lock whose `renew` takes a
/// free lock back (as `MemoryLock` and `FileLock` once did).
#[tokio::test(start_paused = true)]
#[should_panic(expected = "renewing a released lock (a renewal never takes the lock) must fail")]
async fn the_lock_contract_catches_a_renewal_that_takes_a_free_lock() {
    use async_trait::async_trait;
    use bluegreen_core::{FencingToken, Lock, LockHolder, MemoryLock, Result};

    struct Grabby(MemoryLock);
    #[async_trait]
    impl Lock for Grabby {
        async fn acquire(
            &self,
            app: &App,
            h: &LockHolder,
            lease: Duration,
        ) -> Result<FencingToken> {
            self.0.acquire(app, h, lease).await
        }
        async fn renew(
            &self,
            app: &App,
            h: &LockHolder,
            token: FencingToken,
            lease: Duration,
        ) -> Result<()> {
            match self.0.renew(app, h, token, lease).await {
                Err(_) if self.0.holder(app).is_none() => {
                    self.0.acquire(app, h, lease).await.map(|_| ())
                }
                other => other,
            }
        }
        async fn release(&self, app: &App, h: &LockHolder, token: FencingToken) -> Result<()> {
            self.0.release(app, h, token).await
        }
    }
    let (app, other) = (
        App::new("conformance", "grabby").unwrap(),
        App::new("conformance", "other").unwrap(),
    );
    conformance::lock_contract(
        &Grabby(MemoryLock::new()),
        &app,
        &other,
        Duration::from_secs(30),
    )
    .await;
}

/// An image provider that answers success instead of `Conflict` when asked to remove
/// an image in use (it keeps the image, but says nothing).
struct Silent(bluegreen_testkit::MemoryImage, bool);

#[async_trait::async_trait]
impl Image for Silent {
    async fn prepare(
        &self,
        app: &App,
        source: &ImageSource,
        events: &bluegreen_core::EventSink,
    ) -> bluegreen_core::Result<bluegreen_core::ImageRef> {
        self.0.prepare(app, source, events).await
    }
    async fn images(&self, app: &App) -> bluegreen_core::Result<Vec<bluegreen_core::ImageRef>> {
        self.0.images(app).await
    }
    async fn remove(&self, app: &App, id: &bluegreen_core::ImageId) -> bluegreen_core::Result<()> {
        match self.0.remove(app, id).await {
            Err(e) if e.kind() == bluegreen_core::ErrorKind::Conflict => Ok(()),
            other => other,
        }
    }
    fn capabilities(&self) -> bluegreen_core::ImageCapabilities {
        bluegreen_core::ImageCapabilities::default().with_refuses_removal_in_use(self.1)
    }
}

/// The suite catches an image provider that removes (or says it removed) an image a
/// running instance uses.
#[tokio::test(start_paused = true)]
#[should_panic(expected = "removing an image that a running instance uses must fail")]
async fn the_suite_catches_an_image_removed_while_in_use() {
    let platform = MemoryPlatform::new();
    let app = App::new("conformance", "inuse").unwrap();
    conformance::image_in_use(
        &Silent(platform.image(), true),
        &platform.fleet(),
        &app,
        &sources(&platform).good,
        &Settings::default(),
    )
    .await;
}

/// A provider that declares it cannot see its images' users gets the rule skipped,
/// with the capability that decided.
#[tokio::test(start_paused = true)]
async fn an_image_provider_that_cannot_see_its_users_is_skipped_and_told_why() {
    let platform = MemoryPlatform::new();
    let app = App::new("conformance", "inuse").unwrap();
    let report = conformance::image_in_use(
        &Silent(platform.image(), false),
        &platform.fleet(),
        &app,
        &sources(&platform).good,
        &Settings::default(),
    )
    .await;
    assert_eq!(report.passed(), 0, "{report}");
    assert_eq!(report.skipped(), 1, "{report}");
    assert!(
        matches!(&report.checks[0].outcome, Outcome::Skipped { reason } if reason.contains("refuses_removal_in_use = false")),
        "{report}"
    );
    assert_eq!(
        platform.instance_count(),
        0,
        "a skipped rule launches nothing"
    );
}

/// Look-alikes of a test platform: names in a shared set, as resources that
/// bluegreen did not create.
#[derive(Default)]
struct Foreign(std::sync::Mutex<std::collections::BTreeSet<String>>);

#[async_trait::async_trait]
impl conformance::LookAlikes for Foreign {
    async fn create(&self, _: &App, group: &bluegreen_core::GroupId) -> Vec<String> {
        let made = vec![format!("{group}-0-copy"), format!("{group}-unlabelled")];
        self.0.lock().unwrap().extend(made.iter().cloned());
        made
    }
    async fn existing(&self, _: &App, group: &bluegreen_core::GroupId) -> Vec<String> {
        let prefix = format!("{group}-");
        let set = self.0.lock().unwrap();
        set.iter()
            .filter(|n| n.starts_with(&prefix))
            .cloned()
            .collect()
    }
    async fn remove(&self, _: &App, group: &bluegreen_core::GroupId) {
        let prefix = format!("{group}-");
        self.0.lock().unwrap().retain(|n| !n.starts_with(&prefix));
    }
}

/// A fleet whose destroy sweeps everything named after the group, labelled or not
/// (a destroy by name prefix).
struct Sweeping(bluegreen_testkit::MemoryFleet, Arc<Foreign>);

#[async_trait::async_trait]
impl Fleet for Sweeping {
    async fn launch(&self, group: &bluegreen_core::Group) -> bluegreen_core::Result<()> {
        self.0.launch(group).await
    }
    async fn groups(&self, app: &App) -> bluegreen_core::Result<Vec<bluegreen_core::Group>> {
        self.0.groups(app).await
    }
    async fn instances(
        &self,
        app: &App,
        group: &bluegreen_core::GroupId,
    ) -> bluegreen_core::Result<Vec<bluegreen_core::Instance>> {
        self.0.instances(app, group).await
    }
    async fn destroy(
        &self,
        app: &App,
        group: &bluegreen_core::GroupId,
    ) -> bluegreen_core::Result<()> {
        use conformance::LookAlikes;
        self.1.remove(app, group).await;
        self.0.destroy(app, group).await
    }
}

/// With a look-alike hook, a fleet that leaves look-alikes alone passes, and the
/// report says the rules were checked.
#[tokio::test(start_paused = true)]
async fn look_alikes_survive_the_memory_fleet() {
    let platform = MemoryPlatform::new();
    let app = App::new("conformance", "alike").unwrap();
    let foreign = Arc::new(Foreign::default());
    let report = conformance::look_alikes_untouched(
        &platform.image(),
        &platform.fleet(),
        &platform.router(),
        &app,
        &sources(&platform).good,
        &Settings::default().with_look_alikes(foreign.clone()),
    )
    .await;
    assert_eq!((report.passed(), report.skipped()), (2, 0), "{report}");
    assert!(
        foreign.0.lock().unwrap().is_empty(),
        "the hook removed its look-alikes"
    );
}

/// The suite catches a fleet whose destroy sweeps look-alikes.
#[tokio::test(start_paused = true)]
#[should_panic(expected = "must survive destroy of their id")]
async fn the_suite_catches_a_destroy_that_sweeps_look_alikes() {
    let platform = MemoryPlatform::new();
    let app = App::new("conformance", "alike").unwrap();
    let foreign = Arc::new(Foreign::default());
    conformance::look_alikes_untouched(
        &platform.image(),
        &Sweeping(platform.fleet(), foreign.clone()),
        &platform.router(),
        &app,
        &sources(&platform).good,
        &Settings::default().with_look_alikes(foreign),
    )
    .await;
}

/// A router that never reports a member healthy fails within the settings' health
/// timeout, and says so.
#[tokio::test(start_paused = true)]
#[should_panic(expected = "healthy within 3s")]
async fn a_router_that_never_sees_health_fails_within_the_settings_timeout() {
    use async_trait::async_trait;
    use bluegreen_core::{Attachment, GroupId, Instance, Result, RouteTable, Serving};

    struct Blind(bluegreen_testkit::MemoryRouter);
    #[async_trait]
    impl Router for Blind {
        async fn attach(&self, app: &App, g: &GroupId, i: &[Instance]) -> Result<Attachment> {
            self.0.attach(app, g, i).await
        }
        async fn detach(&self, app: &App, g: &GroupId) -> Result<()> {
            self.0.detach(app, g).await
        }
        async fn routes(&self, app: &App) -> Result<RouteTable> {
            self.0.routes(app).await
        }
        async fn set_routes(&self, app: &App, t: &RouteTable) -> Result<()> {
            self.0.set_routes(app, t).await
        }
        async fn serving(&self, app: &App, g: &GroupId) -> Result<Serving> {
            let s = self.0.serving(app, g).await?;
            Ok(Serving::new(0, s.total))
        }
    }
    let platform = MemoryPlatform::new();
    let app = App::new("conformance", "blind").unwrap();
    conformance::router_routes_and_attachments(
        &platform.image(),
        &platform.fleet(),
        &Blind(platform.router()),
        &app,
        &sources(&platform),
        &Settings::default().with_health_timeout(Duration::from_secs(3)),
    )
    .await;
}

/// `run_all`'s future is `Send`: a provider's test can run it on a spawned task
/// (to catch its panic, or beside a load).
#[tokio::test(start_paused = true)]
async fn the_suite_runs_on_a_spawned_task() {
    let platform = MemoryPlatform::new();
    let sources = sources(&platform);
    let report = tokio::spawn(async move {
        let app = App::new("conformance", "spawned").unwrap();
        conformance::run_all(
            Arc::new(platform.image()),
            Arc::new(platform.fleet()),
            Arc::new(platform.router()),
            &app,
            &sources,
            &Settings::default(),
        )
        .await
    })
    .await
    .expect("the suite passed");
    assert!(report.passed() >= 15, "{report}");
}
