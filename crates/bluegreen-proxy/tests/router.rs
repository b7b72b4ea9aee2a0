//! `ProxyRouter` against the `Router` contract, in process and through the admin
//! API, with real backends on loopback.

mod support;

use std::time::Duration;

use bluegreen_core::{App, ErrorKind, GroupId, Health, Instance, RouteTable, Router};
use bluegreen_proxy::{admin, AdminAddr, AdminListener, AdminToken, ProxyRouter};
use bluegreen_testkit::conformance::router_contract;
use support::*;

async fn group(name: &str, n: usize) -> ((GroupId, Vec<Instance>), Vec<TestBackend>) {
    let mut backends = Vec::new();
    let mut instances = Vec::new();
    for i in 0..n {
        let b = TestBackend::start(name, &format!("i{i}")).await;
        instances.push(Instance::new(
            format!("{name}-i{i}").as_str(),
            Some(b.address()),
            Health::Healthy,
        ));
        backends.push(b);
    }
    ((GroupId::from(name), instances), backends)
}

/// Starts an admin API for `proxy` on a loopback port; returns its URL.
async fn start_admin(proxy: &RunningProxy, token: &AdminToken) -> String {
    let listener = AdminListener::bind(&"127.0.0.1:0".parse::<AdminAddr>().unwrap(), false)
        .await
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(admin::serve(
        proxy.proxy.clone(),
        listener,
        token.clone(),
        std::future::pending(),
    ));
    url
}

