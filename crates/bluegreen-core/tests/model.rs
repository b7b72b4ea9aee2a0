//! A model-based test of the engine: random sequences of deployments, rollbacks,
//! crashes (the operation's future dropped at a random moment, then run again from
//! a new engine), lost leases, concurrent engines sharing a lock, and platform
//! faults, on the in-memory platform under tokio's paused clock. A reference model
//! beside it says what the app's release history must be; after every operation
//! the invariants below are checked.
//!
//! - traffic only on groups whose attached members the router reports healthy, at
//!   every route change, not only at the end;
//! - only the holder of the app's lock changes the platform (every change is
//!   attributed to the engine that made it and checked against the lock table);
//! - no group without traffic beyond `keep`, no orphan (every attached group is a
//!   group of the fleet, every instance belongs to a listed group), the lock free;
//! - with warm groups scaled in (`warm_size`, drawn per case), the live group runs
//!   its release's full size (a rollback to a scaled-in group scaled it back), and
//!   a kept group runs its full size or the warm size, nothing else;
//! - the live release is the model's, and its group's history is the model's
//!   history, so that `rollback` walks it strictly backwards;
//! - a release task ran exactly once for every release that went live with one,
//!   whatever crashed, and no task record outlives its group;
//! - a deployment paused by a hook at any stage, then resumed from a new engine
//!   (crashing or not), ends exactly as the same deployment without the pause.
//!
//! `BLUEGREEN_MODEL_CASES` (default 48) and `BLUEGREEN_MODEL_SEED` (default fixed)
//! change the run; a failure prints the seed and the smallest failing sequence.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bluegreen_core::{
    hook_fn, App, Attachment, Decision, DeployRequest, Engine, EngineOptions, ErrorKind, Event,
    EventSink, FencingToken, Fleet, FleetCapabilities, Group, GroupId, Image, ImageId, ImageRef,
    ImageSource, Instance, Lock, LockHolder, MemoryLock, Release, ReleaseTask, Result,
    RetryOptions, RouteTable, Router, RouterCapabilities, Serving, Stage, Strategy, TaskStatus,
    HISTORY_LEN,
};
use bluegreen_testkit::{Behaviour, Fault, MemoryPlatform};
use proptest::prelude::{any, prop_oneof, Just};
use proptest::strategy::Strategy as _;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};

const KEEP: usize = 1;
const SIZE: u32 = 2;
const LEASE: Duration = Duration::from_secs(30);

fn app() -> App {
    App::new("web", "production").unwrap()
}

/// How the instances of a deployed image behave.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Good,
    NeverHealthy,
    /// Passes the fleet's probe, fails the router's health check.
    UnhealthyAtRouter,
    /// Healthy, then exits 5 s after booting: after the switch.
    DiesAfterSwitch,
    /// 30 % of its answers are 5xx.
    Flaky,
}

#[derive(Clone, Debug)]
enum Cmd {
    Deploy {
        kind: Kind,
        canary: bool,
        bake_after: bool,
        /// Drop the operation after this many simulated seconds, then run it again.
        crash_at: Option<u64>,
        /// The release has a task.
        task: bool,
        /// A hook pauses the deployment at this stage (an index into `Stage::ALL`);
        /// a new engine resumes it, crashing at `crash_at`.
        pause: Option<usize>,
    },
    Rollback,
    /// Back to the release `back` places before the live one (0: an unknown image).
    RollbackTo {
        back: usize,
        crash_at: Option<u64>,
    },
    /// Two engines deploy at once; one gets the lock, the other is refused.
    Concurrent,
    /// An engine whose lease renewals fail deploys a slow canary; after its lease
    /// passes, another engine deploys. The first must make no further change.
    LoseLease,
}

fn kind() -> impl proptest::strategy::Strategy<Value = Kind> {
    prop_oneof![
        4 => Just(Kind::Good),
        1 => Just(Kind::NeverHealthy),
        1 => Just(Kind::UnhealthyAtRouter),
        1 => Just(Kind::DiesAfterSwitch),
        1 => Just(Kind::Flaky),
    ]
}

