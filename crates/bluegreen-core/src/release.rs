//! Releases: an image plus its configuration and size.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::id::string_id;
use crate::image::ImageId;
use crate::task::ReleaseTask;

string_id!(
    /// A release's content hash: the same image, configuration and size always give
    /// the same id, so that a deployment run again finds its own group.
    ReleaseId
);

/// What a group runs: an image, its environment, its size and instance settings.
/// A rollback restores all of it.
///
/// `Debug` shows the environment's keys, never its values (they are often secrets).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    /// The immutable image.
    pub image: ImageId,
    /// Environment variables given to every instance.
    pub env: BTreeMap<String, String>,
    /// How many instances the group has.
    pub size: u32,
    /// Provider-specific instance settings (`instance_type`, `memory`, `command`, ...).
    /// Each provider documents the keys it reads and rejects the ones it does not know.
    pub settings: BTreeMap<String, String>,
    /// A one-off command run from this release before it gets traffic
    /// ([`ReleaseTask`]). Kept out of the canonical form while unset, so that
    /// releases without a task keep their ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<ReleaseTask>,
}

/// The largest group a release may ask for.
pub const MAX_SIZE: u32 = 100_000;

impl Release {
    /// A release of `image` with `size` instances and no configuration.
    pub fn new(image: ImageId, size: u32) -> Self {
        Release {
            image,
            env: BTreeMap::new(),
            size,
            settings: BTreeMap::new(),
            task: None,
        }
    }

    /// Names the release's task.
    pub fn with_task(mut self, task: ReleaseTask) -> Self {
        self.task = Some(task);
        self
    }

    /// Adds an environment variable.
    pub fn with_env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    /// Adds an instance setting.
    pub fn with_setting(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.insert(key.into(), value.into());
        self
    }

    /// The content hash: 16 hex digits of a SHA-256 over the canonical form.
    ///
    /// The canonical form (version 1) is the JSON object
    /// `{"image":…,"env":{…},"size":…,"settings":{…}}`, in that order, maps sorted
    /// by key, no spaces, then `"task":{…}` when the release has a task. It is pinned by golden tests: a release gives the same id
    /// forever, so that groups already running keep being listed after an upgrade.
    /// A field added to `Release` later must stay out of the canonical form while it
    /// has its default value (`skip_serializing_if`), or bump the version and keep
    /// reading the old ids.
    pub fn id(&self) -> ReleaseId {
        let json = serde_json::to_vec(self).expect("a release always serializes");
        let digest = Sha256::digest(json);
        let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        ReleaseId::new(hex)
    }

    /// Reads the settings into a provider's typed struct `T` (its fields are the keys
    /// it reads), refusing an unknown key or a bad value with [`Error::Invalid`]
    /// naming `settings.<key>`; `provider` names the reader (`the Docker fleet`). See
    /// [`settings`](crate::settings).
    pub fn settings_as<T: serde::de::DeserializeOwned>(&self, provider: &str) -> Result<T> {
        crate::settings::parse(provider, &self.settings)
    }

    /// Refuses any setting that `fleet` (a name for people, `the EC2 fleet`) does not
    /// read, naming the setting and the ones it does read.
    ///
    /// ```
    /// use bluegreen_core::Release;
    /// let release = Release::new("img".into(), 1).with_setting("comand", "run");
    /// let e = release.check_settings("the local fleet", &["command", "args"]).unwrap_err();
    /// assert_eq!(
    ///     e.to_string(),
    ///     "invalid settings.comand: the local fleet does not know it (it reads command, args)"
    /// );
    /// ```
    pub fn check_settings(&self, fleet: &str, known: &[&str]) -> Result<()> {
        match self.settings.keys().find(|k| !known.contains(&k.as_str())) {
            Some(key) => Err(Error::invalid(
                format!("settings.{key}"),
                format!("{fleet} does not know it (it reads {})", known.join(", ")),
            )),
            None => Ok(()),
        }
    }

    /// Checks the size and the environment's keys.
    pub fn validate(&self) -> Result<()> {
        if self.size == 0 {
            return Err(Error::invalid("size", "must be at least 1"));
        }
        if self.size > MAX_SIZE {
            return Err(Error::invalid(
                "size",
                format!("{} is more than the most, {MAX_SIZE}", self.size),
            ));
        }
        if let Some(task) = &self.task {
            task.validate()?;
        }
        validate_env(&self.env)
    }
}

/// Checks environment variable names: not empty, no `=` and no NUL.
pub(crate) fn validate_env(env: &BTreeMap<String, String>) -> Result<()> {
    for (key, value) in env {
        if key.is_empty() {
            return Err(Error::invalid("env", "a variable has an empty name"));
        }
        let portable = key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !portable {
            return Err(Error::invalid(
                format!("env.{key}"),
                "a variable name is letters, digits and `_`, not starting with a digit",
            ));
        }
        if value.contains('\0') {
            return Err(Error::invalid(
                format!("env.{key}"),
                "a value must not contain NUL",
            ));
        }
    }
    Ok(())
}

impl fmt::Debug for Release {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Release")
            .field("image", &self.image)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("size", &self.size)
            .field("settings", &self.settings)
            .field("task", &self.task)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_follows_content() {
        let a = Release::new("img-1".into(), 3).with_env("A", "1");
        let b = Release::new("img-1".into(), 3).with_env("A", "1");
        let c = Release::new("img-1".into(), 3).with_env("A", "2");
        assert_eq!(a.id(), b.id());
        assert_ne!(a.id(), c.id());
        assert_eq!(a.id().as_str().len(), 16);
    }

    #[test]
    fn debug_hides_values() {
        let r = Release::new("img".into(), 1).with_env("DATABASE_PASSWORD", "hunter2");
        let text = format!("{r:?}");
        assert!(text.contains("DATABASE_PASSWORD"));
        assert!(!text.contains("hunter2"));
    }

    #[test]
    fn size_and_env_are_checked() {
        assert!(matches!(
            Release::new("i".into(), 0).validate(),
            Err(Error::Invalid { field, .. }) if field == "size"
        ));
        assert!(matches!(
            Release::new("i".into(), 1).with_env("A=B", "x").validate(),
            Err(Error::Invalid { field, .. }) if field == "env.A=B"
        ));
    }
}
