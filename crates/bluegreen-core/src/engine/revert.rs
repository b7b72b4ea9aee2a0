//! Undoing a deployment that failed before its promotion completed.

use super::run::Run;
use crate::error::{Error, Result};
use crate::event::{Event, Step};
use crate::group::Group;
use crate::route::RouteTable;

/// What to do with the new group when traffic goes back.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum NewGroup {
    /// It was launched by this operation: destroy it (unless `keep_failed`).
    Destroy,
    /// It existed before (a warm group brought back): leave it.
    Leave,
}

impl Run<'_> {
    /// Puts traffic back on `baseline`, removes `group` as asked, and returns `error`
    /// marked with whether the platform is as it was.
    pub(crate) async fn revert(
        &self,
        group: &Group,
        baseline: &RouteTable,
        new_group: NewGroup,
        error: Error,
    ) -> Error {
        let step = error.step().unwrap_or(Step::Rollback);
        let reason = match &error {
            Error::Step { source, .. } => source.to_string(),
            other => other.to_string(),
        };
        self.emit(Event::RollingBack { step, reason });
        let undone: Result<()> = async {
            let now = self
                .call("read routes", self.engine.router.routes(self.app))
                .await?;
            if now.weight(&group.id) > 0 || &now != baseline {
                self.call(
                    "restore routes",
                    self.engine.router.set_routes(self.app, baseline),
                )
                .await?;
                self.emit(Event::TrafficShifted {
                    routes: baseline.clone(),
                });
            }
            if new_group == NewGroup::Destroy && !self.engine.options.keep_failed {
                self.destroy_group(&group.id).await?;
            }
            Ok(())
        }
        .await;
        match undone {
            Ok(()) => {
                self.emit(Event::RolledBack {
                    routes: baseline.clone(),
                });
                mark_rolled_back(error, true)
            }
            Err(e) => {
                tracing::error!(app = %self.app, error = %e, "rollback failed; run the deployment again to converge");
                mark_rolled_back(error, false)
            }
        }
    }
}

fn mark_rolled_back(error: Error, rolled_back: bool) -> Error {
    match error {
        Error::Step { step, source, .. } => Error::Step {
            step,
            rolled_back,
            source,
        },
        other => other.at(Step::Rollback, rolled_back),
    }
}