fn crash() -> impl proptest::strategy::Strategy<Value = Option<u64>> {
    prop_oneof![2 => Just(None), 1 => (0u64..90).prop_map(Some)]
}

fn cmd() -> impl proptest::strategy::Strategy<Value = Cmd> {
    prop_oneof![
        6 => (
            kind(),
            any::<bool>(),
            any::<bool>(),
            crash(),
            any::<bool>(),
            prop_oneof![2 => Just(None), 1 => (0usize..Stage::ALL.len()).prop_map(Some)],
        )
            .prop_map(|(kind, canary, bake_after, crash_at, task, pause)| Cmd::Deploy {
                kind,
                canary,
                bake_after,
                crash_at,
                task,
                pause,
            }),
        2 => Just(Cmd::Rollback),
        2 => (0usize..4, crash()).prop_map(|(back, crash_at)| Cmd::RollbackTo { back, crash_at }),
        1 => Just(Cmd::Concurrent),
        1 => Just(Cmd::LoseLease),
    ]
}

/// The changes each engine made, checked against the lock table as they happen.
#[derive(Clone, Default)]
struct Audit {
    /// Deployment ids started by each engine.
    mine: Arc<Mutex<BTreeMap<usize, BTreeSet<String>>>>,
    violations: Arc<Mutex<Vec<String>>>,
}

/// Wraps one engine's providers: every change must come from the holder of the
/// app's lock, and that holder must be one of this engine's operations; every
/// route change must give traffic only to groups the router reports healthy.
#[derive(Clone)]
struct Guarded<T> {
    inner: T,
    engine: usize,
    lock: Arc<MemoryLock>,
    audit: Audit,
}

impl<T> Guarded<T> {
    fn check(&self, what: &str) {
        let holder = self.lock.holder(&app());
        let mine = self.audit.mine.lock().unwrap();
        let ours = mine.get(&self.engine);
        let ok = holder
            .as_ref()
            .is_some_and(|h| ours.is_some_and(|s| s.contains(&h.deployment)));
        if !ok {
            self.audit.violations.lock().unwrap().push(format!(
                "engine {} made a change ({what}) while the lock was held by {holder:?}",
                self.engine
            ));
        }
    }
}

#[async_trait]
impl<T: Image> Image for Guarded<T> {
    async fn prepare(&self, app: &App, s: &ImageSource, e: &EventSink) -> Result<ImageRef> {
        self.check("prepare");
        self.inner.prepare(app, s, e).await
    }
    async fn images(&self, app: &App) -> Result<Vec<ImageRef>> {
        self.inner.images(app).await
    }
    async fn remove(&self, app: &App, id: &ImageId) -> Result<()> {
        self.check("remove image");
        self.inner.remove(app, id).await
    }
}

#[async_trait]
impl<T: Fleet> Fleet for Guarded<T> {
    fn capabilities(&self) -> FleetCapabilities {
        self.inner.capabilities()
    }
    fn check_release(&self, release: &Release) -> Result<()> {
        self.inner.check_release(release)
    }
    async fn launch(&self, group: &Group) -> Result<()> {
        self.check("launch");
        self.inner.launch(group).await
    }
    async fn groups(&self, app: &App) -> Result<Vec<Group>> {
        self.inner.groups(app).await
    }
    async fn instances(&self, app: &App, group: &GroupId) -> Result<Vec<Instance>> {
        self.inner.instances(app, group).await
    }
    async fn destroy(&self, app: &App, group: &GroupId) -> Result<()> {
        self.check("destroy");
        self.inner.destroy(app, group).await
    }
    async fn start_task(&self, group: &Group) -> Result<()> {
        self.check("start task");
        self.inner.start_task(group).await
    }
    async fn task(&self, app: &App, group: &GroupId) -> Result<Option<TaskStatus>> {
        self.inner.task(app, group).await
    }
    async fn scale(&self, app: &App, group: &GroupId, size: u32) -> Result<()> {
        self.check("scale");
        self.inner.scale(app, group, size).await
    }
}

