//! [`LocalFleet`]: each instance is a process started from the image, with its own
//! port, that outlives the deploying program.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use bluegreen_core::labels;
use bluegreen_core::{
    App, Error, Fleet, FleetCapabilities, Group, GroupId, Health, Instance, Release, Result,
    TaskStatus,
};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::config::{entries, read_json, write_json, StateDir};
use crate::error::os_error;
use crate::image::{remove_tree, LocalImage};
use crate::labels::{GroupFile, MARK_GROUP, MARK_OWNER, MARK_STATE};
use crate::process::{marked, spawn_detached, ProcessId};
use crate::settings::Settings;
use bluegreen_core::probe::http_probe;

/// Groups of local processes.
///
/// Each instance runs the image (an executable, or the setting `command` inside a
/// directory image) with the release's environment plus `PORT` (a free loopback
/// port), `HOST=127.0.0.1` and `INSTANCE`, in its own process group, with its output
/// in `<state>/groups/<app>/<group>/logs/<n>.log`. Health is an HTTP `GET` of
/// `health_path` (default `/health`) on its port.
///
/// Release settings: `command` (path inside a directory image), `args`
/// (whitespace-separated), `health_path`, `stop_timeout_ms` (SIGTERM, then SIGKILL
/// after this long; default 10000).
///
/// # Release tasks
///
/// The fleet runs release tasks ([`FleetCapabilities::tasks`]): the task's command
/// is a process with the release's environment plus `BLUEGREEN_IMAGE` (the image's
/// path), in the image's directory (a directory image) or the task's record
/// directory. Its program is looked up inside a directory image first (`bin/migrate`),
/// then as given (`sh`, an absolute path); a single-executable image runs itself
/// through `BLUEGREEN_IMAGE` (`["sh", "-c", "exec \"$BLUEGREEN_IMAGE\" migrate"]`).
/// Its record, output and exit status live in `<state>/tasks/<app>/<group>/`; it
/// keeps running when the deploying program exits, and the next program finds it
/// there. The last [`TASK_OUTPUT_LINES`](crate::TASK_OUTPUT_LINES) lines of output
/// are reported. [`Fleet::destroy`] stops it (SIGTERM, SIGKILL after
/// `stop_timeout_ms`) and removes the record.
#[derive(Clone, Debug)]
pub struct LocalFleet {
    pub(crate) state: StateDir,
    pub(crate) images: LocalImage,
}

#[derive(Clone, Serialize, Deserialize)]
struct InstanceFile {
    index: u32,
    process: ProcessId,
    port: u16,
}

impl LocalFleet {
    /// A fleet recording its groups in `state` and running images from `images`.
    pub fn new(state: StateDir, images: LocalImage) -> Self {
        LocalFleet { state, images }
    }

    /// The log file of instance `index` of a group.
    pub fn log_path(&self, app: &App, group: &GroupId, index: u32) -> PathBuf {
        self.state
            .group(app, group)
            .join("logs")
            .join(format!("{index}.log"))
    }

    fn owned_group(&self, app: &App, group: &GroupId) -> Result<Option<(PathBuf, Group)>> {
        let dir = self.state.group(app, group);
        let Some(file) = read_json::<GroupFile>(&dir.join("group.json"))? else {
            return Ok(None);
        };
        if !labels::is_owned_by(&file.labels, app) {
            return Ok(None);
        }
        Ok(Some((dir, Group::from_record(&file.record, &file.labels)?)))
    }

    fn instance_files(dir: &Path) -> Result<Vec<InstanceFile>> {
        let mut out = Vec::new();
        for path in entries(&dir.join("instances"))? {
            if path.extension().is_some_and(|x| x == "json") {
                if let Some(f) = read_json::<InstanceFile>(&path)? {
                    out.push(f);
                }
            }
        }
        out.sort_by_key(|f| f.index);
        Ok(out)
    }

    async fn start(
        &self,
        group: &Group,
        dir: &Path,
        index: u32,
        settings: &Settings,
    ) -> Result<()> {
        let image = self.images.path_of(&group.app, &group.release.image)?;
        let program = match (&settings.command, image.is_dir()) {
            (Some(cmd), true) => image.join(cmd),
            (None, true) => {
                return Err(Error::invalid(
                    "settings.command",
                    "a directory image needs the path of its executable",
                ))
            }
            (_, false) => image.clone(),
        };
        let groups = dir.parent().and_then(Path::parent).unwrap_or(dir);
        let port = free_port(groups)?;
        let log_path = dir.join("logs").join(format!("{index}.log"));
        let mut command = tokio::process::Command::new(&program);
        command
            .args(settings.args())
            .env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
            )
            .envs(&group.release.env)
            .env("PORT", port.to_string())
            .env("HOST", "127.0.0.1")
            .env("INSTANCE", format!("{}-{index}", group.id))
            .env(MARK_OWNER, labels::OWNER_VALUE)
            .env(MARK_STATE, self.state.root())
            .env(MARK_GROUP, group.id.as_str())
            .current_dir(if image.is_dir() { &image } else { dir });
        let (mut child, process) = spawn_detached(&mut command, &program, &log_path)?;
        write_json(
            &dir.join("instances").join(format!("{index}.json")),
            &InstanceFile {
                index,
                process,
                port,
            },
        )?;
        // while this program runs, it reaps the child and keeps its exit status
        let exit_path = dir.join("instances").join(format!("{index}.exit"));
        tokio::spawn(async move {
            if let Ok(status) = child.wait().await {
                let _ = std::fs::write(exit_path, status.to_string());
            }
        });
        Ok(())
    }
}

