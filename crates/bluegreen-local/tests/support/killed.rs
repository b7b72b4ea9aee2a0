//! The local provider as the crash harness's subject, shared by the `killed` and
//! `killed_task` tests: every program of a case drives one `bluegreen-proxy`
//! process and one state directory.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::{image_dir, proxy_bin, state};
use bluegreen_core::{async_trait, App, DeployRequest, EngineOptions, ImageSource, ReleaseTask};
use bluegreen_local::{FileLock, LocalFleet, LocalImage, LocalProxy, StateDir};
use bluegreen_testkit::crash::{Case, Rig, Subject};

/// The size of the groups.
pub const SIZE: u32 = 3;

fn request(app: &App, image: &Path) -> DeployRequest {
    DeployRequest::new(app.clone(), ImageSource::Artifact(image.to_path_buf()))
        .size(SIZE)
        .setting("command", "run")
        .setting("stop_timeout_ms", "3000")
}

/// The release under test: its task appends one line to the marker file, then
/// takes a second, like a migration.
fn with_task(request: DeployRequest, marker: &Path) -> DeployRequest {
    request.env("MARKER", marker.display().to_string()).task(
        ReleaseTask::new(["sh", "-c", "echo ran >> \"$MARKER\"; sleep 1"])
            .with_timeout(Duration::from_secs(60)),
    )
}

fn marker(case: &Case) -> std::path::PathBuf {
    case.dir.join("marker")
}

/// The proxy process of the state directory: started by the first program of the
/// case, on a free port, and reached by the others.
async fn proxy(state: &StateDir) -> LocalProxy {
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    LocalProxy::process(state, listen, &proxy_bin())
        .await
        .unwrap()
}

/// Processes marked as instances of the state directory, named by group and pid.
fn marked_processes(state: &Path) -> Vec<String> {
    let want = format!("BLUEGREEN_STATE_DIR={}", state.display());
    let mut found = Vec::new();
    for pid in std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
    {
        let running = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                !s.rsplit(')')
                    .next()
                    .unwrap_or_default()
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(false);
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let vars: Vec<&[u8]> = env.split(|b| *b == 0).collect();
        if running && vars.contains(&want.as_bytes()) {
            let group = vars
                .iter()
                .find_map(|v| v.strip_prefix(b"BLUEGREEN_GROUP="))
                .map(|g| String::from_utf8_lossy(g).into_owned())
                .unwrap_or_default();
            found.push(format!("{group} (pid {pid})"));
        }
    }
    found
}

/// The local provider as the crash harness's subject; with `task`, the killed
/// deployment's release has a migration-style task that must run exactly once.
pub struct Local {
    pub task: bool,
}

#[async_trait]
impl Subject for Local {
    async fn rig(&self, case: &Case) -> Rig {
        let state = state(&case.dir);
        let proxy = proxy(&state).await;
        let image = LocalImage::new(state.clone());
        let fleet = LocalFleet::new(state.clone(), image.clone());
        let app = App::new("web", "killed").unwrap();
        Rig::new(
            Arc::new(image),
            Arc::new(fleet),
            Arc::new(proxy.router()),
            if self.task {
                with_task(request(&app, &case.dir.join("image-2")), &marker(case))
            } else {
                request(&app, &case.dir.join("image-2"))
            },
        )
        .with_lock(Arc::new(FileLock::new(&state)))
        .with_options(
            EngineOptions::default()
                .with_poll_interval(Duration::from_millis(100))
                .with_drain(Duration::from_millis(500))
                .with_keep(0),
        )
    }

    /// v1 live (without a task); v2 (the killed deployment) takes 1.5 s to start.
    async fn before(&self, case: &Case, rig: &Rig) {
        let v1 = image_dir(&case.dir, "1", "");
        image_dir(&case.dir, "2", "--start-delay-ms 1500");
        rig.engine()
            .deploy(&request(&rig.request.app, &v1))
            .await
            .unwrap();
    }

    async fn leftovers(&self, case: &Case, _rig: &Rig) -> Vec<String> {
        // a task's process carries the state directory too: one still running
        // after the deployment converged is a stray
        marked_processes(state(&case.dir).root())
    }

    async fn invariants(&self, case: &Case, _rig: &Rig) -> Vec<String> {
        if !self.task {
            return Vec::new();
        }
        let runs = std::fs::read_to_string(marker(case))
            .map(|s| s.lines().count())
            .unwrap_or(0);
        if runs == 1 {
            Vec::new()
        } else {
            vec![format!("the release task ran {runs} times, not once")]
        }
    }

    /// Whatever a failed case left: its groups, and the proxy process.
    async fn after(&self, case: &Case, rig: &Rig) {
        let app = &rig.request.app;
        for g in rig.fleet.groups(app).await.unwrap_or_default() {
            let _ = rig.fleet.destroy(app, &g.id).await;
        }
        proxy(&state(&case.dir)).await.stop();
    }
}
