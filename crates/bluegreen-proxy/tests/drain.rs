//! Drain: requests in flight on the old group finish after a switch, and the old
//! group's keep-alive connections close once they are done.

mod support;

use std::time::Duration;

use bluegreen_core::{GroupId, RouteTable};
use bluegreen_proxy::BackendSpec;
use support::*;

const HOST: &str = "web.production";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_request_on_old_group_finishes_after_switch() {
    let (proxy, blue_backend, green_backend, _blue, green) =
        blue_then_green(Duration::from_secs(30)).await;
    // a keep-alive connection to blue, idle in the proxy's pool
    let client = http1_client();
    let (status, _, body) = get(&client, &proxy.url("/"), HOST, &[]).await.unwrap();
    assert_eq!((status.as_u16(), body.as_str()), (200, "blue i0"));

    let url = proxy.url("/slow?ms=800");
    let slow = tokio::spawn(async move { get(&http1_client(), &url, HOST, &[]).await });
    assert!(
        eventually(Duration::from_secs(5), || blue_backend.in_flight() == 1).await,
        "the slow request reached blue"
    );
    proxy
        .proxy
        .set_routes(HOST, &RouteTable::single(green.clone()))
        .unwrap();
    let (status, _, body) = get(&client, &proxy.url("/"), HOST, &[]).await.unwrap();
    assert_eq!((status.as_u16(), body.as_str()), (200, "green i0"));

    let (status, _, body) = slow.await.unwrap().unwrap();
    assert_eq!(
        (status.as_u16(), body.as_str()),
        (200, "blue i0"),
        "the old group finished its request"
    );
    assert!(
        eventually(Duration::from_secs(10), || blue_backend
            .proxied_connections()
            == 0)
        .await,
        "the old group's keep-alive connections closed ({} open)",
        blue_backend.proxied_connections()
    );
    assert!(
        green_backend.proxied_connections() >= 1,
        "green keeps its connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_requests_in_flight_finish() {
    let mut proxy = RunningProxy::start(test_options()).await;
    let backend = TestBackend::start("blue", "i0").await;
    let blue = GroupId::from("blue");
    proxy
        .proxy
        .attach(HOST, &blue, &[BackendSpec::new(backend.address())])
        .await
        .unwrap();
    proxy
        .proxy
        .set_routes(HOST, &RouteTable::single(blue))
        .unwrap();
    let preview = proxy
        .proxy
        .preview_address(HOST, &"blue".into())
        .expect("a preview listener");
    assert!(tokio::net::TcpStream::connect(preview).await.is_ok());
    let url = proxy.url("/slow?ms=500");
    let slow = tokio::spawn(async move { get(&http1_client(), &url, HOST, &[]).await });
    assert!(eventually(Duration::from_secs(5), || backend.in_flight() == 1).await);
    proxy.stop();
    let (status, _, body) = slow.await.unwrap().unwrap();
    assert_eq!((status.as_u16(), body.as_str()), (200, "blue i0"));
    proxy.task.take().unwrap().await.unwrap().unwrap();
    // the listeners are closed: a new connection is refused, on the preview too
    assert!(tokio::net::TcpStream::connect(proxy.addr).await.is_err());
    assert!(tokio::net::TcpStream::connect(preview).await.is_err());
}

/// A proxy with a short drain timeout, blue and green attached, blue routed.
async fn blue_then_green(
    drain_timeout: Duration,
) -> (RunningProxy, TestBackend, TestBackend, GroupId, GroupId) {
    let proxy = RunningProxy::start(test_options().with_drain_timeout(drain_timeout)).await;
    let (blue_backend, green_backend) = blue_routed_green_ready(&proxy.proxy, HOST).await;
    let (blue, green) = (GroupId::from("blue"), GroupId::from("green"));
    (proxy, blue_backend, green_backend, blue, green)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_past_the_drain_timeout_are_cut() {
    let (proxy, blue_backend, _green_backend, _blue, green) =
        blue_then_green(Duration::from_millis(300)).await;
    // one request waits for its headers, over HTTP/1.1 and over HTTP/2 (the
    // shared pool); the backend would answer after 20 s
    let mut waiting = Vec::new();
    for client in [http1_client(), h2c_client()] {
        let url = proxy.url("/slow?ms=20000");
        waiting.push(tokio::spawn(
            async move { get(&client, &url, HOST, &[]).await },
        ));
    }
    assert!(
        eventually(Duration::from_secs(5), || blue_backend.in_flight() == 2).await,
        "both requests reached blue"
    );
    proxy
        .proxy
        .set_routes(HOST, &RouteTable::single(green.clone()))
        .unwrap();
    for request in waiting {
        let (status, _, body) = request.await.unwrap().unwrap();
        assert_eq!(status, 504, "{body}");
        assert!(
            body.contains("drain timeout (300 ms)") && !body.contains("blue"),
            "{body}"
        );
    }
    let (_, _, body) = get(&http1_client(), &proxy.url("/"), HOST, &[])
        .await
        .unwrap();
    assert_eq!(body, "green i0");
    assert!(
        eventually(Duration::from_secs(10), || blue_backend
            .proxied_connections()
            == 0)
        .await,
        "blue still has {} proxied connections",
        blue_backend.proxied_connections()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_still_streaming_at_the_drain_timeout_ends_in_error() {
    let (proxy, _blue_backend, _green_backend, _blue, green) =
        blue_then_green(Duration::from_millis(300)).await;
    for (protocol, client) in [("HTTP/1.1", http1_client()), ("h2c", h2c_client())] {
        let request = http::Request::get(proxy.url("/drip?ms=20000"))
            .header("host", HOST)
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        let response = client.request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        let mut body = response.into_body();
        // the first bytes came through
        use http_body_util::BodyExt;
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&first[..], b"start ");
        proxy
            .proxy
            .set_routes(HOST, &RouteTable::single(green.clone()))
            .unwrap();
        let rest = tokio::time::timeout(Duration::from_secs(10), body.collect())
            .await
            .unwrap_or_else(|_| panic!("{protocol}: the body did not end within 10 s"));
        assert!(
            rest.is_err(),
            "{protocol}: the cut body ended as if whole: {rest:?}"
        );
        proxy
            .proxy
            .set_routes(HOST, &RouteTable::single("blue".into()))
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_back_within_the_drain_timeout_keeps_requests() {
    let (proxy, blue_backend, _green_backend, blue, green) =
        blue_then_green(Duration::from_millis(300)).await;
    let url = proxy.url("/slow?ms=1000");
    let slow = tokio::spawn(async move { get(&http1_client(), &url, HOST, &[]).await });
    assert!(eventually(Duration::from_secs(5), || blue_backend.in_flight() == 1).await);
    // switched away and back (a rollback) before the drain timeout
    proxy
        .proxy
        .set_routes(HOST, &RouteTable::single(green))
        .unwrap();
    proxy
        .proxy
        .set_routes(HOST, &RouteTable::single(blue))
        .unwrap();
    let (status, _, body) = slow.await.unwrap().unwrap();
    assert_eq!((status.as_u16(), body.as_str()), (200, "blue i0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgraded_connection_closes_at_the_drain_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (proxy, _blue_backend, _green_backend, _blue, green) =
        blue_then_green(Duration::from_millis(300)).await;
    let (mut stream, head) = open_echo_tunnel(proxy.addr, HOST).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    stream.write_all(b"ping").await.unwrap();
    let mut echoed = [0u8; 4];
    stream.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"ping");
    proxy
        .proxy
        .set_routes(HOST, &RouteTable::single(green))
        .unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest))
        .await
        .expect("the tunnel stayed open past the drain timeout");
    assert!(read.is_ok_and(|n| n == 0) || rest.is_empty(), "{rest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_attached_again_while_routed_still_drains_on_time() {
    use tokio::io::AsyncReadExt;
    let (proxy, blue_backend, _green_backend, blue, green) =
        blue_then_green(Duration::from_millis(300)).await;
    let (mut stream, head) = open_echo_tunnel(proxy.addr, HOST).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let url = proxy.url("/slow?ms=20000");
    let slow = tokio::spawn(async move { get(&http1_client(), &url, HOST, &[]).await });
    assert!(eventually(Duration::from_secs(5), || blue_backend.in_flight() == 1).await);
    // attached again while it has all the traffic, then switched away and detached
    proxy
        .proxy
        .attach(HOST, &blue, &[BackendSpec::new(blue_backend.address())])
        .await
        .unwrap();
    proxy
        .proxy
        .set_routes(HOST, &RouteTable::single(green))
        .unwrap();
    proxy.proxy.detach(HOST, &blue).unwrap();
    let (status, _, body) = tokio::time::timeout(Duration::from_secs(10), slow)
        .await
        .expect("the request on the old group outlived the drain timeout")
        .unwrap()
        .unwrap();
    assert_eq!(status, 504, "{body}");
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest))
        .await
        .expect("the tunnel stayed open past the drain timeout");
    assert!(read.is_ok_and(|n| n == 0) || rest.is_empty(), "{rest:?}");
}
