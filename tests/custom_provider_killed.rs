//! The custom-provider example's toy platform with its deployer killed (SIGKILL) at
//! every event of a deployment, then the deployment run again from a fresh program:
//! it converges, the file lock is free, and only the live group's instances run.
//!
//! The testkit's crash harness re-executes this test binary as the deployer and as
//! the rerun. Every program of a case reaches the same platform: the toy platform's
//! directory (groups, images, instances as processes that outlive their deployer),
//! one `bluegreen-proxy` process and one lock file.

#[path = "../examples/custom_provider.rs"]
mod example;

use std::sync::Arc;
use std::time::Duration;

use bluegreen::local::{FileLock, LocalProxy, StateDir};
use bluegreen::{async_trait, App, DeployRequest, EngineOptions, ImageSource};
use bluegreen_testkit::crash::{Case, CrashHarness, Rig, Subject};
use example::{ToyFleet, ToyImage};

/// The size of the groups.
const SIZE: u32 = 2;

fn request(app: &App, version: &str) -> DeployRequest {
    DeployRequest::new(
        app.clone(),
        ImageSource::Reference(format!("toy:{version}")),
    )
    .size(SIZE)
}

/// The lock and the proxy's record.
fn state(case: &Case) -> StateDir {
    StateDir::new(case.dir.join("state")).unwrap()
}

/// The proxy process of the case: started by the first program, reached by the others.
async fn proxy(case: &Case) -> LocalProxy {
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let binary = bluegreen_testkit::binaries::binary("bluegreen-proxy", "bluegreen-proxy");
    LocalProxy::process(&state(case), listen, &binary)
        .await
        .unwrap()
}

struct Toy;

#[async_trait]
impl Subject for Toy {
    async fn rig(&self, case: &Case) -> Rig {
        let platform = case.dir.join("toy");
        let image = ToyImage::new(&platform);
        let fleet = ToyFleet::new(&platform, image.clone(), &example::sample_app());
        let app = App::new("web", "killed").unwrap();
        Rig::new(
            Arc::new(image),
            Arc::new(fleet),
            Arc::new(proxy(case).await.router()),
            request(&app, "2"),
        )
        .with_lock(Arc::new(FileLock::new(&state(case))))
        .with_options(
            EngineOptions::default()
                .with_poll_interval(Duration::from_millis(100))
                .with_drain(Duration::from_millis(200))
                .with_keep(0),
        )
    }

    /// Version 1 live, the release the killed deployment replaces.
    async fn before(&self, _case: &Case, rig: &Rig) {
        rig.engine()
            .deploy(&request(&rig.request.app, "1"))
            .await
            .unwrap();
    }

    async fn leftovers(&self, case: &Case, _rig: &Rig) -> Vec<String> {
        example::processes(&case.dir.join("toy"))
            .iter()
            .map(|p| format!("{}-{} (pid {})", p.group, p.index, p.pid))
            .collect()
    }

    /// Whatever a failed case left: its groups, and the proxy process.
    async fn after(&self, case: &Case, rig: &Rig) {
        let app = &rig.request.app;
        for g in rig.fleet.groups(app).await.unwrap_or_default() {
            let _ = rig.fleet.destroy(app, &g.id).await;
        }
        proxy(case).await.stop();
    }
}

fn main() {
    CrashHarness::new(Toy).expect_leftovers(SIZE as usize).run();
}
