//! Ownership marks as config vars, app names, and the release settings the provider
//! reads.
//!
//! Heroku apps have no labels, so every label of [`Group::labels`] is kept as a config
//! var (`bluegreen.owner` is `BLUEGREEN_OWNER`, `bluegreen.group` is
//! `BLUEGREEN_GROUP`, ...), with the whole record in `BLUEGREEN_RECORD`.

use std::collections::BTreeMap;

use bluegreen_core::labels::{self, Labels};
use bluegreen_core::{App, Error, Group, GroupId, Release, Result};
use sha2::{Digest, Sha256};

use crate::api::Vars;

/// The config var that holds [`Group::to_record`].
pub const RECORD_VAR: &str = "BLUEGREEN_RECORD";

/// The label keys kept as config vars.
const LABEL_KEYS: [&str; 8] = [
    labels::OWNER,
    labels::APP,
    labels::ENVIRONMENT,
    labels::GROUP,
    labels::GENERATION,
    labels::RELEASE,
    labels::IMAGE,
    labels::DEPLOYMENT,
];

/// The config var that holds a label (`bluegreen.owner` is `BLUEGREEN_OWNER`).
///
/// ```
/// assert_eq!(bluegreen_paas::var_for_label("bluegreen.group"), "BLUEGREEN_GROUP");
/// ```
pub fn var_for_label(key: &str) -> String {
    key.replace('.', "_").to_ascii_uppercase()
}

/// Whether a config var is one of bluegreen's marks (a user's environment must not
/// set it).
pub(crate) fn is_mark(var: &str) -> bool {
    var == RECORD_VAR || LABEL_KEYS.iter().any(|k| var_for_label(k) == var)
}

/// Labels as config vars.
pub(crate) fn vars_of(labels: &Labels) -> Vars {
    labels
        .iter()
        .map(|(k, v)| (var_for_label(k), v.clone()))
        .collect()
}

/// The labels kept in config vars.
pub(crate) fn labels_of(vars: &Vars) -> Labels {
    LABEL_KEYS
        .iter()
        .filter_map(|k| {
            vars.get(&var_for_label(k))
                .map(|v| ((*k).to_owned(), v.clone()))
        })
        .collect()
}

/// Whether config vars mark an app as bluegreen's and `app`'s.
pub(crate) fn owned_by(vars: &Vars, app: &App) -> bool {
    labels::is_owned_by(&labels_of(vars), app)
}

/// Everything a group's app carries: its environment, the marks and the record.
pub(crate) fn group_vars(group: &Group) -> Vars {
    let mut vars: Vars = group.release.env.clone();
    vars.extend(vars_of(&group.labels()));
    vars.insert(RECORD_VAR.into(), group.to_record());
    vars
}

/// The group that config vars describe, when they carry `app`'s marks and a record;
/// a record that disagrees with the marks is an error.
pub(crate) fn group_of(vars: &Vars, app: &App) -> Option<Result<Group>> {
    if !owned_by(vars, app) {
        return None;
    }
    let record = vars.get(RECORD_VAR)?;
    vars.get(&var_for_label(labels::GROUP))?;
    Some(Group::from_record(record, &labels_of(vars)))
}

/// A config var name from any text: `A-Z`, `0-9` and `_`.
pub(crate) fn var_key(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// How app names are made: Heroku app names are 3 to 30 lowercase letters, digits and
/// `-`, unique across the platform, so a prefix (a team's name) can be set.
///
/// Every name of an app starts with its [base](Naming::base): the release-mode app
/// is the base itself (`web-production`), a group app adds `-v` and the generation
/// (`web-production-v007`), the control app adds `--slugs`
/// (`web-production--slugs`). With one prefix, no two apps share a name: a whole
/// base ends with the environment (no `-`, starts with a letter, never `v` and
/// digits), a cut base with a hash that starts with a digit, and after the prefix
/// only a control app's name has `--`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Naming {
    prefix: String,
}

/// The longest base of a name; `-v007` or `--slugs` follow it.
const BASE_MAX: usize = 23;
/// The hash part of a cut base: a digit, then letters and digits.
const HASH_LEN: usize = 6;
/// What follows the base in the control app's name.
const CONTROL_SUFFIX: &str = "--slugs";

impl Naming {
    /// Names without a prefix: `web-production-v007`.
    pub fn new() -> Self {
        Naming::default()
    }

