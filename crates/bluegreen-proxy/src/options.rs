//! Options of the proxy and of its active health checks.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

/// An IP network: an address and a prefix length (`10.0.0.0/8`, `::1/128`); a
/// bare address is a network of one.
///
/// ```
/// use bluegreen_proxy::IpNetwork;
/// let lb: IpNetwork = "10.1.0.0/16".parse().unwrap();
/// assert!(lb.contains("10.1.2.3".parse().unwrap()));
/// assert!(!lb.contains("10.2.0.1".parse().unwrap()));
/// assert!("127.0.0.1".parse::<IpNetwork>().unwrap().contains("127.0.0.1".parse().unwrap()));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpNetwork {
    address: IpAddr,
    prefix: u8,
}

impl IpNetwork {
    /// The network of `address` with its first `prefix` bits, or `None` when
    /// `prefix` is longer than the address.
    pub fn new(address: IpAddr, prefix: u8) -> Option<Self> {
        let max = if address.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(IpNetwork { address, prefix })
    }

    /// Whether `ip` is in the network (an IPv4-mapped IPv6 address counts as
    /// its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.address, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }

    /// Whether `ip` is in any of `networks`.
    pub(crate) fn any_contains(networks: &[IpNetwork], ip: IpAddr) -> bool {
        networks.iter().any(|n| n.contains(ip))
    }
}

impl std::str::FromStr for IpNetwork {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let bad = || format!("`{s}` is neither an IP address nor an address/prefix");
        let (address, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let address: IpAddr = address.parse().map_err(|_| bad())?;
        let prefix = match prefix {
            Some(p) => p.parse().map_err(|_| bad())?,
            None if address.is_ipv4() => 32,
            None => 128,
        };
        IpNetwork::new(address, prefix).ok_or_else(bad)
    }
}

impl std::fmt::Display for IpNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

/// How the proxy checks its backends' health.
///
/// A backend starts *unknown* and gets no request until a check passes; the first
/// check runs as soon as the backend is attached.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheckOptions {
    /// The path asked with `GET`; any 2xx or 3xx status passes. Default `/health`.
    pub path: String,
    /// The pause between two checks of one backend. Default 1 s.
    pub interval: Duration,
    /// How long one check may take. Default 2 s.
    pub timeout: Duration,
    /// Consecutive passes that make an unhealthy backend healthy again. Default 1.
    pub healthy_threshold: u32,
    /// Consecutive failures that make a healthy backend unhealthy. Default 2.
    pub unhealthy_threshold: u32,
}

impl Default for HealthCheckOptions {
    fn default() -> Self {
        HealthCheckOptions {
            path: "/health".into(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
            healthy_threshold: 1,
            unhealthy_threshold: 2,
        }
    }
}

impl HealthCheckOptions {
    /// Sets [`HealthCheckOptions::path`].
    pub fn with_path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }

    /// Sets [`HealthCheckOptions::interval`].
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Sets [`HealthCheckOptions::timeout`].
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets both thresholds (each at least 1).
    pub fn with_thresholds(mut self, healthy: u32, unhealthy: u32) -> Self {
        self.healthy_threshold = healthy.max(1);
        self.unhealthy_threshold = unhealthy.max(1);
        self
    }
}

