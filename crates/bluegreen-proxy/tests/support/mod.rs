//! A tiny backend and client helpers for the proxy's tests (loopback only).
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bluegreen_core::{GroupId, RouteTable};
use bluegreen_proxy::{BackendSpec, Proxy, ProxyOptions};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// A backend: `/health` answers 200 (or 503 when made unhealthy), `/slow?ms=N`
/// answers after N ms, `/drip?ms=N` sends its headers and `start` at once and
/// `end` N ms later, `/status/N` answers status N, `/echo` upgrades to a byte echo, `/headers` answers the
/// request's headers (`name: value` lines), `/leak` answers with a
/// `bluegreen-route` response header, `/big?kb=N` answers N KiB, anything else
/// answers `<group> <instance>`.
pub struct TestBackend {
    pub addr: SocketAddr,
    pub group: String,
    pub instance: String,
    healthy: Arc<AtomicBool>,
    /// Open connections that carried a proxied (non-health-check) request.
    proxied_connections: Arc<AtomicUsize>,
    in_flight: Arc<AtomicUsize>,
    tasks: Option<tokio::task::JoinHandle<()>>,
}

impl TestBackend {
    pub async fn start(group: &str, instance: &str) -> TestBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let healthy = Arc::new(AtomicBool::new(true));
        let proxied_connections = Arc::new(AtomicUsize::new(0));
        let name = format!("{group} {instance}");
        let in_flight = Arc::new(AtomicUsize::new(0));
        let (h, p, f) = (
            healthy.clone(),
            proxied_connections.clone(),
            in_flight.clone(),
        );
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    break;
                };
                let name = name.clone();
                let healthy = h.clone();
                let counter = p.clone();
                let flying = f.clone();
                conns.spawn(async move {
                    let proxied = Arc::new(AtomicBool::new(false));
                    let flag = proxied.clone();
                    let c = counter.clone();
                    let service = service_fn(move |req| {
                        let flying = flying.clone();
                        let health = req.uri().path() == "/health";
                        let reply =
                            answer(req, name.clone(), healthy.clone(), flag.clone(), c.clone());
                        async move {
                            if !health {
                                flying.fetch_add(1, Ordering::SeqCst);
                            }
                            let r = reply.await;
                            if !health {
                                flying.fetch_sub(1, Ordering::SeqCst);
                            }
                            r
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                    if proxied.load(Ordering::SeqCst) {
                        counter.fetch_sub(1, Ordering::SeqCst);
                    }
                });
            }
        });
        TestBackend {
            addr,
            group: group.into(),
            instance: instance.into(),
            healthy,
            proxied_connections,
            in_flight,
            tasks: Some(task),
        }
    }

    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    pub fn set_healthy(&self, yes: bool) {
        self.healthy.store(yes, Ordering::SeqCst);
    }

    pub fn proxied_connections(&self) -> usize {
        self.proxied_connections.load(Ordering::SeqCst)
    }

    /// Requests being answered now (health checks aside).
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Stops accepting and drops every open connection.
    pub fn kill(&mut self) {
        if let Some(t) = self.tasks.take() {
            t.abort();
        }
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn answer(
    req: Request<Incoming>,
    name: String,
    healthy: Arc<AtomicBool>,
    proxied: Arc<AtomicBool>,
    counter: Arc<AtomicUsize>,
) -> Result<Response<TestBody>, Infallible> {
    if req.uri().path() == "/health" {
        let status = if healthy.load(Ordering::SeqCst) {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        let mut r = Response::new(Full::new(Bytes::from_static(b"ok")).boxed());
        *r.status_mut() = status;
        return Ok(r);
    }
    if !proxied.swap(true, Ordering::SeqCst) {
        counter.fetch_add(1, Ordering::SeqCst);
    }
    let ms: u64 = req
        .uri()
        .query()
        .and_then(|q| q.strip_prefix("ms="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    if req.uri().path() == "/slow" {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if req.uri().path() == "/drip" {
        return Ok(Response::new(
            Drip {
                first: Some(Bytes::from_static(b"start ")),
                delay: Box::pin(tokio::time::sleep(Duration::from_millis(ms))),
                rest: Some(Bytes::from_static(b"end")),
            }
            .boxed(),
        ));
    }
    if req.uri().path() == "/echo" {
        let mut req = req;
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(upgraded) = upgrade.await {
                let (mut r, mut w) = tokio::io::split(TokioIo::new(upgraded));
                let _ = tokio::io::copy(&mut r, &mut w).await;
            }
        });
        let mut r = Response::new(Full::new(Bytes::new()).boxed());
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        r.headers_mut()
            .insert(http::header::CONNECTION, "upgrade".parse().unwrap());
        r.headers_mut()
            .insert(http::header::UPGRADE, "echo".parse().unwrap());
        return Ok(r);
    }
    if req.uri().path() == "/headers" {
        let mut text = String::new();
        for (k, v) in req.headers() {
            text.push_str(&format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())));
        }
        return Ok(Response::new(Full::new(Bytes::from(text)).boxed()));
    }
    if req.uri().path() == "/leak" {
        // a backend that echoes a route header back: the proxy must not pass it on
        let mut r = Response::new(Full::new(Bytes::from(name)).boxed());
        r.headers_mut()
            .insert("bluegreen-route", "1.leaked".parse().unwrap());
        return Ok(r);
    }
    if req.uri().path() == "/big" {
        let kb: usize = req
            .uri()
            .query()
            .and_then(|q| q.strip_prefix("kb="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(1024);
        return Ok(Response::new(
            Full::new(Bytes::from(vec![b'x'; kb * 1024])).boxed(),
        ));
    }
    if let Some(code) = req.uri().path().strip_prefix("/status/") {
        let mut r = Response::new(Full::new(Bytes::from(name)).boxed());
        *r.status_mut() = code.parse().unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return Ok(r);
    }
    if req.uri().path() == "/body" {
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let text = format!("{name} {}", body.len());
        return Ok(Response::new(Full::new(Bytes::from(text)).boxed()));
    }
    Ok(Response::new(Full::new(Bytes::from(name)).boxed()))
}

/// The body type of the test backend's responses.
pub type TestBody = BoxBody<Bytes, Infallible>;

/// A body that sends `first` at once and `rest` after `delay`.
struct Drip {
    first: Option<Bytes>,
    delay: std::pin::Pin<Box<tokio::time::Sleep>>,
    rest: Option<Bytes>,
}

impl hyper::body::Body for Drip {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        use std::future::Future;
        if let Some(first) = self.first.take() {
            return std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(first))));
        }
        if self.rest.is_none() {
            return std::task::Poll::Ready(None);
        }
        if self.delay.as_mut().poll(cx).is_pending() {
            return std::task::Poll::Pending;
        }
        let rest = self.rest.take().expect("checked above");
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(rest))))
    }
}

