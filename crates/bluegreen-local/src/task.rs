//! Release tasks on the local fleet: a process started from the release's image
//! with its environment, recorded in the state directory so that it outlives the
//! deploying program and is found again by the next one.
//!
//! ```text
//! <root>/tasks/<app>/<group>/task.json    labels, release id, command, pid and start time
//! <root>/tasks/<app>/<group>/output.log   stdout and stderr
//! <root>/tasks/<app>/<group>/exit         the exit status, written when the command ends
//! ```
//!
//! The command runs under a small `/bin/sh` wrapper that writes `exit` when the
//! command ends, whether or not the deploying program still runs; a wrapper that
//! died without writing it (killed, or the machine rebooted) makes the task
//! [`TaskState::Failed`] with a reason that says so.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bluegreen_core::labels::{self, Labels};
use bluegreen_core::{App, Error, Group, GroupId, ReleaseId, Result, TaskState, TaskStatus};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::config::{read_json, write_json, StateDir};
use crate::error::io_error;
use crate::image::{remove_tree, LocalImage};
use crate::labels::{MARK_OWNER, MARK_STATE, MARK_TASK};
use crate::process::{marked_by, spawn_detached, ProcessId};

/// How many lines of a task's output [`task`](crate::LocalFleet) reports: the last
/// ones, the earlier counted in [`TaskStatus::dropped`].
pub const TASK_OUTPUT_LINES: usize = 1000;

/// The wrapper: runs `"$@"` and writes its status to `$1` atomically.
const WRAPPER: &str = r#"exit_file="$1"; shift
"$@"
code=$?
printf '%s' "$code" > "$exit_file.tmp" && mv "$exit_file.tmp" "$exit_file"
exit "$code""#;

#[derive(Serialize, Deserialize)]
struct TaskFile {
    labels: Labels,
    release: ReleaseId,
    command: Vec<String>,
    /// `None` between claiming the record and starting the process.
    process: Option<ProcessId>,
    /// Grace between SIGTERM and SIGKILL when the task is stopped, in milliseconds.
    stop_timeout_ms: u64,
}

pub(crate) fn task_dir(state: &StateDir, app: &App, group: &GroupId) -> PathBuf {
    state
        .root()
        .join("tasks")
        .join(app.slug())
        .join(group.as_str())
}

/// Reads the record of a group's task; `None` when there is none or it does not
/// carry bluegreen's labels for `app`.
fn owned(dir: &Path, app: &App) -> Result<Option<TaskFile>> {
    Ok(read_json::<TaskFile>(&dir.join("task.json"))?
        .filter(|f| labels::is_owned_by(&f.labels, app)))
}

/// Resolves the task's program: a relative path that exists inside a directory
/// image, else the name as given (looked up on `PATH` when it has no `/`).
fn program_of(image: &Path, program: &str) -> PathBuf {
    if image.is_dir() && !Path::new(program).is_absolute() {
        let inside = image.join(program);
        if inside.exists() {
            return inside;
        }
    }
    PathBuf::from(program)
}

pub(crate) async fn start(
    state: &StateDir,
    images: &LocalImage,
    group: &Group,
    stop_timeout: Duration,
) -> Result<()> {
    let task =
        group.release.task.as_ref().ok_or_else(|| {
            Error::invalid("task", format!("the release of {} has none", group.id))
        })?;
    task.validate()?;
    let dir = task_dir(state, &group.app, &group.id);
    let record = dir.join("task.json");
    if record.exists() {
        if owned(&dir, &group.app)?.is_some() {
            return Ok(());
        }
        return Err(Error::conflict(format!(
            "{} exists without bluegreen's labels for {}: left as it is",
            record.display(),
            group.app
        )));
    }
    let image = images.path_of(&group.app, &group.release.image)?;
    let mut file = TaskFile {
        labels: group.labels(),
        release: group.release.id(),
        command: task.command.clone(),
        process: None,
        stop_timeout_ms: stop_timeout.as_millis().min(u64::MAX as u128) as u64,
    };
    // the claim comes first: a crash after it leaves a record that says so
    write_json(&record, &file)?;
    let program = program_of(&image, &task.command[0]);
    let exit = dir.join("exit");
    let mut command = tokio::process::Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(WRAPPER)
        .arg("bluegreen-task")
        .arg(&exit)
        .arg(&program)
        .args(&task.command[1..])
        .env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
        )
        .envs(&group.release.env)
        .env("BLUEGREEN_IMAGE", &image)
        .env(MARK_OWNER, labels::OWNER_VALUE)
        .env(MARK_STATE, state.root())
        .env(MARK_TASK, task_mark(&group.app, &group.id))
        .current_dir(if image.is_dir() { &image } else { &dir });
    let (mut child, process) = spawn_detached(&mut command, &program, &dir.join("output.log"))?;
    file.process = Some(process);
    write_json(&record, &file)?;
    // while this program runs, it reaps the wrapper (the wrapper writes the status)
    tokio::spawn(async move {
        let _ = child.wait().await;
    });
    Ok(())
}

