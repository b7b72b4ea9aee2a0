//! Steps 3 to 6: prepare the image, launch the group, wait for health, attach it
//! without traffic and verify it alone.

use std::sync::Arc;

use super::observe::Observed;
use super::report::Prepared;
use super::request::DeployRequest;
use super::revert::NewGroup;
use super::run::Run;
use crate::check::{Check, CheckTarget};
use crate::error::{Error, Result};
use crate::event::{Event, Step};
use crate::group::Group;
use crate::instance::Instance;
use crate::route::RouteTable;

/// Where a prepared deployment stands.
pub(crate) enum Plan {
    /// The release already serves all traffic.
    AlreadyLive(Box<Group>),
    /// A group ready for promotion; `baseline` is the table to return to.
    Promote {
        prepared: Box<Prepared>,
        baseline: RouteTable,
    },
}

impl Run<'_> {
    pub(crate) async fn prepare(
        &self,
        request: &DeployRequest,
        observed: &Observed,
    ) -> Result<Plan> {
        let engine = self.engine;
        let image = self
            .step(
                Step::PrepareImage,
                self.bounded(
                    "the image",
                    engine.options.prepare_timeout,
                    engine
                        .image
                        .prepare(self.app, &request.source, &engine.events),
                ),
            )
            .await
            .map_err(|e| e.at(Step::PrepareImage, true))?;
        self.emit(Event::ImageReady {
            image: image.clone(),
        });
        let release = request.release(image.id.clone());
        let release_id = release.id();

        let (group, adopted) = match observed.resumable(&release_id) {
            Some(g) => {
                if observed.routes == RouteTable::single(g.id.clone()) {
                    return Ok(Plan::AlreadyLive(Box::new(g.clone())));
                }
                self.emit(Event::GroupAdopted {
                    group: g.id.clone(),
                });
                (g.clone(), true)
            }
            None => {
                let previous = observed.live().map(|g| g.release.clone());
                let group = Group::new(
                    self.app.clone(),
                    observed.next_generation(),
                    release,
                    self.deployment.clone(),
                    previous,
                );
                (group, false)
            }
        };
        let baseline = observed.routes.without(&group.id);

        match self.bring_up(&group, &request.verify).await {
            Ok((instances, preview)) => Ok(Plan::Promote {
                prepared: Box::new(Prepared {
                    group,
                    image,
                    instances,
                    preview,
                    adopted,
                }),
                baseline,
            }),
            Err(e) => Err(self.revert(&group, &baseline, NewGroup::Destroy, e).await),
        }
    }

    /// Launches (idempotently), waits for health, attaches and verifies `group`.
    pub(crate) async fn bring_up(
        &self,
        group: &Group,
        verify: &[Arc<dyn Check>],
    ) -> Result<(Vec<Instance>, Option<String>)> {
        let engine = self.engine;
        self.step(Step::Launch, async {
            self.call("launch", engine.fleet.launch(group)).await?;
            self.emit(Event::GroupLaunched {
                group: group.id.clone(),
                size: group.release.size,
            });
            Ok(())
        })
        .await?;
        let instances = self
            .step(Step::WaitHealthy, self.wait_healthy(group))
            .await?;
        let attachment = self
            .step(
                Step::Attach,
                self.call(
                    "attach",
                    engine.router.attach(self.app, &group.id, &instances),
                ),
            )
            .await?;
        let target = CheckTarget {
            app: self.app.clone(),
            group: group.id.clone(),
            instances: instances.clone(),
            preview: attachment.preview.clone(),
            weight: 0,
            serving: None,
        };
        self.step(Step::Verify, self.run_checks(verify, &target))
            .await?;
        Ok((instances, attachment.preview))
    }

    pub(crate) async fn run_checks(
        &self,
        checks: &[Arc<dyn Check>],
        target: &CheckTarget,
    ) -> Result<()> {
        for check in checks {
            let outcome = self
                .call(&format!("check {}", check.name()), async {
                    Ok(check.run(target).await)
                })
                .await?;
            outcome.map_err(|reason| {
                Error::unhealthy(format!(
                    "check `{}` failed on {}: {reason}",
                    check.name(),
                    target.group
                ))
            })?;
            self.emit(Event::CheckPassed {
                check: check.name().to_owned(),
                group: target.group.clone(),
            });
        }
        Ok(())
    }
}
