//! Rollbacks: one release back ([`Engine::rollback`]), or to a chosen image
//! ([`Engine::rollback_to`]).

use tokio::time::Instant;

use super::observe::Observed;
use super::report::RollbackReport;
use super::request::Strategy;
use super::revert::NewGroup;
use super::run::Run;
use super::Engine;
use crate::app::App;
use crate::error::{Error, Result};
use crate::event::{Event, Step};
use crate::group::Group;
use crate::image::ImageId;
use crate::release::Release;
use crate::route::RouteTable;

impl Engine {
    /// Goes back one release: routes to the warm group of the live group's previous
    /// release when it is healthy, or launches a new group from that release when it
    /// is gone. The group rolled back from stays warm (within `keep`).
    ///
    /// Each call goes one release further back from what is live; to make a rerun
    /// of an interrupted rollback safe, use [`Engine::rollback_to`].
    pub async fn rollback(&self, app: &App) -> Result<RollbackReport> {
        let started = Instant::now();
        let run = self.start(app, || self.validate_options()).await?;
        let out = async {
            let observed = run.observe().await?;
            let live = live_group(app, &observed)?;
            let previous = live.previous.clone().ok_or_else(|| {
                Error::conflict(format!(
                    "{} has no previous release to roll back to",
                    live.id
                ))
                .at(Step::Observe, true)
            })?;
            self.roll_back(&run, &observed, live, previous, started)
                .await
        }
        .await;
        self.finish(run, out).await
    }

    /// Goes back to the release of `image`: the newest group running it when it is
    /// healthy (warm, or live with part of the traffic), or a new group from the
    /// newest previous release of that image when no group runs it any more.
    ///
    /// Absolute, so running it again is safe: when a group of that image already
    /// has all the traffic, it changes no route and only finishes the retirement
    /// (the report's `from` and `to` are then the same group). An image that no
    /// group and no previous release of the app knows is [`Error::NotFound`],
    /// before anything changes.
    pub async fn rollback_to(&self, app: &App, image: &ImageId) -> Result<RollbackReport> {
        let started = Instant::now();
        let run = self.start(app, || self.validate_options()).await?;
        let out = async {
            let observed = run.observe().await?;
            let live = live_group(app, &observed)?;
            let release = release_of(&observed, image)
                .ok_or_else(|| {
                    Error::not_found(format!(
                        "image {image}: no group of {app} runs it and no previous release uses it"
                    ))
                    .at(Step::Observe, true)
                })?
                .clone();
            self.roll_back(&run, &observed, live, release, started)
                .await
        }
        .await;
        self.finish(run, out).await
    }

    /// Moves all traffic from `live` to a group of `release`: a healthy existing
    /// one, or one launched anew.
    async fn roll_back(
        &self,
        run: &Run<'_>,
        observed: &Observed,
        live: Group,
        release: Release,
        started: Instant,
    ) -> Result<RollbackReport> {
        let app = run.app;
        let baseline = observed.routes.clone();
        // already done (a rerun after the switch): only the retirement is left
        if live.release == release && baseline == RouteTable::single(live.id.clone()) {
            run.retire(&live, &observed.routes).await?;
            return Ok(RollbackReport {
                app: app.clone(),
                from: live.id.clone(),
                to: live.id,
                relaunched: false,
                elapsed: started.elapsed(),
            });
        }
        let existing = observed
            .groups
            .iter()
            .filter(|g| g.release == release)
            .max_by_key(|g| g.generation)
            .cloned();
        let existing = match existing {
            Some(g) => {
                let instances = run
                    .call("list instances", self.fleet.instances(app, &g.id))
                    .await
                    .map_err(|e| e.at(Step::Observe, true))?;
                let ready = instances.iter().filter(|i| i.health.is_healthy()).count();
                Some((g, instances, ready))
            }
            None => None,
        };
        let (target, instances, relaunched) = match existing {
            Some((g, instances, ready)) if ready >= g.release.size as usize => {
                run.step(
                    Step::Attach,
                    run.call("attach", self.router.attach(app, &g.id, &instances)),
                )
                .await
                .map_err(|e| e.at(Step::Attach, true))?;
                (g, instances, false)
            }
            // the newest group, not live and not ready: what an interrupted
            // rollback launched; it is finished rather than launched again
            Some((g, _, _))
                if g.id != live.id
                    && observed
                        .resumable(&release.id())
                        .is_some_and(|newest| newest.id == g.id) =>
            {
                run.emit(Event::GroupAdopted {
                    group: g.id.clone(),
                });
                match run.bring_up(&g, &[]).await {
                    Ok((instances, _)) => (g, instances, true),
                    Err(e) => return Err(run.revert(&g, &baseline, NewGroup::Destroy, e).await),
                }
            }
            _ => {
                let group = Group::new(
                    app.clone(),
                    observed.next_generation(),
                    release,
                    run.deployment.clone(),
                    Some(live.release.clone()),
                );
                match run.bring_up(&group, &[]).await {
                    Ok((instances, _)) => (group, instances, true),
                    Err(e) => {
                        return Err(run.revert(&group, &baseline, NewGroup::Destroy, e).await)
                    }
                }
            }
        };
        let new_group = if relaunched {
            NewGroup::Destroy
        } else {
            NewGroup::Leave
        };
        if let Err(e) = run
            .promote(&target, &instances, &Strategy::BlueGreen, &[], &baseline)
            .await
        {
            return Err(run.revert(&target, &baseline, new_group, e).await);
        }
        run.retire(&target, &observed.routes).await?;
        Ok(RollbackReport {
            app: app.clone(),
            from: live.id,
            to: target.id,
            relaunched,
            elapsed: started.elapsed(),
        })
    }
}

/// The group with the most traffic, or a conflict when none has any.
fn live_group(app: &App, observed: &Observed) -> Result<Group> {
    observed.live().cloned().ok_or_else(|| {
        Error::conflict(format!(
            "no group of {app} has traffic: nothing to roll back"
        ))
        .at(Step::Observe, true)
    })
}

/// The release of `image`: the newest group's that runs it, or the newest
/// previous release that used it.
fn release_of<'a>(observed: &'a Observed, image: &ImageId) -> Option<&'a Release> {
    let mut groups: Vec<&Group> = observed.groups.iter().collect();
    groups.sort_by_key(|g| std::cmp::Reverse(g.generation));
    groups
        .iter()
        .map(|g| &g.release)
        .find(|r| &r.image == image)
        .or_else(|| {
            groups
                .iter()
                .filter_map(|g| g.previous.as_ref())
                .find(|r| &r.image == image)
        })
}
