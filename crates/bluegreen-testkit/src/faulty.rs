//! [`Faulty`]: a real provider with faults injected in front of it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bluegreen_core::{
    async_trait, App, Attachment, EventSink, Fleet, FleetCapabilities, Group, GroupId, Image,
    ImageCapabilities, ImageId, ImageRef, ImageSource, Instance, Release, Result, RouteTable,
    Router, RouterCapabilities, Serving, TaskStatus,
};

use crate::fault::{meet, Fault, FaultPlan, Op};

/// Any [`Image`], [`Fleet`] or [`Router`] with faults injected in front of it:
/// throttling ([`Fault::Throttle`], an [`Error::RateLimited`]), retryable and
/// permanent errors, added latency and calls that never return, at the Nth call of
/// an operation or at a rate drawn from a seed.
///
/// A faulted call never reaches the wrapped provider (nothing is done), except for
/// the latency, which is waited before the call is passed on. The faults are the
/// same as the in-memory platform's, so that a provider's author tests the engine's
/// retry layer ([`Retry`](bluegreen_core::Retry)) and its bounds on the real
/// platform. Each trait method is one call of its [`Op`] (the in-memory platform
/// counts batches instead). Clones share the plan and the counts.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), bluegreen_core::Error> {
/// use bluegreen_core::{App, DeployRequest, Engine, ImageSource};
/// use bluegreen_testkit::{Fault, Faulty, MemoryPlatform, Op};
///
/// let platform = MemoryPlatform::new(); // or a real provider
/// let fleet = Faulty::new(platform.fleet());
/// fleet
///     .fail_nth(Op::Launch, 1, Fault::Throttle)
///     .fail_randomly(0.2, Fault::Transient, 7);
/// let engine = Engine::new(platform.image(), fleet.clone(), platform.router());
/// let app = App::new("web", "production")?;
/// engine
///     .deploy(&DeployRequest::new(app, ImageSource::Reference("web:1".into())))
///     .await?;
/// assert!(fleet.calls(Op::Launch) >= 2, "the throttled launch was retried");
/// # Ok(())
/// # }
/// ```
///
/// [`Error::RateLimited`]: bluegreen_core::Error::RateLimited
pub struct Faulty<T> {
    inner: Arc<T>,
    plan: Arc<Mutex<FaultPlan>>,
}

impl<T> std::fmt::Debug for Faulty<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faulty").finish_non_exhaustive()
    }
}

impl<T> Clone for Faulty<T> {
    fn clone(&self) -> Self {
        Faulty {
            inner: self.inner.clone(),
            plan: self.plan.clone(),
        }
    }
}

impl<T> Faulty<T> {
    /// Wraps `inner`, with no fault planned yet.
    pub fn new(inner: T) -> Self {
        Faulty {
            inner: Arc::new(inner),
            plan: Arc::default(),
        }
    }

    /// The wrapped provider.
    pub fn inner(&self) -> &T {
        &self.inner
    }

    /// The `nth` call of `op` from now on (1 is the next) meets `fault`.
    pub fn fail_nth(&self, op: Op, nth: u64, fault: Fault) -> &Self {
        self.plan().fail_nth(op, nth, fault);
        self
    }

    /// Every call meets `fault` with probability `rate`, from a generator seeded by
    /// `seed` (the same seed and the same calls give the same faults). A rate of 0
    /// stops it.
    pub fn fail_randomly(&self, rate: f64, fault: Fault, seed: u64) -> &Self {
        self.plan().fail_randomly(rate, fault, seed);
        self
    }

    /// Every call waits this long before it is passed on.
    pub fn set_latency(&self, latency: Duration) -> &Self {
        self.plan().set_latency(latency);
        self
    }

    /// Calls of `op` wait this long before they are passed on (instead of the
    /// latency of every call).
    pub fn set_latency_of(&self, op: Op, latency: Duration) -> &Self {
        self.plan().set_latency_of(op, latency);
        self
    }

    /// Removes every planned and random fault (latencies stay).
    pub fn clear_faults(&self) -> &Self {
        self.plan().clear();
        self
    }

