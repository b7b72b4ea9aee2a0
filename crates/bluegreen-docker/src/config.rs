//! How the provider reaches its platform: connecting to the Docker daemon.

use std::time::Duration;

use bluegreen_core::Result;
use bollard::Docker;

use crate::error::docker_error;

/// Connects to the Docker daemon the way the `docker` command does (`DOCKER_HOST`,
/// else the local socket), and negotiates the API version so that older engines
/// (API 1.41, Docker 20.10) work.
///
/// The client's own request timeout is one hour, so that long builds and graceful
/// stops are not cut: the engine bounds every call itself.
///
/// A daemon that does not answer is a retryable
/// [`Error::Provider`](bluegreen_core::Error::Provider).
pub async fn connect() -> Result<Docker> {
    let docker = Docker::connect_with_local_defaults()
        .map_err(|e| docker_error("connecting to the Docker daemon", e))?
        .with_timeout(Duration::from_secs(3600));
    let docker = docker
        .negotiate_version()
        .await
        .map_err(|e| docker_error("negotiating the Docker API version", e))?;
    docker
        .ping()
        .await
        .map_err(|e| docker_error("pinging the Docker daemon", e))?;
    Ok(docker)
}
