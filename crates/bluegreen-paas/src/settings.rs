//! The release settings the provider reads, and the checks of a release's
//! environment.

use std::sync::LazyLock;

use bluegreen_core::settings;
use bluegreen_core::{Error, Release, Result};
use serde::Deserialize;

use crate::labels::is_mark;

/// The release settings the provider reads.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReleaseSettings {
    /// `process_type`: the process type that serves (default `web`).
    #[serde(default = "web")]
    pub(crate) process_type: String,
    /// `dyno_size`: the formation's dyno size (default: the platform's).
    pub(crate) dyno_size: Option<String>,
}

fn web() -> String {
    "web".to_owned()
}

/// The setting keys the provider knows: `process_type` (the process type that
/// serves, default `web`) and `dyno_size` (the formation's dyno size, default the
/// platform's); any other key is refused with `Invalid` naming `settings.<key>`.
///
/// The list is the fields of the struct the provider reads them into
/// ([`settings::fields`]), in its order: it cannot miss one.
pub static SETTINGS: LazyLock<&'static [&'static str]> =
    LazyLock::new(settings::fields::<ReleaseSettings>);

/// Checks a release for this platform: known settings only, config var names of
/// `A-Z a-z 0-9 _`, none of bluegreen's marks.
pub(crate) fn check_release(release: &Release) -> Result<ReleaseSettings> {
    let settings: ReleaseSettings = release.settings_as("the PaaS fleet")?;
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
    let process_type = &settings.process_type;
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
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_are_checked() {
        let r = Release::new("s".into(), 1).with_setting("instance_type", "x");
        assert!(check_release(&r).is_err());
        let r = Release::new("s".into(), 1).with_env("A-B", "x");
        assert!(check_release(&r).is_err());
        let r = Release::new("s".into(), 1).with_env("BLUEGREEN_GROUP", "x");
        assert!(check_release(&r).is_err());
        let r = Release::new("s".into(), 1).with_setting("dyno_size", "standard-2X");
        let s = check_release(&r).unwrap();
        assert_eq!(s.process_type, "web");
        assert_eq!(s.dyno_size.as_deref(), Some("standard-2X"));
    }

    #[test]
    fn the_list_is_the_struct_and_every_key_on_it_is_read() {
        assert_eq!(*SETTINGS, ["process_type", "dyno_size"]);
        let mut r = Release::new("s".into(), 1);
        for key in SETTINGS.iter() {
            r = r.with_setting(*key, "x");
        }
        check_release(&r).unwrap();
        let e = check_release(&r.with_setting("size", "1")).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "invalid settings.size: the PaaS fleet does not know it (it reads {})",
                SETTINGS.join(", ")
            )
        );
    }
}
