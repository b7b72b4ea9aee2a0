//! Conversion of the Docker client's errors into bluegreen's portable kinds.

use bluegreen_core::Error;
use bollard::errors::Error as DockerError;

/// The provider name in [`Error::Provider`].
pub(crate) const PROVIDER: &str = "docker";

/// Converts a Docker API error about `what` (`container web-production-v001-0`):
/// 404 is [`Error::NotFound`], 409 [`Error::Conflict`], 429
/// [`Error::RateLimited`], 401/403 [`Error::PermissionDenied`]; 5xx, I/O and
/// connection failures are retryable [`Error::Provider`] errors keeping the client's
/// error as their source, other failures are not retryable.
pub(crate) fn docker_error(what: impl std::fmt::Display, e: DockerError) -> Error {
    match &e {
        DockerError::DockerResponseServerError {
            status_code,
            message,
        } => match status_code {
            404 => Error::not_found(format!("{what} ({})", message.trim())),
            409 => Error::conflict(format!("{what}: {}", message.trim())),
            429 => Error::RateLimited {
                message: format!("{what}: {}", message.trim()),
                retry_after: None,
            },
            401 | 403 => Error::PermissionDenied {
                message: format!("{what}: {}", message.trim()),
            },
            s => with_source(what, *s >= 500, e),
        },
        DockerError::IOError { .. }
        | DockerError::HyperResponseError { .. }
        | DockerError::HyperLegacyError { .. }
        | DockerError::RequestTimeoutError
        | DockerError::SocketNotFoundError(_) => with_source(what, true, e),
        _ => with_source(what, false, e),
    }
}

fn with_source(what: impl std::fmt::Display, retryable: bool, e: DockerError) -> Error {
    Error::Provider {
        provider: PROVIDER,
        message: format!("{what}: {e}"),
        retryable,
        source: Some(Box::new(e)),
    }
}

/// Whether a Docker error has this HTTP status.
pub(crate) fn has_status(e: &DockerError, status: u16) -> bool {
    matches!(e, DockerError::DockerResponseServerError { status_code, .. } if *status_code == status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bluegreen_core::ErrorKind;

    fn server(status_code: u16) -> DockerError {
        DockerError::DockerResponseServerError {
            status_code,
            message: "says the daemon".into(),
        }
    }

    #[test]
    fn statuses_map_to_portable_kinds() {
        assert_eq!(docker_error("x", server(404)).kind(), ErrorKind::NotFound);
        assert_eq!(docker_error("x", server(409)).kind(), ErrorKind::Conflict);
        assert_eq!(
            docker_error("x", server(403)).kind(),
            ErrorKind::PermissionDenied
        );
        let e = docker_error("container c", server(500));
        assert_eq!(e.kind(), ErrorKind::Provider);
        assert!(e.is_retryable());
        assert!(
            std::error::Error::source(&e).is_some(),
            "the source is kept"
        );
        assert!(!docker_error("x", server(400)).is_retryable());
        assert!(docker_error("x", DockerError::RequestTimeoutError).is_retryable());
    }
}
