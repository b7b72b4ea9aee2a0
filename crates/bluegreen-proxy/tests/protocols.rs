//! Protocols and routing details: h2c, TLS with ALPN, upgrades, host selection,
//! sticky weighted splits, previews and retries on a dead backend.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bluegreen_core::{GroupId, RouteTable};
use bluegreen_proxy::{BackendSpec, Proxy, TlsConfig, GROUP_COOKIE, PREVIEW_HEADER};
use bytes::Bytes;
use http::{Request, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HOST: &str = "web.production";

async fn one_group(proxy: &Proxy, host: &str, group: &str, n: usize) -> Vec<TestBackend> {
    let mut backends = Vec::new();
    for i in 0..n {
        backends.push(TestBackend::start(group, &format!("i{i}")).await);
    }
    let specs: Vec<BackendSpec> = backends
        .iter()
        .map(|b| BackendSpec::new(b.address()))
        .collect();
    proxy
        .attach(host, &GroupId::from(group), &specs)
        .await
        .unwrap();
    backends
}

#[tokio::test]
async fn h2c_and_http1_both_reach_the_backend() {
    let proxy = RunningProxy::start(test_options()).await;
    let _b = one_group(&proxy.proxy, HOST, "blue", 1).await;
    proxy
        .proxy
        .set_routes(HOST, &RouteTable::single("blue".into()))
        .unwrap();
    for client in [http1_client(), h2c_client()] {
        let (status, _, body) = get(&client, &proxy.url("/"), HOST, &[]).await.unwrap();
        assert_eq!((status.as_u16(), body.as_str()), (200, "blue i0"));
    }
    // a request body streams through, over HTTP/2 too
    let request = Request::post(proxy.url("/body"))
        .header("host", HOST)
        .body(Full::new(Bytes::from(vec![b'x'; 100_000])))
        .unwrap();
    let response = h2c_client().request(request).await.unwrap();
    assert_eq!(response.version(), Version::HTTP_2);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "blue i0 100000");
}

#[tokio::test]
async fn hosts_pick_apps_and_the_first_app_is_the_default() {
    let proxy = RunningProxy::start(test_options()).await;
    let _a = one_group(&proxy.proxy, "web.production", "web-v1", 1).await;
    let _b = one_group(&proxy.proxy, "api.production", "api-v1", 1).await;
    proxy
        .proxy
        .set_routes("web.production", &RouteTable::single("web-v1".into()))
        .unwrap();
    proxy
        .proxy
        .set_routes("api.production", &RouteTable::single("api-v1".into()))
        .unwrap();
    let client = http1_client();
    for (host, expected) in [
        ("api.production", "api-v1 i0"),
        ("API.production:8080", "api-v1 i0"),
        ("web.production", "web-v1 i0"),
        ("unknown.example", "web-v1 i0"),
    ] {
        let (status, _, body) = get(&client, &proxy.url("/"), host, &[]).await.unwrap();
        assert_eq!((status.as_u16(), body.as_str()), (200, expected), "{host}");
    }
    assert_eq!(proxy.proxy.default_app().as_deref(), Some("web.production"));
    proxy.proxy.set_default_app("api.production").unwrap();
    let (_, _, body) = get(&client, &proxy.url("/"), "unknown.example", &[])
        .await
        .unwrap();
    assert_eq!(body, "api-v1 i0");
}

#[tokio::test]
async fn weighted_splits_are_sticky() {
    let proxy = RunningProxy::start(test_options()).await;
    let _a = one_group(&proxy.proxy, HOST, "blue", 1).await;
    let _b = one_group(&proxy.proxy, HOST, "green", 1).await;
    let split = RouteTable::weighted([("blue".into(), 50), ("green".into(), 50)]).unwrap();
    proxy.proxy.set_routes(HOST, &split).unwrap();
    let client = http1_client();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..40 {
        let (status, headers, body) = get(&client, &proxy.url("/"), HOST, &[]).await.unwrap();
        assert_eq!(status, 200);
        let group = body.split(' ').next().unwrap().to_owned();
        let cookie = headers["set-cookie"].to_str().unwrap();
        assert!(
            cookie.starts_with(&format!("{GROUP_COOKIE}={group};")),
            "{cookie}"
        );
        seen.insert(group);
    }
    assert_eq!(
        seen.len(),
        2,
        "a 50/50 split reaches both groups in 40 tries"
    );
    for group in ["blue", "green"] {
        let cookie = format!("a=b; {GROUP_COOKIE}={group}");
        for _ in 0..10 {
            let (_, headers, body) = get(&client, &proxy.url("/"), HOST, &[("cookie", &cookie)])
                .await
                .unwrap();
            assert_eq!(body, format!("{group} i0"));
            assert!(!headers.contains_key("set-cookie"));
        }
        let (_, _, body) = get(
            &client,
            &proxy.url("/"),
            HOST,
            &[("x-bluegreen-group", group)],
        )
        .await
        .unwrap();
        assert_eq!(body, format!("{group} i0"));
    }
    // a cookie naming a group without weight is ignored
    proxy
        .proxy
        .set_routes(HOST, &RouteTable::single("green".into()))
        .unwrap();
    for _ in 0..10 {
        let cookie = format!("{GROUP_COOKIE}=blue");
        let (_, headers, body) = get(&client, &proxy.url("/"), HOST, &[("cookie", &cookie)])
            .await
            .unwrap();
        assert_eq!(body, "green i0");
        assert!(
            !headers.contains_key("set-cookie"),
            "no cookie without a split"
        );
    }
}

