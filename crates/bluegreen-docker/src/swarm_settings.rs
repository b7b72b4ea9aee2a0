//! The release settings the Swarm fleet reads: the Docker fleet's, plus placement,
//! the published port and the restart policy's limits.

use std::sync::LazyLock;
use std::time::Duration;

use bluegreen_core::settings::{self, Millis};
use bluegreen_core::{Error, Release, Result};
use serde::Deserialize;

use crate::settings::{checked, Raw, Settings, SETTINGS};

/// The release settings [`SwarmFleet`](crate::SwarmFleet) reads: those of
/// [`SETTINGS`](crate::SETTINGS) and these; any other key is refused with
/// [`Error::Invalid`] naming `settings.<key>`, before any call to the swarm.
///
/// | key | meaning | default |
/// | --- | --- | --- |
/// | `restart` | the task restart condition: `none`, `on-failure`, `any` (Docker's `no` is `none`, `always` and `unless-stopped` are `any`) | `any` |
/// | `restart_delay_ms` | the delay between a task's end and its replacement | Swarm's (5 s) |
/// | `restart_max_attempts` | how many times a task is replaced, then it stays failed | unlimited |
/// | `published_port` | the host-mode port published on every node that runs a task (at most one task per node then) | an ephemeral port per task |
/// | `constraints` | placement constraints, separated by `;` (`node.role==worker;node.labels.zone!=b`) | none |
/// | `spread` | a placement preference: spread the tasks over the values of this node attribute (`node.labels.zone`) | none |
/// | `max_per_node` | the most tasks of the group on one node | unlimited |
///
/// The list is the fields of the struct the fleet reads them into
/// ([`settings::fields`]), in its order: it cannot miss one.
pub static SWARM_SETTINGS: LazyLock<&'static [&'static str]> =
    LazyLock::new(settings::fields::<Extra>);

/// The settings only the swarm reads, as the core's parser reads them.
#[derive(Deserialize)]
struct Extra {
    restart_delay_ms: Option<Millis>,
    restart_max_attempts: Option<i64>,
    published_port: Option<u16>,
    constraints: Option<String>,
    spread: Option<String>,
    max_per_node: Option<i64>,
}

/// A release's settings for a swarm, parsed and checked.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct SwarmSettings {
    pub docker: Settings,
    /// `none`, `on-failure` or `any`.
    pub restart: &'static str,
    pub restart_delay: Option<Duration>,
    pub restart_max_attempts: Option<i64>,
    pub published_port: Option<u16>,
    pub constraints: Vec<String>,
    pub spread: Option<String>,
    pub max_per_node: Option<i64>,
}

/// `value` when it is above 0.
fn positive(key: &str, value: Option<i64>) -> Result<Option<i64>> {
    match value {
        Some(n) if n <= 0 => Err(Error::invalid(
            format!("settings.{key}"),
            format!("`{n}` is not a positive number"),
        )),
        other => Ok(other),
    }
}

