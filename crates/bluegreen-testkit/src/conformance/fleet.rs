use bluegreen_core::{
    App, ErrorKind, EventSink, Fleet, Generation, Group, GroupId, Health, Image, ImageSource,
    Instance,
};

use super::{
    launch_test_group, poll_instances, remove_groups, test_group, wait_healthy, Report, Settings,
};

const PART: &str = "fleet";

/// [`Fleet`]: a missing group's instances are `NotFound`; destroying it succeeds.
pub async fn fleet_missing_resources(fleet: &dyn Fleet, app: &App) -> Report {
    let mut report = Report::default();
    let missing = Group::id_for(app, Generation(999));
    let e = fleet
        .instances(app, &missing)
        .await
        .expect_err("instances of a missing group must fail");
    assert_eq!(
        e.kind(),
        ErrorKind::NotFound,
        "instances of a missing group: {e}"
    );
    fleet
        .destroy(app, &missing)
        .await
        .expect("destroying a missing group must succeed (idempotent)");
    report.pass(
        PART,
        "a missing group's instances are NotFound, and destroying it succeeds",
    );
    report
}

/// [`Fleet`]: launch is idempotent and keeps the group's record, `groups` lists it,
/// instances become healthy, a conflicting record is refused, destroy is idempotent.
pub async fn fleet_launch_list_destroy(
    image: &dyn Image,
    fleet: &dyn Fleet,
    app: &App,
    source: &ImageSource,
    settings: &Settings,
) -> Report {
    let mut report = Report::default();
    remove_groups(fleet, app).await;
    let img = image
        .prepare(app, source, &EventSink::none())
        .await
        .expect("prepare must succeed");
    let mut group = test_group(app, Generation(1), img.id.clone(), settings);
    group.release = group.release.with_env("BLUEGREEN_CONFORMANCE", "1");
    let release = group.release.clone();
    fleet.launch(&group).await.expect("launch must succeed");
    fleet
        .launch(&group)
        .await
        .expect("launching the same group again must succeed (idempotent)");
    let listed = fleet.groups(app).await.expect("groups must list");
    assert_eq!(
        listed,
        vec![group.clone()],
        "groups must give the launched group back unchanged"
    );

    let instances = wait_healthy(fleet, app, &group.id, settings.size, settings).await;
    assert_eq!(
        instances.len(),
        settings.size as usize,
        "launching twice must not start more than `size` instances"
    );
    assert!(
        instances.iter().all(|i| i.address.is_some()),
        "healthy instances must have an address: {instances:?}"
    );
    report.pass(
        PART,
        "launch is idempotent, groups gives the group back unchanged, and its size of instances become healthy",
    );

    let mut conflicting = group.clone();
    conflicting.release = release.clone().with_env("BLUEGREEN_CONFORMANCE", "2");
    let e = fleet
        .launch(&conflicting)
        .await
        .expect_err("launching an existing group id with another release must fail");
    assert_eq!(e.kind(), ErrorKind::Conflict, "conflicting launch: {e}");
    report.pass(
        PART,
        "launching an existing group id with another release is Conflict",
    );

    let other_app = App::new(
        format!("{}x", &app.name()[..app.name().len().min(29)]),
        app.environment(),
    )
    .expect("a valid app name");
    assert!(
        fleet
            .groups(&other_app)
            .await
            .expect("groups must list")
            .is_empty(),
        "groups(other app) must not list this app's group"
    );
    fleet
        .destroy(&other_app, &GroupId::new(group.id.as_str()))
        .await
        .expect("destroy by another app must succeed and do nothing");
    assert_eq!(
        fleet.groups(app).await.unwrap().len(),
        1,
        "destroy by another app must not destroy"
    );
    report.pass(
        PART,
        "another app neither lists nor destroys the group (the call succeeds)",
    );

    fleet
        .destroy(app, &group.id)
        .await
        .expect("destroy must succeed");
    fleet
        .destroy(app, &group.id)
        .await
        .expect("destroying again must succeed (idempotent)");
    assert!(
        fleet.groups(app).await.unwrap().is_empty(),
        "a destroyed group must not be listed"
    );
    let e = fleet
        .instances(app, &group.id)
        .await
        .expect_err("instances of a destroyed group must fail");
    assert_eq!(e.kind(), ErrorKind::NotFound);
    let _ = image.remove(app, &img.id).await;
    report.pass(
        PART,
        "destroy is idempotent; a destroyed group is not listed and its instances are NotFound",
    );
    report
}

