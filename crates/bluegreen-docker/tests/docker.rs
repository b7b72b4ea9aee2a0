//! The Docker provider against the real daemon, with the bluegreen proxy in front.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bluegreen_core::{
    App, DeployRequest, Engine, EngineOptions, ErrorKind, Event, EventSink, Fleet, Image,
    ImageSource, RouteTable, Router,
};
use bluegreen_docker::{DockerFleet, DockerFleetOptions, DockerImage, EmbeddedProxy};
use bluegreen_testkit::conformance::{self, Settings, Sources};
use bluegreen_testkit::zero_downtime::ZeroDowntime;
use support::look_alikes::DockerLookAlikes;
use support::{context, docker, docker_cli, labelled_containers, Cleanup, Scratch};

fn fast_proxy() -> bluegreen_proxy::ProxyOptions {
    bluegreen_proxy::ProxyOptions::default().with_health(
        bluegreen_proxy::HealthCheckOptions::default().with_interval(Duration::from_millis(200)),
    )
}

struct Setup {
    image: DockerImage,
    fleet: DockerFleet,
    proxy: EmbeddedProxy,
    engine: Engine,
}

async fn setup(docker: bluegreen_docker::Docker, options: EngineOptions) -> Setup {
    let image = DockerImage::new(docker.clone());
    let fleet = DockerFleet::new(docker, DockerFleetOptions::default());
    let proxy = EmbeddedProxy::start("127.0.0.1:0".parse().unwrap(), fast_proxy())
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
    let tmp = Scratch::new("conformance");
    let app = support::app("conf", "docker");
    let _cleanup = Cleanup::new(&app);
    let s = setup(docker.clone(), EngineOptions::default()).await;
    let sources = Sources {
        good: build(context(tmp.path(), "1", &[])),
        other: build(context(tmp.path(), "2", &[])),
        never_healthy: Some(build(context(
            tmp.path(),
            "3",
            &[("SAMPLE_NEVER_HEALTHY", "1")],
        ))),
    };
    // the look-alikes run an image of the test's own, without bluegreen's labels
    let plain = format!("bluegreen-test-plain-{}", app.name());
    docker_cli(&[
        "build",
        "-q",
        "-t",
        &plain,
        context(tmp.path(), "0", &[]).to_str().unwrap(),
    ]);
    let _plain = RemoveImage(plain.clone());
    let look_alikes = Arc::new(DockerLookAlikes::new(docker, &plain));
    let settings = Settings::default()
        .with_setting("stop_timeout_ms", "2000")
        .with_health_timeout(Duration::from_secs(30))
        .with_look_alikes(look_alikes.clone());
    let report = conformance::run_all(
        Arc::new(s.image),
        Arc::new(s.fleet),
        Arc::new(s.proxy.router()),
        &app,
        &sources,
        &settings,
    )
    .await;
    drop(look_alikes);
    // with a never-healthy source and the look-alikes hook, every rule applies but
    // the refusal of a split (the proxy weighs) and the scaling rules (a Docker
    // group does not scale: its refusal, NotSupported, is checked)
    for rule in [
        "groups and instances leave look-alikes out",
        "destroy and the clean-up leave look-alikes in place",
    ] {
        assert_eq!(
            report.find("look-alikes", rule).map(|c| &c.outcome),
            Some(&conformance::Outcome::Passed),
            "{rule}: {report}"
        );
    }
    assert_eq!(
        report
            .find("fleet", "refuses scale with NotSupported")
            .map(|c| &c.outcome),
        Some(&conformance::Outcome::Passed),
        "{report}"
    );
    assert_eq!(report.skipped(), 2, "{report}");
    assert!(
        labelled_containers(&app).is_empty(),
        "the suite leaves no container: {:?}",
        labelled_containers(&app)
    );
}

/// Removes an image of the test's own when dropped (also after a panic).
struct RemoveImage(String);

impl Drop for RemoveImage {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rmi", "-f", "--no-prune", &self.0])
            .output();
    }
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
    assert!(s.image.images(app).await.unwrap().is_empty());
    let left = support::labelled_images(app);
    assert!(
        left.is_empty(),
        "removing the images leaves none of their layers: {:?}",
        left
    );
}

fn deploy_options() -> EngineOptions {
    EngineOptions::default()
        .with_poll_interval(Duration::from_millis(100))
        .with_drain(Duration::from_secs(1))
        .with_keep(0)
        .with_health_timeout(Duration::from_secs(60))
}

