use bluegreen_core::{
    App, ErrorKind, Fleet, Generation, GroupId, Image, Instance, RouteTable, Router,
};

use super::{clean, launch_test_group, poll_until, wait_healthy, Report, Settings, Sources};

const PART: &str = "router";

/// [`Router`] against two groups launched by `fleet`: see [`router_contract`].
pub async fn router_routes_and_attachments(
    image: &dyn Image,
    fleet: &dyn Fleet,
    router: &dyn Router,
    app: &App,
    sources: &Sources,
    settings: &Settings,
) -> Report {
    clean(fleet, router, app).await;
    let mut groups = Vec::new();
    for (n, source) in [&sources.good, &sources.other].into_iter().enumerate() {
        let generation = Generation(n as u32 + 1);
        let (_, group) = launch_test_group(image, fleet, app, source, generation, settings).await;
        let instances = wait_healthy(fleet, app, &group.id, settings.size, settings).await;
        groups.push((group.id, instances));
    }
    let b = groups.pop().expect("two groups");
    let a = groups.pop().expect("two groups");
    let report = router_contract_with(router, app, a, b, settings).await;
    clean(fleet, router, app).await;
    report
}

/// [`Router`]'s contract, for a router given two groups with reachable members:
/// an unknown app has no routes; routes to an unattached group are refused and
/// change nothing; attach is idempotent; a switch is read back as set; weights are
/// kept where the router weighs and refused where it does not; a group with traffic
/// cannot be detached; detach is idempotent. Waits for the router's health within
/// the default [`Settings`]' health timeout: see [`router_contract_with`].
pub async fn router_contract(
    router: &dyn Router,
    app: &App,
    a: (GroupId, Vec<Instance>),
    b: (GroupId, Vec<Instance>),
) -> Report {
    router_contract_with(router, app, a, b, &Settings::default()).await
}

/// [`router_contract`], waiting for the router to report members healthy within
/// `settings.health_timeout`, polling every `settings.poll_interval`.
pub async fn router_contract_with(
    router: &dyn Router,
    app: &App,
    a: (GroupId, Vec<Instance>),
    b: (GroupId, Vec<Instance>),
    settings: &Settings,
) -> Report {
    let mut report = Report::default();
    let (ga, ia) = a;
    let (gb, ib) = b;
    let caps = router.capabilities();
    router
        .set_routes(app, &RouteTable::empty())
        .await
        .expect("setting the empty table must succeed");
    for g in [&ga, &gb] {
        router
            .detach(app, g)
            .await
            .expect("detaching an unattached group must succeed");
    }
    assert!(
        router
            .routes(app)
            .await
            .expect("routes must read")
            .is_empty(),
        "an app without routes has the empty table"
    );
    report.pass(PART, "an app without routes has the empty table");

    let e = router
        .set_routes(app, &RouteTable::single(ga.clone()))
        .await
        .expect_err("routing to an unattached group must fail");
    assert_eq!(
        e.kind(),
        ErrorKind::NotFound,
        "routing to an unattached group: {e}"
    );
    assert!(
        router.routes(app).await.unwrap().is_empty(),
        "a refused table must change nothing"
    );
    let e = router
        .serving(app, &ga)
        .await
        .expect_err("serving of an unattached group must fail");
    assert_eq!(e.kind(), ErrorKind::NotFound);
    report.pass(
        PART,
        "routes to an unattached group are NotFound and change nothing; its serving is NotFound",
    );

    let attachment = router
        .attach(app, &ga, &ia)
        .await
        .expect("attach must succeed");
    router
        .attach(app, &ga, &ia)
        .await
        .expect("attaching again must succeed (idempotent)");
    report.pass(PART, "attach is idempotent");
    if caps.preview {
        assert!(
            attachment.preview.is_some(),
            "a router declaring previews must give one"
        );
        report.pass(PART, "an attachment has a preview address");
    } else {
        report.skip(
            PART,
            "an attachment has a preview address",
            "the router declares preview = false",
        );
    }
    router
        .attach(app, &gb, &ib)
        .await
        .expect("attach must succeed");

    let all_a = RouteTable::single(ga.clone());
    router
        .set_routes(app, &all_a)
        .await
        .expect("set_routes must succeed");
    router
        .set_routes(app, &all_a)
        .await
        .expect("setting the same table again must succeed");
    assert_eq!(
        router.routes(app).await.unwrap(),
        all_a,
        "routes must read back as set"
    );
    wait_serving(router, app, &ga, ia.len(), settings).await;
    report.pass(
        PART,
        "a table reads back as set, and the router reports every member of the group with traffic healthy",
    );

    let split = RouteTable::weighted([(ga.clone(), 90), (gb.clone(), 10)]).unwrap();
    if caps.weighted_routing {
        router
            .set_routes(app, &split)
            .await
            .expect("a weighted table must be accepted");
        assert_eq!(
            router.routes(app).await.unwrap(),
            split,
            "weights must read back as set"
        );
        report.pass(PART, "weights read back as set");
        report.skip(
            PART,
            "a split is refused as NotSupported and changes nothing",
            "the router declares weighted_routing = true",
        );
    } else {
        let e = router
            .set_routes(app, &split)
            .await
            .expect_err("a router without weights must refuse a split");
        assert_eq!(
            e.kind(),
            ErrorKind::NotSupported,
            "split on an unweighted router: {e}"
        );
        assert_eq!(
            router.routes(app).await.unwrap(),
            all_a,
            "a refused table must change nothing"
        );
        report.skip(
            PART,
            "weights read back as set",
            "the router declares weighted_routing = false",
        );
        report.pass(
            PART,
            "a split is refused as NotSupported and changes nothing",
        );
    }

    let e = router
        .detach(app, &ga)
        .await
        .expect_err("detaching a group with traffic must fail");
    assert_eq!(
        e.kind(),
        ErrorKind::Conflict,
        "detaching a group with traffic: {e}"
    );
    report.pass(PART, "a group with traffic cannot be detached (Conflict)");

    let all_b = RouteTable::single(gb.clone());
    router
        .set_routes(app, &all_b)
        .await
        .expect("switch must succeed");
    assert_eq!(
        router.routes(app).await.unwrap(),
        all_b,
        "the switch must read back"
    );
    wait_serving(router, app, &gb, ib.len(), settings).await;
    router
        .detach(app, &ga)
        .await
        .expect("detaching a group without traffic must succeed");
    router
        .detach(app, &ga)
        .await
        .expect("detaching again must succeed (idempotent)");
    let e = router
        .serving(app, &ga)
        .await
        .expect_err("serving of a detached group must fail");
    assert_eq!(e.kind(), ErrorKind::NotFound);

    router
        .set_routes(app, &RouteTable::empty())
        .await
        .expect("clearing must succeed");
    router.detach(app, &gb).await.expect("detach must succeed");
    report.pass(
        PART,
        "a switch reads back; detach is idempotent; a detached group's serving is NotFound",
    );
    report
}