#[async_trait]
impl<T: Router> Router for Guarded<T> {
    fn capabilities(&self) -> RouterCapabilities {
        self.inner.capabilities()
    }
    async fn attach(&self, app: &App, g: &GroupId, i: &[Instance]) -> Result<Attachment> {
        self.check("attach");
        self.inner.attach(app, g, i).await
    }
    async fn detach(&self, app: &App, g: &GroupId) -> Result<()> {
        self.check("detach");
        self.inner.detach(app, g).await
    }
    async fn routes(&self, app: &App) -> Result<RouteTable> {
        self.inner.routes(app).await
    }
    async fn set_routes(&self, app: &App, table: &RouteTable) -> Result<()> {
        self.check("set routes");
        // traffic only ever goes to groups the router itself reports healthy
        for (group, weight) in table.iter().filter(|(_, w)| *w > 0) {
            let mut serving = self.inner.serving(app, group).await;
            for _ in 0..5 {
                if serving.as_ref().is_err_and(|e| e.is_retryable()) {
                    serving = self.inner.serving(app, group).await;
                }
            }
            if let Ok(s) = serving {
                if !(s.total > 0 && s.healthy == s.total) {
                    self.audit.violations.lock().unwrap().push(format!(
                        "engine {} gave {group} {weight}% while the router reports {} of {} members healthy",
                        self.engine, s.healthy, s.total
                    ));
                }
            }
        }
        self.inner.set_routes(app, table).await
    }
    async fn serving(&self, app: &App, g: &GroupId) -> Result<Serving> {
        self.inner.serving(app, g).await
    }
}

/// A lock whose renewals can be made to fail, as when its store is unreachable.
struct FlakyLock {
    inner: Arc<MemoryLock>,
    fail_renewals: bool,
}

#[async_trait]
impl Lock for FlakyLock {
    async fn acquire(
        &self,
        app: &App,
        holder: &LockHolder,
        lease: Duration,
    ) -> Result<FencingToken> {
        self.inner.acquire(app, holder, lease).await
    }
    async fn renew(
        &self,
        app: &App,
        holder: &LockHolder,
        token: FencingToken,
        lease: Duration,
    ) -> Result<()> {
        if self.fail_renewals {
            return Err(bluegreen_core::Error::provider(
                "lock",
                "lock store unreachable",
                true,
            ));
        }
        self.inner.renew(app, holder, token, lease).await
    }
    async fn release(&self, app: &App, holder: &LockHolder, token: FencingToken) -> Result<()> {
        self.inner.release(app, holder, token).await
    }
}

struct World {
    platform: MemoryPlatform,
    lock: Arc<MemoryLock>,
    audit: Audit,
    engines: usize,
    /// The image id of each tag, as the engine reported it.
    images: Arc<Mutex<BTreeMap<String, ImageId>>>,
    /// The reference model: the app's releases, oldest first, the live one last.
    history: Vec<String>,
    next_tag: u32,
    /// The engines' `warm_size`: kept groups are scaled in to it.
    warm: Option<u32>,
}

impl World {
    fn new(seed: u64, warm: Option<u32>) -> World {
        let platform = MemoryPlatform::new();
        platform
            .set_boot_time(Duration::from_secs(10))
            .set_latency(Duration::from_millis(20))
            .fail_randomly(0.03, Fault::Transient, seed);
        World {
            platform,
            lock: Arc::new(MemoryLock::new()),
            audit: Audit::default(),
            engines: 0,
            images: Arc::default(),
            history: Vec::new(),
            next_tag: 1,
            warm,
        }
    }

