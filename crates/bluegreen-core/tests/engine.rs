//! The engine on the in-memory platform, under tokio's paused clock.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bluegreen_core::{
    check_fn, App, DeployRequest, Engine, EngineOptions, ErrorKind, Event, Fleet, GroupId,
    ImageSource, RouteTable, Step, Strategy,
};
use bluegreen_testkit::{Behaviour, Fault, Op};

mod support;

use support::{app, gid, request, rig, Rig};

fn options() -> EngineOptions {
    EngineOptions::default()
        .with_health_timeout(Duration::from_secs(120))
        .with_drain(Duration::from_secs(5))
}

#[tokio::test(start_paused = true)]
async fn a_deployment_runs_its_steps_in_order_and_retires_the_old_group() {
    let rig = rig(options());
    let first = rig.engine.deploy(&request("1")).await.unwrap();
    assert_eq!(first.live, gid(1));
    assert_eq!(first.previous, None);
    assert_eq!(
        rig.steps(),
        [
            Step::Validate,
            Step::Lock,
            Step::Observe,
            Step::PrepareImage,
            Step::Launch,
            Step::WaitHealthy,
            Step::Attach,
            Step::Verify,
            Step::Promote,
            Step::Confirm,
            Step::Drain,
            Step::Retire,
        ]
    );
    let events = rig.events.lock().unwrap().clone();
    assert!(matches!(events.first(), Some(Event::Started { .. })));
    assert!(matches!(
        events[1],
        Event::StepStarted {
            step: Step::Validate
        }
    ));
    assert!(matches!(events.last(), Some(Event::Finished { group, .. }) if *group == gid(1)));
    // health progress was reported until all three were healthy
    assert!(events.iter().any(|e| matches!(
        e,
        Event::Health {
            healthy: 3,
            wanted: 3,
            ..
        }
    )));

    let second = rig.engine.deploy(&request("2")).await.unwrap();
    assert_eq!(second.previous, Some(gid(1)));
    assert_eq!(second.kept_warm, vec![gid(1)]);
    assert!(second.destroyed.is_empty());
    assert_eq!(rig.routes().await, RouteTable::single(gid(2)));

    let third = rig.engine.deploy(&request("3")).await.unwrap();
    assert_eq!(third.kept_warm, vec![gid(2)]);
    assert_eq!(third.destroyed, vec![gid(1)]);
    assert_eq!(
        rig.group_ids().await,
        ["web-production-v002", "web-production-v003"]
    );
    assert_eq!(rig.platform.attached(&app()), [gid(2), gid(3)]);
    assert_eq!(rig.routes().await, RouteTable::single(gid(3)));
}

#[tokio::test(start_paused = true)]
async fn keep_zero_drains_then_destroys_the_old_group() {
    let rig = rig(options().with_keep(0));
    rig.engine.deploy(&request("1")).await.unwrap();
    rig.events.lock().unwrap().clear();
    let started = tokio::time::Instant::now();
    let second = rig.engine.deploy(&request("2")).await.unwrap();
    assert_eq!(second.destroyed, vec![gid(1)]);
    assert!(second.kept_warm.is_empty());
    assert_eq!(rig.group_ids().await, ["web-production-v002"]);
    let events = rig.events.lock().unwrap().clone();
    let drain = events
        .iter()
        .position(|e| matches!(e, Event::Draining { .. }))
        .expect("the old group is drained");
    let destroyed = events
        .iter()
        .position(|e| matches!(e, Event::GroupDestroyed { group } if *group == gid(1)))
        .expect("the old group is destroyed");
    assert!(drain < destroyed, "drain comes before destroy");
    // the drain (5 s) and the boot (10 s) took virtual time
    assert!(started.elapsed() >= Duration::from_secs(15));
}