fn request(app: &App, dir: std::path::PathBuf) -> DeployRequest {
    DeployRequest::new(app.clone(), build(dir))
        .size(3)
        .setting("stop_timeout_ms", "3000")
        .setting("memory", "64m")
        .setting("cpus", "0.5")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_under_load_fails_no_request() {
    let Some(docker) = docker("load").await else {
        return;
    };
    let tmp = Scratch::new("load");
    let app = support::app("load", "docker");
    let _cleanup = Cleanup::new(&app);
    let s = setup(docker, deploy_options()).await;
    let first = s
        .engine
        .deploy(&request(&app, context(tmp.path(), "1", &[])))
        .await
        .unwrap();
    let v1_containers = labelled_containers(&app);
    assert_eq!(v1_containers.len(), 3, "{v1_containers:?}");
    let mut load = ZeroDowntime::new(
        s.proxy.address(),
        format!("{}.{}", app.name(), app.environment()),
    )
    .start()
    .await;
    let report = load
        .phase(
            "deploy",
            s.engine
                .deploy(&request(&app, context(tmp.path(), "2", &[]))),
        )
        .await
        .unwrap();
    let seen = load.finish().await;
    println!("switch {:?}", report.switch_time);
    let seen = seen.phase("deploy");
    assert_eq!(seen.versions.first().map(String::as_str), Some("1"));
    assert_eq!(
        seen.last_version.as_deref(),
        Some("2"),
        "{:?}",
        seen.versions
    );
    // the old containers are gone, the new ones serve
    assert_eq!(report.destroyed, vec![first.live.clone()]);
    let now = labelled_containers(&app);
    assert_eq!(now.len(), 3, "{now:?}");
    assert!(
        now.iter().all(|c| c.starts_with(report.live.as_str())),
        "{now:?}"
    );
    assert!(now.iter().all(|c| !v1_containers.contains(c)));
    let groups = s.fleet.groups(&app).await.unwrap();
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].id, report.live);
    clean(&s, &app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_never_healthy_image_is_rolled_back_without_traffic() {
    let Some(docker) = docker("rollback").await else {
        return;
    };
    let tmp = Scratch::new("rollback");
    let app = support::app("rb", "docker");
    let _cleanup = Cleanup::new(&app);
    let s = setup(
        docker,
        deploy_options().with_health_timeout(Duration::from_secs(8)),
    )
    .await;
    let good = s
        .engine
        .deploy(&request(&app, context(tmp.path(), "1", &[])))
        .await
        .unwrap();
    let mut load = ZeroDowntime::new(
        s.proxy.address(),
        format!("{}.{}", app.name(), app.environment()),
    )
    .with_clients(4)
    .start()
    .await;
    let (events, mut rx) = EventSink::channel();
    let engine = Engine::new(s.image.clone(), s.fleet.clone(), s.proxy.router())
        .with_options(deploy_options().with_health_timeout(Duration::from_secs(8)))
        .with_events(events);
    let never_healthy = request(
        &app,
        context(tmp.path(), "3", &[("SAMPLE_NEVER_HEALTHY", "1")]),
    );
    let e = load
        .phase("never healthy", engine.deploy(&never_healthy))
        .await
        .expect_err("a never healthy image must fail");
    let seen = load.finish().await;
    println!("rolled back: {e}");
    assert!(e.rolled_back(), "{e}");
    assert_eq!(
        seen.total.versions,
        vec!["1".to_owned()],
        "traffic never reached it"
    );
    let mut shifted = Vec::new();
    while let Ok(event) = rx.try_recv() {
        if let Event::TrafficShifted { routes } = event {
            shifted.push(routes);
        }
    }
    assert!(shifted.is_empty(), "no traffic shift: {shifted:?}");
    let now = labelled_containers(&app);
    assert_eq!(
        now.len(),
        3,
        "only the good group's containers are left: {now:?}"
    );
    assert!(
        now.iter().all(|c| c.starts_with(good.live.as_str())),
        "{now:?}"
    );
    assert_eq!(
        s.proxy.router().routes(&app).await.unwrap(),
        RouteTable::single(good.live.clone())
    );
    clean(&s, &app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn look_alike_containers_without_labels_survive_everything() {
    let Some(docker) = docker("look-alike").await else {
        return;
    };
    let tmp = Scratch::new("look-alike");
    let app = support::app("alike", "docker");
    let _cleanup = Cleanup::new(&app);
    let s = setup(docker, deploy_options()).await;
    // an image of our own, without bluegreen's labels, for the look-alikes
    let plain = format!("bluegreen-test-plain-{}", app.name());
    docker_cli(&[
        "build",
        "-q",
        "-t",
        &plain,
        context(tmp.path(), "0", &[]).to_str().unwrap(),
    ]);
    let slug = app.slug();
    let names: Vec<String> = ["v001-0", "v002-0", "v002-1", "v003-2"]
        .iter()
        .map(|n| format!("{slug}-{n}"))
        .collect();
    for name in &names {
        docker_cli(&["run", "-d", "--name", name, &plain]);
    }
    let survivors = || {
        names
            .iter()
            .filter(|n| docker_cli(&["inspect", "-f", "{{.State.Running}}", n]) == "true")
            .count()
    };
    let one = s
        .engine
        .deploy(&request(&app, context(tmp.path(), "1", &[])))
        .await
        .unwrap();
    let two = s
        .engine
        .deploy(&request(&app, context(tmp.path(), "2", &[])))
        .await
        .unwrap();
    assert_eq!(two.destroyed, vec![one.live.clone()]);
    let back = s.engine.rollback(&app).await.unwrap();
    println!("rolled back to {}", back.to);
    assert_eq!(s.fleet.groups(&app).await.unwrap().len(), 1);
    clean(&s, &app).await;
    assert!(s.fleet.groups(&app).await.unwrap().is_empty());
    assert_eq!(survivors(), names.len(), "every look-alike still runs");
    let e = s
        .fleet
        .instances(&app, &bluegreen_core::GroupId::new(format!("{slug}-v001")))
        .await;
    assert_eq!(e.unwrap_err().kind(), ErrorKind::NotFound);
    s.fleet
        .destroy(&app, &bluegreen_core::GroupId::new(format!("{slug}-v002")))
        .await
        .unwrap();
    assert_eq!(survivors(), names.len(), "destroy leaves look-alikes alone");
    for name in &names {
        docker_cli(&["rm", "-f", name]);
    }
    docker_cli(&["rmi", "--no-prune", &plain]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_are_refused_before_any_container_exists() {
    let Some(docker) = docker("settings").await else {
        return;
    };
    let tmp = Scratch::new("settings");
    let app = support::app("set", "docker");
    let _cleanup = Cleanup::new(&app);
    let s = setup(docker, deploy_options()).await;
    for (key, value) in [
        ("comand", "/x"),
        ("memory", "lots"),
        ("restart", "sometimes"),
    ] {
        let e = s
            .engine
            .deploy(&request(&app, context(tmp.path(), "1", &[])).setting(key, value))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Invalid, "{e}");
        assert!(e.to_string().contains(&format!("settings.{key}")), "{e}");
    }
    assert!(labelled_containers(&app).is_empty());
    let e = s
        .engine
        .deploy(&DeployRequest::new(
            app.clone(),
            ImageSource::Reference("bluegreen-no-such:tag".into()),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    let e = s
        .engine
        .deploy(&DeployRequest::new(app.clone(), build(tmp.join("missing"))))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    clean(&s, &app).await;
}

/// A crash loop that a restart policy hides: the first start of each container
/// dies before it listens (`--crash-boots 1`), Docker restarts it, and the second
/// start serves. Such a container restarted since launch and is not healthy.
fn crash_looping(root: &std::path::Path, version: &str) -> std::path::PathBuf {
    context(
        root,
        version,
        &[
            ("SAMPLE_CRASH_AFTER_MS", "1000"),
            ("SAMPLE_START_DELAY_MS", "1500"),
            ("SAMPLE_CRASH_BOOTS", "1"),
            ("SAMPLE_BOOTS_FILE", "/boots"),
        ],
    )
}

/// Before: a container that Docker had restarted (a crash loop) was reported
/// `Healthy` as soon as it answered between two crashes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_that_restarted_is_not_healthy() {
    let Some(docker) = docker("restarted").await else {
        return;
    };
    let tmp = Scratch::new("restarted");
    let app = support::app("rs", "docker");
    let _cleanup = Cleanup::new(&app);
    let image = DockerImage::new(docker.clone());
    let fleet = DockerFleet::new(docker, DockerFleetOptions::default());
    let id = support::prepare(
        &image,
        &app,
        &build(crash_looping(tmp.path(), "1")),
        &EventSink::none(),
    )
    .await
    .unwrap()
    .id;
    let group = bluegreen_core::Group::new(
        app.clone(),
        bluegreen_core::Generation(1),
        bluegreen_core::Release::new(id, 1).with_setting("stop_timeout_ms", "1000"),
        bluegreen_core::DeploymentId::random(),
        None,
    );
    fleet.launch(&group).await.unwrap();
    // wait until Docker restarted the container and its second start answers
    let name = format!("{}-0", group.id);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let answering = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "{name} never came back"
        );
        let restarts = docker_cli(&[
            "inspect",
            "-f",
            "{{.RestartCount}} {{.State.Running}}",
            &name,
        ]);
        let instances = fleet.instances(&app, &group.id).await.unwrap();
        let address = instances[0].address.clone();
        if restarts.starts_with("1 true") {
            if let Some(address) = address {
                if std::net::TcpStream::connect(&address).is_ok() {
                    break instances[0].clone();
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let now = fleet.instances(&app, &group.id).await.unwrap();
    println!("{:?}", now[0]);
    assert!(
        answering.restarts >= 1 && now[0].restarts >= 1,
        "the restart count is reported: {now:?}"
    );
    assert!(
        !now[0].health.is_healthy(),
        "a container that restarted since launch is not healthy: {:?}",
        now[0]
    );
    let reason = format!("{:?}", now[0].health);
    assert!(reason.contains("restarted 1 times"), "{reason}");
    fleet.destroy(&app, &group.id).await.unwrap();
    image.remove(&app, &group.release.image).await.unwrap();
    assert!(labelled_containers(&app).is_empty());
}

/// Before: a crash-looping release whose containers answered between crashes
/// passed the health wait, got the traffic and the deployment succeeded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_looping_image_is_rolled_back_before_traffic() {
    let Some(docker) = docker("crash-loop").await else {
        return;
    };
    let tmp = Scratch::new("crash-loop");
    let app = support::app("cl", "docker");
    let _cleanup = Cleanup::new(&app);
    // polls at 0 s (starting), 3 s (running again after its restart at about
    // 1 s) and 6 s (answering): never while Docker restarts it, when even the old
    // rule saw it stopped
    let options = deploy_options()
        .with_poll_interval(Duration::from_secs(3))
        .with_health_timeout(Duration::from_secs(20));
    let s = setup(docker, options.clone()).await;
    let good = s
        .engine
        .deploy(&request(&app, context(tmp.path(), "1", &[])))
        .await
        .unwrap();
    let mut load = ZeroDowntime::new(
        s.proxy.address(),
        format!("{}.{}", app.name(), app.environment()),
    )
    .with_clients(4)
    .start()
    .await;
    let (events, mut rx) = EventSink::channel();
    let engine = Engine::new(s.image.clone(), s.fleet.clone(), s.proxy.router())
        .with_options(options)
        .with_events(events);
    let e = load
        .phase(
            "crash loop",
            engine.deploy(&request(&app, crash_looping(tmp.path(), "2"))),
        )
        .await
        .expect_err("a crash-looping image must fail");
    let seen = load.finish().await;
    println!("reverted: {e}");
    assert!(e.rolled_back(), "{e}");
    assert!(e.to_string().contains("restart"), "the cause is named: {e}");
    assert_eq!(
        seen.total.versions,
        vec!["1".to_owned()],
        "traffic never reached it"
    );
    let mut shifted = Vec::new();
    while let Ok(event) = rx.try_recv() {
        if let Event::TrafficShifted { routes } = event {
            shifted.push(routes);
        }
    }
    assert!(shifted.is_empty(), "no traffic shift: {shifted:?}");
    assert_eq!(
        s.proxy.router().routes(&app).await.unwrap(),
        RouteTable::single(good.live.clone()),
        "the routes are untouched"
    );
    let now = labelled_containers(&app);
    assert_eq!(now.len(), 3, "only the good group is left: {now:?}");
    assert!(
        now.iter().all(|c| c.starts_with(good.live.as_str())),
        "{now:?}"
    );
    clean(&s, &app).await;
}
