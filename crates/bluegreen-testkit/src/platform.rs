//! The in-memory platform: one shared state behind the three providers, with call
//! counts, fault injection and virtual time.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use bluegreen_core::labels::Labels;
use bluegreen_core::{
    App, Error, GroupId, ImageId, Instance, MemoryLock, Parts, ReleaseId, Result, RouteTable,
};
use tokio::time::Instant;

use crate::fault::{meet, Behaviour, Fault, FaultPlan, Op, TaskBehaviour};
use crate::{MemoryFleet, MemoryImage, MemoryRouter};

/// An in-memory platform that behaves like a real one: it keeps labels, boots
/// instances over time, reports health, and lets a test inject faults (fail the Nth
/// call of an operation, throttling, latency, slow boots, unhealthy images).
///
/// It runs on tokio's clock: under a paused clock (`#[tokio::test(start_paused =
/// true)]`) hours of platform time pass in milliseconds.
///
/// ```
/// use bluegreen_testkit::{MemoryPlatform, Behaviour};
/// let platform = MemoryPlatform::new();
/// platform.set_behaviour("web:3", Behaviour::NeverHealthy);
/// let (image, fleet, router) = (platform.image(), platform.fleet(), platform.router());
/// # let _ = (image, fleet, router);
/// ```
#[derive(Clone, Default)]
pub struct MemoryPlatform {
    pub(crate) inner: Arc<Mutex<State>>,
    /// The platform's lock: engines deploying to this platform share it.
    lock: Arc<MemoryLock>,
}

impl std::fmt::Debug for MemoryPlatform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryPlatform").finish_non_exhaustive()
    }
}

#[derive(Default)]
pub(crate) struct State {
    pub(crate) epoch: Option<(SystemTime, Instant)>,
    pub(crate) images: BTreeMap<ImageId, StoredImage>,
    pub(crate) behaviours: HashMap<String, Behaviour>,
    pub(crate) groups: Vec<StoredGroup>,
    pub(crate) routers: BTreeMap<App, AppRoutes>,
    pub(crate) history: Vec<(App, RouteTable)>,
    pub(crate) plan: FaultPlan,
    pub(crate) boot_time: Duration,
    pub(crate) batch_size: Option<usize>,
    pub(crate) unweighted: bool,
    pub(crate) single_app_switch: bool,
    pub(crate) next_instance: u64,
    pub(crate) tasks: Vec<StoredTask>,
    pub(crate) task_behaviours: HashMap<String, TaskBehaviour>,
    /// Every task started: app, group, command.
    pub(crate) task_starts: Vec<(App, GroupId, Vec<String>)>,
}

/// A release task as the platform holds it, labelled like a group.
pub(crate) struct StoredTask {
    pub(crate) group: GroupId,
    pub(crate) labels: Labels,
    pub(crate) release: ReleaseId,
    pub(crate) command: Vec<String>,
    pub(crate) started: Instant,
    pub(crate) behaviour: TaskBehaviour,
}

pub(crate) struct StoredImage {
    pub(crate) labels: Labels,
    pub(crate) app: App,
    pub(crate) created_at: SystemTime,
    pub(crate) origin: String,
    /// What a test names the image by (`web:1`): the key of behaviours.
    pub(crate) reference: String,
    pub(crate) behaviour: Behaviour,
}

/// A group as the platform holds it: labels and a record, like tags on instances.
pub(crate) struct StoredGroup {
    pub(crate) id: GroupId,
    pub(crate) labels: Labels,
    pub(crate) record: String,
    pub(crate) instances: Vec<StoredInstance>,
}

pub(crate) struct StoredInstance {
    pub(crate) id: String,
    pub(crate) launched: Instant,
    pub(crate) behaviour: Behaviour,
    pub(crate) killed: bool,
}

#[derive(Default)]
pub(crate) struct AppRoutes {
    pub(crate) table: RouteTable,
    pub(crate) attached: BTreeMap<GroupId, Vec<Instance>>,
    /// Synthetic requests and errors served per group so far.
    pub(crate) served: BTreeMap<GroupId, (f64, f64)>,
    /// When the synthetic traffic was last counted.
    pub(crate) counted_at: Option<Instant>,
}

impl MemoryPlatform {
    /// An empty platform: no latency, instant boots, weighted routing, no batching.
    pub fn new() -> Self {
        MemoryPlatform::default()
    }

    /// The [`Image`](bluegreen_core::Image) provider.
    pub fn image(&self) -> MemoryImage {
        MemoryImage {
            platform: self.clone(),
        }
    }

