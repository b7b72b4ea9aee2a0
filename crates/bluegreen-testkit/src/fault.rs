//! Faults a test injects into the in-memory platform.

use std::time::Duration;

use bluegreen_core::Error;

/// A platform operation, as the in-memory platform counts its calls.
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
}

impl Op {
    /// Every operation.
    pub const ALL: [Op; 12] = [
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
    pub(crate) fn error(&self, op: Op) -> Option<Error> {
        match self {
            Fault::Throttle => Some(Error::RateLimited {
                message: format!("{op:?}: request rate exceeded"),
                retry_after: Some(Duration::from_millis(200)),
            }),
            Fault::Transient => Some(Error::provider(
                "memory",
                format!("{op:?}: service unavailable"),
                true,
            )),
            Fault::Fatal(m) => Some(Error::provider("memory", format!("{op:?}: {m}"), false)),
            Fault::Hang => None,
        }
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
