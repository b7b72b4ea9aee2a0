//! A provider of your own in one file: a toy platform kept in a directory, whose
//! instances are processes of the sample app serving HTTP on loopback, behind the
//! real bluegreen proxy. It implements the two provider traits a platform needs
//! ([`Image`] and [`Fleet`]; the proxy is the [`Router`](bluegreen::Router)), passes
//! the testkit's conformance suite, and deploys, rolls back and reverts a failing
//! release.
//!
//! `cargo run --all-features --example custom_provider` (the same code runs in
//! `cargo test` from `tests/custom_provider.rs`, and `tests/custom_provider_killed.rs`
//! kills its deployer at every event of a deployment). Walked through in
//! `docs/providers.md`.
//!
//! The rules it keeps are the traits' `# Behavior` sections: launch and destroy are
//! idempotent, a missing group is `NotFound`, groups come back exactly as launched
//! (from the platform's own record, checked against its labels), an image in use is
//! not removed, and only what carries bluegreen's labels for the app is listed or
//! touched.
//!
//! Everything lives on the platform, none of it in the program that drives it, so
//! that a deployer killed anywhere leaves nothing the next one cannot find:
//!
//! ```text
//! <dir>/images/<id>/labels, reference    an image: its labels and `toy:<version>`
//! <dir>/groups/<group>/labels, record    a group: its labels and Group::to_record()
//! <dir>/groups/<group>/<n>.log           instance n's output
//! ```
//!
//! and each instance is a process whose environment carries the platform's marks
//! (`TOY_PLATFORM`, `TOY_GROUP`, `TOY_INSTANCE`, `PORT`): the platform finds its
//! instances by those marks, as a cloud finds its machines by their tags.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bluegreen::labels::{self, Labels};
use bluegreen::local::{FileLock, StateDir};
use bluegreen::probe::http_probe;
use bluegreen::testkit::conformance::{self, Settings, Sources};
use bluegreen::{
    async_trait, App, DeployRequest, Engine, EngineOptions, Error, EventSink, Fleet, Group,
    GroupId, Image, ImageId, ImageRef, ImageSource, Instance, Result,
};

/// A platform error: the toy's only failures are its files and processes.
fn toy_error(e: std::io::Error) -> Error {
    Error::provider_source("toy", false, e)
}

/// Labels as a file: one `key=value` a line.
fn read_labels(path: &Path) -> Result<Labels> {
    let text = std::fs::read_to_string(path).map_err(toy_error)?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect())
}

fn labels_file(labels: &Labels) -> String {
    labels.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
}

/// Creates the directory `dir` holding `files` in one step (written aside, then
/// renamed into place): a program killed half-way leaves no half-made resource.
/// When `dir` exists already, it is left as it is.
fn create_whole(dir: &Path, files: &[(&str, &str)]) -> Result<()> {
    let parent = dir.parent().expect("a resource directory has a parent");
    std::fs::create_dir_all(parent).map_err(toy_error)?;
    static MADE: AtomicU32 = AtomicU32::new(0);
    let n = MADE.fetch_add(1, Ordering::Relaxed);
    let aside = parent.join(format!(".new-{}-{n}", std::process::id()));
    std::fs::create_dir(&aside).map_err(toy_error)?;
    for (name, content) in files {
        std::fs::write(aside.join(name), content).map_err(toy_error)?;
    }
    match std::fs::rename(&aside, dir) {
        Ok(()) => Ok(()),
        // made meanwhile, by this program or another: that one stands
        Err(_) if dir.is_dir() => {
            let _ = std::fs::remove_dir_all(&aside);
            Ok(())
        }
        Err(e) => Err(toy_error(e)),
    }
}

/// The toy platform's images: a reference `toy:<version>` is the "artifact"; an
/// image id is a content hash of the app and the reference. `toy:broken-*` answers
/// 503 on its health path, as a release that never becomes healthy.
#[derive(Clone, Debug)]
pub struct ToyImage {
    dir: PathBuf,
}

impl ToyImage {
    /// The images of the toy platform in `dir`.
    pub fn new(dir: &Path) -> Self {
        ToyImage {
            dir: dir.to_path_buf(),
        }
    }

    fn image_dir(&self, id: &ImageId) -> PathBuf {
        self.dir.join("images").join(id.as_str())
    }

