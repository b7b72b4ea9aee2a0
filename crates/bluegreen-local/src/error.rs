//! The local provider's errors, and their one conversion into the core's kinds.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use bluegreen_core::Error;

/// The provider name in [`Error::Provider`].
pub(crate) const PROVIDER: &str = "local";

/// What goes wrong on this machine, before it becomes a core [`Error`].
#[derive(Debug)]
pub(crate) enum LocalError {
    /// Reading or writing `path`; retryable only when interrupted.
    Io { path: PathBuf, source: io::Error },
    /// A call to the operating system (binding a port), retryable.
    Os(io::Error),
    /// A program that could not start or did not keep running, not retryable.
    Failed(String),
}

impl fmt::Display for LocalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LocalError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            LocalError::Os(e) => e.fmt(f),
            LocalError::Failed(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for LocalError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LocalError::Io { source, .. } | LocalError::Os(source) => Some(source),
            LocalError::Failed(_) => None,
        }
    }
}

impl From<LocalError> for Error {
    fn from(e: LocalError) -> Error {
        let retryable = match &e {
            LocalError::Io { source, .. } => matches!(
                source.kind(),
                io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
            ),
            LocalError::Os(_) => true,
            LocalError::Failed(_) => false,
        };
        Error::Provider {
            provider: PROVIDER,
            message: e.to_string(),
            retryable,
            source: Some(Box::new(e)),
        }
    }
}

/// An I/O error on `path`, as a core error.
pub(crate) fn io_error(path: &Path, e: io::Error) -> Error {
    LocalError::Io {
        path: path.to_path_buf(),
        source: e,
    }
    .into()
}

/// A failure that retrying will not mend, as a core error.
pub(crate) fn failed(message: impl Into<String>) -> Error {
    LocalError::Failed(message.into()).into()
}

/// A failed call to the operating system, as a retryable core error.
pub(crate) fn os_error(e: io::Error) -> Error {
    LocalError::Os(e).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bluegreen_core::ErrorKind;

    #[test]
    fn kinds_and_retries() {
        let e = io_error(Path::new("/x"), io::Error::from(io::ErrorKind::Interrupted));
        assert!(e.is_retryable() && e.kind() == ErrorKind::Provider, "{e}");
        let e = io_error(
            Path::new("/x"),
            io::Error::from(io::ErrorKind::PermissionDenied),
        );
        assert!(!e.is_retryable() && e.to_string().contains("/x"), "{e}");
        assert!(os_error(io::Error::from(io::ErrorKind::AddrInUse)).is_retryable());
        let e = failed("it exited at once");
        assert!(
            !e.is_retryable() && e.to_string().contains("it exited at once"),
            "{e}"
        );
    }
}
