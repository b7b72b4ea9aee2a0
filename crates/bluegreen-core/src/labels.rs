//! The labels (tags) that every resource bluegreen creates carries.
//!
//! They are the only state bluegreen keeps: no database, no state file. A resource
//! without [`OWNER`] set to [`OWNER_VALUE`] and the app's labels is never changed or
//! destroyed, even when its name looks like ours.

use std::collections::BTreeMap;

use crate::app::App;

/// Labels: keys and values as the platform stores them.
pub type Labels = BTreeMap<String, String>;

/// The owner marker's key.
pub const OWNER: &str = "bluegreen.owner";
/// The owner marker's value.
pub const OWNER_VALUE: &str = "bluegreen";
/// The app's name.
pub const APP: &str = "bluegreen.app";
/// The app's environment.
pub const ENVIRONMENT: &str = "bluegreen.environment";
/// The group's generation (`7`).
pub const GENERATION: &str = "bluegreen.generation";
/// The group's id (`web-production-v007`).
pub const GROUP: &str = "bluegreen.group";
/// The release's content hash.
pub const RELEASE: &str = "bluegreen.release";
/// The image id.
pub const IMAGE: &str = "bluegreen.image";
/// The deployment that created the resource.
pub const DEPLOYMENT: &str = "bluegreen.deployment";

/// The labels that mark a resource as bluegreen's and as `app`'s.
pub fn app_labels(app: &App) -> Labels {
    Labels::from([
        (OWNER.to_owned(), OWNER_VALUE.to_owned()),
        (APP.to_owned(), app.name().to_owned()),
        (ENVIRONMENT.to_owned(), app.environment().to_owned()),
    ])
}

/// Whether `labels` mark a resource as bluegreen's and as `app`'s.
///
/// ```
/// use bluegreen_core::{labels, App};
/// let app = App::new("web", "production").unwrap();
/// let mut l = labels::app_labels(&app);
/// assert!(labels::is_owned_by(&l, &app));
/// l.remove(labels::OWNER);
/// assert!(!labels::is_owned_by(&l, &app));
/// ```
pub fn is_owned_by(labels: &Labels, app: &App) -> bool {
    labels.get(OWNER).map(String::as_str) == Some(OWNER_VALUE)
        && labels.get(APP).map(String::as_str) == Some(app.name())
        && labels.get(ENVIRONMENT).map(String::as_str) == Some(app.environment())
}
