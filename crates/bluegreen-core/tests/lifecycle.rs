//! Release tasks, lifecycle hooks and several apps deployed as one, tried on the
//! in-memory platform: every stage, every failure, every interruption.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bluegreen_core::{
    hook_fn, App, Decision, DeployRequest, Engine, EngineOptions, Error, ErrorKind, Event, Fleet,
    FleetCapabilities, Group, GroupId, Hook, HookContext, ImageSource, Instance, MemoryLock,
    ReleaseTask, RollbackRequest, RouteTable, Router, Stage, Strategy, SwitchAll, TaskPhase,
};
use bluegreen_testkit::{Behaviour, Fault, MemoryPlatform, Op, TaskBehaviour};
use support::{app, gid, request, rig, Rig};

fn migrate() -> ReleaseTask {
    ReleaseTask::new(["migrate", "--to", "latest"]).with_timeout(Duration::from_secs(120))
}

fn with_task(tag: &str, task: ReleaseTask) -> DeployRequest {
    request(tag).task(task)
}

fn events_of(rig: &Rig) -> Vec<Event> {
    rig.events.lock().unwrap().clone()
}

/// A fresh engine on the rig's platform: another run of the deploying program.
fn again(rig: &Rig) -> Engine {
    Engine::new(
        rig.platform.image(),
        rig.platform.fleet(),
        rig.platform.router(),
    )
    // a new process: a lock table of its own
    .with_lock(Arc::new(MemoryLock::new()))
}

// ---------------------------------------------------------------- release tasks

#[tokio::test(start_paused = true)]
async fn a_task_runs_once_before_launch_and_streams_its_output() {
    let rig = rig(EngineOptions::default());
    rig.engine.deploy(&request("1")).await.unwrap();
    let report = rig.engine.deploy(&with_task("2", migrate())).await.unwrap();
    assert_eq!(report.live, gid(2));
    assert_eq!(
        rig.platform.task_starts(&app()),
        vec![(
            gid(2),
            vec!["migrate".into(), "--to".into(), "latest".into()]
        )]
    );
    let events = events_of(&rig);
    let at = |f: &dyn Fn(&Event) -> bool| events.iter().position(f).unwrap();
    let started = at(&|e| matches!(e, Event::TaskStarted { .. }));
    let succeeded = at(&|e| matches!(e, Event::TaskSucceeded { .. }));
    let launched = at(&|e| matches!(e, Event::GroupLaunched { group, .. } if *group == gid(2)));
    assert!(started < succeeded && succeeded < launched, "{events:?}");
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::TaskOutput { line, .. } if line == "$ migrate --to latest")));
    assert!(rig.platform.has_task(gid(2).as_str()), "the record stays");
}

