//! The engine's traffic guarantees on real processes behind the real proxy, under
//! load: traffic never moves to a group the router reports unhealthy, and a group
//! that dies after the switch is switched back from during the bake.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bluegreen_core::{
    App, DeployRequest, Engine, EngineOptions, ErrorKind, Fleet, ImageSource, RouteTable, Router,
    Step, Strategy,
};
use bluegreen_local::{FileLock, LocalFleet, LocalImage, LocalProxy};
use bluegreen_testkit::http_load::HttpLoad as Load;
use bluegreen_testkit::zero_downtime::ZeroDowntime;
use support::{image_dir, state, Scratch};

const CLIENTS: usize = 8;

struct Rig {
    tmp: Scratch,
    fleet: LocalFleet,
    proxy: LocalProxy,
    engine: Engine,
    app: App,
}

async fn rig(tag: &str, options: EngineOptions) -> Rig {
    let tmp = Scratch::new(tag);
    let state = state(tmp.path());
    let image = LocalImage::new(state.clone());
    let fleet = LocalFleet::new(state.clone(), image.clone());
    let proxy = LocalProxy::embedded(
        "127.0.0.1:0".parse().unwrap(),
        bluegreen_proxy::ProxyOptions::default().with_health(
            bluegreen_proxy::HealthCheckOptions::default()
                .with_interval(Duration::from_millis(200)),
        ),
    )
    .await
    .unwrap();
    let engine = Engine::new(image, fleet.clone(), proxy.router())
        .with_lock(Arc::new(FileLock::new(&state)))
        .with_options(options.with_poll_interval(Duration::from_millis(100)));
    Rig {
        tmp,
        fleet,
        proxy,
        engine,
        app: App::new("web", tag).unwrap(),
    }
}

impl Rig {
    fn request(&self, version: &str, flags: &str) -> DeployRequest {
        DeployRequest::new(
            self.app.clone(),
            ImageSource::Artifact(image_dir(self.tmp.path(), version, flags)),
        )
        .size(2)
        .setting("command", "run")
        .setting("stop_timeout_ms", "3000")
    }

    async fn routes(&self) -> RouteTable {
        self.proxy.router().routes(&self.app).await.unwrap()
    }

    async fn clean(&self) {
        let router = self.proxy.router();
        router
            .set_routes(&self.app, &Default::default())
            .await
            .unwrap();
        for g in self.fleet.groups(&self.app).await.unwrap() {
            router.detach(&self.app, &g.id).await.unwrap();
            self.fleet.destroy(&self.app, &g.id).await.unwrap();
        }
    }
}

/// v2 passes the fleet's probe (its `health_path` is `/version`) but never the
/// proxy's own health check (`/health`): the engine must not give it any traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_never_moves_to_a_group_the_router_reports_unhealthy() {
    let options = EngineOptions::default()
        .with_confirm_timeout(Duration::from_secs(3))
        .with_drain(Duration::from_millis(200));
    for strategy in [
        Strategy::blue_green(),
        Strategy::canary([25, 50], Duration::from_millis(500)),
    ] {
        let rig = rig("routerhealth", options.clone()).await;
        let v1 = rig.engine.deploy(&rig.request("1", "")).await.unwrap();
        let mut load = ZeroDowntime::new(rig.proxy.address(), format!("{}", rig.app))
            .with_clients(CLIENTS)
            .with_settle(Duration::from_millis(300))
            .start()
            .await;
        let e = load
            .phase(
                "deploy",
                rig.engine.deploy(
                    &rig.request("2", "--never-healthy")
                        .setting("health_path", "/version")
                        .strategy(strategy.clone()),
                ),
            )
            .await
            .unwrap_err();
        let seen = load.finish().await;
        println!("{strategy:?}: {e}");
        assert_eq!(e.kind(), ErrorKind::Unhealthy, "{e}");
        assert_eq!(
            e.step(),
            Some(Step::Verify),
            "refused before any traffic: {e}"
        );
        assert!(e.rolled_back(), "{e}");
        assert!(e.to_string().contains("0 of 2 members"), "{e}");
        assert_eq!(rig.routes().await, RouteTable::single(v1.live.clone()));
        assert_eq!(seen.total.versions, ["1"], "no request reached v2");
        assert_eq!(
            rig.fleet.groups(&rig.app).await.unwrap().len(),
            1,
            "v2 is removed"
        );
        rig.clean().await;
    }
}

