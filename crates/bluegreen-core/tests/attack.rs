//! Adversarial tests: every guarantee of README.md, docs/architecture.md and the
//! rustdoc, attacked as an operator of Spinnaker / Argo Rollouts / ECS blue/green
//! would, on the in-memory platform under tokio's paused clock.
//!
//! A test that fails shows a defect; its name says which, and its comment quotes
//! the sentence of the documentation it breaks.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bluegreen_core::{
    async_trait, check_fn, App, Attachment, DeployRequest, Engine, EngineOptions, Error, ErrorKind,
    Event, EventContext, EventSink, FencingToken, Fleet, FleetCapabilities, Group, GroupId, Image,
    ImageId, ImageSource, Instance, Lock, LockHolder, MemoryLock, Operation, Result,
    RollbackRequest, RouteTable, Router, RouterCapabilities, Serving, Step, Strategy,
};
use bluegreen_testkit::{Behaviour, Fault, MemoryFleet, MemoryPlatform, MemoryRouter, Op};
use tokio::time::Instant;

// ---------------------------------------------------------------------------
// rig
// ---------------------------------------------------------------------------

/// What a check or a wrapper saw, shared with the test.
type Shared<T> = Arc<Mutex<Vec<T>>>;

fn app() -> App {
    App::new("web", "production").unwrap()
}

fn gid(n: u32) -> GroupId {
    GroupId::new(format!("web-production-v{n:03}"))
}

fn req(tag: &str) -> DeployRequest {
    req_for(&app(), tag)
}

fn req_for(app: &App, tag: &str) -> DeployRequest {
    DeployRequest::new(app.clone(), ImageSource::Reference(format!("web:{tag}"))).size(3)
}

fn options() -> EngineOptions {
    EngineOptions::default()
        .with_health_timeout(Duration::from_secs(60))
        .with_confirm_timeout(Duration::from_secs(20))
        .with_drain(Duration::from_secs(5))
        .with_call_timeout(Duration::from_secs(30))
}