#[tokio::test]
async fn previews_reach_a_group_without_traffic() {
    // the header is honoured from a trusted network only
    let options = test_options().with_preview_header_from(vec!["127.0.0.0/8".parse().unwrap()]);
    let proxy = RunningProxy::start(options).await;
    let _a = one_group(&proxy.proxy, HOST, "blue", 1).await;
    let _b = one_group(&proxy.proxy, HOST, "green", 1).await;
    proxy
        .proxy
        .set_routes(HOST, &RouteTable::single("blue".into()))
        .unwrap();
    let client = http1_client();
    let (_, _, body) = get(&client, &proxy.url("/"), HOST, &[(PREVIEW_HEADER, "green")])
        .await
        .unwrap();
    assert_eq!(body, "green i0");
    let (status, _, body) = get(&client, &proxy.url("/"), HOST, &[(PREVIEW_HEADER, "red")])
        .await
        .unwrap();
    assert_eq!(status, 404);
    assert!(
        body.contains("no such preview") && !body.contains("red"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_backend_is_retried_on_another() {
    // slow checks: only the passive check can notice the dead backend in time
    let options = bluegreen_proxy::ProxyOptions::default().with_health(
        bluegreen_proxy::HealthCheckOptions::default().with_interval(Duration::from_secs(60)),
    );
    let proxy = RunningProxy::start(options).await;
    let mut backends = one_group(&proxy.proxy, HOST, "blue", 2).await;
    proxy
        .proxy
        .set_routes(HOST, &RouteTable::single("blue".into()))
        .unwrap();
    backends[0].kill();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let client = http1_client();
    for _ in 0..10 {
        let (status, _, body) = get(&client, &proxy.url("/"), HOST, &[]).await.unwrap();
        assert_eq!((status.as_u16(), body.as_str()), (200, "blue i1"));
        // a POST whose body was never sent is retried too
        let request = Request::post(proxy.url("/body"))
            .header("host", HOST)
            .body(Full::new(Bytes::from_static(b"hello")))
            .unwrap();
        let response = client.request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "blue i1 5");
    }
    let serving = proxy.proxy.serving(HOST, &"blue".into()).unwrap();
    assert_eq!((serving.healthy, serving.total), (1, 2));
    assert_eq!(serving.errors, Some(0));
}

#[tokio::test]
async fn upgrades_pass_through() {
    let proxy = RunningProxy::start(test_options()).await;
    let _b = one_group(&proxy.proxy, HOST, "blue", 1).await;
    proxy
        .proxy
        .set_routes(HOST, &RouteTable::single("blue".into()))
        .unwrap();
    let (mut stream, head) = open_echo_tunnel(proxy.addr, HOST).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: echo"),
        "{head}"
    );
    stream.write_all(b"ping through the tunnel").await.unwrap();
    let mut echoed = vec![0u8; 23];
    stream.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"ping through the tunnel");
}

#[tokio::test]
async fn tls_with_alpn_h2_and_http1() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let tls = TlsConfig::from_pem(
        certified.cert.pem().as_bytes(),
        certified.key_pair.serialize_pem().as_bytes(),
    )
    .unwrap();
    assert!(TlsConfig::from_pem(b"nothing", b"nothing").is_err());
    let proxy = Proxy::new(test_options());
    let _b = one_group(&proxy, HOST, "blue", 1).await;
    proxy
        .set_routes(HOST, &RouteTable::single("blue".into()))
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let p = proxy.clone();
    let server = tokio::spawn(async move {
        p.serve(listener, Some(tls), async move {
            let _ = stopped.await;
        })
        .await
    });

    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    for alpn in [&b"h2"[..], &b"http/1.1"[..]] {
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let stream = connector.connect(name, tcp).await.unwrap();
        assert_eq!(stream.get_ref().1.alpn_protocol(), Some(alpn));
        let io = TokioIo::new(stream);
        let request = |version| {
            Request::get(format!("https://{HOST}/"))
                .version(version)
                .header("host", HOST)
                .body(Full::new(Bytes::new()))
                .unwrap()
        };
        let response = if alpn == b"h2" {
            let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .unwrap();
            tokio::spawn(conn);
            send.send_request(request(Version::HTTP_2)).await.unwrap()
        } else {
            let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            send.send_request(request(Version::HTTP_11)).await.unwrap()
        };
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "blue i0");
    }
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
