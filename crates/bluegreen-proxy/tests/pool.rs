//! Backend connections pooled across client connections: an idle client
//! connection holds none, a group's connections are not reused past its drain,
//! and a backend that closes idle connections costs no client a failed request.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bluegreen_core::{GroupId, RouteTable};
use bluegreen_proxy::BackendSpec;
use support::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const HOST: &str = "web.production";
/// Only stops a hung test.
const BOUND: Duration = Duration::from_secs(30);

/// Sends one keep-alive GET on `stream` and reads its whole response; returns
/// the status and the body.
async fn exchange(stream: &mut BufReader<TcpStream>, path: &str) -> (u16, String) {
    stream
        .get_mut()
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    read_response(stream).await
}

async fn read_response(stream: &mut BufReader<TcpStream>) -> (u16, String) {
    let mut status = String::new();
    stream.read_line(&mut status).await.unwrap();
    let code: u16 = status
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {status:?}"));
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        stream.read_line(&mut line).await.unwrap();
        if line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap();
            }
        }
    }
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.unwrap();
    (code, String::from_utf8_lossy(&body).into_owned())
}

async fn routed_to(proxy: &RunningProxy, group: &str, backends: &[String]) -> GroupId {
    let id = GroupId::from(group);
    let specs: Vec<BackendSpec> = backends.iter().map(BackendSpec::new).collect();
    proxy.proxy.attach(HOST, &id, &specs).await.unwrap();
    proxy
        .proxy
        .set_routes(HOST, &RouteTable::single(id.clone()))
        .unwrap();
    id
}

