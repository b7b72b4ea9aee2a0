//! The in-memory providers pass the conformance suite, directly and through
//! `Arc<dyn ...>`, with weights and without.

use std::sync::Arc;
use std::time::Duration;

use bluegreen_core::{App, Fleet, Image, ImageSource, Router};
use bluegreen_testkit::conformance::{self, Settings, Sources};
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
    conformance::run_all(
        image,
        fleet,
        router,
        &app,
        &sources(&platform),
        &Settings::default(),
    )
    .await;
    assert_eq!(
        platform.instance_count(),
        0,
        "the suite cleans up after itself"
    );
}

#[tokio::test(start_paused = true)]
async fn an_unweighted_memory_router_passes_the_suite() {
    let platform = MemoryPlatform::new();
    platform.without_weights().set_batch_size(2);
    let app = App::new("conformance", "unweighted").unwrap();
    conformance::run_all(
        Arc::new(platform.image()),
        Arc::new(platform.fleet()),
        Arc::new(platform.router()),
        &app,
        &sources(&platform),
        &Settings::default().with_size(5),
    )
    .await;
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
