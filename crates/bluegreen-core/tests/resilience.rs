//! Interruptions, throttling, foreign resources and bounds, on the in-memory platform
//! under tokio's paused clock.

use std::sync::Arc;
use std::time::Duration;

use bluegreen_core::{
    App, DeployRequest, Engine, EngineOptions, ErrorKind, Fleet, GroupId, Image, ImageSource,
    MemoryLock, RouteTable, Router, Step, Strategy,
};
use bluegreen_testkit::{Behaviour, Fault, MemoryPlatform, Op};

fn app() -> App {
    App::new("web", "production").unwrap()
}

fn gid(n: u32) -> GroupId {
    GroupId::new(format!("web-production-v{n:03}"))
}

fn request(tag: &str) -> DeployRequest {
    DeployRequest::new(app(), ImageSource::Reference(format!("web:{tag}")))
        .size(4)
        .strategy(Strategy::canary([25, 50], Duration::from_secs(30)))
}

fn options() -> EngineOptions {
    EngineOptions::default()
        .with_health_timeout(Duration::from_secs(60))
        .with_drain(Duration::from_secs(5))
        .with_keep(0)
        .with_lock_lease(Duration::from_secs(30))
        .with_lock_wait(Some(Duration::from_secs(120)))
}

struct Rig {
    platform: MemoryPlatform,
    lock: Arc<MemoryLock>,
}

impl Rig {
    fn new() -> Rig {
        let platform = MemoryPlatform::new();
        platform
            .set_boot_time(Duration::from_secs(10))
            .set_latency(Duration::from_millis(20))
            .set_batch_size(2)
            .set_behaviour("web:bad", Behaviour::NeverHealthy);
        Rig {
            platform,
            lock: Arc::new(MemoryLock::new()),
        }
    }

    /// A fresh engine, as a new process would build, sharing the platform and the
    /// lock table.
    fn engine(&self) -> Engine {
        Engine::new(
            self.platform.image(),
            self.platform.fleet(),
            self.platform.router(),
        )
        .with_options(options())
        .with_lock(self.lock.clone())
    }

    async fn group_ids(&self) -> Vec<GroupId> {
        let mut ids: Vec<GroupId> = self
            .platform
            .fleet()
            .groups(&app())
            .await
            .unwrap()
            .into_iter()
            .map(|g| g.id)
            .collect();
        ids.sort();
        ids
    }

    /// Converged: only `live` exists, it has all traffic, every routed instance is
    /// healthy, the router knows no other group, and the lock is free.
    async fn assert_converged(&self, live: u32, case: &str) {
        let router = self.platform.router();
        let routes = router.routes(&app()).await.unwrap();
        assert_eq!(routes, RouteTable::single(gid(live)), "{case}: routes");
        assert_eq!(
            self.group_ids().await,
            [gid(live)],
            "{case}: groups (an orphan is left)"
        );
        assert_eq!(
            self.platform.attached(&app()),
            [gid(live)],
            "{case}: router attachments"
        );
        let instances = self
            .platform
            .fleet()
            .instances(&app(), &gid(live))
            .await
            .unwrap();
        assert_eq!(instances.len(), 4, "{case}: instances of the live group");
        assert!(
            instances.iter().all(|i| i.health.is_healthy()),
            "{case}: {instances:?}"
        );
        assert_eq!(
            self.lock.holder(&app()),
            None,
            "{case}: the lock is released"
        );
        assert_eq!(self.platform.instance_count(), 4, "{case}: stray instances");
    }
}

/// The calls a deployment of `tag` makes after version 1 is live, in order.
async fn calls_of(tag: &str) -> Vec<Op> {
    let rig = Rig::new();
    rig.engine().deploy(&request("1")).await.unwrap();
    let before = rig.platform.call_log().len();
    let _ = rig.engine().deploy(&request(tag)).await;
    rig.platform.call_log()[before..].to_vec()
}

/// Hangs the deployment of `tag` at its `index`-th platform call, drops it like a
/// dead process, then runs the same deployment again from a new engine.
async fn interrupt_and_rerun(
    tag: &str,
    calls: &[Op],
    index: usize,
) -> (Rig, bluegreen_core::Result<bluegreen_core::DeployReport>) {
    let rig = Rig::new();
    rig.engine().deploy(&request("1")).await.unwrap();
    let op = calls[index];
    let nth = calls[..=index].iter().filter(|o| **o == op).count() as u64;
    rig.platform.fail_nth(op, nth, Fault::Hang);
    // dropped before the engine's own call timeout (300 s) could notice the hang
    let first =
        tokio::time::timeout(Duration::from_secs(200), rig.engine().deploy(&request(tag))).await;
    assert!(
        first.is_err(),
        "call {index} ({op:?} #{nth}) should have hung the deployment"
    );
    rig.platform.clear_faults();
    let again = rig.engine().deploy(&request(tag)).await;
    (rig, again)
}

