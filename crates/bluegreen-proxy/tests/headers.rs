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

/// Blue routed, green attached without traffic, on `web.production`.
async fn blue_and_green(
    options: bluegreen_proxy::ProxyOptions,
) -> (RunningProxy, Vec<TestBackend>) {
    let proxy = RunningProxy::start(options).await;
    let (blue, green) = blue_routed_green_ready(&proxy.proxy, "web.production").await;
    (proxy, vec![blue, green])
}

#[tokio::test]
async fn previews_by_header_only_from_trusted_networks() {
    let options = test_options().with_hold_timeout(Duration::from_millis(100));
    let (proxy, _b) = blue_and_green(options).await;
    let client = http1_client();
    let url = proxy.url("/");
    let host = "web.production";
    // the public listener ignores the header: live traffic goes to the routed group
    let (_, _, body) = get(&client, &url, host, &[("x-bluegreen-preview", "green")])
        .await
        .unwrap();
    assert_eq!(body, "blue i0");
    let (status, _, body) = get(&client, &url, host, &[("x-bluegreen-preview", "red")])
        .await
        .unwrap();
    assert_eq!((status.as_u16(), body.as_str()), (200, "blue i0"));
    // and it does not serve a paused app
    proxy.proxy.pause(host).unwrap();
    let (status, _, body) = get(&client, &url, host, &[("x-bluegreen-preview", "green")])
        .await
        .unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(!body.contains("blue") && !body.contains("green"), "{body}");
    proxy.proxy.resume(host).unwrap();
    // nor does it reach a backend
    let (_, _, body) = get(
        &client,
        &proxy.url("/headers"),
        host,
        &[("x-bluegreen-preview", "blue")],
    )
    .await
    .unwrap();
    assert!(!body.contains("x-bluegreen-preview"), "{body}");

    // from a trusted network it previews, and an unknown name is not echoed
    let trusted = test_options().with_preview_header_from(vec!["127.0.0.1".parse().unwrap()]);
    let (proxy, _b) = blue_and_green(trusted).await;
    let (_, _, body) = get(
        &client,
        &proxy.url("/"),
        host,
        &[("x-bluegreen-preview", "green")],
    )
    .await
    .unwrap();
    assert_eq!(body, "green i0");
    let (status, _, body) = get(
        &client,
        &proxy.url("/"),
        host,
        &[("x-bluegreen-preview", "red")],
    )
    .await
    .unwrap();
    assert_eq!(status, 404);
    assert!(!body.contains("red"), "{body}");
}

fn header<'a>(dump: &'a str, name: &str) -> Vec<&'a str> {
    dump.lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
        .collect()
}

#[tokio::test]
async fn forwarded_headers_are_the_proxys_unless_from_a_trusted_proxy() {
    let spoofed = [
        ("x-forwarded-host", "evil.example"),
        ("x-forwarded-for", "6.6.6.6"),
        ("x-forwarded-proto", "https"),
        ("forwarded", "for=6.6.6.6;host=evil.example"),
    ];
    let (proxy, _b) = blue_and_green(test_options()).await;
    let (_, _, dump) = get(
        &http1_client(),
        &proxy.url("/headers"),
        "web.production",
        &spoofed,
    )
    .await
    .unwrap();
    assert_eq!(
        header(&dump, "x-forwarded-host"),
        ["web.production"],
        "{dump}"
    );
    assert_eq!(header(&dump, "x-forwarded-for"), ["127.0.0.1"], "{dump}");
    assert_eq!(header(&dump, "x-forwarded-proto"), ["http"], "{dump}");
    assert!(header(&dump, "forwarded").is_empty(), "{dump}");

    let behind_lb = test_options().with_trusted_proxies(vec!["127.0.0.0/8".parse().unwrap()]);
    let (proxy, _b) = blue_and_green(behind_lb).await;
    let (_, _, dump) = get(
        &http1_client(),
        &proxy.url("/headers"),
        "web.production",
        &spoofed,
    )
    .await
    .unwrap();
    assert_eq!(
        header(&dump, "x-forwarded-host"),
        ["evil.example"],
        "{dump}"
    );
    assert_eq!(
        header(&dump, "x-forwarded-for"),
        ["6.6.6.6, 127.0.0.1"],
        "{dump}"
    );
    assert_eq!(header(&dump, "x-forwarded-proto"), ["https"], "{dump}");
    assert_eq!(header(&dump, "forwarded").len(), 1, "{dump}");
}