    /// A fresh engine, as a new process would build, sharing the platform and the
    /// lock table; with `flaky_lock`, its lease renewals fail.
    fn engine(&mut self, flaky_lock: bool) -> Engine {
        self.engines += 1;
        let id = self.engines;
        let guard = |inner| Guarded {
            inner,
            engine: id,
            lock: self.lock.clone(),
            audit: self.audit.clone(),
        };
        let (mine, images) = (self.audit.mine.clone(), self.images.clone());
        let events = EventSink::new(move |e: &Event| match e {
            Event::Started { deployment, .. } => {
                mine.lock()
                    .unwrap()
                    .entry(id)
                    .or_default()
                    .insert(deployment.to_string());
            }
            Event::ImageReady { image } => {
                let tag = image.origin.trim_start_matches("reference web:").to_owned();
                images.lock().unwrap().insert(tag, image.id.clone());
            }
            _ => {}
        });
        let lock: Arc<dyn Lock> = if flaky_lock {
            Arc::new(FlakyLock {
                inner: self.lock.clone(),
                fail_renewals: true,
            })
        } else {
            self.lock.clone()
        };
        Engine::new(
            guard(self.platform.image()),
            Guarded {
                inner: self.platform.fleet(),
                engine: id,
                lock: self.lock.clone(),
                audit: self.audit.clone(),
            },
            Guarded {
                inner: self.platform.router(),
                engine: id,
                lock: self.lock.clone(),
                audit: self.audit.clone(),
            },
        )
        .with_options(
            EngineOptions::default()
                .with_keep(KEEP)
                .with_health_timeout(Duration::from_secs(40))
                .with_confirm_timeout(Duration::from_secs(20))
                .with_drain(Duration::from_secs(2))
                .with_lock_lease(LEASE)
                .with_warm_size(self.warm),
        )
        .with_retry(RetryOptions::default())
        .with_lock(lock)
        .with_events(events)
    }

    fn new_tag(&mut self, kind: Kind) -> String {
        let tag = format!("{}", self.next_tag);
        self.next_tag += 1;
        let behaviour = match kind {
            Kind::Good => Behaviour::Healthy,
            Kind::NeverHealthy => Behaviour::NeverHealthy,
            Kind::UnhealthyAtRouter => Behaviour::UnhealthyAtRouter,
            Kind::DiesAfterSwitch => Behaviour::CrashAfter(Duration::from_secs(5)),
            Kind::Flaky => Behaviour::ErrorRate(0.3),
        };
        self.platform
            .set_behaviour(&format!("web:{tag}"), behaviour);
        tag
    }

    fn push(&mut self, tag: String) {
        self.history.push(tag);
        // a group remembers HISTORY_LEN releases before its own
        if self.history.len() > HISTORY_LEN + 1 {
            self.history.remove(0);
        }
    }
}

fn request_with(tag: &str, canary: bool, bake_after: bool, task: bool) -> DeployRequest {
    let r = request(tag, canary, bake_after);
    if task {
        r.task(ReleaseTask::new(["migrate", tag]).with_timeout(Duration::from_secs(60)))
    } else {
        r
    }
}

fn request(tag: &str, canary: bool, bake_after: bool) -> DeployRequest {
    let mut strategy = if canary {
        Strategy::canary([20, 50], Duration::from_secs(20))
    } else {
        Strategy::blue_green()
    };
    strategy = strategy.with_max_error_rate(0.05);
    if bake_after {
        strategy = strategy.with_bake_after(Duration::from_secs(30));
    }
    DeployRequest::new(app(), ImageSource::Reference(format!("web:{tag}")))
        .size(SIZE)
        .strategy(strategy)
}

/// Runs `op` on a fresh engine; with `crash_at`, drops it after that many seconds
/// (like a killed process) and runs it again on another fresh engine.
async fn crashing<T, F, Fut>(world: &mut World, crash_at: Option<u64>, op: F) -> Result<T>
where
    F: Fn(Engine) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    if let Some(after) = crash_at {
        let engine = world.engine(false);
        let first = tokio::time::timeout(Duration::from_secs(after), op(engine)).await;
        if let Ok(done) = first {
            return done;
        }
        // the dead process's lease must pass before anyone else deploys
        tokio::time::sleep(LEASE).await;
    }
    let engine = world.engine(false);
    op(engine).await
}

