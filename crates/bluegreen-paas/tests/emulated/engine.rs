use std::sync::{Arc, Mutex};

use bluegreen_core::{
    DeployRequest, Engine, ErrorKind, Event, EventSink, Fleet, Image, ImageSource, RouteTable,
    Router,
};

use crate::support;

type Moves = Arc<Mutex<Vec<(String, Option<String>)>>>;

fn request(app: &bluegreen_core::App, source: &ImageSource) -> DeployRequest {
    DeployRequest::new(app.clone(), source.clone()).size(2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_mode_deploy_rollback_and_retention() {
    let emu = support::emulator().await;
    let app = support::app("web");
    let (image, fleet, router) = support::app_mode(&emu, &app);
    let moved: Moves = Arc::default();
    let router = router.with_dns({
        let moved = moved.clone();
        move |_: &bluegreen_core::App, host: &str, target: Option<&str>| {
            moved
                .lock()
                .unwrap()
                .push((host.to_owned(), target.map(str::to_owned)));
            Ok(())
        }
    });
    let engine = Engine::new(image.clone(), fleet.clone(), router.clone())
        .with_options(support::engine_options().with_keep(1).with_retain_images(1))
        .with_retry(support::retry());
    let sources = support::sources();

    let v1 = engine.deploy(&request(&app, &sources.good)).await.unwrap();
    assert_eq!(v1.live.as_str(), "web-test-v001");
    assert_eq!(emu.domains("web-test-v001"), vec![support::domain(&app)]);
    assert_eq!(emu.maintenance("web-test-v001"), Some(false));
    let v2 = engine.deploy(&request(&app, &sources.other)).await.unwrap();
    assert_eq!(v2.kept_warm, vec![v1.live.clone()]);
    assert!(emu.domains("web-test-v001").is_empty());
    assert_eq!(emu.domains("web-test-v002"), vec![support::domain(&app)]);
    assert_eq!(
        moved.lock().unwrap().len(),
        2,
        "the DNS hook hears every move"
    );
    assert!(moved
        .lock()
        .unwrap()
        .iter()
        .all(|(_, t)| t.as_deref().is_some_and(|t| t.ends_with(".herokudns.com"))));

    // a release that crashes is rolled back before it gets traffic
    let e = engine
        .deploy(&request(&app, sources.never_healthy.as_ref().unwrap()))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unhealthy, "{e}");
    assert!(e.rolled_back());
    assert!(!emu.app_names().contains(&"web-test-v003".to_owned()));
    assert_eq!(
        router.routes(&app).await.unwrap(),
        RouteTable::single(v2.live.clone())
    );

    // rollback to the warm group: no new app
    let back = engine.rollback(&app).await.unwrap();
    assert_eq!(back.to, v1.live);
    assert!(!back.relaunched);
    assert_eq!(emu.domains("web-test-v001"), vec![support::domain(&app)]);

    // retention: images beyond one are forgotten, except those of kept groups
    // the failed v003 was destroyed, so its generation is launched again
    let v4 = engine
        .deploy(&request(
            &app,
            &ImageSource::Artifact(support::tarball("app v4")),
        ))
        .await
        .unwrap();
    assert_eq!(v4.live.as_str(), "web-test-v003");
    assert_eq!(v4.destroyed, vec![v2.live.clone()]);
    let mut images: Vec<_> = image
        .images(&app)
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    let mut in_use: Vec<_> = fleet
        .groups(&app)
        .await
        .unwrap()
        .into_iter()
        .map(|g| g.release.image)
        .collect();
    images.sort();
    in_use.sort();
    assert_eq!(
        images, in_use,
        "only the images of the live and the warm group are left"
    );
    assert_eq!(
        v4.images_removed.len(),
        2,
        "the crashed and the destroyed group's images: {v4:?}"
    );
    let mut names = emu.app_names();
    names.sort();
    assert_eq!(
        names,
        vec!["web-test--slugs", "web-test-v001", "web-test-v003"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_mode_deploy_rollback_and_retention() {
    let emu = support::emulator().await;
    let app = support::app("api");
    let (image, fleet, router) = support::release_mode(&emu);
    let engine = Engine::new(image.clone(), fleet.clone(), router.clone())
        .with_options(support::engine_options().with_keep(1).with_retain_images(1))
        .with_retry(support::retry());
    let sources = support::sources();

    let v1 = engine.deploy(&request(&app, &sources.good)).await.unwrap();
    assert_eq!(
        emu.maintenance("api-test"),
        Some(false),
        "the first switch ends maintenance"
    );
    let v2 = engine.deploy(&request(&app, &sources.other)).await.unwrap();
    assert_eq!(
        router.routes(&app).await.unwrap(),
        RouteTable::single(v2.live.clone())
    );
    assert_eq!(
        emu.config("api-test").unwrap()["BLUEGREEN_GROUP"],
        v2.live.as_str()
    );

    // a crashing release is put back with the platform's rollback
    let before = emu.release_count("api-test");
    let e = engine
        .deploy(&request(&app, sources.never_healthy.as_ref().unwrap()))
        .await
        .unwrap_err();
    assert!(e.rolled_back(), "{e}");
    assert_eq!(
        router.routes(&app).await.unwrap(),
        RouteTable::single(v2.live.clone())
    );
    assert!(emu.release_count("api-test") > before);
    assert_eq!(
        emu.config("api-test").unwrap()["BLUEGREEN_GROUP"],
        v2.live.as_str()
    );
    assert_eq!(
        fleet.groups(&app).await.unwrap().len(),
        2,
        "the failed group is forgotten"
    );

    // rollback launches the previous release again: one app runs one release
    let back = engine.rollback(&app).await.unwrap();
    assert!(back.relaunched);
    let groups = fleet.groups(&app).await.unwrap();
    let live = groups.iter().find(|g| g.id == back.to).unwrap();
    let first = groups.iter().find(|g| g.id == v1.live);
    assert_eq!(
        live.release.image,
        first
            .map(|g| g.release.image.clone())
            .unwrap_or_else(|| live.release.image.clone())
    );
    assert_eq!(
        router.routes(&app).await.unwrap(),
        RouteTable::single(back.to.clone())
    );
    let instances = fleet.instances(&app, &back.to).await.unwrap();
    assert_eq!(instances.len(), 2);
    assert!(instances.iter().all(|i| i.health.is_healthy()));
    assert!(image.images(&app).await.unwrap().len() <= 3);
    let mut names = emu.app_names();
    names.sort();
    assert_eq!(names, vec!["api-test", "api-test--slugs"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_url_builds_stream_their_output() {
    let emu = support::emulator().await;
    let app = support::app("built");
    let (image, fleet, router) = support::app_mode(&emu, &app);
    let lines: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = EventSink::new({
        let lines = lines.clone();
        move |e: &Event| {
            if let Event::BuildOutput { line } = e {
                lines.lock().unwrap().push(line.clone());
            }
        }
    });
    let engine = Engine::new(image.clone(), fleet, router)
        .with_options(support::engine_options())
        .with_events(sink);
    let url = "https://sources.example.com/app-v1.tgz".to_owned();
    let report = engine
        .deploy(&request(&app, &ImageSource::SourceUrl(url.clone())))
        .await
        .unwrap();
    assert_eq!(report.live.as_str(), "built-test-v001");
    assert!(
        lines.lock().unwrap().iter().any(|l| l.contains(&url)),
        "{:?}",
        lines.lock().unwrap()
    );
    let images = image.images(&app).await.unwrap();
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].origin, format!("source {url}"));
    assert!(
        emu.log()
            .iter()
            .any(|l| l == "PATCH /apps/built-test--slugs/formation/web"),
        "the control app is scaled back to zero after a build"
    );
    let e = image
        .prepare(
            &app,
            &ImageSource::SourceUrl("https://sources.example.com/fail.tgz".into()),
            &EventSink::none(),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("failed"), "{e}");
    let e = image
        .prepare(
            &app,
            &ImageSource::Reference("web:latest".into()),
            &EventSink::none(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotSupported);
    let e = image
        .prepare(
            &app,
            &ImageSource::Artifact("/nonexistent/slug.tgz".into()),
            &EventSink::none(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
}
