//! Shared fixtures: the sample app's binary, image directories, a state directory
//! and a bounded HTTP load on loopback.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bluegreen_local::StateDir;

/// The workspace's `target/debug` (or the profile the tests run in).
fn target_dir() -> PathBuf {
    // tests run from target/<profile>/deps/<test>-<hash>
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

/// The sample app's binary, built when missing.
pub fn sample_app() -> PathBuf {
    binary("sample-app")
}

/// The proxy's binary, built when missing.
pub fn proxy_bin() -> PathBuf {
    binary("bluegreen-proxy")
}

fn binary(name: &str) -> PathBuf {
    let path = target_dir().join(name);
    static BUILD: Mutex<()> = Mutex::new(());
    let _guard = BUILD.lock().unwrap();
    if !path.is_file() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args(["build", "--bin", name])
            .status()
            .expect("cargo runs");
        assert!(status.success(), "cargo build --bin {name} failed");
    }
    assert!(path.is_file(), "{} is missing", path.display());
    path
}

/// A unique temporary directory, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "bluegreen-{tag}-{}-{:x}",
            std::process::id(),
            fastrand_u64()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn state(&self) -> StateDir {
        StateDir::new(self.0.join("state")).unwrap()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chmod")
            .args(["-R", "u+w"])
            .arg(&self.0)
            .status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn fastrand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id() as u64);
    h.finish()
}

/// An image directory: the sample app and a `run` script that starts it as
/// `version` with `flags`.
pub fn image_dir(root: &Path, version: &str, flags: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = root.join(format!("image-{version}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(sample_app(), dir.join("sample-app")).unwrap();
    let script = dir.join("run");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nexec \"$(dirname \"$0\")/sample-app\" --app-version {version} {flags}\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

#[allow(unused_imports)]
pub use bluegreen_testkit::http_load::HttpLoad as Load;
