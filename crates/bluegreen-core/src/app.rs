//! Apps and environments, with names validated up front.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The longest app or environment name. Names end up in resource names on every
/// platform (`web-production-v007`), so they are kept short and plain.
pub const MAX_NAME_LEN: usize = 30;

/// Checks what app names and environments share: 1 to [`MAX_NAME_LEN`] characters,
/// starting with a lowercase letter, of lowercase letters, digits and `-`. An
/// `environment` has no `-` and is not `v` followed by digits only.
fn validate_name(field: &str, name: &str, environment: bool) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(Error::invalid(
            field,
            format!(
                "`{name}` is {} characters long, the most is {MAX_NAME_LEN}",
                name.len()
            ),
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(Error::invalid(
            field,
            format!("`{name}` must start with a lowercase letter"),
        ));
    }
    if environment && name.contains('-') {
        return Err(Error::invalid(
            field,
            format!(
                "`{name}` contains `-`: an environment is lowercase letters and digits, \
                 so that `name-environment` names one app"
            ),
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        let allowed = if environment {
            "use lowercase letters and digits"
        } else {
            "use lowercase letters, digits and `-`"
        };
        return Err(Error::invalid(
            field,
            format!("`{name}` contains {c:?}; {allowed}"),
        ));
    }
    if name.ends_with('-') || name.contains("--") {
        return Err(Error::invalid(
            field,
            format!("`{name}` must not end with `-` or contain `--`"),
        ));
    }
    let generation_like = name
        .strip_prefix('v')
        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()));
    if environment && generation_like {
        return Err(Error::invalid(
            field,
            format!(
                "`{name}` is `v` and digits, the shape of a generation: an environment is not, \
                 so that a group id (`name-environment-v007`) is never another app's \
                 `name-environment`"
            ),
        ));
    }
    Ok(())
}

/// What is deployed: a name in an environment (`web` in `production`).
///
/// ```
/// use bluegreen_core::App;
/// let app = App::new("web", "production").unwrap();
/// assert_eq!(app.to_string(), "web.production");
/// assert_eq!(app.slug(), "web-production");
/// assert!(App::new("Web", "production").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "AppParts", into = "AppParts")]
pub struct App {
    name: String,
    environment: String,
}

#[derive(Serialize, Deserialize)]
struct AppParts {
    name: String,
    environment: String,
}

impl TryFrom<AppParts> for App {
    type Error = Error;
    fn try_from(p: AppParts) -> Result<Self> {
        App::new(p.name, p.environment)
    }
}

impl From<App> for AppParts {
    fn from(a: App) -> Self {
        AppParts {
            name: a.name,
            environment: a.environment,
        }
    }
}

impl App {
    /// An app, or [`Error::Invalid`] naming `app.name` or `app.environment`.
    ///
    /// - `name`: 1 to 30 lowercase letters, digits and single `-`, starting with a
    ///   letter and not ending with `-` (`web`, `billing-api`).
    /// - `environment`: 1 to 30 lowercase letters and digits, starting with a letter
    ///   (`production`, `staging2`). No `-`, and not `v` followed by digits only
    ///   (`v2`), the shape of a generation.
    ///
    /// The environment has no `-` so that every name derived from an app names that
    /// app alone: the [slug](App::slug) `name-environment` splits at its last `-`,
    /// and a group id `name-environment-v007` at its last `-v`. Otherwise
    /// `a-b`.`c` and `a`.`b-c` would share the slug `a-b-c`, and with it their
    /// state, locks and resource names. It is not `v007` so that a group id
    /// (`web-prod-v007`, group 7 of `web`.`prod`) is never the slug of another app
    /// (`web-prod`.`v007`), for platforms that keep both in one namespace.
    ///
    /// ```
    /// use bluegreen_core::{App, Error};
    /// assert_eq!(App::new("a-b", "c").unwrap().slug(), "a-b-c");
    /// match App::new("a", "b-c") {
    ///     Err(Error::Invalid { field, .. }) => assert_eq!(field, "app.environment"),
    ///     other => panic!("{other:?}"),
    /// }
    /// ```
    pub fn new(name: impl Into<String>, environment: impl Into<String>) -> Result<Self> {
        let name = name.into();
        let environment = environment.into();
        validate_name("app.name", &name, false)?;
        validate_name("app.environment", &environment, true)?;
        Ok(App { name, environment })
    }