/// Checks a deployment's outcome against the model and records it.
fn finish_deploy(
    world: &mut World,
    tag: String,
    kind: Kind,
    canary: bool,
    bake_after: bool,
    task: bool,
    out: Result<bluegreen_core::DeployReport>,
) -> std::result::Result<(), TestCaseError> {
    let live = !world.history.is_empty();
    let analysed = live && (canary || bake_after);
    let expect_ok = match kind {
        Kind::Good => true,
        Kind::NeverHealthy | Kind::UnhealthyAtRouter | Kind::DiesAfterSwitch => false,
        Kind::Flaky => !analysed,
    };
    match (expect_ok, out) {
        (true, Ok(r)) if r.paused.is_none() => {
            if task {
                let runs = world
                    .platform
                    .task_starts(&app())
                    .iter()
                    .filter(|(_, c)| c.get(1) == Some(&tag))
                    .count();
                if runs != 1 {
                    return Err(fail(format!("the task of {tag} ran {runs} times")));
                }
            }
            world.push(tag);
        }
        (false, Err(e)) => {
            if !e.rolled_back() {
                return Err(fail(format!("{tag} ({kind:?}) failed without revert: {e}")));
            }
        }
        (true, Ok(r)) => return Err(fail(format!("{tag} ended paused: {:?}", r.paused))),
        (true, Err(e)) => return Err(fail(format!("{tag} ({kind:?}) failed: {e}"))),
        (false, Ok(r)) => {
            return Err(fail(format!(
                "{tag} ({kind:?}) should have failed, went live as {} (paused {:?})",
                r.live, r.paused
            )))
        }
    }
    Ok(())
}

fn fail(message: String) -> TestCaseError {
    TestCaseError::fail(message)
}

