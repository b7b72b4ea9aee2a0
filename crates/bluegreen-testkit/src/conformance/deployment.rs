use std::sync::{Arc, Mutex};

use bluegreen_core::{
    App, DeployRequest, Engine, EngineOptions, ErrorKind, Event, EventSink, Fleet, Image,
    MemoryLock, RouteTable, Router,
};

use super::{clean, Report, Settings, Sources};

const PART: &str = "deployment";

/// A whole deployment through the [`Engine`]: deploy, deploy again with the first
/// group kept warm, an automatic rollback of a release that never becomes healthy
/// (where the provider can make one), a manual rollback, and clean-up.
pub async fn deployment_with_rollback(
    image: Arc<dyn Image>,
    fleet: Arc<dyn Fleet>,
    router: Arc<dyn Router>,
    app: &App,
    sources: &Sources,
    settings: &Settings,
) -> Report {
    let mut report = Report::default();
    clean(&*fleet, &*router, app).await;
    let shifted: Arc<Mutex<Vec<RouteTable>>> = Arc::default();
    let sink = EventSink::new({
        let shifted = shifted.clone();
        move |e: &Event| {
            if let Event::TrafficShifted { routes } = e {
                shifted.lock().unwrap().push(routes.clone());
            }
        }
    });
    let options = EngineOptions::default()
        .with_health_timeout(settings.health_timeout)
        .with_confirm_timeout(settings.health_timeout)
        .with_poll_interval(settings.poll_interval)
        .with_drain(settings.drain)
        .with_keep(1);
    // a lock table of its own: two suites in one test program (on two providers,
    // or on paused clocks of their own) never meet in the process's lock
    let engine = Engine::from_arcs(image.clone(), fleet.clone(), router.clone())
        .with_lock(Arc::new(MemoryLock::new()))
        .with_options(options)
        .with_events(sink);
    let request = |source: &bluegreen_core::ImageSource| {
        let mut r = DeployRequest::new(app.clone(), source.clone()).size(settings.size);
        r.settings = settings.release_settings.clone();
        r.env = settings.release_env.clone();
        r
    };

    let first = engine
        .deploy(&request(&sources.good))
        .await
        .unwrap_or_else(|e| panic!("the first deployment must succeed: {e}"));
    let first_group = fleet
        .groups(app)
        .await
        .unwrap()
        .into_iter()
        .find(|g| g.id == first.live)
        .expect("the live group is listed");
    assert_eq!(
        router.routes(app).await.unwrap(),
        RouteTable::single(first.live.clone()),
        "after a deployment the new group has all traffic"
    );
    report.pass(PART, "a first deployment gives the new group all traffic");
    let second = engine
        .deploy(&request(&sources.other))
        .await
        .unwrap_or_else(|e| panic!("the second deployment must succeed: {e}"));
    assert_eq!(second.previous.as_ref(), Some(&first.live));
    let groups_after_second = fleet.groups(app).await.unwrap().len();
    report.pass(PART, "a second deployment replaces the first");
    let warm = "keep = 1 keeps the previous group warm";
    if fleet.capabilities().warm_groups {
        assert_eq!(second.kept_warm, vec![first.live.clone()], "{warm}");
        assert_eq!(groups_after_second, 2, "{warm}");
        report.pass(PART, warm);
    } else {
        report.skip(PART, warm, "the fleet declares warm_groups = false");
    }

    // a fleet whose launch is the switch cannot keep traffic off a new group
    let launch_is_switch = fleet.capabilities().launch_is_switch;
    let revert = "a release that never becomes healthy is reverted, and traffic never moves to it";
    if launch_is_switch {
        report.skip(PART, revert, "the fleet declares launch_is_switch = true");
    } else if sources.never_healthy.is_none() {
        report.skip(PART, revert, "no never_healthy source was given");
    }
    if let Some(bad) = sources.never_healthy.as_ref().filter(|_| !launch_is_switch) {
        shifted.lock().unwrap().clear();
        let e = engine
            .deploy(&request(bad))
            .await
            .expect_err("a release that never becomes healthy must fail");
        assert!(
            matches!(e.kind(), ErrorKind::Timeout | ErrorKind::Unhealthy),
            "an unhealthy release fails as Timeout or Unhealthy: {e}"
        );
        assert!(e.rolled_back(), "an unhealthy release is rolled back: {e}");
        assert_eq!(
            router.routes(app).await.unwrap(),
            RouteTable::single(second.live.clone()),
            "after a rollback traffic stays on the old group"
        );
        assert!(
            shifted.lock().unwrap().is_empty(),
            "traffic never moves to an unhealthy group: {:?}",
            shifted.lock().unwrap()
        );
        assert_eq!(
            fleet.groups(app).await.unwrap().len(),
            groups_after_second,
            "the failed group is destroyed"
        );
        report.pass(PART, revert);
    }

    let back = engine
        .rollback(app)
        .await
        .unwrap_or_else(|e| panic!("a rollback to the previous release must succeed: {e}"));
    if fleet.capabilities().warm_groups {
        assert_eq!(
            back.to, first.live,
            "rollback goes to the previous release's warm group"
        );
        assert!(!back.relaunched, "a healthy warm group is reused");
    } else {
        assert!(
            back.relaunched,
            "without warm groups, rollback relaunches the previous release"
        );
    }
    assert_eq!(
        router.routes(app).await.unwrap(),
        RouteTable::single(back.to.clone())
    );
    let live = fleet
        .groups(app)
        .await
        .unwrap()
        .into_iter()
        .find(|g| g.id == back.to);
    assert_eq!(
        live.map(|g| g.release),
        Some(first_group.release.clone()),
        "the rollback runs the first release again, image and configuration"
    );
    report.pass(
        PART,
        if fleet.capabilities().warm_groups {
            "rollback reuses the previous release's warm group, image and configuration"
        } else {
            "rollback relaunches the previous release, image and configuration"
        },
    );
    clean(&*fleet, &*router, app).await;
    for img in image.images(app).await.unwrap() {
        image
            .remove(app, &img.id)
            .await
            .expect("remove must succeed");
    }
    report
}
