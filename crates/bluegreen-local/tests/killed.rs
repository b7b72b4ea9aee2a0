//! A deploying program killed mid-deployment (SIGKILL), then the deployment run
//! again: it converges, with no leftover process.
//!
//! This test binary plays both parts: run with `BLUEGREEN_TEST_CHILD` set, it is
//! the deploying program that gets killed.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bluegreen_core::{
    App, DeployRequest, Engine, EngineOptions, Event, EventSink, Fleet, ImageSource, RouteTable,
    Router,
};
use bluegreen_local::{FileLock, LocalFleet, LocalImage, LocalProxy, StateDir};
use support::{image_dir, proxy_bin, TempDir};

fn app() -> App {
    App::new("web", "killed").unwrap()
}

fn request(image: &Path) -> DeployRequest {
    DeployRequest::new(app(), ImageSource::Artifact(image.to_path_buf()))
        .size(3)
        .setting("command", "run")
        .setting("stop_timeout_ms", "3000")
}

fn engine(state: &StateDir, proxy: &LocalProxy, events: EventSink) -> Engine {
    let image = LocalImage::new(state.clone());
    let fleet = LocalFleet::new(state.clone(), image.clone());
    Engine::new(image, fleet, proxy.router())
        .with_lock(Arc::new(FileLock::new(state)))
        .with_events(events)
        .with_options(
            EngineOptions::default()
                .with_poll_interval(Duration::from_millis(100))
                .with_drain(Duration::from_millis(500))
                .with_keep(0),
        )
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The deploying program: deploys the image, printing each event's name.
fn child(state: PathBuf, image: PathBuf) {
    runtime().block_on(async {
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
        let _ = engine(&state, &proxy, events)
            .deploy(&request(&image))
            .await;
        println!("event Done");
    });
}

/// Processes marked as instances of this state directory.
fn marked_processes(state: &Path) -> usize {
    let want = format!("BLUEGREEN_STATE_DIR={}", state.display());
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let running = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| {
                    !s.rsplit(')')
                        .next()
                        .unwrap_or_default()
                        .trim_start()
                        .starts_with('Z')
                })
                .unwrap_or(false);
            running
                && std::fs::read(format!("/proc/{pid}/environ"))
                    .map(|env| env.split(|b| *b == 0).any(|v| v == want.as_bytes()))
                    .unwrap_or(false)
        })
        .count()
}

fn kill_at(event: &str) {
    let tmp = TempDir::new("killed");
    let state = tmp.state();
    let rt = runtime();
    // a proxy process both programs drive, listening on a free port
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let proxy = rt
        .block_on(LocalProxy::process(&state, listen, &proxy_bin()))
        .unwrap();
    let v1 = image_dir(&tmp.0, "1", "");
    let v2 = image_dir(&tmp.0, "2", "--start-delay-ms 1500");
    rt.block_on(engine(&state, &proxy, EventSink::none()).deploy(&request(&v1)))
        .unwrap();

    let mut deployer = Command::new(std::env::current_exe().unwrap())
        .env("BLUEGREEN_TEST_CHILD", "1")
        .env("BLUEGREEN_TEST_STATE", state.root())
        .env("BLUEGREEN_TEST_IMAGE", &v2)
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
        .block_on(engine(&state, &proxy, EventSink::none()).deploy(&request(&v2)))
        .unwrap_or_else(|e| panic!("killed at {event}: the rerun failed: {e}"));
    let fleet = LocalFleet::new(state.clone(), LocalImage::new(state.clone()));
    let groups = rt.block_on(fleet.groups(&app())).unwrap();
    assert_eq!(
        groups.len(),
        1,
        "killed at {event}: one group is left: {groups:?}"
    );
    assert_eq!(groups[0].id, report.live);
    let routes = rt.block_on(proxy.router().routes(&app())).unwrap();
    assert_eq!(
        routes,
        RouteTable::single(report.live.clone()),
        "killed at {event}"
    );
    assert_eq!(
        marked_processes(state.root()),
        3,
        "killed at {event}: only the live group's processes run"
    );

    rt.block_on(async {
        let router = proxy.router();
        router
            .set_routes(&app(), &RouteTable::empty())
            .await
            .unwrap();
        router.detach(&app(), &report.live).await.unwrap();
        fleet.destroy(&app(), &report.live).await.unwrap();
    });
    assert_eq!(
        marked_processes(state.root()),
        0,
        "killed at {event}: no process is left"
    );
    let mut proxy = proxy;
    proxy.stop();
    println!(
        "killed at {event}: converged, live {}, no leftover process",
        report.live
    );
}

fn main() {
    if std::env::var_os("BLUEGREEN_TEST_CHILD").is_some() {
        let state = std::env::var_os("BLUEGREEN_TEST_STATE")
            .expect("BLUEGREEN_TEST_STATE")
            .into();
        let image = std::env::var_os("BLUEGREEN_TEST_IMAGE")
            .expect("BLUEGREEN_TEST_IMAGE")
            .into();
        child(state, image);
        return;
    }
    let cases = ["GroupLaunched", "Health", "TrafficShifted"];
    for event in cases {
        kill_at(event);
    }
    println!("killed deployer: {} cases converged", cases.len());
}