async fn apply(world: &mut World, cmd: &Cmd) -> std::result::Result<(), TestCaseError> {
    match cmd.clone() {
        Cmd::Deploy {
            kind,
            canary,
            bake_after,
            crash_at,
            task,
            pause,
        } => {
            let live = !world.history.is_empty();
            // a group that dies after the switch is only caught by a watch; a first
            // deployment has no previous group to go back to
            let kind = match kind {
                Kind::DiesAfterSwitch if !(bake_after && live) => Kind::Good,
                k => k,
            };
            let tag = world.new_tag(kind);
            let mut req = request_with(&tag, canary, bake_after, task);
            if let Some(stage) = pause.map(|i| Stage::ALL[i]) {
                let hook = hook_fn("pause", move |ctx| async move {
                    if ctx.stage == stage {
                        Decision::Pause(format!("paused at {stage}"))
                    } else {
                        Decision::Continue
                    }
                });
                for s in Stage::ALL {
                    req = req.hook(s, hook.clone());
                }
            }
            let out = if pause.is_some() {
                let first = world.engine(false).deploy(&req).await;
                match first {
                    Ok(r) if r.paused.is_some() => {
                        // the program exits; another one resumes (and may crash). A
                        // hook that pauses at every traffic step pauses once a step.
                        let mut resumes = 0;
                        loop {
                            resumes += 1;
                            let out = crashing(world, crash_at, |e| {
                                let req = req.clone();
                                async move { e.resume(&req).await }
                            })
                            .await;
                            match &out {
                                Ok(r) if r.paused.is_some() && resumes < 4 => {
                                    let p = r.paused.as_ref().unwrap();
                                    if p.stage != Stage::AfterTrafficStep
                                        || Some(p.stage) != pause.map(|i| Stage::ALL[i])
                                    {
                                        return Err(fail(format!("{tag} paused again: {p:?}")));
                                    }
                                }
                                _ => break out,
                            }
                        }
                    }
                    Ok(r) => {
                        return Err(fail(format!(
                            "{tag} should have paused at {:?}, ended with {}",
                            pause.map(|i| Stage::ALL[i]),
                            r.live
                        )))
                    }
                    Err(e) => Err(e),
                }
            } else {
                crashing(world, crash_at, |e| {
                    let req = req.clone();
                    async move { e.deploy(&req).await }
                })
                .await
            };
            finish_deploy(world, tag, kind, canary, bake_after, task, out)?;
        }
        Cmd::Rollback => {
            let engine = world.engine(false);
            let out = engine.rollback(&app()).await;
            match (world.history.len(), out) {
                (n, Ok(_)) if n >= 2 => {
                    world.history.pop();
                }
                (n, Err(e)) if n < 2 && e.kind() == ErrorKind::Conflict => {}
                (n, out) => {
                    return Err(fail(format!(
                        "rollback with {n} releases in history: {:?}",
                        out.map(|r| r.to)
                    )))
                }
            }
        }
        Cmd::RollbackTo { back, crash_at } => {
            let n = world.history.len();
            if back == 0 || back >= n {
                let engine = world.engine(false);
                let out = engine
                    .rollback_to(&app(), &ImageId::new("sha256:unknown"))
                    .await;
                let expected = if n == 0 {
                    ErrorKind::Conflict
                } else {
                    ErrorKind::NotFound
                };
                match out {
                    Err(e) if e.kind() == expected => {}
                    other => {
                        return Err(fail(format!(
                            "rollback_to an unknown image: {:?}",
                            other.map(|r| r.to)
                        )))
                    }
                }
                return Ok(());
            }
            let tag = world.history[n - 1 - back].clone();
            let image = world.images.lock().unwrap()[&tag].clone();
            let out = crashing(world, crash_at, |e| {
                let image = image.clone();
                async move { e.rollback_to(&app(), &image).await }
            })
            .await;
            match out {
                Ok(_) => world.history.truncate(n - back),
                Err(e) => return Err(fail(format!("rollback_to {tag}: {e}"))),
            }
        }
        Cmd::Concurrent => {
            let (a, b) = (world.new_tag(Kind::Good), world.new_tag(Kind::Good));
            let (ea, eb) = (world.engine(false), world.engine(false));
            let (ra, rb) = (request(&a, false, false), request(&b, false, false));
            let (oa, ob) = tokio::join!(ea.deploy(&ra), eb.deploy(&rb));
            match (oa, ob) {
                (Ok(_), Err(e)) if e.kind() == ErrorKind::Locked => world.push(a),
                (Err(e), Ok(_)) if e.kind() == ErrorKind::Locked => world.push(b),
                (oa, ob) => {
                    return Err(fail(format!(
                        "two deployments at once: {:?} / {:?}",
                        oa.map(|r| r.live),
                        ob.map(|r| r.live)
                    )))
                }
            }
        }
        Cmd::LoseLease => {
            if world.history.is_empty() {
                return Ok(());
            }
            let (a, b) = (world.new_tag(Kind::Good), world.new_tag(Kind::Good));
            let slow = world.engine(true);
            let other = world.engine(false).with_options(
                EngineOptions::default()
                    .with_keep(KEEP)
                    .with_drain(Duration::from_secs(2))
                    .with_lock_lease(LEASE)
                    .with_warm_size(world.warm)
                    .with_lock_wait(Some(Duration::from_secs(300))),
            );
            let ra = DeployRequest::new(app(), ImageSource::Reference(format!("web:{a}")))
                .size(SIZE)
                .strategy(Strategy::canary([10, 20, 30], Duration::from_secs(40)));
            let rb = request(&b, false, false);
            let (oa, ob) = tokio::join!(slow.deploy(&ra), async {
                tokio::time::sleep(LEASE + Duration::from_secs(5)).await;
                other.deploy(&rb).await
            });
            match oa {
                Err(e) if e.kind() == ErrorKind::Locked && !e.rolled_back() => {}
                other => {
                    return Err(fail(format!(
                        "the deployment that lost its lease: {:?}",
                        other.map(|r| r.live)
                    )))
                }
            }
            match ob {
                Ok(_) => world.push(b),
                Err(e) => return Err(fail(format!("the deployment after a lost lease: {e}"))),
            }
        }
    }
    Ok(())
}

