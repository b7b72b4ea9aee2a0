//! Shared fixtures: image directories around the sample app, a state directory in a
//! scratch directory, and the proxy's binary.
#![allow(dead_code)]

pub mod killed;
pub mod look_alikes;

use std::path::{Path, PathBuf};

use bluegreen_local::StateDir;
#[allow(unused_imports)]
pub use bluegreen_testkit::scratch::Scratch;

/// The proxy's binary, built when missing or out of date.
pub fn proxy_bin() -> PathBuf {
    bluegreen_testkit::binaries::binary("bluegreen-proxy", "bluegreen-proxy")
}

/// The state directory `state` in `dir`.
pub fn state(dir: &Path) -> StateDir {
    StateDir::new(dir.join("state")).unwrap()
}

/// An image directory in `root`: the sample app and a `run` script that starts it as
/// `version` with `flags`. Made once: a second call gives the same directory.
pub fn image_dir(root: &Path, version: &str, flags: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = root.join(format!("image-{version}"));
    let script = dir.join("run");
    if script.is_file() {
        return dir;
    }
    std::fs::create_dir_all(&dir).unwrap();
    let sample_app = bluegreen_testkit::binaries::binary("sample-app", "sample-app");
    std::fs::copy(sample_app, dir.join("sample-app")).unwrap();
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
