//! A tiny HTTP service with switchable failure modes (see the README).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

/// A tiny HTTP service with switchable failure modes.
#[derive(Parser, Debug, Clone)]
#[command(name = "sample-app", version)]
struct Settings {
    /// Address to listen on.
    #[arg(long, env = "HOST", default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on.
    #[arg(long, env = "PORT", default_value_t = 8080)]
    port: u16,
    /// The version this instance reports.
    #[arg(long = "app-version", env = "APP_VERSION", default_value = "dev")]
    app_version: String,
    /// The instance name this instance reports (default `pid-<pid>`).
    #[arg(long, env = "INSTANCE")]
    instance: Option<String>,
    /// `/health` always answers 503.
    #[arg(long, env = "SAMPLE_NEVER_HEALTHY", value_parser = clap::builder::FalseyValueParser::new(), default_value = "false")]
    never_healthy: bool,
    /// Wait this long before listening.
    #[arg(long, env = "SAMPLE_START_DELAY_MS", default_value_t = 0)]
    start_delay_ms: u64,
    /// Exit with status 101 after this long.
    #[arg(long, env = "SAMPLE_CRASH_AFTER_MS")]
    crash_after_ms: Option<u64>,
    /// Only the first N starts crash (as --crash-after-ms says); later starts
    /// serve. Starts are counted in --boots-file, which a container's restarts
    /// keep: a crash loop that settles after N restarts.
    #[arg(long, env = "SAMPLE_CRASH_BOOTS", requires = "boots_file")]
    crash_boots: Option<u64>,
    /// The file counting this instance's starts (for --crash-boots).
    #[arg(long, env = "SAMPLE_BOOTS_FILE")]
    boots_file: Option<std::path::PathBuf>,
    /// This fraction of requests (not `/health`) answer 500.
    #[arg(long, env = "SAMPLE_ERROR_RATE", default_value_t = 0.0)]
    error_rate: f64,
    /// Every response (not `/health`) waits this long.
    #[arg(long, env = "SAMPLE_LATENCY_MS", default_value_t = 0)]
    latency_ms: u64,
    /// The name this app gives itself in a peer answer (`web=v2 api=v2`).
    #[arg(long, env = "APP_NAME", default_value = "app")]
    app_name: String,
    /// Peer mode: `GET /peer` (and `/`) asks the peer's `/version` at this URL
    /// (`http://127.0.0.1:8080`, usually the proxy) and names both versions.
    #[arg(long, env = "SAMPLE_PEER_URL")]
    peer_url: Option<String>,
    /// The `Host` of the peer call (default: the peer URL's authority); its
    /// first label names the peer (`api.test` is `api`).
    #[arg(long, env = "SAMPLE_PEER_HOST")]
    peer_host: Option<String>,
    /// Answer 500 to a peer request when the peer's version is not this one.
    #[arg(long, env = "SAMPLE_REQUIRE_PEER_VERSION")]
    require_peer_version: Option<String>,
    /// The header forwarded from a request to its peer call, as an app forwards
    /// trace headers (the proxy's route header).
    #[arg(long, env = "SAMPLE_ROUTE_HEADER", default_value = "bluegreen-route")]
    route_header: String,
}

fn main() {
    let mut settings = Settings::parse();
    if !(0.0..=1.0).contains(&settings.error_rate) {
        eprintln!(
            "sample-app: --error-rate {} is not a fraction between 0 and 1",
            settings.error_rate
        );
        std::process::exit(2);
    }
    if let (Some(crash_boots), Some(path)) = (settings.crash_boots, &settings.boots_file) {
        match count_boot(path) {
            Ok(boot) if boot > crash_boots => settings.crash_after_ms = None,
            Ok(_) => {}
            Err(e) => {
                eprintln!("sample-app: --boots-file {}: {e}", path.display());
                std::process::exit(2);
            }
        }
    }
    if let Some(url) = &settings.peer_url {
        if let Err(e) = peer::Peer::parse(url, settings.peer_host.as_deref()) {
            eprintln!("sample-app: --peer-url {url}: {e}");
            std::process::exit(2);
        }
    }
    settings
        .instance
        .get_or_insert_with(|| format!("pid-{}", std::process::id()));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    if let Err(e) = runtime.block_on(serve(Arc::new(settings))) {
        eprintln!("sample-app: {e}");
        std::process::exit(1);
    }
}

/// Counts this start in `path` (a decimal number), and returns its number (1 for
/// the first).
fn count_boot(path: &std::path::Path) -> std::io::Result<u64> {
    let before = match std::fs::read_to_string(path) {
        Ok(text) => text.trim().parse().map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("holds {text:?}, not a count"),
            )
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e),
    };
    std::fs::write(path, format!("{}\n", before + 1))?;
    Ok(before + 1)
}

async fn serve(settings: Arc<Settings>) -> std::io::Result<()> {
    if let Some(ms) = settings.crash_after_ms {
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            eprintln!("sample-app: crashing as told (--crash-after-ms {ms})");
            std::process::exit(101);
        });
    }
    if settings.start_delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(settings.start_delay_ms)).await;
    }
    let ip: std::net::IpAddr = settings.host.parse().map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("--host {}: {e}", settings.host),
        )
    })?;
    let listener = TcpListener::bind(SocketAddr::new(ip, settings.port)).await?;
    eprintln!(
        "sample-app {} ({}) listening on {}",
        settings.app_version,
        settings.instance.as_deref().unwrap_or_default(),
        listener.local_addr()?
    );
    let graceful = GracefulShutdown::new();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let settings = settings.clone();
                let conn = http1::Builder::new().serve_connection(
                    TokioIo::new(stream),
                    service_fn(move |req| answer(settings.clone(), req)),
                );
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    drop(listener);
    eprintln!("sample-app: stopping, letting requests in flight finish");
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(Duration::from_secs(10)) => eprintln!("sample-app: gave up waiting"),
    }
    Ok(())
}

