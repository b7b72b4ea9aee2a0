//! [`LocalImage`]: local artifacts in a content-addressed, read-only store.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use async_trait::async_trait;
use bluegreen_core::labels::{self, Labels};
use bluegreen_core::{
    App, Error, EventSink, Image, ImageId, ImageRef, ImageSource, Release, Result,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{entries, read_json, write_json, StateDir};
use crate::error::failed;
use crate::error::io_error;
use crate::labels::GroupFile;
use crate::program::check_program;

/// Images of local artifacts: an executable or a directory, copied into the state
/// directory under its SHA-256 (`sha256:<hex>`), made read-only, and never changed.
///
/// Supports [`ImageSource::Artifact`] and [`ImageSource::Id`]. [`Image::remove`] of
/// an image that a group of the app in the same state directory runs is
/// [`Error::Conflict`] naming the group, and removes nothing.
#[derive(Clone, Debug)]
pub struct LocalImage {
    state: StateDir,
}

#[derive(Serialize, Deserialize)]
struct ImageRecord {
    labels: Labels,
    origin: String,
    created_at: SystemTime,
}

impl LocalImage {
    /// Images stored in `state`.
    pub fn new(state: StateDir) -> Self {
        LocalImage { state }
    }

    /// Where the stored copy of `id` is, for `app`.
    pub fn path_of(&self, app: &App, id: &ImageId) -> Result<PathBuf> {
        let hex = hex_of(id)?;
        let path = self.state.images(app).join(hex);
        if !path.exists() {
            return Err(Error::not_found(format!("image {id} of {app}")));
        }
        Ok(path)
    }
}

fn hex_of(id: &ImageId) -> Result<&str> {
    id.as_str()
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| {
            Error::invalid(
                "image",
                format!("`{id}` is not a local image id (sha256:<64 hex digits>)"),
            )
        })
}

/// Hashes a file or a directory tree: relative paths, kinds, executable bits and
/// contents, in a stable order.
fn content_hash(path: &Path) -> Result<String> {
    fn walk(base: &Path, path: &Path, hasher: &mut Sha256) -> Result<()> {
        let meta = std::fs::symlink_metadata(path).map_err(|e| io_error(path, e))?;
        let rel = path
            .strip_prefix(base)
            .unwrap_or(path)
            .to_string_lossy()
            .into_owned();
        if meta.is_dir() {
            hasher.update(format!("d {rel}\0"));
            let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| io_error(path, e))?
                .map(|e| e.map(|e| e.path()).map_err(|e| io_error(path, e)))
                .collect::<Result<_>>()?;
            entries.sort();
            for entry in entries {
                walk(base, &entry, hasher)?;
            }
        } else if meta.is_file() {
            let exec = meta.permissions().mode() & 0o111 != 0;
            let bytes = std::fs::read(path).map_err(|e| io_error(path, e))?;
            hasher.update(format!("f {rel} {exec} {}\0", bytes.len()));
            hasher.update(&bytes);
        } else {
            return Err(Error::invalid(
                "source",
                format!(
                    "{} is neither a file nor a directory (links are not stored)",
                    path.display()
                ),
            ));
        }
        Ok(())
    }
    let mut hasher = Sha256::new();
    walk(path, path, &mut hasher)?;
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Copies `from` to `to` (a file or a tree) and makes the copy read-only.
fn copy_read_only(from: &Path, to: &Path) -> Result<()> {
    let meta = std::fs::metadata(from).map_err(|e| io_error(from, e))?;
    if meta.is_dir() {
        std::fs::create_dir_all(to).map_err(|e| io_error(to, e))?;
        for entry in std::fs::read_dir(from).map_err(|e| io_error(from, e))? {
            let entry = entry.map_err(|e| io_error(from, e))?;
            copy_read_only(&entry.path(), &to.join(entry.file_name()))?;
        }
        set_mode(to, 0o555)
    } else {
        std::fs::copy(from, to).map_err(|e| io_error(to, e))?;
        let exec = meta.permissions().mode() & 0o111 != 0;
        set_mode(to, if exec { 0o555 } else { 0o444 })
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| io_error(path, e))
}

/// Removes a read-only tree.
pub(crate) fn remove_tree(path: &Path) -> Result<()> {
    fn writable(path: &Path) -> Result<()> {
        let meta = std::fs::symlink_metadata(path).map_err(|e| io_error(path, e))?;
        if meta.is_dir() {
            set_mode(path, 0o755)?;
            for entry in std::fs::read_dir(path).map_err(|e| io_error(path, e))? {
                writable(&entry.map_err(|e| io_error(path, e))?.path())?;
            }
        }
        Ok(())
    }
    if !path.exists() {
        return Ok(());
    }
    writable(path)?;
    if path.is_dir() {
        std::fs::remove_dir_all(path).map_err(|e| io_error(path, e))
    } else {
        std::fs::remove_file(path).map_err(|e| io_error(path, e))
    }
}

