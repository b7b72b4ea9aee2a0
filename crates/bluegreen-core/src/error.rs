//! The one portable error type of bluegreen.

use std::fmt;
use std::time::Duration;

use crate::event::Step;

/// A boxed error from a provider's own client library.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The result type of every bluegreen operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong, in portable kinds.
///
/// Providers keep their own private errors and convert at their boundary, keeping the
/// original as the source of [`Error::Provider`]. Match on [`Error::kind`] to see
/// through the step wrapper that the engine adds.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed: `field` names the offending field, `reason` the problem.
    /// Returned before any platform call.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field at fault, as a path (`size`, `strategy.steps[1].weight`).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A named resource does not exist.
    #[error("{what} not found")]
    NotFound {
        /// The missing resource (`group web-production-v003`).
        what: String,
    },
    /// The request conflicts with the platform's current state.
    #[error("conflict: {message}")]
    Conflict {
        /// What conflicts.
        message: String,
    },
    /// Another deployment holds the app's lock.
    #[error("{app} is locked by deployment {holder}")]
    Locked {
        /// The app, as `name.environment`.
        app: String,
        /// The holder of the lock.
        holder: String,
    },
    /// Instances did not become or stay healthy, or a check failed.
    #[error("unhealthy: {message}")]
    Unhealthy {
        /// What was unhealthy and why.
        message: String,
    },
    /// A bounded wait ran out.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// The bound that passed.
        after: Duration,
    },
    /// The platform throttled the request. Retryable.
    #[error("rate limited: {message}")]
    RateLimited {
        /// The platform's message.
        message: String,
        /// How long the platform asked to wait, when it said.
        retry_after: Option<Duration>,
    },
    /// The credentials do not allow the operation.
    #[error("permission denied: {message}")]
    PermissionDenied {
        /// The platform's message.
        message: String,
    },
    /// The provider cannot do this (a source kind, weighted routing, ...).
    #[error("not supported: {what}")]
    NotSupported {
        /// What is not supported.
        what: String,
    },
    /// Any other provider failure, with the provider's own error kept.
    #[error("{provider}: {message}")]
    Provider {
        /// The provider's name (`docker`, `aws`, `memory`).
        provider: &'static str,
        /// A readable message (for AWS, with the error code).
        message: String,
        /// Whether trying again may succeed (a 5xx, a reset connection).
        retryable: bool,
        /// The provider's own error.
        #[source]
        source: Option<BoxError>,
    },
    /// A deployment step failed. `rolled_back` tells whether traffic was restored.
    #[error("{step} failed{}: {source}", if *rolled_back { " (reverted)" } else { "" })]
    Step {
        /// The step that failed.
        step: Step,
        /// Whether the engine rolled the deployment back.
        rolled_back: bool,
        /// The cause.
        #[source]
        source: Box<Error>,
    },
}

/// The portable kind of an [`Error`], seen through [`Error::Step`].
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// See [`Error::Invalid`].
    Invalid,
    /// See [`Error::NotFound`].
    NotFound,
    /// See [`Error::Conflict`].
    Conflict,
    /// See [`Error::Locked`].
    Locked,
    /// See [`Error::Unhealthy`].
    Unhealthy,
    /// See [`Error::Timeout`].
    Timeout,
    /// See [`Error::RateLimited`].
    RateLimited,
    /// See [`Error::PermissionDenied`].
    PermissionDenied,
    /// See [`Error::NotSupported`].
    NotSupported,
    /// See [`Error::Provider`].
    Provider,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl Error {
    /// An [`Error::Invalid`] for `field`.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// An [`Error::NotFound`].
    pub fn not_found(what: impl Into<String>) -> Self {
        Error::NotFound { what: what.into() }
    }

    /// An [`Error::Conflict`].
    pub fn conflict(message: impl Into<String>) -> Self {
        Error::Conflict {
            message: message.into(),
        }
    }

    /// An [`Error::Unhealthy`].
    pub fn unhealthy(message: impl Into<String>) -> Self {
        Error::Unhealthy {
            message: message.into(),
        }
    }

    /// An [`Error::NotSupported`].
    pub fn not_supported(what: impl Into<String>) -> Self {
        Error::NotSupported { what: what.into() }
    }

    /// An [`Error::Provider`] without a source.
    pub fn provider(provider: &'static str, message: impl Into<String>, retryable: bool) -> Self {
        Error::Provider {
            provider,
            message: message.into(),
            retryable,
            source: None,
        }
    }

    /// An [`Error::Provider`] that keeps the provider's own error.
    pub fn provider_source(
        provider: &'static str,
        retryable: bool,
        source: impl Into<BoxError>,
    ) -> Self {
        let source = source.into();
        Error::Provider {
            provider,
            message: source.to_string(),
            retryable,
            source: Some(source),
        }
    }

    /// The portable kind, seen through [`Error::Step`].
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Invalid { .. } => ErrorKind::Invalid,
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::Conflict { .. } => ErrorKind::Conflict,
            Error::Locked { .. } => ErrorKind::Locked,
            Error::Unhealthy { .. } => ErrorKind::Unhealthy,
            Error::Timeout { .. } => ErrorKind::Timeout,
            Error::RateLimited { .. } => ErrorKind::RateLimited,
            Error::PermissionDenied { .. } => ErrorKind::PermissionDenied,
            Error::NotSupported { .. } => ErrorKind::NotSupported,
            Error::Provider { .. } => ErrorKind::Provider,
            Error::Step { source, .. } => source.kind(),
        }
    }

    /// Whether trying the same idempotent call again may succeed: throttling and
    /// transient provider failures. A timeout of a bounded wait is not retryable.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::RateLimited { .. } => true,
            Error::Provider { retryable, .. } => *retryable,
            Error::Step { source, .. } => source.is_retryable(),
            _ => false,
        }
    }

    /// The step a deployment failed at, when this error comes from the engine.
    pub fn step(&self) -> Option<Step> {
        match self {
            Error::Step { step, .. } => Some(*step),
            _ => None,
        }
    }

    /// Whether the engine rolled the deployment back after this error.
    pub fn rolled_back(&self) -> bool {
        matches!(
            self,
            Error::Step {
                rolled_back: true,
                ..
            }
        )
    }

    /// How long the platform asked to wait before the next try, when it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::RateLimited { retry_after, .. } => *retry_after,
            Error::Step { source, .. } => source.retry_after(),
            _ => None,
        }
    }

    pub(crate) fn at(self, step: Step, rolled_back: bool) -> Self {
        match self {
            // keep the innermost step: it is where things went wrong
            Error::Step { .. } => self,
            other => Error::Step {
                step,
                rolled_back,
                source: Box::new(other),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_and_retry_see_through_steps() {
        let e = Error::RateLimited {
            message: "slow down".into(),
            retry_after: Some(Duration::from_secs(2)),
        }
        .at(Step::Launch, true);
        assert_eq!(e.kind(), ErrorKind::RateLimited);
        assert!(e.is_retryable());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(2)));
        assert_eq!(e.step(), Some(Step::Launch));
        assert!(e.rolled_back());
        assert_eq!(
            e.to_string(),
            "launch failed (reverted): rate limited: slow down"
        );
    }

    #[test]
    fn invalid_names_the_field() {
        let e = Error::invalid("size", "must be at least 1");
        assert_eq!(e.to_string(), "invalid size: must be at least 1");
        assert!(!e.is_retryable());
    }
}
