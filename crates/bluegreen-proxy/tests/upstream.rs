//! A backend that stops answering: the upstream timeout, and requests that fail
//! over (or end with a 504) when their backend turns unhealthy.

mod support;

use std::time::Duration;

use bluegreen_proxy::BackendSpec;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use support::*;

const HOST: &str = "web.production";
/// Only stops a hung test.
const BOUND: Duration = Duration::from_secs(15);

async fn post(client: &TestClient, url: String) -> Result<(u16, String), String> {
    let request = Request::post(url)
        .header("host", HOST)
        .body(Full::new(Bytes::from_static(b"order=1")))
        .unwrap();
    let response = client
        .request(request)
        .await
        .map_err(|e| format!("{e:?}"))?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("{e:?}"))?;
    Ok((
        status,
        String::from_utf8_lossy(&body.to_bytes()).into_owned(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_never_answers_gets_504_within_the_upstream_timeout() {
    let options = test_options().with_upstream_timeout(Duration::from_millis(300));
    let proxy = RunningProxy::start(options).await;
    let silent = SilentBackend::start().await;
    let blue = proxy.serve_from(HOST, "blue", silent.address()).await;
    for client in [http1_client(), h2c_client()] {
        let (status, body) = tokio::time::timeout(BOUND, post(&client, proxy.url("/")))
            .await
            .expect("still waiting")
            .unwrap();
        assert_eq!(status, 504, "{body}");
        assert!(!body.contains("127.0.0.1"), "{body}");
    }
    let serving = proxy.proxy.serving(HOST, &blue).unwrap();
    assert_eq!((serving.requests, serving.errors), (Some(2), Some(2)));
    assert!(
        eventually(BOUND, || silent.hung() == 0).await,
        "{} backend connections still open",
        silent.hung()
    );
}

/// The upstream timer is the client connection's own, set again for each request:
/// after it fired for one request, the next request on the connection is bounded
/// by it anew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_of_a_connection_gets_its_own_upstream_timeout() {
    let options = test_options().with_upstream_timeout(Duration::from_millis(300));
    let proxy = RunningProxy::start(options).await;
    let silent = SilentBackend::start().await;
    let blue = proxy.serve_from(HOST, "blue", silent.address()).await;
    let client = http1_client();
    for _ in 0..3 {
        let (status, body) = tokio::time::timeout(BOUND, post(&client, proxy.url("/")))
            .await
            .expect("still waiting")
            .unwrap();
        assert_eq!(status, 504, "{body}");
    }
    let serving = proxy.proxy.serving(HOST, &blue).unwrap();
    assert_eq!((serving.requests, serving.errors), (Some(3), Some(3)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_on_a_backend_that_turns_unhealthy_fail_over_or_get_504() {
    let proxy = RunningProxy::start(test_options()).await;
    let silent = SilentBackend::start().await;
    let blue = proxy.serve_from(HOST, "blue", silent.address()).await;
    let get_url = proxy.url("/");
    let waiting_get = tokio::spawn(async move { get(&http1_client(), &get_url, HOST, &[]).await });
    let post_url = proxy.url("/");
    let waiting_post = tokio::spawn(async move { post(&http1_client(), post_url).await });
    assert!(
        eventually(BOUND, || silent.hung() == 2).await,
        "both requests reached the backend"
    );
    // a healthy backend joins the group, then the silent one fails its checks
    let good = TestBackend::start("blue", "i1").await;
    proxy
        .proxy
        .attach(
            HOST,
            &blue,
            &[
                BackendSpec::new(silent.address()),
                BackendSpec::new(good.address()),
            ],
        )
        .await
        .unwrap();
    silent.set_healthy(false);
    let (status, _, body) = tokio::time::timeout(BOUND, waiting_get)
        .await
        .expect("the GET still waits")
        .unwrap()
        .unwrap();
    assert_eq!(
        (status.as_u16(), body.as_str()),
        (200, "blue i1"),
        "the GET failed over"
    );
    let (status, body) = tokio::time::timeout(BOUND, waiting_post)
        .await
        .expect("the POST still waits")
        .unwrap()
        .unwrap();
    assert_eq!(status, 504, "{body}");
    assert!(eventually(BOUND, || silent.hung() == 0).await);
}