#[tokio::test(start_paused = true)]
async fn an_interrupted_deployment_converges_when_run_again() {
    let calls = calls_of("2").await;
    assert!(calls.contains(&Op::SetRoutes) && calls.contains(&Op::Destroy));
    let promotions = calls.iter().filter(|o| **o == Op::SetRoutes).count();
    assert_eq!(promotions, 3, "two canary steps and the switch: {calls:?}");
    for index in 0..calls.len() {
        let (rig, again) = interrupt_and_rerun("2", &calls, index).await;
        let case = format!("interrupted at call {index} ({:?})", calls[index]);
        let report = again.unwrap_or_else(|e| panic!("{case}: the rerun failed: {e}"));
        assert_eq!(report.live, gid(2), "{case}");
        rig.assert_converged(2, &case).await;
    }
    println!(
        "interrupted deployment: {} cases, one per platform call, all converged",
        calls.len()
    );
}

#[tokio::test(start_paused = true)]
async fn an_interrupted_failing_deployment_rolls_back_when_run_again() {
    let calls = calls_of("bad").await;
    assert!(
        calls.contains(&Op::Destroy),
        "the failing deployment destroys its group"
    );
    for index in 0..calls.len() {
        let (rig, again) = interrupt_and_rerun("bad", &calls, index).await;
        let case = format!("interrupted at call {index} ({:?})", calls[index]);
        let e = again.expect_err(&case);
        assert!(e.rolled_back(), "{case}: {e}");
        assert_eq!(e.step(), Some(Step::WaitHealthy), "{case}: {e}");
        rig.assert_converged(1, &case).await;
    }
    println!(
        "interrupted failing deployment: {} cases, all rolled back",
        calls.len()
    );
}

/// Version 1, then version 2 (keep = 0: v001 is gone); returns the rig and the
/// image of version 1, which `rollback_to` goes back to.
async fn two_releases() -> (Rig, bluegreen_core::ImageId) {
    let rig = Rig::new();
    rig.engine().deploy(&request("1")).await.unwrap();
    rig.engine().deploy(&request("2")).await.unwrap();
    let groups = rig.platform.fleet().groups(&app()).await.unwrap();
    let image = groups[0].previous.clone().unwrap().image;
    (rig, image)
}

#[tokio::test(start_paused = true)]
async fn an_interrupted_rollback_to_converges_when_run_again() {
    let calls = {
        let (rig, image) = two_releases().await;
        let before = rig.platform.call_log().len();
        rig.engine().rollback_to(&app(), &image).await.unwrap();
        rig.platform.call_log()[before..].to_vec()
    };
    assert!(calls.contains(&Op::Launch) && calls.contains(&Op::Destroy));
    for index in 0..calls.len() {
        let (rig, image) = two_releases().await;
        let op = calls[index];
        let nth = calls[..=index].iter().filter(|o| **o == op).count() as u64;
        let case = format!("interrupted at call {index} ({op:?} #{nth})");
        rig.platform.fail_nth(op, nth, Fault::Hang);
        let first = tokio::time::timeout(
            Duration::from_secs(200),
            rig.engine().rollback_to(&app(), &image),
        )
        .await;
        assert!(first.is_err(), "{case}: should have hung the rollback");
        rig.platform.clear_faults();
        let again = rig.engine().rollback_to(&app(), &image).await;
        let report = again.unwrap_or_else(|e| panic!("{case}: the rerun failed: {e}"));
        assert_eq!(report.to, gid(3), "{case}: {report:?}");
        rig.assert_converged(3, &case).await;
        let groups = rig.platform.fleet().groups(&app()).await.unwrap();
        assert_eq!(groups[0].release.image, image, "{case}: the release of v1");
    }
    println!(
        "interrupted rollback_to: {} cases, one per platform call, all converged",
        calls.len()
    );
}

#[tokio::test(start_paused = true)]
async fn a_rerun_rollback_to_finishes_the_group_its_first_run_launched() {
    let (rig, image) = two_releases().await;
    // instances take longer to boot than the lock's lease: the rerun finds the
    // first run's group still booting
    rig.platform.set_boot_time(Duration::from_secs(90));
    let first = tokio::time::timeout(
        Duration::from_secs(20),
        rig.engine().rollback_to(&app(), &image),
    )
    .await;
    assert!(first.is_err(), "the first run was still waiting for health");
    assert_eq!(rig.group_ids().await, [gid(2), gid(3)]);
    let launched = rig.platform.calls(Op::Launch);
    let report = rig.engine().rollback_to(&app(), &image).await.unwrap();
    assert_eq!((report.to.clone(), report.relaunched), (gid(3), true));
    assert_eq!(
        rig.platform.calls(Op::Launch),
        launched,
        "the rerun launched no other group"
    );
    rig.assert_converged(3, "rerun while booting").await;
}

