//! `bluegreen-proxy`: the reverse proxy and its admin API.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use bluegreen_proxy::{
    admin, AdminAddr, AdminListener, AdminToken, HealthCheckOptions, IpNetwork, Proxy,
    ProxyOptions, TlsConfig,
};
use clap::Parser;
use tokio::net::TcpListener;

/// A reverse proxy that moves traffic between groups of backends with no failed
/// request, driven by a JSON admin API.
#[derive(Parser)]
#[command(name = "bluegreen-proxy", version)]
struct Args {
    /// Where clients connect (HTTP/1.1 and h2c, or TLS with --tls-cert/--tls-key).
    #[arg(long, env = "BLUEGREEN_PROXY_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Where the admin API listens: ip:port or unix:/path.
    #[arg(long, env = "BLUEGREEN_PROXY_ADMIN", default_value = admin::DEFAULT_ADMIN_ADDR)]
    admin: AdminAddr,
    /// Allow the admin API on an address beyond loopback.
    #[arg(long, env = "BLUEGREEN_PROXY_ADMIN_ALLOW_REMOTE")]
    admin_allow_remote: bool,
    /// A file holding the admin token, readable by its owner only (mode 0600 or
    /// 0400; a Docker secret needs `mode=0400`).
    #[arg(
        long,
        env = "BLUEGREEN_PROXY_TOKEN_FILE",
        conflicts_with = "admin_token"
    )]
    admin_token_file: Option<PathBuf>,
    /// The admin token itself (prefer the file or the environment).
    #[arg(long, env = "BLUEGREEN_PROXY_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// A PEM certificate chain: serve TLS (ALPN h2 and http/1.1).
    #[arg(long, env = "BLUEGREEN_PROXY_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "BLUEGREEN_PROXY_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// How long a request waits while its app is paused or has no healthy backend
    /// (e.g. `30s`, `500ms`).
    #[arg(long, env = "BLUEGREEN_PROXY_HOLD_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    hold_timeout: Duration,
    /// How many requests may wait at once.
    #[arg(long, env = "BLUEGREEN_PROXY_MAX_HELD", default_value_t = 10_000)]
    max_held: usize,
    /// The app that gets requests for unknown hosts (default: the first app added).
    #[arg(long, env = "BLUEGREEN_PROXY_DEFAULT_APP")]
    default_app: Option<String>,
    /// The health check path of backends.
    #[arg(long, env = "BLUEGREEN_PROXY_HEALTH_PATH", default_value = "/health")]
    health_path: String,
    /// The pause between two health checks of a backend.
    #[arg(long, env = "BLUEGREEN_PROXY_HEALTH_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    health_interval: Duration,
    /// How long one health check may take.
    #[arg(long, env = "BLUEGREEN_PROXY_HEALTH_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    health_timeout: Duration,
    /// How long requests in flight on a group that lost its traffic may go on
    /// before they are cut.
    #[arg(long, env = "BLUEGREEN_PROXY_DRAIN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    drain_timeout: Duration,
    /// How long a new connection may take to deliver its first request's head
    /// (protocol detection, TLS handshake, request line and headers); also bounds
    /// every HTTP/1.1 request head.
    #[arg(long, env = "BLUEGREEN_PROXY_HEADER_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    header_timeout: Duration,
    /// How long a client connection with no request in progress stays open
    /// (HTTP/1.1 keep-alive, HTTP/2 with no stream).
    #[arg(long, env = "BLUEGREEN_PROXY_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    idle_timeout: Duration,
    /// The longest wait for the next part of a request body (then 408).
    #[arg(long, env = "BLUEGREEN_PROXY_BODY_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    body_timeout: Duration,
    /// The longest wait for a client that reads nothing of its response (then
    /// the connection closes; an HTTP/2 stream stuck on its flow-control window
    /// is reset alone).
    #[arg(long, env = "BLUEGREEN_PROXY_SEND_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    send_timeout: Duration,
    /// How long to wait for a backend's response headers (then 504).
    #[arg(long, env = "BLUEGREEN_PROXY_UPSTREAM_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    upstream_timeout: Duration,
    /// The interval of HTTP/2 PINGs to clients (`off` for none).
    #[arg(long, env = "BLUEGREEN_PROXY_HTTP2_KEEP_ALIVE", default_value = "20s", value_parser = parse_optional_duration)]
    http2_keep_alive: OptionalDuration,
    /// How long an HTTP/2 PING may wait for its answer.
    #[arg(long, env = "BLUEGREEN_PROXY_HTTP2_KEEP_ALIVE_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    http2_keep_alive_timeout: Duration,
    /// How long shutdown waits for requests in flight.
    #[arg(long, env = "BLUEGREEN_PROXY_SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    shutdown_timeout: Duration,
    /// The address that preview listeners bind (one port per attached group,
    /// serving that group alone), or `off` for no previews.
    #[arg(long, env = "BLUEGREEN_PROXY_PREVIEW_BIND", default_value = "127.0.0.1", value_parser = parse_preview_bind)]
    preview_bind: PreviewBind,
    /// Networks (`10.0.0.0/8`, `127.0.0.1`, comma-separated) whose clients may
    /// ask for a group by the `X-Bluegreen-Preview` header on --listen (default:
    /// none; previews are on the preview listeners).
    #[arg(
        long,
        env = "BLUEGREEN_PROXY_PREVIEW_HEADER_FROM",
        value_delimiter = ','
    )]
    preview_header_from: Vec<IpNetwork>,
    /// Load balancers in front of the proxy (networks, comma-separated) whose
    /// X-Forwarded-For/-Proto/-Host and Forwarded headers are kept (default: none;
    /// the proxy sets them for every client).
    #[arg(long, env = "BLUEGREEN_PROXY_TRUSTED_PROXIES", value_delimiter = ',')]
    trusted_proxies: Vec<IpNetwork>,
    /// A file that keeps the routing state (apps, groups, route tables) across
    /// restarts: read on start, rewritten (mode 0600) after every change. A file
    /// that does not read is an error at start.
    #[arg(long, env = "BLUEGREEN_PROXY_STATE_FILE")]
    state_file: Option<PathBuf>,
    /// Threads that serve client connections, each with its own event loop
    /// (default: one per core).
    #[arg(long, env = "BLUEGREEN_PROXY_THREADS")]
    threads: Option<usize>,
    /// The header that pins a request to a route generation, so that a user
    /// request crossing several apps through the proxy sees one version of each
    /// (apps forward it on their calls to each other), or `off`.
    #[arg(long, env = "BLUEGREEN_PROXY_ROUTE_HEADER", default_value = bluegreen_proxy::ROUTE_HEADER, value_parser = parse_route_header)]
    route_header: RouteHeader,
}

