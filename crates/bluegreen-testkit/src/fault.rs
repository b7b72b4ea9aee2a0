//! Faults a test injects into the in-memory platform or, through
//! [`Faulty`](crate::Faulty), into any provider.

use std::collections::BTreeMap;
use std::time::Duration;

use bluegreen_core::{Error, Result};

/// A platform operation, as the in-memory platform and [`Faulty`](crate::Faulty)
/// count its calls.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    /// [`Image::prepare`](bluegreen_core::Image::prepare).
    Prepare,
    /// [`Image::images`](bluegreen_core::Image::images).
    Images,
    /// [`Image::remove`](bluegreen_core::Image::remove).
    RemoveImage,
    /// One batch of [`Fleet::launch`](bluegreen_core::Fleet::launch).
    Launch,
    /// [`Fleet::groups`](bluegreen_core::Fleet::groups).
    Groups,
    /// One page of [`Fleet::instances`](bluegreen_core::Fleet::instances).
    Instances,
    /// One batch of [`Fleet::destroy`](bluegreen_core::Fleet::destroy).
    Destroy,
    /// [`Router::attach`](bluegreen_core::Router::attach).
    Attach,
    /// [`Router::detach`](bluegreen_core::Router::detach).
    Detach,
    /// [`Router::routes`](bluegreen_core::Router::routes).
    Routes,
    /// [`Router::set_routes`](bluegreen_core::Router::set_routes).
    SetRoutes,
    /// [`Router::serving`](bluegreen_core::Router::serving).
    Serving,
    /// [`Fleet::start_task`](bluegreen_core::Fleet::start_task).
    StartTask,
    /// [`Fleet::task`](bluegreen_core::Fleet::task).
    Task,
    /// [`Router::set_routes_many`](bluegreen_core::Router::set_routes_many).
    SetRoutesMany,
    /// [`Fleet::scale`](bluegreen_core::Fleet::scale).
    Scale,
}

impl Op {
    /// Every operation.
    pub const ALL: [Op; 16] = [
        Op::Prepare,
        Op::Images,
        Op::RemoveImage,
        Op::Launch,
        Op::Groups,
        Op::Instances,
        Op::Destroy,
        Op::Attach,
        Op::Detach,
        Op::Routes,
        Op::SetRoutes,
        Op::Serving,
        Op::StartTask,
        Op::Task,
        Op::SetRoutesMany,
        Op::Scale,
    ];

    /// Whether the operation changes the platform.
    pub fn mutates(self) -> bool {
        matches!(
            self,
            Op::Prepare
                | Op::RemoveImage
                | Op::Launch
                | Op::Destroy
                | Op::Attach
                | Op::Detach
                | Op::SetRoutes
                | Op::StartTask
                | Op::SetRoutesMany
                | Op::Scale
        )
    }
}

/// What an injected fault does to a call.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// The platform throttles: [`Error::RateLimited`], nothing done.
    Throttle,
    /// A transient failure (a 503): a retryable [`Error::Provider`], nothing done.
    Transient,
    /// A permanent failure: a non-retryable [`Error::Provider`], nothing done.
    Fatal(String),
    /// The call never returns, like a process that died in the middle of it. A test
    /// drops the deployment's future (under a timeout) to simulate the death.
    Hang,
}

impl Fault {
    /// The error this fault gives a call of `op`, in the name of `provider`; `None`
    /// for [`Fault::Hang`].
    fn error(&self, op: Op, provider: &'static str) -> Option<Error> {
        match self {
            Fault::Throttle => Some(Error::RateLimited {
                message: format!("{op:?}: request rate exceeded"),
                retry_after: Some(Duration::from_millis(200)),
            }),
            Fault::Transient => Some(Error::provider(
                provider,
                format!("{op:?}: service unavailable"),
                true,
            )),
            Fault::Fatal(m) => Some(Error::provider(provider, format!("{op:?}: {m}"), false)),
            Fault::Hang => None,
        }
    }
}

