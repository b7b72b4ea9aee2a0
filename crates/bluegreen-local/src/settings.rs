//! The release settings the local fleet reads.

use std::sync::LazyLock;
use std::time::Duration;

use bluegreen_core::settings::{self, Millis};
use bluegreen_core::{Error, Release, Result};
use serde::Deserialize;

/// The release settings [`LocalFleet`](crate::LocalFleet) reads; any other key is
/// refused with [`Error::Invalid`] naming `settings.<key>`.
///
/// | key | meaning | default |
/// | --- | --- | --- |
/// | `command` | the program inside a directory image (`bin/server`) | required for a directory image |
/// | `args` | its arguments, whitespace-separated | none |
/// | `health_path` | the path of the fleet's HTTP probe (`GET`, 2xx is healthy), starting with `/` | `/health` |
/// | `stop_timeout_ms` | grace between SIGTERM and SIGKILL when a group is destroyed, in milliseconds | `10000` |
///
/// The list is the fields of the struct the fleet reads them into
/// ([`settings::fields`]), in its order: it cannot miss one.
pub static SETTINGS: LazyLock<&'static [&'static str]> =
    LazyLock::new(settings::fields::<Settings>);

/// A release's settings, parsed and checked.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Settings {
    /// `command`.
    pub command: Option<String>,
    /// `args`, as given (split by [`Settings::args`]).
    args: Option<String>,
    /// `health_path`.
    #[serde(default = "health_path")]
    pub health_path: String,
    /// `stop_timeout_ms`.
    #[serde(default = "stop_timeout", rename = "stop_timeout_ms")]
    stop_timeout: Millis,
}

fn health_path() -> String {
    "/health".into()
}

fn stop_timeout() -> Millis {
    Millis(Duration::from_secs(10))
}

impl Settings {
    /// Reads and checks the settings of `release`.
    pub(crate) fn of(release: &Release) -> Result<Settings> {
        let settings: Settings = release.settings_as("the local fleet")?;
        if !settings.health_path.starts_with('/') {
            return Err(Error::invalid(
                "settings.health_path",
                format!("`{}` does not start with `/`", settings.health_path),
            ));
        }
        Ok(settings)
    }

    /// The arguments (`args` split at whitespace).
    pub(crate) fn args(&self) -> Vec<String> {
        self.args
            .as_deref()
            .map(|a| a.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default()
    }

    /// The grace between SIGTERM and SIGKILL.
    pub(crate) fn stop_timeout(&self) -> Duration {
        self.stop_timeout.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_key_is_read_and_no_other() {
        let mut release = Release::new("img".into(), 1);
        assert_eq!(
            *SETTINGS,
            ["command", "args", "health_path", "stop_timeout_ms"]
        );
        for key in SETTINGS.iter() {
            let value = if *key == "stop_timeout_ms" { "5" } else { "/x" };
            release = release.with_setting(*key, value);
        }
        let s = Settings::of(&release).unwrap();
        assert_eq!(s.stop_timeout(), Duration::from_millis(5));
        let e = Settings::of(&release.with_setting("port", "1")).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "invalid settings.port: the local fleet does not know it (it reads {})",
                SETTINGS.join(", ")
            )
        );
    }

    #[test]
    fn bad_values_are_named() {
        let base = Release::new("img".into(), 1);
        let e = Settings::of(&base.clone().with_setting("stop_timeout_ms", "2s")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("invalid settings.stop_timeout_ms: `2s` is not"),
            "{e}"
        );
        let e = Settings::of(&base.with_setting("health_path", "health")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid settings.health_path: `health` does not start with `/`"
        );
    }
}
