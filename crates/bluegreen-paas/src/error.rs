//! The platform's own errors, and their conversion into the core's portable kinds.

use std::fmt;
use std::time::Duration;

use bluegreen_core::Error;

/// The provider's name in [`Error::Provider`].
pub(crate) const PROVIDER: &str = "paas";

/// An error answered by the Platform API: its HTTP status and its JSON `id` and
/// `message` (`{"id": "not_found", "message": "Couldn't find that app."}`).
///
/// It is kept as the source of [`Error::Provider`] and named in the message of the
/// other kinds, so that nothing the platform said is lost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: u16,
    /// The platform's error id (`not_found`, `rate_limit`, `invalid_params`, ...).
    pub id: String,
    /// The platform's message.
    pub message: String,
    /// The request, as `METHOD /path`.
    pub request: String,
    /// `Retry-After`, when the platform sent one.
    pub retry_after: Option<Duration>,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} answered {} {}: {}",
            self.request, self.status, self.id, self.message
        )
    }
}

impl std::error::Error for ApiError {}

impl From<ApiError> for Error {
    fn from(e: ApiError) -> Self {
        let said = format!("{} ({}, HTTP {})", e.message, e.id, e.status);
        match (e.status, e.id.as_str()) {
            (429, _) | (_, "rate_limit") => Error::RateLimited {
                message: said,
                retry_after: e.retry_after,
            },
            (401 | 403, _) | (_, "unauthorized" | "forbidden") => {
                Error::PermissionDenied { message: said }
            }
            (404, _) | (_, "not_found") => Error::not_found(format!("{}: {said}", e.request)),
            (409, _) | (_, "conflict") => Error::conflict(format!("{}: {said}", e.request)),
            (422, _) | (_, "invalid_params") => Error::invalid("request", said),
            (status, _) => Error::provider_source(PROVIDER, status >= 500, e),
        }
    }
}

/// A failure below HTTP (connection refused or reset, a timeout, a body that is not
/// the JSON expected).
#[derive(Debug)]
pub(crate) struct TransportError {
    pub(crate) request: String,
    pub(crate) source: reqwest::Error,
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.request, self.source)
    }
}

impl std::error::Error for TransportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

impl From<TransportError> for Error {
    fn from(e: TransportError) -> Self {
        let retryable = e.source.is_connect() || e.source.is_timeout() || e.source.is_request();
        Error::provider_source(PROVIDER, retryable, e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bluegreen_core::ErrorKind;

    fn api(status: u16, id: &str) -> ApiError {
        ApiError {
            status,
            id: id.into(),
            message: "said".into(),
            request: "GET /apps/x".into(),
            retry_after: None,
        }
    }

    #[test]
    fn kinds() {
        let cases = [
            (401, "unauthorized", ErrorKind::PermissionDenied),
            (403, "forbidden", ErrorKind::PermissionDenied),
            (404, "not_found", ErrorKind::NotFound),
            (409, "conflict", ErrorKind::Conflict),
            (422, "invalid_params", ErrorKind::Invalid),
            (429, "rate_limit", ErrorKind::RateLimited),
            (503, "unavailable", ErrorKind::Provider),
            (400, "bad_request", ErrorKind::Provider),
        ];
        for (status, id, kind) in cases {
            let e: Error = api(status, id).into();
            assert_eq!(e.kind(), kind, "{status} {id}");
            assert!(e.to_string().contains(id), "{e} names {id}");
        }
        let e: Error = api(503, "unavailable").into();
        assert!(e.is_retryable());
        let e: Error = api(400, "bad_request").into();
        assert!(!e.is_retryable());
    }
}
