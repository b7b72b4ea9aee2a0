//! The release settings the provider reads, and the checks of a release's
//! environment.

use bluegreen_core::{Error, Release, Result};

use crate::labels::is_mark;

/// The release settings the provider reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ReleaseSettings {
    /// `process_type`: the process type that serves (default `web`).
    pub(crate) process_type: String,
    /// `dyno_size`: the formation's dyno size (default: the platform's).
    pub(crate) dyno_size: Option<String>,
}

/// The setting keys the provider knows.
pub const SETTINGS: [&str; 2] = ["process_type", "dyno_size"];

/// Checks a release for this platform: known settings only, config var names of
/// `A-Z a-z 0-9 _`, none of bluegreen's marks.
pub(crate) fn check_release(release: &Release) -> Result<ReleaseSettings> {
    for key in release.settings.keys() {
        if !SETTINGS.contains(&key.as_str()) {
            return Err(Error::invalid(
                format!("settings.{key}"),
                format!(
                    "unknown setting; this provider reads {}",
                    SETTINGS.join(", ")
                ),
            ));
        }
    }
    for key in release.env.keys() {
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(Error::invalid(
                format!("env.{key}"),
                "config var names are letters, digits and `_`",
            ));
        }
        if is_mark(key) {
            return Err(Error::invalid(
                format!("env.{key}"),
                "this config var is one of bluegreen's marks",
            ));
        }
    }
    let process_type = release
        .settings
        .get("process_type")
        .cloned()
        .unwrap_or_else(|| "web".to_owned());
    if process_type.is_empty()
        || process_type.len() > 128
        || !process_type
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(Error::invalid(
            "settings.process_type",
            format!("`{process_type}` is not a process type"),
        ));
    }
    Ok(ReleaseSettings {
        process_type,
        dyno_size: release.settings.get("dyno_size").cloned(),
    })
}