async fn check_invariants(world: &World) -> std::result::Result<(), TestCaseError> {
    let violations = world.audit.violations.lock().unwrap().clone();
    if !violations.is_empty() {
        return Err(fail(format!("violations while it ran: {violations:?}")));
    }
    let router = world.platform.router();
    let fleet = world.platform.fleet();
    let routes = router.routes(&app()).await.unwrap();
    for (group, weight) in routes.iter() {
        let serving = router.serving(&app(), group).await.unwrap();
        if weight > 0 && !(serving.total > 0 && serving.healthy == serving.total) {
            return Err(fail(format!(
                "{group} has {weight}% with {} of {} members healthy at the router",
                serving.healthy, serving.total
            )));
        }
    }
    let groups = fleet.groups(&app()).await.unwrap();
    let idle = groups.iter().filter(|g| routes.weight(&g.id) == 0).count();
    if idle > KEEP {
        return Err(fail(format!(
            "{idle} groups without traffic (keep {KEEP}): {:?}",
            groups.iter().map(|g| &g.id).collect::<Vec<_>>()
        )));
    }
    let ids: BTreeSet<GroupId> = groups.iter().map(|g| g.id.clone()).collect();
    let attached = world.platform.attached(&app());
    if let Some(orphan) = attached.iter().find(|g| !ids.contains(g)) {
        return Err(fail(format!("{orphan} is attached but is no group")));
    }
    let mut counted = 0;
    for g in &groups {
        let n = fleet.instances(&app(), &g.id).await.unwrap().len();
        counted += n;
        let full = g.release.size as usize;
        let fits = if routes.weight(&g.id) > 0 {
            n == full
        } else {
            n == full || world.warm.is_some_and(|w| n == w as usize)
        };
        if !fits {
            return Err(fail(format!(
                "{} ({}% of the traffic) runs {n} instances; size {full}, warm size {:?}",
                g.id,
                routes.weight(&g.id),
                world.warm
            )));
        }
    }
    let instances = world.platform.instance_count();
    if instances != counted {
        return Err(fail(format!(
            "{instances} instances, {counted} of them in the {} groups",
            groups.len()
        )));
    }
    if let Some(h) = world.lock.holder(&app()) {
        return Err(fail(format!("the lock is still held by {h:?}")));
    }
    for (group, _) in world.platform.task_starts(&app()) {
        if world.platform.has_task(group.as_str()) && !ids.contains(&group) {
            return Err(fail(format!(
                "the task record of {group} outlives its group"
            )));
        }
    }
    // the live release and its history are the model's
    let Some(live_tag) = world.history.last() else {
        if !routes.is_empty() {
            return Err(fail(format!("nothing deployed, yet routes {routes}")));
        }
        return Ok(());
    };
    let images = world.images.lock().unwrap().clone();
    let live = routes
        .primary()
        .and_then(|id| groups.iter().find(|g| &g.id == id))
        .ok_or_else(|| fail(format!("no live group; routes {routes}")))?;
    if routes != RouteTable::single(live.id.clone()) {
        return Err(fail(format!("routes {routes} after the operation")));
    }
    if live.release.image != images[live_tag] {
        return Err(fail(format!(
            "{} runs {}, the model says web:{live_tag}",
            live.id, live.release.image
        )));
    }
    let expected: Vec<&ImageId> = world
        .history
        .iter()
        .rev()
        .skip(1)
        .map(|t| &images[t])
        .collect();
    let actual: Vec<&ImageId> = live.history().map(|r| &r.image).collect();
    if actual != expected {
        return Err(fail(format!(
            "{} remembers {actual:?}, the model {expected:?}",
            live.id
        )));
    }
    Ok(())
}

fn run_case(cmds: &[Cmd], seed: u64, warm: Option<u32>) -> std::result::Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let mut world = World::new(seed, warm);
        for (i, cmd) in cmds.iter().enumerate() {
            apply(&mut world, cmd)
                .await
                .map_err(|e| fail(format!("command {i} {cmd:?}: {e}")))?;
            // the checker reads the platform without faults
            world.platform.clear_faults();
            check_invariants(&world)
                .await
                .map_err(|e| fail(format!("after command {i} {cmd:?}: {e}")))?;
            world
                .platform
                .fail_randomly(0.03, Fault::Transient, seed.wrapping_add(i as u64));
        }
        Ok(())
    })
}

#[test]
fn random_operations_keep_the_invariants() {
    let cases: u32 = std::env::var("BLUEGREEN_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48);
    let seed: u64 = std::env::var("BLUEGREEN_MODEL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x005e_edb1_9ee4);
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 2_000,
        ..Config::default()
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes));
    let strategy = (
        proptest::collection::vec(cmd(), 1..9),
        any::<u64>(),
        prop_oneof![Just(None), Just(Some(1))],
    );
    let result = runner.run(&strategy, |(cmds, fault_seed, warm)| {
        run_case(&cmds, fault_seed, warm)
    });
    if let Err(e) = result {
        panic!("the model test failed with BLUEGREEN_MODEL_SEED={seed}: {e}");
    }
}
