//! The state directory: where images are stored and where groups, instances, logs
//! and locks are recorded, so that a later process finds them again.
//!
//! ```text
//! <root>/images/<app>/<sha256>/        the stored artifact, read-only
//! <root>/images/<app>/<sha256>.json    its labels, origin and creation time
//! <root>/groups/<app>/<group>/group.json              labels and record
//! <root>/groups/<app>/<group>/instances/<n>.json      pid, start time, port
//! <root>/groups/<app>/<group>/logs/<n>.log            stdout and stderr
//! <root>/tasks/<app>/<group>/task.json    a release task: labels, release, pid
//! <root>/tasks/<app>/<group>/output.log   its stdout and stderr
//! <root>/tasks/<app>/<group>/exit         its exit status, once it ended
//! <root>/locks/<app>.json                             the deployment lock
//! ```
//!
//! `<app>` is the app's slug, `name-environment`, which names one app (an
//! environment has no `-`), and `<group>` its group id, `name-environment-v007`.

use std::io;
use std::path::{Path, PathBuf};

use bluegreen_core::{App, Error, GroupId, Result};
use serde::de::DeserializeOwned;

use crate::error::io_error;
use serde::Serialize;

/// The root of the local provider's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// State under `root`, created when missing.
    ///
    /// # Errors
    /// On an operating system other than Linux,
    /// [`Error::NotSupported`](bluegreen_core::Error::NotSupported) naming it, before
    /// anything is created: every part of this provider starts from a `StateDir`.
    /// An unusable directory is an I/O error naming it.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self> {
        crate::process::check_os(std::env::consts::OS)?;
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(|e| io_error(&root, e))?;
        let root = root.canonicalize().map_err(|e| io_error(&root, e))?;
        Ok(StateDir { root })
    }

    /// `$BLUEGREEN_STATE_DIR`, else `$XDG_STATE_HOME/bluegreen`, else
    /// `~/.local/state/bluegreen`.
    pub fn default_location() -> Result<Self> {
        if let Some(dir) = std::env::var_os("BLUEGREEN_STATE_DIR") {
            return StateDir::new(dir);
        }
        if let Some(dir) = std::env::var_os("XDG_STATE_HOME") {
            return StateDir::new(PathBuf::from(dir).join("bluegreen"));
        }
        let home = std::env::var_os("HOME").ok_or_else(|| {
            Error::invalid("state_dir", "neither BLUEGREEN_STATE_DIR nor HOME is set")
        })?;
        StateDir::new(PathBuf::from(home).join(".local/state/bluegreen"))
    }

    /// The root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn images(&self, app: &App) -> PathBuf {
        self.root.join("images").join(app.slug())
    }

    pub(crate) fn groups(&self, app: &App) -> PathBuf {
        self.root.join("groups").join(app.slug())
    }

    pub(crate) fn group(&self, app: &App, group: &GroupId) -> PathBuf {
        self.groups(app).join(group.as_str())
    }

    pub(crate) fn locks(&self) -> PathBuf {
        self.root.join("locks")
    }
}

/// Writes `value` as JSON to `path` atomically (a temporary file, then a rename).
pub(crate) fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let dir = path.parent().expect("a state file has a parent");
    std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let json = serde_json::to_vec_pretty(value).expect("state serializes");
    std::fs::write(&tmp, json).map_err(|e| io_error(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_error(path, e))
}

/// Reads JSON from `path`; `None` when the file does not exist.
pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::conflict(format!("{} is not readable state: {e}", path.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(path, e)),
    }
}

/// The entries of `dir`; none when it does not exist.
pub(crate) fn entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let listing = match std::fs::read_dir(dir) {
        Ok(l) => l,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error(dir, e)),
    };
    listing
        .map(|e| e.map(|e| e.path()).map_err(|e| io_error(dir, e)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bluegreen_core::{Generation, Group};
    use bluegreen_testkit::names::{assert_distinct, near_collisions};

    #[test]
    fn every_app_has_paths_of_its_own() {
        let state = StateDir {
            root: PathBuf::from("/state"),
        };
        let apps = near_collisions();
        assert_distinct("images", &apps, |a| state.images(a));
        assert_distinct("groups", &apps, |a| state.groups(a));
        for g in [0, 1, 7, 999, 1000] {
            assert_distinct("group", &apps, |a| {
                state.group(a, &Group::id_for(a, Generation(g)))
            });
        }
        let app = App::new("a-b", "c").unwrap();
        assert_eq!(state.groups(&app), PathBuf::from("/state/groups/a-b-c"));
    }
}
