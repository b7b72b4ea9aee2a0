//! Warm groups scaled in after the switch ([`EngineOptions::warm_size`]) and scaled
//! back, healthy, before a rollback moves traffic to them: on the in-memory platform
//! under tokio's paused clock, with a router that checks every route change against
//! the fleet, faults, crashes at every platform call, and refused options.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bluegreen_core::async_trait;
use bluegreen_core::{
    App, Attachment, Engine, EngineOptions, ErrorKind, Event, Fleet, FleetCapabilities, Group,
    GroupId, Instance, MemoryLock, Result, RouteTable, Router, RouterCapabilities, Serving, Step,
};
use bluegreen_testkit::{Fault, MemoryFleet, MemoryPlatform, MemoryRouter, Op};
use support::{app, gid, request, rig};

fn options(warm_size: u32) -> EngineOptions {
    EngineOptions::default()
        .with_health_timeout(Duration::from_secs(120))
        .with_drain(Duration::from_secs(5))
        .with_keep(1)
        .with_warm_size(Some(warm_size))
        .with_lock_lease(Duration::from_secs(30))
        .with_lock_wait(Some(Duration::from_secs(300)))
}

async fn instances(platform: &MemoryPlatform, group: &GroupId) -> Vec<Instance> {
    platform.fleet().instances(&app(), group).await.unwrap()
}

fn position(events: &[Event], wanted: impl Fn(&Event) -> bool) -> usize {
    events
        .iter()
        .position(wanted)
        .unwrap_or_else(|| panic!("no such event in {events:#?}"))
}

#[tokio::test(start_paused = true)]
async fn a_warm_group_is_scaled_in_after_the_switch_and_back_before_a_rollback() {
    for warm in [0, 1, 2] {
        let rig = rig(options(warm));
        rig.engine.deploy(&request("1")).await.unwrap();
        let v2 = rig.engine.deploy(&request("2")).await.unwrap();
        assert_eq!(v2.kept_warm, [gid(1)]);
        assert_eq!(
            instances(&rig.platform, &gid(1)).await.len(),
            warm as usize,
            "warm {warm}: v001 scaled in"
        );
        assert_eq!(instances(&rig.platform, &gid(2)).await.len(), 3);
        assert!(rig.events.lock().unwrap().contains(&Event::GroupScaledIn {
            group: gid(1),
            size: warm
        }));

        rig.events.lock().unwrap().clear();
        let back = rig.engine.rollback(&app()).await.unwrap();
        assert_eq!((back.to.clone(), back.relaunched), (gid(1), false));
        let events = rig.events.lock().unwrap().clone();
        let scaled = position(&events, |e| {
            *e == Event::GroupScaledOut {
                group: gid(1),
                size: 3,
            }
        });
        let healthy = position(
            &events,
            |e| matches!(e, Event::Health { group, healthy: 3, .. } if *group == gid(1)),
        );
        let shifted = position(&events, |e| matches!(e, Event::TrafficShifted { .. }));
        assert!(
            scaled < healthy && healthy < shifted,
            "warm {warm}: scaled back, healthy, then switched: {events:#?}"
        );
        assert_eq!(rig.routes().await, RouteTable::single(gid(1)));
        let v1 = instances(&rig.platform, &gid(1)).await;
        assert_eq!(v1.len(), 3);
        assert!(v1.iter().all(|i| i.health.is_healthy()), "{v1:?}");
        assert_eq!(
            instances(&rig.platform, &gid(2)).await.len(),
            warm as usize,
            "warm {warm}: the group rolled back from is scaled in"
        );
    }
}

/// A router that, at every route change, checks each group with traffic in the new
/// table against the fleet: all of its release's instances healthy, and the router
/// itself seeing every member healthy. What breaks it is recorded.
#[derive(Clone)]
struct Guard {
    inner: MemoryRouter,
    fleet: MemoryFleet,
    broken: Arc<Mutex<Vec<String>>>,
}

