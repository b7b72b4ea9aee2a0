use std::sync::Arc;

use bluegreen_testkit::conformance;

use crate::support;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_mode_conforms() {
    let emu = support::emulator().await;
    let app = support::app("conformance");
    let (image, fleet, router) = support::app_mode(&emu, &app);
    conformance::run_all(
        Arc::new(image),
        Arc::new(fleet),
        Arc::new(router),
        &app,
        &support::sources(),
        &support::settings(),
    )
    .await;
    let left: Vec<String> = emu
        .app_names()
        .into_iter()
        .filter(|n| !n.ends_with("--slugs"))
        .collect();
    assert!(
        left.is_empty(),
        "the suite cleans up its group apps: {left:?}"
    );
    emu.assert_schema_clean();
}

/// Release mode: one app runs one release, so an older group is never warm and a
/// rollback relaunches it (see docs/paas.md); the suite is told so. A launch is the
/// switch there (no traffic-free verification), so the suite's "an unhealthy release
/// never gets traffic" check cannot hold and is not asked for; `engine.rs` checks the
/// automatic rollback of a crashing release in this mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_mode_conforms() {
    let emu = support::emulator().await;
    let app = // another app than app mode's: the two run at once in this process, and the
    // suite's deployments take the process's lock
    support::app("conformance-rel");
    let (image, fleet, router) = support::release_mode(&emu);
    let sources = support::sources();
    let settings = support::settings();
    conformance::image_prepare_list_remove(&image, &app, &sources.good).await;
    conformance::fleet_missing_resources(&fleet, &app).await;
    conformance::fleet_launch_list_destroy(&image, &fleet, &app, &sources.good, &settings).await;
    conformance::router_routes_and_attachments(&image, &fleet, &router, &app, &sources, &settings)
        .await;
    let healthy_only = conformance::Sources {
        never_healthy: None,
        ..sources
    };
    conformance::deployment_with_rollback(
        std::sync::Arc::new(image),
        std::sync::Arc::new(fleet),
        std::sync::Arc::new(router),
        &app,
        &healthy_only,
        &settings,
    )
    .await;
    emu.assert_schema_clean();
}