/// v2 dies 3 s after the switch; the bake after the switch (30 s) sees it and
/// moves the traffic back to v1, which stayed warm. Only requests in flight at the
/// crash may fail (one per client at most).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_that_dies_during_the_bake_after_the_switch_is_switched_back() {
    let rig = rig(
        "bakeafter",
        EngineOptions::default()
            .with_keep(1)
            .with_drain(Duration::from_millis(200)),
    )
    .await;
    let v1 = rig.engine.deploy(&rig.request("1", "")).await.unwrap();
    let load = Load::start(rig.proxy.address(), &format!("{}", rig.app), CLIENTS);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = std::time::Instant::now();
    // the processes start, become healthy in well under a second, get the
    // traffic, and exit 3 s or so after the switch
    let e = rig
        .engine
        .deploy(
            &rig.request("2", "--crash-after-ms 3500")
                .strategy(Strategy::blue_green().with_bake_after(Duration::from_secs(30))),
        )
        .await
        .unwrap_err();
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen = load.stop().await;
    println!(
        "{e} after {took:?}; {} requests, {} failed, versions {:?}",
        seen.ok,
        seen.failed.len(),
        seen.versions
    );
    assert_eq!(e.step(), Some(Step::Bake), "{e}");
    assert!(e.rolled_back(), "{e}");
    assert!(e.to_string().contains("after the switch"), "{e}");
    assert!(
        took < Duration::from_secs(20),
        "switched back during the bake, not at its end: {took:?}"
    );
    assert_eq!(rig.routes().await, RouteTable::single(v1.live.clone()));
    assert!(
        seen.versions.contains(&"2".to_owned()),
        "v2 had the traffic: {:?}",
        seen.versions
    );
    let after = Load::start(rig.proxy.address(), &format!("{}", rig.app), 2);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = after.stop().await;
    assert_eq!(after.versions, ["1"], "v1 has the traffic again");
    assert!(after.failed.is_empty(), "{:?}", after.failed);
    assert!(
        seen.failed.len() <= CLIENTS,
        "only requests in flight at the crash may fail: {} failed: {:?}",
        seen.failed.len(),
        &seen.failed[..seen.failed.len().min(5)]
    );
    assert_eq!(
        rig.fleet.groups(&rig.app).await.unwrap().len(),
        1,
        "v2 is removed"
    );
    rig.clean().await;
}

/// An artifact that cannot possibly run is refused while the request is validated,
/// naming it and why: no image stored, no process started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_artifact_that_cannot_run_is_refused_before_anything_happens() {
    use std::os::unix::fs::PermissionsExt;
    let rig = rig("artifact", EngineOptions::default()).await;
    let text = rig.tmp.join("hostname");
    std::fs::write(&text, "a-host\n").unwrap();
    let executable_text = rig.tmp.join("notes");
    std::fs::write(&executable_text, "just words\n").unwrap();
    std::fs::set_permissions(&executable_text, std::fs::Permissions::from_mode(0o755)).unwrap();
    let executable = |name: &str, bytes: &[u8]| {
        let path = rig.tmp.join(name);
        std::fs::write(&path, bytes).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    };
    // an ELF header of a 64-bit executable for a machine that is not this one
    let (machine, other): (u16, &str) = if std::env::consts::ARCH == "aarch64" {
        (62, "x86-64")
    } else {
        (183, "AArch64")
    };
    let mut elf = b"\x7fELF\x02\x01\x01\x00".to_vec();
    elf.extend([0; 8]);
    elf.extend(2u16.to_le_bytes());
    elf.extend(machine.to_le_bytes());
    elf.extend([0; 44]);
    let foreign = executable("foreign", &elf);
    let no_interpreter = executable("script", b"#!/no/such/interpreter\necho hi\n");
    let dangling = rig.tmp.join("dangling");
    std::os::unix::fs::symlink(rig.tmp.join("gone"), &dangling).unwrap();
    let missing = rig.tmp.join("missing-artifact");
    let artifact = |path: &std::path::Path| {
        DeployRequest::new(rig.app.clone(), ImageSource::Artifact(path.to_path_buf()))
    };
    let dir = image_dir(rig.tmp.path(), "1", "");
    let cases: Vec<(DeployRequest, &str, &str)> = vec![
        (artifact(&foreign), "invalid source", other),
        (
            artifact(&no_interpreter),
            "invalid source",
            "/no/such/interpreter",
        ),
        (artifact(&dangling), "invalid source", "symbolic link"),
        (artifact(&missing), "not found", "missing-artifact"),
        (
            artifact(rig.tmp.path()),
            "invalid settings.command",
            "is a directory",
        ),
        (
            DeployRequest::new(rig.app.clone(), ImageSource::Artifact(text.clone())),
            "invalid source",
            "is not executable",
        ),
        (
            DeployRequest::new(rig.app.clone(), ImageSource::Artifact(executable_text)),
            "invalid source",
            "neither a program (ELF) nor a script",
        ),
        (
            DeployRequest::new(rig.app.clone(), ImageSource::Artifact(dir.clone())),
            "invalid settings.command",
            "is a directory",
        ),
        (
            DeployRequest::new(rig.app.clone(), ImageSource::Artifact(dir))
                .setting("command", "missing"),
            "not found",
            "missing",
        ),
    ];
    // a text file of the system's, executable or not
    let hostname = std::path::Path::new("/etc/hostname");
    let cases = cases.into_iter().chain(hostname.is_file().then(|| {
        (
            artifact(hostname),
            "invalid source",
            "`/etc/hostname` cannot run",
        )
    }));
    for (request, field, why) in cases {
        let e = rig.engine.deploy(&request).await.unwrap_err();
        assert!(e.to_string().contains(field), "{e}");
        assert!(e.to_string().contains(why), "{e}");
    }
    assert!(
        bluegreen_core::Image::images(
            &bluegreen_local::LocalImage::new(state(rig.tmp.path())),
            &rig.app
        )
        .await
        .unwrap()
        .is_empty(),
        "nothing was stored"
    );
    assert!(rig.fleet.groups(&rig.app).await.unwrap().is_empty());
    // a real program passes
    rig.engine
        .deploy(&rig.request("2", ""))
        .await
        .expect("the sample app deploys");
    rig.clean().await;
}
