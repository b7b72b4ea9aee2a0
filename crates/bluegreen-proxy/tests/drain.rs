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
    let proxy = RunningProxy::start(test_options()).await;
    let blue_backend = TestBackend::start("blue", "i0").await;
    let green_backend = TestBackend::start("green", "i0").await;
    let (blue, green) = (GroupId::from("blue"), GroupId::from("green"));
    for (g, b) in [(&blue, &blue_backend), (&green, &green_backend)] {
        proxy
            .proxy
            .attach(HOST, g, &[BackendSpec::new(b.address())])
            .await
            .unwrap();
    }
    proxy
        .proxy
        .set_routes(HOST, &RouteTable::single(blue.clone()))
        .unwrap();
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
    let url = proxy.url("/slow?ms=500");
    let slow = tokio::spawn(async move { get(&http1_client(), &url, HOST, &[]).await });
    assert!(eventually(Duration::from_secs(5), || backend.in_flight() == 1).await);
    proxy.stop();
    let (status, _, body) = slow.await.unwrap().unwrap();
    assert_eq!((status.as_u16(), body.as_str()), (200, "blue i0"));
    proxy.task.take().unwrap().await.unwrap().unwrap();
    // the listener is closed: a new connection is refused
    assert!(tokio::net::TcpStream::connect(proxy.addr).await.is_err());
}
