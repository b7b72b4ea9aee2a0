//! The local provider on real processes, real sockets (loopback) and the real proxy.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bluegreen_core::{
    App, DeployRequest, Engine, EngineOptions, ErrorKind, Fleet, Health, ImageSource, Router,
};
use bluegreen_local::{FileLock, LocalFleet, LocalImage, LocalProxy, StateDir};
use bluegreen_testkit::conformance::{self, Settings, Sources};
use bluegreen_testkit::zero_downtime::ZeroDowntime;
use support::look_alikes::LocalLookAlikes;
use support::{image_dir, state, Scratch};

fn fast_proxy() -> bluegreen_proxy::ProxyOptions {
    bluegreen_proxy::ProxyOptions::default().with_health(
        bluegreen_proxy::HealthCheckOptions::default().with_interval(Duration::from_millis(200)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_provider_passes_the_conformance_suite() {
    let (tmp, state, image, fleet, proxy) = rig("conformance").await;
    let sources = Sources {
        good: ImageSource::Artifact(image_dir(tmp.path(), "1", "")),
        other: ImageSource::Artifact(image_dir(tmp.path(), "2", "")),
        never_healthy: Some(ImageSource::Artifact(image_dir(
            tmp.path(),
            "3",
            "--never-healthy",
        ))),
    };
    let settings = Settings::default()
        .with_setting("command", "run")
        .with_setting("stop_timeout_ms", "3000")
        .with_health_timeout(Duration::from_secs(20))
        .with_look_alikes(Arc::new(LocalLookAlikes::new(&state)));
    let app = App::new("conformance", "local").unwrap();
    let report = conformance::run_all(
        Arc::new(image),
        Arc::new(fleet),
        Arc::new(proxy.router()),
        &app,
        &sources,
        &settings,
    )
    .await;
    // the proxy weighs, so the refusal of a split (for routers without weights)
    // does not apply; the local fleet does not scale (it refuses with NotSupported,
    // which is checked), so the scaling rules do not apply
    assert_eq!(report.skipped(), 2, "{report}");
    assert!(
        report
            .find("fleet", "refuses scale with NotSupported")
            .is_some_and(|c| c.outcome == conformance::Outcome::Passed),
        "{report}"
    );
    assert!(
        report
            .find("router", "a split is refused")
            .is_some_and(|c| c.outcome != conformance::Outcome::Passed),
        "{report}"
    );
}

/// A deployment, a rollback and a failing deployment under constant load through
/// the proxy: not one request fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_a_rollback_and_a_failure_under_load_fail_no_request() {
    let (tmp, state, image, fleet, proxy) = rig("load").await;
    let engine = Engine::new(image, fleet.clone(), proxy.router())
        .with_lock(Arc::new(FileLock::new(&state)))
        .with_options(
            EngineOptions::default()
                .with_poll_interval(Duration::from_millis(100))
                .with_drain(Duration::from_secs(1))
                .with_health_timeout(Duration::from_secs(5))
                .with_keep(0),
        );
    let app = App::new("web", "load").unwrap();
    let deploy = |v: &str, flags: &str| {
        DeployRequest::new(
            app.clone(),
            ImageSource::Artifact(image_dir(tmp.path(), v, flags)),
        )
        .size(3)
        .setting("command", "run")
        .setting("stop_timeout_ms", "3000")
    };
    engine.deploy(&deploy("1", "")).await.unwrap();
    let mut load = ZeroDowntime::new(proxy.address(), "web.load")
        .with_min_requests(100)
        .start()
        .await;
    let report = load
        .phase("deploy", engine.deploy(&deploy("2", "")))
        .await
        .unwrap();
    assert_eq!(
        report.destroyed.len(),
        1,
        "the old group's processes are gone"
    );
    assert_eq!(fleet.groups(&app).await.unwrap().len(), 1);
    let back = load.phase("rollback", engine.rollback(&app)).await.unwrap();
    assert!(
        back.relaunched,
        "keep 0: the release before is launched again"
    );
    let failed = load
        .phase(
            "failing deployment",
            engine.deploy(&deploy("3", "--never-healthy")),
        )
        .await
        .unwrap_err();
    assert!(failed.rolled_back(), "{failed}");
    let seen = load.finish().await;
    println!("switch {:?}", report.switch_time);
    assert_eq!(
        seen.phase("deploy").versions.first().map(String::as_str),
        Some("1")
    );
    assert_eq!(seen.phase("deploy").last_version.as_deref(), Some("2"));
    assert_eq!(seen.phase("rollback").last_version.as_deref(), Some("1"));
    assert_eq!(
        seen.phase("failing deployment").versions,
        ["1"],
        "v3 got no request"
    );
    assert_eq!(fleet.groups(&app).await.unwrap().len(), 1);
    clean(&fleet, &proxy, &app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_instance_is_reported_stopped() {
    let (tmp, _, image, fleet, proxy) = rig("crash").await;
    let engine = Engine::new(image, fleet.clone(), proxy.router())
        .with_options(EngineOptions::default().with_poll_interval(Duration::from_millis(100)));
    let app = App::new("web", "crash").unwrap();
    let crashing = image_dir(tmp.path(), "1", "--crash-after-ms 1500");
    let request = DeployRequest::new(app.clone(), ImageSource::Artifact(crashing))
        .size(2)
        .setting("command", "run");
    let report = engine.deploy(&request).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let instances = fleet.instances(&app, &report.live).await.unwrap();
    assert_eq!(instances.len(), 2);
    for i in &instances {
        match &i.health {
            Health::Stopped { reason } => assert!(reason.contains("101"), "{reason}"),
            other => panic!("a crashed instance is stopped, not {other:?}"),
        }
    }
    let status = engine.status(&app).await.unwrap();
    assert_eq!(
        status.live().unwrap().healthy(),
        0,
        "status shows the crash"
    );
    clean(&fleet, &proxy, &app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_are_refused_before_any_process_starts() {
    let (tmp, state, image, fleet, proxy) = rig("settings").await;
    let engine = Engine::new(image, fleet.clone(), proxy.router());
    let app = App::new("web", "settings").unwrap();
    let e = engine
        .deploy(
            &DeployRequest::new(
                app.clone(),
                ImageSource::Artifact(image_dir(tmp.path(), "1", "")),
            )
            .setting("comand", "run"),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("invalid settings.comand"), "{e}");
    assert!(fleet.groups(&app).await.unwrap().is_empty());
    assert!(
        bluegreen_core::Image::images(&LocalImage::new(state.clone()), &app)
            .await
            .unwrap()
            .is_empty(),
        "a bad setting is refused before the image is even stored"
    );
    let e = engine
        .deploy(&DeployRequest::new(
            app.clone(),
            ImageSource::Artifact(tmp.join("missing")),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
}

/// The reported collision: `a-b`.`c` and `a`.`b-c` shared the slug `a-b-c`, so the
/// second app's first deployment failed with `Conflict` and its host was answered by
/// the first app. `a`.`b-c` is now refused before anything happens; apps whose names
/// still come close share one state directory and one proxy, each deployment
/// succeeds, and each host reaches its own app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_with_close_names_each_deploy_and_serve_on_their_own() {
    let (tmp, state, image, fleet, proxy) = rig("names").await;
    let engine = Engine::new(image, fleet.clone(), proxy.router())
        .with_lock(Arc::new(FileLock::new(&state)))
        .with_options(EngineOptions::default().with_poll_interval(Duration::from_millis(100)));
    let e = App::new("a", "b-c").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid, "{e}");
    assert!(e.to_string().contains("invalid app.environment"), "{e}");
    let apps = [("a-b", "c"), ("a", "bc"), ("ab", "c")].map(|(n, e)| App::new(n, e).unwrap());
    for (i, app) in apps.iter().enumerate() {
        let version = format!("{}", i + 1);
        let artifact = image_dir(tmp.path(), &version, "");
        let report = engine
            .deploy(
                &DeployRequest::new(app.clone(), ImageSource::Artifact(artifact))
                    .setting("command", "run")
                    .setting("stop_timeout_ms", "3000"),
            )
            .await
            .unwrap_or_else(|e| panic!("deploying {app}: {e}"));
        assert_eq!(report.live.as_str(), format!("{}-v001", app.slug()));
    }
    for (i, app) in apps.iter().enumerate() {
        let host = bluegreen_proxy::default_host(app);
        let body = get(proxy.address(), &host).await;
        let expected = format!("version {} from {}-v001-0", i + 1, app.slug());
        assert_eq!(body.trim(), expected, "Host: {host}");
        assert_eq!(fleet.groups(app).await.unwrap().len(), 1, "{app}");
    }
    for app in &apps {
        clean(&fleet, &proxy, app).await;
    }
}

/// The body of `GET /` with `Host: host` on the proxy at `address`.
async fn get(address: std::net::SocketAddr, host: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream
        .write_all(
            format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "Host: {host}: {head}");
    body.to_owned()
}

/// A temporary state directory, the local image store and fleet on it, and an
/// embedded proxy with fast health checks.
async fn rig(tag: &str) -> (Scratch, StateDir, LocalImage, LocalFleet, LocalProxy) {
    let tmp = Scratch::new(tag);
    let state = state(tmp.path());
    let image = LocalImage::new(state.clone());
    let fleet = LocalFleet::new(state.clone(), image.clone());
    let proxy = LocalProxy::embedded("127.0.0.1:0".parse().unwrap(), fast_proxy())
        .await
        .unwrap();
    (tmp, state, image, fleet, proxy)
}

async fn clean(fleet: &LocalFleet, proxy: &LocalProxy, app: &App) {
    let router = proxy.router();
    router.set_routes(app, &Default::default()).await.unwrap();
    for g in fleet.groups(app).await.unwrap() {
        router.detach(app, &g.id).await.unwrap();
        fleet.destroy(app, &g.id).await.unwrap();
    }
}