#[tokio::test(start_paused = true)]
async fn an_unhealthy_group_rolls_back_and_never_gets_traffic() {
    let rig = rig(options().with_health_timeout(Duration::from_secs(60)));
    rig.platform
        .set_behaviour("web:bad", Behaviour::NeverHealthy);
    rig.engine.deploy(&request("1")).await.unwrap();
    let before = rig.platform.route_history(&app());

    let e = rig.engine.deploy(&request("bad")).await.unwrap_err();
    assert_eq!(e.step(), Some(Step::WaitHealthy));
    assert_eq!(e.kind(), ErrorKind::Timeout);
    assert!(e.rolled_back());
    let text = e.to_string();
    assert!(text.contains("wait healthy failed (reverted)"), "{text}");
    assert!(
        text.contains("GET /health: 500"),
        "the cause is named: {text}"
    );

    assert_eq!(
        rig.platform.route_history(&app()),
        before,
        "no route change at all"
    );
    assert_eq!(rig.routes().await, RouteTable::single(gid(1)));
    assert_eq!(
        rig.group_ids().await,
        ["web-production-v001"],
        "the new group is destroyed"
    );
    let events = rig.events.lock().unwrap().clone();
    assert!(events.iter().any(|e| matches!(
        e,
        Event::Reverting {
            step: Step::WaitHealthy,
            ..
        }
    )));
    assert!(events.iter().any(|e| matches!(e, Event::Reverted { .. })));
}

#[tokio::test(start_paused = true)]
async fn keep_failed_keeps_the_failed_group_without_traffic() {
    let rig = rig(options()
        .with_health_timeout(Duration::from_secs(60))
        .with_keep_failed(true));
    rig.platform
        .set_behaviour("web:bad", Behaviour::NeverHealthy);
    rig.engine.deploy(&request("1")).await.unwrap();
    rig.engine.deploy(&request("bad")).await.unwrap_err();
    assert_eq!(
        rig.group_ids().await,
        ["web-production-v001", "web-production-v002"]
    );
    assert_eq!(rig.routes().await, RouteTable::single(gid(1)));
}

