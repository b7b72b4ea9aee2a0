//! Shared fixtures: the daemon, `FROM scratch` images around a static build of the
//! sample app, a cleanup guard and a bounded HTTP load on loopback.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bluegreen_core::App;
use bluegreen_docker::Docker;

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

/// The workspace's target directory (tests run from target/<profile>/deps/).
fn target_root() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The static sample app, built once per test program.
pub fn sample_app() -> PathBuf {
    static BUILT: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = &*built {
        return p.clone();
    }
    let target = target_root();
    let triple = host_triple();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args([
            "build",
            "--release",
            "-p",
            "sample-app",
            "--target",
            &triple,
            "--target-dir",
        ])
        .arg(&target)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building the static sample-app failed");
    let path = target.join(&triple).join("release/sample-app");
    assert!(path.is_file(), "{} is missing", path.display());
    *built = Some(path.clone());
    path
}

/// The bluegreen proxy's binary (debug build), built when missing.
pub fn proxy_bin() -> PathBuf {
    static BUILD: Mutex<()> = Mutex::new(());
    let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let path = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("bluegreen-proxy");
    if !path.is_file() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args(["build", "-p", "bluegreen-proxy", "--bin", "bluegreen-proxy"])
            .status()
            .expect("cargo runs");
        assert!(status.success(), "cargo build --bin bluegreen-proxy failed");
    }
    path
}

/// A unique temporary directory, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "bluegreen-docker-{tag}-{}-{:08x}",
            std::process::id(),
            random()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn random() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish() as u32
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
    App::new(format!("{prefix}-{:06x}", random() & 0xff_ffff), env).unwrap()
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
                let out = std::process::Command::new("docker")
                    .args(args)
                    .args(&filters)
                    .output();
                out.map(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .split_whitespace()
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
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
                let _ = std::process::Command::new("docker")
                    .args(["rmi", "-f"])
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

#[allow(unused_imports)]
pub use bluegreen_testkit::http_load::HttpLoad as Load;

/// This machine's target triple (`rustc -vV`): the static sample app is built for it,
/// so that the image runs on this daemon.
fn host_triple() -> String {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = std::process::Command::new(rustc)
        .arg("-vV")
        .output()
        .expect("rustc runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .expect("rustc -vV names the host")
        .to_owned()
}
