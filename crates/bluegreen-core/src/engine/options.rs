//! The engine's policy: bounds, retention and drain.

use std::time::Duration;

use crate::error::{Error, Result};

/// How the engine deploys. Every wait has a bound here.
///
/// ```
/// use std::time::Duration;
/// use bluegreen_core::EngineOptions;
/// let options = EngineOptions::default()
///     .with_keep(2)
///     .with_health_timeout(Duration::from_secs(120));
/// assert_eq!(options.keep, 2);
/// ```
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq)]
pub struct EngineOptions {
    /// How long a new group may take until every instance is healthy. Default 5 min.
    pub health_timeout: Duration,
    /// How often health is polled while waiting. Default 1 s.
    pub poll_interval: Duration,
    /// How long the router may take to report the new group serving after a switch.
    /// Default 60 s.
    pub confirm_timeout: Duration,
    /// The bound of any one platform call (launch, list, destroy, set routes, ...).
    /// Default 5 min.
    pub call_timeout: Duration,
    /// The bound of preparing an image (a build or an AMI bake). Default 1 h.
    pub prepare_timeout: Duration,
    /// How long requests in flight on a group that loses its traffic may take before
    /// the group is destroyed. Default 10 s.
    pub drain: Duration,
    /// How many earlier groups stay warm (launched, attached, without traffic) for an
    /// instant rollback. Default 1.
    pub keep: usize,
    /// Scale the groups kept warm down to this many instances (0 allowed) once the
    /// switch is done, and back to their release's size, waiting until every
    /// instance is healthy and the router says so, before a rollback moves traffic
    /// to one. `None` (the default) keeps them at full size. Needs a fleet that
    /// declares [`FleetCapabilities::scaling`](crate::FleetCapabilities::scaling).
    /// A rollback to a scaled-in group takes as long as its new instances take to
    /// become healthy, instead of a route change.
    pub warm_size: Option<u32>,
    /// Keep a new group that failed (for debugging) instead of destroying it.
    /// Default false.
    pub keep_failed: bool,
    /// How many of the newest images are kept besides those in use (the live and
    /// warm groups' images and every release of the live group's history, which a
    /// rollback may relaunch). Default 3.
    pub retain_images: usize,
    /// The deployment lock's lease; it is renewed at a third of it. Default 60 s.
    pub lock_lease: Duration,
    /// How long to wait for another deployment's lock (`None`: fail at once with
    /// [`Error::Locked`]). Default `None`.
    pub lock_wait: Option<Duration>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            health_timeout: Duration::from_secs(300),
            poll_interval: Duration::from_secs(1),
            confirm_timeout: Duration::from_secs(60),
            call_timeout: Duration::from_secs(300),
            prepare_timeout: Duration::from_secs(3600),
            drain: Duration::from_secs(10),
            keep: 1,
            warm_size: None,
            keep_failed: false,
            retain_images: 3,
            lock_lease: Duration::from_secs(60),
            lock_wait: None,
        }
    }
}

macro_rules! setter {
    ($(#[$doc:meta])* $name:ident, $field:ident: $ty:ty) => {
        $(#[$doc])*
        pub fn $name(mut self, $field: $ty) -> Self {
            self.$field = $field;
            self
        }
    };
}

impl EngineOptions {
    setter!(
        /// Sets [`EngineOptions::health_timeout`].
        with_health_timeout, health_timeout: Duration);
    setter!(
        /// Sets [`EngineOptions::poll_interval`].
        with_poll_interval, poll_interval: Duration);
    setter!(
        /// Sets [`EngineOptions::confirm_timeout`].
        with_confirm_timeout, confirm_timeout: Duration);
    setter!(
        /// Sets [`EngineOptions::call_timeout`].
        with_call_timeout, call_timeout: Duration);
    setter!(
        /// Sets [`EngineOptions::prepare_timeout`].
        with_prepare_timeout, prepare_timeout: Duration);
    setter!(
        /// Sets [`EngineOptions::drain`].
        with_drain, drain: Duration);
    setter!(
        /// Sets [`EngineOptions::keep`].
        with_keep, keep: usize);
    setter!(
        /// Sets [`EngineOptions::warm_size`].
        with_warm_size, warm_size: Option<u32>);
    setter!(
        /// Sets [`EngineOptions::keep_failed`].
        with_keep_failed, keep_failed: bool);
    setter!(
        /// Sets [`EngineOptions::retain_images`].
        with_retain_images, retain_images: usize);
    setter!(
        /// Sets [`EngineOptions::lock_lease`].
        with_lock_lease, lock_lease: Duration);
    setter!(
        /// Sets [`EngineOptions::lock_wait`].
        with_lock_wait, lock_wait: Option<Duration>);

    /// Checks the bounds: every timeout and the lease above zero, the poll interval
    /// below the health timeout.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("options.health_timeout", self.health_timeout),
            ("options.poll_interval", self.poll_interval),
            ("options.confirm_timeout", self.confirm_timeout),
            ("options.call_timeout", self.call_timeout),
            ("options.prepare_timeout", self.prepare_timeout),
            ("options.lock_lease", self.lock_lease),
        ];
        for (field, value) in positive {
            if value.is_zero() {
                return Err(Error::invalid(field, "must be more than zero"));
            }
        }
        if self.poll_interval > self.health_timeout {
            return Err(Error::invalid(
                "options.poll_interval",
                "must not be longer than options.health_timeout",
            ));
        }
        Ok(())
    }
}
