//! Several apps deployed as one ([`Engine::deploy_all`]): each prepared and
//! verified alone, then all switched in one atomic change of the router, baked
//! together, and all reverted when any one fails.

use std::collections::BTreeSet;

use futures_util::future::join_all;
use tokio::time::Instant;

use super::execute::{mark, Lifecycle, Outcome};
use super::plan::{Intent, Observed};
use super::request::DeployRequest;
use super::run::Run;
use super::{report, DeployReport, Engine};
use crate::app::App;
use crate::error::{Error, ErrorKind, Result};
use crate::event::{Event, Operation, Step};
use crate::route::RouteTable;

/// The most apps one [`Engine::deploy_all`] takes.
pub const MAX_APPS_TOGETHER: usize = 16;

/// How [`Engine::deploy_all`] moves traffic.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SwitchAll {
    /// In one atomic change of the router
    /// ([`Router::set_routes_many`](crate::Router::set_routes_many)); a router that
    /// cannot ([`RouterCapabilities::multi_app_switch`](crate::RouterCapabilities::multi_app_switch))
    /// is refused before anything happens. The default.
    #[default]
    Atomic,
    /// Atomically where the router can, otherwise app by app in the order given:
    /// between two switches, one app runs its new release and another its old one.
    AtomicOrOneByOne,
}

/// One app of the set, once prepared.
struct Member<'a> {
    index: usize,
    run: Run<'a>,
    observed: Observed,
    outcome: Outcome,
    started: Instant,
}