/// The faults planned for a provider and the calls it answered: what the in-memory
/// platform and [`Faulty`](crate::Faulty) share.
#[derive(Default)]
pub(crate) struct FaultPlan {
    calls: BTreeMap<Op, u64>,
    log: Vec<Op>,
    planned: Vec<(Op, u64, Fault)>,
    random: Option<(f64, Fault, fastrand::Rng)>,
    latency: Duration,
    latency_of: BTreeMap<Op, Duration>,
}

impl FaultPlan {
    /// The `nth` call of `op` from now on (1 is the next) meets `fault`.
    pub(crate) fn fail_nth(&mut self, op: Op, nth: u64, fault: Fault) {
        let done = self.calls(op);
        self.planned.push((op, done + nth.max(1), fault));
    }

    /// Every call meets `fault` with probability `rate`, drawn from `seed`.
    pub(crate) fn fail_randomly(&mut self, rate: f64, fault: Fault, seed: u64) {
        self.random = (rate > 0.0).then(|| (rate, fault, fastrand::Rng::with_seed(seed)));
    }

    /// Removes every planned and random fault.
    pub(crate) fn clear(&mut self) {
        self.planned.clear();
        self.random = None;
    }

    /// Every call takes this long.
    pub(crate) fn set_latency(&mut self, latency: Duration) {
        self.latency = latency;
    }

    /// Calls of `op` take this long (instead of the latency of every call).
    pub(crate) fn set_latency_of(&mut self, op: Op, latency: Duration) {
        self.latency_of.insert(op, latency);
    }

    pub(crate) fn calls(&self, op: Op) -> u64 {
        self.calls.get(&op).copied().unwrap_or(0)
    }

    pub(crate) fn call_counts(&self) -> &BTreeMap<Op, u64> {
        &self.calls
    }

    pub(crate) fn call_log(&self) -> &[Op] {
        &self.log
    }

    /// Counts a call of `op`: what it waits and the fault it meets, if any.
    pub(crate) fn next(&mut self, op: Op) -> (Duration, Option<Fault>) {
        let n = self.calls.entry(op).or_insert(0);
        *n += 1;
        let n = *n;
        self.log.push(op);
        let planned = self
            .planned
            .iter()
            .position(|(o, nth, _)| *o == op && *nth == n)
            .map(|i| self.planned.remove(i).2);
        let random = match &mut self.random {
            Some((rate, fault, rng)) => (rng.f64() < *rate).then(|| fault.clone()),
            None => None,
        };
        let latency = self.latency_of.get(&op).copied().unwrap_or(self.latency);
        (latency, planned.or(random))
    }
}

/// Waits a call's latency and applies its fault (from [`FaultPlan::next`]), in the
/// name of `provider`.
pub(crate) async fn meet(
    (latency, fault): (Duration, Option<Fault>),
    op: Op,
    provider: &'static str,
) -> Result<()> {
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match fault {
        None => Ok(()),
        Some(Fault::Hang) => std::future::pending().await,
        Some(f) => Err(f
            .error(op, provider)
            .expect("every fault but Hang is an error")),
    }
}

/// How the instances of an image behave.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Default)]
pub enum Behaviour {
    /// Healthy once booted.
    #[default]
    Healthy,
    /// Runs but never passes its health check.
    NeverHealthy,
    /// Healthy once booted, then exits after this long.
    CrashAfter(Duration),
    /// Healthy, but this fraction of requests fail with a 5xx, as the router counts
    /// them while the group has traffic.
    ErrorRate(f64),
    /// Passes the fleet's health probe but fails the router's own health check (a
    /// release whose fleet probe path differs from what the router checks): the
    /// fleet reports it healthy, the router counts it unhealthy.
    UnhealthyAtRouter,
}

/// How a release task behaves on the in-memory platform
/// ([`MemoryPlatform::set_task_behaviour`](crate::MemoryPlatform::set_task_behaviour)).
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskBehaviour {
    /// Exits 0 after this long.
    Succeed(Duration),
    /// Exits with this status after this long.
    Fail(Duration, i32),
    /// Never finishes.
    Hang,
}

impl Default for TaskBehaviour {
    fn default() -> Self {
        TaskBehaviour::Succeed(Duration::from_secs(1))
    }
}