/// [`Fleet::scale`]: a fleet that declares
/// [`scaling`](bluegreen_core::FleetCapabilities::scaling) scales a group in to one
/// instance and back to its release's size (the new instances become healthy),
/// idempotently, keeping the group's record, and a missing group is `NotFound`;
/// one that does not declare it refuses with `NotSupported`. A wrapper that forwards `capabilities()` but not `scale` (a
/// defaulted method) fails here rather than at a deployment's retirement.
pub async fn fleet_scale(
    image: &dyn Image,
    fleet: &dyn Fleet,
    app: &App,
    source: &ImageSource,
    settings: &Settings,
) -> Report {
    let mut report = Report::default();
    let missing = Group::id_for(app, Generation(998));
    if !fleet.capabilities().scaling {
        let e = fleet
            .scale(app, &missing, 1)
            .await
            .expect_err("scale on a fleet that does not declare scaling must fail");
        assert_eq!(
            e.kind(),
            ErrorKind::NotSupported,
            "scale on a fleet that does not declare scaling: {e}"
        );
        report.pass(
            PART,
            "a fleet that does not declare scaling refuses scale with NotSupported",
        );
        report.skip(
            PART,
            "scale changes a group's instances, idempotently, keeping its record",
            "the fleet declares scaling = false",
        );
        return report;
    }
    let e = fleet
        .scale(app, &missing, 1)
        .await
        .expect_err("scaling a missing group must fail");
    assert_eq!(
        e.kind(),
        ErrorKind::NotFound,
        "scaling a missing group: {e}"
    );
    report.pass(PART, "scaling a missing group is NotFound");

    let full = settings.size;
    if full < 2 {
        report.skip(
            PART,
            "scale changes a group's instances, idempotently, keeping its record",
            "settings.size is 1: scaling in and back needs a size of 2 or more",
        );
        return report;
    }
    remove_groups(fleet, app).await;
    let (img, group) = launch_test_group(image, fleet, app, source, Generation(1), settings).await;
    wait_healthy(fleet, app, &group.id, full, settings).await;

    scale_twice(fleet, &group, 1, settings).await;
    report.pass(
        PART,
        "scaling in twice leaves one instance, and the record is unchanged",
    );
    scale_twice(fleet, &group, full, settings).await;
    report.pass(
        PART,
        "scaling back to the full size twice starts the missing instances once, they become healthy, and the record is unchanged",
    );

    fleet
        .destroy(app, &group.id)
        .await
        .expect("destroy must succeed");
    let _ = image.remove(app, &img).await;
    report
}

/// Scales `group` to `size` twice (idempotent), waits until it lists exactly `size`
/// instances, all healthy, and checks that its record did not change.
async fn scale_twice(fleet: &dyn Fleet, group: &Group, size: u32, settings: &Settings) {
    let (app, id) = (&group.app, &group.id);
    for _ in 0..2 {
        fleet
            .scale(app, id, size)
            .await
            .unwrap_or_else(|e| panic!("scaling {id} to {size} must succeed: {e}"));
    }
    let exactly = |instances: &[Instance]| {
        instances.len() == size as usize && instances.iter().all(|i| i.health == Health::Healthy)
    };
    poll_instances(
        fleet,
        app,
        id,
        settings,
        exactly,
        &format!("run exactly {size} healthy instances after scale"),
    )
    .await;
    assert_eq!(
        fleet.groups(app).await.expect("groups must list"),
        vec![group.clone()],
        "scaling {id} to {size} must keep the group's record unchanged (release.size stays the full size)"
    );
}