    /// Calls of `op` so far, faulted or not.
    pub fn calls(&self, op: Op) -> u64 {
        self.plan().calls(op)
    }

    /// Every call count so far.
    pub fn call_counts(&self) -> BTreeMap<Op, u64> {
        self.plan().call_counts().clone()
    }

    /// Every call so far, in order.
    pub fn call_log(&self) -> Vec<Op> {
        self.plan().call_log().to_vec()
    }

    fn plan(&self) -> MutexGuard<'_, FaultPlan> {
        self.plan.lock().expect("fault plan poisoned")
    }

    /// Counts a call of `op`, waits its latency and applies its fault.
    async fn call(&self, op: Op) -> Result<()> {
        let next = self.plan().next(op);
        meet(next, op, "faulty").await
    }
}

#[async_trait]
impl<T: Image> Image for Faulty<T> {
    async fn prepare(
        &self,
        app: &App,
        source: &ImageSource,
        events: &EventSink,
    ) -> Result<ImageRef> {
        self.call(Op::Prepare).await?;
        self.inner.prepare(app, source, events).await
    }

    async fn images(&self, app: &App) -> Result<Vec<ImageRef>> {
        self.call(Op::Images).await?;
        self.inner.images(app).await
    }

    async fn remove(&self, app: &App, id: &ImageId) -> Result<()> {
        self.call(Op::RemoveImage).await?;
        self.inner.remove(app, id).await
    }

    /// The wrapped provider's check: it makes no platform call, so no fault applies.
    fn check_source(&self, source: &ImageSource, release: &Release) -> Result<()> {
        self.inner.check_source(source, release)
    }

    fn capabilities(&self) -> ImageCapabilities {
        self.inner.capabilities()
    }
}

#[async_trait]
impl<T: Fleet> Fleet for Faulty<T> {
    fn capabilities(&self) -> FleetCapabilities {
        self.inner.capabilities()
    }

    fn check_release(&self, release: &Release) -> Result<()> {
        self.inner.check_release(release)
    }

    async fn launch(&self, group: &Group) -> Result<()> {
        self.call(Op::Launch).await?;
        self.inner.launch(group).await
    }

    async fn groups(&self, app: &App) -> Result<Vec<Group>> {
        self.call(Op::Groups).await?;
        self.inner.groups(app).await
    }

    async fn instances(&self, app: &App, group: &GroupId) -> Result<Vec<Instance>> {
        self.call(Op::Instances).await?;
        self.inner.instances(app, group).await
    }

    async fn destroy(&self, app: &App, group: &GroupId) -> Result<()> {
        self.call(Op::Destroy).await?;
        self.inner.destroy(app, group).await
    }

    async fn scale(&self, app: &App, group: &GroupId, size: u32) -> Result<()> {
        self.call(Op::Scale).await?;
        self.inner.scale(app, group, size).await
    }

    async fn start_task(&self, group: &Group) -> Result<()> {
        self.call(Op::StartTask).await?;
        self.inner.start_task(group).await
    }

    async fn task(&self, app: &App, group: &GroupId) -> Result<Option<TaskStatus>> {
        self.call(Op::Task).await?;
        self.inner.task(app, group).await
    }
}

#[async_trait]
impl<T: Router> Router for Faulty<T> {
    fn capabilities(&self) -> RouterCapabilities {
        self.inner.capabilities()
    }

    async fn attach(
        &self,
        app: &App,
        group: &GroupId,
        instances: &[Instance],
    ) -> Result<Attachment> {
        self.call(Op::Attach).await?;
        self.inner.attach(app, group, instances).await
    }

    async fn detach(&self, app: &App, group: &GroupId) -> Result<()> {
        self.call(Op::Detach).await?;
        self.inner.detach(app, group).await
    }

    async fn routes(&self, app: &App) -> Result<RouteTable> {
        self.call(Op::Routes).await?;
        self.inner.routes(app).await
    }

    async fn set_routes(&self, app: &App, table: &RouteTable) -> Result<()> {
        self.call(Op::SetRoutes).await?;
        self.inner.set_routes(app, table).await
    }

