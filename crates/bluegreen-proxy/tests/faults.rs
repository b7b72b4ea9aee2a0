//! Client faults are the client's: a malformed or abandoned request body gets a
//! 400 (or nothing when the client left) and never counts against a group; the
//! proxy's own 503 for a group without a healthy backend does.

mod support;

use std::time::Duration;

use bluegreen_core::{GroupId, RouteTable};
use bluegreen_proxy::BackendSpec;
use support::*;
use tokio::io::AsyncWriteExt;

const HOST: &str = "web.production";

async fn blue(proxy: &RunningProxy) -> TestBackend {
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
    backend
}

fn errors(proxy: &RunningProxy) -> (Option<u64>, Option<u64>) {
    let serving = proxy.proxy.serving(HOST, &GroupId::from("blue")).unwrap();
    (serving.requests, serving.errors)
}

#[tokio::test]
async fn a_malformed_chunked_body_is_400_and_not_the_groups_error() {
    let proxy = RunningProxy::start(test_options()).await;
    let _backend = blue(&proxy).await;
    let reply = raw_exchange(
        proxy.addr,
        b"POST /body HTTP/1.1\r\nHost: web.production\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(reply.status(), Some(400), "{reply:?}");
    assert_eq!(errors(&proxy).1, Some(0), "a client fault counted as a 5xx");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_upload_is_not_the_groups_error() {
    let proxy = RunningProxy::start(test_options()).await;
    let backend = blue(&proxy).await;
    for _ in 0..3 {
        let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        stream
            .write_all(
                b"POST /body HTTP/1.1\r\nHost: web.production\r\nContent-Length: 100000\r\n\r\n",
            )
            .await
            .unwrap();
        stream.write_all(&[b'x'; 1000]).await.unwrap();
        assert!(
            eventually(Duration::from_secs(5), || backend.in_flight() == 1).await,
            "the upload reached the backend"
        );
        drop(stream);
        assert!(
            eventually(Duration::from_secs(5), || backend.in_flight() == 0).await,
            "the backend saw the upload end"
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        errors(&proxy).1,
        Some(0),
        "an abandoned upload counted as a 5xx"
    );
}

#[tokio::test]
async fn a_hold_that_ends_for_want_of_a_healthy_backend_counts_against_the_group() {
    let proxy =
        RunningProxy::start(test_options().with_hold_timeout(Duration::from_millis(100))).await;
    let backend = blue(&proxy).await;
    backend.set_healthy(false);
    assert!(
        eventually(Duration::from_secs(5), || proxy
            .proxy
            .serving(HOST, &"blue".into())
            .unwrap()
            .healthy
            == 0)
        .await
    );
    let (status, _, _) = get(&http1_client(), &proxy.url("/"), HOST, &[])
        .await
        .unwrap();
    assert_eq!(status, 503);
    assert_eq!(errors(&proxy), (Some(1), Some(1)));
}
