//! The release settings the Docker fleet reads.

use std::sync::LazyLock;
use std::time::Duration;

use bluegreen_core::settings::{self, Millis, Words};
use bluegreen_core::{Error, Release, Result};
use bollard::models::HealthConfig;
use serde::Deserialize;

/// The release settings [`DockerFleet`](crate::DockerFleet) reads; any other key is
/// refused with [`Error::Invalid`] naming `settings.<key>`.
///
/// | key | meaning | default |
/// | --- | --- | --- |
/// | `port` | the port the app listens on inside the container (`PORT`) | `8080` |
/// | `command` | the container's command, whitespace-separated | the image's `CMD` |
/// | `memory` | memory limit: bytes, or with `k`, `m`, `g` (`256m`) | none |
/// | `cpus` | CPU limit in cores (`0.5`) | none |
/// | `restart` | restart policy: `no`, `always`, `unless-stopped`, `on-failure` | `unless-stopped` |
/// | `health_cmd` | Docker health check, exec form, whitespace-separated (`/app --check`); `none` disables the image's | the image's `HEALTHCHECK` |
/// | `health_interval_ms` | Docker health check interval | Docker's (30 s) |
/// | `health_timeout_ms` | Docker health check timeout | Docker's (30 s) |
/// | `health_retries` | failures before Docker says `unhealthy` | Docker's (3) |
/// | `health_start_period_ms` | Docker health check start period | Docker's (0) |
/// | `health_path` | the fleet's own HTTP probe (`GET`, 2xx is healthy); `none` disables it | `/health` |
/// | `stop_timeout_ms` | grace between SIGTERM and SIGKILL when a group is destroyed | `10000` |
///
/// The list is the fields of the struct the fleet reads them into
/// ([`settings::fields`]), in its order: it cannot miss one.
pub static SETTINGS: LazyLock<&'static [&'static str]> = LazyLock::new(settings::fields::<Raw>);

/// The settings as read by the core's parser ([`Release::settings_as`]), before the
/// checks that span more than one value's type. Unknown keys are refused by the
/// caller ([`Release::check_settings`]): the Swarm fleet reads these and more.
#[derive(Deserialize)]
pub(crate) struct Raw {
    port: Option<u16>,
    command: Option<Words>,
    memory: Option<String>,
    cpus: Option<f64>,
    /// Checked by each fleet: Docker's and the swarm's policies differ.
    pub(crate) restart: Option<String>,
    health_cmd: Option<Words>,
    health_interval_ms: Option<Millis>,
    health_timeout_ms: Option<Millis>,
    health_retries: Option<i64>,
    health_start_period_ms: Option<Millis>,
    health_path: Option<String>,
    stop_timeout_ms: Option<Millis>,
}

/// A release's settings, parsed and checked.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Settings {
    pub port: u16,
    pub command: Option<Vec<String>>,
    pub memory: Option<i64>,
    pub nano_cpus: Option<i64>,
    pub restart: String,
    pub health_cmd: Option<Vec<String>>,
    pub health_interval: Option<Duration>,
    pub health_timeout: Option<Duration>,
    pub health_retries: Option<i64>,
    pub health_start_period: Option<Duration>,
    pub health_path: Option<String>,
    pub stop_timeout: Duration,
}

/// Bytes from `256m`, `1g`, `512k`, `1048576`.
fn memory(value: &str) -> Result<i64> {
    let v = value.trim().to_ascii_lowercase();
    let v = v.strip_suffix('b').unwrap_or(&v);
    let (number, unit) = match v.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&v[..i], c),
        _ => (v, ' '),
    };
    let factor: i64 = match unit {
        ' ' => 1,
        'k' => 1 << 10,
        'm' => 1 << 20,
        'g' => 1 << 30,
        _ => 0,
    };
    let n: i64 = number.parse().unwrap_or(0);
    match n.checked_mul(factor) {
        // Docker's own floor is 6 MiB
        Some(bytes) if bytes >= 6 << 20 => Ok(bytes),
        _ => Err(Error::invalid(
            "settings.memory",
            format!("`{value}` is not a memory size of at least 6m (like 256m or 1g)"),
        )),
    }
}

/// The settings of the Docker fleet in `release`, checked; any other key is refused.
pub(crate) fn settings_of(release: &Release) -> Result<Settings> {
    release.check_settings("the Docker fleet", &SETTINGS)?;
    let raw: Raw = release.settings_as("the Docker fleet")?;
    let restart = raw
        .restart
        .clone()
        .unwrap_or_else(|| "unless-stopped".to_owned());
    if !["no", "always", "unless-stopped", "on-failure"].contains(&restart.as_str()) {
        return Err(Error::invalid(
            "settings.restart",
            format!("`{restart}` is not no, always, unless-stopped or on-failure"),
        ));
    }
    checked(raw, restart)
}

