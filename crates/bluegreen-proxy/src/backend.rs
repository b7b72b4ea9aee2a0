//! Backends and their active health checks.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Weak};

use bluegreen_core::{Error, Result};
use bytes::Bytes;
use http::uri::Authority;
use http::{Request, Uri};
use http_body_util::Empty;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};

use crate::options::HealthCheckOptions;
use crate::pool::{Pool, PoolLimits};

/// One backend of a group, as given to the proxy: where to reach it and which
/// instance it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct BackendSpec {
    /// `host:port`, reached over plain HTTP.
    pub address: String,
    /// The instance id, for reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

impl BackendSpec {
    /// A backend at `address` (`127.0.0.1:49153`).
    pub fn new(address: impl Into<String>) -> Self {
        BackendSpec {
            address: address.into(),
            instance: None,
        }
    }

    /// Names the instance behind the backend.
    pub fn with_instance(mut self, instance: impl Into<String>) -> Self {
        self.instance = Some(instance.into());
        self
    }

    /// Parses the address, or [`Error::Invalid`] naming `field`: `host:port`
    /// (an `http://` prefix and a trailing `/` are allowed), with no user info,
    /// whose host is an IP address or a DNS name. The instance id, when given, is
    /// 1 to 128 printable ASCII characters.
    pub(crate) fn authority(&self, field: &str) -> Result<Authority> {
        if let Some(instance) = &self.instance {
            let instance_field = field
                .strip_suffix(".address")
                .map(|f| format!("{f}.instance"))
                .unwrap_or_else(|| "instance".into());
            if instance.is_empty()
                || instance.len() > 128
                || !instance.bytes().all(|b| b.is_ascii_graphic())
            {
                return Err(Error::invalid(
                    instance_field,
                    format!("{instance:?} is not 1 to 128 printable ASCII characters"),
                ));
            }
        }
        let address = self
            .address
            .strip_prefix("http://")
            .unwrap_or(&self.address)
            .trim_end_matches('/');
        if address.contains('@') {
            // never echoed: it holds credentials
            return Err(Error::invalid(
                field,
                "has user info (`user:password@`); give host:port only",
            ));
        }
        let authority: Authority = address
            .parse()
            .map_err(|_| Error::invalid(field, format!("`{}` is not a host:port", self.address)))?;
        let host = authority.host();
        let ip = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
            .parse::<std::net::IpAddr>()
            .is_ok();
        let name = !host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
        if !(ip || name) {
            return Err(Error::invalid(
                field,
                format!(
                    "`{}` has no IP address or DNS name as its host",
                    self.address
                ),
            ));
        }
        if authority.port_u16().is_none() {
            return Err(Error::invalid(
                field,
                format!("`{}` has no port", self.address),
            ));
        }
        Ok(authority)
    }
}

/// A backend's health as the proxy's own checks see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum BackendHealth {
    /// Not checked yet: gets no request.
    Unknown,
    /// Passing its checks.
    Healthy,
    /// Failing its checks, or refused a connection since its last passing check.
    Unhealthy,
}

impl BackendHealth {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => BackendHealth::Healthy,
            2 => BackendHealth::Unhealthy,
            _ => BackendHealth::Unknown,
        }
    }
}

/// Wakes requests that wait for a change: routes, pause, health.
pub(crate) type Epoch = tokio::sync::watch::Sender<u64>;

pub(crate) fn bump(epoch: &Epoch) {
    epoch.send_modify(|v| *v = v.wrapping_add(1));
}

/// A backend the proxy sends requests to.
pub(crate) struct Backend {
    pub(crate) spec: BackendSpec,
    pub(crate) authority: Authority,
    health: AtomicU8,
    epoch: Arc<Epoch>,
    /// Idle HTTP/1 connections to it, shared by every client connection.
    pub(crate) pool: Pool,
}

pub(crate) type CheckClient = Client<HttpConnector, Empty<Bytes>>;

pub(crate) fn check_client() -> CheckClient {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http()
}

impl Backend {
    /// A backend whose checks start at once and stop when it is dropped; its
    /// idle connections are swept after each check.
    pub(crate) fn start(
        spec: BackendSpec,
        authority: Authority,
        epoch: Arc<Epoch>,
        client: CheckClient,
        options: HealthCheckOptions,
        pool: PoolLimits,
    ) -> Arc<Backend> {
        let backend = Arc::new(Backend {
            spec,
            authority,
            health: AtomicU8::new(0),
            epoch,
            pool: Pool::new(pool),
        });
        tokio::spawn(check_loop(Arc::downgrade(&backend), client, options));
        backend
    }

    pub(crate) fn health(&self) -> BackendHealth {
        BackendHealth::from_u8(self.health.load(Ordering::Acquire))
    }

    pub(crate) fn is_healthy(&self) -> bool {
        self.health.load(Ordering::Acquire) == 1
    }

    fn set(&self, health: BackendHealth) {
        let v = match health {
            BackendHealth::Unknown => 0,
            BackendHealth::Healthy => 1,
            BackendHealth::Unhealthy => 2,
        };
        if self.health.swap(v, Ordering::AcqRel) != v {
            tracing::info!(backend = %self.authority, ?health, "backend health changed");
            bump(&self.epoch);
        }
    }

    /// A connection to the backend failed: no new request goes to it until a check
    /// passes again.
    pub(crate) fn connection_failed(&self) {
        self.set(BackendHealth::Unhealthy);
    }
}

async fn check_once(
    client: &CheckClient,
    authority: &Authority,
    options: &HealthCheckOptions,
) -> bool {
    let uri = match Uri::builder()
        .scheme("http")
        .authority(authority.clone())
        .path_and_query(options.path.as_str())
        .build()
    {
        Ok(uri) => uri,
        Err(_) => return false,
    };
    let request = match Request::get(uri)
        .header(http::header::USER_AGENT, "bluegreen-proxy-health")
        .body(Empty::new())
    {
        Ok(r) => r,
        Err(_) => return false,
    };
    match tokio::time::timeout(options.timeout, client.request(request)).await {
        Ok(Ok(response)) => {
            let status = response.status();
            status.is_success() || status.is_redirection()
        }
        _ => false,
    }
}

async fn check_loop(backend: Weak<Backend>, client: CheckClient, options: HealthCheckOptions) {
    let mut passes = 0u32;
    let mut failures = 0u32;
    loop {
        let Some(authority) = backend.upgrade().map(|b| b.authority.clone()) else {
            return;
        };
        let ok = check_once(&client, &authority, &options).await;
        let Some(b) = backend.upgrade() else {
            return;
        };
        if ok {
            passes += 1;
            failures = 0;
            if b.health() != BackendHealth::Healthy && passes >= options.healthy_threshold {
                b.set(BackendHealth::Healthy);
            }
        } else {
            failures += 1;
            passes = 0;
            match b.health() {
                BackendHealth::Healthy if failures >= options.unhealthy_threshold => {
                    b.set(BackendHealth::Unhealthy)
                }
                BackendHealth::Unknown => b.set(BackendHealth::Unhealthy),
                _ => {}
            }
        }
        b.pool.sweep();
        drop(b);
        tokio::time::sleep(options.interval).await;
    }
}