async fn answer(
    settings: Arc<Settings>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let instance = settings.instance.as_deref().unwrap_or_default();
    let reply = |status: StatusCode, body: String, content_type: &str| {
        Response::builder()
            .status(status)
            .header("content-type", content_type)
            .header("x-app-version", settings.app_version.as_str())
            .header("x-instance", instance)
            .body(Full::new(Bytes::from(body)))
            .expect("a valid response")
    };
    if req.uri().path() == "/health" {
        return Ok(if settings.never_healthy {
            reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "never healthy, as told\n".into(),
                "text/plain",
            )
        } else {
            reply(StatusCode::OK, "ok\n".into(), "text/plain")
        });
    }
    if settings.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(settings.latency_ms)).await;
    }
    if settings.error_rate > 0.0 && fastrand::f64() < settings.error_rate {
        return Ok(reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "failing as told\n".into(),
            "text/plain",
        ));
    }
    let peer_path = matches!(req.uri().path(), "/peer" | "/");
    if let (true, Some(url)) = (peer_path, &settings.peer_url) {
        let peer = peer::Peer::parse(url, settings.peer_host.as_deref()).expect("checked at start");
        let route = req.headers().get(settings.route_header.as_str()).cloned();
        let name = settings.app_name.as_str();
        let version = settings.app_version.as_str();
        return Ok(match peer.version(&settings.route_header, route).await {
            Err(e) => reply(
                StatusCode::BAD_GATEWAY,
                format!("{name}={version}, peer {} unreachable: {e}\n", peer.name),
                "text/plain",
            ),
            Ok(theirs) => {
                let body = format!("{name}={version} {}={theirs}\n", peer.name);
                match &settings.require_peer_version {
                    Some(needed) if *needed != theirs => reply(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("{body}{name}={version} needs {}={needed}\n", peer.name),
                        "text/plain",
                    ),
                    _ => reply(StatusCode::OK, body, "text/plain"),
                }
            }
        });
    }
    Ok(match req.uri().path() {
        "/version" => reply(
            StatusCode::OK,
            serde_json::json!({
                "version": settings.app_version,
                "instance": instance,
                "pid": std::process::id(),
            })
            .to_string(),
            "application/json",
        ),
        _ => reply(
            StatusCode::OK,
            format!("version {} from {instance}\n", settings.app_version),
            "text/plain",
        ),
    })
}

/// Peer mode: a call to another app, usually through the proxy.
mod peer {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty};
    use hyper::{Request, Uri};
    use hyper_util::rt::TokioIo;
    use std::time::Duration;
    use tokio::net::TcpStream;

    /// How long a peer call may take, connection included.
    const TIMEOUT: Duration = Duration::from_secs(10);

    pub(crate) struct Peer {
        /// `host:port` to connect to.
        authority: String,
        /// The `Host` of the call.
        host: String,
        /// The first label of the host.
        pub(crate) name: String,
    }

    impl Peer {
        /// `http://host:port` (any path is ignored) and the `Host` to send.
        pub(crate) fn parse(url: &str, host: Option<&str>) -> Result<Peer, String> {
            let uri: Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
            if uri.scheme_str() != Some("http") {
                return Err("only http:// URLs are supported".into());
            }
            let authority = uri.authority().ok_or("no host:port")?;
            let port = authority.port_u16().unwrap_or(80);
            let host = host.unwrap_or(authority.host()).to_owned();
            let name = host.split(['.', ':']).next().unwrap_or_default().to_owned();
            Ok(Peer {
                authority: format!("{}:{port}", authority.host()),
                host,
                name,
            })
        }

        /// The peer's version (`GET /version`), forwarding `route` as `header`.
        pub(crate) async fn version(
            &self,
            header: &str,
            route: Option<hyper::header::HeaderValue>,
        ) -> Result<String, String> {
            tokio::time::timeout(TIMEOUT, self.ask(header, route))
                .await
                .map_err(|_| format!("no answer in {} s", TIMEOUT.as_secs()))?
        }

        async fn ask(
            &self,
            header: &str,
            route: Option<hyper::header::HeaderValue>,
        ) -> Result<String, String> {
            let stream = TcpStream::connect(&self.authority)
                .await
                .map_err(|e| format!("connecting to {}: {e}", self.authority))?;
            let _ = stream.set_nodelay(true);
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(|e| e.to_string())?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            let mut request = Request::get("/version")
                .header("host", self.host.as_str())
                .body(Empty::<Bytes>::new())
                .map_err(|e| e.to_string())?;
            if let Some(value) = route {
                if let Ok(name) = hyper::header::HeaderName::from_bytes(header.as_bytes()) {
                    request.headers_mut().insert(name, value);
                }
            }
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| e.to_string())?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            if !status.is_success() {
                return Err(format!(
                    "answered {status}: {}",
                    String::from_utf8_lossy(&body).trim()
                ));
            }
            let json: serde_json::Value =
                serde_json::from_slice(&body).map_err(|e| format!("unreadable /version: {e}"))?;
            json.get("version")
                .and_then(|v| v.as_str())
                .map(str::to_owned)
                .ok_or_else(|| "no version in /version".into())
        }
    }
}