/// `--route-header`: a header name or `off`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct RouteHeader(Option<http::HeaderName>);

fn parse_route_header(s: &str) -> Result<RouteHeader, String> {
    match s.trim() {
        "off" | "none" => Ok(RouteHeader(None)),
        name => http::HeaderName::from_bytes(name.as_bytes())
            .map(|n| RouteHeader(Some(n)))
            .map_err(|_| format!("`{s}` is neither a header name nor `off`")),
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map(|i| s.split_at(i))
        .unwrap_or((s, "s"));
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 30s or 500ms"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("`{s}`: use ms, s or m")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("`{s}`: {e}"))
}

/// A duration or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct OptionalDuration(Option<Duration>);

fn parse_optional_duration(s: &str) -> Result<OptionalDuration, String> {
    match s.trim() {
        "off" | "none" => Ok(OptionalDuration(None)),
        d => parse_duration(d).map(|d| OptionalDuration(Some(d))),
    }
}

/// `--preview-bind`: an IP address or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PreviewBind(Option<IpAddr>);

fn parse_preview_bind(s: &str) -> Result<PreviewBind, String> {
    match s.trim() {
        "off" | "none" => Ok(PreviewBind(None)),
        ip => ip
            .parse()
            .map(|ip| PreviewBind(Some(ip)))
            .map_err(|_| format!("`{s}` is neither an IP address nor `off`")),
    }
}

fn token(args: &Args) -> Result<AdminToken, String> {
    let raw = match (&args.admin_token_file, &args.admin_token) {
        (Some(path), _) => read_token_file(path)?,
        (None, Some(t)) => t.clone(),
        (None, None) => {
            return Err(
                "an admin token is required: --admin-token-file or BLUEGREEN_PROXY_TOKEN".into(),
            )
        }
    };
    AdminToken::new(raw).map_err(|e| e.to_string())
}

/// The token file's contents, refusing a file that its group or others may read:
/// whoever reads the token decides where the traffic goes.
fn read_token_file(path: &std::path::Path) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let flag = || format!("--admin-token-file {}", path.display());
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", flag()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{}: the file is readable by its group or others (mode {mode:04o}); make it \
             readable by its owner only (chmod 600, or mode=0400 for a Docker secret)",
            flag()
        ));
    }
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", flag()))
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// One single-threaded runtime per serving thread: a client connection, and the
/// backend connections it uses, stay on the thread that accepted it.
fn serving_runtimes(n: usize) -> Result<Vec<tokio::runtime::Handle>, String> {
    (0..n)
        .map(|i| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("serving runtime: {e}"))?;
            let handle = runtime.handle().clone();
            std::thread::Builder::new()
                .name(format!("bluegreen-serve-{i}"))
                .spawn(move || runtime.block_on(std::future::pending::<()>()))
                .map_err(|e| format!("serving thread: {e}"))?;
            Ok(handle)
        })
        .collect()
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match run(Args::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("bluegreen-proxy: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let token = token(&args)?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            Some(TlsConfig::from_pem_files(cert, key).map_err(|e| e.to_string())?)
        }
        _ => None,
    };
    let mut options = ProxyOptions::default()
        .with_hold_timeout(args.hold_timeout)
        .with_max_held(args.max_held)
        .with_shutdown_timeout(args.shutdown_timeout)
        .with_drain_timeout(args.drain_timeout)
        .with_preview_bind(args.preview_bind.0)
        .with_header_timeout(args.header_timeout)
        .with_idle_timeout(args.idle_timeout)
        .with_body_timeout(args.body_timeout)
        .with_send_timeout(args.send_timeout)
        .with_upstream_timeout(args.upstream_timeout)
        .with_http2_keep_alive(args.http2_keep_alive.0, args.http2_keep_alive_timeout)
        .with_preview_header_from(args.preview_header_from.clone())
        .with_trusted_proxies(args.trusted_proxies.clone())
        .with_route_header(args.route_header.0.clone())
        .with_health(
            HealthCheckOptions::default()
                .with_path(args.health_path.clone())
                .with_interval(args.health_interval)
                .with_timeout(args.health_timeout),
        );
    if let Some(host) = &args.default_app {
        options = options.with_default_host(host.clone());
    }
    let admin_listener = AdminListener::bind(&args.admin, args.admin_allow_remote)
        .await
        .map_err(|e| format!("admin {:?}: {e}", args.admin))?;
    // bound before the state is restored: clients that come meanwhile wait in
    // the backlog instead of being refused
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("listen {}: {e}", args.listen))?;
    let proxy = match &args.state_file {
        Some(path) => Proxy::restore(options.with_state_file(path.clone()))
            .await
            .map_err(|e| format!("--state-file: {e}"))?,
        None => Proxy::new(options),
    };
    tracing::info!(
        listen = %args.listen,
        admin = ?args.admin,
        tls = tls.is_some(),
        "bluegreen-proxy started"
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let admin_task = {
        let proxy = proxy.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            admin::serve(proxy, admin_listener, token, async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await
        })
    };
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let runtimes = serving_runtimes(threads)?;
    let serve = proxy.serve_spread(
        listener,
        tls,
        async move {
            shutdown_signal().await;
            tracing::info!("signal received: stopping");
            let _ = stop_tx.send(true);
        },
        &runtimes,
    );
    serve.await.map_err(|e| e.to_string())?;
    let _ = admin_task.await;
    if let AdminAddr::Unix(path) = &args.admin {
        let _ = std::fs::remove_file(path);
    }
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("300ms").unwrap(), Duration::from_millis(300));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert!(parse_duration("3h").is_err());
    }

    #[test]
    fn connection_bounds_have_flags() {
        let args = Args::parse_from([
            "bluegreen-proxy",
            "--header-timeout",
            "5s",
            "--idle-timeout",
            "500ms",
            "--http2-keep-alive",
            "off",
        ]);
        assert_eq!(args.header_timeout, Duration::from_secs(5));
        assert_eq!(args.idle_timeout, Duration::from_millis(500));
        assert_eq!(args.send_timeout, Duration::from_secs(60));
        assert_eq!(args.http2_keep_alive, OptionalDuration(None));
    }

    #[test]
    fn default_admin_is_loopback() {
        let args = Args::parse_from(["bluegreen-proxy"]);
        match args.admin {
            AdminAddr::Tcp(a) => assert!(a.ip().is_loopback()),
            other => panic!("{other:?}"),
        }
        assert!(args.listen.ip().is_loopback());
    }

    #[test]
    fn previews_bind_loopback_unless_told() {
        let args = Args::parse_from(["bluegreen-proxy"]);
        assert!(args.preview_bind.0.is_some_and(|ip| ip.is_loopback()));
        let off = Args::parse_from(["bluegreen-proxy", "--preview-bind", "off"]);
        assert_eq!(off.preview_bind, PreviewBind(None));
        let e = Args::try_parse_from(["bluegreen-proxy", "--preview-bind", "nowhere"])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("--preview-bind") && e.contains("nowhere"), "{e}");
    }

    #[test]
    fn a_token_file_others_may_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = bluegreen_testkit::scratch::Scratch::new("proxy-token");
        let path = dir.join("token");
        std::fs::write(&path, "s3cret-token-123\n").unwrap();
        for (mode, ok) in [
            (0o644, false),
            (0o640, false),
            (0o604, false),
            (0o600, true),
            (0o400, true),
        ] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let args = Args::parse_from([
                "bluegreen-proxy",
                "--admin-token-file",
                path.to_str().unwrap(),
            ]);
            match token(&args) {
                Ok(t) => assert!(ok, "mode {mode:o} must be refused, got {t:?}"),
                Err(e) => {
                    assert!(!ok, "mode {mode:o}: {e}");
                    assert!(
                        e.contains(path.to_str().unwrap()) && e.contains("chmod 600"),
                        "{e}"
                    );
                }
            }
        }
        drop(dir);
    }

    #[test]
    fn the_route_header_is_named_or_off() {
        let args = Args::parse_from(["bluegreen-proxy"]);
        assert_eq!(
            args.route_header.0.as_ref().map(|n| n.as_str()),
            Some("bluegreen-route")
        );
        let named = Args::parse_from(["bluegreen-proxy", "--route-header", "X-Pin"]);
        assert_eq!(named.route_header.0.unwrap().as_str(), "x-pin");
        let off = Args::parse_from(["bluegreen-proxy", "--route-header", "off"]);
        assert_eq!(off.route_header, RouteHeader(None));
        let e = Args::try_parse_from(["bluegreen-proxy", "--route-header", "bad name"])
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("--route-header") && e.contains("bad name"),
            "{e}"
        );
    }

    #[test]
    fn token_is_not_in_debug() {
        let args = Args::parse_from(["bluegreen-proxy", "--admin-token", "s3cret-token-123"]);
        let t = token(&args).unwrap();
        assert!(!format!("{t:?}").contains("s3cret"));
    }
}