/// Watches every route change as it happens: a group whose weight grows must be
/// reported healthy by the fleet (every instance, at least `size`) and by the
/// router itself (every attached member, at least `size`). Also records every
/// mutating call with its time.
#[derive(Clone)]
struct Guard {
    platform: MemoryPlatform,
    violations: Arc<Mutex<Vec<String>>>,
    mutations: Arc<Mutex<Vec<(Instant, &'static str)>>>,
}

impl Guard {
    fn new(platform: &MemoryPlatform) -> Guard {
        Guard {
            platform: platform.clone(),
            violations: Arc::default(),
            mutations: Arc::default(),
        }
    }
    fn router(&self) -> GuardRouter {
        GuardRouter(self.clone(), self.platform.router())
    }
    fn fleet(&self) -> GuardFleet {
        GuardFleet(self.clone(), self.platform.fleet())
    }
    fn mutated(&self, what: &'static str) {
        self.mutations.lock().unwrap().push((Instant::now(), what));
    }
    fn violations(&self) -> Vec<String> {
        self.violations.lock().unwrap().clone()
    }
    fn engine(&self) -> Engine {
        Engine::new(self.platform.image(), self.fleet(), self.router())
            .with_lock(self.platform.lock())
    }
}

/// Retries a probe through injected random faults.
async fn probe<T, F, Fut>(mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    for _ in 0..200 {
        if let Ok(x) = f().await {
            return Some(x);
        }
    }
    None
}

struct GuardRouter(Guard, MemoryRouter);
struct GuardFleet(Guard, MemoryFleet);

#[async_trait]
impl Router for GuardRouter {
    fn capabilities(&self) -> RouterCapabilities {
        self.1.capabilities()
    }
    async fn attach(
        &self,
        app: &App,
        group: &GroupId,
        instances: &[Instance],
    ) -> Result<Attachment> {
        self.0.mutated("attach");
        self.1.attach(app, group, instances).await
    }
    async fn detach(&self, app: &App, group: &GroupId) -> Result<()> {
        self.0.mutated("detach");
        self.1.detach(app, group).await
    }
    async fn routes(&self, app: &App) -> Result<RouteTable> {
        self.1.routes(app).await
    }
    async fn set_routes(&self, app: &App, table: &RouteTable) -> Result<()> {
        self.0.mutated("set_routes");
        let before = probe(|| self.1.routes(app)).await.unwrap_or_default();
        let fleet = self.0.platform.fleet();
        let groups = probe(|| fleet.groups(app)).await.unwrap_or_default();
        for (g, w) in table.iter() {
            if w <= before.weight(g) {
                continue;
            }
            let size = groups
                .iter()
                .find(|x| &x.id == g)
                .map(|x| x.release.size as usize)
                .unwrap_or(usize::MAX);
            let serving = probe(|| self.1.serving(app, g)).await;
            let instances = probe(|| fleet.instances(app, g)).await.unwrap_or_default();
            let fleet_ok =
                instances.len() >= size && instances.iter().all(|i| i.health.is_healthy());
            let router_ok = serving
                .as_ref()
                .is_some_and(|s| s.total >= size && s.healthy == s.total);
            if !(fleet_ok && router_ok) {
                self.0.violations.lock().unwrap().push(format!(
                    "{g} raised to {w}% (from {}%) while fleet_ok={fleet_ok} router={serving:?} size={size} table={table}",
                    before.weight(g)
                ));
            }
        }
        self.1.set_routes(app, table).await
    }
    async fn serving(&self, app: &App, group: &GroupId) -> Result<Serving> {
        self.1.serving(app, group).await
    }
}

#[async_trait]
impl Fleet for GuardFleet {
    fn capabilities(&self) -> FleetCapabilities {
        self.1.capabilities()
    }
    async fn launch(&self, group: &Group) -> Result<()> {
        self.0.mutated("launch");
        self.1.launch(group).await
    }
    async fn groups(&self, app: &App) -> Result<Vec<Group>> {
        self.1.groups(app).await
    }
    async fn instances(&self, app: &App, group: &GroupId) -> Result<Vec<Instance>> {
        self.1.instances(app, group).await
    }
    async fn destroy(&self, app: &App, group: &GroupId) -> Result<()> {
        self.0.mutated("destroy");
        self.1.destroy(app, group).await
    }
}

async fn image_id(platform: &MemoryPlatform, app: &App, tag: &str) -> ImageId {
    platform
        .image()
        .prepare(
            app,
            &ImageSource::Reference(format!("web:{tag}")),
            &EventSink::none(),
        )
        .await
        .unwrap()
        .id
}

async fn groups_of(platform: &MemoryPlatform, app: &App) -> Vec<Group> {
    let mut g = platform.fleet().groups(app).await.unwrap();
    g.sort_by(|a, b| a.id.cmp(&b.id));
    g
}

async fn group_ids(platform: &MemoryPlatform, app: &App) -> Vec<GroupId> {
    groups_of(platform, app)
        .await
        .into_iter()
        .map(|g| g.id)
        .collect()
}

async fn routes(platform: &MemoryPlatform, app: &App) -> RouteTable {
    platform.router().routes(app).await.unwrap()
}

/// The live group's whole record.
async fn live(platform: &MemoryPlatform, app: &App) -> Group {
    let r = routes(platform, app).await;
    let id = r.primary().expect("a live group").clone();
    assert_eq!(
        r,
        RouteTable::single(id.clone()),
        "all traffic on one group"
    );
    groups_of(platform, app)
        .await
        .into_iter()
        .find(|g| g.id == id)
        .expect("the live group exists")
}

/// No stray instance, nothing attached that is not a group, every group complete.
async fn assert_tidy(platform: &MemoryPlatform, app: &App, what: &str) {
    let groups = groups_of(platform, app).await;
    let mut expected = 0;
    for g in &groups {
        let n = platform.fleet().instances(app, &g.id).await.unwrap().len();
        assert_eq!(
            n, g.release.size as usize,
            "{what}: {} has {n} instances",
            g.id
        );
        expected += n;
    }
    assert_eq!(
        platform.instance_count(),
        expected,
        "{what}: stray instances"
    );
    let ids: BTreeSet<GroupId> = groups.iter().map(|g| g.id.clone()).collect();
    let attached: BTreeSet<GroupId> = platform.attached(app).into_iter().collect();
    assert!(
        attached.is_subset(&ids),
        "{what}: attached {attached:?} but groups {ids:?}"
    );
    for g in routes(platform, app).await.groups() {
        assert!(ids.contains(g), "{what}: traffic to missing group {g}");
    }
}

type Seen = Arc<Mutex<Vec<(Event, Option<EventContext>)>>>;

fn recording() -> (EventSink, Seen) {
    let seen: Seen = Arc::default();
    let sink = EventSink::with_context({
        let seen = seen.clone();
        move |e: &Event, c: Option<&EventContext>| {
            seen.lock().unwrap().push((e.clone(), c.cloned()))
        }
    });
    (sink, seen)
}

// ---------------------------------------------------------------------------
// traffic follows the router's health
// ---------------------------------------------------------------------------

/// "Traffic follows the router's health. A group gets traffic, and more traffic at
/// every canary step, only after the fleet reports all its instances healthy and
/// the router itself reports every attached member healthy."
/// Checked at every route change, through deploys, canaries, rollbacks and reruns.
#[tokio::test(start_paused = true)]
async fn traffic_only_ever_grows_on_groups_healthy_at_fleet_and_router() {
    let platform = MemoryPlatform::new();
    platform.set_boot_time(Duration::from_secs(10));
    platform.set_behaviour("web:atrouter", Behaviour::UnhealthyAtRouter);
    platform.set_behaviour("web:never", Behaviour::NeverHealthy);
    platform.set_behaviour("web:crash", Behaviour::CrashAfter(Duration::from_secs(25)));
    let guard = Guard::new(&platform);
    let engine = guard.engine().with_options(options().with_keep(2));
    let canary = Strategy::canary([10, 50], Duration::from_secs(20));
    engine.deploy(&req("1")).await.unwrap();
    engine
        .deploy(&req("2").strategy(canary.clone()))
        .await
        .unwrap();
    for bad in ["atrouter", "never", "crash"] {
        let e = engine
            .deploy(&req(bad).strategy(canary.clone()))
            .await
            .unwrap_err();
        assert!(e.rolled_back(), "{bad}: {e}");
    }
    engine.deploy(&req("3")).await.unwrap();
    engine.rollback(&app()).await.unwrap();
    engine.rollback(&app()).await.unwrap();
    let one = image_id(&platform, &app(), "1").await;
    let three = image_id(&platform, &app(), "3").await;
    engine.rollback_to(&app(), &three).await.unwrap();
    engine.rollback_to(&app(), &one).await.unwrap();
    engine.rollback_to(&app(), &one).await.unwrap();
    assert_eq!(guard.violations(), Vec::<String>::new());
    assert_tidy(&platform, &app(), "end").await;
}

/// "Engine::rollback ... routes to a warm group of the previous release when it is
/// healthy ..., or launches a new group". "The router must report every member of
/// the group healthy before it gets traffic."
/// A warm group that lost an instance must not get the traffic back.
#[tokio::test(start_paused = true)]
async fn rollback_never_routes_to_a_warm_group_with_a_dead_instance() {
    for use_rollback_to in [false, true] {
        let platform = MemoryPlatform::new();
        let guard = Guard::new(&platform);
        let engine = guard.engine().with_options(options().with_keep(1));
        engine.deploy(&req("1")).await.unwrap();
        engine.deploy(&req("2")).await.unwrap();
        platform.kill_instance(&gid(1), 0).unwrap();
        let r = if use_rollback_to {
            let one = image_id(&platform, &app(), "1").await;
            engine.rollback_to(&app(), &one).await
        } else {
            engine.rollback(&app()).await
        };
        assert_eq!(
            guard.violations(),
            Vec::<String>::new(),
            "rollback_to={use_rollback_to}"
        );
        if let Ok(report) = r {
            assert_ne!(report.to, gid(1), "rollback_to={use_rollback_to}");
            assert!(report.relaunched);
            let l = live(&platform, &app()).await;
            assert_eq!(l.release.image, image_id(&platform, &app(), "1").await);
        } else {
            assert_eq!(routes(&platform, &app()).await, RouteTable::single(gid(2)));
        }
    }
}

/// A rollback that must relaunch a release whose instances pass the fleet's probe
/// but fail the router's check never gets traffic. "Both go through the same
/// readiness check before the switch."
#[tokio::test(start_paused = true)]
async fn a_relaunched_rollback_group_unhealthy_at_the_router_gets_no_traffic() {
    let platform = MemoryPlatform::new();
    let guard = Guard::new(&platform);
    let engine = guard.engine().with_options(options().with_keep(0));
    engine.deploy(&req("1")).await.unwrap();
    engine.deploy(&req("2")).await.unwrap();
    // the image of web:1 now behaves badly at the router
    platform.set_behaviour("web:1", Behaviour::UnhealthyAtRouter);
    image_id(&platform, &app(), "1").await;
    let history = platform.route_history(&app());
    let e = engine.rollback(&app()).await.unwrap_err();
    assert!(e.rolled_back(), "{e}");
    assert_eq!(e.kind(), ErrorKind::Unhealthy, "{e}");
    assert_eq!(platform.route_history(&app()), history, "no route change");
    assert_eq!(group_ids(&platform, &app()).await, [gid(2)]);
    assert_eq!(guard.violations(), Vec::<String>::new());
    assert_tidy(&platform, &app(), "after").await;
}

/// "Engine::promote ... checks that the router reports every member healthy".
/// A prepared group that loses a member while waiting for the operator's promote
/// never gets traffic.
#[tokio::test(start_paused = true)]
async fn promote_refuses_a_prepared_group_that_lost_a_member() {
    for strategy in [
        Strategy::blue_green(),
        Strategy::canary([25], Duration::from_secs(10)),
    ] {
        let platform = MemoryPlatform::new();
        let guard = Guard::new(&platform);
        let engine = guard.engine().with_options(options());
        engine.deploy(&req("1")).await.unwrap();
        let prepared = engine.prepare(&req("2")).await.unwrap();
        assert_eq!(prepared.group.id, gid(2));
        assert!(!prepared.adopted);
        assert_eq!(routes(&platform, &app()).await, RouteTable::single(gid(1)));
        platform.kill_instance(&gid(2), 2).unwrap();
        let history = platform.route_history(&app());
        let e = engine
            .promote(&app(), &gid(2), &strategy)
            .await
            .unwrap_err();
        assert_eq!(platform.route_history(&app()), history, "{strategy:?}: {e}");
        assert_eq!(guard.violations(), Vec::<String>::new());
        assert_eq!(routes(&platform, &app()).await, RouteTable::single(gid(1)));
        assert!(
            !group_ids(&platform, &app()).await.contains(&gid(2)),
            "{strategy:?}: a failed promote destroys the group"
        );
    }
}

/// `prepare` then `promote`: the same analysis as deploy, adoption on a second
/// prepare, and a prepared group abandoned for another release is not left behind.
#[tokio::test(start_paused = true)]
async fn prepare_is_idempotent_and_an_abandoned_prepared_group_is_retired() {
    let platform = MemoryPlatform::new();
    let guard = Guard::new(&platform);
    let engine = guard.engine().with_options(options().with_keep(1));
    engine.deploy(&req("1")).await.unwrap();
    let first = engine.prepare(&req("2")).await.unwrap();
    let again = engine.prepare(&req("2")).await.unwrap();
    assert_eq!(first.group.id, again.group.id);
    assert!(again.adopted, "a second prepare adopts the group");
    // the operator changes their mind and deploys 3 instead
    let report = engine.deploy(&req("3")).await.unwrap();
    assert_eq!(report.previous, Some(gid(1)));
    let ids = group_ids(&platform, &app()).await;
    assert!(
        !ids.contains(&gid(2)),
        "the abandoned prepared group is retired: {ids:?}"
    );
    assert_eq!(report.kept_warm, vec![gid(1)]);
    assert_tidy(&platform, &app(), "after").await;
    // a release that is live cannot be prepared
    let e = engine.prepare(&req("3")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    assert_eq!(guard.violations(), Vec::<String>::new());
}

// ---------------------------------------------------------------------------
// convergence after interruption
// ---------------------------------------------------------------------------

struct Cut {
    platform: MemoryPlatform,
    guard: Guard,
    lock: Arc<MemoryLock>,
    options: EngineOptions,
}

impl Cut {
    fn new(keep: usize) -> Cut {
        let platform = MemoryPlatform::new();
        platform.set_boot_time(Duration::from_secs(10));
        platform.set_latency(Duration::from_millis(400));
        platform.set_behaviour("web:never", Behaviour::NeverHealthy);
        platform.set_behaviour("web:atrouter", Behaviour::UnhealthyAtRouter);
        platform.set_behaviour("web:crash", Behaviour::CrashAfter(Duration::from_secs(15)));
        let guard = Guard::new(&platform);
        Cut {
            platform,
            guard,
            lock: Arc::new(MemoryLock::new()),
            options: options()
                .with_keep(keep)
                .with_lock_lease(Duration::from_secs(30))
                .with_lock_wait(Some(Duration::from_secs(120))),
        }
    }
    /// A fresh engine, as a new process would make, sharing the lock.
    fn engine(&self) -> Engine {
        self.guard
            .engine()
            .with_options(self.options.clone())
            .with_lock(self.lock.clone())
    }
}

/// "A deployment interrupted at any moment and run again converges." "An operation
/// run again after an interruption adopts its own group and finishes".
/// A canary with a bake after the switch, cut at every 1.3 s of its run.
#[tokio::test(start_paused = true)]
async fn a_deploy_cut_at_any_moment_converges_when_run_again() {
    for keep in [0usize, 1] {
        let strategy = Strategy::canary([10, 50], Duration::from_secs(15))
            .with_bake_after(Duration::from_secs(20));
        let mut cut_ms = 300u64;
        loop {
            let c = Cut::new(keep);
            c.engine().deploy(&req("1")).await.unwrap();
            let r = tokio::time::timeout(
                Duration::from_millis(cut_ms),
                c.engine().deploy(&req("2").strategy(strategy.clone())),
            )
            .await;
            let done = r.is_ok();
            let what = format!("keep {keep}, cut at {cut_ms} ms");
            let report = c
                .engine()
                .deploy(&req("2").strategy(strategy.clone()))
                .await
                .unwrap_or_else(|e| panic!("{what}: rerun failed: {e}"));
            assert_eq!(report.live, gid(2), "{what}: adopts its own group");
            let l = live(&c.platform, &app()).await;
            assert_eq!(l.id, gid(2), "{what}");
            assert_eq!(l.release.image, image_id(&c.platform, &app(), "2").await);
            assert_eq!(
                l.previous.as_ref().map(|r| r.image.clone()),
                Some(image_id(&c.platform, &app(), "1").await),
                "{what}: history"
            );
            let expected: Vec<GroupId> = if keep == 0 {
                vec![gid(2)]
            } else {
                vec![gid(1), gid(2)]
            };
            assert_eq!(group_ids(&c.platform, &app()).await, expected, "{what}");
            assert_tidy(&c.platform, &app(), &what).await;
            assert_eq!(c.lock.holder(&app()), None, "{what}: the lock is free");
            assert_eq!(c.guard.violations(), Vec::<String>::new(), "{what}");
            if done {
                break;
            }
            cut_ms += 1300;
        }
    }
}

/// "Convergence. ... a failing group is reverted again." A failing deployment cut
/// at any moment and run again ends with the old group live and nothing else.
#[tokio::test(start_paused = true)]
async fn a_failing_deploy_cut_at_any_moment_is_reverted_when_run_again() {
    for bad in ["never", "atrouter", "crash"] {
        let strategy = Strategy::canary([20], Duration::from_secs(20));
        let mut cut_ms = 300u64;
        loop {
            let c = Cut::new(1);
            c.engine().deploy(&req("1")).await.unwrap();
            let r = tokio::time::timeout(
                Duration::from_millis(cut_ms),
                c.engine().deploy(&req(bad).strategy(strategy.clone())),
            )
            .await;
            let done = r.is_ok();
            let what = format!("{bad}, cut at {cut_ms} ms");
            let e = c
                .engine()
                .deploy(&req(bad).strategy(strategy.clone()))
                .await
                .expect_err(&what);
            assert!(e.rolled_back(), "{what}: {e}");
            assert_eq!(
                routes(&c.platform, &app()).await,
                RouteTable::single(gid(1)),
                "{what}"
            );
            assert_eq!(group_ids(&c.platform, &app()).await, [gid(1)], "{what}");
            assert_eq!(c.platform.attached(&app()), [gid(1)], "{what}");
            assert_tidy(&c.platform, &app(), &what).await;
            assert_eq!(c.lock.holder(&app()), None, "{what}");
            assert_eq!(c.guard.violations(), Vec::<String>::new(), "{what}");
            if done {
                break;
            }
            cut_ms += 1100;
        }
    }
}

/// "`rollback_to(app, image)` is the one to rerun after an interruption"; "A
/// rollback interrupted before its switch and run again finishes the group it
/// launched".
#[tokio::test(start_paused = true)]
async fn a_rollback_cut_at_any_moment_converges_when_run_again() {
    for use_rollback_to in [true, false] {
        let mut cut_ms = 300u64;
        loop {
            let c = Cut::new(0);
            for tag in ["1", "2", "3"] {
                c.engine().deploy(&req(tag)).await.unwrap();
            }
            let two = image_id(&c.platform, &app(), "2").await;
            let one = image_id(&c.platform, &app(), "1").await;
            let before = c.platform.route_history(&app());
            let r = tokio::time::timeout(Duration::from_millis(cut_ms), async {
                if use_rollback_to {
                    c.engine().rollback_to(&app(), &two).await
                } else {
                    c.engine().rollback(&app()).await
                }
            })
            .await;
            let done = r.is_ok();
            let switched = c.platform.route_history(&app()) != before;
            let what = format!("rollback_to={use_rollback_to}, cut at {cut_ms} ms");
            if use_rollback_to || !switched {
                let report = if use_rollback_to {
                    c.engine().rollback_to(&app(), &two).await
                } else {
                    c.engine().rollback(&app()).await
                }
                .unwrap_or_else(|e| panic!("{what}: rerun failed: {e}"));
                let l = live(&c.platform, &app()).await;
                assert_eq!(report.to, l.id, "{what}");
                assert_eq!(l.release.image, two, "{what}");
                let history: Vec<ImageId> = l.history().map(|r| r.image.clone()).collect();
                assert_eq!(
                    history,
                    std::slice::from_ref(&one),
                    "{what}: history of the rolled-back group"
                );
                assert_eq!(
                    group_ids(&c.platform, &app()).await,
                    std::slice::from_ref(&l.id),
                    "{what}: keep 0"
                );
                assert_tidy(&c.platform, &app(), &what).await;
                assert_eq!(c.lock.holder(&app()), None, "{what}");
                // one more rollback goes to 1, then nothing is older
                let back = c.engine().rollback(&app()).await.unwrap();
                assert_eq!(live(&c.platform, &app()).await.release.image, one, "{what}");
                assert_eq!(back.to, live(&c.platform, &app()).await.id);
                let e = c.engine().rollback(&app()).await.unwrap_err();
                assert_eq!(e.kind(), ErrorKind::Conflict, "{what}: {e}");
            }
            assert_eq!(c.guard.violations(), Vec::<String>::new(), "{what}");
            if done {
                break;
            }
            cut_ms += 900;
        }
    }
}

// ---------------------------------------------------------------------------
// history
// ---------------------------------------------------------------------------

/// "`rollback` walks the live group's history strictly backwards, one release per
/// call, whatever `keep` is." Redeploying an old image makes a warm group of that
/// image whose history is not the rollback's: it must not be reused, or the
/// rollback would go forward again.
#[tokio::test(start_paused = true)]
async fn rollback_walks_back_after_an_old_image_is_redeployed() {
    for keep in [0usize, 1, 2, 5] {
        let platform = MemoryPlatform::new();
        let guard = Guard::new(&platform);
        let engine = guard.engine().with_options(options().with_keep(keep));
        // history of releases: 1, 2, 1 (a redeploy of image 1)
        for tag in ["1", "2", "1"] {
            engine.deploy(&req(tag)).await.unwrap();
        }
        let one = image_id(&platform, &app(), "1").await;
        let two = image_id(&platform, &app(), "2").await;
        engine.rollback(&app()).await.unwrap();
        assert_eq!(
            live(&platform, &app()).await.release.image,
            two,
            "keep {keep}"
        );
        engine.rollback(&app()).await.unwrap();
        assert_eq!(
            live(&platform, &app()).await.release.image,
            one,
            "keep {keep}"
        );
        let e = engine.rollback(&app()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Conflict, "keep {keep}: went on to {e}");
        assert_eq!(guard.violations(), Vec::<String>::new());
        assert_tidy(&platform, &app(), "end").await;
    }
}

/// Rollbacks interleaved with deploys, failed deploys and rollback_to follow a
/// stack of releases; HISTORY_LEN bounds the walk; nothing older is a Conflict
/// "before any change".
#[tokio::test(start_paused = true)]
async fn rollback_follows_a_stack_through_deploys_failures_and_rollback_to() {
    for keep in [0usize, 1, 3] {
        let platform = MemoryPlatform::new();
        platform.set_behaviour("web:bad", Behaviour::NeverHealthy);
        let guard = Guard::new(&platform);
        let engine = guard.engine().with_options(options().with_keep(keep));
        let mut stack: Vec<ImageId> = Vec::new();
        let deploy = |tag: &'static str| {
            let engine = &engine;
            async move { engine.deploy(&req(tag)).await }
        };
        for tag in ["1", "2", "3"] {
            deploy(tag).await.unwrap();
        }
        let id = |t: &'static str| {
            let p = platform.clone();
            async move { image_id(&p, &app(), t).await }
        };
        stack.extend([id("1").await, id("2").await, id("3").await]);
        // a failed deploy changes no history
        assert!(deploy("bad").await.is_err());
        engine.rollback(&app()).await.unwrap();
        stack.pop();
        assert_eq!(
            &live(&platform, &app()).await.release.image,
            stack.last().unwrap(),
            "keep {keep}"
        );
        deploy("4").await.unwrap();
        stack.push(id("4").await);
        assert!(deploy("bad").await.is_err());
        engine.rollback(&app()).await.unwrap();
        stack.pop();
        assert_eq!(
            &live(&platform, &app()).await.release.image,
            stack.last().unwrap(),
            "keep {keep}: back from 4"
        );
        engine.rollback(&app()).await.unwrap();
        stack.pop();
        assert_eq!(
            &live(&platform, &app()).await.release.image,
            stack.last().unwrap(),
            "keep {keep}: back to 1"
        );
        let before = platform.mutating_calls();
        let e = engine.rollback(&app()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Conflict, "keep {keep}: {e}");
        assert_eq!(
            platform.mutating_calls(),
            before,
            "refused before any change"
        );
        assert_eq!(guard.violations(), Vec::<String>::new());
        assert_tidy(&platform, &app(), "end").await;
    }
}