/// A proxy serving on a loopback port until dropped (or `stop`).
pub struct RunningProxy {
    pub proxy: Proxy,
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl RunningProxy {
    pub async fn start(options: ProxyOptions) -> RunningProxy {
        Self::start_spread(options, Vec::new()).await
    }

    /// Like `start`, with client connections handed to `runtimes` in turn.
    pub async fn start_spread(
        options: ProxyOptions,
        runtimes: Vec<tokio::runtime::Handle>,
    ) -> RunningProxy {
        let proxy = Proxy::new(options);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let p = proxy.clone();
        let task = tokio::spawn(async move {
            p.serve_spread(
                listener,
                None,
                async move {
                    let _ = rx.await;
                },
                &runtimes,
            )
            .await
        });
        RunningProxy {
            proxy,
            addr,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Attaches `group` of `host` with one member at `backend` and gives it all
    /// the traffic.
    #[allow(dead_code)]
    pub async fn serve_from(&self, host: &str, group: &str, backend: String) -> GroupId {
        let id = GroupId::from(group);
        self.proxy
            .attach(host, &id, &[BackendSpec::new(backend)])
            .await
            .unwrap();
        self.proxy
            .set_routes(host, &RouteTable::single(id.clone()))
            .unwrap();
        id
    }

    /// Starts the graceful shutdown.
    pub fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

impl Drop for RunningProxy {
    fn drop(&mut self) {
        self.stop();
    }
}

pub type TestClient = Client<HttpConnector, Full<Bytes>>;

pub fn http1_client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

pub fn h2c_client() -> TestClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// A GET with `Host: host`; returns the status and the body text.
pub async fn get(
    client: &TestClient,
    url: &str,
    host: &str,
    headers: &[(&str, &str)],
) -> Result<(StatusCode, http::HeaderMap, String), String> {
    let mut builder = Request::get(url).header(http::header::HOST, host);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let request = builder.body(Full::new(Bytes::new())).unwrap();
    let response = client
        .request(request)
        .await
        .map_err(|e| format!("{e:?}"))?;
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| format!("{e:?}"))?
        .to_bytes();
    Ok((
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    ))
}

/// Attaches groups `blue` and `green` of `host` (one backend each) and routes all
/// traffic to blue; returns the two backends.
pub async fn blue_routed_green_ready(proxy: &Proxy, host: &str) -> (TestBackend, TestBackend) {
    let blue = TestBackend::start("blue", "i0").await;
    let green = TestBackend::start("green", "i0").await;
    for b in [&blue, &green] {
        proxy
            .attach(
                host,
                &b.group.as_str().into(),
                &[bluegreen_proxy::BackendSpec::new(b.address())],
            )
            .await
            .unwrap();
    }
    proxy
        .set_routes(host, &bluegreen_core::RouteTable::single("blue".into()))
        .unwrap();
    (blue, green)
}

/// Opens an upgraded `echo` connection to the test backend through the proxy at
/// `addr`; returns the stream and the response head (status line and headers).
pub async fn open_echo_tunnel(addr: SocketAddr, host: &str) -> (tokio::net::TcpStream, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!(
                "GET /echo HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stream.read(&mut byte).await.unwrap(),
            1,
            "connection closed early"
        );
        head.push(byte[0]);
    }
    (stream, String::from_utf8(head).unwrap())
}

/// Polls `f` every 20 ms until it is true, for at most `bound`.
pub async fn eventually(bound: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        if f() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Fast health checks for tests.
pub fn test_options() -> ProxyOptions {
    ProxyOptions::default().with_health(
        bluegreen_proxy::HealthCheckOptions::default()
            .with_interval(Duration::from_millis(100))
            .with_timeout(Duration::from_secs(1)),
    )
}

/// Sends `bytes` on a new connection to `addr` and reads until the proxy closes
/// it (or `bound` passes: then what came so far, and `timed_out`).
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8], bound: Duration) -> RawReply {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(bound, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    RawReply {
        text: String::from_utf8_lossy(&out).into_owned(),
        timed_out: read.is_err(),
    }
}

/// What [`raw_exchange`] read.
#[derive(Debug)]
pub struct RawReply {
    pub text: String,
    pub timed_out: bool,
}

impl RawReply {
    /// The status code of the first response, if any.
    pub fn status(&self) -> Option<u16> {
        self.text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
    }
}

/// A backend whose health checks pass (until `set_healthy(false)`) but that
/// never answers any other request; counts the connections that carry such a
/// request and are still open.
pub struct SilentBackend {
    pub addr: SocketAddr,
    hung: Arc<AtomicUsize>,
    healthy: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl SilentBackend {
    pub async fn start() -> SilentBackend {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hung = Arc::new(AtomicUsize::new(0));
        let healthy = Arc::new(AtomicBool::new(true));
        let (h, ok) = (hung.clone(), healthy.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (h, ok) = (h.clone(), ok.clone());
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let mut counted = false;
                    while let Ok(n) = stream.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        let text = String::from_utf8_lossy(&buf[..n]);
                        if text.starts_with("GET /health ") {
                            let status = if ok.load(Ordering::SeqCst) {
                                "200 OK"
                            } else {
                                "503 No"
                            };
                            let reply = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
                            let _ = stream.write_all(reply.as_bytes()).await;
                        } else if !counted {
                            counted = true;
                            h.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    if counted {
                        h.fetch_sub(1, Ordering::SeqCst);
                    }
                });
            }
        });
        SilentBackend {
            addr,
            hung,
            healthy,
            task,
        }
    }

    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// Connections open now that carry a request it will never answer.
    pub fn hung(&self) -> usize {
        self.hung.load(Ordering::SeqCst)
    }

    pub fn set_healthy(&self, yes: bool) {
        self.healthy.store(yes, Ordering::SeqCst);
    }
}

impl Drop for SilentBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}