#[tokio::test(start_paused = true)]
async fn a_stale_lock_is_taken_over_after_its_lease() {
    let rig = Rig::new();
    rig.platform.fail_nth(Op::Launch, 1, Fault::Hang);
    let dead =
        tokio::time::timeout(Duration::from_secs(5), rig.engine().deploy(&request("1"))).await;
    assert!(dead.is_err());
    assert!(
        rig.lock.holder(&app()).is_some(),
        "the dead deployment still holds the lock"
    );
    rig.platform.clear_faults();

    let impatient = rig.engine().with_options(options().with_lock_wait(None));
    let e = impatient.deploy(&request("1")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Locked);

    let started = tokio::time::Instant::now();
    rig.engine().deploy(&request("1")).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(25),
        "waited for the lease to pass"
    );
    rig.assert_converged(1, "stale lock").await;
}

#[tokio::test(start_paused = true)]
async fn throttling_and_transient_errors_are_retried_within_bounds() {
    let quiet = Rig::new();
    quiet.engine().deploy(&request("1")).await.unwrap();
    quiet.engine().deploy(&request("2")).await.unwrap();
    let baseline = quiet.platform.total_calls();

    for (fault, rate) in [
        (Fault::Throttle, 0.1),
        (Fault::Throttle, 0.2),
        (Fault::Transient, 0.2),
    ] {
        let rig = Rig::new();
        rig.platform.fail_randomly(rate, fault.clone(), 7);
        rig.engine().deploy(&request("1")).await.unwrap();
        rig.engine().deploy(&request("2")).await.unwrap();
        rig.platform.clear_faults();
        let calls = rig.platform.total_calls();
        println!("{fault:?} at {rate}: {calls} calls against {baseline} without faults");
        assert!(calls > baseline, "faults were injected");
        assert!(
            calls as f64 <= baseline as f64 / (1.0 - rate) * 1.5,
            "{fault:?} at {rate}: {calls} calls for {baseline} without faults"
        );
        rig.assert_converged(2, &format!("{fault:?} at {rate}"))
            .await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_permanent_error_is_not_retried() {
    let rig = Rig::new();
    rig.engine().deploy(&request("1")).await.unwrap();
    rig.platform
        .fail_nth(Op::Launch, 1, Fault::Fatal("UnauthorizedOperation".into()));
    let launches = rig.platform.calls(Op::Launch);
    let e = rig.engine().deploy(&request("2")).await.unwrap_err();
    assert!(e.to_string().contains("UnauthorizedOperation"), "{e}");
    // one launch call per batch of two, none of them repeated
    assert_eq!(rig.platform.calls(Op::Launch) - launches, 2);
    rig.assert_converged(1, "permanent error").await;
}

#[tokio::test(start_paused = true)]
async fn look_alike_resources_survive_everything() {
    let rig = Rig::new();
    for id in [
        "web-production-v001",
        "web-production-v002",
        "web-production-v003",
        "web-production-v050",
    ] {
        rig.platform.add_foreign_group(id, 2);
    }
    rig.platform.add_foreign_image(&app(), "mem-foreign");
    let engine = rig.engine().with_options(options().with_retain_images(0));
    engine.deploy(&request("1")).await.unwrap();
    engine.deploy(&request("2")).await.unwrap(); // retires v001 (keep 0)
    engine.deploy(&request("bad")).await.unwrap_err(); // rolls back v003
    let warm = rig.engine().with_options(options().with_keep(1));
    warm.deploy(&request("4")).await.unwrap();
    warm.rollback(&app()).await.unwrap();
    for g in rig.platform.fleet().groups(&app()).await.unwrap() {
        rig.platform
            .router()
            .set_routes(&app(), &RouteTable::empty())
            .await
            .unwrap();
        rig.platform.router().detach(&app(), &g.id).await.unwrap();
        rig.platform.fleet().destroy(&app(), &g.id).await.unwrap();
    }
    assert_eq!(
        rig.platform.instance_count(),
        8,
        "the look-alikes' eight instances are all there"
    );
    for id in [
        "web-production-v001",
        "web-production-v002",
        "web-production-v003",
        "web-production-v050",
    ] {
        assert!(rig.platform.has_group(id), "{id} survived");
    }
    assert!(rig.platform.has_image("mem-foreign"));
    assert!(
        rig.platform
            .image()
            .images(&app())
            .await
            .unwrap()
            .iter()
            .all(|i| i.id.as_str() != "mem-foreign"),
        "a foreign image is never listed"
    );
}

#[tokio::test(start_paused = true)]
async fn a_hung_call_is_bounded_and_rolled_back() {
    let rig = Rig::new();
    rig.engine().deploy(&request("1")).await.unwrap();
    rig.platform.fail_nth(Op::Instances, 1, Fault::Hang);
    let engine = rig
        .engine()
        .with_options(options().with_call_timeout(Duration::from_secs(30)));
    let e = engine.deploy(&request("2")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout);
    assert_eq!(e.step(), Some(Step::WaitHealthy));
    assert!(
        e.to_string()
            .contains("timed out after 30s waiting for list instances"),
        "{e}"
    );
    assert!(e.rolled_back());
    rig.assert_converged(1, "hung call").await;
}