/// "at most `HISTORY_LEN` = 10": twelve releases, ten rollbacks, then Conflict.
#[tokio::test(start_paused = true)]
async fn rollback_walks_back_history_len_releases_then_refuses() {
    let platform = MemoryPlatform::new();
    let engine = Engine::from_parts(platform.parts())
        .with_options(options().with_keep(1).with_drain(Duration::ZERO));
    let tags: Vec<String> = (1..=12).map(|n| format!("r{n}")).collect();
    for t in &tags {
        engine.deploy(&req(t)).await.unwrap();
    }
    for n in (2..=11).rev() {
        engine.rollback(&app()).await.unwrap();
        let want = image_id(&platform, &app(), &format!("r{n}")).await;
        assert_eq!(
            live(&platform, &app()).await.release.image,
            want,
            "back to r{n}"
        );
    }
    let e = engine.rollback(&app()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    assert_tidy(&platform, &app(), "end").await;
}

/// "Absolute, so running it again is safe: when a group of that image already has
/// all the traffic, it changes no route ... (the report's from and to are then the
/// same group)." And an unknown image is NotFound "before anything changes".
#[tokio::test(start_paused = true)]
async fn rollback_to_the_live_image_changes_no_route_and_unknown_is_not_found() {
    let platform = MemoryPlatform::new();
    let engine = Engine::from_parts(platform.parts()).with_options(options());
    engine.deploy(&req("1")).await.unwrap();
    engine.deploy(&req("2")).await.unwrap();
    let two = image_id(&platform, &app(), "2").await;
    let history = platform.route_history(&app());
    let r = engine.rollback_to(&app(), &two).await.unwrap();
    assert_eq!(r.from, r.to);
    assert_eq!(r.to, gid(2));
    assert_eq!(platform.route_history(&app()), history);
    let before = platform.mutating_calls();
    let e = engine
        .rollback_to(&app(), &ImageId::new("mem-nope"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert_eq!(platform.mutating_calls(), before);
}

// ---------------------------------------------------------------------------
// locks
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq)]
enum RenewFault {
    Refused,
    Unavailable,
}

/// A lock whose renewals start failing after `ok` successful ones. Records when
/// the holder last got its lease.
struct BadLock {
    inner: Arc<MemoryLock>,
    ok: AtomicU32,
    fault: RenewFault,
    last_lease: Mutex<Option<Instant>>,
    first_failure: Mutex<Option<Instant>>,
}

impl BadLock {
    fn new(ok: u32, fault: RenewFault) -> Arc<BadLock> {
        BadLock::over(Arc::new(MemoryLock::new()), ok, fault)
    }
    fn over(inner: Arc<MemoryLock>, ok: u32, fault: RenewFault) -> Arc<BadLock> {
        Arc::new(BadLock {
            inner,
            ok: AtomicU32::new(ok),
            fault,
            last_lease: Mutex::new(None),
            first_failure: Mutex::new(None),
        })
    }
}

#[async_trait]
impl Lock for BadLock {
    async fn acquire(&self, app: &App, h: &LockHolder, lease: Duration) -> Result<FencingToken> {
        let start = Instant::now();
        let t = self.inner.acquire(app, h, lease).await?;
        *self.last_lease.lock().unwrap() = Some(start);
        Ok(t)
    }
    async fn renew(
        &self,
        app: &App,
        h: &LockHolder,
        t: FencingToken,
        lease: Duration,
    ) -> Result<()> {
        let start = Instant::now();
        let left = self.ok.load(Ordering::SeqCst);
        if left == 0 {
            self.first_failure.lock().unwrap().get_or_insert(start);
            return Err(match self.fault {
                RenewFault::Refused => Error::Locked {
                    app: app.to_string(),
                    holder: "someone else".into(),
                },
                RenewFault::Unavailable => Error::provider("lockstore", "no answer", true),
            });
        }
        self.ok.store(left - 1, Ordering::SeqCst);
        self.inner.renew(app, h, t, lease).await?;
        *self.last_lease.lock().unwrap() = Some(start);
        Ok(())
    }
    async fn release(&self, app: &App, h: &LockHolder, t: FencingToken) -> Result<()> {
        self.inner.release(app, h, t).await
    }
}

/// "Fenced. ... a lost lease ends the operation without any further change (no
/// revert either)"; "ends with `Error::Locked` and `rolled_back == false`"; "A
/// renewal that fails for another reason ... is tried again, but never keeps the
/// deployment acting past its lease."
#[tokio::test(start_paused = true)]
async fn a_deployment_that_loses_its_lease_makes_no_change_after_it() {
    for keep in [0usize, 1] {
        for fault in [RenewFault::Refused, RenewFault::Unavailable] {
            for ok in [0u32, 1, 2, 4] {
                let platform = MemoryPlatform::new();
                platform.set_boot_time(Duration::from_secs(25));
                let guard = Guard::new(&platform);
                let lock = BadLock::new(ok, fault);
                let lease = Duration::from_secs(30);
                let (sink, seen) = recording();
                let engine = guard
                    .engine()
                    .with_options(options().with_lock_lease(lease).with_keep(keep))
                    .with_events(sink);
                engine.deploy(&req("1")).await.unwrap();
                let engine = engine.with_lock(lock.clone());
                let strategy = Strategy::canary([10, 50], Duration::from_secs(20))
                    .with_bake_after(Duration::from_secs(30));
                let started = Instant::now();
                let r = engine.deploy(&req("2").strategy(strategy)).await;
                let what = format!(
                    "keep={keep} ok={ok} unavailable={}",
                    fault == RenewFault::Unavailable
                );
                let failure = lock
                    .first_failure
                    .lock()
                    .unwrap()
                    .expect("a renewal failed");
                let deadline = lock.last_lease.lock().unwrap().unwrap() + lease;
                // (a lease that passes during the bake after the switch and is followed
                // by no change ends in `Ok`: the defect of
                // a_lease_lost_during_the_bake_after_the_switch_still_reports_success)
                if let Err(e) = &r {
                    assert_eq!(e.kind(), ErrorKind::Locked, "{what}: {e}");
                    assert!(!e.rolled_back(), "{what}: {e}");
                }
                let late: Vec<_> = guard
                    .mutations
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|(t, _)| *t >= started)
                    .filter(|(t, _)| match fault {
                        RenewFault::Refused => *t > failure,
                        RenewFault::Unavailable => *t >= deadline,
                    })
                    .map(|(t, w)| (t.duration_since(started), *w))
                    .collect();
                assert_eq!(late, [], "{what}: changes after the lease was lost");
                let events = seen.lock().unwrap();
                assert!(
                    !events
                        .iter()
                        .any(|(e, _)| matches!(e, Event::Reverting { .. })),
                    "{what}: no revert"
                );
                match events.last() {
                    Some((Event::Failed { kind, reverted, .. }, _)) => {
                        assert_eq!(*kind, ErrorKind::Locked, "{what}");
                        assert!(!reverted, "{what}");
                    }
                    other => assert!(r.is_ok(), "{what}: last event {other:?}"),
                }
            }
        }
    }
}

