//! A deploying program killed (SIGKILL) mid-deployment, then the deployment run
//! again from a fresh program: it converges, the lock is free, and no stray
//! container is left.
//!
//! The testkit's crash harness re-executes this test binary as the deployer and as
//! the rerun; every program of a case drives one `bluegreen-proxy` process, which
//! outlives them, and shares a file lock. The local provider's test kills at every
//! event (the engine is the same); this one kills where Docker's state changes.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bluegreen_core::{async_trait, App, DeployRequest, EngineOptions, ImageSource};
use bluegreen_docker::{DockerFleet, DockerFleetOptions, DockerImage};
use bluegreen_local::{FileLock, LocalProxy, StateDir};
use bluegreen_testkit::crash::{Case, CrashHarness, Rig, Subject};
use support::{context, labelled_containers, Cleanup};

const SIZE: u32 = 3;

fn request(app: &App, context: &Path) -> DeployRequest {
    DeployRequest::new(
        app.clone(),
        ImageSource::Build {
            context: context.to_path_buf(),
            args: Default::default(),
        },
    )
    .size(SIZE)
    .setting("stop_timeout_ms", "2000")
}

fn state(case: &Case) -> StateDir {
    StateDir::new(case.dir.join("state")).unwrap()
}

/// The proxy process of the case: started by its first program on a free port,
/// reached by the others.
async fn proxy(state: &StateDir) -> LocalProxy {
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let binary = bluegreen_testkit::binaries::binary("bluegreen-proxy", "bluegreen-proxy");
    LocalProxy::process(state, listen, &binary).await.unwrap()
}

struct Docker;

#[async_trait]
impl Subject for Docker {
    async fn rig(&self, case: &Case) -> Rig {
        let docker = bluegreen_docker::connect().await.unwrap();
        let state = state(case);
        let proxy = proxy(&state).await;
        Rig::new(
            Arc::new(DockerImage::new(docker.clone())),
            Arc::new(DockerFleet::new(docker, DockerFleetOptions::default())),
            Arc::new(proxy.router()),
            request(&case.app("killed", "docker"), &case.dir.join("context-2")),
        )
        .with_lock(Arc::new(FileLock::new(&state)))
        .with_options(
            EngineOptions::default()
                .with_poll_interval(Duration::from_millis(100))
                .with_drain(Duration::from_millis(500))
                .with_keep(0)
                .with_health_timeout(Duration::from_secs(60)),
        )
    }

    /// v1 live; v2 (the killed deployment) takes 1.5 s to start.
    async fn before(&self, case: &Case, rig: &Rig) {
        Cleanup::new(&rig.request.app).run();
        let v1 = context(&case.dir, "1", &[]);
        context(&case.dir, "2", &[("SAMPLE_START_DELAY_MS", "1500")]);
        rig.engine()
            .deploy(&request(&rig.request.app, &v1))
            .await
            .unwrap();
    }

    async fn leftovers(&self, _case: &Case, rig: &Rig) -> Vec<String> {
        labelled_containers(&rig.request.app)
    }

    /// Every container and image of the case's app, and the proxy process.
    async fn after(&self, case: &Case, rig: &Rig) {
        Cleanup::new(&rig.request.app).run();
        proxy(&state(case)).await.stop();
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    if std::env::var_os(bluegreen_testkit::crash::ROLE_VAR).is_none()
        && runtime.block_on(support::docker("killed")).is_none()
    {
        return;
    }
    drop(runtime);
    CrashHarness::new(Docker)
        .expect_leftovers(SIZE as usize)
        .at([
            "ImageReady",
            "GroupLaunched",
            "Health",
            "StepFinished(Attach)",
            "TrafficShifted",
            "GroupDestroyed",
        ])
        .run();
}