/// A loopback port the system has free and that no instance recorded under
/// `groups` (`<state>/groups`, every app) was given: a port the system freed is
/// handed out again soon, and an instance started a moment ago may not have
/// bound its own yet.
fn free_port(groups: &Path) -> Result<u16> {
    let mut given = Vec::new();
    for app in entries(groups)?.into_iter().filter(|p| p.is_dir()) {
        for group in entries(&app)?.into_iter().filter(|p| p.is_dir()) {
            given.extend(LocalFleet::instance_files(&group)?.iter().map(|f| f.port));
        }
    }
    for _ in 0..64 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(os_error)?;
        let port = listener.local_addr().map_err(os_error)?.port();
        if !given.contains(&port) {
            return Ok(port);
        }
    }
    Err(os_error(std::io::Error::other(
        "no free loopback port that no instance was given",
    )))
}

#[async_trait]
impl Fleet for LocalFleet {
    fn capabilities(&self) -> FleetCapabilities {
        FleetCapabilities::default().with_tasks(true)
    }

    fn check_release(&self, release: &Release) -> Result<()> {
        Settings::of(release).map(|_| ())
    }

    async fn launch(&self, group: &Group) -> Result<()> {
        let settings = Settings::of(&group.release)?;
        self.images.path_of(&group.app, &group.release.image)?;
        let dir = self.state.group(&group.app, &group.id);
        match read_json::<GroupFile>(&dir.join("group.json"))? {
            Some(existing)
                if existing.record != group.to_record()
                    || !labels::is_owned_by(&existing.labels, &group.app) =>
            {
                return Err(Error::conflict(format!(
                    "group {} exists with another record",
                    group.id
                )));
            }
            Some(_) => {}
            None => write_json(
                &dir.join("group.json"),
                &GroupFile {
                    labels: group.labels(),
                    record: group.to_record(),
                },
            )?,
        }
        let present: Vec<u32> = LocalFleet::instance_files(&dir)?
            .iter()
            .map(|f| f.index)
            .collect();
        for index in 0..group.release.size {
            if !present.contains(&index) {
                self.start(group, &dir, index, &settings).await?;
            }
        }
        Ok(())
    }

    async fn groups(&self, app: &App) -> Result<Vec<Group>> {
        let mut out = Vec::new();
        for path in entries(&self.state.groups(app))? {
            let name = path.file_name().unwrap_or_default();
            let id = GroupId::new(name.to_string_lossy());
            if let Some((_, group)) = self.owned_group(app, &id)? {
                out.push(group);
            }
        }
        Ok(out)
    }

    async fn instances(&self, app: &App, group: &GroupId) -> Result<Vec<Instance>> {
        let (dir, record) = self
            .owned_group(app, group)?
            .ok_or_else(|| Error::not_found(format!("group {group}")))?;
        let settings = Settings::of(&record.release)?;
        let files = LocalFleet::instance_files(&dir)?;
        let healths = futures_util::future::join_all(files.iter().map(|f| {
            let exit_path = dir.join("instances").join(format!("{}.exit", f.index));
            let path = settings.health_path.clone();
            async move {
                if !f.process.is_alive() {
                    let reason = std::fs::read_to_string(exit_path)
                        .unwrap_or_else(|_| "the process is gone".into());
                    return Health::Stopped { reason };
                }
                http_probe(&format!("127.0.0.1:{}", f.port), &path).await
            }
        }))
        .await;
        Ok(files
            .iter()
            .zip(healths)
            .map(|(f, health)| {
                Instance::new(
                    format!("{group}-{}-pid{}", f.index, f.process.pid),
                    Some(format!("127.0.0.1:{}", f.port)),
                    health,
                )
            })
            .collect())
    }

    async fn destroy(&self, app: &App, group: &GroupId) -> Result<()> {
        crate::task::remove(&self.state, app, group).await?;
        let Some((dir, record)) = self.owned_group(app, group)? else {
            return Ok(());
        };
        let stop_timeout = Settings::of(&record.release)
            .map(|s| s.stop_timeout())
            .unwrap_or(Duration::from_secs(10));
        let mut processes: BTreeMap<u32, ProcessId> = LocalFleet::instance_files(&dir)?
            .into_iter()
            .map(|f| (f.process.pid, f.process))
            .collect();
        // instances started by a program that died before recording them
        for p in marked(self.state.root(), group.as_str()) {
            processes.insert(p.pid, p);
        }
        for p in processes.values() {
            p.signal(rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + stop_timeout;
        while processes.values().any(ProcessId::is_alive) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for p in processes.values().filter(|p| p.is_alive()) {
            tracing::warn!(pid = p.pid, %group, "did not stop within {stop_timeout:?}: SIGKILL");
            p.signal(rustix::process::Signal::KILL);
        }
        // a killed process is gone only once the kernel reaped it: until then it may
        // still write into the group's directory
        let reaped = Instant::now() + Duration::from_secs(5);
        while processes.values().any(ProcessId::is_alive) && Instant::now() < reaped {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // a file written while the tree goes (a last log line) makes the removal
        // fail with "directory not empty": removing again finishes it
        let mut tries = 0;
        loop {
            match remove_tree(&dir) {
                Err(e) if tries < 5 => {
                    tries += 1;
                    tracing::debug!(%group, error = %e, "removing the group's directory again");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => return other,
            }
        }
    }

    async fn start_task(&self, group: &Group) -> Result<()> {
        if group.release.task.is_none() {
            return Err(Error::invalid(
                "task",
                format!("the release of {} has none", group.id),
            ));
        }
        let settings = Settings::of(&group.release)?;
        crate::task::start(&self.state, &self.images, group, settings.stop_timeout()).await
    }

    async fn task(&self, app: &App, group: &GroupId) -> Result<Option<TaskStatus>> {
        crate::task::status(&self.state, app, group)
    }
}