/// Two engines sharing one MemoryLock: the second is `Error::Locked` naming the
/// holder and changes nothing; with `lock_wait` it waits and then deploys on top.
#[tokio::test(start_paused = true)]
async fn two_engines_sharing_a_lock_exclude_each_other() {
    let platform = MemoryPlatform::new();
    platform.set_boot_time(Duration::from_secs(20));
    let lock = Arc::new(MemoryLock::new());
    let guard = Guard::new(&platform);
    let a = guard
        .engine()
        .with_options(options())
        .with_lock(lock.clone());
    let b = guard
        .engine()
        .with_options(options())
        .with_lock(lock.clone());
    let c = guard
        .engine()
        .with_options(options().with_lock_wait(Some(Duration::from_secs(600))))
        .with_lock(lock.clone());
    a.deploy(&req("1")).await.unwrap();
    let ra = req("2");
    let rb = req("3");
    let rc = req("4");
    let (x, y, z) = tokio::join!(
        a.deploy(&ra),
        async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            b.deploy(&rb).await
        },
        async {
            tokio::time::sleep(Duration::from_secs(6)).await;
            c.deploy(&rc).await
        }
    );
    x.unwrap();
    let e = y.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Locked, "{e}");
    assert!(!e.rolled_back());
    z.unwrap();
    let l = live(&platform, &app()).await;
    assert_eq!(l.release.image, image_id(&platform, &app(), "4").await);
    assert_eq!(
        l.previous.map(|r| r.image),
        Some(image_id(&platform, &app(), "2").await),
        "the waiting deployment went on top of the first"
    );
    assert!(!group_ids(&platform, &app()).await.iter().any(|g| {
        // 3 never launched
        g == &gid(4)
    }));
    assert_eq!(lock.holder(&app()), None);
    assert_eq!(guard.violations(), Vec::<String>::new());
    assert_tidy(&platform, &app(), "end").await;
}