/// Polls until the router reports every member of `group` healthy, within the
/// settings' health timeout.
async fn wait_serving(
    router: &dyn Router,
    app: &App,
    group: &GroupId,
    members: usize,
    settings: &Settings,
) {
    let deadline = tokio::time::Instant::now() + settings.health_timeout;
    loop {
        let s = router.serving(app, group).await.expect("serving must read");
        assert_eq!(s.total, members, "serving must count every attached member");
        if s.healthy == members {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the router did not report {group} healthy within {:?}: {s:?}",
            settings.health_timeout
        );
        tokio::time::sleep(settings.poll_interval).await;
    }
}

/// [`Router::serving`] never counts a member that is not healthy as healthy: a
/// group launched from `sources.never_healthy` is attached, and `serving` must
/// report it with every member counted and none healthy, on each of five reads
/// `settings.poll_interval` apart. The engine trusts `serving` before every traffic
/// increase and during a bake; a router that counts members from its attachment
/// alone, or reads a stale cache, would send traffic to members that cannot
/// answer. Skipped without a never-healthy source, or when its instances get no
/// address (then they cannot be attached).
pub async fn router_never_healthy_members(
    image: &dyn Image,
    fleet: &dyn Fleet,
    router: &dyn Router,
    app: &App,
    sources: &Sources,
    settings: &Settings,
) -> Report {
    let mut report = Report::default();
    let rule = "serving never counts a member that is not healthy as healthy";
    let Some(source) = &sources.never_healthy else {
        report.skip(PART, rule, "no never_healthy source was given");
        return report;
    };
    clean(fleet, router, app).await;
    let (_, group) = launch_test_group(image, fleet, app, source, Generation(1), settings).await;
    let size = settings.size as usize;
    let listed = |instances: &[Instance]| {
        instances.len() == size && instances.iter().all(|i| i.address.is_some())
    };
    let Ok(instances) = poll_until(fleet, app, &group.id, settings, listed).await else {
        report.skip(
            PART,
            rule,
            "the never-healthy source's instances got no address within the health timeout",
        );
        clean(fleet, router, app).await;
        return report;
    };
    router
        .attach(app, &group.id, &instances)
        .await
        .expect("attaching listed members with addresses must succeed");
    for read in 0..5 {
        let serving = router
            .serving(app, &group.id)
            .await
            .expect("serving of an attached group must succeed");
        assert_eq!(
            (serving.total, serving.healthy),
            (size, 0),
            "{rule}: read {read} of serving for a group whose members never become healthy \
             gives {} healthy of {} (expected 0 of {size})",
            serving.healthy,
            serving.total
        );
        tokio::time::sleep(settings.poll_interval).await;
    }
    report.pass(PART, rule);
    clean(fleet, router, app).await;
    report
}