/// Options of a [`Proxy`](crate::Proxy).
///
/// ```
/// use std::time::Duration;
/// use bluegreen_proxy::ProxyOptions;
/// let options = ProxyOptions::default().with_hold_timeout(Duration::from_secs(5));
/// assert_eq!(options.max_held, 10_000);
/// ```
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyOptions {
    /// How long a request may wait while its app is paused or has no healthy backend,
    /// before it gets a 503. Default 30 s.
    pub hold_timeout: Duration,
    /// How many requests may wait at once; past it, a request gets a 503 at once.
    /// Default 10 000.
    pub max_held: usize,
    /// Active health checks.
    pub health: HealthCheckOptions,
    /// The app that gets requests whose `Host` is no known app. `None` (the default)
    /// makes the first app the proxy learns of the default one.
    pub default_host: Option<String>,
    /// How long shutdown waits for requests in flight. Default 30 s.
    pub shutdown_timeout: Duration,
    /// How long requests in flight on a group that lost its traffic (or was
    /// detached) may go on; then they are cut. Default 30 s.
    pub drain_timeout: Duration,
    /// How long an idle keep-alive connection to a backend is kept. Default 60 s.
    /// Keep it below the backends' own idle timeout: a connection the backend
    /// closes while idle is noticed when it is next taken, but one it closes at
    /// that very moment fails the request sent on it (sent again on a new
    /// connection when it is idempotent, else answered 502).
    pub pool_idle_timeout: Duration,
    /// The most idle HTTP/1 connections kept per backend, over all serving
    /// threads (each thread reuses the connections it opened); past it the
    /// thread's own oldest closes, or another thread's oldest when it has no
    /// other. 0 keeps none: every request opens a connection. Default 256.
    pub pool_max_idle: usize,
    /// The address that [preview listeners](crate::Proxy::preview_address) bind,
    /// one port per attached group; `None` gives no previews. Default `127.0.0.1`:
    /// a group without traffic is reachable from this machine only.
    pub preview_bind: Option<IpAddr>,
    /// How long a new connection may take to deliver its first request's head:
    /// protocol detection (HTTP/1.1 or the HTTP/2 preface), the TLS handshake and
    /// the request line and headers. Also bounds every HTTP/1.1 request head once
    /// its first byte came. Past it the connection is closed without a response.
    /// Default 30 s.
    pub header_timeout: Duration,
    /// How long a connection with no request in progress is kept open: between
    /// two HTTP/1.1 requests (keep-alive), or an HTTP/2 connection with no stream
    /// open. What the client sends meanwhile (HTTP/2 PING or SETTINGS) does not
    /// extend it. Past it the connection is closed. Default 60 s.
    pub idle_timeout: Duration,
    /// How long a request body may stall: the longest wait for the next part of
    /// a body the proxy is forwarding. Past it the request is answered 408 (the
    /// backend's request is abandoned) and not counted against the group.
    /// Default 60 s.
    pub body_timeout: Duration,
    /// How long sending to a client may stall: the longest wait for a client
    /// that reads nothing. A connection whose socket stays full that long is
    /// closed, and its backend requests and connections are dropped; an HTTP/2
    /// stream whose response data waits that long for the stream's (or the
    /// connection's) flow-control window with no data moving on that stream is
    /// reset (RST_STREAM, CANCEL) and its backend request released, while the
    /// connection's other streams go on. Default 60 s.
    pub send_timeout: Duration,
    /// How long the proxy waits for a backend's response headers once the
    /// request is sent. Past it the client gets a 504, counted against the group,
    /// and the backend connection is closed. A request waiting on a backend that
    /// turns unhealthy stops waiting at once: an idempotent one (`GET`, `HEAD`,
    /// `OPTIONS`) goes to another healthy backend, any other gets a 504.
    /// Default 60 s.
    pub upstream_timeout: Duration,
    /// The interval of HTTP/2 PINGs to clients, which find a client that is gone
    /// while requests are in progress; `None` sends none. Default 20 s.
    pub http2_keep_alive_interval: Option<Duration>,
    /// How long an HTTP/2 PING may wait for its answer before the connection is
    /// closed. Default 20 s.
    pub http2_keep_alive_timeout: Duration,
    /// Clients that may ask for a group by the [`X-Bluegreen-Preview`](crate::PREVIEW_HEADER)
    /// header on the proxy's own listener. Default none: previews are served on
    /// the preview listeners only, and the header is removed from every request
    /// before it is forwarded.
    pub preview_header_from: Vec<IpNetwork>,
    /// Load balancers or proxies in front of this one, whose `X-Forwarded-For`
    /// (appended to), `X-Forwarded-Proto`, `X-Forwarded-Host` and `Forwarded`
    /// headers are kept. Default none: for every client these headers are set by
    /// the proxy (`X-Forwarded-For` to the client's address, `X-Forwarded-Proto`
    /// to `http` or `https`, `X-Forwarded-Host` to the request's host) and a
    /// client's `Forwarded` is removed.
    pub trusted_proxies: Vec<IpNetwork>,
    /// A file that keeps the routing state across restarts: every app's attached
    /// groups (their backends), route table, pause and the default app. A proxy
    /// made with [`Proxy::restore`](crate::Proxy::restore) reads it on start and
    /// rewrites it (a new file renamed over the old one, mode 0600) after every
    /// change; [`Proxy::new`](crate::Proxy::new) neither reads nor writes it.
    /// Counters and health are not kept: they start afresh. Default none.
    pub state_file: Option<std::path::PathBuf>,
    /// The header that pins a request to a [route generation](crate::pin), so that
    /// one user request crossing several apps through the proxy sees one version
    /// of each. Default [`bluegreen-route`](crate::ROUTE_HEADER); `None` turns
    /// pinning off (every request is routed by the current tables, and the header
    /// is neither read, stamped nor removed).
    pub route_header: Option<http::HeaderName>,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        ProxyOptions {
            hold_timeout: Duration::from_secs(30),
            max_held: 10_000,
            health: HealthCheckOptions::default(),
            default_host: None,
            shutdown_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(30),
            pool_idle_timeout: Duration::from_secs(60),
            pool_max_idle: 256,
            preview_bind: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            header_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            upstream_timeout: Duration::from_secs(60),
            http2_keep_alive_interval: Some(Duration::from_secs(20)),
            http2_keep_alive_timeout: Duration::from_secs(20),
            preview_header_from: Vec::new(),
            trusted_proxies: Vec::new(),
            state_file: None,
            route_header: Some(http::HeaderName::from_static(crate::pin::ROUTE_HEADER)),
        }
    }
}

