use bluegreen_core::{DeployRequest, Engine, ErrorKind, Fleet, Router};
use serde_json::json;

use crate::support::{self, Emulator};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_without_our_marks_survive_everything() {
    let emu = Emulator::start().await;
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

/// The validator itself: it must refuse what the schema refuses, so that a passing
/// emulator means something.
#[test]
fn the_schema_validator_refuses_mismatches() {
    let Some(schema) = support::schema::load() else {
        return;
    };
    assert!(schema
        .check_request("POST", "/apps", Some(&json!({ "name": "ok-name" })))
        .is_ok());
    assert!(schema
        .check_request("POST", "/apps", Some(&json!({ "name": "Bad_Name" })))
        .is_err());
    assert!(schema
        .check_request(
            "POST",
            "/apps/x/releases",
            Some(&json!({ "description": "no slug" }))
        )
        .is_err());
    assert!(schema
        .check_request(
            "POST",
            "/apps/x/releases",
            Some(&json!({ "release": "01234567-89ab-cdef-0123-456789abcdef" }))
        )
        .is_ok());
    assert!(schema
        .check_request("PATCH", "/apps/x/config-vars", Some(&json!({ "A-B": "1" })))
        .is_err());
    assert!(schema.check_request("GET", "/nothing/here", None).is_err());
    assert!(schema
        .check_response("GET", "/apps/x/dynos", &json!([{ "name": "web.1" }]))
        .is_err());
    assert!(schema
        .check_response("GET", "/apps/x/config-vars", &json!({ "A": "1" }))
        .is_ok());
}