#[tokio::test(start_paused = true)]
async fn a_failing_task_deploys_nothing() {
    for phase in [TaskPhase::BeforeLaunch, TaskPhase::AfterHealthy] {
        let rig = rig(EngineOptions::default());
        rig.engine.deploy(&request("1")).await.unwrap();
        rig.platform
            .set_task_behaviour("web:2", TaskBehaviour::Fail(Duration::from_secs(3), 3));
        let err = rig
            .engine
            .deploy(&with_task("2", migrate().with_phase(phase)))
            .await
            .unwrap_err();
        assert!(err.rolled_back(), "{phase:?}: {err}");
        assert!(err.to_string().contains("exit status 3"), "{err}");
        assert_eq!(rig.routes().await, RouteTable::single(gid(1)), "{phase:?}");
        assert_eq!(rig.groups().await, vec![gid(1)], "{phase:?}: nothing left");
        assert!(!rig.platform.has_task(gid(2).as_str()), "{phase:?}");
        if phase == TaskPhase::BeforeLaunch {
            assert!(
                !rig.platform
                    .call_log()
                    .iter()
                    .skip_while(|o| **o != Op::StartTask)
                    .any(|o| *o == Op::Launch),
                "nothing launched after a failed task"
            );
        }
        assert_eq!(
            rig.platform.route_history(&app()).len(),
            1,
            "{phase:?}: routes never changed"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_task_past_its_timeout_is_stopped_and_fails_closed() {
    let rig = rig(EngineOptions::default());
    rig.engine.deploy(&request("1")).await.unwrap();
    rig.platform
        .set_task_behaviour("web:2", TaskBehaviour::Hang);
    let err = rig
        .engine
        .deploy(&with_task(
            "2",
            migrate().with_timeout(Duration::from_secs(30)),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(err.rolled_back());
    assert!(
        !rig.platform.has_task(gid(2).as_str()),
        "stopped and removed"
    );
    assert_eq!(rig.groups().await, vec![gid(1)]);
}

#[tokio::test(start_paused = true)]
async fn a_task_after_healthy_runs_with_the_group_up_and_before_attach() {
    let rig = rig(EngineOptions::default());
    rig.engine
        .deploy(&with_task(
            "1",
            migrate().with_phase(TaskPhase::AfterHealthy),
        ))
        .await
        .unwrap();
    let steps = rig.steps();
    let pos = |s| steps.iter().position(|x| *x == s).unwrap();
    use bluegreen_core::Step;
    assert!(pos(Step::WaitHealthy) < pos(Step::Task), "{steps:?}");
    assert!(pos(Step::Task) < pos(Step::Attach), "{steps:?}");
}

#[tokio::test(start_paused = true)]
async fn a_failed_task_runs_again_on_the_next_attempt_but_a_finished_one_never() {
    let rig = rig(EngineOptions::default());
    rig.platform
        .set_task_behaviour("web:1", TaskBehaviour::Fail(Duration::from_secs(1), 1));
    rig.engine
        .deploy(&with_task("1", migrate()))
        .await
        .unwrap_err();
    rig.platform
        .set_task_behaviour("web:1", TaskBehaviour::Succeed(Duration::from_secs(1)));
    rig.engine.deploy(&with_task("1", migrate())).await.unwrap();
    assert_eq!(rig.platform.task_starts(&app()).len(), 2);
    // the same release again: already live, its task is never run again
    let report = rig.engine.deploy(&with_task("1", migrate())).await.unwrap();
    assert!(report.unchanged);
    assert_eq!(rig.platform.task_starts(&app()).len(), 2);
}

/// The deploying program dies at every platform call of a deployment with a task
/// and is run again: the task has run exactly once, whatever the call.
#[tokio::test(start_paused = true)]
async fn a_task_runs_exactly_once_whatever_call_the_deployer_dies_at() {
    let calls = {
        let rig = rig(EngineOptions::default());
        rig.engine.deploy(&request("1")).await.unwrap();
        let before = rig.platform.call_log().len();
        rig.engine.deploy(&with_task("2", migrate())).await.unwrap();
        rig.platform.call_log()[before..].to_vec()
    };
    assert!(calls.contains(&Op::StartTask) && calls.contains(&Op::Task));
    for index in 0..calls.len() {
        let rig = rig(EngineOptions::default());
        again(&rig).deploy(&request("1")).await.unwrap();
        let op = calls[index];
        let nth = calls[..=index].iter().filter(|o| **o == op).count() as u64;
        rig.platform.fail_nth(op, nth, Fault::Hang);
        let first = tokio::time::timeout(
            Duration::from_secs(200),
            again(&rig).deploy(&with_task("2", migrate())),
        )
        .await;
        assert!(first.is_err(), "call {index} ({op:?}) should hang");
        rig.platform.clear_faults();
        let case = format!("died at call {index} ({op:?} #{nth})");
        let report = again(&rig)
            .deploy(&with_task("2", migrate()))
            .await
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(report.live, gid(2), "{case}");
        let starts = rig.platform.task_starts(&app());
        assert_eq!(starts.len(), 1, "{case}: {starts:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_task_on_a_fleet_without_tasks_is_refused_before_any_call() {
    struct NoTasks(bluegreen_testkit::MemoryFleet);
    #[bluegreen_core::async_trait]
    impl Fleet for NoTasks {
        fn capabilities(&self) -> FleetCapabilities {
            FleetCapabilities::default()
        }
        async fn launch(&self, group: &Group) -> bluegreen_core::Result<()> {
            self.0.launch(group).await
        }
        async fn groups(&self, app: &App) -> bluegreen_core::Result<Vec<Group>> {
            self.0.groups(app).await
        }
        async fn instances(
            &self,
            app: &App,
            group: &GroupId,
        ) -> bluegreen_core::Result<Vec<Instance>> {
            self.0.instances(app, group).await
        }
        async fn destroy(&self, app: &App, group: &GroupId) -> bluegreen_core::Result<()> {
            self.0.destroy(app, group).await
        }
    }
    let platform = MemoryPlatform::new();
    let engine = Engine::new(
        platform.image(),
        NoTasks(platform.fleet()),
        platform.router(),
    )
    .with_lock(platform.lock());
    let err = engine.deploy(&with_task("1", migrate())).await.unwrap_err();
    assert!(
        matches!(&err, Error::Invalid { field, .. } if field == "task"),
        "{err}"
    );
    assert_eq!(platform.total_calls(), 0);
    let err = engine
        .deploy(&with_task("1", ReleaseTask::new(Vec::<String>::new())))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Invalid { field, .. } if field == "task.command"),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_rollback_behind_an_irreversible_task_is_refused_unless_forced() {
    let rig = rig(EngineOptions::default());
    rig.engine.deploy(&request("1")).await.unwrap();
    let image1 = rig.image_of(&gid(1)).await;
    rig.engine
        .deploy(&with_task("2", migrate().irreversible()))
        .await
        .unwrap();
    rig.engine.deploy(&request("3")).await.unwrap();
    let calls = rig.platform.mutating_calls();
    // one back (3 -> 2) passes no irreversible release
    let back = rig.engine.rollback(&app()).await.unwrap();
    assert_eq!(rig.image_of(&back.to).await, rig.image_of(&gid(2)).await);
    // now live is 2: behind it is refused, by either way back
    let calls = rig.platform.mutating_calls().max(calls);
    let err = rig.engine.rollback(&app()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert!(err.to_string().contains("irreversible"), "{err}");
    let err = rig.engine.rollback_to(&app(), &image1).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert_eq!(rig.platform.mutating_calls(), calls, "nothing changed");
    // forward is fine, and forced back is fine; no task runs on a rollback
    let forced = rig
        .engine
        .rollback_with(&RollbackRequest::new(app()).to_image(image1.clone()).force())
        .await
        .unwrap();
    assert_eq!(rig.image_of(&forced.to).await, image1);
    assert_eq!(rig.platform.task_starts(&app()).len(), 1);
}

// ------------------------------------------------------------------------ hooks

type Calls = Arc<Mutex<Vec<(Stage, u8, bool)>>>;

/// A hook that records its calls and answers `decide(stage, weight, resumed)`.
fn recorder(
    calls: &Calls,
    decide: impl Fn(Stage, u8, bool) -> Decision + Send + Sync + 'static,
) -> Arc<dyn Hook> {
    let calls = calls.clone();
    let decide = Arc::new(decide);
    hook_fn("recorder", move |ctx: HookContext| {
        let calls = calls.clone();
        let decide = decide.clone();
        async move {
            calls
                .lock()
                .unwrap()
                .push((ctx.stage, ctx.weight, ctx.resumed));
            decide(ctx.stage, ctx.weight, ctx.resumed)
        }
    })
}

fn hooked(tag: &str, strategy: Strategy, hook: &Arc<dyn Hook>) -> DeployRequest {
    let mut r = request(tag).strategy(strategy);
    for stage in Stage::ALL {
        r = r.hook(stage, hook.clone());
    }
    r
}

fn canary() -> Strategy {
    Strategy::canary([10, 50], Duration::from_secs(30)).with_bake_after(Duration::from_secs(60))
}

#[tokio::test(start_paused = true)]
async fn hooks_are_called_at_every_stage_in_order() {
    let rig = rig(EngineOptions::default());
    rig.engine.deploy(&request("1")).await.unwrap();
    let calls: Calls = Default::default();
    let hook = recorder(&calls, |_, _, _| Decision::Continue);
    rig.engine
        .deploy(&hooked("2", canary(), &hook))
        .await
        .unwrap();
    let seen: Vec<(Stage, u8)> = calls.lock().unwrap().iter().map(|c| (c.0, c.1)).collect();
    assert_eq!(
        seen,
        vec![
            (Stage::BeforeLaunch, 0),
            (Stage::AfterHealthy, 0),
            (Stage::BeforeTraffic, 0),
            (Stage::AfterTrafficStep, 10),
            (Stage::AfterTrafficStep, 50),
            (Stage::AfterTrafficStep, 100),
            (Stage::AfterBake, 100),
            (Stage::BeforeRetire, 100),
        ]
    );
}

/// The stages a canary with a bake after the switch passes, with their weights.
fn canary_stages() -> Vec<(Stage, u8)> {
    vec![
        (Stage::BeforeLaunch, 0),
        (Stage::AfterHealthy, 0),
        (Stage::BeforeTraffic, 0),
        (Stage::AfterTrafficStep, 10),
        (Stage::AfterTrafficStep, 50),
        (Stage::AfterTrafficStep, 100),
        (Stage::AfterBake, 100),
        (Stage::BeforeRetire, 100),
    ]
}

#[tokio::test(start_paused = true)]
async fn a_hook_that_fails_or_times_out_reverts_at_every_stage() {
    for (stage, weight) in canary_stages() {
        for timeout in [false, true] {
            let rig = rig(EngineOptions::default());
            rig.engine.deploy(&request("1")).await.unwrap();
            let hook: Arc<dyn Hook> = if timeout {
                struct Slow(Stage, u8);
                #[bluegreen_core::async_trait]
                impl Hook for Slow {
                    fn name(&self) -> &str {
                        "slow"
                    }
                    fn timeout(&self) -> Duration {
                        Duration::from_secs(5)
                    }
                    async fn call(&self, ctx: &HookContext) -> Decision {
                        if (ctx.stage, ctx.weight) == (self.0, self.1) {
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                        }
                        Decision::Continue
                    }
                }
                Arc::new(Slow(stage, weight))
            } else {
                let calls: Calls = Default::default();
                recorder(&calls, move |s, w, _| {
                    if (s, w) == (stage, weight) {
                        Decision::Fail("no".into())
                    } else {
                        Decision::Continue
                    }
                })
            };
            let case = format!("{stage} at {weight}% (timeout: {timeout})");
            let err = rig
                .engine
                .deploy(&hooked("2", canary(), &hook))
                .await
                .unwrap_err();
            assert!(err.rolled_back(), "{case}: {err}");
            if timeout {
                assert_eq!(err.kind(), ErrorKind::Timeout, "{case}: {err}");
            } else {
                assert!(err.to_string().contains("failed the deployment"), "{case}");
            }
            assert_eq!(rig.routes().await, RouteTable::single(gid(1)), "{case}");
            assert_eq!(rig.groups().await, vec![gid(1)], "{case}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_pause_at_any_stage_survives_the_program_and_resume_finishes_it() {
    for (stage, weight) in canary_stages() {
        let rig = rig(EngineOptions::default());
        rig.engine.deploy(&request("1")).await.unwrap();
        let calls: Calls = Default::default();
        let hook = recorder(&calls, move |s, w, _| {
            if (s, w) == (stage, weight) {
                Decision::Pause("waiting for a person".into())
            } else {
                Decision::Continue
            }
        });
        let case = format!("paused at {stage} {weight}%");
        let report = rig
            .engine
            .deploy(&hooked("2", canary(), &hook))
            .await
            .unwrap();
        let paused = report.paused.clone().unwrap_or_else(|| panic!("{case}"));
        assert_eq!((paused.stage, paused.weight), (stage, weight), "{case}");
        let routes = rig.routes().await;
        assert_eq!(routes.weight(&gid(2)), weight, "{case}: traffic as it was");
        // the program exits: a new one resumes (the lock is free)
        let done = again(&rig)
            .resume(&hooked("2", canary(), &hook))
            .await
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        assert!(done.paused.is_none(), "{case}");
        assert_eq!(done.live, gid(2), "{case}");
        assert_eq!(rig.routes().await, RouteTable::single(gid(2)), "{case}");
        // the resumed run calls hooks with `resumed` until it passes the pause,
        // which is the stage it stopped at; after it, none
        let calls = calls.lock().unwrap().clone();
        let last_resumed = calls.iter().rposition(|c| c.2).expect("a resumed call");
        assert_eq!(
            (calls[last_resumed].0, calls[last_resumed].1),
            (stage, weight),
            "{case}: passed the pause there: {calls:?}"
        );
        let paused_at = calls
            .iter()
            .position(|c| (c.0, c.1) == (stage, weight))
            .unwrap();
        assert!(
            calls[paused_at + 1..last_resumed].iter().all(|c| c.2),
            "{case}: {calls:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_deployment_run_again_without_resume_pauses_again() {
    let rig = rig(EngineOptions::default());
    rig.engine.deploy(&request("1")).await.unwrap();
    let calls: Calls = Default::default();
    let hook = recorder(&calls, |s, _, resumed| {
        if s == Stage::BeforeTraffic && !resumed {
            Decision::Pause("approval".into())
        } else {
            Decision::Continue
        }
    });
    let r = request("2").hook(Stage::BeforeTraffic, hook.clone());
    assert!(rig.engine.deploy(&r).await.unwrap().paused.is_some());
    assert!(rig.engine.deploy(&r).await.unwrap().paused.is_some());
    assert_eq!(rig.routes().await, RouteTable::single(gid(1)));
    let done = rig.engine.resume(&r).await.unwrap();
    assert!(done.paused.is_none());
    assert_eq!(rig.routes().await, RouteTable::single(gid(2)));
}

#[tokio::test(start_paused = true)]
async fn two_pauses_take_two_resumes() {
    let rig = rig(EngineOptions::default());
    let calls: Calls = Default::default();
    let hook = recorder(&calls, |s, _, _| match s {
        Stage::BeforeTraffic | Stage::AfterBake => Decision::Pause("look".into()),
        _ => Decision::Continue,
    });
    let r = hooked("1", Strategy::blue_green(), &hook);
    let first = rig.engine.deploy(&r).await.unwrap();
    assert_eq!(first.paused.unwrap().stage, Stage::BeforeTraffic);
    let second = rig.engine.resume(&r).await.unwrap();
    assert_eq!(second.paused.unwrap().stage, Stage::AfterBake);
    let third = rig.engine.resume(&r).await.unwrap();
    assert!(third.paused.is_none());
    assert_eq!(rig.routes().await, RouteTable::single(gid(1)));
}

// ------------------------------------------------------------ several apps at once

fn api() -> App {
    App::new("api", "production").unwrap()
}

fn pair(web: &str, api_tag: &str) -> Vec<DeployRequest> {
    vec![
        request(web),
        DeployRequest::new(api(), ImageSource::Reference(format!("api:{api_tag}"))).size(2),
    ]
}

#[tokio::test(start_paused = true)]
async fn several_apps_switch_in_one_change() {
    let rig = rig(EngineOptions::default());
    rig.engine
        .deploy_all(&pair("1", "1"), SwitchAll::Atomic)
        .await
        .unwrap();
    let before = rig.platform.calls(Op::SetRoutesMany);
    let reports = rig
        .engine
        .deploy_all(&pair("2", "2"), SwitchAll::Atomic)
        .await
        .unwrap();
    assert_eq!(reports[0].app, app());
    assert_eq!(reports[1].app, api());
    assert_eq!(rig.platform.calls(Op::SetRoutesMany) - before, 1);
    assert_eq!(rig.platform.calls(Op::SetRoutes), 0, "never app by app");
    let api_live = rig.platform.router().routes(&api()).await.unwrap();
    assert_eq!(api_live, RouteTable::single(reports[1].live.clone()));
    assert_eq!(rig.routes().await, RouteTable::single(gid(2)));
}

#[tokio::test(start_paused = true)]
async fn when_one_app_fails_every_app_goes_back() {
    // verify fails for api
    let rig = rig(EngineOptions::default());
    rig.engine
        .deploy_all(&pair("1", "1"), SwitchAll::Atomic)
        .await
        .unwrap();
    let api_before = rig.platform.router().routes(&api()).await.unwrap();
    rig.platform.set_behaviour("api:2", Behaviour::NeverHealthy);
    let err = rig
        .engine
        .deploy_all(&pair("2", "2"), SwitchAll::Atomic)
        .await
        .unwrap_err();
    assert!(err.rolled_back(), "{err}");
    assert_eq!(rig.routes().await, RouteTable::single(gid(1)));
    assert_eq!(
        rig.platform.router().routes(&api()).await.unwrap(),
        api_before
    );
    assert_eq!(rig.groups().await, vec![gid(1)], "web's new group removed");

    // the bake after the switch fails for web: both switch back in one change
    let rig2 = rig_with_bake();
    rig2.engine
        .deploy_all(&pair("1", "1"), SwitchAll::Atomic)
        .await
        .unwrap();
    rig2.platform
        .set_behaviour("web:2", Behaviour::CrashAfter(Duration::from_secs(20)));
    let many = rig2.platform.calls(Op::SetRoutesMany);
    let bake = Strategy::blue_green().with_bake_after(Duration::from_secs(60));
    let reqs: Vec<DeployRequest> = pair("2", "2")
        .into_iter()
        .map(|r| r.strategy(bake.clone()))
        .collect();
    let err = rig2
        .engine
        .deploy_all(&reqs, SwitchAll::Atomic)
        .await
        .unwrap_err();
    assert!(err.rolled_back(), "{err}");
    assert_eq!(
        rig2.platform.calls(Op::SetRoutesMany) - many,
        2,
        "one switch there, one back"
    );
    assert_eq!(rig2.platform.calls(Op::SetRoutes), 0);
    assert_eq!(rig2.routes().await, RouteTable::single(gid(1)));
    let api_live = rig2.platform.router().routes(&api()).await.unwrap();
    assert_eq!(api_live.groups().count(), 1);
    assert!(api_live.primary().unwrap().as_str().ends_with("v001"));
}

fn rig_with_bake() -> Rig {
    rig(EngineOptions::default())
}

#[tokio::test(start_paused = true)]
async fn a_router_that_cannot_switch_several_apps_is_refused_or_goes_one_by_one() {
    let rig = rig(EngineOptions::default());
    rig.platform.without_multi_app_switch();
    let err = rig
        .engine
        .deploy_all(&pair("1", "1"), SwitchAll::Atomic)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotSupported, "{err}");
    assert_eq!(rig.platform.total_calls(), 0, "refused before any call");
    rig.engine
        .deploy_all(&pair("1", "1"), SwitchAll::AtomicOrOneByOne)
        .await
        .unwrap();
    assert_eq!(rig.platform.calls(Op::SetRoutes), 2);
    assert!(events_of(&rig)
        .iter()
        .any(|e| matches!(e, Event::StrategyAdapted { .. })));
}

#[tokio::test(start_paused = true)]
async fn bad_sets_are_refused_naming_the_request() {
    let rig = rig(EngineOptions::default());
    let field = |r: Result<Vec<bluegreen_core::DeployReport>, Error>| match r {
        Err(Error::Invalid { field, .. }) => field,
        other => panic!("{other:?}"),
    };
    let e = rig.engine.deploy_all(&[], SwitchAll::Atomic).await;
    assert_eq!(field(e), "requests");
    let e = rig
        .engine
        .deploy_all(&[request("1"), request("2")], SwitchAll::Atomic)
        .await;
    assert_eq!(field(e), "requests[1].app");
    let staging = DeployRequest::new(
        App::new("api", "staging").unwrap(),
        ImageSource::Reference("api:1".into()),
    );
    let e = rig
        .engine
        .deploy_all(&[request("1"), staging], SwitchAll::Atomic)
        .await;
    assert_eq!(field(e), "requests[1].app");
    let mut canary_pair = pair("1", "1");
    canary_pair[1] = canary_pair[1].clone().strategy(canary());
    let e = rig.engine.deploy_all(&canary_pair, SwitchAll::Atomic).await;
    assert_eq!(field(e), "requests[1].strategy.steps");
    assert_eq!(rig.platform.total_calls(), 0);
}

/// The deploying program dies at every platform call of a deployment of two apps,
/// and the same set is deployed again: both converge to their new groups.
#[tokio::test(start_paused = true)]
async fn several_apps_converge_whatever_call_the_deployer_dies_at() {
    let calls = {
        let rig = rig(EngineOptions::default());
        rig.engine
            .deploy_all(&pair("1", "1"), SwitchAll::Atomic)
            .await
            .unwrap();
        let before = rig.platform.call_log().len();
        rig.engine
            .deploy_all(&pair("2", "2"), SwitchAll::Atomic)
            .await
            .unwrap();
        rig.platform.call_log()[before..].to_vec()
    };
    for index in 0..calls.len() {
        let rig = rig(EngineOptions::default());
        again(&rig)
            .deploy_all(&pair("1", "1"), SwitchAll::Atomic)
            .await
            .unwrap();
        let op = calls[index];
        let nth = calls[..=index].iter().filter(|o| **o == op).count() as u64;
        rig.platform.fail_nth(op, nth, Fault::Hang);
        let first = tokio::time::timeout(
            Duration::from_secs(200),
            again(&rig).deploy_all(&pair("2", "2"), SwitchAll::Atomic),
        )
        .await;
        assert!(first.is_err(), "call {index} ({op:?}) should hang");
        rig.platform.clear_faults();
        let case = format!("died at call {index} ({op:?} #{nth})");
        // whatever the routes are now, web and api moved together or not at all
        let web_new = rig.routes().await.weight(&gid(2)) > 0;
        let api_routes = rig.platform.router().routes(&api()).await.unwrap();
        let api_new = api_routes
            .primary()
            .is_some_and(|g| g.as_str().ends_with("v002"));
        assert_eq!(web_new, api_new, "{case}: one app moved without the other");
        let reports = again(&rig)
            .deploy_all(&pair("2", "2"), SwitchAll::Atomic)
            .await
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(reports[0].live, gid(2), "{case}");
        assert!(reports[1].live.as_str().ends_with("v002"), "{case}");
    }
}

/// A user's callback that panics, a check at verify or in the analysis, is a
/// failing one: the deployment reverts and gives the lock back.
#[tokio::test(start_paused = true)]
async fn a_panicking_check_fails_closed() {
    use bluegreen_core::check_fn;
    for at_verify in [true, false] {
        let rig = rig(EngineOptions::default());
        rig.engine.deploy(&request("1")).await.unwrap();
        let boom = check_fn("boom", |_| async { panic!("the check exploded") });
        let r = if at_verify {
            request("2").verify(boom)
        } else {
            request("2")
                .strategy(Strategy::canary([10], Duration::from_secs(30)))
                .analysis(boom)
        };
        let err = rig.engine.deploy(&r).await.unwrap_err();
        assert!(err.rolled_back(), "{err}");
        assert!(err.to_string().contains("the check exploded"), "{err}");
        assert_eq!(rig.routes().await, RouteTable::single(gid(1)));
        assert_eq!(rig.groups().await, vec![gid(1)]);
        // the lock was given back: the next deployment goes
        rig.engine.deploy(&request("3")).await.unwrap();
    }
}
