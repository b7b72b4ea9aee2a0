//! Groups: a set of identical instances of one release of one app, generation `vN`.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::app::App;
use crate::error::{Error, Result};
use crate::id::string_id;
use crate::labels::{self, Labels};
use crate::release::Release;

string_id!(
    /// A group's id: `app-environment-vNNN` (`web-production-v007`).
    GroupId
);

string_id!(
    /// A deployment's id, carried by what it creates.
    DeploymentId
);

impl DeploymentId {
    /// A fresh random id (`d-` and 12 hex digits).
    pub fn random() -> Self {
        DeploymentId::new(format!("d-{:012x}", fastrand::u64(..) >> 16))
    }
}

/// A group's generation: `v1`, `v2`, ... growing by one per deployment.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Generation(pub u32);

impl Generation {
    /// The next generation.
    pub fn next(self) -> Generation {
        Generation(self.0 + 1)
    }
}

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{:03}", self.0)
    }
}

impl fmt::Debug for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A group as the engine asks a fleet to launch it, and as the fleet reports it back.
///
/// A fleet stores all of it with the group (labels, plus [`Group::to_record`] where
/// the labels cannot hold the release) and gives it back unchanged from
/// [`Fleet::groups`](crate::Fleet::groups).
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// `app-environment-vNNN`.
    pub id: GroupId,
    /// The app.
    pub app: App,
    /// The generation.
    pub generation: Generation,
    /// What the group runs.
    pub release: Release,
    /// The deployment that launched it.
    pub deployment: DeploymentId,
    /// The release before this one in the app's history: what [`Engine::rollback`]
    /// restores from this group, relaunching it when no group of it is left.
    ///
    /// [`Engine::rollback`]: crate::Engine::rollback
    pub previous: Option<Release>,
    /// The releases before `previous`, newest first, at most [`HISTORY_LEN`] - 1:
    /// how far repeated rollbacks can walk back. Records written before this field
    /// existed read it as empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub older: Vec<Release>,
}

/// How many earlier releases a group remembers ([`Group::previous`] and
/// [`Group::older`]): repeated [`Engine::rollback`](crate::Engine::rollback)s go at
/// most this far back.
pub const HISTORY_LEN: usize = 10;

impl Group {
    /// A group of `app` at `generation`.
    pub fn new(
        app: App,
        generation: Generation,
        release: Release,
        deployment: DeploymentId,
        previous: Option<Release>,
    ) -> Self {
        Group {
            id: Group::id_for(&app, generation),
            app,
            generation,
            release,
            deployment,
            previous,
            older: Vec::new(),
        }
    }

    /// A group of `app` at `generation` whose history is `history`, newest first
    /// (the first is [`Group::previous`]); kept to [`HISTORY_LEN`] releases.
    pub fn with_history(
        app: App,
        generation: Generation,
        release: Release,
        deployment: DeploymentId,
        history: impl IntoIterator<Item = Release>,
    ) -> Self {
        let mut history = history.into_iter().take(HISTORY_LEN);
        let previous = history.next();
        let mut group = Group::new(app, generation, release, deployment, previous);
        group.older = history.collect();
        group
    }

    /// The releases before this one, newest first: [`Group::previous`], then
    /// [`Group::older`].
    pub fn history(&self) -> impl Iterator<Item = &Release> {
        self.previous.iter().chain(&self.older)
    }

    /// The id of `app`'s group at `generation`.
    pub fn id_for(app: &App, generation: Generation) -> GroupId {
        GroupId::new(format!("{}-{generation}", app.slug()))
    }

    /// The labels every resource of this group carries.
    pub fn labels(&self) -> Labels {
        let mut l = labels::app_labels(&self.app);
        l.insert(labels::GROUP.into(), self.id.to_string());
        l.insert(labels::GENERATION.into(), self.generation.0.to_string());
        l.insert(labels::RELEASE.into(), self.release.id().to_string());
        l.insert(labels::IMAGE.into(), self.release.image.to_string());
        l.insert(labels::DEPLOYMENT.into(), self.deployment.to_string());
        l
    }

    /// The whole group as one JSON string, for a fleet to store beside its labels.
    pub fn to_record(&self) -> String {
        serde_json::to_string(self).expect("a group always serializes")
    }

    /// A group back from [`Group::to_record`], checked against the labels it was
    /// found with: a record that does not match them is
    /// [`Error::Conflict`](crate::Error::Conflict), so that a copied or edited
    /// record is never trusted.
    pub fn from_record(record: &str, found_with: &Labels) -> Result<Group> {
        let group: Group = serde_json::from_str(record)
            .map_err(|e| Error::conflict(format!("unreadable group record: {e}")))?;
        let expected = group.labels();
        let mismatch = expected
            .iter()
            .find(|(k, v)| found_with.get(k.as_str()) != Some(v));
        if let Some((key, value)) = mismatch {
            return Err(Error::conflict(format!(
                "group record {} says {key}={value}, its labels disagree",
                group.id
            )));
        }
        Ok(group)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_labels_and_records() {
        let app = App::new("web", "production").unwrap();
        let g = Group::new(
            app.clone(),
            Generation(7),
            Release::new("img".into(), 2),
            DeploymentId::new("d-1"),
            None,
        );
        assert_eq!(g.id.as_str(), "web-production-v007");
        let l = g.labels();
        assert!(labels::is_owned_by(&l, &app));
        assert_eq!(l[labels::GENERATION], "7");
        let back = Group::from_record(&g.to_record(), &l).unwrap();
        assert_eq!(back, g);
        let mut other = l.clone();
        other.insert(labels::GENERATION.into(), "8".into());
        assert!(Group::from_record(&g.to_record(), &other).is_err());
    }
}
