//! User checks: run against a new group alone before it gets traffic (verify), and
//! after each canary step (analysis).

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;

use crate::app::App;
use crate::group::GroupId;
use crate::instance::Instance;
use crate::router::Serving;

/// What a check looks at.
#[non_exhaustive]
#[derive(Clone, Debug)]
pub struct CheckTarget {
    /// The app.
    pub app: App,
    /// The group under check.
    pub group: GroupId,
    /// Its instances, each with its address.
    pub instances: Vec<Instance>,
    /// The router's preview address of the group, where it has one.
    pub preview: Option<String>,
    /// The group's share of traffic now (0 during verify).
    pub weight: u8,
    /// The router's view of the group over the step's window (counters are
    /// those of the window), after a canary step or during the bake after the
    /// switch.
    pub serving: Option<Serving>,
    /// The router's view of the group that had the traffic before (the baseline)
    /// over the same window, where there is one.
    pub baseline: Option<Serving>,
}

/// A user check. Returning `Err(reason)` fails the deployment, which rolls back.
#[async_trait]
pub trait Check: Send + Sync {
    /// A short name for events and errors.
    fn name(&self) -> &str;

    /// Runs the check. A check that panics counts as failed (`Err`), with the
    /// panic's message.
    async fn run(&self, target: &CheckTarget) -> Result<(), String>;
}

struct FnCheck<F> {
    name: String,
    f: F,
}

#[async_trait]
impl<F, Fut> Check for FnCheck<F>
where
    F: Fn(CheckTarget) -> Fut + Send + Sync,
    Fut: Future<Output = Result<(), String>> + Send,
{
    fn name(&self) -> &str {
        &self.name
    }

    async fn run(&self, target: &CheckTarget) -> Result<(), String> {
        (self.f)(target.clone()).await
    }
}

/// A check from an async closure.
///
/// ```
/// use bluegreen_core::check_fn;
/// let check = check_fn("has instances", |t| async move {
///     if t.instances.is_empty() { Err("no instance".to_string()) } else { Ok(()) }
/// });
/// assert_eq!(check.name(), "has instances");
/// ```
pub fn check_fn<F, Fut>(name: impl Into<String>, f: F) -> Arc<dyn Check>
where
    F: Fn(CheckTarget) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    Arc::new(FnCheck {
        name: name.into(),
        f,
    })
}