    /// Names that start with `prefix` (`acme-` gives `acme-web-production-v007`):
    /// lowercase letters, digits and `-`, starting with a letter, at most 12.
    pub fn with_prefix(prefix: impl Into<String>) -> Result<Self> {
        let prefix = prefix.into();
        let ok = prefix.len() <= 12
            && prefix.starts_with(|c: char| c.is_ascii_lowercase())
            && prefix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !ok && !prefix.is_empty() {
            return Err(Error::invalid(
                "naming.prefix",
                format!("`{prefix}` must be at most 12 lowercase letters, digits and `-`, starting with a letter"),
            ));
        }
        Ok(Naming { prefix })
    }

    /// The base of every name of `app`: `prefix` + `name-environment`, or when that
    /// is longer than 23 characters, its first 16, `-`, and 6 characters of its
    /// SHA-256: a digit, then letters and digits. Names stay the same from run to
    /// run, and a cut base is never a whole one, whose last part, the environment,
    /// starts with a letter.
    ///
    /// ```
    /// use bluegreen_core::App;
    /// use bluegreen_paas::Naming;
    /// let n = Naming::new();
    /// assert_eq!(n.base(&App::new("web", "production").unwrap()), "web-production");
    /// let long = App::new("inventory-service", "stagingeurope").unwrap();
    /// let base = n.base(&long);
    /// assert!(base.len() <= 23 && base.starts_with("inventory-servic-"), "{base}");
    /// assert!(base.rsplit('-').next().unwrap().starts_with(|c: char| c.is_ascii_digit()));
    /// assert_eq!(base, n.base(&long));
    /// ```
    pub fn base(&self, app: &App) -> String {
        let full = format!("{}{}", self.prefix, app.slug());
        if full.len() <= BASE_MAX {
            return full;
        }
        let digest = Sha256::digest(full.as_bytes());
        let mut n = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
        let mut hash = String::with_capacity(HASH_LEN);
        hash.push(char::from(b'0' + (n % 10) as u8));
        n /= 10;
        for _ in 1..HASH_LEN {
            hash.push(char::from_digit((n % 36) as u32, 36).expect("a base-36 digit"));
            n /= 36;
        }
        let head = full[..BASE_MAX - 1 - HASH_LEN].trim_end_matches('-');
        format!("{head}-{hash}")
    }

    /// The app of group `group` of `app` (`web-production-v007`), or `None` when the
    /// id is not one of `app`'s groups.
    pub fn group_app(&self, app: &App, group: &GroupId) -> Option<String> {
        let suffix = group.as_str().strip_prefix(&format!("{}-", app.slug()))?;
        let digits = suffix.strip_prefix('v')?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let name = format!("{}-{suffix}", self.base(app));
        (name.len() <= 30).then_some(name)
    }

    /// The prefix of every group app of `app`.
    pub(crate) fn group_prefix(&self, app: &App) -> String {
        format!("{}-v", self.base(app))
    }

    /// The control app of `app` (`web-production--slugs`): it holds the slugs and
    /// the list of images, and in release mode the attachments. The `--` keeps it
    /// apart from the release-mode app of an app whose environment is `slugs`
    /// (`web-production`.`slugs` is `web-production-slugs`).
    pub fn control_app(&self, app: &App) -> String {
        format!("{}{CONTROL_SUFFIX}", self.base(app))
    }
}

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

