//! A deployment that loses its lock while the lock store cannot be reached, on the
//! in-memory platform under tokio's paused clock.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bluegreen_core::{
    App, DeployRequest, Engine, EngineOptions, Error, ErrorKind, FencingToken, ImageSource, Lock,
    LockHolder, MemoryLock, Result, RouteTable, Router,
};
use bluegreen_testkit::{Behaviour, MemoryPlatform};

/// A shared lock seen through a network that can be cut: renewals fail transiently
/// while it is.
struct Partitioned {
    lock: Arc<MemoryLock>,
    cut: AtomicBool,
}

#[async_trait]
impl Lock for Partitioned {
    async fn acquire(&self, app: &App, h: &LockHolder, lease: Duration) -> Result<FencingToken> {
        self.lock.acquire(app, h, lease).await
    }

    async fn renew(
        &self,
        app: &App,
        h: &LockHolder,
        token: FencingToken,
        lease: Duration,
    ) -> Result<()> {
        if self.cut.load(Ordering::SeqCst) {
            return Err(Error::Provider {
                provider: "partitioned",
                message: "the lock store does not answer".into(),
                retryable: true,
                source: None,
            });
        }
        self.lock.renew(app, h, token, lease).await
    }

    async fn release(&self, app: &App, h: &LockHolder, token: FencingToken) -> Result<()> {
        self.lock.release(app, h, token).await
    }
}

fn app() -> App {
    App::new("web", "production").unwrap()
}

fn request(tag: &str) -> DeployRequest {
    DeployRequest::new(app(), ImageSource::Reference(format!("web:{tag}"))).size(2)
}

struct Rig {
    platform: MemoryPlatform,
    /// Deployment A's view of the lock.
    a: Arc<Partitioned>,
    /// Deployment B's view: the same lock, always reachable.
    b: Arc<MemoryLock>,
}

impl Rig {
    fn new() -> Rig {
        let lock = Arc::new(MemoryLock::new());
        let rig = Rig {
            platform: MemoryPlatform::new(),
            a: Arc::new(Partitioned {
                lock: lock.clone(),
                cut: AtomicBool::new(false),
            }),
            b: lock,
        };
        rig.platform.set_boot_time(Duration::from_secs(60));
        rig
    }

    fn engine(&self, lock: Arc<dyn Lock>, keep: usize) -> Engine {
        Engine::new(
            self.platform.image(),
            self.platform.fleet(),
            self.platform.router(),
        )
        .with_options(
            EngineOptions::default()
                .with_lock_lease(Duration::from_secs(30))
                .with_health_timeout(Duration::from_secs(300))
                .with_keep(keep),
        )
        .with_lock(lock)
    }

    /// A deploys `web:2` and loses the lock store; once its lease has passed, B
    /// deploys `web:3` and finishes; then the store answers A again. A's result.
    async fn a_loses_the_lock_while_b_deploys(&self, keep: usize) -> Result<()> {
        let (a, b) = (
            self.engine(self.a.clone(), keep),
            self.engine(self.b.clone(), keep),
        );
        a.deploy(&request("1")).await.unwrap();
        self.a.cut.store(true, Ordering::SeqCst);
        let a_run = tokio::spawn(async move { a.deploy(&request("2")).await.map(|_| ()) });
        tokio::time::sleep(Duration::from_secs(31)).await;
        let report = b.deploy(&request("3")).await.unwrap();
        assert_eq!(report.live.as_str(), "web-production-v003");
        self.a.cut.store(false, Ordering::SeqCst);
        a_run.await.unwrap()
    }

    async fn routes(&self) -> RouteTable {
        self.platform.router().routes(&app()).await.unwrap()
    }
}

/// The trials' defect seen from the engine: A's renewals failed while B took the lock
/// over and released it; A's next renewal used to take the free lock back, and A went
/// on deploying over B's work. Now A stops at its next step: its lease passed.
#[tokio::test(start_paused = true)]
async fn a_deployment_whose_lease_passed_stops_at_its_next_step() {
    let rig = Rig::new();
    let e = rig.a_loses_the_lock_while_b_deploys(0).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Locked, "{e}");
    assert_eq!(
        rig.routes().await,
        RouteTable::single(bluegreen_core::GroupId::new("web-production-v003")),
        "B's deployment stands"
    );
    assert_eq!(rig.b.holder(&app()), None, "A took nothing back");
}

/// A's own group is destroyed by B's retirement while A waits for it; A's revert
/// must not restore the table A observed at its start over B's switch: every
/// change, the revert's too, checks the lease first.
#[tokio::test(start_paused = true)]
async fn a_deployment_that_lost_its_lock_does_not_roll_back_over_the_next_one() {
    let rig = Rig::new();
    rig.platform.set_behaviour("web:2", Behaviour::NeverHealthy);
    let e = rig.a_loses_the_lock_while_b_deploys(1).await.unwrap_err();
    println!("A: {e}");
    assert_eq!(
        rig.routes().await,
        RouteTable::single(bluegreen_core::GroupId::new("web-production-v003")),
        "B's deployment must stand"
    );
}

/// Two engines of one process built with `Engine::new` share the process's lock:
/// while one deploys an app, the other's deployment of that app is `Locked`, and
/// then it gets its turn. An engine given a lock of its own does not see it.
#[tokio::test(start_paused = true)]
async fn two_engines_of_one_process_exclude_each_other_by_default() {
    let platform = MemoryPlatform::new();
    platform.set_boot_time(Duration::from_secs(20));
    // an app no other test of this program deploys through the process's lock
    let app = App::new("process-lock", "test").unwrap();
    let request =
        |tag: &str| DeployRequest::new(app.clone(), ImageSource::Reference(format!("web:{tag}")));
    let first = Engine::new(platform.image(), platform.fleet(), platform.router());
    let second = Engine::new(platform.image(), platform.fleet(), platform.router());
    let deploying = tokio::spawn({
        let r = request("1");
        async move { first.deploy(&r).await }
    });
    // the first deployment holds the lock while its instances boot
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        MemoryLock::process().holder(&app).is_some(),
        "the first engine holds the process's lock"
    );
    let e = second.deploy(&request("2")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Locked, "{e}");
    let elsewhere = Engine::new(platform.image(), platform.fleet(), platform.router())
        .with_lock(Arc::new(MemoryLock::new()));
    assert!(elsewhere.status(&app).await.is_ok(), "status takes no lock");
    deploying.await.unwrap().unwrap();
    assert_eq!(MemoryLock::process().holder(&app), None, "released");
    second.deploy(&request("2")).await.unwrap();
    // a platform's parts carry the platform's lock: two engines from them exclude
    // each other too, and neither uses the process's
    let (a, b) = (
        Engine::from_parts(platform.parts()),
        Engine::from_parts(platform.parts()),
    );
    let deploying = tokio::spawn({
        let r = request("3");
        async move { a.deploy(&r).await }
    });
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(platform.lock().holder(&app).is_some());
    assert_eq!(MemoryLock::process().holder(&app), None);
    let e = b.deploy(&request("4")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Locked, "{e}");
    deploying.await.unwrap().unwrap();
}
