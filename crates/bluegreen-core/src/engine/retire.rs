//! Step 8: drain and retire: keep the last `keep` groups warm (scaled in to
//! `warm_size` when set), destroy older ones, remove images beyond retention.

use std::collections::BTreeSet;

use super::run::Run;
use crate::error::Result;
use crate::event::{Event, Step};
use crate::group::{Group, GroupId};
use crate::image::ImageId;
use crate::route::RouteTable;

#[derive(Default)]
pub(crate) struct Retired {
    pub(crate) kept_warm: Vec<GroupId>,
    pub(crate) destroyed: Vec<GroupId>,
    pub(crate) images_removed: Vec<ImageId>,
}

impl Run<'_> {
    /// `live` now has all traffic; `before` is the table before this operation.
    pub(crate) async fn retire(&self, live: &Group, before: &RouteTable) -> Result<Retired> {
        let options = &self.engine.options;
        let (keep, destroy) = self
            .step(Step::Drain, async {
                let groups = self
                    .call("list groups", self.engine.fleet.groups(self.app))
                    .await?;
                let mut others: Vec<Group> =
                    groups.into_iter().filter(|g| g.id != live.id).collect();
                // the groups that served last come first, then the newest
                others.sort_by_key(|g| {
                    (
                        std::cmp::Reverse(before.weight(&g.id)),
                        std::cmp::Reverse(g.generation),
                    )
                });
                let destroy = others.split_off(options.keep.min(others.len()));
                // groups that lose instances: those destroyed, and those kept warm
                // scaled in
                let scaled = others.iter().filter(|g| scales_in(g, options.warm_size));
                let shrinking = destroy.iter().chain(scaled);
                if shrinking.into_iter().any(|g| before.weight(&g.id) > 0)
                    && !options.drain.is_zero()
                {
                    self.emit(Event::Draining {
                        duration: options.drain,
                    });
                    tokio::time::sleep(options.drain).await;
                }
                Ok((others, destroy))
            })
            .await?;
        for g in &keep {
            self.emit(Event::GroupKeptWarm {
                group: g.id.clone(),
            });
        }
        let mut in_use: BTreeSet<ImageId> = std::iter::once(live)
            .chain(&keep)
            .map(|g| g.release.image.clone())
            .collect();
        // every release a rollback can relaunch keeps its image
        in_use.extend(live.history().map(|r| r.image.clone()));
        self.step(Step::Retire, async {
            let mut destroyed = Vec::new();
            for g in &destroy {
                self.destroy_group(&g.id).await?;
                destroyed.push(g.id.clone());
            }
            if let Some(size) = options.warm_size {
                for g in keep.iter().filter(|g| scales_in(g, Some(size))) {
                    self.change("scale in", self.engine.fleet.scale(self.app, &g.id, size))
                        .await?;
                    self.emit(Event::GroupScaledIn {
                        group: g.id.clone(),
                        size,
                    });
                }
            }
            let mut images = self
                .call("list images", self.engine.image.images(self.app))
                .await?;
            images.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
            let mut images_removed = Vec::new();
            for image in images.iter().skip(options.retain_images) {
                if in_use.contains(&image.id) {
                    continue;
                }
                self.change(
                    "remove image",
                    self.engine.image.remove(self.app, &image.id),
                )
                .await?;
                self.emit(Event::ImageRemoved {
                    image: image.id.clone(),
                });
                images_removed.push(image.id.clone());
            }
            Ok(Retired {
                kept_warm: keep.iter().map(|g| g.id.clone()).collect(),
                destroyed,
                images_removed,
            })
        })
        .await
    }
}

/// Whether a group kept warm is scaled in to `warm_size`: only below its size.
fn scales_in(group: &Group, warm_size: Option<u32>) -> bool {
    warm_size.is_some_and(|size| size < group.release.size)
}