/// Parses and checks `release`'s settings for the Swarm fleet. Makes no call.
pub(crate) fn swarm_settings_of(release: &Release) -> Result<SwarmSettings> {
    let known: Vec<&str> = SETTINGS
        .iter()
        .chain(SWARM_SETTINGS.iter())
        .copied()
        .collect();
    release.check_settings("the Swarm fleet", &known)?;
    // each struct reads its own keys out of the whole map
    let only = |keys: &[&str]| {
        let mut r = release.clone();
        r.settings.retain(|k, _| keys.contains(&k.as_str()));
        r
    };
    let raw: Raw = only(&SETTINGS).settings_as("the Swarm fleet")?;
    let extra: Extra = only(&SWARM_SETTINGS).settings_as("the Swarm fleet")?;
    let restart = match raw.restart.as_deref().map(str::trim).unwrap_or("any") {
        "none" | "no" => "none",
        "on-failure" => "on-failure",
        "any" | "always" | "unless-stopped" => "any",
        other => {
            return Err(Error::invalid(
                "settings.restart",
                format!("`{other}` is not none, on-failure or any"),
            ))
        }
    };
    // the Docker settings; the restart policy, which a swarm names otherwise, is
    // carried as the swarm's
    let docker = checked(raw, restart.to_owned())?;
    if extra.published_port == Some(0) {
        return Err(Error::invalid(
            "settings.published_port",
            "`0` is not a port number (1 to 65535)",
        ));
    }
    let constraints = match extra.constraints.as_deref() {
        Some(c) => {
            let list: Vec<String> = c
                .split(';')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect();
            if let Some(bad) = list
                .iter()
                .find(|c| !(c.contains("==") || c.contains("!=")))
            {
                return Err(Error::invalid(
                    "settings.constraints",
                    format!("`{bad}` is not `attribute==value` or `attribute!=value`"),
                ));
            }
            list
        }
        None => Vec::new(),
    };
    let spread = match extra.spread.as_deref().map(str::trim) {
        Some(s) if s.starts_with("node.") || s.starts_with("engine.labels.") => Some(s.to_owned()),
        Some(s) => {
            return Err(Error::invalid(
                "settings.spread",
                format!("`{s}` is not a node attribute (like node.labels.zone)"),
            ))
        }
        None => None,
    };
    Ok(SwarmSettings {
        docker,
        restart,
        restart_delay: extra.restart_delay_ms.map(|m| m.0),
        restart_max_attempts: positive("restart_max_attempts", extra.restart_max_attempts)?,
        published_port: extra.published_port,
        constraints,
        spread,
        max_per_node: positive("max_per_node", extra.max_per_node)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(pairs: &[(&str, &str)]) -> Release {
        pairs
            .iter()
            .fold(Release::new("sha256:x".into(), 1), |r, (k, v)| {
                r.with_setting(*k, *v)
            })
    }

    #[test]
    fn the_list_is_the_struct() {
        assert_eq!(
            *SWARM_SETTINGS,
            [
                "restart_delay_ms",
                "restart_max_attempts",
                "published_port",
                "constraints",
                "spread",
                "max_per_node",
            ]
        );
    }

    #[test]
    fn defaults_and_values() {
        let s = swarm_settings_of(&release(&[])).unwrap();
        assert_eq!(s.restart, "any");
        assert_eq!(s.docker.port, 8080);
        assert!(s.constraints.is_empty());
        let s = swarm_settings_of(&release(&[
            ("restart", "no"),
            ("restart_delay_ms", "250"),
            ("restart_max_attempts", "2"),
            ("published_port", "9000"),
            ("constraints", "node.role==worker; node.labels.zone!=b"),
            ("spread", "node.labels.zone"),
            ("max_per_node", "1"),
            ("memory", "64m"),
        ]))
        .unwrap();
        assert_eq!(s.restart, "none");
        assert_eq!(s.restart_delay, Some(Duration::from_millis(250)));
        assert_eq!(s.restart_max_attempts, Some(2));
        assert_eq!(s.published_port, Some(9000));
        assert_eq!(s.constraints, ["node.role==worker", "node.labels.zone!=b"]);
        assert_eq!(s.spread.as_deref(), Some("node.labels.zone"));
        assert_eq!(s.max_per_node, Some(1));
        assert_eq!(s.docker.memory, Some(64 << 20));
    }

    #[test]
    fn bad_values_name_the_setting() {
        for (key, value) in [
            ("restart", "sometimes"),
            ("restart_delay_ms", "1s"),
            ("restart_max_attempts", "0"),
            ("published_port", "70000"),
            ("constraints", "node.role"),
            ("spread", "zone"),
            ("max_per_node", "-1"),
            ("memory", "lots"),
            ("replicas", "3"),
        ] {
            match swarm_settings_of(&release(&[(key, value)])) {
                Err(Error::Invalid { field, .. }) => assert_eq!(field, format!("settings.{key}")),
                other => panic!("{key}={value}: {other:?}"),
            }
        }
    }
}