    /// The reference an image of `app` was prepared from; `NotFound` when the app
    /// has no such image.
    fn reference(&self, app: &App, id: &ImageId) -> Result<String> {
        let dir = self.image_dir(id);
        match read_labels(&dir.join("labels")) {
            Ok(l) if labels::is_owned_by(&l, app) => {
                std::fs::read_to_string(dir.join("reference")).map_err(toy_error)
            }
            _ => Err(Error::not_found(format!("image {id} of {app}"))),
        }
    }
}

fn content_id(text: &str) -> ImageId {
    // FNV-1a: stable across runs
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    ImageId::new(format!("toy-{h:016x}"))
}

#[async_trait]
impl Image for ToyImage {
    async fn prepare(&self, app: &App, source: &ImageSource, _: &EventSink) -> Result<ImageRef> {
        let ImageSource::Reference(reference) = source else {
            // bad input is refused before anything happens, naming the field
            return Err(Error::invalid(
                "source",
                "the toy platform takes `toy:<version>`",
            ));
        };
        if !reference.starts_with("toy:") {
            return Err(Error::invalid(
                "source",
                format!("`{reference}` is not `toy:<version>`"),
            ));
        }
        let id = content_id(&format!("{app}/{reference}"));
        let mut l = labels::app_labels(app);
        l.insert(labels::IMAGE.into(), id.to_string());
        let dir = self.image_dir(&id);
        create_whole(
            &dir,
            &[("labels", &labels_file(&l)), ("reference", reference)],
        )?;
        let created = std::fs::metadata(&dir)
            .and_then(|m| m.modified())
            .map_err(toy_error)?;
        Ok(ImageRef::new(id, app.clone(), created, reference.clone()))
    }

    async fn images(&self, app: &App) -> Result<Vec<ImageRef>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(self.dir.join("images"))
            .into_iter()
            .flatten()
        {
            let id = ImageId::new(entry.map_err(toy_error)?.file_name().to_string_lossy());
            if let Ok(reference) = self.reference(app, &id) {
                let created = std::fs::metadata(self.image_dir(&id))
                    .and_then(|m| m.modified())
                    .map_err(toy_error)?;
                out.push(ImageRef::new(id, app.clone(), created, reference));
            }
        }
        Ok(out)
    }

    async fn remove(&self, app: &App, id: &ImageId) -> Result<()> {
        // only this app's own image, and removing a missing one succeeds
        if self.reference(app, id).is_err() {
            return Ok(());
        }
        // a group of any app that runs it keeps it
        for group in ToyFleet::group_dirs(&self.dir)? {
            let l = read_labels(&group.join("labels")).unwrap_or_default();
            if l.get(labels::IMAGE) == Some(&id.to_string()) {
                return Err(Error::conflict(format!(
                    "image {id} is used by the instances of {}",
                    group.file_name().unwrap_or_default().to_string_lossy()
                )));
            }
        }
        std::fs::remove_dir_all(self.image_dir(id)).map_err(toy_error)
    }
}

/// One instance as the platform finds it: a process carrying the platform's marks.
#[derive(Debug)]
pub struct ToyProcess {
    /// The process id.
    pub pid: u32,
    /// The group it belongs to.
    pub group: String,
    /// Its number in the group.
    pub index: u32,
    /// The loopback port it serves on.
    pub port: u16,
}

/// Every running process marked as an instance of the toy platform in `dir`.
pub fn processes(dir: &Path) -> Vec<ToyProcess> {
    let platform = format!("TOY_PLATFORM={}", dir.display());
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        // a process that ended has an empty environment, and so no marks
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let vars: Vec<String> = environ
            .split(|b| *b == 0)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect();
        if !vars.contains(&platform) {
            continue;
        }
        let var = |key: &str| {
            vars.iter()
                .find_map(|v| v.strip_prefix(&format!("{key}=")).map(str::to_owned))
                .unwrap_or_default()
        };
        found.push(ToyProcess {
            pid,
            group: var("TOY_GROUP"),
            index: var("TOY_INSTANCE").parse().unwrap_or_default(),
            port: var("PORT").parse().unwrap_or_default(),
        });
    }
    found.sort_by_key(|p| (p.group.clone(), p.index));
    found
}

/// The toy platform's fleet: groups are directories of the platform, instances are
/// processes of `program` (the sample app) that outlive the program that started
/// them.
#[derive(Clone, Debug)]
pub struct ToyFleet {
    dir: PathBuf,
    image: ToyImage,
    program: PathBuf,
}

