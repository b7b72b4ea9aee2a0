//! Client connections spread over single-threaded runtimes: requests, a switch
//! that drains the old group's connections, and a graceful shutdown.

mod support;

use std::time::Duration;

use bluegreen_core::{GroupId, RouteTable};
use support::*;

const HOST: &str = "web.production";

/// Single-threaded runtimes on threads of their own, ended when the test ends.
fn runtimes(
    n: usize,
) -> (
    Vec<tokio::runtime::Handle>,
    Vec<tokio::sync::oneshot::Sender<()>>,
) {
    let mut handles = Vec::new();
    let mut stops = Vec::new();
    for _ in 0..n {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        handles.push(runtime.handle().clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        stops.push(tx);
        std::thread::spawn(move || {
            runtime.block_on(async move {
                let _ = rx.await;
            })
        });
    }
    (handles, stops)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spread_connections_switch_drain_and_shut_down() {
    let (handles, _stops) = runtimes(2);
    let mut proxy = RunningProxy::start_spread(test_options(), handles).await;
    let (blue_backend, green_backend) = blue_routed_green_ready(&proxy.proxy, HOST).await;
    let green = GroupId::from("green");
    let clients: Vec<TestClient> = (0..4).map(|_| http1_client()).collect();
    for client in &clients {
        for _ in 0..5 {
            let (status, _, body) = get(client, &proxy.url("/"), HOST, &[]).await.unwrap();
            assert_eq!((status.as_u16(), body.as_str()), (200, "blue i0"));
        }
    }
    let url = proxy.url("/slow?ms=600");
    let slow = tokio::spawn(async move { get(&http1_client(), &url, HOST, &[]).await });
    assert!(eventually(Duration::from_secs(5), || blue_backend.in_flight() == 1).await);
    proxy
        .proxy
        .set_routes(HOST, &RouteTable::single(green.clone()))
        .unwrap();
    for client in &clients {
        let (status, _, body) = get(client, &proxy.url("/"), HOST, &[]).await.unwrap();
        assert_eq!((status.as_u16(), body.as_str()), (200, "green i0"));
    }
    let (status, _, body) = slow.await.unwrap().unwrap();
    assert_eq!((status.as_u16(), body.as_str()), (200, "blue i0"));
    assert!(
        eventually(Duration::from_secs(10), || blue_backend
            .proxied_connections()
            == 0)
        .await,
        "the old group's connections closed ({} open)",
        blue_backend.proxied_connections()
    );

    let url = proxy.url("/slow?ms=400");
    let slow = tokio::spawn(async move { get(&http1_client(), &url, HOST, &[]).await });
    assert!(eventually(Duration::from_secs(5), || green_backend.in_flight() == 1).await);
    proxy.stop();
    let (status, _, body) = slow.await.unwrap().unwrap();
    assert_eq!((status.as_u16(), body.as_str()), (200, "green i0"));
    drop(clients);
    proxy.task.take().unwrap().await.unwrap().unwrap();
}
