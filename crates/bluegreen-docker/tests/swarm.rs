//! The Swarm provider against the real three-node swarm of `scripts/swarm`, with its
//! registry and the bluegreen proxy in front.

mod swarm_support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bluegreen_core::{
    App, DeployRequest, DeploymentId, Engine, ErrorKind, Event, EventSink, Fleet, Generation,
    Group, Health, Image, ImageId, Release, RouteTable, Router,
};
use bluegreen_testkit::conformance::{self, Settings, Sources};
use bluegreen_testkit::zero_downtime::ZeroDowntime;
use swarm_support::look_alikes::SwarmLookAlikes;
use swarm_support::{
    build, context, deploy_options, docker_on, labelled_services, setup, swarm, Cleanup, Harness,
    Scratch, Setup,
};

fn request(app: &App, dir: std::path::PathBuf) -> DeployRequest {
    DeployRequest::new(app.clone(), build(dir))
        .size(3)
        .setting("stop_timeout_ms", "2000")
        .setting("memory", "64m")
        .setting("max_per_node", "1")
}

/// The node address of an instance address (`10.213.0.12:30001`).
fn node_of(address: &str) -> String {
    address
        .rsplit_once(':')
        .map(|(h, _)| h.to_owned())
        .unwrap_or_default()
}

async fn clean(s: &Setup, app: &App) {
    let router = s.proxy.router();
    router.set_routes(app, &RouteTable::empty()).await.unwrap();
    for g in s.fleet.groups(app).await.unwrap() {
        router.detach(app, &g.id).await.unwrap();
        s.fleet.destroy(app, &g.id).await.unwrap();
    }
    // the destroyed services' tasks stop asynchronously: a local copy they still use
    // is listed again until it can go
    let start = Instant::now();
    loop {
        let images = s.image.images(app).await.unwrap();
        if images.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "images left: {images:?}"
        );
        for i in images {
            s.image.remove(app, &i.id).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_swarm_provider_passes_the_conformance_suite() {
    let Some((h, docker)) = swarm("conformance").await else {
        return;
    };
    let tmp = Scratch::new("swarm-conformance");
    let app = swarm_support::app("conf", "swarm");
    let _cleanup = Cleanup::new(&h, &app);
    let s = setup(&h, docker, deploy_options()).await;
    let sources = Sources {
        good: build(context(tmp.path(), "1", &[])),
        other: build(context(tmp.path(), "2", &[])),
        never_healthy: Some(build(context(
            tmp.path(),
            "3",
            &[("SAMPLE_NEVER_HEALTHY", "1")],
        ))),
    };
    let look_alikes = Arc::new(SwarmLookAlikes::new(&h, &plain_image(&h, &tmp, app.name())));
    let settings = Settings::default()
        .with_setting("stop_timeout_ms", "1000")
        .with_health_timeout(Duration::from_secs(60))
        .with_look_alikes(look_alikes.clone());
    let report = conformance::run_all(
        Arc::new(s.image.clone()),
        Arc::new(s.fleet.clone()),
        Arc::new(s.proxy.router()),
        &app,
        &sources,
        &settings,
    )
    .await;
    drop(look_alikes);
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
    assert!(
        labelled_services(&h, &app).is_empty(),
        "the suite leaves no service: {:?}",
        labelled_services(&h, &app)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_over_three_nodes_under_load_fail_no_request() {
    let Some((h, docker)) = swarm("spread").await else {
        return;
    };
    let tmp = Scratch::new("swarm-spread");
    let app = swarm_support::app("spread", "swarm");
    let _cleanup = Cleanup::new(&h, &app);
    let s = setup(&h, docker, deploy_options()).await;
    let first = s
        .engine
        .deploy(&request(&app, context(tmp.path(), "1", &[])))
        .await
        .unwrap();
    let groups = s.fleet.groups(&app).await.unwrap();
    let image = groups[0].release.image.as_str().to_owned();
    assert!(
        image.starts_with(&format!("{}/bluegreen/", h.registry)) && image.contains("@sha256:"),
        "the group runs the pushed image by digest: {image}"
    );
    let spec_image = docker_on(
        &h,
        0,
        &[
            "service",
            "inspect",
            "-f",
            "{{.Spec.TaskTemplate.ContainerSpec.Image}}",
            first.live.as_str(),
        ],
    )
    .unwrap();
    assert_eq!(spec_image, image);
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
    println!(
        "switch {:?}, {} requests",
        report.switch_time, seen.total.ok
    );
    let deploy = seen.phase("deploy");
    assert_eq!(deploy.versions.first().map(String::as_str), Some("1"));
    assert_eq!(
        deploy.last_version.as_deref(),
        Some("2"),
        "{:?}",
        deploy.versions
    );
    assert_eq!(report.destroyed, vec![first.live.clone()]);
    let instances = s.fleet.instances(&app, &report.live).await.unwrap();
    assert_eq!(instances.len(), 3, "{instances:?}");
    assert!(
        instances.iter().all(|i| i.health.is_healthy()),
        "{instances:?}"
    );
    let nodes: BTreeSet<String> = instances
        .iter()
        .map(|i| node_of(i.address.as_deref().unwrap()))
        .collect();
    let expected: BTreeSet<String> = h.addresses.iter().cloned().collect();
    assert_eq!(nodes, expected, "one task on each node: {instances:?}");
    assert_eq!(labelled_services(&h, &app), vec![report.live.to_string()]);
    clean(&s, &app).await;
    assert!(labelled_services(&h, &app).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_healthy_and_crash_looping_images_are_rolled_back_before_traffic() {
    let Some((h, docker)) = swarm("rollback").await else {
        return;
    };
    let tmp = Scratch::new("swarm-rollback");
    let app = swarm_support::app("rb", "swarm");
    let _cleanup = Cleanup::new(&h, &app);
    let options = deploy_options().with_health_timeout(Duration::from_secs(15));
    let s = setup(&h, docker, options.clone()).await;
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
    let never_healthy = request(
        &app,
        context(tmp.path(), "3", &[("SAMPLE_NEVER_HEALTHY", "1")]),
    );
    let e = load
        .phase("never healthy", engine.deploy(&never_healthy))
        .await
        .expect_err("a never healthy image must fail");
    println!("never healthy: {e}");
    assert!(e.rolled_back(), "{e}");
    let crash_loop = request(
        &app,
        context(tmp.path(), "4", &[("SAMPLE_CRASH_AFTER_MS", "0")]),
    )
    .setting("restart_delay_ms", "100");
    let e = load
        .phase("crash loop", engine.deploy(&crash_loop))
        .await
        .expect_err("a crash-looping image must fail");
    println!("crash loop: {e}");
    assert!(e.rolled_back(), "{e}");
    let seen = load.finish().await;
    assert_eq!(
        seen.total.versions,
        vec!["1".to_owned()],
        "traffic never reached them"
    );
    let mut shifted = Vec::new();
    while let Ok(event) = rx.try_recv() {
        if let Event::TrafficShifted { routes } = event {
            shifted.push(routes);
        }
    }
    assert!(shifted.is_empty(), "no traffic shift: {shifted:?}");
    assert_eq!(labelled_services(&h, &app), vec![good.live.to_string()]);
    assert_eq!(
        s.proxy.router().routes(&app).await.unwrap(),
        RouteTable::single(good.live.clone())
    );
    clean(&s, &app).await;
}

/// The restart rule on its own: a task that serves for a while, then crashes and is
/// replaced, is never reported healthy once its slot has restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_keeps_restarting_is_never_healthy() {
    let Some((h, docker)) = swarm("restarts").await else {
        return;
    };
    let tmp = Scratch::new("swarm-restarts");
    let app = swarm_support::app("restart", "swarm");
    let _cleanup = Cleanup::new(&h, &app);
    let s = setup(&h, docker, deploy_options()).await;
    let image = s
        .image
        .prepare(
            &app,
            &build(context(
                tmp.path(),
                "5",
                &[("SAMPLE_CRASH_AFTER_MS", "1500")],
            )),
            &EventSink::none(),
        )
        .await
        .unwrap();
    let release = Release::new(image.id.clone(), 1)
        .with_setting("restart_delay_ms", "0")
        .with_setting("stop_timeout_ms", "1000");
    let group = Group::new(
        app.clone(),
        Generation(1),
        release,
        DeploymentId::new("restarts"),
        None,
    );
    s.fleet.launch(&group).await.unwrap();
    let start = Instant::now();
    let (mut healthy_before, mut restarted, mut healthy_after) = (0, 0, Vec::new());
    while start.elapsed() < Duration::from_secs(25) {
        for i in s.fleet.instances(&app, &group.id).await.unwrap() {
            if i.restarts > 0 {
                restarted += 1;
                if i.health.is_healthy() {
                    healthy_after.push(i.clone());
                }
                assert!(
                    matches!(i.health, Health::Unhealthy { .. } | Health::Stopped { .. }),
                    "{i:?}"
                );
            } else if i.health.is_healthy() {
                healthy_before += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("healthy before the first crash {healthy_before}, after {restarted}");
    assert!(healthy_before > 0, "it served before crashing");
    assert!(restarted > 0, "the slot restarted");
    assert!(healthy_after.is_empty(), "{healthy_after:?}");
    s.fleet.destroy(&app, &group.id).await.unwrap();
    s.image.remove(&app, &image.id).await.unwrap();
}

fn plain_image(h: &Harness, tmp: &Scratch, name: &str) -> String {
    // an image of our own, without bluegreen's labels, pushed to the registry
    let tag = format!("{}/bluegreen-test/{name}:0", h.registry);
    docker_on(
        h,
        0,
        &[
            "build",
            "-q",
            "-t",
            &tag,
            context(tmp.path(), "0", &[]).to_str().unwrap(),
        ],
    )
    .unwrap();
    docker_on(h, 0, &["push", &tag]).unwrap();
    docker_on(
        h,
        0,
        &["image", "inspect", "-f", "{{index .RepoDigests 0}}", &tag],
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn look_alike_services_without_labels_survive_everything() {
    let Some((h, docker)) = swarm("look-alike").await else {
        return;
    };
    let tmp = Scratch::new("swarm-look-alike");
    let app = swarm_support::app("alike", "swarm");
    let _cleanup = Cleanup::new(&h, &app);
    let s = setup(&h, docker, deploy_options()).await;
    let plain = plain_image(&h, &tmp, app.name());
    let slug = app.slug();
    // same names as the groups, and one with the app's labels but not the owner's
    let names: Vec<String> = ["v001", "v002", "v003"]
        .iter()
        .map(|n| format!("{slug}-{n}"))
        .collect();
    for (i, name) in names.iter().enumerate() {
        let mut args = vec![
            "service",
            "create",
            "-d",
            "--name",
            name.as_str(),
            "--replicas",
            "1",
        ];
        let app_label = format!("bluegreen.app={}", app.name());
        let env_label = format!("bluegreen.environment={}", app.environment());
        let group_label = format!("bluegreen.group={name}");
        if i == 2 {
            args.extend([
                "--label",
                &app_label,
                "--label",
                &env_label,
                "--label",
                &group_label,
            ]);
        }
        args.push(&plain);
        docker_on(&h, 0, &args).unwrap();
    }
    let survivors = || {
        names
            .iter()
            .filter(|n| docker_on(&h, 0, &["service", "inspect", "-f", "{{.ID}}", n]).is_ok())
            .count()
    };
    let one = s
        .engine
        .deploy(&request(&app, context(tmp.path(), "1", &[])).size(1))
        .await
        .unwrap();
    let two = s
        .engine
        .deploy(&request(&app, context(tmp.path(), "2", &[])).size(1))
        .await
        .unwrap();
    assert_eq!(two.destroyed, vec![one.live.clone()]);
    let back = s.engine.rollback(&app).await.unwrap();
    println!("rolled back to {}", back.to);
    assert_eq!(s.fleet.groups(&app).await.unwrap().len(), 1);
    clean(&s, &app).await;
    assert!(s.fleet.groups(&app).await.unwrap().is_empty());
    assert_eq!(survivors(), names.len(), "every look-alike is still there");
    for name in &names {
        let g = bluegreen_core::GroupId::new(name.clone());
        assert_eq!(
            s.fleet.instances(&app, &g).await.unwrap_err().kind(),
            ErrorKind::NotFound
        );
        s.fleet.destroy(&app, &g).await.unwrap();
    }
    assert_eq!(survivors(), names.len(), "destroy leaves look-alikes alone");
    // retention leaves others' images in the registry alone
    s.image
        .remove(&app, &ImageId::new(plain.clone()))
        .await
        .unwrap();
    let mut args = vec!["service", "rm"];
    args.extend(names.iter().map(String::as_str));
    docker_on(&h, 0, &args).unwrap();
    docker_on(&h, 0, &["pull", &plain]).expect("the look-alike's image is still in the registry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_and_local_images_are_refused_before_any_call() {
    let Some((h, docker)) = swarm("settings").await else {
        return;
    };
    let tmp = Scratch::new("swarm-settings");
    let app = swarm_support::app("set", "swarm");
    let _cleanup = Cleanup::new(&h, &app);
    let s = setup(&h, docker, deploy_options()).await;
    for (key, value) in [
        ("comand", "/x"),
        ("memory", "lots"),
        ("restart", "sometimes"),
        ("max_per_node", "0"),
        ("spread", "zone"),
        ("constraints", "node.role"),
        ("published_port", "0"),
    ] {
        let e = s
            .engine
            .deploy(&request(&app, context(tmp.path(), "1", &[])).setting(key, value))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Invalid, "{e}");
        assert!(e.to_string().contains(&format!("settings.{key}")), "{e}");
    }
    assert!(labelled_services(&h, &app).is_empty());
    assert!(
        s.image.images(&app).await.unwrap().is_empty(),
        "nothing was built or pushed"
    );
    // an image by local id cannot run on a swarm
    let group = Group::new(
        app.clone(),
        Generation(1),
        Release::new(ImageId::new("sha256:0123456789abcdef"), 1),
        DeploymentId::new("local"),
        None,
    );
    let e = s.fleet.launch(&group).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid, "{e}");
    assert!(e.to_string().contains("image"), "{e}");
    // and a digest the registry does not have is NotFound, before any service
    let missing = format!(
        "{}/bluegreen/{}@sha256:{}",
        h.registry,
        app.slug(),
        "0".repeat(64)
    );
    let group = Group::new(
        app.clone(),
        Generation(1),
        Release::new(ImageId::new(missing), 1),
        DeploymentId::new("missing"),
        None,
    );
    let e = s.fleet.launch(&group).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(labelled_services(&h, &app).is_empty());
}
