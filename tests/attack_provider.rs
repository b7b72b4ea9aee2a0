//! A provider written from the documentation alone (`docs/providers.md`, the
//! testkit's README, the core's rustdoc), checked with the conformance suite, and
//! then broken on purpose in the ways a provider's author plausibly gets wrong, to
//! see whether the suite notices.
//!
//! The platform is in memory: images, groups and instances in one shared state; an
//! instance is `Starting` at its first health poll and `Healthy` after it (or
//! `Unhealthy` for ever when its image is `toy:broken`). The router keeps its route
//! tables and attachments in memory and reads its members' health from the same
//! state.
//!
//! Each `caught_*` test gives the suite one mistake and checks that it fails, with
//! words that point at the mistake. Three of them were found accepted (a router
//! whose `serving` counts every member healthy; a provider call that never returns,
//! which hung the suite; two suites with one app in one test program, which met in
//! the process's lock) and are fixed in the suite.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bluegreen::labels::{self, Labels};
use bluegreen::{
    async_trait, App, Attachment, Engine, EngineOptions, Error, ErrorKind, EventSink, FencingToken,
    Fleet, FleetCapabilities, Group, GroupId, Health, Image, ImageId, ImageRef, ImageSource,
    Instance, Lock, LockHolder, Result, RouteTable, Router, RouterCapabilities, Serving,
};
use bluegreen_testkit::conformance::{self, Settings, Sources};
use futures_like::catch;

/// The mistakes the provider can be told to make.
#[derive(Clone, Copy, Debug, Default)]
struct Bugs {
    /// `instances` reports every instance `Healthy`, whatever its image does (a health
    /// cached at launch, or a probe of the wrong port).
    always_healthy: bool,
    /// `destroy` of a missing group is `NotFound` instead of success.
    destroy_not_idempotent: bool,
    /// `groups` lists every group whose labels carry the owner mark, of any app.
    groups_of_every_app: bool,
    /// `scale` says yes and changes nothing.
    scale_lies: bool,
    /// `scale` stops instances but starts none back.
    scale_never_grows: bool,
    /// `attach` keeps only the first instance.
    attach_drops_members: bool,
    /// `serving` says every member healthy, whatever their health.
    serving_always_healthy: bool,
    /// `instances` of a missing group is an empty list instead of `NotFound`.
    instances_of_missing_is_empty: bool,
    /// `launch` of an existing id with another record succeeds and keeps the old one.
    launch_ignores_conflict: bool,
    /// `remove` deletes an image a group still runs.
    remove_in_use: bool,
    /// `images` lists images of every app.
    images_of_every_app: bool,
    /// `set_routes` accepts a group that is not attached.
    set_routes_unattached: bool,
    /// `detach` of a group with traffic succeeds (and leaves the route table as is).
    detach_with_traffic: bool,
    /// `launch` starts one instance fewer than the release's size.
    launch_one_short: bool,
    /// `destroy` removes the group by id whatever app it belongs to.
    destroy_any_app: bool,
    /// `attach` adds `instances` to the group's members instead of replacing them.
    attach_appends: bool,
    /// `scale` starts one instance more than asked.
    scale_overshoots: bool,
    /// `instances` reports no address.
    no_address: bool,
    /// `routes` returns the first table ever set for the app.
    routes_stale: bool,
    /// No `Image::check_source`: a wrong source is refused by `prepare` only.
    no_check_source: bool,
    /// `instances` of an existing group never returns (a client without a timeout
    /// on a dead connection).
    instances_hangs: bool,
    /// `serving` counts one member more as healthy than it sees (capped at all).
    serving_one_too_many: bool,
    /// `routes` never returns.
    routes_hangs: bool,
}

#[derive(Debug)]
struct StoredImage {
    labels: Labels,
    app: App,
    origin: String,
    created_at: SystemTime,
    broken: bool,
}

#[derive(Debug)]
struct StoredInstance {
    id: String,
    polls: u32,
}

#[derive(Debug)]
struct StoredGroup {
    labels: Labels,
    record: String,
    image: ImageId,
    instances: Vec<StoredInstance>,
    next: u32,
}

#[derive(Debug, Default)]
struct State {
    images: BTreeMap<String, StoredImage>,
    groups: BTreeMap<String, StoredGroup>,
    /// app slug -> table
    tables: BTreeMap<String, RouteTable>,
    /// (app slug, group) -> instance ids
    attached: BTreeMap<(String, String), Vec<String>>,
}