async fn own_checks(router: &dyn Router) {
    let app = App::new("web", "production").unwrap();
    let (a, _ab) = group("web-production-v001", 2).await;
    let (b, mut bb) = group("web-production-v002", 1).await;
    router_contract(router, &app, a.clone(), b.clone()).await;

    // instances without address are refused
    let no_address = [Instance::new("i-x", None, Health::Healthy)];
    let e = router.attach(&app, &a.0, &no_address).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid, "{e}");
    assert!(e.to_string().contains("instances[0].address"), "{e}");

    // serving comes from the proxy's own checks, not from the instances' health
    bb[0].set_healthy(false);
    let mut claimed = b.1.clone();
    claimed[0].health = Health::Healthy;
    router.attach(&app, &b.0, &claimed).await.unwrap();
    let serving = router.serving(&app, &b.0).await.unwrap();
    assert_eq!((serving.healthy, serving.total), (0, 1), "{serving:?}");
    bb[0].set_healthy(true);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while router.serving(&app, &b.0).await.unwrap().healthy != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never healthy again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // attach replaces the members
    router.attach(&app, &b.0, &a.1).await.unwrap();
    assert_eq!(router.serving(&app, &b.0).await.unwrap().total, 2);
    router.attach(&app, &b.0, &[]).await.unwrap();
    assert_eq!(router.serving(&app, &b.0).await.unwrap().total, 0);
    bb[0].kill();
    router.detach(&app, &b.0).await.unwrap();
    assert!(router.routes(&app).await.unwrap().is_empty());
    // an unknown app has the empty table
    let other = App::new("never", "seen").unwrap();
    assert_eq!(router.routes(&other).await.unwrap(), RouteTable::empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_router_keeps_the_contract() {
    let proxy = RunningProxy::start(test_options()).await;
    let router = ProxyRouter::embedded(proxy.proxy.clone());
    assert!(router.capabilities().weighted_routing);
    assert!(router.capabilities().holds_requests);
    own_checks(&router).await;
    // through a Box<dyn Router> too
    let boxed: Box<dyn Router> = Box::new(router);
    own_checks(boxed.as_ref()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_router_keeps_the_contract() {
    let proxy = RunningProxy::start(test_options()).await;
    let token = AdminToken::new("test-token-0123456789").unwrap();
    let url = start_admin(&proxy, &token).await;
    let router = ProxyRouter::remote(&url, token).unwrap();
    let debug = format!("{router:?}");
    assert!(!debug.contains("test-token-0123456789"), "{debug}");
    own_checks(&router).await;

    // a wrong token is a permission error
    let wrong = ProxyRouter::remote(&url, AdminToken::new("wrong-token-000").unwrap()).unwrap();
    let app = App::new("web", "production").unwrap();
    let e = wrong.routes(&app).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_host_function_picks_the_host() {
    let proxy = RunningProxy::start(test_options()).await;
    let router = ProxyRouter::embedded(proxy.proxy.clone())
        .with_host_fn(|app| format!("{}.example.test", app.slug()));
    let app = App::new("api", "staging").unwrap();
    let ((g, instances), _b) = group("api-staging-v001", 1).await;
    router.attach(&app, &g, &instances).await.unwrap();
    router
        .set_routes(&app, &RouteTable::single(g.clone()))
        .await
        .unwrap();
    let (status, _, body) = get(
        &http1_client(),
        &proxy.url("/"),
        "api-staging.example.test",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(
        (status.as_u16(), body.as_str()),
        (200, "api-staging-v001 i0")
    );
    assert_eq!(
        proxy.proxy.routes("api-staging.example.test").unwrap(),
        RouteTable::single(g)
    );
}

/// Apps whose slugs or hosts come close (`a-b`.`c`, `a`.`bc`, `ab`.`c`, `a`.`b`), on
/// one proxy: each host reaches its own app's group. `a`.`b-c`, which shared the
/// slug `a-b-c` with `a-b`.`c`, is no app at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_with_close_names_are_each_served_on_their_own_host() {
    use bluegreen_core::{Generation, Group};
    let proxy = RunningProxy::start(test_options()).await;
    let router = ProxyRouter::embedded(proxy.proxy.clone());
    let e = App::new("a", "b-c").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid, "{e}");
    assert!(e.to_string().contains("app.environment"), "{e}");
    let apps = [
        ("a-b", "c"),
        ("a", "bc"),
        ("ab", "c"),
        ("a", "b"),
        ("a-b-c", "d"),
    ]
    .map(|(n, e)| App::new(n, e).unwrap());
    let mut backends = Vec::new();
    for app in &apps {
        let id = Group::id_for(app, Generation(1));
        let ((g, instances), b) = group(id.as_str(), 1).await;
        backends.push(b);
        router.attach(app, &g, &instances).await.unwrap();
        router
            .set_routes(app, &RouteTable::single(g.clone()))
            .await
            .unwrap();
    }
    let client = http1_client();
    for app in &apps {
        let host = router.host_of(app);
        let id = Group::id_for(app, Generation(1));
        assert_eq!(
            router.routes(app).await.unwrap(),
            RouteTable::single(id.clone())
        );
        for _ in 0..3 {
            let (status, _, body) = get(&client, &proxy.url("/"), &host, &[]).await.unwrap();
            assert_eq!(
                (status.as_u16(), body.as_str()),
                (200, format!("{id} i0").as_str()),
                "Host: {host}"
            );
        }
    }
}

/// Every attached group gets a preview address that serves it alone; it closes
/// when the group is detached.
async fn preview_checks(router: &ProxyRouter, proxy: &RunningProxy) {
    assert!(router.capabilities().preview);
    let app = App::new("shop", "production").unwrap();
    let host = router.host_of(&app);
    let ((live, live_instances), _lb) = group("shop-production-v001", 1).await;
    let ((new, new_instances), _nb) = group("shop-production-v002", 2).await;
    router.attach(&app, &live, &live_instances).await.unwrap();
    router
        .set_routes(&app, &RouteTable::single(live.clone()))
        .await
        .unwrap();
    let attachment = router.attach(&app, &new, &new_instances).await.unwrap();
    let preview = attachment.preview.expect("a preview address");
    assert!(preview.starts_with("http://127.0.0.1:"), "{preview}");

    let client = http1_client();
    // users still reach the live group; the preview reaches the new one, whatever
    // the Host header says, on both of its backends
    let (_, _, body) = get(&client, &proxy.url("/"), &host, &[]).await.unwrap();
    assert_eq!(body, "shop-production-v001 i0");
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..4 {
        let (status, _, body) = get(&client, &preview, "anything.example", &[])
            .await
            .unwrap();
        assert_eq!(status, 200, "{body}");
        seen.insert(body);
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        ["shop-production-v002 i0", "shop-production-v002 i1"]
    );
    // attaching again keeps the same preview address
    let again = router.attach(&app, &new, &new_instances).await.unwrap();
    assert_eq!(again.preview.as_deref(), Some(preview.as_str()));
    // a paused app holds its users, not its previews
    proxy.proxy.pause(&host).unwrap();
    let (status, _, _) = get(&client, &preview, &host, &[]).await.unwrap();
    assert_eq!(status, 200);
    proxy.proxy.resume(&host).unwrap();

    router.detach(&app, &new).await.unwrap();
    let address = preview
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    assert!(
        eventually(Duration::from_secs(5), || std::net::TcpStream::connect(
            &address
        )
        .is_err())
        .await,
        "the preview listener of a detached group still accepts"
    );
    router.set_routes(&app, &RouteTable::empty()).await.unwrap();
    router.detach(&app, &live).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_are_previewed_on_their_own_port() {
    let proxy = RunningProxy::start(test_options()).await;
    let embedded = ProxyRouter::embedded(proxy.proxy.clone());
    preview_checks(&embedded, &proxy).await;
    let token = AdminToken::new("test-token-0123456789").unwrap();
    let url = start_admin(&proxy, &token).await;
    preview_checks(&ProxyRouter::remote(&url, token).unwrap(), &proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn previews_can_be_turned_off() {
    let proxy = RunningProxy::start(test_options().with_preview_bind(None)).await;
    let router = ProxyRouter::embedded(proxy.proxy.clone());
    assert!(!router.capabilities().preview);
    let app = App::new("web", "production").unwrap();
    let ((g, instances), _b) = group("web-production-v001", 1).await;
    let attachment = router.attach(&app, &g, &instances).await.unwrap();
    assert_eq!(attachment.preview, None);
    assert_eq!(proxy.proxy.preview_address("web.production", &g), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_router_over_a_unix_socket_keeps_the_contract() {
    let proxy = RunningProxy::start(test_options()).await;
    let dir = bluegreen_testkit::scratch::Scratch::new("proxy-admin");
    let socket = dir.join("admin.sock");
    let token = AdminToken::new("test-token-0123456789").unwrap();
    let listener = AdminListener::bind(&AdminAddr::Unix(socket.clone()), false)
        .await
        .unwrap();
    tokio::spawn(admin::serve(
        proxy.proxy.clone(),
        listener,
        token.clone(),
        std::future::pending(),
    ));
    let router = ProxyRouter::remote(&format!("unix:{}", socket.display()), token).unwrap();
    assert!(format!("{router:?}").contains("unix:"), "{router:?}");
    own_checks(&router).await;
    preview_checks(&router, &proxy).await;
    drop(dir);
}

#[test]
fn remote_admin_urls_are_checked() {
    let token = || AdminToken::new("test-token-0123456789").unwrap();
    for (url, problem) in [
        ("127.0.0.1:8081", "neither"),
        ("https://127.0.0.1:8081", "neither"),
        ("http://127.0.0.1", "neither"),
        ("unix:", "needs a socket path"),
        ("http://[::1", "is not a URL"),
    ] {
        let e = ProxyRouter::remote(url, token()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Invalid, "{url}: {e}");
        let text = e.to_string();
        assert!(
            text.contains("admin_url") && text.contains(problem),
            "{url}: {text}"
        );
    }
    assert!(ProxyRouter::remote("http://localhost:8081/", token()).is_ok());
    assert!(ProxyRouter::remote("unix:/run/bluegreen-proxy.sock", token()).is_ok());
}

/// A router whose embedded proxy was dropped fails at once, saying why, instead of
/// letting a deployment succeed while nothing serves.
#[tokio::test]
async fn the_router_of_a_dropped_embedded_proxy_fails_and_says_why() {
    let router = bluegreen_proxy::EmbeddedProxy::start(
        "127.0.0.1:0".parse().unwrap(),
        bluegreen_proxy::ProxyOptions::default(),
    )
    .await
    .unwrap()
    .router();
    let app = bluegreen_core::App::new("web", "production").unwrap();
    let e = bluegreen_core::Router::routes(&router, &app)
        .await
        .unwrap_err();
    assert!(!e.is_retryable(), "{e}");
    assert!(e.to_string().contains("has stopped"), "{e}");
    assert!(e.to_string().contains("keep it alive"), "{e}");
}