/// Concurrent deployments of two apps through one engine and one sink: both
/// finish, each app's state is its own, and `EventSink::with_context` tells
/// every event's operation ("one sink can follow concurrent deployments").
#[tokio::test(start_paused = true)]
async fn concurrent_apps_are_independent_and_the_sink_follows_each() {
    let platform = MemoryPlatform::new();
    platform.set_boot_time(Duration::from_secs(7));
    platform.set_latency(Duration::from_millis(100));
    platform.set_behaviour("web:bad", Behaviour::NeverHealthy);
    let (sink, seen) = recording();
    let engine = Engine::from_parts(platform.parts())
        .with_options(options().with_health_timeout(Duration::from_secs(30)))
        .with_events(sink);
    let web = app();
    let api = App::new("api", "production").unwrap();
    let (w1, a1) = (req_for(&web, "1"), req_for(&api, "1"));
    tokio::try_join!(engine.deploy(&w1), engine.deploy(&a1)).unwrap();
    let build = DeployRequest::new(
        api.clone(),
        ImageSource::Build {
            context: "ctx".into(),
            args: Default::default(),
        },
    );
    let canary = Strategy::canary([30], Duration::from_secs(10));
    let rweb = req_for(&web, "bad").strategy(canary.clone());
    let (a, b) = tokio::join!(engine.deploy(&rweb), engine.deploy(&build));
    let ea = a.unwrap_err();
    b.unwrap();
    assert_eq!(routes(&platform, &web).await, RouteTable::single(gid(1)));
    assert_eq!(
        routes(&platform, &api).await,
        RouteTable::single(GroupId::new("api-production-v002"))
    );
    let events = seen.lock().unwrap().clone();
    // every event of an operation carries its context
    let missing: Vec<&Event> = events
        .iter()
        .filter(|(_, c)| c.is_none())
        .map(|(e, _)| e)
        .collect();
    assert!(missing.is_empty(), "events without context: {missing:?}");
    // group the events by operation, check each stream
    let mut ids: Vec<(App, String)> = Vec::new();
    for (e, c) in &events {
        if let Event::Started {
            app,
            deployment,
            operation,
        } = e
        {
            let c = c.as_ref().unwrap();
            assert_eq!(&c.app, app);
            assert_eq!(&c.deployment, deployment);
            assert_eq!(c.operation, *operation);
            assert_eq!(*operation, Operation::Deploy);
            ids.push((app.clone(), deployment.to_string()));
        }
    }
    assert_eq!(ids.len(), 4);
    for (a, id) in &ids {
        let stream: Vec<&Event> = events
            .iter()
            .filter(|(_, c)| c.as_ref().is_some_and(|c| c.deployment.as_str() == id))
            .map(|(e, _)| e)
            .collect();
        assert!(
            matches!(stream.first(), Some(Event::Started { .. })),
            "{a} {id}: {stream:?}"
        );
        assert!(
            matches!(
                stream.last(),
                Some(Event::Finished { .. } | Event::Failed { .. })
            ),
            "{a} {id}: last {:?}",
            stream.last()
        );
        assert_eq!(
            stream
                .iter()
                .filter(|e| matches!(e, Event::Finished { .. } | Event::Failed { .. }))
                .count(),
            1
        );
        // StepStarted / StepFinished are paired, in order, never nested
        let mut open: Option<Step> = None;
        for e in &stream {
            match e {
                Event::StepStarted { step } => {
                    assert_eq!(open, None, "{a}: {step:?} started inside {open:?}");
                    open = Some(*step);
                }
                Event::StepFinished { step, .. } => {
                    assert_eq!(open, Some(*step), "{a}: finished {step:?}");
                    open = None;
                }
                _ => {}
            }
        }
        // every group or traffic event in the stream is about this app
        for e in &stream {
            let slug = a.slug();
            let g = match e {
                Event::GroupLaunched { group, .. }
                | Event::GroupAdopted { group }
                | Event::Health { group, .. }
                | Event::CheckPassed { group, .. }
                | Event::GroupKeptWarm { group }
                | Event::GroupDestroyed { group }
                | Event::Ready { group, .. }
                | Event::Watching { group, .. }
                | Event::Finished { group, .. } => Some(group.to_string()),
                Event::TrafficShifted { routes } | Event::Reverted { routes } => {
                    routes.groups().next().map(|g| g.to_string())
                }
                _ => None,
            };
            if let Some(g) = g {
                assert!(g.starts_with(&slug), "{a}: event about {g}: {e:?}");
            }
        }
    }
    // the build output of api is told apart too
    assert!(events
        .iter()
        .any(|(e, c)| matches!(e, Event::BuildOutput { .. })
            && c.as_ref().is_some_and(|c| c.app == api)));
    // Failed carries kind, step and reverted of the error returned
    let failed = events
        .iter()
        .find_map(|(e, c)| match e {
            Event::Failed {
                kind,
                step,
                reverted,
                ..
            } if c.as_ref().unwrap().app == web => Some((*kind, *step, *reverted)),
            _ => None,
        })
        .expect("a Failed event for web");
    assert_eq!(failed, (ea.kind(), ea.step(), ea.rolled_back()));
}

