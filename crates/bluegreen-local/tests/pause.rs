//! A deployment paused by a command hook survives the program that ran it: the
//! program exits, the proxy process keeps serving the old release, and another
//! program resumes it to the end. Real processes, a real proxy process, the file
//! lock.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bluegreen_core::{
    App, DeployRequest, Engine, EngineOptions, Fleet, GroupId, ImageSource, RouteTable, Router,
    Stage,
};
use bluegreen_local::{CommandHook, FileLock, LocalFleet, LocalImage, LocalProxy, StateDir};
use support::{image_dir, proxy_bin, state, Scratch};

/// Set in the child: the scratch directory to deploy in.
const CHILD: &str = "BLUEGREEN_PAUSE_TEST_CHILD";

fn app() -> App {
    App::new("web", "paused").unwrap()
}

/// The hook: pauses (exit 75) unless the deployment was resumed, and records each
/// call's stage and `BLUEGREEN_RESUMED` in `calls`.
fn request(root: &Path, version: &str) -> DeployRequest {
    let calls = root.join("calls");
    let script = format!(
        "echo \"$BLUEGREEN_STAGE $BLUEGREEN_RESUMED\" >> '{}'; \
         if [ \"$BLUEGREEN_RESUMED\" = true ]; then exit 0; fi; \
         echo 'waiting for approval'; exit 75",
        calls.display()
    );
    let hook = CommandHook::new("approve", ["sh", "-c", &script]).unwrap();
    DeployRequest::new(app(), ImageSource::Artifact(image_dir(root, version, "")))
        .size(2)
        .setting("command", "run")
        .setting("stop_timeout_ms", "2000")
        .hook(Stage::BeforeTraffic, Arc::new(hook))
}

struct Rig {
    state: StateDir,
    proxy: LocalProxy,
    engine: Engine,
}

async fn rig(root: &Path, listen: std::net::SocketAddr) -> Rig {
    let state = state(root);
    let proxy = LocalProxy::process(&state, listen, &proxy_bin())
        .await
        .unwrap();
    let image = LocalImage::new(state.clone());
    let fleet = LocalFleet::new(state.clone(), image.clone());
    let engine = Engine::new(image, fleet, proxy.router())
        .with_lock(Arc::new(FileLock::new(&state)))
        .with_options(
            EngineOptions::default()
                .with_poll_interval(Duration::from_millis(100))
                .with_drain(Duration::from_millis(200)),
        );
    Rig {
        state,
        proxy,
        engine,
    }
}

fn listen_file(root: &Path) -> PathBuf {
    root.join("listen")
}

fn get(addr: std::net::SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET /version HTTP/1.1\r\nHost: web.paused\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_deployment_survives_its_program_and_resume_finishes_it() {
    if let Some(dir) = std::env::var_os(CHILD) {
        // the first program: deploys v2, which pauses before traffic, and exits
        let root = PathBuf::from(dir);
        let listen = std::fs::read_to_string(listen_file(&root))
            .unwrap()
            .parse()
            .unwrap();
        let rig = rig(&root, listen).await;
        let report = rig.engine.deploy(&request(&root, "2")).await.unwrap();
        let paused = report.paused.expect("paused");
        assert_eq!(paused.stage, Stage::BeforeTraffic);
        assert_eq!(paused.reason, "waiting for approval");
        println!("child: paused at {}", paused.stage);
        return;
    }
    let scratch = Scratch::new("paused");
    let root = scratch.path().to_path_buf();
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    std::fs::write(listen_file(&root), listen.to_string()).unwrap();
    let mut rig = rig(&root, listen).await;
    // v1 live, without the hook
    let mut v1 = request(&root, "1");
    v1.hooks.clear();
    let first = rig.engine.deploy(&v1).await.unwrap();
    let body = get(listen);
    assert!(body.contains("\"version\":\"1\""), "v1 serves: {body}");

    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_paused_deployment_survives_its_program_and_resume_finishes_it",
            "--nocapture",
        ])
        .env(CHILD, &root)
        .status()
        .unwrap();
    assert!(child.success(), "the first program paused and exited");

    // its program is gone: v2 runs, v1 still has all the traffic, the lock is free
    let router = rig.proxy.router();
    assert_eq!(
        router.routes(&app()).await.unwrap(),
        RouteTable::single(first.live.clone())
    );
    let fleet = LocalFleet::new(rig.state.clone(), LocalImage::new(rig.state.clone()));
    let groups: Vec<GroupId> = fleet
        .groups(&app())
        .await
        .unwrap()
        .into_iter()
        .map(|g| g.id)
        .collect();
    assert_eq!(groups.len(), 2, "{groups:?}");
    let body = get(listen);
    assert!(
        body.contains("\"version\":\"1\""),
        "v1 still serves: {body}"
    );

    // another program resumes
    let done = rig.engine.resume(&request(&root, "2")).await.unwrap();
    assert!(done.paused.is_none());
    assert_ne!(done.live, first.live);
    assert_eq!(
        router.routes(&app()).await.unwrap(),
        RouteTable::single(done.live.clone())
    );
    let body = get(listen);
    assert!(body.contains("\"version\":\"2\""), "v2 serves: {body}");
    let calls = std::fs::read_to_string(root.join("calls")).unwrap();
    assert_eq!(
        calls.lines().collect::<Vec<_>>(),
        ["before_traffic false", "before_traffic true"],
        "the hook paused once, then passed on resume"
    );
    // clean up the processes
    for g in fleet.groups(&app()).await.unwrap() {
        let _ = router.set_routes(&app(), &RouteTable::empty()).await;
        let _ = router.detach(&app(), &g.id).await;
        fleet.destroy(&app(), &g.id).await.unwrap();
    }
    rig.proxy.stop();
}