#[tokio::test(start_paused = true)]
async fn a_crashing_instance_fails_fast() {
    let rig = rig(options());
    rig.platform
        .set_behaviour("web:crash", Behaviour::CrashAfter(Duration::ZERO));
    let e = rig.engine.deploy(&request("crash")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unhealthy);
    assert!(e.to_string().contains("exited with status 101"), "{e}");
    assert!(rig.group_ids().await.is_empty());
    assert!(
        rig.routes().await.is_empty(),
        "a first deployment that fails routes nothing"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failing_verify_check_rolls_back_before_any_traffic() {
    let rig = rig(options());
    rig.engine.deploy(&request("1")).await.unwrap();
    let seen = Arc::new(Mutex::new(None));
    let check = check_fn("smoke", {
        let seen = seen.clone();
        move |t| {
            let seen = seen.clone();
            async move {
                *seen.lock().unwrap() = Some((
                    t.group.clone(),
                    t.weight,
                    t.instances.len(),
                    t.preview.clone(),
                ));
                Err("GET / answered 500".to_string())
            }
        }
    });
    let e = rig
        .engine
        .deploy(&request("2").verify(check))
        .await
        .unwrap_err();
    assert_eq!(e.step(), Some(Step::Verify));
    assert!(
        e.to_string()
            .contains("check `smoke` failed on web-production-v002: GET / answered 500"),
        "{e}"
    );
    let (group, weight, instances, preview) = seen.lock().unwrap().clone().unwrap();
    assert_eq!((group, weight, instances), (gid(2), 0, 3));
    assert!(
        preview.is_some(),
        "the memory router gives a preview address"
    );
    assert_eq!(rig.routes().await, RouteTable::single(gid(1)));
    assert_eq!(rig.group_ids().await, ["web-production-v001"]);
}

#[tokio::test(start_paused = true)]
async fn a_canary_moves_by_steps_with_bake_and_analysis() {
    let rig = rig(options());
    rig.engine.deploy(&request("1")).await.unwrap();
    let analysed = Arc::new(Mutex::new(Vec::new()));
    let check = check_fn("error budget", {
        let analysed = analysed.clone();
        move |t| {
            let analysed = analysed.clone();
            async move {
                analysed.lock().unwrap().push(t.weight);
                Ok(())
            }
        }
    });
    let started = tokio::time::Instant::now();
    rig.engine
        .deploy(
            &request("2")
                .strategy(Strategy::canary([10, 50], Duration::from_secs(60)))
                .analysis(check),
        )
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(120),
        "both bakes were waited"
    );
    let history = rig.platform.route_history(&app());
    let weights: Vec<u8> = history.iter().map(|t| t.weight(&gid(2))).collect();
    assert_eq!(weights, [0, 10, 50, 100]);
    assert_eq!(history[1].weight(&gid(1)), 90);
    assert_eq!(*analysed.lock().unwrap(), [10, 50]);
}

#[tokio::test(start_paused = true)]
async fn a_canary_over_its_error_budget_rolls_back() {
    let rig = rig(options());
    rig.platform
        .set_behaviour("web:flaky", Behaviour::ErrorRate(0.2));
    rig.engine.deploy(&request("1")).await.unwrap();
    let e = rig
        .engine
        .deploy(&request("flaky").strategy(
            Strategy::canary([10, 50], Duration::from_secs(30)).with_max_error_rate(0.05),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.step(), Some(Step::Promote));
    assert!(e.rolled_back());
    assert!(e.to_string().contains("20.0% > 5.0%"), "{e}");
    let history = rig.platform.route_history(&app());
    let last = history.last().unwrap();
    assert_eq!(
        *last,
        RouteTable::single(gid(1)),
        "traffic went back: {history:?}"
    );
    assert_eq!(
        history.iter().map(|t| t.weight(&gid(2))).max(),
        Some(10),
        "it never passed the first step"
    );
    assert_eq!(rig.group_ids().await, ["web-production-v001"]);
}

#[tokio::test(start_paused = true)]
async fn a_router_without_weights_gets_one_switch() {
    let rig = rig(options());
    rig.platform.without_weights();
    rig.engine.deploy(&request("1")).await.unwrap();
    rig.engine
        .deploy(&request("2").strategy(Strategy::canary([10, 50], Duration::from_secs(60))))
        .await
        .unwrap();
    let history = rig.platform.route_history(&app());
    assert_eq!(
        history,
        [RouteTable::single(gid(1)), RouteTable::single(gid(2))]
    );
    let events = rig.events.lock().unwrap().clone();
    assert!(events.iter().any(
        |e| matches!(e, Event::StrategyAdapted { reason } if reason.contains("cannot weigh"))
    ));
}

#[tokio::test(start_paused = true)]
async fn bad_requests_fail_clearly_with_zero_platform_calls() {
    type Make = Box<dyn Fn() -> Result<DeployRequest, bluegreen_core::Error>>;
    let base = || request("1");
    let cases: Vec<(&str, Make, &str)> = vec![
        (
            "empty app name",
            Box::new(|| {
                Ok(DeployRequest::new(
                    App::new("", "prod")?,
                    ImageSource::Reference("x".into()),
                ))
            }),
            "invalid app.name: must not be empty",
        ),
        (
            "bad environment",
            Box::new(|| {
                Ok(DeployRequest::new(
                    App::new("web", "Prod")?,
                    ImageSource::Reference("x".into()),
                ))
            }),
            "invalid app.environment",
        ),
        (
            "size 0",
            Box::new(move || Ok(base().size(0))),
            "invalid size: must be at least 1",
        ),
        (
            "size too big",
            Box::new(move || Ok(base().size(1_000_000))),
            "invalid size",
        ),
        (
            "empty source",
            Box::new(|| {
                Ok(DeployRequest::new(
                    app(),
                    ImageSource::Reference(" ".into()),
                ))
            }),
            "invalid source: must not be empty",
        ),
        (
            "source url",
            Box::new(|| {
                Ok(DeployRequest::new(
                    app(),
                    ImageSource::SourceUrl("ftp://x".into()),
                ))
            }),
            "invalid source",
        ),
        (
            "env name with =",
            Box::new(move || Ok(base().env("A=B", "1"))),
            "invalid env.A=B",
        ),
        (
            "p99 ratio below one",
            Box::new(move || Ok(base().strategy(Strategy::blue_green().with_max_p99_ratio(0.5)))),
            "invalid strategy.max_p99_ratio",
        ),
        (
            "error rate increase over one",
            Box::new(move || {
                Ok(base().strategy(Strategy::blue_green().with_max_error_rate_increase(1.5)))
            }),
            "invalid strategy.max_error_rate_increase",
        ),
        (
            "canary weight 100",
            Box::new(move || Ok(base().strategy(Strategy::canary([50, 100], Duration::ZERO)))),
            "invalid strategy.steps[1].weight",
        ),
        (
            "canary weights falling",
            Box::new(move || Ok(base().strategy(Strategy::canary([50, 20], Duration::ZERO)))),
            "does not grow",
        ),
        (
            "error rate above 1",
            Box::new(move || {
                Ok(
                    base()
                        .strategy(Strategy::canary([50], Duration::ZERO).with_max_error_rate(2.0)),
                )
            }),
            "invalid strategy.max_error_rate",
        ),
        (
            "two checks of one name",
            Box::new(move || {
                let c = || check_fn("smoke", |_| async { Ok(()) });
                Ok(base().verify(c()).verify(c()))
            }),
            "two checks have this name",
        ),
    ];
    let rig = rig(options());
    for (name, make, expected) in cases {
        let outcome = match make() {
            Err(e) => Err(e),
            Ok(r) => rig.engine.deploy(&r).await.map(|_| ()),
        };
        let e = outcome.expect_err(name);
        assert_eq!(e.kind(), ErrorKind::Invalid, "{name}: {e}");
        assert!(
            e.to_string().contains(expected),
            "{name}: `{e}` lacks `{expected}`"
        );
    }
    let bad_options = Engine::from_parts(rig.platform.parts())
        .with_options(options().with_health_timeout(Duration::ZERO));
    let e = bad_options.deploy(&request("1")).await.unwrap_err();
    assert!(
        e.to_string().contains("invalid options.health_timeout"),
        "{e}"
    );
    let e = rig
        .engine
        .promote(
            &app(),
            &GroupId::new("api-production-v001"),
            &Strategy::blue_green(),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("invalid group"), "{e}");
    let weights = RouteTable::weighted([(gid(1), 50), (gid(2), 60)]).unwrap_err();
    assert!(weights.to_string().contains("sum to 110"), "{weights}");
    assert_eq!(
        rig.platform.total_calls(),
        0,
        "{:?}",
        rig.platform.call_counts()
    );
}

#[tokio::test(start_paused = true)]
async fn promoting_an_unknown_group_changes_nothing() {
    let rig = rig(options());
    rig.engine.deploy(&request("1")).await.unwrap();
    let mutating = rig.platform.mutating_calls();
    let e = rig
        .engine
        .promote(&app(), &gid(7), &Strategy::blue_green())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(e.to_string().contains("web-production-v007"), "{e}");
    assert_eq!(rig.platform.mutating_calls(), mutating);
}

#[tokio::test(start_paused = true)]
async fn a_second_concurrent_deployment_is_locked() {
    let rig = rig(options());
    let one = request("1");
    let (a, b) = tokio::join!(rig.engine.deploy(&one), async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        rig.engine.deploy(&request("2")).await
    });
    a.unwrap();
    let e = b.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Locked, "{e}");
    assert!(
        e.to_string()
            .contains("web.production is locked by deployment d-"),
        "{e}"
    );
    // the lock is released at the end: a third deployment goes through
    rig.engine.deploy(&request("3")).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_deployment_may_wait_for_the_lock() {
    let rig = rig(options().with_lock_wait(Some(Duration::from_secs(300))));
    let one = request("1");
    let (a, b) = tokio::join!(rig.engine.deploy(&one), async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        rig.engine.deploy(&request("2")).await
    });
    assert_eq!(a.unwrap().live, gid(1));
    assert_eq!(b.unwrap().live, gid(2));
}