/// Checks `raw`, read by the core's parser, with the restart policy `restart`
/// checked by the caller.
pub(crate) fn checked(raw: Raw, restart: String) -> Result<Settings> {
    let port = match raw.port {
        Some(0) => {
            return Err(Error::invalid(
                "settings.port",
                "`0` is not a port number (1 to 65535)",
            ))
        }
        Some(p) => p,
        None => 8080,
    };
    let nano_cpus = match raw.cpus {
        Some(c) if c.is_finite() && c > 0.0 && c <= 1024.0 => Some((c * 1e9).round() as i64),
        Some(c) => {
            return Err(Error::invalid(
                "settings.cpus",
                format!("`{c}` is not a number of cores (above 0, at most 1024)"),
            ))
        }
        None => None,
    };
    if let Some(r) = raw.health_retries.filter(|r| *r <= 0) {
        return Err(Error::invalid(
            "settings.health_retries",
            format!("`{r}` is not a positive number"),
        ));
    }
    let health_path = match raw.health_path.as_deref().map(str::trim) {
        Some("none") => None,
        Some(p) if p.starts_with('/') => Some(p.to_owned()),
        Some(p) => {
            return Err(Error::invalid(
                "settings.health_path",
                format!("`{p}` does not start with `/` (or is `none`)"),
            ))
        }
        None => Some("/health".to_owned()),
    };
    for (key, value) in [
        ("health_interval_ms", raw.health_interval_ms),
        ("health_timeout_ms", raw.health_timeout_ms),
    ] {
        if value.is_some_and(|d| d.0 < Duration::from_millis(1)) {
            return Err(Error::invalid(
                format!("settings.{key}"),
                "must be at least 1 ms",
            ));
        }
    }
    Ok(Settings {
        port,
        command: raw.command.map(|w| w.0),
        memory: raw.memory.as_deref().map(memory).transpose()?,
        nano_cpus,
        restart,
        health_cmd: raw.health_cmd.map(|w| w.0),
        health_interval: raw.health_interval_ms.map(|m| m.0),
        health_timeout: raw.health_timeout_ms.map(|m| m.0),
        health_retries: raw.health_retries,
        health_start_period: raw.health_start_period_ms.map(|m| m.0),
        health_path,
        stop_timeout: raw.stop_timeout_ms.map_or(Duration::from_secs(10), |m| m.0),
    })
}

/// The Docker health check the settings ask for: the exec-form command of
/// `health_cmd` (`none` disables the image's), or the image's with the release's
/// timings; `None` keeps the image's as it is.
pub(crate) fn health_config(s: &Settings) -> Option<HealthConfig> {
    let nanos = |d: Option<Duration>| d.map(|d| d.as_nanos().min(i64::MAX as u128) as i64);
    let timed = |test: Option<Vec<String>>| HealthConfig {
        test,
        interval: nanos(s.health_interval),
        timeout: nanos(s.health_timeout),
        retries: s.health_retries,
        start_period: nanos(s.health_start_period),
        ..Default::default()
    };
    match &s.health_cmd {
        Some(cmd) if cmd.len() == 1 && cmd[0] == "none" => Some(HealthConfig {
            test: Some(vec!["NONE".into()]),
            ..Default::default()
        }),
        Some(cmd) => Some(timed(Some(
            std::iter::once("CMD".to_owned())
                .chain(cmd.iter().cloned())
                .collect(),
        ))),
        None if s.health_interval.is_some()
            || s.health_timeout.is_some()
            || s.health_retries.is_some()
            || s.health_start_period.is_some() =>
        {
            Some(timed(None))
        }
        None => None,
    }
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
            *SETTINGS,
            [
                "port",
                "command",
                "memory",
                "cpus",
                "restart",
                "health_cmd",
                "health_interval_ms",
                "health_timeout_ms",
                "health_retries",
                "health_start_period_ms",
                "health_path",
                "stop_timeout_ms",
            ]
        );
        let e = settings_of(&release(&[("comand", "x")])).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "invalid settings.comand: the Docker fleet does not know it (it reads {})",
                SETTINGS.join(", ")
            )
        );
    }

    #[test]
    fn defaults() {
        let s = settings_of(&release(&[])).unwrap();
        assert_eq!(s.port, 8080);
        assert_eq!(s.restart, "unless-stopped");
        assert_eq!(s.health_path.as_deref(), Some("/health"));
        assert_eq!(s.stop_timeout, Duration::from_secs(10));
        assert_eq!(s.command, None);
    }

    #[test]
    fn values_are_parsed() {
        let s = settings_of(&release(&[
            ("memory", "256m"),
            ("cpus", "0.5"),
            ("command", "/app --app-version 2"),
            ("health_cmd", "/app check"),
            ("health_interval_ms", "500"),
            ("health_path", "none"),
            ("port", "3000"),
        ]))
        .unwrap();
        assert_eq!(s.memory, Some(256 << 20));
        assert_eq!(s.nano_cpus, Some(500_000_000));
        assert_eq!(s.command.unwrap(), ["/app", "--app-version", "2"]);
        assert_eq!(s.health_cmd.unwrap(), ["/app", "check"]);
        assert_eq!(s.health_interval, Some(Duration::from_millis(500)));
        assert_eq!(s.health_path, None);
        assert_eq!(s.port, 3000);
        assert_eq!(memory("1g").unwrap(), 1 << 30);
        assert_eq!(memory("7340032").unwrap(), 7 << 20);
    }

    #[test]
    fn bad_values_name_the_setting() {
        for (key, value) in [
            ("memory", "lots"),
            ("memory", "1k"),
            ("cpus", "-1"),
            ("restart", "sometimes"),
            ("port", "0"),
            ("health_path", "health"),
            ("stop_timeout_ms", "10s"),
            ("comand", "x"),
            ("command", "  "),
        ] {
            match settings_of(&release(&[(key, value)])) {
                Err(Error::Invalid { field, .. }) => assert_eq!(field, format!("settings.{key}")),
                other => panic!("{key}={value}: {other:?}"),
            }
        }
    }
}
