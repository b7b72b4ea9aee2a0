use bluegreen_core::{DeployRequest, Engine, ErrorKind, Fleet, Router};

use crate::support;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_without_our_marks_survive_everything() {
    let emu = support::emulator().await;
    let app = support::app("shop");
    // a look-alike of v002, an app holding another domain, an app with marks of
    // another bluegreen app
    emu.add_foreign_app("shop-test-v002", &[("DATABASE_URL", "postgres://x")], None);
    emu.add_foreign_app("marketing", &[("A", "1")], Some("www.example.org"));
    emu.add_foreign_app(
        "shop-test-v009",
        &[
            ("BLUEGREEN_OWNER", "bluegreen"),
            ("BLUEGREEN_APP", "other"),
            ("BLUEGREEN_ENVIRONMENT", "test"),
        ],
        None,
    );
    let before: Vec<_> = ["shop-test-v002", "marketing", "shop-test-v009"]
        .iter()
        .map(|n| (n.to_string(), emu.config(n), emu.domains(n)))
        .collect();
    let (image, fleet, router) = support::app_mode(&emu, &app);
    let engine = Engine::new(image, fleet.clone(), router.clone())
        .with_options(support::engine_options().with_keep(0))
        .with_retry(support::retry());
    let sources = support::sources();
    let v1 = engine
        .deploy(&DeployRequest::new(app.clone(), sources.good.clone()).size(1))
        .await
        .unwrap();
    assert_eq!(v1.live.as_str(), "shop-test-v001");
    assert_eq!(
        fleet.groups(&app).await.unwrap().len(),
        1,
        "foreign apps are never listed"
    );
    // v002's name is taken by an app that is not ours: refused, left alone
    let e = engine
        .deploy(&DeployRequest::new(app.clone(), sources.other.clone()).size(1))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    assert!(e.rolled_back());
    fleet.destroy(&app, &"shop-test-v002".into()).await.unwrap();
    fleet.destroy(&app, &"shop-test-v009".into()).await.unwrap();
    router.detach(&app, &"shop-test-v002".into()).await.unwrap();
    assert!(fleet
        .instances(&app, &"shop-test-v002".into())
        .await
        .is_err());
    bluegreen_testkit::conformance::clean(&fleet, &router, &app).await;
    for (name, config, domains) in before {
        assert_eq!(emu.config(&name), config, "{name} is untouched");
        assert_eq!(emu.domains(&name), domains, "{name} keeps its domains");
    }
    assert!(!emu.app_names().contains(&"shop-test-v001".to_owned()));
}