    /// The app's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The environment's name.
    pub fn environment(&self) -> &str {
        &self.environment
    }

    /// `name-environment`: the prefix of every resource name of this app. It names
    /// this app alone: the environment is what follows the last `-`.
    pub fn slug(&self) -> String {
        format!("{}-{}", self.name, self.environment)
    }
}

impl fmt::Display for App {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.name, self.environment)
    }
}

impl fmt::Debug for App {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "App({self})")
    }
}

impl FromStr for App {
    type Err = Error;
    /// Parses `name.environment`.
    fn from_str(s: &str) -> Result<Self> {
        let (name, env) = s
            .split_once('.')
            .ok_or_else(|| Error::invalid("app", format!("`{s}` is not `name.environment`")))?;
        App::new(name, env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_names_name_the_field() {
        let cases = [
            ("", "prod", "app.name", "must not be empty"),
            ("web", "", "app.environment", "must not be empty"),
            ("Web", "prod", "app.name", "lowercase letter"),
            ("web_1", "prod", "app.name", "contains '_'"),
            ("web-", "prod", "app.name", "must not end"),
            ("1web", "prod", "app.name", "start with"),
            ("web", &"p".repeat(31), "app.environment", "31 characters"),
            ("web", "eu-west", "app.environment", "contains `-`"),
            ("web", "prod-", "app.environment", "contains `-`"),
            (
                "web",
                "prod_1",
                "app.environment",
                "use lowercase letters and digits",
            ),
            ("web", "2prod", "app.environment", "start with"),
            ("web--api", "prod", "app.name", "contain `--`"),
            (
                "web-prod",
                "v007",
                "app.environment",
                "the shape of a generation",
            ),
            (
                "web-prod",
                "v1",
                "app.environment",
                "the shape of a generation",
            ),
        ];
        for (name, env, field, reason) in cases {
            match App::new(name, env) {
                Err(Error::Invalid {
                    field: f,
                    reason: r,
                }) => {
                    assert_eq!(f, field, "{name}.{env}");
                    assert!(r.contains(reason), "{r} lacks {reason}");
                }
                other => panic!("{name}.{env}: {other:?}"),
            }
        }
    }

    /// The reported collision: `a-b`.`c` and `a`.`b-c` had the same slug `a-b-c`.
    #[test]
    fn an_environment_with_a_hyphen_is_refused_before_anything_else() {
        let kept = App::new("a-b", "c").unwrap();
        assert_eq!(kept.slug(), "a-b-c");
        assert_eq!(kept.to_string(), "a-b.c");
        let refused = [
            App::new("a", "b-c").map(|_| ()),
            "a.b-c".parse::<App>().map(|_| ()),
        ];
        for result in refused {
            match result {
                Err(Error::Invalid { field, reason }) => {
                    assert_eq!(field, "app.environment");
                    assert!(reason.contains("`b-c` contains `-`"), "{reason}");
                    assert!(
                        reason.contains("`name-environment` names one app"),
                        "{reason}"
                    );
                }
                other => panic!("a.b-c must be invalid: {other:?}"),
            }
        }
        let e = serde_json::from_str::<App>(r#"{"name":"a","environment":"b-c"}"#).unwrap_err();
        assert!(e.to_string().contains("invalid app.environment"), "{e}");
    }

    #[test]
    fn group_ids_are_never_the_slug_of_another_app() {
        let web = App::new("web", "prod").unwrap();
        let id = crate::Group::id_for(&web, crate::Generation(7));
        assert_eq!(id.as_str(), "web-prod-v007");
        assert!(App::new("web-prod", "v007").is_err());
        // `v` and letters, or a `v` inside, is an environment like any other
        for env in ["v", "vx", "v1a", "dev", "v2v"] {
            assert!(App::new("web-prod", env).is_ok(), "{env}");
        }
        assert!(
            App::new("v007", "prod").is_ok(),
            "an app name may look like anything"
        );
    }

    #[test]
    fn parses_and_round_trips() {
        let app: App = "api.staging".parse().unwrap();
        assert_eq!(app.name(), "api");
        let json = serde_json::to_string(&app).unwrap();
        assert_eq!(serde_json::from_str::<App>(&json).unwrap(), app);
        assert!(serde_json::from_str::<App>(r#"{"name":"A","environment":"x"}"#).is_err());
    }
}
