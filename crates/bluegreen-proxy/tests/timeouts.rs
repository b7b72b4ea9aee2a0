//! Bounds on every phase of a client connection: protocol detection and request
//! head, keep-alive idle (HTTP/1.1 and HTTP/2), request body stall, response send
//! stall (per connection, and per HTTP/2 stream); short bounds set through the
//! options.

mod support;

use std::time::Duration;

use bluegreen_core::RouteTable;
use bluegreen_proxy::{BackendSpec, ProxyOptions};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HOST: &str = "web.production";
/// Only stops a hung test: every bound under test is far shorter.
const BOUND: Duration = Duration::from_secs(10);
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const EMPTY_SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];

fn short() -> ProxyOptions {
    test_options()
        .with_header_timeout(Duration::from_millis(300))
        .with_idle_timeout(Duration::from_millis(300))
        .with_body_timeout(Duration::from_millis(300))
        .with_send_timeout(Duration::from_millis(300))
}

async fn proxy_with_blue(options: ProxyOptions) -> (RunningProxy, TestBackend) {
    let proxy = RunningProxy::start(options).await;
    let backend = TestBackend::start("blue", "i0").await;
    proxy
        .proxy
        .attach(HOST, &"blue".into(), &[BackendSpec::new(backend.address())])
        .await
        .unwrap();
    proxy
        .proxy
        .set_routes(HOST, &RouteTable::single("blue".into()))
        .unwrap();
    (proxy, backend)
}

