use bluegreen_core::{App, ErrorKind, EventSink, Fleet, Generation, Image, ImageSource};

use super::{launch_test_group, remove_groups, wait_healthy, Report, Settings};

const PART: &str = "image";

/// [`Image`]: prepare, list and remove, with idempotent removal.
pub async fn image_prepare_list_remove(
    image: &dyn Image,
    app: &App,
    source: &ImageSource,
) -> Report {
    let mut report = Report::default();
    let prepared = image
        .prepare(app, source, &EventSink::none())
        .await
        .unwrap_or_else(|e| panic!("prepare({source}) must succeed: {e}"));
    assert_eq!(&prepared.app, app, "a prepared image belongs to its app");
    let again = image
        .prepare(app, source, &EventSink::none())
        .await
        .unwrap_or_else(|e| panic!("preparing the same source twice must succeed: {e}"));
    let listed = image.images(app).await.expect("images must list");
    assert!(
        listed.iter().any(|i| i.id == prepared.id) && listed.iter().any(|i| i.id == again.id),
        "images(app) must list a prepared image: {listed:?}"
    );
    report.pass(
        PART,
        "prepare is idempotent, and images lists what it prepared",
    );
    let other = App::new(
        format!("{}x", &app.name()[..app.name().len().min(29)]),
        app.environment(),
    )
    .expect("a valid app name");
    assert!(
        image
            .images(&other)
            .await
            .expect("images must list")
            .iter()
            .all(|i| i.id != prepared.id),
        "images(other app) must not list this app's image"
    );
    image
        .remove(&other, &prepared.id)
        .await
        .expect("remove by another app must succeed and leave the image alone");
    assert!(
        image
            .images(app)
            .await
            .unwrap()
            .iter()
            .any(|i| i.id == prepared.id),
        "remove by another app must not remove the image"
    );
    report.pass(
        PART,
        "another app neither lists nor removes the image (the call succeeds)",
    );
    for id in [&prepared.id, &again.id] {
        image.remove(app, id).await.expect("remove must succeed");
    }
    image
        .remove(app, &prepared.id)
        .await
        .expect("removing a missing image must succeed (idempotent)");
    assert!(
        image
            .images(app)
            .await
            .unwrap()
            .iter()
            .all(|i| i.id != prepared.id),
        "a removed image must not be listed"
    );
    report.pass(
        PART,
        "remove is idempotent, and a removed image is not listed",
    );
    report
}

/// [`Image::remove`] of an image that a running instance uses is
/// [`Conflict`](bluegreen_core::Error::Conflict) and removes nothing; once its group
/// is destroyed, the image is removed. Skipped when the image provider declares
/// [`ImageCapabilities::refuses_removal_in_use`](bluegreen_core::ImageCapabilities)
/// false. Destroys every group of `app` first.
pub async fn image_in_use(
    image: &dyn Image,
    fleet: &dyn Fleet,
    app: &App,
    source: &ImageSource,
    settings: &Settings,
) -> Report {
    let mut report = Report::default();
    let rule = "removing an image a running instance uses is Conflict and removes nothing";
    if !image.capabilities().refuses_removal_in_use {
        report.skip(
            PART,
            rule,
            "the image provider declares refuses_removal_in_use = false",
        );
        return report;
    }
    remove_groups(fleet, app).await;
    let (img, group) = launch_test_group(image, fleet, app, source, Generation(1), settings).await;
    wait_healthy(fleet, app, &group.id, settings.size, settings).await;
    let e = image.remove(app, &img).await.expect_err(
        "removing an image that a running instance uses must fail (Image::remove: Conflict)",
    );
    assert_eq!(
        e.kind(),
        ErrorKind::Conflict,
        "removing an image that a running instance uses: {e}"
    );
    assert!(
        image
            .images(app)
            .await
            .expect("images must list")
            .iter()
            .any(|i| i.id == img),
        "a refused removal must leave the image listed"
    );
    let instances = fleet
        .instances(app, &group.id)
        .await
        .expect("instances must list");
    assert_eq!(
        instances.len(),
        settings.size as usize,
        "a refused removal must leave the group's instances running: {instances:?}"
    );
    report.pass(PART, rule);
    fleet
        .destroy(app, &group.id)
        .await
        .expect("destroy must succeed");
    image
        .remove(app, &img)
        .await
        .unwrap_or_else(|e| panic!("an image no instance uses any more must be removed: {e}"));
    assert!(
        image
            .images(app)
            .await
            .expect("images must list")
            .iter()
            .all(|i| i.id != img),
        "a removed image must not be listed"
    );
    report.pass(PART, "once no instance uses it, the image is removed");
    report
}