/// The toy platform: one shared state behind the image, the fleet and the router.
#[derive(Clone, Debug, Default)]
struct Toy {
    state: Arc<Mutex<State>>,
    bugs: Bugs,
}

impl Toy {
    fn new(bugs: Bugs) -> Self {
        Toy {
            state: Arc::default(),
            bugs,
        }
    }

    fn health_of(&self, image_broken: bool, polls: u32) -> Health {
        if self.bugs.always_healthy {
            return Health::Healthy;
        }
        if image_broken {
            Health::Unhealthy {
                reason: "GET /health answered 500".into(),
            }
        } else if polls == 0 {
            Health::Starting
        } else {
            Health::Healthy
        }
    }

    fn start_instances(group: &mut StoredGroup, gid: &str, count: usize) {
        while group.instances.len() < count {
            group.next += 1;
            group.instances.push(StoredInstance {
                id: format!("{gid}-i{}", group.next),
                polls: 0,
            });
        }
    }
}

fn address(instance: &str) -> String {
    format!("toy://{instance}")
}

#[async_trait]
impl Image for Toy {
    fn check_source(&self, source: &ImageSource, _: &bluegreen::Release) -> Result<()> {
        if self.bugs.no_check_source {
            return Ok(());
        }
        match source {
            ImageSource::Reference(r) if r.starts_with("toy:") => Ok(()),
            ImageSource::Reference(r) => Err(Error::Invalid {
                field: "source".into(),
                reason: format!("{r} is not toy:<version>"),
            }),
            other => Err(Error::NotSupported {
                what: format!("{other} on the toy platform"),
            }),
        }
    }

    async fn prepare(&self, app: &App, source: &ImageSource, _: &EventSink) -> Result<ImageRef> {
        let ImageSource::Reference(r) = source else {
            return Err(Error::NotSupported {
                what: format!("{source} on the toy platform"),
            });
        };
        let Some(version) = r.strip_prefix("toy:") else {
            return Err(Error::Invalid {
                field: "source".into(),
                reason: format!("{r} is not toy:<version>"),
            });
        };
        let id = format!("img-{}-{version}", app.slug());
        let mut state = self.state.lock().unwrap();
        let image = state
            .images
            .entry(id.clone())
            .or_insert_with(|| StoredImage {
                labels: labels::app_labels(app),
                app: app.clone(),
                origin: format!("reference {r}"),
                created_at: SystemTime::now(),
                broken: version == "broken",
            });
        Ok(ImageRef::new(
            ImageId::new(id),
            app.clone(),
            image.created_at,
            image.origin.clone(),
        ))
    }

    async fn images(&self, app: &App) -> Result<Vec<ImageRef>> {
        let state = self.state.lock().unwrap();
        Ok(state
            .images
            .iter()
            .filter(|(_, i)| self.bugs.images_of_every_app || labels::is_owned_by(&i.labels, app))
            .map(|(id, i)| {
                ImageRef::new(
                    ImageId::new(id.clone()),
                    i.app.clone(),
                    i.created_at,
                    i.origin.clone(),
                )
            })
            .collect())
    }

    async fn remove(&self, app: &App, id: &ImageId) -> Result<()> {
        let mut state = self.state.lock().unwrap();
        let Some(image) = state.images.get(id.as_str()) else {
            return Ok(());
        };
        if !labels::is_owned_by(&image.labels, app) {
            return Ok(());
        }
        if !self.bugs.remove_in_use && state.groups.values().any(|g| &g.image == id) {
            return Err(Error::Conflict {
                message: format!("image {id} is used by a group"),
            });
        }
        state.images.remove(id.as_str());
        Ok(())
    }
}

#[async_trait]
impl Fleet for Toy {
    fn capabilities(&self) -> FleetCapabilities {
        FleetCapabilities::default()
            .with_warm_groups(true)
            .with_scaling(true)
    }

    async fn launch(&self, group: &Group) -> Result<()> {
        let mut state = self.state.lock().unwrap();
        if !state.images.contains_key(group.release.image.as_str()) {
            return Err(Error::NotFound {
                what: format!("image {}", group.release.image),
            });
        }
        let gid = group.id.to_string();
        let record = group.to_record();
        if let Some(existing) = state.groups.get(&gid) {
            if existing.record != record && !self.bugs.launch_ignores_conflict {
                return Err(Error::Conflict {
                    message: format!("group {gid} exists with another release"),
                });
            }
        }
        let stored = state
            .groups
            .entry(gid.clone())
            .or_insert_with(|| StoredGroup {
                labels: group.labels(),
                record,
                image: group.release.image.clone(),
                instances: Vec::new(),
                next: 0,
            });
        let mut size = group.release.size as usize;
        if self.bugs.launch_one_short {
            size = size.saturating_sub(1);
        }
        Toy::start_instances(stored, &gid, size);
        Ok(())
    }

