//! Rollbacks: one release back ([`Engine::rollback`]), or to a chosen image
//! ([`Engine::rollback_to`]). Both are intents to the planner, like a deployment.

use tokio::time::Instant;

use super::plan::Intent;
use super::report::RollbackReport;
use super::request::Strategy;
use super::Engine;
use crate::app::App;
use crate::error::Result;
use crate::event::Operation;
use crate::image::ImageId;

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
    pub async fn rollback(&self, app: &App) -> Result<RollbackReport> {
        self.roll_back(app, Operation::Rollback, Intent::Rollback)
            .await
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
        let intent = Intent::RollbackTo {
            image: image.clone(),
        };
        self.roll_back(app, Operation::RollbackTo, intent).await
    }

    async fn roll_back(
        &self,
        app: &App,
        operation: Operation,
        intent: Intent,
    ) -> Result<RollbackReport> {
        let started = Instant::now();
        let run = self
            .start(app, operation, || self.validate_options())
            .await?;
        let out = async {
            let mut observed = run.observe().await?;
            run.observe_candidates(&mut observed).await?;
            let from = observed.live().map(|g| g.id.clone());
            let outcome = run
                .drive(&intent, &Strategy::blue_green(), &[], observed)
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
