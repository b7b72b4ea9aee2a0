//! Test support: the emulator as these tests start it, and fixtures.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use bluegreen_core::{App, EngineOptions, ImageSource, RetryOptions};
use bluegreen_paas::{AppFleet, DomainRouter, ReleaseFleet, ReleaseRouter, SlugImage};
use bluegreen_testkit::conformance::{Settings, Sources};
use bluegreen_testkit::scratch::Scratch;

pub use bluegreen_paas::testing::{Emulator, EmulatorOptions, Hang, Schema, SCHEMA_ENV};

/// The schema file the tests check against: `HEROKU_PLATFORM_API_SCHEMA`, read once.
/// Unset or unreadable, the checks do not run (said once, on stderr, past the
/// harness's capture), and in CI (`CI=true`) the run fails instead.
pub fn schema_path() -> Option<PathBuf> {
    static PATH: OnceLock<Option<PathBuf>> = OnceLock::new();
    PATH.get_or_init(|| {
        let path = std::env::var_os(SCHEMA_ENV).filter(|p| !p.is_empty());
        let why = match &path {
            None => format!("{SCHEMA_ENV} is not set"),
            Some(p) if !std::path::Path::new(p).is_file() => {
                format!("{SCHEMA_ENV}={} is not a file", p.to_string_lossy())
            }
            Some(p) => return Some(PathBuf::from(p)),
        };
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("the Heroku Platform API schema is required in CI: {why}");
        }
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "heroku schema checks NOT RUN: {why}; the rest of the tests run"
        );
        None
    })
    .clone()
}

/// The schema, compiled (once per process), when [`schema_path`] gives one.
pub fn schema() -> Option<std::sync::Arc<Schema>> {
    schema_path().map(|p| Schema::load(&p).expect("the schema file compiles"))
}

/// The tests' emulator options: the schema of [`schema_path`], when there is one.
pub fn options() -> EmulatorOptions {
    match schema_path() {
        Some(p) => EmulatorOptions::new().with_schema(p),
        None => EmulatorOptions::new().without_schema(),
    }
}

/// An emulator with the tests' [`options`].
pub async fn emulator() -> Emulator {
    emulator_with(options()).await
}

/// An emulator with `options`.
pub async fn emulator_with(options: EmulatorOptions) -> Emulator {
    Emulator::start_with(options)
        .await
        .expect("the emulator starts")
}

/// A slug tarball with `content`, in a fresh file of the test program's scratch
/// directory (slugs outlive the test that made them: a deployment's image keeps
/// its path).
pub fn tarball(content: &str) -> PathBuf {
    static SLUGS: OnceLock<Scratch> = OnceLock::new();
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let dir = SLUGS.get_or_init(|| Scratch::new("paas-slugs"));
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = dir.join(format!("slug-{n}.tgz"));
    std::fs::write(&path, gzip(content.as_bytes())).unwrap();
    path
}

/// `bytes` in a gzip file (RFC 1952) of stored deflate blocks: a real gzip file,
/// as the image's checks want, whose content the emulator still reads as it is
/// (a slug containing `crash` makes dynos that crash).
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::none());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
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
