//! A deploying program killed mid-deployment (SIGKILL), then the deployment run
//! again: it converges, with no stray container.
//!
//! This test binary plays both parts: run with `BLUEGREEN_TEST_CHILD` set, it is
//! the deploying program that gets killed. Both drive one `bluegreen-proxy`
//! process, which outlives the child.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use bluegreen_core::{
    App, DeployRequest, Engine, EngineOptions, Event, EventSink, Fleet, ImageSource, RouteTable,
    Router,
};
use bluegreen_docker::{Docker, DockerFleet, DockerFleetOptions, DockerImage};
use bluegreen_local::{LocalProxy, StateDir};
use support::{context, labelled_containers, proxy_bin, Cleanup, TempDir};

fn request(app: &App, context: &Path) -> DeployRequest {
    DeployRequest::new(
        app.clone(),
        ImageSource::Build {
            context: context.to_path_buf(),
            args: Default::default(),
        },
    )
    .size(3)
    .setting("stop_timeout_ms", "2000")
}

fn engine(docker: &Docker, proxy: &LocalProxy, events: EventSink) -> Engine {
    Engine::new(
        DockerImage::new(docker.clone()),
        DockerFleet::new(docker.clone(), DockerFleetOptions::default()),
        proxy.router(),
    )
    .with_events(events)
    .with_options(
        EngineOptions::default()
            .with_poll_interval(Duration::from_millis(100))
            .with_drain(Duration::from_millis(500))
            .with_keep(0)
            .with_health_timeout(Duration::from_secs(60)),
    )
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The deploying program: deploys the context, printing each event's name.
fn child(app: App, state: PathBuf, context: PathBuf) {
    runtime().block_on(async {
        let docker = bluegreen_docker::connect().await.unwrap();
        let state = StateDir::new(state).unwrap();
        let proxy = LocalProxy::process(&state, "127.0.0.1:0".parse().unwrap(), &proxy_bin())
            .await
            .unwrap();
        let events = EventSink::new(|e: &Event| {
            let name = format!("{e:?}");
            println!(
                "event {}",
                name.split([' ', '{', '(']).next().unwrap_or_default()
            );
        });
        let _ = engine(&docker, &proxy, events)
            .deploy(&request(&app, &context))
            .await;
        println!("event Done");
    });
}

fn kill_at(event: &str) {
    let tmp = TempDir::new("killed");
    let app = support::app("killed", "docker");
    let _cleanup = Cleanup::new(&app);
    let state = StateDir::new(tmp.0.join("state")).unwrap();
    let rt = runtime();
    let docker = &rt.block_on(bluegreen_docker::connect()).unwrap();
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut proxy = rt
        .block_on(LocalProxy::process(&state, listen, &proxy_bin()))
        .unwrap();
    let v1 = context(&tmp.0, "1", &[]);
    let v2 = context(&tmp.0, "2", &[("SAMPLE_START_DELAY_MS", "1500")]);
    rt.block_on(engine(docker, &proxy, EventSink::none()).deploy(&request(&app, &v1)))
        .unwrap();

    let mut deployer = Command::new(std::env::current_exe().unwrap())
        .env("BLUEGREEN_TEST_CHILD", app.to_string())
        .env("BLUEGREEN_TEST_STATE", state.root())
        .env("BLUEGREEN_TEST_CONTEXT", &v2)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = BufReader::new(deployer.stdout.take().unwrap());
    let mut reached = false;
    for line in lines.lines() {
        let line = line.unwrap();
        if line == format!("event {event}") {
            reached = true;
            break;
        }
        assert_ne!(line, "event Done", "the deployment ended before {event}");
    }
    assert!(reached, "the deployer never reached {event}");
    deployer.kill().unwrap();
    deployer.wait().unwrap();

    let report = rt
        .block_on(engine(docker, &proxy, EventSink::none()).deploy(&request(&app, &v2)))
        .unwrap_or_else(|e| panic!("killed at {event}: the rerun failed: {e}"));
    let fleet = DockerFleet::new(docker.clone(), DockerFleetOptions::default());
    let groups = rt.block_on(fleet.groups(&app)).unwrap();
    assert_eq!(
        groups.len(),
        1,
        "killed at {event}: one group is left: {groups:?}"
    );
    assert_eq!(groups[0].id, report.live);
    let routes = rt.block_on(proxy.router().routes(&app)).unwrap();
    assert_eq!(
        routes,
        RouteTable::single(report.live.clone()),
        "killed at {event}"
    );
    let containers = labelled_containers(&app);
    assert_eq!(
        containers.len(),
        3,
        "killed at {event}: only the live group's containers: {containers:?}"
    );
    assert!(
        containers
            .iter()
            .all(|c| c.starts_with(report.live.as_str())),
        "killed at {event}: {containers:?}"
    );

    rt.block_on(async {
        let router = proxy.router();
        router.set_routes(&app, &RouteTable::empty()).await.unwrap();
        router.detach(&app, &report.live).await.unwrap();
        fleet.destroy(&app, &report.live).await.unwrap();
    });
    assert!(
        labelled_containers(&app).is_empty(),
        "killed at {event}: no container is left"
    );
    proxy.stop();
    println!(
        "killed at {event}: converged, live {}, no stray container",
        report.live
    );
}

fn main() {
    if let Ok(app) = std::env::var("BLUEGREEN_TEST_CHILD") {
        let state = std::env::var_os("BLUEGREEN_TEST_STATE")
            .expect("BLUEGREEN_TEST_STATE")
            .into();
        let context = std::env::var_os("BLUEGREEN_TEST_CONTEXT")
            .expect("BLUEGREEN_TEST_CONTEXT")
            .into();
        child(app.parse().unwrap(), state, context);
        return;
    }
    if runtime().block_on(support::docker("killed")).is_none() {
        return;
    }
    let cases = ["GroupLaunched", "Health", "TrafficShifted"];
    for event in cases {
        kill_at(event);
    }
    println!("killed deployer: {} cases converged", cases.len());
    println!("{} passed, 0 failed", cases.len());
}
