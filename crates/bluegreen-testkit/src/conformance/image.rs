use bluegreen_core::{App, EventSink, Image, ImageSource};

/// [`Image`]: prepare, list and remove, with idempotent removal.
pub async fn image_prepare_list_remove(image: &dyn Image, app: &App, source: &ImageSource) {
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
}