    async fn groups(&self, app: &App) -> Result<Vec<Group>> {
        let state = self.state.lock().unwrap();
        let mut out = Vec::new();
        for g in state.groups.values() {
            let owned = if self.bugs.groups_of_every_app {
                g.labels.contains_key(labels::OWNER)
            } else {
                labels::is_owned_by(&g.labels, app)
            };
            if owned {
                out.push(Group::from_record(&g.record, &g.labels)?);
            }
        }
        Ok(out)
    }

    async fn instances(&self, app: &App, group: &GroupId) -> Result<Vec<Instance>> {
        if self.bugs.instances_hangs
            && self
                .state
                .lock()
                .unwrap()
                .groups
                .contains_key(group.as_str())
        {
            std::future::pending::<()>().await;
        }
        let mut state = self.state.lock().unwrap();
        let state = &mut *state;
        let Some(g) = state
            .groups
            .get_mut(group.as_str())
            .filter(|g| labels::is_owned_by(&g.labels, app))
        else {
            if self.bugs.instances_of_missing_is_empty {
                return Ok(Vec::new());
            }
            return Err(Error::NotFound {
                what: format!("group {group}"),
            });
        };
        let broken = state
            .images
            .get(g.image.as_str())
            .map(|i| i.broken)
            .unwrap_or(false);
        let mut out = Vec::new();
        for i in &mut g.instances {
            out.push(Instance::new(
                i.id.clone(),
                (!self.bugs.no_address).then(|| address(&i.id)),
                self.health_of(broken, i.polls),
            ));
            i.polls += 1;
        }
        Ok(out)
    }

    async fn destroy(&self, app: &App, group: &GroupId) -> Result<()> {
        let mut state = self.state.lock().unwrap();
        match state.groups.get(group.as_str()) {
            Some(g) if labels::is_owned_by(&g.labels, app) => {
                state.groups.remove(group.as_str());
                Ok(())
            }
            Some(_) if self.bugs.destroy_any_app => {
                state.groups.remove(group.as_str());
                Ok(())
            }
            Some(_) => Ok(()),
            None if self.bugs.destroy_not_idempotent => Err(Error::NotFound {
                what: format!("group {group}"),
            }),
            None => Ok(()),
        }
    }

    async fn scale(&self, app: &App, group: &GroupId, size: u32) -> Result<()> {
        let mut state = self.state.lock().unwrap();
        let Some(g) = state
            .groups
            .get_mut(group.as_str())
            .filter(|g| labels::is_owned_by(&g.labels, app))
        else {
            return Err(Error::NotFound {
                what: format!("group {group}"),
            });
        };
        if self.bugs.scale_lies {
            return Ok(());
        }
        g.instances.truncate(size as usize);
        if !self.bugs.scale_never_grows {
            let extra = usize::from(self.bugs.scale_overshoots);
            Toy::start_instances(g, group.as_str(), size as usize + extra);
        }
        Ok(())
    }
}

#[async_trait]
impl Router for Toy {
    fn capabilities(&self) -> RouterCapabilities {
        RouterCapabilities::default().with_weighted_routing(true)
    }

    async fn attach(
        &self,
        app: &App,
        group: &GroupId,
        instances: &[Instance],
    ) -> Result<Attachment> {
        let mut ids = Vec::new();
        for i in instances {
            if i.address.is_none() {
                return Err(Error::Invalid {
                    field: format!("instances.{}", i.id),
                    reason: "no address".into(),
                });
            }
            ids.push(i.id.to_string());
        }
        if self.bugs.attach_drops_members {
            ids.truncate(1);
        }
        let mut state = self.state.lock().unwrap();
        if self.bugs.attach_appends {
            if let Some(old) = state.attached.get(&(app.slug(), group.to_string())) {
                let mut all = old.clone();
                all.extend(ids);
                ids = all;
            }
        }
        state.attached.insert((app.slug(), group.to_string()), ids);
        Ok(Attachment::default())
    }