impl ProxyOptions {
    /// Sets [`ProxyOptions::hold_timeout`].
    pub fn with_hold_timeout(mut self, timeout: Duration) -> Self {
        self.hold_timeout = timeout;
        self
    }

    /// Sets [`ProxyOptions::max_held`].
    pub fn with_max_held(mut self, max: usize) -> Self {
        self.max_held = max;
        self
    }

    /// Sets [`ProxyOptions::health`].
    pub fn with_health(mut self, health: HealthCheckOptions) -> Self {
        self.health = health;
        self
    }

    /// Sets [`ProxyOptions::default_host`].
    pub fn with_default_host(mut self, host: impl Into<String>) -> Self {
        self.default_host = Some(host.into());
        self
    }

    /// Sets [`ProxyOptions::preview_bind`].
    pub fn with_preview_bind(mut self, ip: Option<IpAddr>) -> Self {
        self.preview_bind = ip;
        self
    }

    /// Sets [`ProxyOptions::pool_max_idle`] and
    /// [`ProxyOptions::pool_idle_timeout`].
    pub fn with_pool(mut self, max_idle: usize, idle_timeout: Duration) -> Self {
        self.pool_max_idle = max_idle;
        self.pool_idle_timeout = idle_timeout;
        self
    }

    /// Sets [`ProxyOptions::drain_timeout`].
    pub fn with_drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// Sets [`ProxyOptions::shutdown_timeout`].
    pub fn with_shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Sets [`ProxyOptions::preview_header_from`].
    pub fn with_preview_header_from(mut self, networks: Vec<IpNetwork>) -> Self {
        self.preview_header_from = networks;
        self
    }

    /// Sets [`ProxyOptions::trusted_proxies`].
    pub fn with_trusted_proxies(mut self, networks: Vec<IpNetwork>) -> Self {
        self.trusted_proxies = networks;
        self
    }

    /// Sets [`ProxyOptions::state_file`].
    pub fn with_state_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.state_file = Some(path.into());
        self
    }

    /// Sets [`ProxyOptions::header_timeout`].
    pub fn with_header_timeout(mut self, timeout: Duration) -> Self {
        self.header_timeout = timeout;
        self
    }

    /// Sets [`ProxyOptions::idle_timeout`].
    pub fn with_idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Sets [`ProxyOptions::body_timeout`].
    pub fn with_body_timeout(mut self, timeout: Duration) -> Self {
        self.body_timeout = timeout;
        self
    }

    /// Sets [`ProxyOptions::send_timeout`].
    pub fn with_send_timeout(mut self, timeout: Duration) -> Self {
        self.send_timeout = timeout;
        self
    }

    /// Sets [`ProxyOptions::http2_keep_alive_interval`] and
    /// [`ProxyOptions::http2_keep_alive_timeout`].
    pub fn with_http2_keep_alive(mut self, interval: Option<Duration>, timeout: Duration) -> Self {
        self.http2_keep_alive_interval = interval;
        self.http2_keep_alive_timeout = timeout;
        self
    }

    /// Sets [`ProxyOptions::upstream_timeout`].
    pub fn with_upstream_timeout(mut self, timeout: Duration) -> Self {
        self.upstream_timeout = timeout;
        self
    }

    /// Sets [`ProxyOptions::route_header`].
    pub fn with_route_header(mut self, name: Option<http::HeaderName>) -> Self {
        self.route_header = name;
        self
    }
}
