use bluegreen_core::{
    App, DeploymentId, ErrorKind, EventSink, Fleet, Generation, Group, GroupId, Image, ImageSource,
    Release,
};

use super::{wait_healthy, Settings};

/// [`Fleet`]: a missing group's instances are `NotFound`; destroying it succeeds.
pub async fn fleet_missing_resources(fleet: &dyn Fleet, app: &App) {
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
}

/// [`Fleet`]: launch is idempotent and keeps the group's record, `groups` lists it,
/// instances become healthy, a conflicting record is refused, destroy is idempotent.
pub async fn fleet_launch_list_destroy(
    image: &dyn Image,
    fleet: &dyn Fleet,
    app: &App,
    source: &ImageSource,
    settings: &Settings,
) {
    for g in fleet.groups(app).await.expect("groups must list") {
        fleet
            .destroy(app, &g.id)
            .await
            .expect("destroy must succeed");
    }
    let img = image
        .prepare(app, source, &EventSink::none())
        .await
        .expect("prepare must succeed");
    let mut release = Release::new(img.id.clone(), settings.size);
    release.settings = settings.release_settings.clone();
    release.env = settings.release_env.clone();
    let release = release.with_env("BLUEGREEN_CONFORMANCE", "1");
    let group = Group::new(
        app.clone(),
        Generation(1),
        release.clone(),
        DeploymentId::new("d-conformance"),
        None,
    );
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

    let mut conflicting = group.clone();
    conflicting.release = release.clone().with_env("BLUEGREEN_CONFORMANCE", "2");
    let e = fleet
        .launch(&conflicting)
        .await
        .expect_err("launching an existing group id with another release must fail");
    assert_eq!(e.kind(), ErrorKind::Conflict, "conflicting launch: {e}");

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
}