impl Engine {
    /// Deploys several apps of one environment as one: prepares a new group for
    /// each (its own image, settings and release task; verified alone, as
    /// [`Engine::prepare`] does), waits until the router reports every new group
    /// healthy, then moves all their traffic **in one atomic change**
    /// ([`SwitchAll::Atomic`]: no request sees one app's new release beside
    /// another's old one at the router), bakes them together (each request's
    /// [`Strategy::bake_after`](crate::Strategy::bake_after)), and retires.
    ///
    /// When any app fails at any step before the end of the bakes, every app goes
    /// back: traffic returns to where it was in one atomic change and the new
    /// groups are removed. The apps' locks are taken in the order of their names,
    /// so two overlapping sets never wait for each other in a cycle.
    ///
    /// Refused before any change ([`Error::Invalid`] naming `requests[i]...`): an
    /// empty set or more than [`MAX_APPS_TOGETHER`] apps; an app named twice; apps of
    /// different environments; canary steps (one switch moves all apps); hooks. A
    /// router without [`multi_app_switch`](crate::RouterCapabilities::multi_app_switch)
    /// is [`Error::NotSupported`] with [`SwitchAll::Atomic`].
    ///
    /// Returns one report per request, in the order given. Run again after a
    /// crash, it finishes the same set (each app adopts its group).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), bluegreen_core::Error> {
    /// use bluegreen_core::{App, DeployRequest, Engine, ImageSource, SwitchAll};
    /// use bluegreen_testkit::MemoryPlatform;
    ///
    /// let platform = MemoryPlatform::new();
    /// let engine = Engine::new(platform.image(), platform.fleet(), platform.router());
    /// let web = App::new("web", "production")?;
    /// let api = App::new("api", "production")?;
    /// let reports = engine
    ///     .deploy_all(
    ///         &[
    ///             DeployRequest::new(web.clone(), ImageSource::Reference("web:2".into())),
    ///             DeployRequest::new(api.clone(), ImageSource::Reference("api:2".into())),
    ///         ],
    ///         SwitchAll::Atomic,
    ///     )
    ///     .await?;
    /// assert_eq!(reports.len(), 2);
    /// assert_eq!(reports[0].app, web);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn deploy_all(
        &self,
        requests: &[DeployRequest],
        switch: SwitchAll,
    ) -> Result<Vec<DeployReport>> {
        self.validate_all(requests, switch)?;
        let atomic = self.router.capabilities().multi_app_switch;
        if !atomic {
            self.events.emit(Event::StrategyAdapted {
                reason: "the router cannot switch several apps at once: switching app by app"
                    .into(),
            });
        }
        // locks in the order of the apps' names
        let mut order: Vec<usize> = (0..requests.len()).collect();
        order.sort_by(|a, b| requests[*a].app.cmp(&requests[*b].app));
        let mut runs: Vec<(usize, Run<'_>, Instant)> = Vec::with_capacity(requests.len());
        for &i in &order {
            let request = &requests[i];
            let started = Instant::now();
            match self
                .start(&request.app, Operation::DeployAll, || {
                    self.validate(request)
                })
                .await
            {
                Ok(run) => runs.push((i, run, started)),
                Err(e) => {
                    for (_, run, _) in runs {
                        run.lock.release().await;
                    }
                    return Err(e);
                }
            }
        }
        // prepare each alone, in lock order
        let mut members: Vec<Member<'_>> = Vec::with_capacity(runs.len());
        let mut failure: Option<Error> = None;
        let mut rest = runs.into_iter();
        for (index, run, started) in rest.by_ref() {
            match prepare_one(&run, &requests[index]).await {
                Ok((observed, outcome)) => members.push(Member {
                    index,
                    run,
                    observed,
                    outcome,
                    started,
                }),
                Err(e) => {
                    run.events.emit(Event::failed(&e));
                    run.lock.release().await;
                    failure = Some(e);
                    break;
                }
            }
        }
        for (_, run, _) in rest {
            run.lock.release().await;
        }
        let out = match failure {
            Some(e) => Err(self.revert_all(&members, e, false).await),
            None => self.switch_all(requests, &mut members, atomic).await,
        };
        let mut reports = Vec::with_capacity(members.len());
        for m in members {
            let events = m.run.events.clone();
            m.run.lock.release().await;
            match &out {
                Ok(()) => {
                    let r = report(&requests[m.index].app, m.outcome, m.started);
                    events.emit(Event::Finished {
                        group: r.live.clone(),
                        elapsed: r.elapsed,
                    });
                    reports.push((m.index, r));
                }
                Err(e) => events.emit(Event::failed(e)),
            }
        }
        out?;
        reports.sort_by_key(|(i, _)| *i);
        Ok(reports.into_iter().map(|(_, r)| r).collect())
    }

    fn validate_all(&self, requests: &[DeployRequest], switch: SwitchAll) -> Result<()> {
        if requests.is_empty() {
            return Err(Error::invalid(
                "requests",
                "is empty: name at least one app",
            ));
        }
        if requests.len() > MAX_APPS_TOGETHER {
            return Err(Error::invalid(
                "requests",
                format!(
                    "{} apps is more than the most, {MAX_APPS_TOGETHER}",
                    requests.len()
                ),
            ));
        }
        let mut seen = BTreeSet::new();
        let environment = requests[0].app.environment();
        for (i, r) in requests.iter().enumerate() {
            if !seen.insert(r.app.clone()) {
                return Err(Error::invalid(
                    format!("requests[{i}].app"),
                    format!("{} is named twice", r.app),
                ));
            }
            if r.app.environment() != environment {
                return Err(Error::invalid(
                    format!("requests[{i}].app"),
                    format!(
                        "{} is not of the environment {environment} of requests[0]",
                        r.app
                    ),
                ));
            }
            if r.strategy.is_canary() {
                return Err(Error::invalid(
                    format!("requests[{i}].strategy.steps"),
                    "deploy_all moves every app in one switch: canary steps are not supported",
                ));
            }
            self.validate(r).map_err(|e| match e {
                Error::Invalid { field, reason } => Error::Invalid {
                    field: format!("requests[{i}].{field}"),
                    reason,
                },
                other => other,
            })?;
            if !r.hooks.is_empty() {
                return Err(Error::invalid(
                    format!("requests[{i}].hooks"),
                    "deploy_all does not call hooks; deploy the apps one by one to use them",
                ));
            }
        }
        if switch == SwitchAll::Atomic && !self.router.capabilities().multi_app_switch {
            return Err(Error::not_supported(
                "switching several apps at once on this router (RouterCapabilities::multi_app_switch); \
                 SwitchAll::AtomicOrOneByOne switches app by app",
            ));
        }
        Ok(())
    }

    /// Every prepared app ready, one switch, confirmations, bakes, retirement.
    async fn switch_all(
        &self,
        requests: &[DeployRequest],
        members: &mut [Member<'_>],
        atomic: bool,
    ) -> Result<()> {
        let pending: Vec<usize> = (0..members.len())
            .filter(|&i| !members[i].outcome.target.already_live)
            .collect();
        for &i in &pending {
            let m = &members[i];
            let group = &m.outcome.target.group;
            if let Err(e) = m.run.step(Step::Verify, m.run.ready(group, 100)).await {
                return Err(self.revert_all(members, e, false).await);
            }
        }
        // the switch
        let tables: Vec<(App, RouteTable)> = pending
            .iter()
            .map(|&i| {
                let m = &members[i];
                (
                    m.run.app.clone(),
                    RouteTable::single(m.outcome.target.group.id.clone()),
                )
            })
            .collect();
        let started = Instant::now();
        if !tables.is_empty() {
            if let Err(e) = self.set_all(members, &tables, atomic).await {
                return Err(self.revert_all(members, e, true).await);
            }
        }
        for &i in &pending {
            let m = &members[i];
            let table = RouteTable::single(m.outcome.target.group.id.clone());
            if let Err(e) = m
                .run
                .step(
                    Step::Confirm,
                    m.run.confirm(&m.outcome.target.group, &table),
                )
                .await
            {
                return Err(self.revert_all(members, e, true).await);
            }
        }
        let switch_time = started.elapsed();
        for &i in &pending {
            members[i].outcome.progress.switched = true;
            members[i].outcome.switch_time = switch_time;
        }
        // the bakes, together
        let watches = pending.iter().map(|&i| {
            let m = &members[i];
            let request = &requests[m.index];
            async move {
                let policy = m.run.policy(&request.strategy, &m.outcome.target.baseline);
                let fallback = &m.outcome.target.baseline;
                if policy.bake_after.is_zero() || fallback.is_empty() {
                    return Ok(());
                }
                m.run
                    .step(
                        Step::Bake,
                        m.run.watch(
                            &m.outcome.target.group,
                            fallback,
                            policy.bake_after,
                            &request.strategy,
                            &m.outcome.progress,
                        ),
                    )
                    .await
            }
        });
        let watched = join_all(watches).await;
        if let Some(e) = watched.into_iter().find_map(|r| r.err()) {
            return Err(self.revert_all(members, e, true).await);
        }
        // retirement: every app serves its new group; a failure here is left for a
        // rerun to finish, as for one deployment
        for m in members.iter_mut() {
            let group = m.outcome.target.group.clone();
            m.outcome.retired = Some(m.run.retire(&group, &m.observed.routes).await?);
            m.outcome.progress.retired = true;
        }
        Ok(())
    }

    /// Sets every table: in one call where the router can, else app by app.
    async fn set_all(
        &self,
        members: &[Member<'_>],
        tables: &[(App, RouteTable)],
        atomic: bool,
    ) -> Result<()> {
        // every lease checked before the one change
        for m in members {
            m.run
                .lock
                .ensure()
                .map_err(|e| e.at(Step::Promote, false))?;
        }
        if atomic {
            let first = &members[0].run;
            first
                .step(
                    Step::Promote,
                    first.change("set routes", self.router.set_routes_many(tables)),
                )
                .await?;
        } else {
            for (app, table) in tables {
                let m = members
                    .iter()
                    .find(|m| m.run.app == app)
                    .expect("a table of each member");
                m.run
                    .step(
                        Step::Promote,
                        m.run
                            .change("set routes", self.router.set_routes(app, table)),
                    )
                    .await?;
            }
        }
        for (app, table) in tables {
            if let Some(m) = members.iter().find(|m| m.run.app == app) {
                m.run.emit(Event::TrafficShifted {
                    routes: table.clone(),
                });
            }
        }
        Ok(())
    }

    /// Puts every member back: (after a switch) all baselines in one change where
    /// the router can, then each member's own undo (its new group removed).
    async fn revert_all(&self, members: &[Member<'_>], error: Error, switched: bool) -> Error {
        if error.kind() == ErrorKind::Locked {
            return mark(error, false);
        }
        let mut undone = true;
        if switched && self.router.capabilities().multi_app_switch {
            let baselines: Vec<(App, RouteTable)> = members
                .iter()
                .filter(|m| !m.outcome.target.already_live)
                .map(|m| (m.run.app.clone(), m.outcome.target.baseline.clone()))
                .collect();
            if let Some(m) = members.first() {
                let back = async {
                    for m in members {
                        m.run.lock.ensure()?;
                    }
                    m.run
                        .call("set routes", self.router.set_routes_many(&baselines))
                        .await
                };
                match back.await {
                    Ok(()) => {
                        for (app, table) in &baselines {
                            if let Some(m) = members.iter().find(|m| m.run.app == app) {
                                m.run.emit(Event::TrafficShifted {
                                    routes: table.clone(),
                                });
                            }
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "switching every app back at once failed; each app reverts alone");
                    }
                }
            }
        }
        for m in members.iter().filter(|m| !m.outcome.target.already_live) {
            let cause = Error::unhealthy(format!("deployed together with a failure: {error}"));
            let reverted = m.run.revert(&m.observed, &m.outcome.target, cause).await;
            undone &= reverted.rolled_back();
        }
        mark(error, undone)
    }
}

/// Observes, prepares the image and brings the new group up verified without
/// traffic (with its release task), as [`Engine::prepare`] does.
async fn prepare_one(run: &Run<'_>, request: &DeployRequest) -> Result<(Observed, Outcome)> {
    let observed = run.observe().await?;
    let image = run.prepare_image(request).await?;
    let intent = Intent::Deploy {
        release: request.release(image.id.clone()),
        stop_before_traffic: true,
    };
    let outcome = run
        .drive_with(
            &intent,
            &request.strategy,
            &request.verify,
            Lifecycle::default(),
            observed.clone(),
        )
        .await?;
    Ok((observed, outcome))
}