#[async_trait]
impl Router for Guard {
    fn capabilities(&self) -> RouterCapabilities {
        self.inner.capabilities()
    }
    async fn attach(&self, app: &App, g: &GroupId, i: &[Instance]) -> Result<Attachment> {
        self.inner.attach(app, g, i).await
    }
    async fn detach(&self, app: &App, g: &GroupId) -> Result<()> {
        self.inner.detach(app, g).await
    }
    async fn routes(&self, app: &App) -> Result<RouteTable> {
        self.inner.routes(app).await
    }
    async fn set_routes(&self, app: &App, table: &RouteTable) -> Result<()> {
        let groups: Vec<Group> = self.fleet.groups(app).await?;
        for id in table.groups() {
            let size = groups
                .iter()
                .find(|g| &g.id == id)
                .map(|g| g.release.size as usize)
                .unwrap_or(usize::MAX);
            let listed = self.fleet.instances(app, id).await?;
            let healthy = listed.iter().filter(|i| i.health.is_healthy()).count();
            let serving = self.inner.serving(app, id).await?;
            if healthy < size || serving.healthy < serving.total || serving.total < size {
                self.broken.lock().unwrap().push(format!(
                    "{table}: {id} has {healthy} of {size} healthy, the router sees {} of {}",
                    serving.healthy, serving.total
                ));
            }
        }
        self.inner.set_routes(app, table).await
    }
    async fn serving(&self, app: &App, g: &GroupId) -> Result<Serving> {
        self.inner.serving(app, g).await
    }
}

fn guarded(platform: &MemoryPlatform, options: EngineOptions) -> (Engine, Guard) {
    let guard = Guard {
        inner: platform.router(),
        fleet: platform.fleet(),
        broken: Arc::default(),
    };
    // its own lock: the tests of this program run at once on paused clocks of their
    // own, so they must not share the process's lock
    let engine = Engine::new(platform.image(), platform.fleet(), guard.clone())
        .with_options(options)
        .with_lock(Arc::new(MemoryLock::new()));
    (engine, guard)
}

#[tokio::test(start_paused = true)]
async fn a_rollback_never_moves_traffic_before_the_scaled_back_group_is_healthy() {
    let mut rollbacks = 0;
    for seed in 0..24u64 {
        let platform = MemoryPlatform::new();
        let boot = Duration::from_secs(5 + seed * 7 % 50);
        platform
            .set_boot_time(boot)
            .set_latency(Duration::from_millis(10 + seed % 3 * 40))
            .fail_randomly(0.04, Fault::Transient, seed);
        let warm = (seed % 4) as u32;
        let (engine, guard) = guarded(&platform, options(warm));
        // deploy, deploy, roll back, deploy, roll back twice: every rollback goes to
        // a group scaled in to `warm`
        engine.deploy(&request("1")).await.unwrap();
        engine.deploy(&request("2")).await.unwrap();
        let back = engine.rollback(&app()).await.unwrap();
        assert_eq!(back.to, gid(1), "seed {seed}");
        engine.deploy(&request("3")).await.unwrap();
        let back = engine.rollback(&app()).await.unwrap();
        assert_eq!(
            back.to,
            gid(1),
            "seed {seed}: v001 again, scaled back again"
        );
        assert!(!back.relaunched, "seed {seed}");
        rollbacks += 2;
        let broken = guard.broken.lock().unwrap().clone();
        assert!(
            broken.is_empty(),
            "seed {seed} (boot {boot:?}): {broken:#?}"
        );
        platform.clear_faults();
        let live = instances(&platform, &gid(1)).await;
        assert!(
            live.len() == 3 && live.iter().all(|i| i.health.is_healthy()),
            "seed {seed}: {live:?}"
        );
        assert_eq!(instances(&platform, &gid(3)).await.len(), warm as usize);
    }
    println!("{rollbacks} rollbacks to scaled-in groups, no traffic before health");
}

