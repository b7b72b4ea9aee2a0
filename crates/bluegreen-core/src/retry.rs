//! Retries as a layer: [`Retry`] wraps any provider and retries its retryable errors
//! with exponential backoff and jitter, within a total time budget.
//!
//! Every method of [`Image`], [`Fleet`] and [`Router`] is idempotent by contract (see
//! their `# Behavior` sections), so any call may be retried; only errors that say
//! they are retryable ([`Error::is_retryable`]: throttling, transient provider
//! failures) are.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! use bluegreen_core::{App, Fleet, Retry, RetryOptions};
//! use bluegreen_testkit::{Fault, MemoryPlatform, Op};
//!
//! let platform = MemoryPlatform::new();
//! platform.fail_nth(Op::Groups, 1, Fault::Throttle);
//! let fleet = Retry::new(platform.fleet(), RetryOptions::default());
//! let app = App::new("web", "production").unwrap();
//! assert!(fleet.groups(&app).await.unwrap().is_empty());
//! assert_eq!(platform.calls(Op::Groups), 2);
//! # }
//! ```

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::app::App;
use crate::capabilities::{FleetCapabilities, RouterCapabilities};
use crate::error::Result;
use crate::event::EventSink;
use crate::fleet::Fleet;
use crate::group::{Group, GroupId};
use crate::image::{Image, ImageId, ImageRef, ImageSource};
use crate::instance::Instance;
use crate::route::RouteTable;
use crate::router::{Attachment, Router, Serving};

/// How [`Retry`] retries.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq)]
pub struct RetryOptions {
    /// Tries per call, the first included. Default 8.
    pub max_attempts: u32,
    /// The first backoff. Default 200 ms.
    pub initial_backoff: Duration,
    /// The longest backoff. Default 10 s.
    pub max_backoff: Duration,
    /// The total time one call may spend retrying; no try starts after it.
    /// Default 60 s.
    pub budget: Duration,
    /// Full jitter: each backoff is drawn between half of it and all of it, so that
    /// many clients do not retry in step. Default true.
    pub jitter: bool,
}

impl Default for RetryOptions {
    fn default() -> Self {
        RetryOptions {
            max_attempts: 8,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            budget: Duration::from_secs(60),
            jitter: true,
        }
    }
}

impl RetryOptions {
    /// No retry at all.
    pub fn none() -> Self {
        RetryOptions {
            max_attempts: 1,
            ..RetryOptions::default()
        }
    }

    /// Sets [`RetryOptions::max_attempts`].
    pub fn with_max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// Sets [`RetryOptions::budget`].
    pub fn with_budget(mut self, budget: Duration) -> Self {
        self.budget = budget;
        self
    }