/// Event order of a reverted canary: Started, ..., TrafficShifted (10 %), ...,
/// Reverting, Reverted with the starting table, Failed (reverted); the
/// TrafficShifted tables are exactly the router's history.
#[tokio::test(start_paused = true)]
async fn events_of_a_reverted_canary_make_sense() {
    let platform = MemoryPlatform::new();
    platform.set_behaviour("web:err", Behaviour::ErrorRate(0.5));
    let (sink, seen) = recording();
    let engine = Engine::from_parts(platform.parts())
        .with_options(options())
        .with_events(sink);
    engine.deploy(&req("1")).await.unwrap();
    let h0 = platform.route_history(&app()).len();
    seen.lock().unwrap().clear();
    let e =
        engine
            .deploy(&req("err").strategy(
                Strategy::canary([10, 50], Duration::from_secs(30)).with_max_error_rate(0.1),
            ))
            .await
            .unwrap_err();
    assert_eq!(e.step(), Some(Step::Promote), "{e}");
    assert!(e.rolled_back());
    let events: Vec<Event> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|(e, _)| e.clone())
        .collect();
    let shifted: Vec<RouteTable> = events
        .iter()
        .filter_map(|e| match e {
            Event::TrafficShifted { routes } => Some(routes.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        shifted,
        platform.route_history(&app())[h0..].to_vec(),
        "{:#?}",
        events
    );
    let pos = |f: &dyn Fn(&Event) -> bool| events.iter().position(f);
    let reverting = pos(&|e| matches!(e, Event::Reverting { .. })).expect("Reverting");
    let reverted = pos(&|e| matches!(e, Event::Reverted { .. })).expect("Reverted");
    let failed = pos(&|e| matches!(e, Event::Failed { .. })).expect("Failed");
    assert!(
        reverting < reverted && reverted < failed && failed == events.len() - 1,
        "{events:?}"
    );
    assert!(
        matches!(&events[reverted], Event::Reverted { routes } if *routes == RouteTable::single(gid(1)))
    );
    assert!(
        matches!(
            &events[reverting],
            Event::Reverting {
                step: Step::Promote,
                ..
            }
        ),
        "{:?}",
        events[reverting]
    );
    assert!(
        matches!(
            &events[failed],
            Event::Failed {
                kind: ErrorKind::Unhealthy,
                step: Some(Step::Promote),
                reverted: true,
                ..
            }
        ),
        "{:?}",
        events[failed]
    );
}

// ---------------------------------------------------------------------------
// analysis and the bake after the switch
// ---------------------------------------------------------------------------

/// "the new group's 5xx rate must stay ... under the baseline group's rate plus
/// `max_error_rate_increase`". A release exactly as good as the one before, with a
/// bake after the switch, must pass: after the switch the previous group serves
/// nothing, so its window has no rate to compare with.
#[tokio::test(start_paused = true)]
async fn a_release_as_good_as_the_baseline_passes_the_increase_limit_after_the_switch() {
    let platform = MemoryPlatform::new();
    platform.set_behaviour("web:1", Behaviour::ErrorRate(0.2));
    platform.set_behaviour("web:2", Behaviour::ErrorRate(0.2));
    let engine = Engine::from_parts(platform.parts()).with_options(options());
    engine.deploy(&req("1")).await.unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let r = engine
        .deploy(
            &req("2").strategy(
                Strategy::canary([20], Duration::from_secs(30))
                    .with_max_error_rate_increase(0.05)
                    .with_bake_after(Duration::from_secs(30)),
            ),
        )
        .await;
    assert!(r.is_ok(), "{:?}", r.err().map(|e| e.to_string()));
}

/// ...and one clearly worse is caught: during the canary, and after the switch.
#[tokio::test(start_paused = true)]
async fn a_worse_release_breaks_the_increase_limit() {
    let platform = MemoryPlatform::new();
    platform.set_behaviour("web:1", Behaviour::ErrorRate(0.05));
    platform.set_behaviour("web:2", Behaviour::ErrorRate(0.4));
    let engine = Engine::from_parts(platform.parts()).with_options(options());
    engine.deploy(&req("1")).await.unwrap();
    let e = engine
        .deploy(&req("2").strategy(
            Strategy::canary([20], Duration::from_secs(30)).with_max_error_rate_increase(0.1),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.step(), Some(Step::Promote), "{e}");
    assert!(e.rolled_back());
    assert_eq!(routes(&platform, &app()).await, RouteTable::single(gid(1)));
    // blue/green with a bake after the switch and an absolute limit
    let e = engine
        .deploy(
            &req("2").strategy(
                Strategy::blue_green()
                    .with_max_error_rate(0.1)
                    .with_bake_after(Duration::from_secs(60)),
            ),
        )
        .await
        .unwrap_err();
    assert_eq!(e.step(), Some(Step::Bake), "{e}");
    assert!(e.to_string().contains("after the switch"), "{e}");
    assert!(e.rolled_back());
    assert_eq!(routes(&platform, &app()).await, RouteTable::single(gid(1)));
    assert_eq!(group_ids(&platform, &app()).await, [gid(1)]);
}

/// "The analysis ... runs after each canary step and at every poll of the bake
/// after the switch"; checks get "the router's counters of the new group and of the
/// baseline", `weight` is "the group's share of traffic now".
#[tokio::test(start_paused = true)]
async fn analysis_checks_run_at_each_step_and_every_poll_of_the_bake() {
    let platform = MemoryPlatform::new();
    let engine = Engine::from_parts(platform.parts())
        .with_options(options().with_poll_interval(Duration::from_secs(5)));
    engine.deploy(&req("1")).await.unwrap();
    let calls: Shared<(u8, bool, bool, String)> = Arc::default();
    let check = check_fn("record", {
        let calls = calls.clone();
        move |t| {
            let calls = calls.clone();
            async move {
                calls.lock().unwrap().push((
                    t.weight,
                    t.serving.is_some(),
                    t.baseline.is_some(),
                    t.group.to_string(),
                ));
                Ok(())
            }
        }
    });
    engine
        .deploy(
            &req("2").analysis(check).strategy(
                Strategy::canary([10, 40], Duration::from_secs(20))
                    .with_bake_after(Duration::from_secs(60)),
            ),
        )
        .await
        .unwrap();
    let calls = calls.lock().unwrap().clone();
    let weights: Vec<u8> = calls.iter().map(|c| c.0).collect();
    assert_eq!(weights[..2], [10, 40], "{weights:?}");
    let bake = weights[2..].iter().filter(|w| **w == 100).count();
    assert!(
        (10..=13).contains(&bake),
        "60 s / 5 s polls: {bake} ({weights:?})"
    );
    assert!(
        calls
            .iter()
            .all(|c| c.1 && c.2 && c.3 == gid(2).to_string()),
        "{calls:?}"
    );
}

/// A failing analysis check during the bake after the switch switches back "at
/// once, in one confirmed route change", and the error says "after the switch".
#[tokio::test(start_paused = true)]
async fn a_failing_analysis_check_in_the_bake_switches_back_in_one_change() {
    let platform = MemoryPlatform::new();
    let engine = Engine::from_parts(platform.parts()).with_options(options());
    engine.deploy(&req("1")).await.unwrap();
    let n = Arc::new(AtomicU32::new(0));
    let check = check_fn("flaky", {
        let n = n.clone();
        move |t| {
            let n = n.clone();
            async move {
                if t.weight == 100 && n.fetch_add(1, Ordering::SeqCst) >= 3 {
                    Err("p50 doubled".to_string())
                } else {
                    Ok(())
                }
            }
        }
    });
    let h0 = platform.route_history(&app()).len();
    let e = engine
        .deploy(
            &req("2")
                .analysis(check)
                .strategy(Strategy::blue_green().with_bake_after(Duration::from_secs(120))),
        )
        .await
        .unwrap_err();
    assert_eq!(e.step(), Some(Step::Bake), "{e}");
    assert!(e.rolled_back());
    let s = e.to_string();
    assert!(
        s.contains("after the switch") && s.contains("p50 doubled"),
        "{s}"
    );
    let h = platform.route_history(&app())[h0..].to_vec();
    assert_eq!(h, [RouteTable::single(gid(2)), RouteTable::single(gid(1))]);
    assert_eq!(group_ids(&platform, &app()).await, [gid(1)]);
}

/// "The bake after the switch needs the previous group: with nothing live before
/// (a first deployment) there is nothing to switch back to, and no watch."
#[tokio::test(start_paused = true)]
async fn a_first_deployment_has_no_watch() {
    let platform = MemoryPlatform::new();
    let (sink, seen) = recording();
    let engine = Engine::from_parts(platform.parts())
        .with_options(options())
        .with_events(sink);
    let t = Instant::now();
    engine
        .deploy(
            &req("1").strategy(Strategy::blue_green().with_bake_after(Duration::from_secs(600))),
        )
        .await
        .unwrap();
    assert!(t.elapsed() < Duration::from_secs(600), "{:?}", t.elapsed());
    assert!(!seen
        .lock()
        .unwrap()
        .iter()
        .any(|(e, _)| matches!(e, Event::Watching { .. })));
}

/// `rollback_with` with a strategy and a verify check: the check runs on the
/// rollback target alone (weight 0, its preview), and the bake after the switch
/// watches it, switching back to where the rollback started on a breach.
#[tokio::test(start_paused = true)]
async fn rollback_with_verifies_and_bakes_its_target() {
    let platform = MemoryPlatform::new();
    let guard = Guard::new(&platform);
    let engine = guard.engine().with_options(options().with_keep(0));
    engine.deploy(&req("1")).await.unwrap();
    engine.deploy(&req("2")).await.unwrap();
    // image 1 now crashes 5 s after boot
    platform.set_behaviour("web:1", Behaviour::CrashAfter(Duration::from_secs(5)));
    let one = image_id(&platform, &app(), "1").await;
    let seen: Shared<(u8, Option<String>)> = Arc::default();
    let check = check_fn("smoke", {
        let seen = seen.clone();
        move |t| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push((t.weight, t.preview.clone()));
                Ok(())
            }
        }
    });
    let e = engine
        .rollback_with(
            &RollbackRequest::new(app())
                .to_image(one.clone())
                .verify(check)
                .strategy(Strategy::blue_green().with_bake_after(Duration::from_secs(60))),
        )
        .await
        .unwrap_err();
    assert_eq!(e.step(), Some(Step::Bake), "{e}");
    assert!(e.rolled_back(), "{e}");
    assert_eq!(routes(&platform, &app()).await, RouteTable::single(gid(2)));
    assert_eq!(group_ids(&platform, &app()).await, [gid(2)]);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0, 0);
    assert!(seen[0].1.is_some());
    assert_eq!(guard.violations(), Vec::<String>::new());
}

// ---------------------------------------------------------------------------
// bounded
// ---------------------------------------------------------------------------

/// "Every platform call is bounded by `call_timeout`, every wait by its own option,
/// and each bound gives an `Error::Timeout` naming what was awaited."
#[tokio::test(start_paused = true)]
async fn a_hung_call_is_a_timeout_and_the_deploy_is_reverted() {
    for op in [
        Op::Launch,
        Op::Attach,
        Op::SetRoutes,
        Op::Serving,
        Op::Instances,
        Op::Prepare,
    ] {
        let platform = MemoryPlatform::new();
        let guard = Guard::new(&platform);
        let engine = guard
            .engine()
            .with_options(options().with_prepare_timeout(Duration::from_secs(120)));
        engine.deploy(&req("1")).await.unwrap();
        platform.fail_nth(op, 1, Fault::Hang);
        let t = Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(3600), engine.deploy(&req("2"))).await;
        let what = format!("{op:?}");
        let r = r.unwrap_or_else(|_| panic!("{what}: not bounded"));
        match r {
            Ok(_) => {
                // a retried hang may succeed: still bounded
                assert!(t.elapsed() < Duration::from_secs(600), "{what}");
                assert_eq!(live(&platform, &app()).await.id, gid(2), "{what}");
            }
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Timeout, "{what}: {e}");
                // nothing to revert when the image never got ready
                assert!(e.rolled_back() || op == Op::Prepare, "{what}: {e}");
                assert_eq!(
                    routes(&platform, &app()).await,
                    RouteTable::single(gid(1)),
                    "{what}"
                );
            }
        }
        assert_eq!(guard.violations(), Vec::<String>::new());
        assert_tidy(&platform, &app(), &what).await;
    }
}

