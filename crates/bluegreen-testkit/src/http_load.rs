//! A bounded HTTP load for tests, benchmarks and examples: keep-alive HTTP/1.1
//! clients that count what answered, version by version, and what failed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
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

impl LoadReport {
    fn answered(&mut self, version: String) {
        self.ok += 1;
        if !self.versions.contains(&version) {
            self.versions.push(version.clone());
        }
        *self.by_version.entry(version.clone()).or_default() += 1;
        self.last_version = Some(version);
    }

    /// The first few failures, for a message.
    pub fn first_failures(&self) -> &[String] {
        &self.failed[..self.failed.len().min(5)]
    }
}

/// What the clients saw: since the start, and since the last [`HttpLoad::take`].
#[derive(Default)]
struct Tally {
    total: LoadReport,
    since: LoadReport,
}

impl Tally {
    fn answered(&mut self, version: String) {
        self.total.answered(version.clone());
        self.since.answered(version);
    }

    fn failed(&mut self, failure: String) {
        self.total.failed.push(failure.clone());
        self.since.failed.push(failure);
    }
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
    tally: Arc<Mutex<Tally>>,
    clients: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for HttpLoad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpLoad").finish_non_exhaustive()
    }
}

impl HttpLoad {
    /// Starts the clients.
    pub fn start(address: SocketAddr, host: &str, clients: usize) -> HttpLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Mutex::new(Tally::default()));
        let clients = (0..clients)
            .map(|_| {
                tokio::spawn(client(
                    address,
                    host.to_owned(),
                    stop.clone(),
                    tally.clone(),
                ))
            })
            .collect();
        HttpLoad {
            stop,
            tally,
            clients,
        }
    }

    /// What the clients saw since the last `take` (or the start); the load goes on.
    pub fn take(&self) -> LoadReport {
        std::mem::take(&mut self.tally().since)
    }

    /// Stops the clients and adds up what they saw since the start.
    pub async fn stop(mut self) -> LoadReport {
        self.stop.store(true, Ordering::SeqCst);
        let mut failures = Vec::new();
        for c in std::mem::take(&mut self.clients) {
            if let Err(e) = c.await {
                failures.push(format!("a client task failed: {e}"));
            }
        }
        let mut tally = self.tally();
        for f in failures {
            tally.failed(f);
        }
        tally.total.clone()
    }

    fn tally(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.tally.lock().unwrap_or_else(|e| e.into_inner())
    }
}

async fn client(
    address: SocketAddr,
    host: String,
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
) {
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let deadline = Instant::now() + Duration::from_secs(120);
    let record = |outcome: Result<String, String>| {
        let mut tally = tally.lock().unwrap_or_else(|e| e.into_inner());
        match outcome {
            Ok(version) => tally.answered(version),
            Err(failure) => tally.failed(failure),
        }
    };
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        let request = hyper::Request::get(format!("http://{address}/"))
            .header("host", &host)
            .body(http_body_util::Empty::new())
            .expect("a valid request");
        let outcome = match http.request(request).await {
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
                    Ok(_) if status.is_success() => Ok(version),
                    Ok(body) => Err(format!("status {status}: {}", body.trim())),
                    Err(e) => Err(format!("status {status}, body cut: {e}")),
                }
            }
            Err(e) => Err(format!("{e:?}")),
        };
        let failed = outcome.is_err();
        record(outcome);
        if failed {
            // after a failure, a short pause: a refused connection must not spin
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}