    async fn detach(&self, app: &App, group: &GroupId) -> Result<()> {
        let mut state = self.state.lock().unwrap();
        let weight = state
            .tables
            .get(&app.slug())
            .map(|t| t.weight(group))
            .unwrap_or(0);
        if weight > 0 && !self.bugs.detach_with_traffic {
            return Err(Error::Conflict {
                message: format!("{group} still has traffic"),
            });
        }
        state.attached.remove(&(app.slug(), group.to_string()));
        Ok(())
    }

    async fn routes(&self, app: &App) -> Result<RouteTable> {
        if self.bugs.routes_hangs {
            std::future::pending::<()>().await;
        }
        let state = self.state.lock().unwrap();
        Ok(state
            .tables
            .get(&app.slug())
            .cloned()
            .unwrap_or_else(RouteTable::empty))
    }

    async fn set_routes(&self, app: &App, table: &RouteTable) -> Result<()> {
        table.validate()?;
        let mut state = self.state.lock().unwrap();
        if !self.bugs.set_routes_unattached {
            for g in table.groups() {
                if !state.attached.contains_key(&(app.slug(), g.to_string())) {
                    return Err(Error::NotFound {
                        what: format!("attachment of {g}"),
                    });
                }
            }
        }
        if self.bugs.routes_stale && state.tables.contains_key(&app.slug()) {
            return Ok(());
        }
        state.tables.insert(app.slug(), table.clone());
        Ok(())
    }

    async fn serving(&self, app: &App, group: &GroupId) -> Result<Serving> {
        let state = self.state.lock().unwrap();
        let Some(members) = state.attached.get(&(app.slug(), group.to_string())) else {
            return Err(Error::NotFound {
                what: format!("attachment of {group}"),
            });
        };
        let total = members.len();
        if self.bugs.serving_always_healthy {
            return Ok(Serving::new(total, total));
        }
        let mut healthy = 0;
        for m in members {
            let found = state.groups.values().find_map(|g| {
                g.instances
                    .iter()
                    .find(|i| &i.id == m)
                    .map(|i| (g.image.clone(), i.polls))
            });
            if let Some((image, polls)) = found {
                let broken = state
                    .images
                    .get(image.as_str())
                    .map(|i| i.broken)
                    .unwrap_or(false);
                // the router has its own view: a member it can reach is healthy
                // unless its image is broken
                if self.health_of(broken, polls.max(1)).is_healthy() {
                    healthy += 1;
                }
            }
        }
        if self.bugs.serving_one_too_many {
            healthy = (healthy + 1).min(total);
        }
        Ok(Serving::new(healthy, total))
    }
}

fn sources() -> Sources {
    Sources {
        good: ImageSource::Reference("toy:1".into()),
        other: ImageSource::Reference("toy:2".into()),
        never_healthy: Some(ImageSource::Reference("toy:broken".into())),
    }
}

fn settings() -> Settings {
    Settings::default()
        .with_health_timeout(Duration::from_secs(20))
        .with_poll_interval(Duration::from_millis(50))
}

async fn suite(toy: Toy, env: &str) -> conformance::Report {
    // an app of its own per test: see `defect_two_suites_in_one_binary_collide`
    let app = App::new("conformance", env).unwrap();
    let t = Arc::new(toy);
    conformance::run_all(t.clone(), t.clone(), t, &app, &sources(), &settings()).await
}

/// Runs the whole suite on a toy with `bugs`; `Ok(report)` when it passes, `Err`
/// with the panic's message when it fails.
async fn suite_with(
    bugs: Bugs,
    env: &'static str,
) -> std::result::Result<conformance::Report, String> {
    catch(suite(Toy::new(bugs), env)).await
}

mod futures_like {
    //! Catching a panic of a future, to read the suite's message.
    use std::future::Future;