    /// Sets the backoffs.
    pub fn with_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max.max(initial);
        self
    }

    /// Sets [`RetryOptions::jitter`].
    pub fn with_jitter(mut self, jitter: bool) -> Self {
        self.jitter = jitter;
        self
    }

    /// The wait before try `attempt` (2 is the first retry), or the platform's own
    /// `retry_after` when it said one.
    fn backoff(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(after) = retry_after {
            return after.min(self.max_backoff);
        }
        let exp = self
            .initial_backoff
            .saturating_mul(1u32 << (attempt - 2).min(16))
            .min(self.max_backoff);
        if self.jitter {
            exp.mul_f64(0.5 + fastrand::f64() * 0.5)
        } else {
            exp
        }
    }

    /// Runs `call` until it succeeds, fails for good, or the tries or the budget run
    /// out; the last error is returned as it is.
    pub async fn run<T, F, Fut>(&self, what: &'static str, mut call: F) -> Result<T>
    where
        F: FnMut() -> Fut + Send,
        Fut: Future<Output = Result<T>> + Send,
        T: Send,
    {
        let deadline = Instant::now() + self.budget;
        let mut attempt = 1;
        loop {
            match call().await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_retryable() && attempt < self.max_attempts => {
                    attempt += 1;
                    let wait = self.backoff(attempt, e.retry_after());
                    if Instant::now() + wait > deadline {
                        tracing::warn!(call = what, error = %e, "retry budget spent");
                        return Err(e);
                    }
                    tracing::debug!(call = what, error = %e, attempt, ?wait, "retrying");
                    tokio::time::sleep(wait).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// A provider wrapped with retries. It implements whichever of [`Image`], [`Fleet`]
/// and [`Router`] the inner provider does.
#[derive(Clone, Debug)]
pub struct Retry<T> {
    inner: T,
    options: RetryOptions,
}

impl<T> Retry<T> {
    /// Wraps `inner`.
    pub fn new(inner: T, options: RetryOptions) -> Self {
        Retry { inner, options }
    }

    /// The wrapped provider.
    pub fn inner(&self) -> &T {
        &self.inner
    }
}

#[async_trait]
impl<T: Image> Image for Retry<T> {
    async fn prepare(
        &self,
        app: &App,
        source: &ImageSource,
        events: &EventSink,
    ) -> Result<ImageRef> {
        self.options
            .run("prepare", || self.inner.prepare(app, source, events))
            .await
    }
    fn check_source(&self, source: &ImageSource, release: &crate::release::Release) -> Result<()> {
        self.inner.check_source(source, release)
    }
    async fn images(&self, app: &App) -> Result<Vec<ImageRef>> {
        self.options.run("images", || self.inner.images(app)).await
    }
    async fn remove(&self, app: &App, id: &ImageId) -> Result<()> {
        self.options
            .run("remove", || self.inner.remove(app, id))
            .await
    }
    fn capabilities(&self) -> crate::capabilities::ImageCapabilities {
        self.inner.capabilities()
    }
}

#[async_trait]
impl<T: Fleet> Fleet for Retry<T> {
    fn capabilities(&self) -> FleetCapabilities {
        self.inner.capabilities()
    }
    fn check_release(&self, release: &crate::release::Release) -> Result<()> {
        self.inner.check_release(release)
    }
    async fn launch(&self, group: &Group) -> Result<()> {
        self.options
            .run("launch", || self.inner.launch(group))
            .await
    }
    async fn groups(&self, app: &App) -> Result<Vec<Group>> {
        self.options.run("groups", || self.inner.groups(app)).await
    }
    async fn instances(&self, app: &App, group: &GroupId) -> Result<Vec<Instance>> {
        self.options
            .run("instances", || self.inner.instances(app, group))
            .await
    }
    async fn destroy(&self, app: &App, group: &GroupId) -> Result<()> {
        self.options
            .run("destroy", || self.inner.destroy(app, group))
            .await
    }
    async fn scale(&self, app: &App, group: &GroupId, size: u32) -> Result<()> {
        self.options
            .run("scale", || self.inner.scale(app, group, size))
            .await
    }
    async fn start_task(&self, group: &Group) -> Result<()> {
        self.options
            .run("start_task", || self.inner.start_task(group))
            .await
    }
    async fn task(&self, app: &App, group: &GroupId) -> Result<Option<crate::task::TaskStatus>> {
        self.options
            .run("task", || self.inner.task(app, group))
            .await
    }
}

#[async_trait]
impl<T: Router> Router for Retry<T> {
    fn capabilities(&self) -> RouterCapabilities {
        self.inner.capabilities()
    }
    async fn attach(
        &self,
        app: &App,
        group: &GroupId,
        instances: &[Instance],
    ) -> Result<Attachment> {
        self.options
            .run("attach", || self.inner.attach(app, group, instances))
            .await
    }
    async fn detach(&self, app: &App, group: &GroupId) -> Result<()> {
        self.options
            .run("detach", || self.inner.detach(app, group))
            .await
    }
    async fn routes(&self, app: &App) -> Result<RouteTable> {
        self.options.run("routes", || self.inner.routes(app)).await
    }
    async fn set_routes(&self, app: &App, table: &RouteTable) -> Result<()> {
        self.options
            .run("set_routes", || self.inner.set_routes(app, table))
            .await
    }
    async fn set_routes_many(&self, tables: &[(App, RouteTable)]) -> Result<()> {
        self.options
            .run("set_routes_many", || self.inner.set_routes_many(tables))
            .await
    }
    async fn serving(&self, app: &App, group: &GroupId) -> Result<Serving> {
        self.options
            .run("serving", || self.inner.serving(app, group))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn transient() -> Error {
        Error::provider("test", "503", true)
    }

    #[tokio::test(start_paused = true)]
    async fn retries_only_what_is_retryable() {
        let options = RetryOptions::default().with_jitter(false);
        let tries = AtomicU32::new(0);
        let out: Result<()> = options
            .run("x", || async {
                tries.fetch_add(1, Ordering::SeqCst);
                Err(Error::not_found("x"))
            })
            .await;
        assert!(out.is_err());
        assert_eq!(tries.load(Ordering::SeqCst), 1);

        tries.store(0, Ordering::SeqCst);
        let started = Instant::now();
        let out = options
            .run("x", || async {
                if tries.fetch_add(1, Ordering::SeqCst) < 3 {
                    Err(transient())
                } else {
                    Ok(7)
                }
            })
            .await;
        assert_eq!(out.unwrap(), 7);
        assert_eq!(tries.load(Ordering::SeqCst), 4);
        // 200 + 400 + 800 ms of backoff
        assert_eq!(started.elapsed(), Duration::from_millis(1400));
    }

    #[tokio::test(start_paused = true)]
    async fn stops_at_the_attempts_or_the_budget() {
        let tries = AtomicU32::new(0);
        let options = RetryOptions::default()
            .with_max_attempts(3)
            .with_jitter(false);
        let out: Result<()> = options
            .run("x", || async {
                tries.fetch_add(1, Ordering::SeqCst);
                Err(transient())
            })
            .await;
        assert!(out.unwrap_err().is_retryable());
        assert_eq!(tries.load(Ordering::SeqCst), 3);

        tries.store(0, Ordering::SeqCst);
        let options = RetryOptions::default()
            .with_budget(Duration::from_secs(1))
            .with_jitter(false);
        let _ = options
            .run("x", || async {
                tries.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(transient())
            })
            .await;
        // 200 + 400 fit in 1 s, 800 more does not
        assert_eq!(tries.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn honours_retry_after() {
        let tries = AtomicU32::new(0);
        let started = Instant::now();
        let _ = RetryOptions::default()
            .run("x", || async {
                if tries.fetch_add(1, Ordering::SeqCst) == 0 {
                    Err(Error::RateLimited {
                        message: "slow down".into(),
                        retry_after: Some(Duration::from_secs(3)),
                    })
                } else {
                    Ok(())
                }
            })
            .await;
        assert_eq!(started.elapsed(), Duration::from_secs(3));
    }
}