    /// The [`Fleet`](bluegreen_core::Fleet) provider.
    pub fn fleet(&self) -> MemoryFleet {
        MemoryFleet {
            platform: self.clone(),
        }
    }

    /// The [`Router`](bluegreen_core::Router) provider.
    pub fn router(&self) -> MemoryRouter {
        MemoryRouter {
            platform: self.clone(),
        }
    }

    /// The platform's deployment lock (a [`MemoryLock`] of its own, on tokio's
    /// clock): every engine built from [`MemoryPlatform::parts`] shares it.
    pub fn lock(&self) -> Arc<MemoryLock> {
        self.lock.clone()
    }

    /// The image, fleet and router with the platform's [`lock`](MemoryPlatform::lock),
    /// for [`Engine::from_parts`](bluegreen_core::Engine::from_parts): engines on one
    /// platform exclude each other, engines on two platforms do not.
    pub fn parts(&self) -> Parts {
        Parts::from_arcs(
            Arc::new(self.image()),
            Arc::new(self.fleet()),
            Arc::new(self.router()),
            self.lock.clone(),
        )
    }

    /// Every platform call takes this long.
    pub fn set_latency(&self, latency: Duration) -> &Self {
        self.state().plan.set_latency(latency);
        self
    }

    /// Instances take this long to boot before they are healthy.
    pub fn set_boot_time(&self, boot: Duration) -> &Self {
        self.state().boot_time = boot;
        self
    }

    /// The fleet launches, lists and destroys at most `size` instances per platform
    /// call, and declares it in its capabilities.
    pub fn set_batch_size(&self, size: usize) -> &Self {
        self.state().batch_size = Some(size.max(1));
        self
    }

    /// The router cannot weigh traffic (like a DNS switch).
    pub fn without_weights(&self) -> &Self {
        self.state().unweighted = true;
        self
    }

    /// The router cannot replace several apps' tables at once
    /// ([`RouterCapabilities::multi_app_switch`](bluegreen_core::RouterCapabilities)).
    pub fn without_multi_app_switch(&self) -> &Self {
        self.state().single_app_switch = true;
        self
    }

    /// Release tasks run from images prepared from `reference` behave like this
    /// (by default they succeed after the boot time).
    pub fn set_task_behaviour(&self, reference: &str, behaviour: TaskBehaviour) -> &Self {
        self.state()
            .task_behaviours
            .insert(reference.to_owned(), behaviour);
        self
    }

    /// Every release task started so far for `app`, in order: its group and command.
    /// A task started twice for a group shows twice.
    pub fn task_starts(&self, app: &App) -> Vec<(GroupId, Vec<String>)> {
        self.state()
            .task_starts
            .iter()
            .filter(|(a, _, _)| a == app)
            .map(|(_, g, c)| (g.clone(), c.clone()))
            .collect()
    }

    /// Whether a task record of `group` exists.
    pub fn has_task(&self, group: &str) -> bool {
        self.state().tasks.iter().any(|t| t.group.as_str() == group)
    }

    /// Instances of images prepared from `reference` behave like this.
    pub fn set_behaviour(&self, reference: &str, behaviour: Behaviour) -> &Self {
        self.state()
            .behaviours
            .insert(reference.to_owned(), behaviour);
        self
    }

    /// The `nth` call of `op` from now on (1 is the next) meets `fault`.
    pub fn fail_nth(&self, op: Op, nth: u64, fault: Fault) -> &Self {
        self.state().plan.fail_nth(op, nth, fault);
        self
    }

    /// Every call meets `fault` with probability `rate`, from a generator seeded by
    /// `seed` (the same seed gives the same faults). A rate of 0 stops it.
    pub fn fail_randomly(&self, rate: f64, fault: Fault, seed: u64) -> &Self {
        self.state().plan.fail_randomly(rate, fault, seed);
        self
    }

    /// Removes every planned and random fault.
    pub fn clear_faults(&self) -> &Self {
        self.state().plan.clear();
        self
    }

    /// Kills one instance of a group: it reports [`Health::Stopped`](bluegreen_core::Health).
    pub fn kill_instance(&self, group: &GroupId, index: usize) -> Result<()> {
        let mut state = self.state();
        let g = state
            .groups
            .iter_mut()
            .find(|g| &g.id == group)
            .ok_or_else(|| Error::not_found(format!("group {group}")))?;
        let i = g
            .instances
            .get_mut(index)
            .ok_or_else(|| Error::not_found(format!("instance {index} of {group}")))?;
        i.killed = true;
        Ok(())
    }

