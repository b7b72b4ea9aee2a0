//! Regression tests for the guarantees that trials broke, and for the bake after
//! the switch and the baseline analysis, on the in-memory platform under tokio's
//! paused clock.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bluegreen_core::{
    check_fn, App, DeployRequest, Engine, EngineOptions, ErrorKind, Event, EventContext, EventSink,
    ImageSource, MemoryLock, Operation, RouteTable, Serving, Step, Strategy,
};
use bluegreen_testkit::{Behaviour, MemoryPlatform};

mod support;

use support::{app, gid, request, rig};

fn options() -> EngineOptions {
    EngineOptions::default()
        .with_health_timeout(Duration::from_secs(120))
        .with_confirm_timeout(Duration::from_secs(20))
        .with_drain(Duration::from_secs(5))
}

/// Failure 1: the fleet's probe passes while the router's own check fails. No
/// route may change, for blue/green and for every canary step.
#[tokio::test(start_paused = true)]
async fn traffic_never_moves_to_a_group_the_router_reports_unhealthy() {
    for strategy in [
        Strategy::blue_green(),
        Strategy::canary([10, 50], Duration::from_secs(30)),
    ] {
        let rig = rig(options());
        rig.platform
            .set_behaviour("web:bad", Behaviour::UnhealthyAtRouter);
        rig.engine.deploy(&request("1")).await.unwrap();
        let before = rig.platform.route_history(&app());
        let e = rig
            .engine
            .deploy(&request("bad").strategy(strategy.clone()))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unhealthy, "{e}");
        assert_eq!(e.step(), Some(Step::Verify), "{e}");
        assert!(e.rolled_back());
        assert_eq!(
            rig.platform.route_history(&app()),
            before,
            "{strategy:?}: no route change at all"
        );
        assert_eq!(rig.groups().await, [gid(1)]);
    }
}

/// A canary whose group loses a member during a bake never reaches the next
/// weight.
#[tokio::test(start_paused = true)]
async fn a_canary_that_loses_a_member_never_reaches_the_next_weight() {
    let rig = rig(options());
    rig.engine.deploy(&request("1")).await.unwrap();
    let platform = rig.platform.clone();
    let kill = tokio::spawn(async move {
        // v2 boots (10 s), is verified and gets 10 %; its bake lasts 60 s
        tokio::time::sleep(Duration::from_secs(30)).await;
        platform.kill_instance(&gid(2), 1).unwrap();
    });
    let e = rig
        .engine
        .deploy(&request("2").strategy(Strategy::canary([10, 50], Duration::from_secs(60))))
        .await
        .unwrap_err();
    kill.await.unwrap();
    assert_eq!(e.step(), Some(Step::Promote), "{e}");
    assert!(e.to_string().contains("2 of 3 members"), "{e}");
    let weights: Vec<u8> = rig
        .platform
        .route_history(&app())
        .iter()
        .map(|t| t.weight(&gid(2)))
        .collect();
    assert_eq!(weights.iter().max(), Some(&10), "{weights:?}");
    assert_eq!(rig.routes().await, RouteTable::single(gid(1)));
}

/// Failure 3: three rollbacks after r1, r2, r3 with keep = 1 go r2, r1, then
/// refuse; never forward.
#[tokio::test(start_paused = true)]
async fn repeated_rollbacks_walk_history_backwards_whatever_keep_is() {
    for keep in [0, 1, 3] {
        let rig = rig(options().with_keep(keep));
        for tag in ["r1", "r2", "r3"] {
            rig.engine.deploy(&request(tag)).await.unwrap();
        }
        let mut seen = Vec::new();
        for _ in 0..2 {
            let back = rig.engine.rollback(&app()).await.unwrap();
            let image = rig.image_of(&back.to).await;
            seen.push(image);
        }
        let e = rig.engine.rollback(&app()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Conflict, "keep {keep}: {e}");
        assert!(e.to_string().contains("no older release"), "{e}");

        let r1 = bluegreen_core::Image::prepare(
            &rig.platform.image(),
            &app(),
            &ImageSource::Reference("web:r1".into()),
            &EventSink::none(),
        )
        .await
        .unwrap()
        .id;
        let r2 = bluegreen_core::Image::prepare(
            &rig.platform.image(),
            &app(),
            &ImageSource::Reference("web:r2".into()),
            &EventSink::none(),
        )
        .await
        .unwrap()
        .id;
        assert_eq!(seen, [r2, r1], "keep {keep}");
    }
}