/// Whether the proxy closes `stream` (EOF or reset) within [`BOUND`]; what it
/// sent meanwhile is returned too.
async fn closed_by_proxy(stream: &mut TcpStream) -> (bool, Vec<u8>) {
    let mut seen = Vec::new();
    let result = tokio::time::timeout(BOUND, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    (result.is_ok(), seen)
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed() {
    let (proxy, _b) = proxy_with_blue(short()).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    assert!(closed_by_proxy(&mut stream).await.0, "still open");
}

#[tokio::test]
async fn an_http2_preface_and_empty_settings_alone_are_closed() {
    let (proxy, _b) = proxy_with_blue(short()).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream.write_all(PREFACE).await.unwrap();
    stream.write_all(EMPTY_SETTINGS).await.unwrap();
    assert!(closed_by_proxy(&mut stream).await.0, "still open");
}

#[tokio::test]
async fn an_http2_connection_kept_alive_by_pings_alone_is_closed() {
    let (proxy, _b) = proxy_with_blue(short()).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream.write_all(PREFACE).await.unwrap();
    stream.write_all(EMPTY_SETTINGS).await.unwrap();
    // a PING every 100 ms, for at most the bound
    let (mut read, mut write) = stream.into_split();
    let pinging = tokio::spawn(async move {
        let ping = [0, 0, 8, 6, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8];
        for _ in 0..100 {
            if write.write_all(&ping).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let closed = tokio::time::timeout(BOUND, async {
        let mut buf = [0u8; 4096];
        while let Ok(n) = read.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
    pinging.abort();
    assert!(closed.is_ok(), "still open");
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed_after_a_request() {
    let (proxy, _b) = proxy_with_blue(short()).await;
    // HTTP/1.1
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: web.production\r\n\r\n")
        .await
        .unwrap();
    let (closed, seen) = closed_by_proxy(&mut stream).await;
    let seen = String::from_utf8_lossy(&seen);
    assert!(
        seen.starts_with("HTTP/1.1 200") && seen.ends_with("blue i0"),
        "{seen}"
    );
    assert!(closed, "still open");
    // h2c, through hyper's client: its connection ends when the proxy closes it
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    let request = http::Request::get("http://web.production/")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = send.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    drop(response);
    assert!(
        tokio::time::timeout(BOUND, conn).await.is_ok(),
        "the idle h2c connection is still open"
    );
}

#[tokio::test]
async fn a_request_head_sent_byte_by_byte_is_cut() {
    let (proxy, _b) = proxy_with_blue(short()).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: web.production\r\n")
        .await
        .unwrap();
    let (mut read, mut write) = stream.into_split();
    let dripping = tokio::spawn(async move {
        for _ in 0..100 {
            if write.write_all(b"X").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let closed = tokio::time::timeout(BOUND, async {
        let mut buf = [0u8; 4096];
        while let Ok(n) = read.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
    dripping.abort();
    assert!(closed.is_ok(), "still open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_request_body_gets_408_and_releases_the_backend() {
    let (proxy, backend) = proxy_with_blue(short()).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(
            b"POST /body HTTP/1.1\r\nHost: web.production\r\nContent-Length: 100\r\n\r\n0123456789",
        )
        .await
        .unwrap();
    let (closed, seen) = closed_by_proxy(&mut stream).await;
    let seen = String::from_utf8_lossy(&seen);
    assert!(seen.starts_with("HTTP/1.1 408"), "{seen}");
    assert!(closed);
    assert!(
        eventually(BOUND, || backend.in_flight() == 0).await,
        "the backend request is still open"
    );
    let serving = proxy.proxy.serving(HOST, &"blue".into()).unwrap();
    assert_eq!(serving.errors, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_and_tunnels_in_progress_outlive_the_idle_timeout() {
    let (proxy, _b) = proxy_with_blue(short()).await;
    let (status, _, body) = get(&http1_client(), &proxy.url("/slow?ms=1000"), HOST, &[])
        .await
        .unwrap();
    assert_eq!((status.as_u16(), body.as_str()), (200, "blue i0"));
    let (mut stream, head) = open_echo_tunnel(proxy.addr, HOST).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stream.write_all(b"ping").await.unwrap();
    let mut echoed = [0u8; 4];
    tokio::time::timeout(BOUND, stream.read_exact(&mut echoed))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echoed, b"ping");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_cut_with_its_backend_connection() {
    let (proxy, backend) = proxy_with_blue(short()).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"GET /big?kb=16384 HTTP/1.1\r\nHost: web.production\r\n\r\n")
        .await
        .unwrap();
    assert!(
        eventually(BOUND, || backend.proxied_connections() == 1).await,
        "the request reached the backend"
    );
    assert!(
        eventually(BOUND, || backend.proxied_connections() == 0).await,
        "the backend connection is still open"
    );
    // the client connection ends short of the whole body
    let (closed, seen) = closed_by_proxy(&mut stream).await;
    assert!(closed, "the client connection is still open");
    assert!(seen.len() < 16 << 20, "the whole body came");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_stream_stuck_on_a_closed_window_is_reset_with_its_backend_request() {
    let (proxy, backend) = proxy_with_blue(short()).await;
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    let request = http::Request::get("http://web.production/big?kb=16384")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    // the response is never read: its window stays closed
    let response = send.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        eventually(BOUND, || backend.proxied_connections() == 0).await,
        "the backend connection is still open"
    );
    // the stream ends with an error after what its window let through, and the
    // connection stays open
    let body = tokio::time::timeout(
        BOUND,
        http_body_util::BodyExt::collect(response.into_body()),
    )
    .await
    .expect("the stream neither ended nor failed");
    assert!(body.is_err(), "the stream ended as if whole");
    assert!(!conn.is_finished(), "the client connection ended");
    drop(send);
}

/// A GET of `path` on an HTTP/2 connection; its response head.
async fn h2_get(client: &h2::client::SendRequest<bytes::Bytes>, path: &str) -> h2::RecvStream {
    let mut ready = client.clone().ready().await.unwrap();
    let request = http::Request::get(format!("http://{HOST}{path}"))
        .body(())
        .unwrap();
    let (response, _) = ready.send_request(request, true).unwrap();
    let response = tokio::time::timeout(BOUND, response)
        .await
        .expect("no response head")
        .unwrap();
    assert_eq!(response.status(), 200, "{path}");
    response.into_body()
}

/// Reads `body` to its end, opening the window as it goes.
async fn h2_read_all(body: &mut h2::RecvStream) -> Result<Vec<u8>, h2::Error> {
    let mut all = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        all.extend_from_slice(&chunk);
    }
    Ok(all)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_stream_stuck_on_its_window_is_reset_alone() {
    let (proxy, backend) = proxy_with_blue(short()).await;
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    // a stream window of 1 KiB, never opened on the stream left unread; the
    // connection's window (64 KiB) leaves room for the others
    let (client, connection) = h2::client::Builder::new()
        .initial_window_size(1024)
        .handshake::<_, bytes::Bytes>(tcp)
        .await
        .unwrap();
    let connection = tokio::spawn(connection);
    let mut stuck = h2_get(&client, "/big?kb=16384").await;
    // a stream in progress past the send timeout: "start " now, "end" in 1.5 s
    let mut slow = h2_get(&client, "/drip?ms=1500").await;
    assert!(
        eventually(BOUND, || backend.proxied_connections() == 2).await,
        "both requests reached the backend"
    );
    // the stuck stream is reset: what it got within its window, then the reset
    let ended = tokio::time::timeout(BOUND, async {
        loop {
            match stuck.data().await {
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Some(e),
                None => return None,
            }
        }
    })
    .await
    .expect("the stuck stream was neither reset nor ended");
    let error = ended.expect("the stuck stream ended as if whole");
    assert_eq!(error.reason(), Some(h2::Reason::CANCEL), "{error}");
    // its backend request is released; the other one goes on
    assert!(
        eventually(BOUND, || backend.proxied_connections() == 1).await,
        "the stuck stream's backend connection is still open"
    );
    let body = h2_read_all(&mut slow)
        .await
        .expect("the other stream failed");
    assert_eq!(body, b"start end");
    // and the connection still serves new streams
    let mut next = h2_get(&client, "/").await;
    assert_eq!(h2_read_all(&mut next).await.unwrap(), b"blue i0");
    assert!(!connection.is_finished(), "the connection ended");
}

/// A response small enough to be the stream's whole body in one frame (8 KiB),
/// to a client whose stream window is closed (0) or smaller than it (1 KiB) and
/// never opened: the stream is reset at the send timeout although the body has
/// nothing more to give, and the connection, with no stream left, closes at the
/// idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_body_whose_last_frame_waits_for_window_is_reset() {
    for window in [0, 1024] {
        let (proxy, _backend) = proxy_with_blue(short()).await;
        let tcp = TcpStream::connect(proxy.addr).await.unwrap();
        let (client, connection) = h2::client::Builder::new()
            .initial_window_size(window)
            .handshake::<_, bytes::Bytes>(tcp)
            .await
            .unwrap();
        let connection = tokio::spawn(connection);
        let mut stuck = h2_get(&client, "/big?kb=8").await;
        let mut got = 0;
        let ended = tokio::time::timeout(BOUND, async {
            loop {
                match stuck.data().await {
                    Some(Ok(chunk)) => got += chunk.len(),
                    Some(Err(e)) => return Some(e),
                    None => return None,
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("window {window}: the stream was neither reset nor ended"));
        let error =
            ended.unwrap_or_else(|| panic!("window {window}: the stream ended as if whole"));
        assert_eq!(
            error.reason(),
            Some(h2::Reason::CANCEL),
            "window {window}: {error}"
        );
        assert!(got <= window as usize, "window {window}: {got} bytes came");
        let closed = tokio::time::timeout(BOUND, connection).await;
        assert!(
            closed.is_ok(),
            "window {window}: the connection is still open"
        );
        drop(client);
    }
}
