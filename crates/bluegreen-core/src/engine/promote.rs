//! Step 7: move traffic to the new group, watch it, and confirm at the router.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::request::Strategy;
use super::run::Run;
use crate::check::{Check, CheckTarget};
use crate::error::{Error, Result};
use crate::event::{Event, Step};
use crate::group::Group;
use crate::instance::Instance;
use crate::route::RouteTable;

impl Run<'_> {
    /// Shifts traffic from `baseline` to `group` by `strategy`, then confirms.
    /// Returns the time from the first route change to the confirmed switch. On error
    /// the caller reverts.
    pub(crate) async fn promote(
        &self,
        group: &Group,
        instances: &[Instance],
        strategy: &Strategy,
        analysis: &[Arc<dyn Check>],
        baseline: &RouteTable,
    ) -> Result<Duration> {
        let steps = self.canary_steps(strategy, baseline);
        let started = Instant::now();
        self.step(Step::Promote, async {
            for (weight, bake) in steps {
                let table = baseline.blend(&group.id, weight);
                self.set_routes(&table).await?;
                let serving = self.confirm_serving(group, &table).await?;
                self.emit(Event::Baking {
                    weight,
                    duration: bake,
                });
                tokio::time::sleep(bake).await;
                let serving = self
                    .call("read serving", self.engine.router.serving(self.app, &group.id))
                    .await
                    .unwrap_or(serving);
                if let (Some(limit), Some(requests), Some(errors)) =
                    (max_error_rate(strategy), serving.requests, serving.errors)
                {
                    let rate = if requests == 0 { 0.0 } else { errors as f64 / requests as f64 };
                    if rate > limit {
                        return Err(Error::unhealthy(format!(
                            "{} answered {errors} of {requests} requests with 5xx at {weight}% ({:.1}% > {:.1}%)",
                            group.id,
                            rate * 100.0,
                            limit * 100.0
                        )));
                    }
                }
                let target = CheckTarget {
                    app: self.app.clone(),
                    group: group.id.clone(),
                    instances: instances.to_vec(),
                    preview: None,
                    weight,
                    serving: Some(serving),
                };
                self.run_checks(analysis, &target).await?;
            }
            self.set_routes(&RouteTable::single(group.id.clone())).await
        })
        .await?;
        let all = RouteTable::single(group.id.clone());
        self.step(Step::Confirm, self.confirm_serving(group, &all))
            .await?;
        Ok(started.elapsed())
    }

    fn canary_steps(&self, strategy: &Strategy, baseline: &RouteTable) -> Vec<(u8, Duration)> {
        let Strategy::Canary { steps, .. } = strategy else {
            return Vec::new();
        };
        if baseline.is_empty() {
            self.emit(Event::StrategyAdapted {
                reason: "no group serves yet: switching in one step".into(),
            });
            return Vec::new();
        }
        if !self.engine.router.capabilities().weighted_routing {
            self.emit(Event::StrategyAdapted {
                reason: "the router cannot weigh traffic: switching in one step".into(),
            });
            return Vec::new();
        }
        steps.iter().map(|s| (s.weight, s.bake)).collect()
    }

    async fn set_routes(&self, table: &RouteTable) -> Result<()> {
        self.call("set routes", self.engine.router.set_routes(self.app, table))
            .await?;
        self.emit(Event::TrafficShifted {
            routes: table.clone(),
        });
        Ok(())
    }

    /// Polls the router until it reports `table` and every member of `group`
    /// healthy, within the confirm timeout.
    async fn confirm_serving(&self, group: &Group, table: &RouteTable) -> Result<crate::Serving> {
        let options = &self.engine.options;
        let deadline = Instant::now() + options.confirm_timeout;
        loop {
            let routes = self
                .call("read routes", self.engine.router.routes(self.app))
                .await?;
            let serving = self
                .call(
                    "read serving",
                    self.engine.router.serving(self.app, &group.id),
                )
                .await?;
            if &routes == table && serving.total > 0 && serving.healthy == serving.total {
                return Ok(serving);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Timeout {
                    what: format!(
                        "the router to serve {} (routes {routes}, {} of {} members healthy)",
                        group.id, serving.healthy, serving.total
                    ),
                    after: options.confirm_timeout,
                });
            }
            tokio::time::sleep(options.poll_interval.min(deadline - now)).await;
        }
    }
}

fn max_error_rate(strategy: &Strategy) -> Option<f64> {
    match strategy {
        Strategy::Canary { max_error_rate, .. } => *max_error_rate,
        Strategy::BlueGreen => None,
    }
}
