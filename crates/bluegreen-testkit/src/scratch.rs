//! Temporary directories for tests, removed even when a provider left read-only
//! files in them (an image store often does).

use std::io;
use std::path::{Path, PathBuf};

/// A fresh directory under the system's temporary directory, removed when dropped:
/// a [`tempfile::TempDir`] whose contents are made writable first, so that a store
/// of read-only images goes too, whoever runs the tests.
///
/// ```
/// let dir = bluegreen_testkit::scratch::Scratch::new("example");
/// std::fs::write(dir.path().join("file"), "x").unwrap();
/// let path = dir.path().to_path_buf();
/// drop(dir);
/// assert!(!path.exists());
/// ```
#[derive(Debug)]
pub struct Scratch(Option<tempfile::TempDir>);

impl Scratch {
    /// A new directory whose name starts with `bluegreen-{tag}-`.
    pub fn new(tag: &str) -> Scratch {
        let dir = tempfile::Builder::new()
            .prefix(&format!("bluegreen-{tag}-"))
            .tempdir()
            .expect("a temporary directory");
        Scratch(Some(dir))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.0.as_ref().expect("kept until dropped").path()
    }

    /// `path()` joined with `name`.
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path().join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            let _ = writable(dir.path());
            let _ = dir.close();
        }
    }
}

/// Gives the owner write permission on `path` and everything under it (symbolic
/// links are not followed).
fn writable(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::symlink_metadata(path)?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    let mode = meta.permissions().mode();
    if mode & 0o200 == 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode | 0o700))?;
    }
    if meta.is_dir() {
        for entry in std::fs::read_dir(path)? {
            let _ = writable(&entry?.path());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Scratch;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn read_only_contents_are_removed() {
        let dir = Scratch::new("scratch-test");
        let store = dir.join("images/1");
        std::fs::create_dir_all(&store).unwrap();
        std::fs::write(store.join("app"), "#!/bin/sh\n").unwrap();
        for p in [store.join("app"), store.clone()] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o555)).unwrap();
        }
        let path = dir.path().to_path_buf();
        drop(dir);
        assert!(!path.exists());
    }
}
