//! A deployment dropped at every request it makes (before the platform acts, and
//! after it acted but before it answered), then run again: it converges, and leaves
//! no stray app.

use std::sync::Arc;
use std::time::Duration;

use bluegreen_core::{App, DeployRequest, Engine, Fleet, Image, MemoryLock, RouteTable, Router};

use crate::support::{self, Emulator, Hang};

type Providers = (Arc<dyn Image>, Arc<dyn Fleet>, Arc<dyn Router>);

async fn interrupted_everywhere(
    mode: impl Fn(&Emulator, &App) -> Providers,
    expected_apps: &[&str],
    step: u64,
) {
    let app = support::app("web");
    let sources = support::sources();
    let v1 = DeployRequest::new(app.clone(), sources.good.clone()).size(2);
    let v2 = DeployRequest::new(app.clone(), sources.other.clone()).size(2);
    let mut covered = 0;
    for at in [Hang::Before, Hang::After] {
        let mut n = 1;
        loop {
            let emu = support::emulator().await;
            emu.set_boot_time(Duration::from_millis(30));
            let (image, fleet, router) = mode(&emu, &app);
            let engine = || {
                // each engine a new process, with a lock table of its own
                Engine::from_arcs(image.clone(), fleet.clone(), router.clone())
                    .with_lock(Arc::new(MemoryLock::new()))
                    .with_options(support::engine_options())
                    .with_retry(support::retry())
            };
            engine().deploy(&v1).await.unwrap();
            emu.hang_at(n, at);
            let first = engine();
            let finished = tokio::select! {
                r = first.deploy(&v2) => Some(r),
                _ = emu.hung() => None,
            };
            if let Some(r) = finished {
                assert!(emu.hang_pending(), "a finished deployment never hung");
                r.unwrap();
                break;
            }
            covered += 1;
            // a new process: a new engine, with its own lock
            let report = engine()
                .deploy(&v2)
                .await
                .unwrap_or_else(|e| panic!("run again after a drop at request {n} ({at:?}): {e}"));
            assert_eq!(
                router.routes(&app).await.unwrap(),
                RouteTable::single(report.live.clone()),
                "drop at {n} ({at:?})"
            );
            let groups = fleet.groups(&app).await.unwrap();
            let live = groups.iter().find(|g| g.id == report.live).unwrap();
            let img = image.images(&app).await.unwrap();
            assert!(img.iter().any(|i| i.id == live.release.image));
            let instances = fleet.instances(&app, &report.live).await.unwrap();
            assert_eq!(
                instances.iter().filter(|i| i.health.is_healthy()).count(),
                2
            );
            let mut names = emu.app_names();
            names.sort();
            assert_eq!(names, expected_apps, "drop at {n} ({at:?}): stray apps");
            for name in &names {
                let config = emu.config(name).unwrap();
                assert_eq!(
                    config.get("BLUEGREEN_OWNER").map(String::as_str),
                    Some("bluegreen"),
                    "drop at {n} ({at:?}): {name} carries the marks"
                );
            }
            emu.assert_schema_clean();
            n += step;
        }
    }
    assert!(
        covered > 10,
        "the deployment was dropped at {covered} points"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_mode_converges_after_a_drop_anywhere() {
    interrupted_everywhere(
        |emu, app| {
            let (i, f, r) = support::app_mode(emu, app);
            (Arc::new(i), Arc::new(f), Arc::new(r))
        },
        &["web-test--slugs", "web-test-v001", "web-test-v002"],
        1,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_mode_converges_after_a_drop_anywhere() {
    interrupted_everywhere(
        |emu, _| {
            let (i, f, r) = support::release_mode(emu);
            (Arc::new(i), Arc::new(f), Arc::new(r))
        },
        &["web-test", "web-test--slugs"],
        1,
    )
    .await;
}

/// Release mode dropped between its launch and its switch (the launch's scaling
/// lost before or after the platform acted, or the first look at the new dynos),
/// at boot times from none to longer than a rerun's observation and with added
/// per-request latency: the rerun returns only once the release's dynos are all
/// healthy, with the route table on the new group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_mode_rerun_waits_for_the_dynos_whatever_the_timing() {
    let app = support::app("web");
    let sources = support::sources();
    let v1 = DeployRequest::new(app.clone(), sources.good.clone()).size(2);
    let v2 = DeployRequest::new(app.clone(), sources.other.clone()).size(2);
    let points = [
        ("PATCH /apps/web-test/formation/web", Hang::Before),
        ("PATCH /apps/web-test/formation/web", Hang::After),
        ("GET /apps/web-test/dynos", Hang::Before),
    ];
    for boot in [0, 40, 250] {
        for latency in [0, 10] {
            for (request, at) in points {
                let case =
                    format!("boot {boot} ms, latency {latency} ms, drop at {request} ({at:?})");
                let emu = support::emulator_with(
                    support::options()
                        .with_boot_time(Duration::from_millis(boot))
                        .with_latency(Duration::from_millis(latency)),
                )
                .await;
                let (image, fleet, router) = support::release_mode(&emu);
                let engine = || {
                    // each engine a new process, with a lock table of its own
                    Engine::new(image.clone(), fleet.clone(), router.clone())
                        .with_lock(Arc::new(MemoryLock::new()))
                        .with_options(support::engine_options())
                        .with_retry(support::retry())
                };
                engine().deploy(&v1).await.unwrap();
                emu.hang_on(request, at);
                let first = engine();
                tokio::select! {
                    r = first.deploy(&v2) => panic!("{case}: never dropped: {r:?}"),
                    _ = emu.hung() => {}
                }
                let report = engine()
                    .deploy(&v2)
                    .await
                    .unwrap_or_else(|e| panic!("{case}: {e}"));
                // at once: nothing may have booted since the rerun said Ok
                let instances = fleet.instances(&app, &report.live).await.unwrap();
                let healthy = instances.iter().filter(|i| i.health.is_healthy()).count();
                assert_eq!(healthy, 2, "{case}: {instances:?}");
                assert!(!report.unchanged, "{case}: the rerun found it live");
                assert_eq!(
                    router.routes(&app).await.unwrap(),
                    RouteTable::single(report.live.clone()),
                    "{case}"
                );
                emu.assert_schema_clean();
            }
        }
    }
}
