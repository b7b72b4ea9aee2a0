//! App names: how the apps of an app's groups, its release-mode app and its control
//! app are named on a platform where app names are global.

use bluegreen_core::{App, Error, GroupId, Result};
use sha2::{Digest, Sha256};

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
/// The longest base of a lock version's name; `--l` and the version follow it.
const LOCK_BASE_MAX: usize = 16;
/// What follows the lock base in a lock version's name, before the version.
const LOCK_INFIX: &str = "--l";
/// The longest app name.
const NAME_MAX: usize = 30;

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
        cut(format!("{}{}", self.prefix, app.slug()), BASE_MAX)
    }

    /// The app that holds version `version` of the deployment lock of `app`
    /// (`web-production--l2s`): the prefix and slug cut to 16 characters as
    /// [`Naming::base`] cuts them to 23, `--l`, and the version in base 36 (digits,
    /// then lowercase letters), up to 11 of them. `None` past that (36^11 - 1
    /// versions). No group app, control app or release-mode app has such a name:
    /// after the prefix only these and control apps have `--`, and a control app's
    /// name goes on with `s`.
    ///
    /// ```
    /// use bluegreen_core::App;
    /// use bluegreen_paas::Naming;
    /// let web = App::new("web", "production").unwrap();
    /// assert_eq!(Naming::new().lock_app(&web, 100).as_deref(), Some("web-production--l2s"));
    /// ```
    pub fn lock_app(&self, app: &App, version: u64) -> Option<String> {
        let name = format!("{}{}", self.lock_prefix(app), base36(version));
        (version > 0 && name.len() <= NAME_MAX).then_some(name)
    }

    /// What every lock app of `app` starts with.
    pub(crate) fn lock_prefix(&self, app: &App) -> String {
        let base = cut(format!("{}{}", self.prefix, app.slug()), LOCK_BASE_MAX);
        format!("{base}{LOCK_INFIX}")
    }

    /// The lock version an app name stands for, when it is one of `app`'s lock apps.
    pub(crate) fn lock_version(&self, app: &App, name: &str) -> Option<u64> {
        let digits = name.strip_prefix(&self.lock_prefix(app))?;
        let version = u64::from_str_radix(digits, 36).ok()?;
        (self.lock_app(app, version).as_deref() == Some(name)).then_some(version)
    }
}

/// `full` when it has at most `max` characters; otherwise its start, `-`, and 6
/// characters of its SHA-256: a digit, then letters and digits.
fn cut(full: String, max: usize) -> String {
    if full.len() <= max {
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
    let head = full[..max - 1 - HASH_LEN].trim_end_matches('-');
    format!("{head}-{hash}")
}

/// `n` in base 36, lowercase.
fn base36(mut n: u64) -> String {
    let mut out = Vec::new();
    loop {
        out.push(char::from_digit((n % 36) as u32, 36).expect("a base-36 digit"));
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.iter().rev().collect()
}

impl Naming {
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

#[cfg(test)]
mod tests {
    use super::*;
    use bluegreen_core::{Generation, Group};
    use std::collections::BTreeMap;

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
}