    /// Runs `f` on its own task and returns its output or its panic's message.
    pub async fn catch<T: Send + 'static>(
        f: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, String> {
        match tokio::spawn(f).await {
            Ok(v) => Ok(v),
            Err(e) => {
                let p = e.into_panic();
                Err(p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "a panic without a message".into()))
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn the_correct_toy_conforms() {
    let report = suite(Toy::new(Bugs::default()), "correct").await;
    println!("{report}");
    // no look-alikes hook: that part is skipped, the rest runs
    assert!(report.passed() > 10, "{report}");
}

/// Each bug the suite catches, with the words its failure must contain.
async fn caught(bugs: Bugs, words: &[&str]) {
    // an app per bug: the suites of one test binary share the process's lock
    let hash = format!("{bugs:?}")
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
    let env: &'static str = Box::leak(format!("b{hash}").into_boxed_str());
    let err = suite_with(bugs, env)
        .await
        .expect_err(&format!("the suite passed a toy with {bugs:?}"));
    for w in words {
        assert!(
            err.contains(w),
            "{bugs:?}: the failure {err:?} does not say {w:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn caught_destroy_not_idempotent() {
    caught(
        Bugs {
            destroy_not_idempotent: true,
            ..Bugs::default()
        },
        &["destroy"],
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn caught_instances_of_missing_group() {
    caught(
        Bugs {
            instances_of_missing_is_empty: true,
            ..Bugs::default()
        },
        &["instances of a missing group must fail"],
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn caught_scale_lies() {
    caught(
        Bugs {
            scale_lies: true,
            ..Bugs::default()
        },
        &["scale"],
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn caught_scale_never_grows() {
    caught(
        Bugs {
            scale_never_grows: true,
            ..Bugs::default()
        },
        &["scale"],
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn caught_launch_ignores_conflict() {
    caught(
        Bugs {
            launch_ignores_conflict: true,
            ..Bugs::default()
        },
        &["with another release must fail"],
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn caught_remove_in_use() {
    caught(
        Bugs {
            remove_in_use: true,
            ..Bugs::default()
        },
        &["Conflict"],
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn caught_always_healthy() {
    caught(
        Bugs {
            always_healthy: true,
            ..Bugs::default()
        },
        &["never"],
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn caught_launch_one_short() {
    caught(
        Bugs {
            launch_one_short: true,
            ..Bugs::default()
        },
        &["did not list 2 healthy instances", "1 instances listed"],
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn caught_set_routes_unattached() {
    caught(
        Bugs {
            set_routes_unattached: true,
            ..Bugs::default()
        },
        &["routing to an unattached group must fail"],
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn caught_detach_with_traffic() {
    caught(
        Bugs {
            detach_with_traffic: true,
            ..Bugs::default()
        },
        &["detaching a group with traffic must fail"],
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn caught_groups_of_every_app() {
    caught(
        Bugs {
            groups_of_every_app: true,
            ..Bugs::default()
        },
        &["groups"],
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn caught_images_of_every_app() {
    caught(
        Bugs {
            images_of_every_app: true,
            ..Bugs::default()
        },
        &["images"],
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn caught_attach_drops_members() {
    caught(
        Bugs {
            attach_drops_members: true,
            ..Bugs::default()
        },
        &["serving"],
    )
    .await;
}

/// A router whose `serving` says every member healthy whatever their health (a
/// load balancer's target health read from a cache, or counted from the
/// attachment alone) passes the whole suite: the router part only checks members
/// that are healthy, and the never-healthy deployment is stopped by the fleet's
/// health first. The engine trusts `serving` before every increase and in the
/// bake, so such a router would let traffic onto members it cannot reach. The
/// suite's `router_never_healthy_members` rule catches it.
#[tokio::test(start_paused = true)]
async fn caught_serving_always_healthy() {
    caught(
        Bugs {
            serving_always_healthy: true,
            ..Bugs::default()
        },
        &["serving"],
    )
    .await;
}

/// The docs' snippet runs the suite with a fixed app (`conformance`.`mine`). Two
/// tests of one test binary that each run it, on two providers that share nothing,
/// used to collide in the process-wide `MemoryLock` ("the first deployment must
/// succeed: conformance.toy is locked by deployment d-..."); the deployment part's
/// engine now has a lock table of its own.
#[tokio::test(start_paused = true)]
async fn two_suites_with_one_app_in_one_binary_do_not_collide() {
    let a = catch(suite(Toy::new(Bugs::default()), "shared"));
    let b = catch(suite(Toy::new(Bugs::default()), "shared"));
    let (a, b) = tokio::join!(a, b);
    assert!(a.is_ok() && b.is_ok(), "{a:?}\n{b:?}");
}

fn refused() -> Vec<conformance::Refused> {
    use bluegreen_testkit::conformance::Refused;
    vec![
        Refused::new(
            ImageSource::Reference("docker:1".into()),
            ErrorKind::Invalid,
            "invalid source",
        ),
        Refused::new(
            ImageSource::SourceUrl("https://example.invalid/x.tgz".into()),
            ErrorKind::NotSupported,
            "not supported",
        ),
    ]
}

/// `docs/providers.md` never mentions `Image::check_source` (nor
/// `Fleet::check_release`); a provider written from it refuses a wrong source in
/// `prepare`, which `sources_refused` fails as "refused only after a change, which
/// was reverted: prepare image failed (reverted): ...". The check is right; the
/// guide does not prepare its reader for it. This test fails if the suite stops
/// asking for `check_source`.
#[tokio::test(start_paused = true)]
async fn sources_refused_needs_check_source_which_the_guide_omits() {
    let toy = Toy::new(Bugs {
        no_check_source: true,
        ..Bugs::default()
    });
    let err = catch(async move {
        let engine = Engine::new(toy.clone(), toy.clone(), toy);
        let app = App::new("sources", "nocheck").unwrap();
        conformance::sources_refused(&engine, &app, &refused()).await
    })
    .await
    .expect_err("a provider without check_source passed sources_refused");
    assert!(err.contains("only after a change"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn sources_refused_on_the_toy() {
    let toy = Toy::new(Bugs::default());
    let engine = Engine::new(toy.clone(), toy.clone(), toy.clone());
    let app = App::new("sources", "toy").unwrap();
    let report = conformance::sources_refused(&engine, &app, &refused()).await;
    assert_eq!(report.passed(), 2, "{report}");
    let _ = EngineOptions::default();
}

/// A lock as its documentation asks, on tokio's clock; `never_expires` makes it
/// ignore leases.
#[derive(Debug, Default)]
struct ToyLock {
    never_expires: bool,
    /// `release` deletes the record, so that the next token starts again at 1.
    forgets_tokens: bool,
    /// app slug -> (holder, token, until, held)
    entries: Mutex<BTreeMap<String, (String, u64, tokio::time::Instant, bool)>>,
}

#[async_trait]
impl Lock for ToyLock {
    async fn acquire(
        &self,
        app: &App,
        holder: &LockHolder,
        lease: Duration,
    ) -> Result<FencingToken> {
        let now = tokio::time::Instant::now();
        let mut e = self.entries.lock().unwrap();
        let entry = e
            .entry(app.slug())
            .or_insert_with(|| (String::new(), 0, now, false));
        let who = holder.to_string();
        let live = entry.3 && (self.never_expires || entry.2 > now);
        if live && entry.0 != who {
            return Err(Error::Locked {
                app: app.to_string(),
                holder: entry.0.clone(),
            });
        }
        if !(live && entry.0 == who) {
            entry.1 += 1;
        }
        *entry = (who, entry.1, now + lease, true);
        Ok(FencingToken(entry.1))
    }

    async fn renew(
        &self,
        app: &App,
        holder: &LockHolder,
        token: FencingToken,
        lease: Duration,
    ) -> Result<()> {
        let now = tokio::time::Instant::now();
        let mut e = self.entries.lock().unwrap();
        match e.get_mut(&app.slug()) {
            Some(entry) if entry.3 && entry.0 == holder.to_string() && entry.1 == token.0 => {
                entry.2 = now + lease;
                Ok(())
            }
            other => Err(Error::Locked {
                app: app.to_string(),
                holder: other.map(|x| x.0.clone()).unwrap_or_default(),
            }),
        }
    }

    async fn release(&self, app: &App, holder: &LockHolder, token: FencingToken) -> Result<()> {
        let mut e = self.entries.lock().unwrap();
        if let Some(entry) = e.get_mut(&app.slug()) {
            if entry.0 == holder.to_string() && entry.1 == token.0 {
                entry.3 = false;
                if self.forgets_tokens {
                    e.remove(&app.slug());
                }
            }
        }
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn the_toy_lock_keeps_the_contract() {
    let lock = ToyLock::default();
    let app = App::new("conformance", "lock").unwrap();
    let other = App::new("conformance", "other").unwrap();
    conformance::lock_contract(&lock, &app, &other, Duration::from_secs(2)).await;
    conformance::lock_contract_across(&lock, &lock, &app, &other, Duration::from_secs(2)).await;
}

#[tokio::test(start_paused = true)]
async fn caught_a_lock_that_never_expires() {
    let err = catch(async {
        let lock = ToyLock {
            never_expires: true,
            ..ToyLock::default()
        };
        let app = App::new("conformance", "lock").unwrap();
        let other = App::new("conformance", "other").unwrap();
        conformance::lock_contract(&lock, &app, &other, Duration::from_secs(2)).await;
    })
    .await
    .expect_err("a lock whose lease never passes kept the contract");
    assert!(err.contains("lease"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn caught_a_lock_that_forgets_its_tokens() {
    let err = catch(async {
        let lock = ToyLock {
            forgets_tokens: true,
            ..ToyLock::default()
        };
        let app = App::new("conformance", "lock").unwrap();
        let other = App::new("conformance", "other").unwrap();
        conformance::lock_contract(&lock, &app, &other, Duration::from_secs(2)).await;
    })
    .await
    .expect_err("a lock whose tokens restart after a release kept the contract");
    assert!(err.contains("token"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn caught_destroy_of_another_apps_group() {
    caught(
        Bugs {
            destroy_any_app: true,
            ..Bugs::default()
        },
        &["another app"],
    )
    .await;
}

/// `docs/providers.md` ends its snippet with `assert_eq!(report.skipped(), 0)`.
/// No router can pass it: a weighted router has "a split is refused as
/// NotSupported" skipped, an unweighted one "weights read back as set". This test
/// shows the first half on the toy (weighted); it fails when the suite stops
/// skipping that rule.
#[tokio::test(start_paused = true)]
async fn docs_snippet_skipped_zero_cannot_hold() {
    let report = suite(Toy::new(Bugs::default()), "snippet").await;
    let split = report
        .find(
            "router",
            "a split is refused as NotSupported and changes nothing",
        )
        .expect("the rule is in the report");
    assert!(
        matches!(split.outcome, conformance::Outcome::Skipped { .. }),
        "{report}"
    );
    assert!(report.skipped() > 0, "{report}");
}

#[tokio::test(start_paused = true)]
async fn caught_attach_appends() {
    caught(
        Bugs {
            attach_appends: true,
            ..Bugs::default()
        },
        &["attach"],
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn caught_scale_overshoots() {
    caught(
        Bugs {
            scale_overshoots: true,
            ..Bugs::default()
        },
        &["scal"],
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn caught_no_address() {
    caught(
        Bugs {
            no_address: true,
            ..Bugs::default()
        },
        &["address"],
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn caught_routes_stale() {
    caught(
        Bugs {
            routes_stale: true,
            ..Bugs::default()
        },
        &["read back"],
    )
    .await;
}

/// The docs say "every wait of the suite is bounded by" `Settings::health_timeout`
/// ("a broken provider fails within it"). A fleet whose `instances` never returns
/// hung the suite: its waits bounded the polling, not the provider's call. Each
/// part of `run_all` is now bounded by ten health timeouts, and the failure names
/// the part and the hang.
#[tokio::test(start_paused = true)]
async fn a_hung_instances_call_fails_the_suite_in_bounded_time() {
    let bugs = Bugs {
        instances_hangs: true,
        ..Bugs::default()
    };
    let outcome = tokio::time::timeout(Duration::from_secs(3600), suite_with(bugs, "hung")).await;
    let failure = outcome.expect("the suite still ran an hour after a 20 s health timeout");
    let err = failure.expect_err("the suite passed a fleet whose instances hangs");
    assert!(
        err.contains("part did not finish within 200s") && err.contains("never returned"),
        "{err}"
    );
}

/// The same kind as `caught_serving_always_healthy`: a router that counts one
/// member too many as healthy (an off-by-one, a stale entry).
#[tokio::test(start_paused = true)]
async fn caught_serving_one_too_many() {
    caught(
        Bugs {
            serving_one_too_many: true,
            ..Bugs::default()
        },
        &["serving", "healthy"],
    )
    .await;
}

/// The same kind as `a_hung_instances_call_fails_the_suite_in_bounded_time`: a
/// router call (`routes`) that never returns.
#[tokio::test(start_paused = true)]
async fn a_hung_routes_call_fails_the_suite_in_bounded_time() {
    let bugs = Bugs {
        routes_hangs: true,
        ..Bugs::default()
    };
    let outcome = tokio::time::timeout(Duration::from_secs(3600), suite_with(bugs, "hungr")).await;
    let failure = outcome.expect("the suite still ran an hour after a 20 s health timeout");
    let err = failure.expect_err("the suite passed a router whose routes hangs");
    assert!(
        err.contains("part did not finish within 200s") && err.contains("never returned"),
        "{err}"
    );
}
