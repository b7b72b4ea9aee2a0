//! Request headers the proxy judges: `Host` (one, and the target's authority
//! wins), previews only where trusted, forwarded headers set by the proxy.

mod support;

use std::time::Duration;

use bluegreen_core::{GroupId, RouteTable};
use bluegreen_proxy::{BackendSpec, Proxy};
use bytes::Bytes;
use http::{Request, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;

/// Apps `a.test` (group `a`) and `b.test` (group `b`), one backend each.
async fn two_apps(proxy: &Proxy) -> Vec<TestBackend> {
    let mut backends = Vec::new();
    for name in ["a", "b"] {
        let backend = TestBackend::start(name, "i0").await;
        let host = format!("{name}.test");
        proxy
            .attach(
                &host,
                &GroupId::from(name),
                &[BackendSpec::new(backend.address())],
            )
            .await
            .unwrap();
        proxy
            .set_routes(&host, &RouteTable::single(name.into()))
            .unwrap();
        backends.push(backend);
    }
    backends
}

const BOUND: Duration = Duration::from_secs(10);

#[tokio::test]
async fn more_than_one_host_is_400() {
    let proxy = RunningProxy::start(test_options()).await;
    let _b = two_apps(&proxy.proxy).await;
    for request in [
        &b"GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\nConnection: close\r\n\r\n"[..],
        &b"GET / HTTP/1.1\r\nHost: a.test\r\nHost: a.test\r\nConnection: close\r\n\r\n"[..],
        &b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n"[..],
    ] {
        let reply = raw_exchange(proxy.addr, request, BOUND).await;
        assert_eq!(reply.status(), Some(400), "{reply:?}");
        assert!(!reply.text.contains(" i0"), "forwarded: {reply:?}");
    }
    // HTTP/1.0 may omit it: the default app serves
    let reply = raw_exchange(proxy.addr, b"GET / HTTP/1.0\r\n\r\n", BOUND).await;
    assert!(reply.text.ends_with("\r\n\r\na i0"), "{reply:?}");
}

#[tokio::test]
async fn the_targets_authority_wins_over_host() {
    let proxy = RunningProxy::start(test_options()).await;
    let _b = two_apps(&proxy.proxy).await;
    let reply = raw_exchange(
        proxy.addr,
        b"GET http://a.test/ HTTP/1.1\r\nHost: b.test\r\nConnection: close\r\n\r\n",
        BOUND,
    )
    .await;
    assert!(reply.text.ends_with("\r\n\r\na i0"), "{reply:?}");
    let reply = raw_exchange(
        proxy.addr,
        b"GET http://a.test/headers HTTP/1.1\r\nHost: b.test\r\nConnection: close\r\n\r\n",
        BOUND,
    )
    .await;
    assert!(reply.text.contains("\nhost: a.test\n"), "{reply:?}");
    assert!(!reply.text.contains("b.test"), "{reply:?}");

    // HTTP/2: `:authority a.test` with `host: b.test`
    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    for path in ["/", "/headers"] {
        let request = Request::get(format!("http://a.test{path}"))
            .version(Version::HTTP_2)
            .header("host", "b.test")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = send.send_request(request).await.unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8_lossy(&body);
        if path == "/" {
            assert_eq!(body, "a i0");
        } else {
            assert!(
                body.contains("host: a.test\n") && !body.contains("b.test"),
                "{body}"
            );
        }
    }
}
