//! Held requests: they complete when the app resumes or a healthy backend appears,
//! and get a 503 past the bound or when the queue is full.

mod support;

use std::time::Duration;

use bluegreen_core::GroupId;
use support::*;
use tokio::time::Instant;

const HOST: &str = "web.production";

async fn setup(options: bluegreen_proxy::ProxyOptions) -> (RunningProxy, TestBackend, GroupId) {
    let proxy = RunningProxy::start(options).await;
    let backend = TestBackend::start("blue", "i0").await;
    let blue = proxy.serve_from(HOST, "blue", backend.address()).await;
    (proxy, backend, blue)
}

#[tokio::test]
async fn paused_requests_proceed_on_resume() {
    let (proxy, _backend, _) = setup(test_options()).await;
    proxy.proxy.pause(HOST).unwrap();
    let url = proxy.url("/");
    let request = tokio::spawn(async move {
        let r = get(&http1_client(), &url, HOST, &[]).await;
        (r, Instant::now())
    });
    assert!(
        eventually(Duration::from_secs(5), || proxy.proxy.held() == 1).await,
        "the request is held"
    );
    let resumed = Instant::now();
    proxy.proxy.resume(HOST).unwrap();
    let (response, done) = request.await.unwrap();
    let (status, _, body) = response.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "blue i0");
    assert!(done >= resumed, "answered only after the resume");
    assert_eq!(proxy.proxy.held(), 0);
}

#[tokio::test]
async fn held_past_the_bound_get_503() {
    let options = test_options().with_hold_timeout(Duration::from_millis(300));
    let (proxy, _backend, _) = setup(options).await;
    proxy.proxy.pause(HOST).unwrap();
    let (status, headers, body) = get(&http1_client(), &proxy.url("/"), HOST, &[])
        .await
        .unwrap();
    assert_eq!(status, 503);
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    assert!(body.contains("held for 300 ms"), "{body}");
    assert!(body.contains("paused"), "{body}");
}

#[tokio::test]
async fn requests_wait_for_a_healthy_backend() {
    let (proxy, backend, blue) = setup(test_options()).await;
    backend.set_healthy(false);
    assert!(
        eventually(Duration::from_secs(5), || {
            proxy.proxy.serving(HOST, &blue).unwrap().healthy == 0
        })
        .await,
        "the backend goes unhealthy"
    );
    let url = proxy.url("/");
    let request = tokio::spawn(async move { get(&http1_client(), &url, HOST, &[]).await });
    assert!(eventually(Duration::from_secs(5), || proxy.proxy.held() == 1).await);
    backend.set_healthy(true);
    let (status, _, body) = request.await.unwrap().unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "blue i0");
}

#[tokio::test]
async fn a_full_queue_answers_503_at_once() {
    let options = test_options().with_max_held(1);
    let (proxy, _backend, _) = setup(options).await;
    proxy.proxy.pause(HOST).unwrap();
    let url = proxy.url("/");
    let first = tokio::spawn(async move { get(&http1_client(), &url, HOST, &[]).await });
    assert!(eventually(Duration::from_secs(5), || proxy.proxy.held() == 1).await);
    let (status, _, body) = get(&http1_client(), &proxy.url("/"), HOST, &[])
        .await
        .unwrap();
    assert_eq!(status, 503);
    assert!(body.contains("1 requests already wait"), "{body}");
    proxy.proxy.resume(HOST).unwrap();
    assert_eq!(first.await.unwrap().unwrap().0, 200);
}

#[tokio::test]
async fn a_switch_to_a_group_not_yet_healthy_holds_then_serves() {
    let options = test_options().with_hold_timeout(Duration::from_secs(10));
    let (proxy, _blue_backend, _) = setup(options).await;
    let green_backend = TestBackend::start("green", "i0").await;
    green_backend.set_healthy(false);
    proxy
        .serve_from(HOST, "green", green_backend.address())
        .await;
    let url = proxy.url("/");
    let request = tokio::spawn(async move { get(&http1_client(), &url, HOST, &[]).await });
    assert!(eventually(Duration::from_secs(5), || proxy.proxy.held() == 1).await);
    green_backend.set_healthy(true);
    let (status, _, body) = request.await.unwrap().unwrap();
    assert_eq!((status.as_u16(), body.as_str()), (200, "green i0"));
}
