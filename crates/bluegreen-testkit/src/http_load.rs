//! A bounded HTTP load for tests, benchmarks and examples: keep-alive HTTP/1.1
//! clients that count what answered, version by version, and what failed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// The response header that names the version that answered (the sample app sets
/// it).
pub const VERSION_HEADER: &str = "x-app-version";

/// What a load saw.
#[derive(Clone, Debug, Default)]
pub struct LoadReport {
    /// Successful responses.
    pub ok: u64,
    /// Failures: a status with its body, or a connection error.
    pub failed: Vec<String>,
    /// The versions that answered, in the order they were first seen.
    pub versions: Vec<String>,
    /// Successful responses per version.
    pub by_version: BTreeMap<String, u64>,
    /// The version of the last successful response.
    pub last_version: Option<String>,
}

/// `clients` loops of `GET /` with `Host: host` against `address`, until
/// [`HttpLoad::stop`] or two minutes, whichever comes first.
///
/// ```no_run
/// # async fn run() {
/// use bluegreen_testkit::http_load::HttpLoad;
/// let load = HttpLoad::start("127.0.0.1:8080".parse().unwrap(), "web.production", 8);
/// // ... deploy ...
/// let seen = load.stop().await;
/// assert!(seen.failed.is_empty());
/// # }
/// ```
pub struct HttpLoad {
    stop: Arc<AtomicBool>,
    clients: Vec<tokio::task::JoinHandle<(LoadReport, Option<Instant>)>>,
}

impl HttpLoad {
    /// Starts the clients.
    pub fn start(address: SocketAddr, host: &str, clients: usize) -> HttpLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let clients = (0..clients)
            .map(|_| tokio::spawn(client(address, host.to_owned(), stop.clone())))
            .collect();
        HttpLoad { stop, clients }
    }

    /// Stops the clients and adds up what they saw.
    pub async fn stop(self) -> LoadReport {
        self.stop.store(true, Ordering::SeqCst);
        let mut total = LoadReport::default();
        let mut latest: Option<Instant> = None;
        for c in self.clients {
            let (seen, last) = match c.await {
                Ok(out) => out,
                Err(e) => {
                    total.failed.push(format!("a client task failed: {e}"));
                    continue;
                }
            };
            total.ok += seen.ok;
            total.failed.extend(seen.failed);
            for v in seen.versions {
                if !total.versions.contains(&v) {
                    total.versions.push(v);
                }
            }
            for (v, n) in seen.by_version {
                *total.by_version.entry(v).or_default() += n;
            }
            if last.is_some() && (latest.is_none() || last > latest) {
                latest = last;
                total.last_version = seen.last_version;
            }
        }
        total
    }
}

async fn client(
    address: SocketAddr,
    host: String,
    stop: Arc<AtomicBool>,
) -> (LoadReport, Option<Instant>) {
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let mut seen = LoadReport::default();
    let mut last = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        let failures_before = seen.failed.len();
        let request = hyper::Request::get(format!("http://{address}/"))
            .header("host", &host)
            .body(http_body_util::Empty::new())
            .expect("a valid request");
        match http.request(request).await {
            Ok(response) => {
                let status = response.status();
                let version = response
                    .headers()
                    .get(VERSION_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("?")
                    .to_owned();
                let body = http_body_util::BodyExt::collect(response.into_body())
                    .await
                    .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned());
                match body {
                    Ok(_) if status.is_success() => {
                        seen.ok += 1;
                        if !seen.versions.contains(&version) {
                            seen.versions.push(version.clone());
                        }
                        *seen.by_version.entry(version.clone()).or_default() += 1;
                        seen.last_version = Some(version);
                        last = Some(Instant::now());
                    }
                    Ok(body) => seen
                        .failed
                        .push(format!("status {status}: {}", body.trim())),
                    Err(e) => seen.failed.push(format!("status {status}, body cut: {e}")),
                }
            }
            Err(e) => seen.failed.push(format!("{e:?}")),
        }
        if seen.failed.len() > failures_before {
            // after a failure, a short pause: a refused connection must not spin
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    (seen, last)
}