#[tokio::test(start_paused = true)]
async fn rollback_uses_the_warm_group() {
    let rig = rig(options());
    rig.engine.deploy(&request("1")).await.unwrap();
    rig.engine.deploy(&request("2")).await.unwrap();
    let launches = rig.platform.calls(Op::Launch);
    let started = tokio::time::Instant::now();
    let back = rig.engine.rollback(&app()).await.unwrap();
    assert_eq!(
        (back.from, back.to.clone(), back.relaunched),
        (gid(2), gid(1), false)
    );
    assert_eq!(rig.platform.calls(Op::Launch), launches, "nothing launched");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "no boot was waited for"
    );
    assert_eq!(rig.routes().await, RouteTable::single(gid(1)));
    // the group rolled back from stays warm
    assert_eq!(
        rig.group_ids().await,
        ["web-production-v001", "web-production-v002"]
    );
}

#[tokio::test(start_paused = true)]
async fn rollback_relaunches_the_previous_release_when_its_group_is_gone() {
    let rig = rig(options().with_keep(0));
    rig.engine
        .deploy(&request("1").env("COLOR", "blue"))
        .await
        .unwrap();
    rig.engine
        .deploy(&request("2").env("COLOR", "green"))
        .await
        .unwrap();
    assert_eq!(rig.group_ids().await, ["web-production-v002"]);
    let back = rig.engine.rollback(&app()).await.unwrap();
    assert_eq!(
        (back.from, back.to.clone(), back.relaunched),
        (gid(2), gid(3), true)
    );
    let groups = rig.platform.fleet().groups(&app()).await.unwrap();
    let live = groups.iter().find(|g| g.id == gid(3)).unwrap();
    assert_eq!(
        live.release.env["COLOR"], "blue",
        "the configuration is restored too"
    );
    assert_eq!(rig.routes().await, RouteTable::single(gid(3)));
    assert_eq!(rig.group_ids().await, ["web-production-v003"]);
}

