//! Test support: the emulator, the schema validator and fixtures.

pub mod emulator;
pub mod schema;

use std::path::PathBuf;
use std::time::Duration;

use bluegreen_core::{App, EngineOptions, ImageSource, RetryOptions};
use bluegreen_paas::{AppFleet, DomainRouter, ReleaseFleet, ReleaseRouter, SlugImage};
use bluegreen_testkit::conformance::{Settings, Sources};

pub use emulator::{Emulator, Hang};

/// A slug tarball with `content`, in a fresh temporary file.
pub fn tarball(content: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "bluegreen-paas-{}-{:016x}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("slug.tgz");
    std::fs::write(&path, content).unwrap();
    path
}

/// The sources every suite deploys: two good tarballs and one whose dynos crash.
pub fn sources() -> Sources {
    Sources {
        good: ImageSource::Artifact(tarball("app v1")),
        other: ImageSource::Artifact(tarball("app v2")),
        never_healthy: Some(ImageSource::Artifact(tarball("app v3 CRASH"))),
    }
}

/// Short bounds for the conformance suite.
pub fn settings() -> Settings {
    let mut s = Settings::default().with_health_timeout(Duration::from_secs(30));
    s.poll_interval = Duration::from_millis(25);
    s.drain = Duration::from_millis(10);
    s
}

/// Short bounds for the engine.
pub fn engine_options() -> EngineOptions {
    EngineOptions::default()
        .with_health_timeout(Duration::from_secs(30))
        .with_poll_interval(Duration::from_millis(25))
        .with_confirm_timeout(Duration::from_secs(30))
        .with_call_timeout(Duration::from_secs(30))
        .with_drain(Duration::from_millis(10))
}

/// Quick retries.
pub fn retry() -> RetryOptions {
    RetryOptions::default().with_backoff(Duration::from_millis(10), Duration::from_millis(100))
}

/// An app.
pub fn app(name: &str) -> App {
    App::new(name, "test").unwrap()
}

/// The domain of `app` in the tests.
pub fn domain(app: &App) -> String {
    format!("{}.example.com", app.name())
}

/// App mode on the emulator, with one custom domain.
pub fn app_mode(emu: &Emulator, app: &App) -> (SlugImage, AppFleet, DomainRouter) {
    let client = emu.client();
    let fleet = AppFleet::new(client.clone());
    let router = DomainRouter::new(fleet.clone()).with_domains(app, [domain(app)]);
    (SlugImage::new(client), fleet, router)
}

/// Release mode on the emulator.
pub fn release_mode(emu: &Emulator) -> (SlugImage, ReleaseFleet, ReleaseRouter) {
    let client = emu.client();
    let fleet = ReleaseFleet::new(client.clone());
    let router = fleet.router();
    (SlugImage::new(client), fleet, router)
}