#[tokio::test(start_paused = true)]
async fn a_scaled_back_group_that_never_gets_healthy_gets_no_traffic() {
    let platform = MemoryPlatform::new();
    platform.set_boot_time(Duration::from_secs(10));
    let (engine, guard) = guarded(&platform, options(1));
    engine.deploy(&request("1")).await.unwrap();
    engine.deploy(&request("2")).await.unwrap();
    // from now on, new instances take longer to boot than the health timeout
    // (the running ones are older than that)
    tokio::time::advance(Duration::from_secs(3600)).await;
    platform.set_boot_time(Duration::from_secs(600));
    let history = platform.route_history(&app());
    let e = engine.rollback(&app()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert_eq!(e.step(), Some(Step::WaitHealthy), "{e}");
    assert!(e.rolled_back(), "{e}");
    assert_eq!(
        platform.route_history(&app()),
        history,
        "no route change at all"
    );
    assert_eq!(
        platform.router().routes(&app()).await.unwrap(),
        RouteTable::single(gid(2))
    );
    assert!(guard.broken.lock().unwrap().is_empty());
    // the warm group is kept, not destroyed, and the next deployment scales it in
    assert_eq!(instances(&platform, &gid(1)).await.len(), 3);
    platform.set_boot_time(Duration::from_secs(10));
    engine.deploy(&request("3")).await.unwrap();
    assert_eq!(instances(&platform, &gid(2)).await.len(), 1);
    assert!(
        !platform.has_group(gid(1).as_str()),
        "beyond keep: destroyed"
    );
}

/// A new process: a fresh engine on the same platform, sharing the lock table.
fn engine(platform: &MemoryPlatform, lock: &Arc<MemoryLock>, warm: u32) -> Engine {
    Engine::new(platform.image(), platform.fleet(), platform.router())
        .with_options(options(warm))
        .with_lock(lock.clone())
}

/// Converged: `live` has all traffic with three healthy instances, `warm` is the
/// only other group, scaled in to `size`, and the lock is free.
async fn assert_converged(
    platform: &MemoryPlatform,
    lock: &MemoryLock,
    live: u32,
    warm: u32,
    size: u32,
    case: &str,
) {
    assert_eq!(
        platform.router().routes(&app()).await.unwrap(),
        RouteTable::single(gid(live)),
        "{case}: routes"
    );
    let mut groups: Vec<GroupId> = platform
        .fleet()
        .groups(&app())
        .await
        .unwrap()
        .into_iter()
        .map(|g| g.id)
        .collect();
    groups.sort();
    let mut expected = vec![gid(live), gid(warm)];
    expected.sort();
    assert_eq!(groups, expected, "{case}: groups");
    let serving = instances(platform, &gid(live)).await;
    assert!(
        serving.len() == 3 && serving.iter().all(|i| i.health.is_healthy()),
        "{case}: {serving:?}"
    );
    assert_eq!(
        instances(platform, &gid(warm)).await.len(),
        size as usize,
        "{case}: the warm group is scaled in"
    );
    assert_eq!(lock.holder(&app()), None, "{case}: the lock is released");
    assert_eq!(
        platform.instance_count(),
        3 + size as usize,
        "{case}: stray instances"
    );
}

/// Two releases, the first kept warm scaled in to `warm`.
async fn two_releases(warm: u32) -> (MemoryPlatform, Arc<MemoryLock>) {
    let platform = MemoryPlatform::new();
    platform
        .set_boot_time(Duration::from_secs(10))
        .set_latency(Duration::from_millis(20));
    let lock = Arc::new(MemoryLock::new());
    engine(&platform, &lock, warm)
        .deploy(&request("1"))
        .await
        .unwrap();
    engine(&platform, &lock, warm)
        .deploy(&request("2"))
        .await
        .unwrap();
    (platform, lock)
}

#[tokio::test(start_paused = true)]
async fn an_interrupted_rollback_to_a_scaled_in_group_converges_when_run_again() {
    let warm = 1;
    let (calls, image) = {
        let (platform, lock) = two_releases(warm).await;
        let groups = platform.fleet().groups(&app()).await.unwrap();
        let v2 = groups.iter().find(|g| g.id == gid(2)).unwrap();
        let image = v2.previous.clone().unwrap().image;
        let before = platform.call_log().len();
        engine(&platform, &lock, warm)
            .rollback_to(&app(), &image)
            .await
            .unwrap();
        (platform.call_log()[before..].to_vec(), image)
    };
    assert!(calls.contains(&Op::Scale) && calls.contains(&Op::SetRoutes));
    assert!(
        !calls.contains(&Op::Launch),
        "the warm group is brought back"
    );
    for index in 0..calls.len() {
        let (platform, lock) = two_releases(warm).await;
        let op = calls[index];
        let nth = calls[..=index].iter().filter(|o| **o == op).count() as u64;
        let case = format!("interrupted at call {index} ({op:?} #{nth})");
        platform.fail_nth(op, nth, Fault::Hang);
        let first = tokio::time::timeout(
            Duration::from_secs(200),
            engine(&platform, &lock, warm).rollback_to(&app(), &image),
        )
        .await;
        assert!(first.is_err(), "{case}: should have hung the rollback");
        platform.clear_faults();
        let report = engine(&platform, &lock, warm)
            .rollback_to(&app(), &image)
            .await
            .unwrap_or_else(|e| panic!("{case}: the rerun failed: {e}"));
        assert_eq!(report.to, gid(1), "{case}: {report:?}");
        assert_converged(&platform, &lock, 1, 2, warm, &case).await;
    }
    println!(
        "interrupted rollback to a scaled-in group: {} cases, one per platform call, all converged",
        calls.len()
    );
}

#[tokio::test(start_paused = true)]
async fn an_interrupted_deployment_that_scales_in_converges_when_run_again() {
    let warm = 0;
    let calls = {
        let (platform, lock) = two_releases(warm).await;
        let before = platform.call_log().len();
        engine(&platform, &lock, warm)
            .deploy(&request("3"))
            .await
            .unwrap();
        platform.call_log()[before..].to_vec()
    };
    assert!(calls.contains(&Op::Scale) && calls.contains(&Op::Destroy));
    for index in 0..calls.len() {
        let (platform, lock) = two_releases(warm).await;
        let op = calls[index];
        let nth = calls[..=index].iter().filter(|o| **o == op).count() as u64;
        let case = format!("interrupted at call {index} ({op:?} #{nth})");
        platform.fail_nth(op, nth, Fault::Hang);
        let first = tokio::time::timeout(
            Duration::from_secs(200),
            engine(&platform, &lock, warm).deploy(&request("3")),
        )
        .await;
        assert!(first.is_err(), "{case}: should have hung the deployment");
        platform.clear_faults();
        let report = engine(&platform, &lock, warm)
            .deploy(&request("3"))
            .await
            .unwrap_or_else(|e| panic!("{case}: the rerun failed: {e}"));
        assert_eq!(report.live, gid(3), "{case}");
        assert_converged(&platform, &lock, 3, 2, warm, &case).await;
    }
    println!(
        "interrupted deployment that scales in: {} cases, all converged",
        calls.len()
    );
}

/// The in-memory fleet, declaring no scaling.
struct NoScaling(MemoryFleet);

#[async_trait]
impl Fleet for NoScaling {
    fn capabilities(&self) -> FleetCapabilities {
        self.0.capabilities().with_scaling(false)
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

#[tokio::test(start_paused = true)]
async fn warm_size_on_a_fleet_that_cannot_scale_is_refused_before_any_call() {
    let platform = MemoryPlatform::new();
    let engine = Engine::new(
        platform.image(),
        NoScaling(platform.fleet()),
        platform.router(),
    )
    .with_options(options(1));
    let e = engine.deploy(&request("1")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid, "{e}");
    assert!(e.to_string().contains("options.warm_size"), "{e}");
    let e = engine.rollback(&app()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid, "{e}");
    assert_eq!(platform.total_calls(), 0, "no platform call");
    // and the fleet's own default says so
    let e = NoScaling(platform.fleet())
        .scale(&app(), &gid(1), 1)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotSupported, "{e}");
}