#[async_trait]
impl Image for LocalImage {
    /// An artifact must be a program that can run here: an executable ELF file for
    /// this machine's architecture or a `#!` script whose interpreter exists, or a
    /// directory whose `command` setting names one inside it.
    fn check_source(&self, source: &ImageSource, release: &Release) -> Result<()> {
        let ImageSource::Artifact(path) = source else {
            return Ok(());
        };
        let shown = format!("`{}`", path.display());
        if path.is_dir() {
            let Some(command) = release.settings.get("command") else {
                return Err(Error::invalid(
                    "settings.command",
                    format!(
                        "{shown} is a directory: name its executable with the setting `command`"
                    ),
                ));
            };
            let program = path.join(command);
            return check_program(&program, &format!("`{}`", program.display()), "source");
        }
        check_program(path, &shown, "source")
    }

    async fn prepare(
        &self,
        app: &App,
        source: &ImageSource,
        _events: &EventSink,
    ) -> Result<ImageRef> {
        let dir = self.state.images(app);
        match source {
            ImageSource::Id(id) => {
                self.path_of(app, id)?;
                let record: ImageRecord = read_json(&dir.join(format!("{}.json", hex_of(id)?)))?
                    .ok_or_else(|| Error::not_found(format!("image {id} of {app}")))?;
                Ok(ImageRef::new(
                    id.clone(),
                    app.clone(),
                    record.created_at,
                    record.origin,
                ))
            }
            ImageSource::Artifact(path) => {
                let path = path.clone();
                let this = self.clone();
                let app = app.clone();
                tokio::task::spawn_blocking(move || this.store(&app, &path))
                    .await
                    .map_err(|e| failed(format!("storing the artifact: {e}")))?
            }
            other => Err(Error::not_supported(format!(
                "{other} (the local provider takes artifacts)"
            ))),
        }
    }

    async fn images(&self, app: &App) -> Result<Vec<ImageRef>> {
        let mut out = Vec::new();
        for path in entries(&self.state.images(app))? {
            let Some(hex) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
            else {
                continue;
            };
            let Some(record) = read_json::<ImageRecord>(&path)? else {
                continue;
            };
            if labels::is_owned_by(&record.labels, app) {
                out.push(ImageRef::new(
                    ImageId::new(format!("sha256:{hex}")),
                    app.clone(),
                    record.created_at,
                    record.origin,
                ));
            }
        }
        Ok(out)
    }

    async fn remove(&self, app: &App, id: &ImageId) -> Result<()> {
        let Ok(hex) = hex_of(id) else { return Ok(()) };
        let dir = self.state.images(app);
        let record_path = dir.join(format!("{hex}.json"));
        let Some(record) = read_json::<ImageRecord>(&record_path)? else {
            return Ok(());
        };
        if !labels::is_owned_by(&record.labels, app) {
            return Ok(());
        }
        // a group whose instances run from it keeps it
        for group in entries(&self.state.groups(app))? {
            let Some(file) = read_json::<GroupFile>(&group.join("group.json"))? else {
                continue;
            };
            if file.labels.get(labels::IMAGE).map(String::as_str) == Some(id.as_str()) {
                return Err(Error::conflict(format!(
                    "image {id} is used by the instances of {}",
                    group.file_name().unwrap_or_default().to_string_lossy()
                )));
            }
        }
        remove_tree(&dir.join(hex))?;
        std::fs::remove_file(&record_path).map_err(|e| io_error(&record_path, e))
    }
}

impl LocalImage {
    fn store(&self, app: &App, path: &Path) -> Result<ImageRef> {
        if !path.exists() {
            return Err(Error::not_found(format!("artifact {}", path.display())));
        }
        let hex = content_hash(path)?;
        let id = ImageId::new(format!("sha256:{hex}"));
        let dir = self.state.images(app);
        let record_path = dir.join(format!("{hex}.json"));
        if let Some(record) = read_json::<ImageRecord>(&record_path)? {
            if dir.join(&hex).exists() {
                return Ok(ImageRef::new(
                    id,
                    app.clone(),
                    record.created_at,
                    record.origin,
                ));
            }
        }
        std::fs::create_dir_all(&dir).map_err(|e| io_error(&dir, e))?;
        let tmp = dir.join(format!(".{hex}.{}.tmp", std::process::id()));
        remove_tree(&tmp)?;
        copy_read_only(path, &tmp)?;
        let stored = dir.join(&hex);
        remove_tree(&stored)?;
        std::fs::rename(&tmp, &stored).map_err(|e| io_error(&stored, e))?;
        let mut image_labels = labels::app_labels(app);
        image_labels.insert(labels::IMAGE.into(), id.to_string());
        let record = ImageRecord {
            labels: image_labels,
            origin: format!("artifact {}", path.display()),
            created_at: SystemTime::now(),
        };
        write_json(&record_path, &record)?;
        Ok(ImageRef::new(
            id,
            app.clone(),
            record.created_at,
            record.origin,
        ))
    }
}