// one runtime thread: the pool is per thread, and every client connection here
// runs on the one thread
#[tokio::test(flavor = "current_thread")]
async fn idle_client_connections_hold_no_backend_connection() {
    let proxy = RunningProxy::start(test_options()).await;
    let backend = TestBackend::start("blue", "i1").await;
    routed_to(&proxy, "blue", &[backend.address()]).await;
    let mut clients = Vec::new();
    for _ in 0..50 {
        let mut stream = BufReader::new(TcpStream::connect(proxy.addr).await.unwrap());
        assert_eq!(exchange(&mut stream, "/").await, (200, "blue i1".into()));
        clients.push(stream);
    }
    // 50 idle keep-alive client connections, one after the other: one backend
    // connection served them all, and is idle in the pool
    assert_eq!(backend.proxied_connections(), 1);
    // each client connection goes on, on the same pooled connection
    for stream in &mut clients {
        assert_eq!(exchange(stream, "/").await, (200, "blue i1".into()));
    }
    assert_eq!(backend.proxied_connections(), 1);
    // requests at once need connections at once; they go back to the pool after
    let mut waiting = Vec::new();
    for stream in clients.iter_mut().take(5) {
        stream
            .get_mut()
            .write_all(format!("GET /slow?ms=200 HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())
            .await
            .unwrap();
    }
    for stream in clients.iter_mut().take(5) {
        waiting.push(read_response(stream).await.0);
    }
    assert_eq!(waiting, vec![200; 5]);
    assert_eq!(backend.proxied_connections(), 5);
}

#[tokio::test(flavor = "current_thread")]
async fn a_response_not_read_to_its_end_closes_its_backend_connection() {
    let proxy = RunningProxy::start(test_options()).await;
    let backend = TestBackend::start("blue", "i1").await;
    routed_to(&proxy, "blue", &[backend.address()]).await;
    // the client leaves in the middle of a large response
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(format!("GET /big?kb=4096 HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut some = [0u8; 1024];
    let _ = stream.read(&mut some).await.unwrap();
    drop(stream);
    assert!(
        eventually(BOUND, || backend.proxied_connections() == 0).await,
        "the backend connection of an abandoned response stayed open"
    );
    // and the next request gets a new, whole connection
    let mut stream = BufReader::new(TcpStream::connect(proxy.addr).await.unwrap());
    assert_eq!(exchange(&mut stream, "/").await, (200, "blue i1".into()));
}

#[tokio::test(flavor = "current_thread")]
async fn a_group_that_loses_its_traffic_closes_its_pooled_connections() {
    let proxy = RunningProxy::start(test_options()).await;
    let blue = TestBackend::start("blue", "i1").await;
    let green = TestBackend::start("green", "i1").await;
    routed_to(&proxy, "green", &[green.address()]).await;
    routed_to(&proxy, "blue", &[blue.address()]).await;
    let mut stream = BufReader::new(TcpStream::connect(proxy.addr).await.unwrap());
    assert_eq!(exchange(&mut stream, "/").await, (200, "blue i1".into()));
    assert_eq!(blue.proxied_connections(), 1);
    // the switch retires blue's state: its idle connection closes at once
    proxy
        .proxy
        .set_routes(HOST, &RouteTable::single(GroupId::from("green")))
        .unwrap();
    assert!(
        eventually(BOUND, || blue.proxied_connections() == 0).await,
        "blue's pooled connection outlived the switch"
    );
    assert_eq!(exchange(&mut stream, "/").await, (200, "green i1".into()));
    // back to blue: a new state, whose requests never take the old connections
    proxy
        .proxy
        .set_routes(HOST, &RouteTable::single(GroupId::from("blue")))
        .unwrap();
    assert_eq!(exchange(&mut stream, "/").await, (200, "blue i1".into()));
    assert_eq!(blue.proxied_connections(), 1);
    assert!(eventually(BOUND, || green.proxied_connections() == 0).await);
}

/// A backend that closes every connection idle for `idle` between two
/// requests, as servers with a keep-alive timeout do; it answers `ok` to any
/// request (health checks included) and counts the connections it closed.
struct ClosingBackend {
    addr: std::net::SocketAddr,
    closed_idle: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl ClosingBackend {
    async fn start(idle: Duration) -> ClosingBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let closed_idle = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let (closed, counted) = (closed_idle.clone(), requests.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (closed, counted) = (closed.clone(), counted.clone());
                tokio::spawn(async move {
                    let mut stream = BufReader::new(stream);
                    loop {
                        let mut line = String::new();
                        match tokio::time::timeout(idle, stream.read_line(&mut line)).await {
                            Err(_) => {
                                closed.fetch_add(1, Ordering::SeqCst);
                                return;
                            }
                            Ok(Ok(n)) if n > 0 => {}
                            Ok(_) => return,
                        }
                        let mut length = 0usize;
                        loop {
                            let mut header = String::new();
                            if stream.read_line(&mut header).await.unwrap_or(0) == 0 {
                                return;
                            }
                            if header == "\r\n" {
                                break;
                            }
                            if let Some((name, value)) = header.split_once(':') {
                                if name.eq_ignore_ascii_case("content-length") {
                                    length = value.trim().parse().unwrap_or(0);
                                }
                            }
                        }
                        let mut body = vec![0u8; length];
                        if stream.read_exact(&mut body).await.is_err() {
                            return;
                        }
                        if !line.starts_with("GET /health") {
                            counted.fetch_add(1, Ordering::SeqCst);
                        }
                        let reply: &[u8] = if line.starts_with("HEAD ") {
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"
                        } else {
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
                        };
                        if stream.get_mut().write_all(reply).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        ClosingBackend {
            addr,
            closed_idle,
            requests,
            task,
        }
    }
}

impl Drop for ClosingBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_closing_idle_connections_fails_no_request_under_load() {
    const IDLE_MS: u64 = 20;
    const CLIENTS: usize = 16;
    const REQUESTS: usize = 150;
    let proxy = RunningProxy::start(test_options()).await;
    let backend = ClosingBackend::start(Duration::from_millis(IDLE_MS)).await;
    routed_to(&proxy, "blue", &[backend.addr.to_string()]).await;
    let statuses = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut clients = tokio::task::JoinSet::new();
    for c in 0..CLIENTS {
        let (addr, statuses) = (proxy.addr, statuses.clone());
        clients.spawn(async move {
            let mut stream = BufReader::new(TcpStream::connect(addr).await.unwrap());
            for i in 0..REQUESTS {
                // pauses around the backend's idle timeout, so that pooled
                // connections keep reaching it while others are in use
                let pause = (i * 7 + c * 13) as u64 % (2 * IDLE_MS + 5);
                tokio::time::sleep(Duration::from_millis(pause)).await;
                let method = if i % 3 == 0 { "HEAD" } else { "GET" };
                stream
                    .get_mut()
                    .write_all(format!("{method} / HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())
                    .await
                    .unwrap();
                let (code, _) = if method == "HEAD" {
                    let mut status = String::new();
                    stream.read_line(&mut status).await.unwrap();
                    loop {
                        let mut line = String::new();
                        stream.read_line(&mut line).await.unwrap();
                        if line == "\r\n" {
                            break;
                        }
                    }
                    (
                        status.split(' ').nth(1).unwrap().parse::<u16>().unwrap(),
                        String::new(),
                    )
                } else {
                    read_response(&mut stream).await
                };
                statuses.lock().unwrap().push(code);
            }
        });
    }
    tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(r) = clients.join_next().await {
            r.unwrap();
        }
    })
    .await
    .expect("the load did not finish");
    let statuses = statuses.lock().unwrap();
    let failed = statuses.iter().filter(|s| **s != 200).count();
    assert_eq!(statuses.len(), CLIENTS * REQUESTS);
    assert_eq!(failed, 0, "{failed} requests failed: {:?}", {
        let mut codes: Vec<u16> = statuses.iter().copied().filter(|s| *s != 200).collect();
        codes.dedup();
        codes
    });
    // the backend did close pooled connections while they were idle
    let closed = backend.closed_idle.load(Ordering::SeqCst);
    assert!(closed > 10, "only {closed} connections closed idle");
    assert!(backend.requests.load(Ordering::SeqCst) >= CLIENTS * REQUESTS);
}