    /// Adds a look-alike group: same name pattern and instances, but none of
    /// bluegreen's labels. Nothing may touch it.
    pub fn add_foreign_group(&self, id: &str, instances: usize) {
        let mut state = self.state();
        let now = Instant::now();
        let instances = (0..instances)
            .map(|n| StoredInstance {
                id: format!("{id}-foreign-{n}"),
                launched: now,
                behaviour: Behaviour::Healthy,
                killed: false,
            })
            .collect();
        state.groups.push(StoredGroup {
            id: GroupId::new(id),
            labels: Labels::from([("name".to_owned(), id.to_owned())]),
            record: String::new(),
            instances,
        });
    }

    /// The conformance suite's look-alike hook on this platform
    /// ([`conformance::LookAlikes`](crate::conformance::LookAlikes)).
    pub fn look_alikes(&self) -> crate::MemoryLookAlikes {
        crate::MemoryLookAlikes {
            platform: self.clone(),
        }
    }

    /// Adds a look-alike image without bluegreen's labels.
    pub fn add_foreign_image(&self, app: &App, id: &str) {
        let mut state = self.state();
        let created_at = state.now();
        state.images.insert(
            ImageId::new(id),
            StoredImage {
                labels: Labels::new(),
                app: app.clone(),
                created_at,
                origin: "foreign".into(),
                reference: id.to_owned(),
                behaviour: Behaviour::Healthy,
            },
        );
    }

    /// Whether a group (ours or foreign) exists, by id.
    pub fn has_group(&self, id: &str) -> bool {
        self.state().groups.iter().any(|g| g.id.as_str() == id)
    }

    /// Whether an image (ours or foreign) exists.
    pub fn has_image(&self, id: &str) -> bool {
        self.state().images.contains_key(&ImageId::new(id))
    }

    /// How many instances run on the platform, ours and foreign.
    pub fn instance_count(&self) -> usize {
        self.state().groups.iter().map(|g| g.instances.len()).sum()
    }

    /// Calls of `op` so far.
    pub fn calls(&self, op: Op) -> u64 {
        self.state().plan.calls(op)
    }

    /// Calls of every operation so far.
    pub fn total_calls(&self) -> u64 {
        self.state().plan.call_counts().values().sum()
    }

    /// Calls that change the platform so far.
    pub fn mutating_calls(&self) -> u64 {
        self.state()
            .plan
            .call_counts()
            .iter()
            .filter(|(op, _)| op.mutates())
            .map(|(_, n)| n)
            .sum()
    }

    /// Every call so far, in order.
    pub fn call_log(&self) -> Vec<Op> {
        self.state().plan.call_log().to_vec()
    }

    /// Every call count so far.
    pub fn call_counts(&self) -> BTreeMap<Op, u64> {
        self.state().plan.call_counts().clone()
    }

    /// Every route table the router was given for `app`, in order.
    pub fn route_history(&self, app: &App) -> Vec<RouteTable> {
        self.state()
            .history
            .iter()
            .filter(|(a, _)| a == app)
            .map(|(_, t)| t.clone())
            .collect()
    }

    /// The groups attached to the router for `app`.
    pub fn attached(&self, app: &App) -> Vec<GroupId> {
        self.state()
            .routers
            .get(app)
            .map(|r| r.attached.keys().cloned().collect())
            .unwrap_or_default()
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        self.inner.lock().expect("memory platform poisoned")
    }

    /// Counts a call, waits the latency, and applies any fault.
    pub(crate) async fn call(&self, op: Op) -> Result<()> {
        let next = self.state().plan.next(op);
        meet(next, op, "memory").await
    }

    /// Counts `pages` calls of `op` (batches), each with the latency and faults.
    pub(crate) async fn calls_in_batches(&self, op: Op, items: usize) -> Result<()> {
        let batch = self.state().batch_size.unwrap_or(usize::MAX);
        let pages = items.div_ceil(batch).max(1);
        for _ in 0..pages {
            self.call(op).await?;
        }
        Ok(())
    }
}

impl State {
    /// Virtual wall-clock time: a fixed epoch plus tokio's elapsed time.
    pub(crate) fn now(&mut self) -> SystemTime {
        let (wall, start) = *self.epoch.get_or_insert_with(|| {
            (
                SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600),
                Instant::now(),
            )
        });
        wall + start.elapsed()
    }
}
