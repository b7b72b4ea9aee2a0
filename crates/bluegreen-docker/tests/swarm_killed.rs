//! A program deploying to the swarm killed (SIGKILL) mid-deployment, then the
//! deployment run again from a fresh program: it converges, the swarm lock is free,
//! and no stray service is left.
//!
//! The testkit's crash harness re-executes this test binary as the deployer and as
//! the rerun; every program of a case drives one `bluegreen-proxy` process, which
//! outlives them, and takes the app's [`SwarmLock`]. The deployer talks to manager 1
//! and the rerun to manager 2: the lock the killed deployer left is found through
//! another manager, and waited out (its lease is short here). The cases kill where
//! the swarm's state changes: the image pushed, the service created, its tasks
//! starting, the new group attached to the router, the traffic moved, the old
//! service removed.

mod swarm_support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bluegreen_core::{async_trait, App, DeployRequest, EngineOptions};
use bluegreen_docker::{RegistryImage, SwarmFleet, SwarmLock};
use bluegreen_local::{LocalProxy, StateDir};
use bluegreen_testkit::crash::{Case, CrashHarness, Rig, Subject, ROLE_VAR};
use swarm_support::{build, context, labelled_services, manager_at, swarm, Cleanup, Harness};

const SIZE: u32 = 3;

fn request(app: &App, context: &Path) -> DeployRequest {
    DeployRequest::new(app.clone(), build(context.to_path_buf()))
        .size(SIZE)
        .setting("stop_timeout_ms", "1000")
        .setting("memory", "64m")
        .setting("spread", "node.labels.bluegreen.node")
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

struct Swarm(Harness);

#[async_trait]
impl Subject for Swarm {
    async fn rig(&self, case: &Case) -> Rig {
        let h = &self.0;
        // the rerun goes through another manager than the deployer and the checks
        let node = usize::from(std::env::var(ROLE_VAR).as_deref() == Ok("rerun"));
        let docker = manager_at(h, node).await.unwrap();
        let image = RegistryImage::new(docker.clone(), h.registry.clone()).unwrap();
        let fleet =
            SwarmFleet::new(docker.clone()).with_registry_auth(image.credentials().cloned());
        let state = state(case);
        let proxy = proxy(&state).await;
        Rig::new(
            Arc::new(image),
            Arc::new(fleet),
            Arc::new(proxy.router()),
            request(&case.app("killed", "swarm"), &case.dir.join("context-2")),
        )
        .with_lock(Arc::new(SwarmLock::new(docker)))
        .with_options(
            EngineOptions::default()
                .with_poll_interval(Duration::from_millis(200))
                .with_drain(Duration::from_millis(500))
                .with_keep(0)
                .with_lock_lease(Duration::from_secs(3))
                .with_health_timeout(Duration::from_secs(90)),
        )
    }

    /// v1 live; v2 (the killed deployment) takes 1.5 s to start.
    async fn before(&self, case: &Case, rig: &Rig) {
        Cleanup::new(&self.0, &rig.request.app).run();
        let v1 = context(&case.dir, "1", &[]);
        context(&case.dir, "2", &[("SAMPLE_START_DELAY_MS", "1500")]);
        rig.engine()
            .deploy(&request(&rig.request.app, &v1))
            .await
            .unwrap();
    }

    /// The app's services (named by their groups).
    async fn leftovers(&self, _case: &Case, rig: &Rig) -> Vec<String> {
        labelled_services(&self.0, &rig.request.app)
    }

    /// Every service and image of the case's app, its lock, and the proxy process.
    async fn after(&self, case: &Case, rig: &Rig) {
        Cleanup::new(&self.0, &rig.request.app).run();
        if let Ok(docker) = manager_at(&self.0, 0).await {
            let _ = SwarmLock::new(docker).forget(&rig.request.app).await;
        }
        proxy(&state(case)).await.stop();
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let Some((h, _)) = runtime.block_on(swarm("swarm killed")) else {
        return;
    };
    drop(runtime);
    CrashHarness::new(Swarm(h))
        .expect_leftovers(1)
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
