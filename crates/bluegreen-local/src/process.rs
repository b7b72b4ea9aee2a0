//! Processes: identity across restarts (pid plus start time), signals, and the
//! environment marks that find a process even when its record was never written.

use std::path::Path;

use rustix::process::{Pid, Signal};
use serde::{Deserialize, Serialize};

use crate::labels::{MARK_GROUP, MARK_OWNER, MARK_STATE};

/// Whether the local provider runs on the operating system `os` (as in
/// [`std::env::consts::OS`]): it finds its processes again through `/proc` (their
/// start times and environment marks), which Linux alone provides in that form.
pub(crate) fn check_os(os: &str) -> bluegreen_core::Result<()> {
    if os == "linux" {
        return Ok(());
    }
    Err(bluegreen_core::Error::not_supported(format!(
        "the local provider on {os}: it finds its processes through /proc, \
         which it reads on Linux only"
    )))
}

/// A process as recorded: its pid and its start time, which together name it even
/// after the pid is reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ProcessId {
    pub(crate) pid: u32,
    /// Clock ticks after boot at which it started (`/proc/<pid>/stat`, field 22).
    pub(crate) started: u64,
}

impl ProcessId {
    /// The process `pid` as it is now, if it runs (a zombie does not).
    pub(crate) fn of(pid: u32) -> Option<ProcessId> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // the command name may hold spaces and parentheses: fields start after the last ')'
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // fields[0] is field 3 (state); field 22 (starttime) is fields[19]
        if matches!(fields.first(), Some(&"Z") | Some(&"X")) {
            return None;
        }
        let started = fields.get(19)?.parse().ok()?;
        Some(ProcessId { pid, started })
    }

    /// Whether this very process still runs.
    pub(crate) fn is_alive(&self) -> bool {
        ProcessId::of(self.pid) == Some(*self)
    }

    /// Sends `signal` if this very process still runs.
    pub(crate) fn signal(&self, signal: Signal) {
        // the identity check keeps the signal from a process that reused the pid
        if !self.is_alive() {
            return;
        }
        if let Some(pid) = i32::try_from(self.pid).ok().and_then(Pid::from_raw) {
            // it may have ended since the check: nothing left to signal
            let _ = rustix::process::kill_process(pid, signal);
        }
    }
}

/// Starts `command` as its own process group (so that it outlives this program and
/// no signal to this program's group reaches it), with no input and its output
/// appended to `log`. `what` names it in errors.
pub(crate) fn spawn_detached(
    command: &mut tokio::process::Command,
    what: &Path,
    log: &Path,
) -> bluegreen_core::Result<(tokio::process::Child, ProcessId)> {
    use crate::error::{failed, io_error};
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
    }
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| io_error(log, e))?;
    let err = out.try_clone().map_err(|e| io_error(log, e))?;
    let child = command
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .kill_on_drop(false)
        .spawn()
        .map_err(|e| failed(format!("starting {}: {e}", what.display())))?;
    let pid = child.id().expect("a just-spawned child has a pid");
    let process =
        ProcessId::of(pid).ok_or_else(|| failed(format!("{} exited at once", what.display())))?;
    Ok((child, process))
}

/// Processes whose environment marks them as instances of `group` in `state`,
/// recorded or not.
pub(crate) fn marked(state: &Path, group: &str) -> Vec<ProcessId> {
    marked_by(state, MARK_GROUP, group)
}

/// Processes whose environment carries bluegreen's owner mark, `state` as their
/// state directory and `key=value`.
pub(crate) fn marked_by(state: &Path, key: &str, value: &str) -> Vec<ProcessId> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let want_state = format!("{MARK_STATE}={}", state.display());
    let want_mark = format!("{key}={value}");
    let want_owner = format!("{MARK_OWNER}=bluegreen");
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
                return false;
            };
            let vars: Vec<&[u8]> = env.split(|b| *b == 0).collect();
            [&want_state, &want_mark, &want_owner]
                .iter()
                .all(|w| vars.contains(&w.as_bytes()))
        })
        .filter_map(ProcessId::of)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_linux_is_supported_and_the_error_names_the_os() {
        check_os("linux").unwrap();
        for os in ["macos", "freebsd", "windows"] {
            let e = check_os(os).unwrap_err();
            assert_eq!(e.kind(), bluegreen_core::ErrorKind::NotSupported, "{e}");
            assert!(e.to_string().contains(os), "{e}");
            assert!(e.to_string().contains("Linux"), "{e}");
        }
    }

    #[test]
    fn this_process_has_an_identity() {
        let me = ProcessId::of(std::process::id()).unwrap();
        assert!(me.is_alive());
        let other = ProcessId {
            started: me.started + 1,
            ..me
        };
        assert!(!other.is_alive(), "another start time is another process");
    }
}