#[tokio::test(start_paused = true)]
async fn rollback_without_a_previous_release_is_refused() {
    let rig = rig(options());
    let e = rig.engine.rollback(&app()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    assert!(e.to_string().contains("nothing to roll back"), "{e}");
    rig.engine.deploy(&request("1")).await.unwrap();
    let e = rig.engine.rollback(&app()).await.unwrap_err();
    assert!(e.to_string().contains("no older release"), "{e}");
}

/// The image of `group`, as the fleet reports it.
async fn image_of(rig: &Rig, group: &GroupId) -> bluegreen_core::ImageId {
    let groups = rig.platform.fleet().groups(&app()).await.unwrap();
    groups
        .into_iter()
        .find(|g| &g.id == group)
        .expect("the group exists")
        .release
        .image
}

#[tokio::test(start_paused = true)]
async fn rollback_to_an_image_goes_there_and_again_changes_nothing() {
    let rig = rig(options());
    for v in ["1", "2", "3"] {
        rig.engine
            .deploy(&request(v).env("COLOR", format!("c{v}")))
            .await
            .unwrap();
    }
    // v001 is gone (keep = 1): its release is v002's previous one
    assert_eq!(
        rig.group_ids().await,
        ["web-production-v002", "web-production-v003"]
    );
    let v1 = rig
        .engine
        .rollback_to(&app(), &image_of(&rig, &gid(2)).await)
        .await;
    let v1 = v1.unwrap();
    assert_eq!(
        (v1.from, v1.to.clone(), v1.relaunched),
        (gid(3), gid(2), false)
    );
    assert_eq!(rig.routes().await, RouteTable::single(gid(2)));

    // two releases back, to an image no group runs any more
    let first = {
        let groups = rig.platform.fleet().groups(&app()).await.unwrap();
        let v2 = groups.iter().find(|g| g.id == gid(2)).unwrap();
        v2.previous.clone().unwrap()
    };
    let back = rig.engine.rollback_to(&app(), &first.image).await.unwrap();
    assert_eq!(
        (back.from, back.to.clone(), back.relaunched),
        (gid(2), gid(4), true)
    );
    let groups = rig.platform.fleet().groups(&app()).await.unwrap();
    let live = groups.iter().find(|g| g.id == gid(4)).unwrap();
    assert_eq!(live.release, first, "the whole release comes back, env too");
    assert_eq!(live.release.env["COLOR"], "c1");

    // again: nothing moves, nothing launches
    let launches = rig.platform.calls(Op::Launch);
    let again = rig.engine.rollback_to(&app(), &first.image).await.unwrap();
    assert_eq!(
        (again.from, again.to, again.relaunched),
        (gid(4), gid(4), false)
    );
    assert_eq!(rig.platform.calls(Op::Launch), launches);
    assert_eq!(rig.routes().await, RouteTable::single(gid(4)));
}

#[tokio::test(start_paused = true)]
async fn rollback_to_an_unknown_image_changes_nothing() {
    let rig = rig(options());
    rig.engine.deploy(&request("1")).await.unwrap();
    rig.engine.deploy(&request("2")).await.unwrap();
    let before = (rig.routes().await, rig.group_ids().await);
    let unknown = bluegreen_core::ImageId::from("sha256:0000");
    let e = rig.engine.rollback_to(&app(), &unknown).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(e.to_string().contains("image sha256:0000"), "{e}");
    assert_eq!((rig.routes().await, rig.group_ids().await), before);
}

#[tokio::test(start_paused = true)]
async fn a_rollback_to_interrupted_after_the_switch_converges_when_run_again() {
    let rig = rig(options().with_keep(0));
    rig.engine.deploy(&request("1")).await.unwrap();
    rig.engine.deploy(&request("2")).await.unwrap();
    rig.engine.deploy(&request("3")).await.unwrap();
    let target = {
        let groups = rig.platform.fleet().groups(&app()).await.unwrap();
        groups[0].previous.clone().unwrap().image
    };
    // the retirement fails: v003 keeps running without traffic
    rig.platform
        .fail_nth(Op::Destroy, 1, Fault::Fatal("destroy refused".into()));
    let e = rig.engine.rollback_to(&app(), &target).await.unwrap_err();
    assert!(!e.rolled_back(), "{e}");
    assert_eq!(rig.routes().await, RouteTable::single(gid(4)));
    assert_eq!(
        rig.group_ids().await,
        ["web-production-v003", "web-production-v004"]
    );
    // a relative rollback now would go one release further; rollback_to finishes
    let again = rig.engine.rollback_to(&app(), &target).await.unwrap();
    assert_eq!((again.from, again.to), (gid(4), gid(4)));
    assert_eq!(rig.routes().await, RouteTable::single(gid(4)));
    assert_eq!(rig.group_ids().await, ["web-production-v004"]);
}

#[tokio::test(start_paused = true)]
async fn prepare_then_promote_by_hand() {
    let rig = rig(options());
    rig.engine.deploy(&request("1")).await.unwrap();
    let prepared = rig.engine.prepare(&request("2")).await.unwrap();
    assert_eq!(prepared.group.id, gid(2));
    assert_eq!(
        rig.routes().await,
        RouteTable::single(gid(1)),
        "prepare moves no traffic"
    );
    assert!(rig.platform.attached(&app()).contains(&gid(2)));
    let report = rig
        .engine
        .promote(&app(), &gid(2), &Strategy::blue_green())
        .await
        .unwrap();
    assert_eq!(report.live, gid(2));
    assert_eq!(report.previous, Some(gid(1)));
    assert_eq!(rig.routes().await, RouteTable::single(gid(2)));
}

#[tokio::test(start_paused = true)]
async fn deploying_the_live_release_again_changes_nothing() {
    let rig = rig(options());
    rig.engine.deploy(&request("1")).await.unwrap();
    let launches = rig.platform.calls(Op::Launch);
    let report = rig.engine.deploy(&request("1")).await.unwrap();
    assert!(report.unchanged);
    assert_eq!(report.live, gid(1));
    assert_eq!(rig.platform.calls(Op::Launch), launches);
}

#[tokio::test(start_paused = true)]
async fn a_failed_launch_call_rolls_back_with_the_step_named() {
    let rig = rig(options());
    rig.engine.deploy(&request("1")).await.unwrap();
    rig.platform.fail_nth(
        Op::Launch,
        1,
        Fault::Fatal("InsufficientInstanceCapacity".into()),
    );
    let e = rig.engine.deploy(&request("2")).await.unwrap_err();
    assert_eq!(e.step(), Some(Step::Launch));
    assert!(e.rolled_back());
    assert!(
        e.to_string().contains("InsufficientInstanceCapacity"),
        "{e}"
    );
    assert_eq!(rig.group_ids().await, ["web-production-v001"]);
    assert_eq!(rig.routes().await, RouteTable::single(gid(1)));
}

#[tokio::test(start_paused = true)]
async fn a_failed_switch_is_undone() {
    let rig = rig(options());
    rig.engine.deploy(&request("1")).await.unwrap();
    // the router says the group is ready (first read), the switch itself
    // succeeds, then the confirmation read fails for good
    rig.platform
        .fail_nth(Op::Serving, 2, Fault::Fatal("router unreachable".into()));
    let e = rig.engine.deploy(&request("2")).await.unwrap_err();
    assert_eq!(e.step(), Some(Step::Confirm));
    assert!(e.rolled_back(), "{e}");
    let history = rig.platform.route_history(&app());
    assert_eq!(
        history.last(),
        Some(&RouteTable::single(gid(1))),
        "{history:?}"
    );
    assert!(
        history.iter().any(|t| t.weight(&gid(2)) == 100),
        "the switch had happened"
    );
    assert_eq!(rig.group_ids().await, ["web-production-v001"]);
}

#[tokio::test(start_paused = true)]
async fn image_retention_keeps_the_newest_and_those_in_use() {
    let rig = rig(options()
        .with_retain_images(1)
        .with_keep(1)
        .with_health_timeout(Duration::from_secs(30)));
    for tag in ["bad-a", "bad-b"] {
        rig.platform
            .set_behaviour(&format!("web:{tag}"), Behaviour::NeverHealthy);
    }
    for tag in ["1", "bad-a", "2", "bad-b", "3"] {
        let _ = rig.engine.deploy(&request(tag)).await;
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
    let images = bluegreen_core::Image::images(&rig.platform.image(), &app())
        .await
        .unwrap();
    let mut origins: Vec<String> = images.iter().map(|i| i.origin.clone()).collect();
    origins.sort();
    // 3 is live and the newest; 2 is warm; 1 and 2 are the live group's history,
    // which a rollback may relaunch; the failed releases' images go
    assert_eq!(
        origins,
        ["reference web:1", "reference web:2", "reference web:3"]
    );
}

#[tokio::test(start_paused = true)]
async fn status_reports_groups_routes_and_health() {
    let rig = rig(options());
    rig.engine.deploy(&request("1")).await.unwrap();
    rig.engine.deploy(&request("2")).await.unwrap();
    rig.platform.kill_instance(&gid(1), 0).unwrap();
    let status = rig.engine.status(&app()).await.unwrap();
    assert_eq!(status.live().unwrap().group.id, gid(2));
    let ids: Vec<_> = status
        .groups
        .iter()
        .map(|g| (g.group.id.clone(), g.weight, g.healthy()))
        .collect();
    assert_eq!(ids, [(gid(2), 100, 3), (gid(1), 0, 2)]);
}