/// The value of [`MARK_TASK`] in a task's environment.
fn task_mark(app: &App, group: &GroupId) -> String {
    format!("{}/{}", app.slug(), group)
}

pub(crate) fn status(state: &StateDir, app: &App, group: &GroupId) -> Result<Option<TaskStatus>> {
    let dir = task_dir(state, app, group);
    let Some(file) = owned(&dir, app)? else {
        return Ok(None);
    };
    // read the status before looking at the process: a process gone after writing
    // it is finished, not lost
    let exit = match std::fs::read_to_string(dir.join("exit")) {
        Ok(s) => Some(s),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_error(&dir.join("exit"), e)),
    };
    let state_now = match exit {
        Some(code) => match code.trim().parse::<i32>() {
            Ok(0) => TaskState::Succeeded,
            Ok(code) if code > 128 => TaskState::Failed {
                exit_code: Some(code),
                reason: format!(
                    "exited with status {code} (killed by signal {})",
                    code - 128
                ),
            },
            Ok(code) => TaskState::Failed {
                exit_code: Some(code),
                reason: format!("exited with status {code}"),
            },
            Err(_) => TaskState::Failed {
                exit_code: None,
                reason: format!("its status file holds `{}`", code.trim()),
            },
        },
        None => {
            let running = file.process.is_some_and(|p| p.is_alive())
                || !marked_by(state.root(), MARK_TASK, &task_mark(app, group)).is_empty();
            if running {
                TaskState::Running
            } else if std::fs::metadata(dir.join("exit")).is_ok() {
                // it finished between the two looks
                return status(state, app, group);
            } else {
                TaskState::Failed {
                    exit_code: None,
                    reason: match file.process {
                        Some(p) => format!(
                            "its process (pid {}) is gone without writing its exit status: \
                             killed, or the machine restarted",
                            p.pid
                        ),
                        None => {
                            "it was never started: the program starting it stopped first".into()
                        }
                    },
                }
            }
        }
    };
    let (output, dropped) = last_lines(&dir.join("output.log"), TASK_OUTPUT_LINES)?;
    Ok(Some(
        TaskStatus::new(file.release, state_now).with_output(output, dropped),
    ))
}

/// The last `n` lines of a file, and how many came before them.
pub(crate) fn last_lines(path: &Path, n: usize) -> Result<(Vec<String>, u64)> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(io_error(path, e)),
    };
    let mut kept = std::collections::VecDeque::with_capacity(n.min(1024));
    let mut dropped = 0u64;
    for line in BufReader::new(file).split(b'\n') {
        let line = line.map_err(|e| io_error(path, e))?;
        if kept.len() == n {
            kept.pop_front();
            dropped += 1;
        }
        kept.push_back(String::from_utf8_lossy(&line).into_owned());
    }
    Ok((kept.into(), dropped))
}

/// Stops a group's task when it runs (SIGTERM to its processes, SIGKILL after its
/// grace) and removes its record. A missing task, or a record without bluegreen's
/// labels, is left alone.
pub(crate) async fn remove(state: &StateDir, app: &App, group: &GroupId) -> Result<()> {
    let dir = task_dir(state, app, group);
    let file = match owned(&dir, app) {
        Ok(Some(file)) => file,
        Ok(None) => return Ok(()),
        // not bluegreen's record (unreadable): never touched
        Err(e) if e.kind() == bluegreen_core::ErrorKind::Conflict => {
            tracing::warn!(%group, error = %e, "a task record that is not bluegreen's is left alone");
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let mut processes: BTreeMap<u32, ProcessId> =
        file.process.into_iter().map(|p| (p.pid, p)).collect();
    for p in marked_by(state.root(), MARK_TASK, &task_mark(app, group)) {
        processes.insert(p.pid, p);
    }
    for p in processes.values() {
        p.signal(rustix::process::Signal::TERM);
    }
    let grace = Duration::from_millis(file.stop_timeout_ms);
    let deadline = Instant::now() + grace;
    while processes.values().any(ProcessId::is_alive) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for p in processes.values().filter(|p| p.is_alive()) {
        tracing::warn!(pid = p.pid, %group, "the task did not stop within {grace:?}: SIGKILL");
        p.signal(rustix::process::Signal::KILL);
    }
    remove_tree(&dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_lines_counts_what_it_drops() {
        let dir = bluegreen_testkit::scratch::Scratch::new("last-lines");
        let path = dir.join("log");
        std::fs::write(&path, "a\nb\nc\nd\n").unwrap();
        assert_eq!(
            last_lines(&path, 2).unwrap(),
            (vec!["c".to_owned(), "d".to_owned()], 2)
        );
        assert_eq!(last_lines(&path, 10).unwrap().1, 0);
        assert_eq!(last_lines(&dir.join("none"), 2).unwrap(), (vec![], 0));
    }
}
