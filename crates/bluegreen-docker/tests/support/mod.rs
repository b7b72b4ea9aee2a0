//! Shared fixtures: the daemon, `FROM scratch` images around a static build of the
//! sample app, and a cleanup guard.
#![allow(dead_code)]

pub mod look_alikes;

use std::path::{Path, PathBuf};

use bluegreen_core::App;
use bluegreen_docker::Docker;
#[allow(unused_imports)]
pub use bluegreen_testkit::scratch::Scratch;

/// The daemon, or `None` (after a `docker not available: skipped` line) when none
/// answers. Under `CI=true` a missing daemon fails the test.
pub async fn docker(test: &str) -> Option<Docker> {
    match bluegreen_docker::connect().await {
        Ok(d) => Some(d),
        Err(e) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{test}: no Docker daemon answers under CI=true: {e}");
            }
            println!("{test}: docker not available: skipped ({e})");
            None
        }
    }
}

/// `image.prepare(app, source, events)` as the engine calls it: through the retry
/// layer. Tests of one program run at once and remove images while others build;
/// the classic builder's cache lookup for `FROM scratch` reads every image without
/// a parent, so any such image removed meanwhile fails a build with a retryable
/// error that names it, and the engine builds again.
pub async fn prepare(
    image: &bluegreen_docker::DockerImage,
    app: &App,
    source: &bluegreen_core::ImageSource,
    events: &bluegreen_core::EventSink,
) -> bluegreen_core::Result<bluegreen_core::ImageRef> {
    use bluegreen_core::Image;
    bluegreen_core::Retry::new(image.clone(), bluegreen_core::RetryOptions::default())
        .prepare(app, source, events)
        .await
}

/// The static sample app (runs `FROM scratch`), built once per test program.
pub fn sample_app() -> PathBuf {
    bluegreen_testkit::binaries::static_binary("sample-app", "sample-app")
}

/// A build context: the static sample app `FROM scratch`, reporting `version`,
/// with extra `ENV` lines.
pub fn context(root: &Path, version: &str, env: &[(&str, &str)]) -> PathBuf {
    let dir = root.join(format!("context-{version}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(sample_app(), dir.join("sample-app")).unwrap();
    let mut dockerfile = format!(
        "FROM scratch\nCOPY sample-app /sample-app\nENV HOST=0.0.0.0 APP_VERSION={version}\n"
    );
    for (k, v) in env {
        dockerfile.push_str(&format!("ENV {k}={v}\n"));
    }
    dockerfile.push_str("ENTRYPOINT [\"/sample-app\"]\n");
    std::fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
    dir
}

/// A unique app name for this test (`prefix` and random hex).
pub fn app(prefix: &str, env: &str) -> App {
    App::new(format!("{prefix}-{:06x}", fastrand::u32(..0x100_0000)), env).unwrap()
}

/// Removes, when dropped, every container and image with the app's labels (and
/// those of `app` + `x`, which the conformance suite uses), through the `docker`
/// command so that it runs even after a panic.
pub struct Cleanup(pub Vec<App>);

impl Cleanup {
    pub fn new(app: &App) -> Cleanup {
        let other = App::new(format!("{}x", app.name()), app.environment()).unwrap();
        let c = Cleanup(vec![app.clone(), other]);
        c.run();
        c
    }

    pub fn run(&self) {
        for app in &self.0 {
            let filters = [
                "--filter".to_owned(),
                format!("label=bluegreen.app={}", app.name()),
                "--filter".to_owned(),
                format!("label=bluegreen.environment={}", app.environment()),
                "--filter".to_owned(),
                "label=bluegreen.owner=bluegreen".to_owned(),
            ];
            let ids = |args: &[&str]| -> Vec<String> {
                let mut all: Vec<&str> = args.to_vec();
                all.extend(filters.iter().map(String::as_str));
                docker_words(&all)
            };
            let containers = ids(&["ps", "-aq"]);
            if !containers.is_empty() {
                let _ = std::process::Command::new("docker")
                    .args(["rm", "-f", "-v"])
                    .args(&containers)
                    .output();
            }
            let images = ids(&["images", "-q"]);
            if !images.is_empty() {
                // --no-prune: the untagged parent layers of these images may be
                // the build cache of another test's build running at the same
                // time; pruning them fails that build ("failed to get digest")
                let _ = std::process::Command::new("docker")
                    .args(["rmi", "-f", "--no-prune"])
                    .args(&images)
                    .output();
            }
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.run();
    }
}

/// Containers (running or not) with the app's labels.
pub fn labelled_containers(app: &App) -> Vec<String> {
    let out = std::process::Command::new("docker")
        .args(["ps", "-a", "--format", "{{.Names}}"])
        .args(["--filter", &format!("label=bluegreen.app={}", app.name())])
        .args([
            "--filter",
            &format!("label=bluegreen.environment={}", app.environment()),
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Every image (intermediate steps included) with the app's `bluegreen.app` label.
pub fn labelled_images(app: &App) -> Vec<String> {
    let out = std::process::Command::new("docker")
        .args(["images", "-aq", "--filter"])
        .arg(format!("label=bluegreen.app={}", app.name()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker images: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// `docker args` through the command line: its standard output, trimmed; a
/// failure panics with its standard error.
pub fn docker_cli(args: &[&str]) -> String {
    let out = std::process::Command::new("docker")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Whether `image` (a name or an id) is on the daemon.
pub fn image_exists(image: &str) -> bool {
    std::process::Command::new("docker")
        .args(["image", "inspect", image])
        .output()
        .unwrap()
        .status
        .success()
}

/// The words `docker args` prints (ids, names), none when it fails: for
/// clean-ups, which must not panic.
pub fn docker_words(args: &[&str]) -> Vec<String> {
    std::process::Command::new("docker")
        .args(args)
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// A port on loopback that was free a moment ago.
pub fn free_port() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A copy of the static proxy binary in `dir` with random bytes after its end, so
/// that the proxy image built from it is the calling test's alone.
pub fn own_proxy_binary(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let binary = dir.join("bluegreen-proxy");
    let mut bytes = std::fs::read(bluegreen_testkit::binaries::static_binary(
        "bluegreen-proxy",
        "bluegreen-proxy",
    ))
    .unwrap();
    bytes.extend(fastrand::u64(..).to_le_bytes());
    std::fs::write(&binary, bytes).unwrap();
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
    binary
}
