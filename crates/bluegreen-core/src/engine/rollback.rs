//! Rollbacks: one release back ([`Engine::rollback`]), or to a chosen image
//! ([`Engine::rollback_to`]). Both are intents to the planner, like a deployment.

use tokio::time::Instant;

use std::sync::Arc;

use super::plan::Intent;
use super::report::RollbackReport;
use super::request::Strategy;
use super::Engine;
use crate::app::App;
use crate::check::Check;
use crate::error::{Error, Result};
use crate::event::Operation;
use crate::image::ImageId;

/// A rollback with checks: where to go, what to verify before the group gets
/// traffic, and how traffic moves (with its analysis and bake after the switch).
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), bluegreen_core::Error> {
/// use bluegreen_core::{check_fn, App, DeployRequest, Engine, ImageSource, RollbackRequest};
/// use bluegreen_testkit::MemoryPlatform;
///
/// let platform = MemoryPlatform::new();
/// let engine = Engine::new(platform.image(), platform.fleet(), platform.router());
/// let app = App::new("web", "production")?;
/// for tag in ["web:1", "web:2"] {
///     engine.deploy(&DeployRequest::new(app.clone(), ImageSource::Reference(tag.into()))).await?;
/// }
/// let back = engine
///     .rollback_with(&RollbackRequest::new(app).verify(check_fn("smoke", |_| async { Ok(()) })))
///     .await?;
/// assert!(!back.relaunched, "the warm group of web:1 took the traffic");
/// # Ok(())
/// # }
/// ```
#[non_exhaustive]
#[derive(Clone)]
pub struct RollbackRequest {
    /// The app.
    pub app: App,
    /// The image to go to; `None` goes one release back.
    pub to: Option<ImageId>,
    /// Checks run against the group alone, before it gets traffic.
    pub verify: Vec<Arc<dyn Check>>,
    /// How traffic moves (blue/green by default).
    pub strategy: Strategy,
    /// Go behind a release whose task is marked
    /// [`irreversible`](crate::ReleaseTask::irreversible) (refused by default).
    pub force: bool,
}

impl RollbackRequest {
    /// One release back, blue/green, no checks.
    pub fn new(app: App) -> Self {
        RollbackRequest {
            app,
            to: None,
            verify: Vec::new(),
            strategy: Strategy::blue_green(),
            force: false,
        }
    }

    /// Goes behind a release whose task is irreversible
    /// ([`RollbackRequest::force`]).
    pub fn force(mut self) -> Self {
        self.force = true;
        self
    }

    /// Goes to the release of `image` instead ([`Engine::rollback_to`]).
    pub fn to_image(mut self, image: ImageId) -> Self {
        self.to = Some(image);
        self
    }

    /// Adds a verify check.
    pub fn verify(mut self, check: Arc<dyn Check>) -> Self {
        self.verify.push(check);
        self
    }

    /// Sets the strategy.
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    fn validate(&self) -> Result<()> {
        self.strategy.validate()?;
        let mut names = std::collections::BTreeSet::new();
        for check in &self.verify {
            if check.name().trim().is_empty() {
                return Err(Error::invalid("verify", "a check has an empty name"));
            }
            if !names.insert(check.name()) {
                return Err(Error::invalid(
                    format!("verify.{}", check.name()),
                    "two checks have this name",
                ));
            }
        }
        if self
            .to
            .as_ref()
            .is_some_and(|i| i.as_str().trim().is_empty())
        {
            return Err(Error::invalid("to", "must not be empty"));
        }
        Ok(())
    }
}

impl std::fmt::Debug for RollbackRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RollbackRequest")
            .field("app", &self.app)
            .field("to", &self.to)
            .field(
                "verify",
                &self.verify.iter().map(|c| c.name()).collect::<Vec<_>>(),
            )
            .field("strategy", &self.strategy)
            .field("force", &self.force)
            .finish()
    }
}

impl Engine {
    /// Goes back one release through the live group's history: routes to a warm
    /// group of the previous release when it is healthy (and remembers the same
    /// history), or launches a new group from that release when none is left. The
    /// group rolled back from stays warm (within `keep`).
    ///
    /// Each call goes one release further back, whatever `keep` is, up to
    /// [`HISTORY_LEN`](crate::HISTORY_LEN) releases; with nothing older it is
    /// [`Error::Conflict`](crate::Error::Conflict) saying so, before any change.
    /// The router must report every member of the group healthy before it gets
    /// traffic. A rollback interrupted before its switch and run again finishes the
    /// group it launched; run again after its switch, it goes one more release
    /// back: to make a rerun safe, use [`Engine::rollback_to`].
    ///
    /// Going behind a release whose task is marked
    /// [`irreversible`](crate::ReleaseTask::irreversible) is
    /// [`Error::Conflict`](crate::Error::Conflict) before any change, unless the
    /// request is forced ([`RollbackRequest::force`]). A rollback never runs a
    /// release task.
    pub async fn rollback(&self, app: &App) -> Result<RollbackReport> {
        self.rollback_with(&RollbackRequest::new(app.clone())).await
    }

    /// Goes back to the release of `image`: the newest group running it when it is
    /// healthy (warm, or live with part of the traffic), or a new group from the
    /// newest earlier release of that image when no group runs it any more.
    ///
    /// Absolute, so running it again is safe: when a group of that image already
    /// has all the traffic, it changes no route and only finishes the retirement
    /// (the report's `from` and `to` are then the same group). An image that no
    /// group and no earlier release of the app knows is
    /// [`Error::NotFound`](crate::Error::NotFound), before anything changes.
    pub async fn rollback_to(&self, app: &App, image: &ImageId) -> Result<RollbackReport> {
        self.rollback_with(&RollbackRequest::new(app.clone()).to_image(image.clone()))
            .await
    }

    /// [`Engine::rollback`] or [`Engine::rollback_to`] with verify checks run
    /// against the group alone before it gets traffic, and a strategy (a canary, a
    /// bake after the switch, analysis) for moving the traffic. A failed check
    /// reverts as a deployment does.
    pub async fn rollback_with(&self, request: &RollbackRequest) -> Result<RollbackReport> {
        let (operation, intent) = match &request.to {
            None => (
                Operation::Rollback,
                Intent::Rollback {
                    force: request.force,
                },
            ),
            Some(image) => (
                Operation::RollbackTo,
                Intent::RollbackTo {
                    image: image.clone(),
                    force: request.force,
                },
            ),
        };
        let app = &request.app;
        let started = Instant::now();
        let run = self
            .start(app, operation, || {
                self.validate_options()?;
                request.validate()
            })
            .await?;
        let out = async {
            let mut observed = run.observe().await?;
            run.observe_candidates(&mut observed).await?;
            let from = observed.live().map(|g| g.id.clone());
            let outcome = run
                .drive(&intent, &request.strategy, &request.verify, observed)
                .await?;
            let target = outcome.target;
            Ok(RollbackReport {
                app: app.clone(),
                from: from.unwrap_or_else(|| target.group.id.clone()),
                to: target.group.id,
                relaunched: target.disposable && !target.already_live,
                elapsed: started.elapsed(),
            })
        }
        .await;
        self.finish(run, out).await
    }
}