    async fn set_routes_many(&self, tables: &[(App, RouteTable)]) -> Result<()> {
        self.call(Op::SetRoutesMany).await?;
        self.inner.set_routes_many(tables).await
    }

    async fn serving(&self, app: &App, group: &GroupId) -> Result<Serving> {
        self.call(Op::Serving).await?;
        self.inner.serving(app, group).await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bluegreen_core::{
        App, DeployRequest, Engine, EngineOptions, ErrorKind, Fleet, ImageSource, RetryOptions,
        RouteTable, Router,
    };

    use super::Faulty;
    use crate::{Fault, MemoryPlatform, Op};

    fn request(app: &App, version: u32) -> DeployRequest {
        DeployRequest::new(
            app.clone(),
            ImageSource::Reference(format!("web:{version}")),
        )
        .size(3)
    }

    /// Throttling, transient errors at a rate, latency and a hung call, all through
    /// the wrappers: the retry layer absorbs what is retryable, the call bound ends
    /// the hung call, and the deployment run again converges.
    #[tokio::test(start_paused = true)]
    async fn the_engine_converges_through_faulty_providers() {
        let platform = MemoryPlatform::new();
        platform.set_boot_time(Duration::from_secs(5));
        let (image, fleet, router) = (
            Faulty::new(platform.image()),
            Faulty::new(platform.fleet()),
            Faulty::new(platform.router()),
        );
        image.set_latency(Duration::from_millis(300));
        fleet
            .fail_nth(Op::Launch, 1, Fault::Throttle)
            .fail_randomly(0.25, Fault::Transient, 11)
            .set_latency_of(Op::Instances, Duration::from_millis(50));
        router
            .fail_nth(Op::SetRoutes, 1, Fault::Transient)
            .fail_randomly(0.2, Fault::Throttle, 12);
        let options = EngineOptions::default()
            .with_call_timeout(Duration::from_secs(30))
            .with_keep(0);
        let engine = Engine::new(image.clone(), fleet.clone(), router.clone())
            .with_options(options.clone())
            .with_retry(RetryOptions::default().with_max_attempts(20));
        let app = App::new("web", "faulty").unwrap();

        let v1 = engine.deploy(&request(&app, 1)).await.unwrap();
        assert!(
            fleet.calls(Op::Launch) >= 2,
            "the throttled launch was retried"
        );
        assert!(
            router.calls(Op::SetRoutes) >= 2,
            "{:?}",
            router.call_counts()
        );
        assert!(
            fleet.calls(Op::Instances) > platform.calls(Op::Instances),
            "some listings were faulted before the platform: {} > {}",
            fleet.calls(Op::Instances),
            platform.calls(Op::Instances)
        );

        // a launch that never returns: the call bound ends it, the deployment is
        // reverted, and once the platform answers again a rerun converges
        fleet.fail_nth(Op::Launch, 1, Fault::Hang);
        let e = engine.deploy(&request(&app, 2)).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
        assert_eq!(
            platform.router().routes(&app).await.unwrap(),
            RouteTable::single(v1.live.clone()),
            "the hung launch changed no route"
        );
        // a permanent error is not retried
        fleet.fail_nth(Op::Launch, 1, Fault::Fatal("quota exceeded".into()));
        let launches = fleet.calls(Op::Launch);
        let e = engine.deploy(&request(&app, 2)).await.unwrap_err();
        assert!(e.to_string().contains("quota exceeded"), "{e}");
        assert_eq!(fleet.calls(Op::Launch), launches + 1, "not retried");

        fleet.clear_faults();
        router.clear_faults();
        let v2 = engine.deploy(&request(&app, 2)).await.unwrap();
        let groups = platform.fleet().groups(&app).await.unwrap();
        assert_eq!(groups.len(), 1, "{groups:?}");
        assert_eq!(groups[0].id, v2.live);
        assert_eq!(
            platform.router().routes(&app).await.unwrap(),
            RouteTable::single(v2.live.clone())
        );
        assert_eq!(platform.attached(&app), vec![v2.live]);
    }
}
