//! The Docker provider against the real daemon, with the bluegreen proxy in front.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bluegreen_core::{
    App, DeployRequest, Engine, EngineOptions, ErrorKind, Event, EventSink, Fleet, Image,
    ImageSource, RouteTable, Router,
};
use bluegreen_docker::{DockerFleet, DockerFleetOptions, DockerImage, DockerProxy};
use bluegreen_testkit::conformance::{self, Settings, Sources};
use support::{context, docker, labelled_containers, Cleanup, Load, TempDir};

fn fast_proxy() -> bluegreen_proxy::ProxyOptions {
    bluegreen_proxy::ProxyOptions::default().with_health(
        bluegreen_proxy::HealthCheckOptions::default().with_interval(Duration::from_millis(200)),
    )
}

struct Setup {
    image: DockerImage,
    fleet: DockerFleet,
    proxy: DockerProxy,
    engine: Engine,
}

async fn setup(docker: bluegreen_docker::Docker, options: EngineOptions) -> Setup {
    let image = DockerImage::new(docker.clone());
    let fleet = DockerFleet::new(docker, DockerFleetOptions::default());
    let proxy = DockerProxy::embedded("127.0.0.1:0".parse().unwrap(), fast_proxy())
        .await
        .unwrap();
    let engine = Engine::new(image.clone(), fleet.clone(), proxy.router()).with_options(options);
    Setup {
        image,
        fleet,
        proxy,
        engine,
    }
}

fn build(dir: std::path::PathBuf) -> ImageSource {
    ImageSource::Build {
        context: dir,
        args: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docker_provider_passes_the_conformance_suite() {
    let Some(docker) = docker("conformance").await else {
        return;
    };
    let tmp = TempDir::new("conformance");
    let app = support::app("conf", "docker");
    let _cleanup = Cleanup::new(&app);
    let s = setup(docker, EngineOptions::default()).await;
    let sources = Sources {
        good: build(context(&tmp.0, "1", &[])),
        other: build(context(&tmp.0, "2", &[])),
        never_healthy: Some(build(context(
            &tmp.0,
            "3",
            &[("SAMPLE_NEVER_HEALTHY", "1")],
        ))),
    };
    let settings = Settings::default()
        .with_setting("stop_timeout_ms", "2000")
        .with_health_timeout(Duration::from_secs(30));
    conformance::run_all(
        Arc::new(s.image),
        Arc::new(s.fleet),
        Arc::new(s.proxy.router()),
        &app,
        &sources,
        &settings,
    )
    .await;
    assert!(
        labelled_containers(&app).is_empty(),
        "the suite leaves no container: {:?}",
        labelled_containers(&app)
    );
}

async fn clean(s: &Setup, app: &App) {
    let router = s.proxy.router();
    router.set_routes(app, &RouteTable::empty()).await.unwrap();
    for g in s.fleet.groups(app).await.unwrap() {
        router.detach(app, &g.id).await.unwrap();
        s.fleet.destroy(app, &g.id).await.unwrap();
    }
    for i in s.image.images(app).await.unwrap() {
        s.image.remove(app, &i.id).await.unwrap();
    }
}
