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
