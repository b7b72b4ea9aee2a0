//! The release settings the Swarm fleet reads: the Docker fleet's, plus placement,
//! the published port and the restart policy's limits.

use std::time::Duration;

use bluegreen_core::{Error, Release, Result};

use crate::settings::{parse, Settings, SETTINGS};

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
pub const SWARM_SETTINGS: [&str; 6] = [
    "restart_delay_ms",
    "restart_max_attempts",
    "published_port",
    "constraints",
    "spread",
    "max_per_node",
];

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

fn positive(release: &Release, key: &str) -> Result<Option<i64>> {
    release
        .settings
        .get(key)
        .map(|v| {
            v.trim()
                .parse::<i64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| {
                    Error::invalid(
                        format!("settings.{key}"),
                        format!("`{v}` is not a positive number"),
                    )
                })
        })
        .transpose()
}

/// Parses and checks `release`'s settings for the Swarm fleet. Makes no call.
pub(crate) fn swarm_settings_of(release: &Release) -> Result<SwarmSettings> {
    let known: Vec<&str> = SETTINGS.iter().chain(&SWARM_SETTINGS).copied().collect();
    release.check_settings("the Swarm fleet", &known)?;
    let get = |k: &str| release.settings.get(k).map(|v| v.trim());
    let restart = match get("restart").unwrap_or("any") {
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
    // the Docker settings, without the restart policy, which a swarm names otherwise
    let mut docker_only = release.clone();
    docker_only
        .settings
        .retain(|k, _| k != "restart" && !SWARM_SETTINGS.contains(&k.as_str()));
    let docker = parse(&docker_only)?;
    let restart_delay = match get("restart_delay_ms") {
        Some(v) => Some(v.parse::<u64>().map(Duration::from_millis).map_err(|_| {
            Error::invalid(
                "settings.restart_delay_ms",
                format!("`{v}` is not a number of milliseconds"),
            )
        })?),
        None => None,
    };
    let published_port = match get("published_port") {
        Some(p) => Some(p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
            Error::invalid(
                "settings.published_port",
                format!("`{p}` is not a port number"),
            )
        })?),
        None => None,
    };
    let constraints = match get("constraints") {
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
    let spread = match get("spread") {
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
        restart_delay,
        restart_max_attempts: positive(release, "restart_max_attempts")?,
        published_port,
        constraints,
        spread,
        max_per_node: positive(release, "max_per_node")?,
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