impl ToyFleet {
    /// A fleet of the toy platform in `dir` that runs the images of `image` as
    /// processes of `program`, the sample app.
    pub fn new(dir: &Path, image: ToyImage, program: &Path) -> Self {
        ToyFleet {
            dir: dir.to_path_buf(),
            image,
            program: program.to_path_buf(),
        }
    }

    fn group_dir(&self, group: &GroupId) -> PathBuf {
        self.dir.join("groups").join(group.as_str())
    }

    /// Every group directory of the platform in `dir`, whoever made it.
    fn group_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir.join("groups")).into_iter().flatten() {
            let entry = entry.map_err(toy_error)?;
            if !entry.file_name().to_string_lossy().starts_with('.') {
                out.push(entry.path());
            }
        }
        Ok(out)
    }

    /// The labels of `group` when it is a group of `app`.
    fn owned(&self, app: &App, group: &GroupId) -> Option<Labels> {
        read_labels(&self.group_dir(group).join("labels"))
            .ok()
            .filter(|l| labels::is_owned_by(l, app))
    }

    fn running(&self, group: &GroupId) -> Vec<ToyProcess> {
        processes(&self.dir)
            .into_iter()
            .filter(|p| p.group == group.as_str())
            .collect()
    }

    /// A loopback port the system has free and that no instance of this platform
    /// was given: a port freed by the system is handed out again soon, and an
    /// instance started a moment ago may not have bound its own yet.
    fn free_port(&self) -> Result<u16> {
        let given: Vec<u16> = processes(&self.dir).iter().map(|p| p.port).collect();
        for _ in 0..64 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(toy_error)?
                .port();
            if !given.contains(&port) {
                return Ok(port);
            }
        }
        Err(toy_error(std::io::Error::other(
            "no free loopback port that no instance was given",
        )))
    }

    /// Starts instance `n` of `group` as version `version`.
    fn start(&self, group: &GroupId, n: u32, version: &str) -> Result<()> {
        let port = self.free_port()?;
        let log = std::fs::File::create(self.group_dir(group).join(format!("{n}.log")))
            .map_err(toy_error)?;
        let mut command = tokio::process::Command::new(&self.program);
        command
            .env_clear()
            .env("TOY_PLATFORM", &self.dir)
            .env("TOY_GROUP", group.as_str())
            .env("TOY_INSTANCE", n.to_string())
            .env("PORT", port.to_string())
            .env("APP_VERSION", version)
            .env("INSTANCE", format!("{group}-{n}"))
            .env(
                "SAMPLE_NEVER_HEALTHY",
                version.starts_with("broken").to_string(),
            )
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().map_err(toy_error)?)
            .stderr(log)
            // its own process group: a signal to this program does not reach it
            .process_group(0);
        // the child is not waited for: it outlives this program (tokio reaps it if
        // it ends first)
        command.spawn().map_err(toy_error)?;
        Ok(())
    }
}

#[async_trait]
impl Fleet for ToyFleet {
    async fn launch(&self, group: &Group) -> Result<()> {
        let record = group.to_record();
        let dir = self.group_dir(&group.id);
        if dir.exists() {
            // the same group again is idempotent; the same id with another record is a
            // conflict
            let existing = std::fs::read_to_string(dir.join("record")).unwrap_or_default();
            if existing != record {
                return Err(Error::conflict(format!(
                    "{} exists with another record",
                    group.id
                )));
            }
        }
        let reference = self.image.reference(&group.app, &group.release.image)?;
        let version = reference.trim_start_matches("toy:");
        create_whole(
            &dir,
            &[
                ("labels", &labels_file(&group.labels())),
                ("record", &record),
            ],
        )?;
        // start the instances that do not run: a launch cut short is finished here
        let running: Vec<u32> = self.running(&group.id).iter().map(|p| p.index).collect();
        for n in (0..group.release.size).filter(|n| !running.contains(n)) {
            self.start(&group.id, n, version)?;
        }
        Ok(())
    }

    async fn groups(&self, app: &App) -> Result<Vec<Group>> {
        let mut out = Vec::new();
        for dir in Self::group_dirs(&self.dir)? {
            let Ok(l) = read_labels(&dir.join("labels")) else {
                continue;
            };
            if labels::is_owned_by(&l, app) {
                let record = std::fs::read_to_string(dir.join("record")).map_err(toy_error)?;
                out.push(Group::from_record(&record, &l)?);
            }
        }
        Ok(out)
    }