/// The bake after the switch: a group that dies 3 s after the switch sends the
/// traffic back to the previous group at once, in one route change.
#[tokio::test(start_paused = true)]
async fn a_group_that_dies_after_the_switch_is_switched_back_during_the_bake() {
    let rig = rig(options().with_keep(1));
    rig.platform
        .set_behaviour("web:dies", Behaviour::CrashAfter(Duration::from_secs(3)));
    rig.engine.deploy(&request("1")).await.unwrap();
    let started = tokio::time::Instant::now();
    let e = rig
        .engine
        .deploy(
            &request("dies")
                .strategy(Strategy::blue_green().with_bake_after(Duration::from_secs(300))),
        )
        .await
        .unwrap_err();
    assert_eq!(e.step(), Some(Step::Bake), "{e}");
    assert!(e.rolled_back(), "{e}");
    assert!(e.to_string().contains("after the switch"), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "caught at the next poll, not at the end of the bake: {:?}",
        started.elapsed()
    );
    let history = rig.platform.route_history(&app());
    let n = history.len();
    assert_eq!(history[n - 2], RouteTable::single(gid(2)));
    assert_eq!(
        history[n - 1],
        RouteTable::single(gid(1)),
        "one change back"
    );
    assert_eq!(rig.groups().await, [gid(1)]);
    let events = rig.events.lock().unwrap().clone();
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::Watching { group, .. } if *group == gid(2))));
    assert!(events.iter().any(|e| matches!(
        e,
        Event::Failed {
            kind: ErrorKind::Unhealthy,
            step: Some(Step::Bake),
            reverted: true,
            ..
        }
    )));
}

/// A bake that passes keeps the new group and retires as usual, after the bake.
#[tokio::test(start_paused = true)]
async fn a_bake_that_passes_retires_afterwards() {
    let rig = rig(options().with_keep(0));
    rig.engine.deploy(&request("1")).await.unwrap();
    let started = tokio::time::Instant::now();
    let report = rig
        .engine
        .deploy(
            &request("2")
                .strategy(Strategy::blue_green().with_bake_after(Duration::from_secs(120))),
        )
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_secs(120));
    assert_eq!(report.destroyed, [gid(1)]);
    assert_eq!(rig.groups().await, [gid(2)]);
}

/// The error rate is judged against the previous group's over the same window.
#[tokio::test(start_paused = true)]
async fn the_analysis_compares_with_the_baseline() {
    let rig = rig(options());
    rig.platform
        .set_behaviour("web:1", Behaviour::ErrorRate(0.02))
        .set_behaviour("web:2", Behaviour::ErrorRate(0.03))
        .set_behaviour("web:3", Behaviour::ErrorRate(0.20));
    rig.engine.deploy(&request("1")).await.unwrap();
    let strategy =
        Strategy::canary([20], Duration::from_secs(60)).with_max_error_rate_increase(0.05);
    // 3 % against 2 %: within one point
    rig.engine
        .deploy(&request("2").strategy(strategy.clone()))
        .await
        .unwrap();
    // 20 % against 3 %: 17 points more
    let e = rig
        .engine
        .deploy(&request("3").strategy(strategy))
        .await
        .unwrap_err();
    assert_eq!(e.step(), Some(Step::Promote), "{e}");
    assert!(e.to_string().contains("passes the baseline"), "{e}");
    assert_eq!(rig.routes().await, RouteTable::single(gid(2)));
}

/// What an analysis check saw: the weight, the new group's and the baseline's window.
type Window = (u8, Option<Serving>, Option<Serving>);

/// Analysis checks see both groups' windows, and a manual promote runs them too.
#[tokio::test(start_paused = true)]
async fn promote_runs_the_strategys_analysis() {
    let rig = rig(options());
    rig.engine.deploy(&request("1")).await.unwrap();
    let prepared = rig.engine.prepare(&request("2")).await.unwrap();
    let seen: Arc<Mutex<Vec<Window>>> = Arc::default();
    let check = check_fn("compare", {
        let seen = seen.clone();
        move |t| {
            let seen = seen.clone();
            async move {
                seen.lock()
                    .unwrap()
                    .push((t.weight, t.serving.clone(), t.baseline.clone()));
                if t.weight >= 50 {
                    Err("refused at half".to_owned())
                } else {
                    Ok(())
                }
            }
        }
    });
    let strategy = Strategy::canary([10, 50], Duration::from_secs(30)).with_analysis(check);
    let e = rig
        .engine
        .promote(&app(), &prepared.group.id, &strategy)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("refused at half"), "{e}");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.iter().map(|s| s.0).collect::<Vec<_>>(), [10, 50]);
    let (_, ours, theirs) = &seen[0];
    // 30 s at 10 % of 1,000 requests a second, and at 90 % for the baseline
    assert_eq!(ours.as_ref().unwrap().requests, Some(3_000));
    assert_eq!(theirs.as_ref().unwrap().requests, Some(27_000));
    assert_eq!(rig.routes().await, RouteTable::single(gid(1)));
}