/// Random transient faults everywhere (3 %) on a long series: everything still
/// ends in a consistent state and traffic follows health.
#[tokio::test(start_paused = true)]
async fn transient_faults_never_leave_a_mess() {
    for seed in 1..=6u64 {
        let platform = MemoryPlatform::new();
        platform.set_boot_time(Duration::from_secs(5));
        platform.set_behaviour("web:bad", Behaviour::UnhealthyAtRouter);
        let guard = Guard::new(&platform);
        let engine = guard.engine().with_options(options().with_keep(1));
        engine.deploy(&req("1")).await.unwrap();
        platform.fail_randomly(0.05, Fault::Transient, seed);
        for tag in ["2", "bad", "3"] {
            let _ = engine
                .deploy(&req(tag).strategy(Strategy::canary([20], Duration::from_secs(10))))
                .await;
        }
        let _ = engine.rollback(&app()).await;
        platform.clear_faults();
        let what = format!("seed {seed}");
        // converge: run the last intent again
        let two = image_id(&platform, &app(), "2").await;
        let _ = engine.rollback_to(&app(), &two).await;
        let _ = engine.rollback_to(&app(), &two).await.unwrap();
        assert_eq!(live(&platform, &app()).await.release.image, two, "{what}");
        assert_eq!(guard.violations(), Vec::<String>::new(), "{what}");
        assert_tidy(&platform, &app(), &what).await;
    }
}

// ---------------------------------------------------------------------------
// bad input
// ---------------------------------------------------------------------------

/// "Bad input is `Error::Invalid { field, reason }`, before any platform call."
#[tokio::test(start_paused = true)]
async fn every_bad_input_names_its_field_with_zero_platform_calls() {
    let base = || req("1");
    let empty = check_fn(" ", |_| async { Ok(()) });
    let a = || check_fn("a", |_| async { Ok(()) });
    let cases: Vec<(&str, DeployRequest)> = vec![
        ("size", base().size(0)),
        ("size", base().size(100_001)),
        ("env", base().env("", "x")),
        ("env.1A", base().env("1A", "x")),
        ("env.A-B", base().env("A-B", "x")),
        ("env.A", base().env("A", "x\0y")),
        (
            "source",
            DeployRequest::new(app(), ImageSource::Reference("  ".into())),
        ),
        (
            "source",
            DeployRequest::new(app(), ImageSource::SourceUrl("ftp://x".into())),
        ),
        (
            "source",
            DeployRequest::new(app(), ImageSource::Id(ImageId::new(""))),
        ),
        (
            "strategy.steps[0].weight",
            base().strategy(Strategy::canary([0], Duration::ZERO)),
        ),
        (
            "strategy.steps[0].weight",
            base().strategy(Strategy::canary([100], Duration::ZERO)),
        ),
        (
            "strategy.steps[1].weight",
            base().strategy(Strategy::canary([50, 50], Duration::ZERO)),
        ),
        (
            "strategy.steps[2].weight",
            base().strategy(Strategy::canary([5, 50, 20], Duration::ZERO)),
        ),
        (
            "strategy.max_error_rate",
            base().strategy(Strategy::blue_green().with_max_error_rate(-0.1)),
        ),
        (
            "strategy.max_error_rate",
            base().strategy(Strategy::blue_green().with_max_error_rate(f64::NAN)),
        ),
        (
            "strategy.max_error_rate_increase",
            base().strategy(Strategy::blue_green().with_max_error_rate_increase(1.01)),
        ),
        (
            "strategy.max_p99_ratio",
            base().strategy(Strategy::blue_green().with_max_p99_ratio(0.99)),
        ),
        (
            "strategy.max_p99_ratio",
            base().strategy(Strategy::blue_green().with_max_p99_ratio(f64::INFINITY)),
        ),
        (
            "strategy.max_p99_ratio",
            base().strategy(Strategy::blue_green().with_max_p99_ratio(f64::NAN)),
        ),
        ("strategy.analysis", base().analysis(empty.clone())),
        ("strategy.analysis.a", base().analysis(a()).analysis(a())),
        ("verify", base().verify(empty.clone())),
        ("verify.a", base().verify(a()).verify(a())),
    ];
    for (field, request) in cases {
        let platform = MemoryPlatform::new();
        let engine = Engine::from_parts(platform.parts()).with_options(options());
        for (op, r) in [
            ("deploy", engine.deploy(&request).await.map(|_| ())),
            ("prepare", engine.prepare(&request).await.map(|_| ())),
        ] {
            match r {
                Err(Error::Invalid { field: f, reason }) => {
                    assert_eq!(f, field, "{op} {request:?}: {reason}");
                    assert!(!reason.is_empty());
                }
                other => panic!("{op} {field}: {other:?}"),
            }
        }
        assert_eq!(platform.call_log(), Vec::<Op>::new(), "{field}");
    }
    // options
    let bad_options: Vec<(&str, EngineOptions)> = vec![
        (
            "options.health_timeout",
            options().with_health_timeout(Duration::ZERO),
        ),
        (
            "options.poll_interval",
            options().with_poll_interval(Duration::ZERO),
        ),
        (
            "options.confirm_timeout",
            options().with_confirm_timeout(Duration::ZERO),
        ),
        (
            "options.call_timeout",
            options().with_call_timeout(Duration::ZERO),
        ),
        (
            "options.prepare_timeout",
            options().with_prepare_timeout(Duration::ZERO),
        ),
        (
            "options.lock_lease",
            options().with_lock_lease(Duration::ZERO),
        ),
        (
            "options.poll_interval",
            options().with_poll_interval(Duration::from_secs(61)),
        ),
    ];
    for (field, o) in bad_options {
        let platform = MemoryPlatform::new();
        let engine = Engine::from_parts(platform.parts()).with_options(o);
        let results = [
            ("deploy", engine.deploy(&req("1")).await.map(|_| ())),
            ("rollback", engine.rollback(&app()).await.map(|_| ())),
            (
                "rollback_to",
                engine
                    .rollback_to(&app(), &ImageId::new("x"))
                    .await
                    .map(|_| ()),
            ),
            (
                "promote",
                engine
                    .promote(&app(), &gid(1), &Strategy::blue_green())
                    .await
                    .map(|_| ()),
            ),
            ("status", engine.status(&app()).await.map(|_| ())),
        ];
        for (op, r) in results {
            if op == "status" {
                continue; // status validates nothing
            }
            match r {
                Err(Error::Invalid { field: f, .. }) => assert_eq!(f, field, "{op}"),
                other => panic!("{op} {field}: {other:?}"),
            }
        }
        assert_eq!(
            platform.call_log().iter().filter(|o| o.mutates()).count(),
            0,
            "{field}"
        );
    }
}

/// Bad strategies and checks given to `promote` and `rollback_with` are refused
/// like a deploy's: `Error::Invalid` naming the field, before any platform call.
#[tokio::test(start_paused = true)]
async fn promote_and_rollback_with_validate_before_any_call() {
    let platform = MemoryPlatform::new();
    let engine = Engine::from_parts(platform.parts()).with_options(options());
    engine.deploy(&req("1")).await.unwrap();
    engine.deploy(&req("2")).await.unwrap();
    let calls = platform.call_log().len();
    let bad = Strategy::canary([60, 30], Duration::ZERO);
    let e = engine.promote(&app(), &gid(1), &bad).await.unwrap_err();
    assert!(
        matches!(&e, Error::Invalid { field, .. } if field == "strategy.steps[1].weight"),
        "promote: {e}"
    );
    assert_eq!(platform.call_log().len(), calls, "promote made calls");
    let e = engine
        .rollback_with(&RollbackRequest::new(app()).strategy(bad.clone()))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::Invalid { field, .. } if field == "strategy.steps[1].weight"),
        "rollback_with: {e}"
    );
    let e = engine
        .rollback_with(&RollbackRequest::new(app()).verify(check_fn("", |_| async { Ok(()) })))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::Invalid { field, .. } if field == "verify"),
        "rollback_with: {e}"
    );
    assert_eq!(platform.call_log().len(), calls, "rollback_with made calls");
    assert_eq!(routes(&platform, &app()).await, RouteTable::single(gid(2)));
}