    async fn instances(&self, app: &App, group: &GroupId) -> Result<Vec<Instance>> {
        if self.owned(app, group).is_none() {
            return Err(Error::not_found(format!("group {group}")));
        }
        let mut out = Vec::new();
        for p in self.running(group) {
            let address = format!("127.0.0.1:{}", p.port);
            let health = http_probe(&address, "/health").await;
            out.push(Instance::new(
                format!("{group}-{}", p.index),
                Some(address),
                health,
            ));
        }
        Ok(out)
    }

    async fn destroy(&self, app: &App, group: &GroupId) -> Result<()> {
        // idempotent, and only a group of this app
        if self.owned(app, group).is_none() {
            return Ok(());
        }
        // the instances first, the record last: a destroy cut short leaves a group
        // that is still listed, and destroyed again
        for _ in 0..100 {
            let running = self.running(group);
            if running.is_empty() {
                return std::fs::remove_dir_all(self.group_dir(group)).map_err(toy_error);
            }
            for p in running {
                let pid = rustix::process::Pid::from_raw(p.pid as i32).expect("a pid");
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(Error::provider(
            "toy",
            format!("the instances of {group} did not stop"),
            true,
        ))
    }
}

/// The platform's sample-app program: built from this workspace.
pub fn sample_app() -> PathBuf {
    bluegreen::testkit::binaries::binary("sample-app", "sample-app")
}

/// Runs the conformance suite on the toy platform in `dir`, then a deployment, a
/// revert of a broken release, a rollback and the clean-up. Returns what it did,
/// one line a step.
pub async fn run(dir: &Path) -> std::result::Result<Vec<String>, Box<dyn std::error::Error>> {
    let mut said = Vec::new();
    let proxy = bluegreen::proxy::EmbeddedProxy::start(
        "127.0.0.1:0".parse()?,
        bluegreen::proxy::ProxyOptions::default().with_health(
            bluegreen::proxy::HealthCheckOptions::default()
                .with_interval(Duration::from_millis(100)),
        ),
    )
    .await?;
    let image = ToyImage::new(dir);
    let fleet = ToyFleet::new(dir, image.clone(), &sample_app());

    // 1. the conformance suite: every rule of the traits, on this provider
    let sources = Sources {
        good: ImageSource::Reference("toy:1".into()),
        other: ImageSource::Reference("toy:2".into()),
        never_healthy: Some(ImageSource::Reference("toy:broken-1".into())),
    };
    let settings = Settings::default().with_health_timeout(Duration::from_secs(10));
    let report = conformance::run_all(
        Arc::new(image.clone()),
        Arc::new(fleet.clone()),
        Arc::new(proxy.router()),
        &App::new("conformance", "toy")?,
        &sources,
        &settings,
    )
    .await;
    said.push(format!(
        "the toy provider passes the conformance suite ({} checks passed, {} skipped)",
        report.passed(),
        report.skipped()
    ));

    // 2. the engine on it, with a lock every program on this machine shares
    let lock = FileLock::new(&StateDir::new(dir.join("state"))?);
    let engine = Engine::new(image.clone(), fleet.clone(), proxy.router())
        .with_lock(Arc::new(lock))
        .with_options(
            EngineOptions::default()
                .with_poll_interval(Duration::from_millis(100))
                .with_health_timeout(Duration::from_secs(5))
                .with_confirm_timeout(Duration::from_secs(5))
                .with_drain(Duration::from_millis(100)),
        );
    let app = App::new("web", "toy")?;
    let deploy = |reference: &str| {
        DeployRequest::new(app.clone(), ImageSource::Reference(reference.into())).size(2)
    };
    let v1 = engine.deploy(&deploy("toy:1")).await?;
    let v2 = engine.deploy(&deploy("toy:2")).await?;
    said.push(format!("deployed {} then {}", v1.live, v2.live));
    let e = engine
        .deploy(&deploy("toy:broken-3"))
        .await
        .expect_err("a release that never becomes healthy is reverted");
    said.push(format!("a broken release: {e}"));
    let back = engine.rollback(&app).await?;
    said.push(format!("rolled back from {} to {}", back.from, back.to));

    // 3. nothing left running: the instances would outlive this program
    conformance::clean(&fleet, &proxy.router(), &app).await;
    for i in image.images(&app).await? {
        image.remove(&app, &i.id).await?;
    }
    said.push(format!(
        "cleaned up: {} instances left",
        processes(dir).len()
    ));
    Ok(said)
}

#[allow(dead_code)] // the tests include this file for `run` and the providers
#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("bluegreen-toy-{}", std::process::id()));
    let said = run(&dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    for line in said? {
        println!("{line}");
    }
    Ok(())
}
