//! Labels as config vars: how a group's labels live on the platform.
//!
//! Heroku apps have no labels, so every label of [`Group::labels`] is kept as a config
//! var (`bluegreen.owner` is `BLUEGREEN_OWNER`, `bluegreen.group` is
//! `BLUEGREEN_GROUP`, ...), with the whole record in `BLUEGREEN_RECORD`. An app is
//! bluegreen's only when its config vars carry these marks.

use std::collections::BTreeMap;

use bluegreen_core::labels::{self as core_labels, Labels};
use bluegreen_core::{App, Group, Result};

use crate::api::Vars;

/// The config var that holds [`Group::to_record`].
pub const RECORD_VAR: &str = "BLUEGREEN_RECORD";

/// The label keys kept as config vars.
const LABEL_KEYS: [&str; 8] = [
    core_labels::OWNER,
    core_labels::APP,
    core_labels::ENVIRONMENT,
    core_labels::GROUP,
    core_labels::GENERATION,
    core_labels::RELEASE,
    core_labels::IMAGE,
    core_labels::DEPLOYMENT,
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
    core_labels::is_owned_by(&labels_of(vars), app)
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
    vars.get(&var_for_label(core_labels::GROUP))?;
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
    use bluegreen_core::{DeploymentId, Generation, Release};

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
}
