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