/// Changes that turn `current` config vars into `wanted`, deleting `stale` keys
/// that `wanted` lacks; empty when nothing changes.
pub(crate) fn config_changes(
    current: &Vars,
    wanted: &Vars,
    stale: impl IntoIterator<Item = String>,
) -> BTreeMap<String, Option<String>> {
    let mut changes: BTreeMap<String, Option<String>> = wanted
        .iter()
        .filter(|(k, v)| current.get(*k) != Some(v))
        .map(|(k, v)| (k.clone(), Some(v.clone())))
        .collect();
    for key in stale {
        if !wanted.contains_key(&key) && current.contains_key(&key) {
            changes.insert(key, None);
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use bluegreen_core::{DeploymentId, Generation};

    #[test]
    fn marks_round_trip() {
        let app = App::new("web", "production").unwrap();
        let g = Group::new(
            app.clone(),
            Generation(7),
            Release::new("slug-1".into(), 2).with_env("A", "1"),
            DeploymentId::new("d-1"),
            None,
        );
        let vars = group_vars(&g);
        assert_eq!(vars["BLUEGREEN_OWNER"], "bluegreen");
        assert_eq!(vars["BLUEGREEN_GROUP"], "web-production-v007");
        assert_eq!(vars["A"], "1");
        assert_eq!(group_of(&vars, &app).unwrap().unwrap(), g);
        let other = App::new("api", "production").unwrap();
        assert!(group_of(&vars, &other).is_none());
        let mut edited = vars.clone();
        edited.insert("BLUEGREEN_GENERATION".into(), "8".into());
        assert!(group_of(&edited, &app).unwrap().is_err());
    }

    #[test]
    fn names_fit_heroku() {
        let n = Naming::new();
        let app = App::new("web", "production").unwrap();
        assert_eq!(
            n.group_app(&app, &GroupId::new("web-production-v007"))
                .as_deref(),
            Some("web-production-v007")
        );
        assert_eq!(
            n.group_app(&app, &GroupId::new("api-production-v007")),
            None
        );
        assert_eq!(n.group_app(&app, &GroupId::new("web-production-vx")), None);
        let long = App::new("a".repeat(30), "b".repeat(30)).unwrap();
        let name = n
            .group_app(&long, &Group::id_for(&long, Generation(12)))
            .unwrap();
        assert!(name.len() <= 30 && name.ends_with("-v012"), "{name}");
        let other = App::new("a".repeat(30), "c".repeat(30)).unwrap();
        assert_ne!(n.base(&long), n.base(&other));
        assert!(Naming::with_prefix("Acme").is_err());
        assert_eq!(
            Naming::with_prefix("acme-").unwrap().control_app(&app),
            "acme-web-production--slugs"
        );
    }

    /// Every name a naming gives: the release-mode app, the control app and group
    /// apps.
    fn all_names(n: &Naming, app: &App) -> Vec<String> {
        let mut names = vec![n.base(app), n.control_app(app)];
        for g in [1, 7, 10, 999, 1000, 9999, 99999] {
            names.extend(n.group_app(app, &Group::id_for(app, Generation(g))));
        }
        names
    }

    #[test]
    fn names_of_close_apps_never_meet() {
        let heroku = regex::Regex::new("^[a-z][a-z0-9-]{1,28}[a-z0-9]$").unwrap();
        let apps = bluegreen_testkit::names::near_collisions();
        for prefix in ["", "acme-", "a"] {
            let n = Naming::with_prefix(prefix).unwrap();
            let mut seen: BTreeMap<String, &App> = BTreeMap::new();
            for app in &apps {
                let names = all_names(&n, app);
                assert!(names.len() >= 6, "{app}: {names:?}");
                for name in names {
                    assert!(heroku.is_match(&name), "{name} is no Heroku app name");
                    if let Some(first) = seen.insert(name.clone(), app) {
                        panic!("prefix {prefix:?}: {first} and {app} both name {name}");
                    }
                }
                for other in &apps {
                    let id = Group::id_for(other, Generation(7));
                    assert_eq!(n.group_app(app, &id).is_some(), app == other, "{app} {id}");
                }
            }
        }
    }

    /// A base cut to 16 characters and a hash is never the whole base of another
    /// app: the hash starts with a digit, an environment with a letter. (Cut to hex
    /// digits, `inventory-servic-e1f2a3` could be `inventory-servic`.`e1f2a3`.)
    #[test]
    fn a_cut_base_is_never_a_whole_one() {
        let n = Naming::new();
        let mut bases: BTreeMap<String, App> = BTreeMap::new();
        for i in 0..3000 {
            let app = App::new("inventory-service", format!("stagingeurope{i}")).unwrap();
            let base = n.base(&app);
            assert_eq!(base.len(), BASE_MAX, "{base}");
            let (head, hash) = base.rsplit_once('-').unwrap();
            assert_eq!(head, "inventory-servic");
            assert!(hash.starts_with(|c: char| c.is_ascii_digit()), "{base}");
            assert!(
                App::new(head, hash).is_err(),
                "{base} is the base of {head}.{hash}"
            );
            if let Some(first) = bases.insert(base.clone(), app.clone()) {
                panic!("{first} and {app} are both {base}");
            }
        }
        // a cut just after a `-` drops it: no `--`
        let app = App::new("abcdefghijklmno-p", "staging").unwrap();
        let base = n.base(&app);
        let (head, hash) = base.rsplit_once('-').unwrap();
        assert_eq!((head, hash.len()), ("abcdefghijklmno", HASH_LEN), "{base}");
    }

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
}