/// The automatic undo and the user's rollback have different names.
#[tokio::test(start_paused = true)]
async fn the_undo_and_the_rollback_are_told_apart() {
    let rig = rig(options().with_health_timeout(Duration::from_secs(30)));
    rig.platform
        .set_behaviour("web:bad", Behaviour::NeverHealthy);
    rig.engine.deploy(&request("1")).await.unwrap();
    rig.engine.deploy(&request("2")).await.unwrap();
    let e = rig.engine.deploy(&request("bad")).await.unwrap_err();
    assert!(e.to_string().contains("(reverted)"), "{e}");
    assert!(!e.to_string().contains("rolled back"), "{e}");
    rig.engine.rollback(&app()).await.unwrap();
    let events = rig.events.lock().unwrap().clone();
    assert!(events.iter().any(|e| matches!(e, Event::Reverting { .. })));
    assert!(events.iter().any(|e| matches!(
        e,
        Event::Started {
            operation: Operation::Rollback,
            ..
        }
    )));
}

/// One sink follows two apps deploying at once: every event carries its context.
#[tokio::test(start_paused = true)]
async fn one_sink_follows_concurrent_deployments() {
    let platform = MemoryPlatform::new();
    platform.set_boot_time(Duration::from_secs(10));
    let seen: Arc<Mutex<Vec<(String, String, Event)>>> = Arc::default();
    let sink = EventSink::with_context({
        let seen = seen.clone();
        move |e: &Event, ctx: Option<&EventContext>| {
            let ctx = ctx.expect("engine events have a context");
            seen.lock()
                .unwrap()
                .push((ctx.app.to_string(), ctx.deployment.to_string(), e.clone()));
        }
    });
    let engine = Engine::from_parts(platform.parts())
        .with_options(options())
        .with_lock(Arc::new(MemoryLock::new()))
        .with_events(sink);
    let web = request("1");
    let api = DeployRequest::new(
        App::new("api", "production").unwrap(),
        ImageSource::Reference("api:1".into()),
    );
    let (a, b) = tokio::join!(engine.deploy(&web), engine.deploy(&api));
    a.unwrap();
    b.unwrap();
    let seen = seen.lock().unwrap().clone();
    for app in ["web.production", "api.production"] {
        let mine: Vec<_> = seen.iter().filter(|(a, _, _)| a == app).collect();
        let deployments: std::collections::BTreeSet<_> = mine.iter().map(|(_, d, _)| d).collect();
        assert_eq!(deployments.len(), 1, "{app}");
        assert!(matches!(mine.first().unwrap().2, Event::Started { .. }));
        assert!(matches!(mine.last().unwrap().2, Event::Finished { .. }));
    }
}

/// A rollback can verify the group it goes to; a failed check reverts it.
#[tokio::test(start_paused = true)]
async fn a_rollback_runs_its_verify_checks() {
    let rig = rig(options().with_keep(0));
    rig.engine.deploy(&request("1")).await.unwrap();
    rig.engine.deploy(&request("2")).await.unwrap();
    let refuse = check_fn("smoke", |t| async move {
        Err(format!("{} answers 500 on /", t.group))
    });
    let e = rig
        .engine
        .rollback_with(&bluegreen_core::RollbackRequest::new(app()).verify(refuse))
        .await
        .unwrap_err();
    assert_eq!(e.step(), Some(Step::Verify), "{e}");
    assert!(e.rolled_back(), "{e}");
    assert!(
        e.to_string().contains("web-production-v003 answers 500"),
        "{e}"
    );
    assert_eq!(rig.routes().await, RouteTable::single(gid(2)));
    assert_eq!(
        rig.groups().await,
        [gid(2)],
        "the relaunched group is removed"
    );
}