/// A foreign look-alike group and image (no bluegreen labels) survive every
/// operation. "Only resources carrying bluegreen's labels for the app are listed,
/// changed or destroyed."
#[tokio::test(start_paused = true)]
async fn foreign_resources_are_never_touched() {
    let platform = MemoryPlatform::new();
    platform.add_foreign_group("web-production-v002", 2);
    platform.add_foreign_group("web-production-v009", 1);
    platform.add_foreign_image(&app(), "mem-foreign");
    let engine = Engine::from_parts(platform.parts())
        .with_options(options().with_keep(0).with_retain_images(0));
    for tag in ["1", "2", "3"] {
        engine.deploy(&req(tag)).await.unwrap();
    }
    engine.rollback(&app()).await.unwrap();
    assert!(platform.has_group("web-production-v002"));
    assert!(platform.has_group("web-production-v009"));
    assert!(platform.has_image("mem-foreign"));
    let ours = groups_of(&platform, &app()).await;
    let ours_n: usize = ours.iter().map(|g| g.release.size as usize).sum();
    assert_eq!(platform.instance_count(), ours_n + 3);
}

/// Regression (found by this file): docs/architecture.md, The lock: the engine "stops at the next step with
/// `Error::Locked` when a renewal is refused, or when its own lease deadline has
/// passed"; "A renewal that fails for another reason (the store does not answer)
/// is tried again, but never keeps the deployment acting past its lease."
///
/// Engine A's lock store stops answering during its bake after the switch; its
/// lease passes; engine B (same lock) takes the lock and deploys v3, which goes
/// live. A kept watching v2 until its bake ended, then returned `Ok` with
/// `live == v2`: a success report for a deployment that lost its lock, while v3
/// served all traffic. Now every step, and the report of success, checks the lease.
#[tokio::test(start_paused = true)]
async fn a_lease_lost_during_the_bake_after_the_switch_ends_locked() {
    for behaviour in [
        Behaviour::CrashAfter(Duration::from_secs(150)),
        Behaviour::Healthy,
    ] {
        let platform = MemoryPlatform::new();
        platform.set_behaviour("web:2", behaviour.clone());
        platform.set_boot_time(Duration::from_secs(5));
        let shared = Arc::new(MemoryLock::new());
        let lease = Duration::from_secs(30);
        let opts = options().with_lock_lease(lease).with_keep(1);
        let a = Engine::from_parts(platform.parts())
            .with_options(opts.clone())
            .with_lock(shared.clone());
        a.deploy(&req("1")).await.unwrap();
        // renewals: the first succeeds (10 s), then the store stops answering
        let a = a.with_lock(BadLock::over(shared.clone(), 1, RenewFault::Unavailable));
        let b = Engine::from_parts(platform.parts())
            .with_options(opts.with_lock_wait(Some(Duration::from_secs(600))))
            .with_lock(shared.clone());
        let ra =
            req("2").strategy(Strategy::blue_green().with_bake_after(Duration::from_secs(300)));
        let rb = req("3");
        let (ea, eb) = tokio::join!(a.deploy(&ra), async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            b.deploy(&rb).await
        });
        let rb = eb.expect("B deploys once A's lease has passed");
        assert_eq!(
            live(&platform, &app()).await.id,
            rb.live,
            "B's group is live"
        );
        match ea {
            Ok(report) => panic!(
                "{behaviour:?}: A reported success ({} live) after losing its lock; {} is live",
                report.live, rb.live
            ),
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Locked, "{behaviour:?}: {e}");
                assert!(!e.rolled_back());
            }
        }
        assert_eq!(
            live(&platform, &app()).await.id,
            rb.live,
            "{behaviour:?}: A changed nothing"
        );
    }
}

/// A deployment cut in the middle of its canary, followed by another release (not
/// a rerun): the new one takes all traffic, the cut group is not left behind
/// beyond `keep`, traffic follows health, the lock is free.
#[tokio::test(start_paused = true)]
async fn a_different_release_after_a_cut_canary_cleans_up() {
    for keep in [0usize, 1] {
        let mut cut_ms = 500u64;
        loop {
            let c = Cut::new(keep);
            c.engine().deploy(&req("1")).await.unwrap();
            let r = tokio::time::timeout(
                Duration::from_millis(cut_ms),
                c.engine().deploy(
                    &req("2").strategy(Strategy::canary([10, 50], Duration::from_secs(15))),
                ),
            )
            .await;
            let done = r.is_ok();
            let what = format!("keep {keep}, cut at {cut_ms} ms");
            let report = c
                .engine()
                .deploy(&req("3"))
                .await
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            let l = live(&c.platform, &app()).await;
            assert_eq!(l.id, report.live, "{what}");
            assert_eq!(
                l.release.image,
                image_id(&c.platform, &app(), "3").await,
                "{what}"
            );
            let ids = group_ids(&c.platform, &app()).await;
            assert!(ids.len() <= 1 + keep, "{what}: {ids:?}");
            assert_eq!(report.kept_warm.len(), ids.len() - 1, "{what}: {report:?}");
            assert_tidy(&c.platform, &app(), &what).await;
            assert_eq!(c.lock.holder(&app()), None, "{what}");
            assert_eq!(c.guard.violations(), Vec::<String>::new(), "{what}");
            if done {
                break;
            }
            cut_ms += 1700;
        }
    }
}

/// A failed group kept with `keep_failed` is never a rollback target and is
/// retired by the next deployment; "A rollback restores ... image and configuration
/// both, even when its group is gone".
#[tokio::test(start_paused = true)]
async fn keep_failed_groups_are_never_rolled_back_to_and_config_is_restored() {
    let platform = MemoryPlatform::new();
    platform.set_behaviour("web:bad", Behaviour::UnhealthyAtRouter);
    let guard = Guard::new(&platform);
    let engine = guard
        .engine()
        .with_options(options().with_keep(0).with_keep_failed(true));
    engine.deploy(&req("1").env("A", "1")).await.unwrap();
    let e = engine.deploy(&req("bad")).await.unwrap_err();
    assert!(e.rolled_back());
    assert_eq!(
        group_ids(&platform, &app()).await,
        [gid(1), gid(2)],
        "kept failed"
    );
    let e = engine.rollback(&app()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    engine
        .deploy(&req("1").env("A", "2").size(5))
        .await
        .unwrap();
    assert!(
        !group_ids(&platform, &app()).await.contains(&gid(2)),
        "the failed group is retired"
    );
    let back = engine.rollback(&app()).await.unwrap();
    assert!(back.relaunched, "keep 0: relaunched");
    let l = live(&platform, &app()).await;
    assert_eq!(l.release.env.get("A").map(String::as_str), Some("1"));
    assert_eq!(l.release.size, 3);
    assert_eq!(l.release.image, image_id(&platform, &app(), "1").await);
    let e = engine.rollback(&app()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    assert_eq!(guard.violations(), Vec::<String>::new());
    assert_tidy(&platform, &app(), "end").await;
}

/// One engine, one app: a deploy and a rollback started together; one of them is
/// `Error::Locked` and changes nothing; `status` reads without the lock meanwhile.
#[tokio::test(start_paused = true)]
async fn a_deploy_and_a_rollback_at_once_exclude_each_other() {
    let platform = MemoryPlatform::new();
    platform.set_boot_time(Duration::from_secs(20));
    let guard = Guard::new(&platform);
    let engine = guard.engine().with_options(options());
    engine.deploy(&req("1")).await.unwrap();
    engine.deploy(&req("2")).await.unwrap();
    let r3 = req("3");
    let (d, r, s) = tokio::join!(
        engine.deploy(&r3),
        async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            engine.rollback(&app()).await
        },
        async {
            tokio::time::sleep(Duration::from_secs(3)).await;
            engine.status(&app()).await
        }
    );
    d.unwrap();
    let e = r.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Locked, "{e}");
    assert!(s.is_ok());
    assert_eq!(
        live(&platform, &app()).await.release.image,
        image_id(&platform, &app(), "3").await
    );
    assert_eq!(guard.violations(), Vec::<String>::new());
}

/// A router without weights: a canary becomes one switch, says so with
/// `Event::StrategyAdapted`, and the bake after the switch still switches back.
#[tokio::test(start_paused = true)]
async fn an_unweighted_router_adapts_and_still_bakes() {
    let platform = MemoryPlatform::new();
    platform.without_weights();
    platform.set_behaviour("web:dies", Behaviour::CrashAfter(Duration::from_secs(10)));
    let (sink, seen) = recording();
    let guard = Guard::new(&platform);
    let engine = guard.engine().with_options(options()).with_events(sink);
    engine.deploy(&req("1")).await.unwrap();
    let e = engine
        .deploy(
            &req("dies").strategy(
                Strategy::canary([10, 50], Duration::from_secs(5))
                    .with_bake_after(Duration::from_secs(60)),
            ),
        )
        .await
        .unwrap_err();
    assert!(e.rolled_back(), "{e}");
    assert!(seen
        .lock()
        .unwrap()
        .iter()
        .any(|(e, _)| matches!(e, Event::StrategyAdapted { .. })));
    assert_eq!(routes(&platform, &app()).await, RouteTable::single(gid(1)));
    assert!(platform
        .route_history(&app())
        .iter()
        .all(|t| t.groups().count() == 1));
    assert_eq!(guard.violations(), Vec::<String>::new());
}
