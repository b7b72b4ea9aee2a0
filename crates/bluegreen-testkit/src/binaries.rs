//! Binaries of the workspace, built once per test program, for tests that run real
//! programs (a sample app in an image, a proxy process).
//!
//! Built with `escargot` (`cargo build --message-format=json`), which names the
//! artifact cargo produced instead of a guessed path under `target/`, in the target
//! directory of the running test program, so that the build shares its cache.
//!
//! [`binary`] and [`static_binary`] panic when the build fails, as a test wants;
//! [`try_binary`] and [`try_static_binary`] return the failure, for examples and
//! tools that report it to their user.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The binary `bin` of the workspace package `package`, built like the running test
/// program (debug or release) when missing or out of date.
///
/// ```no_run
/// let proxy = bluegreen_testkit::binaries::binary("bluegreen-proxy", "bluegreen-proxy");
/// assert!(proxy.is_file());
/// ```
///
/// # Panics
///
/// When cargo fails to build it; [`try_binary`] returns the failure instead.
pub fn binary(package: &str, bin: &str) -> PathBuf {
    try_binary(package, bin).unwrap_or_else(|e| panic!("{e}"))
}

/// [`binary`], returning a failed build instead of panicking.
///
/// # Errors
///
/// [`BuildError`] when cargo cannot be run, the build fails, or the artifact it
/// names is missing.
///
/// ```no_run
/// # fn main() -> Result<(), bluegreen_testkit::binaries::BuildError> {
/// let app = bluegreen_testkit::binaries::try_binary("sample-app", "sample-app")?;
/// println!("{}", app.display());
/// # Ok(())
/// # }
/// ```
pub fn try_binary(package: &str, bin: &str) -> Result<PathBuf, BuildError> {
    built(package, bin, None)
}

/// The binary `bin` of `package`, built in release mode for this machine's target
/// with the C runtime linked in (`-C target-feature=+crt-static`): it runs alone, in
/// a `FROM scratch` container image.
///
/// # Panics
///
/// When cargo fails to build it; [`try_static_binary`] returns the failure instead.
pub fn static_binary(package: &str, bin: &str) -> PathBuf {
    try_static_binary(package, bin).unwrap_or_else(|e| panic!("{e}"))
}

/// [`static_binary`], returning a failed build instead of panicking.
///
/// # Errors
///
/// [`BuildError`] as for [`try_binary`].
pub fn try_static_binary(package: &str, bin: &str) -> Result<PathBuf, BuildError> {
    built(package, bin, Some(escargot::CURRENT_TARGET))
}

/// A binary that could not be built: the package, the binary and cargo's reason.
#[derive(Debug)]
pub struct BuildError {
    package: String,
    bin: String,
    reason: String,
}

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "building {} of {}: {}",
            self.bin, self.package, self.reason
        )
    }
}

impl std::error::Error for BuildError {}

/// A package, a binary, and whether it is static.
type Key = (String, String, bool);

fn built(package: &str, bin: &str, static_target: Option<&str>) -> Result<PathBuf, BuildError> {
    static BUILT: Mutex<Option<HashMap<Key, PathBuf>>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let key = (package.to_owned(), bin.to_owned(), static_target.is_some());
    if let Some(path) = built.get_or_insert_with(HashMap::new).get(&key) {
        return Ok(path.clone());
    }
    let failed = |reason: String| BuildError {
        package: package.to_owned(),
        bin: bin.to_owned(),
        reason,
    };
    let mut build = escargot::CargoBuild::new()
        .package(package)
        .bin(bin)
        .target_dir(target_dir());
    build = match static_target {
        // with --target, RUSTFLAGS reach the target's code only, not build scripts
        Some(triple) => build
            .release()
            .target(triple)
            .env("RUSTFLAGS", "-C target-feature=+crt-static"),
        None => build.current_release(),
    };
    let path = build
        .run()
        .map_err(|e| failed(e.to_string()))?
        .path()
        .to_path_buf();
    if !path.is_file() {
        return Err(failed(format!(
            "cargo named {}, which is missing",
            path.display()
        )));
    }
    built
        .get_or_insert_with(HashMap::new)
        .insert(key, path.clone());
    Ok(path)
}

/// The target directory of the running program (`<target>/<profile>/deps/<test>`
/// for a test, `<target>/<profile>/<program>` otherwise), else cargo's default.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the running program's path");
    let profile_dir = exe.ancestors().skip(1).find(|d| {
        d.file_name()
            .is_some_and(|n| n != "deps" && n != "examples")
    });
    match profile_dir.and_then(Path::parent) {
        Some(target) if target.join("CACHEDIR.TAG").is_file() => target.to_path_buf(),
        _ => std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("target")),
    }
}

/// An installed program a test needs (a service or a tool, not one of the
/// workspace's): the path in the environment variable `env`, else `name` on the
/// `PATH`. `None`, said on stderr, when there is none, so that the test can pass
/// saying it could not run, except with `CI=true`, where a missing program is a
/// failure. `install` tells the reader how to get it (it is part of the message).
///
/// ```no_run
/// let Some(valgrind) = bluegreen_testkit::binaries::installed(
///     "BLUEGREEN_VALGRIND",
///     "valgrind",
///     "scripts/services installs Debian's valgrind",
/// ) else {
///     return;
/// };
/// assert!(valgrind.is_file());
/// ```
///
/// # Panics
///
/// With `CI=true` when the program is missing, or when `env` names no file.
pub fn installed(env: &str, name: &str, install: &str) -> Option<PathBuf> {
    let found = std::env::var_os(env).map(PathBuf::from).or_else(|| {
        std::env::split_paths(&std::env::var_os("PATH")?)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    let why = match found {
        Some(path) if path.is_file() => return Some(path),
        Some(path) => format!("{env}={} is no file", path.display()),
        None => format!("no {name}: set {env} ({install})"),
    };
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{why}");
    }
    eprintln!("skipped: {why}");
    None
}
