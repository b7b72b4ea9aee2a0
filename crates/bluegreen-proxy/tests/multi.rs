//! Several apps switched as one: the multi-app admin request is all or nothing,
//! `Router::set_routes_many` keeps the same rules in process and through the admin
//! API, and route generations pin a user request that crosses apps through the
//! proxy, so that it never sees a new `web` with an old `api` (real `sample-app`
//! processes on loopback).

mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bluegreen_core::{
    App, Attachment, CheckedRouter, ErrorKind, GroupId, Health, Instance, Result, RouteTable,
    Router, RouterCapabilities, Serving,
};
use bluegreen_proxy::{
    admin, AdminAddr, AdminListener, AdminToken, Proxy, ProxyRouter, ROUTE_HEADER,
};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use support::*;

/// Starts an admin API for `proxy` on a loopback port; returns its URL.
async fn start_admin(proxy: &Proxy, token: &AdminToken) -> String {
    let listener = AdminListener::bind(&"127.0.0.1:0".parse::<AdminAddr>().unwrap(), false)
        .await
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(admin::serve(
        proxy.clone(),
        listener,
        token.clone(),
        std::future::pending(),
    ));
    url
}

/// One admin call; the status and the JSON answer.
async fn admin_call(
    url: &str,
    token: &AdminToken,
    method: Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> (StatusCode, serde_json::Value) {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let request = Request::builder()
        .method(method)
        .uri(format!("{url}{path}"))
        .header("authorization", format!("Bearer {}", token.expose()))
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let response = http1_client().request(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

fn table(group: &str) -> RouteTable {
    RouteTable::single(GroupId::from(group))
}

/// The body of the backend that answers `path` for `host` through the proxy,
/// with `headers`.
async fn answer(proxy: &RunningProxy, host: &str, path: &str, headers: &[(&str, &str)]) -> String {
    let (status, _, body) = get(&http1_client(), &proxy.url(path), host, headers)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// Attaches groups `g1`, `g2` to `web.test` and `h1`, `h2` to `api.test`.
async fn four_groups(proxy: &Proxy) -> Vec<TestBackend> {
    let mut backends = Vec::new();
    for (host, group) in [
        ("web.test", "g1"),
        ("web.test", "g2"),
        ("api.test", "h1"),
        ("api.test", "h2"),
    ] {
        let b = TestBackend::start(group, "i0").await;
        proxy
            .attach(
                host,
                &GroupId::from(group),
                &[bluegreen_proxy::BackendSpec::new(b.address())],
            )
            .await
            .unwrap();
        backends.push(b);
    }
    backends
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_multi_app_request_is_all_or_nothing() {
    let proxy = RunningProxy::start(test_options()).await;
    let token = AdminToken::random();
    let url = start_admin(&proxy.proxy, &token).await;
    let _backends = four_groups(&proxy.proxy).await;

    let (status, reply) = admin_call(
        &url,
        &token,
        Method::PUT,
        "/v1/routes",
        Some(serde_json::json!({"apps": {"web.test": {"g1": 100}, "api.test": {"h1": 100}}})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let generation = reply["route_generation"].as_u64().unwrap();
    let hosts: Vec<&str> = reply["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["host"].as_str().unwrap())
        .collect();
    assert_eq!(hosts, ["api.test", "web.test"]);
    assert_eq!(reply["apps"][1]["routes"], serde_json::json!({"g1": 100}));

    let before = serde_json::json!({
        "route_generation": generation,
        "apps": {"api.test": {"h1": 100}, "web.test": {"g1": 100}},
    });
    // each refused request names the app and the field, and changes nothing
    let refused = [
        (
            serde_json::json!({"web.test": {"g2": 100}, "api.test": {"h3": 100}}),
            StatusCode::NOT_FOUND,
            None,
            "group h3 of app api.test",
        ),
        (
            serde_json::json!({"web.test": {"g2": 100}, "api.test": {"h1": 50, "h2": 40}}),
            StatusCode::BAD_REQUEST,
            Some("apps.api.test"),
            "sum",
        ),
        (
            serde_json::json!({"web.test": {"g2": 100}, "bad host!": {"h2": 100}}),
            StatusCode::BAD_REQUEST,
            Some("apps.bad host!"),
            "contains",
        ),
        (
            serde_json::json!({"web.test": {"g2": 100}, "api.test": {"h 2": 100}}),
            StatusCode::BAD_REQUEST,
            Some("apps.api.test.h 2"),
            "not a group id",
        ),
        (
            serde_json::json!({"web.test": {"g2": 100}, "WEB.test": {"g2": 100}}),
            StatusCode::BAD_REQUEST,
            Some("apps.web.test"),
            "named twice",
        ),
    ];
    for (apps, want_status, want_field, want_text) in refused {
        let (status, reply) = admin_call(
            &url,
            &token,
            Method::PUT,
            "/v1/routes",
            Some(serde_json::json!({ "apps": apps })),
        )
        .await;
        assert_eq!(status, want_status, "{apps}: {reply}");
        assert_eq!(reply["field"].as_str(), want_field, "{apps}: {reply}");
        let error = reply["error"].as_str().unwrap();
        assert!(error.contains(want_text), "{apps}: {error}");
        let (_, now) = admin_call(&url, &token, Method::GET, "/v1/routes", None).await;
        assert_eq!(now, before, "{apps} changed something");
        assert_eq!(answer(&proxy, "web.test", "/", &[]).await, "g1 i0");
        assert_eq!(answer(&proxy, "api.test", "/", &[]).await, "h1 i0");
    }
    // a body that is not the expected shape is refused too
    let (status, reply) = admin_call(
        &url,
        &token,
        Method::PUT,
        "/v1/routes",
        Some(serde_json::json!({"apps": {"web.test": {"g2": 100}}, "extra": 1})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
    assert_eq!(proxy.proxy.routes("web.test").unwrap(), table("g1"));

    // and the good one switches both, as one route generation
    let (status, reply) = admin_call(
        &url,
        &token,
        Method::PUT,
        "/v1/routes",
        Some(serde_json::json!({"apps": {"web.test": {"g2": 100}, "api.test": {"h2": 100}}})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["route_generation"].as_u64(), Some(generation + 1));
    let (_, now) = admin_call(&url, &token, Method::GET, "/v1/routes", None).await;
    assert_eq!(
        now,
        serde_json::json!({
            "route_generation": generation + 1,
            "apps": {"api.test": {"h2": 100}, "web.test": {"g2": 100}},
        })
    );
    assert_eq!(answer(&proxy, "web.test", "/", &[]).await, "g2 i0");
    assert_eq!(answer(&proxy, "api.test", "/", &[]).await, "h2 i0");
}

/// The route header the backend of `host` received for a request with `headers`.
async fn forwarded_stamp(proxy: &RunningProxy, host: &str, headers: &[(&str, &str)]) -> String {
    let body = answer(proxy, host, "/headers", headers).await;
    let stamps: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("bluegreen-route: "))
        .collect();
    assert_eq!(stamps.len(), 1, "one route header is forwarded: {body}");
    stamps[0].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_route_header_never_picks_an_old_group() {
    let proxy = RunningProxy::start(test_options()).await;
    let _backends = four_groups(&proxy.proxy).await;
    let p = &proxy.proxy;
    p.set_routes("web.test", &table("g1")).unwrap();
    let old = forwarded_stamp(&proxy, "web.test", &[]).await;
    let (number, mac) = old.split_once('.').unwrap();
    assert_eq!(number, p.route_generation().to_string());
    assert_eq!(mac.len(), 32, "{old}");
    p.set_routes("web.test", &table("g2")).unwrap();
    let current = forwarded_stamp(&proxy, "web.test", &[]).await;
    assert_ne!(current, old);

    // the proxy's own header pins the request to its generation (g1 is attached)
    assert_eq!(
        answer(&proxy, "web.test", "/", &[(ROUTE_HEADER, &old)]).await,
        "g1 i0"
    );
    // and it goes on to the backend unchanged
    assert_eq!(
        forwarded_stamp(&proxy, "web.test", &[(ROUTE_HEADER, &old)]).await,
        old
    );

    let mut flipped = old.clone().into_bytes();
    let last = flipped.len() - 1;
    flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
    let forged = [
        String::from_utf8(flipped).unwrap(),
        format!("{number}.{}", "0".repeat(32)),
        format!("{number}.{mac}0"),
        number.to_owned(),
        format!("{}.{mac}", number.parse::<u64>().unwrap() + 100),
        "garbage".to_owned(),
    ];
    for value in &forged {
        assert_eq!(
            answer(&proxy, "web.test", "/", &[(ROUTE_HEADER, value)]).await,
            "g2 i0",
            "{value} picked an old group"
        );
        // stripped and replaced by the current stamp
        assert_eq!(
            forwarded_stamp(&proxy, "web.test", &[(ROUTE_HEADER, value)]).await,
            current,
            "{value}"
        );
    }
    // a header name in another case is the same header
    assert_eq!(
        answer(&proxy, "web.test", "/", &[("Bluegreen-Route", &forged[0])]).await,
        "g2 i0"
    );
    // a backend's route header never reaches the client
    let (status, headers, _) = get(&http1_client(), &proxy.url("/leak"), "web.test", &[])
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(headers.get(ROUTE_HEADER).is_none(), "{headers:?}");

    // pinning to an old generation ends when its group is detached
    p.detach("web.test", &GroupId::from("g1")).unwrap();
    assert_eq!(
        answer(&proxy, "web.test", "/", &[(ROUTE_HEADER, &old)]).await,
        "g2 i0"
    );
    assert_eq!(
        forwarded_stamp(&proxy, "web.test", &[(ROUTE_HEADER, &old)]).await,
        current,
        "the request is stamped with the generation that routed it"
    );
    // attached again without traffic, it is not pinned to again either
    p.attach(
        "web.test",
        &GroupId::from("g1"),
        &[bluegreen_proxy::BackendSpec::new(_backends[0].address())],
    )
    .await
    .unwrap();
    assert_eq!(
        answer(&proxy, "web.test", "/", &[(ROUTE_HEADER, &old)]).await,
        "g2 i0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_route_header_nothing_is_stamped_or_read() {
    let options = test_options().with_route_header(None);
    let proxy = RunningProxy::start(options).await;
    let _backends = four_groups(&proxy.proxy).await;
    proxy.proxy.set_routes("web.test", &table("g1")).unwrap();
    let body = answer(&proxy, "web.test", "/headers", &[]).await;
    assert!(!body.contains("bluegreen-route"), "{body}");
    let body = answer(&proxy, "web.test", "/headers", &[(ROUTE_HEADER, "7.x")]).await;
    assert!(body.contains("bluegreen-route: 7.x"), "{body}");
}

/// A router that counts `set_routes_many` calls, to show what never reached it.
struct Counting {
    inner: ProxyRouter,
    many: std::sync::atomic::AtomicUsize,
}

#[async_trait]
impl Router for Counting {
    fn capabilities(&self) -> RouterCapabilities {
        self.inner.capabilities()
    }
    async fn attach(&self, app: &App, group: &GroupId, i: &[Instance]) -> Result<Attachment> {
        self.inner.attach(app, group, i).await
    }
    async fn detach(&self, app: &App, group: &GroupId) -> Result<()> {
        self.inner.detach(app, group).await
    }
    async fn routes(&self, app: &App) -> Result<RouteTable> {
        self.inner.routes(app).await
    }
    async fn set_routes(&self, app: &App, table: &RouteTable) -> Result<()> {
        self.inner.set_routes(app, table).await
    }
    async fn set_routes_many(&self, tables: &[(App, RouteTable)]) -> Result<()> {
        self.many.fetch_add(1, Ordering::SeqCst);
        self.inner.set_routes_many(tables).await
    }
    async fn serving(&self, app: &App, group: &GroupId) -> Result<Serving> {
        self.inner.serving(app, group).await
    }
}

/// The rules of `Router::set_routes_many` on `router`, which drives `proxy`.
async fn set_routes_many_checks(router: ProxyRouter, proxy: &Proxy) {
    assert!(router.capabilities().multi_app_switch);
    let web = App::new("web", "test").unwrap();
    let api = App::new("api", "test").unwrap();
    let mut backends = Vec::new();
    for (app, group) in [(&web, "g1"), (&web, "g2"), (&api, "h1"), (&api, "h2")] {
        let b = TestBackend::start(group, "i0").await;
        let instance = Instance::new(group, Some(b.address()), Health::Healthy);
        router
            .attach(app, &GroupId::from(group), &[instance])
            .await
            .unwrap();
        backends.push(b);
    }
    router
        .set_routes_many(&[(web.clone(), table("g1")), (api.clone(), table("h1"))])
        .await
        .unwrap();
    assert_eq!(router.routes(&web).await.unwrap(), table("g1"));
    assert_eq!(router.routes(&api).await.unwrap(), table("h1"));
    let generation = proxy.route_generation();

    // a group not attached: nothing changes
    let e = router
        .set_routes_many(&[(web.clone(), table("g2")), (api.clone(), table("h3"))])
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(
        e.to_string().contains("h3") && e.to_string().contains("api.test"),
        "{e}"
    );
    // an app named twice: nothing changes
    let e = router
        .set_routes_many(&[(web.clone(), table("g2")), (web.clone(), table("g1"))])
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid, "{e}");
    assert!(e.to_string().contains("tables[1]"), "{e}");
    assert_eq!(router.routes(&web).await.unwrap(), table("g1"));
    assert_eq!(router.routes(&api).await.unwrap(), table("h1"));
    assert_eq!(proxy.route_generation(), generation);

    // CheckedRouter refuses a duplicate before the router is asked
    let counting = Counting {
        inner: router.clone(),
        many: Default::default(),
    };
    let checked = CheckedRouter::new(counting);
    assert!(checked.capabilities().multi_app_switch);
    let e = checked
        .set_routes_many(&[(api.clone(), table("h2")), (api.clone(), table("h2"))])
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid, "{e}");
    assert_eq!(checked.inner().many.load(Ordering::SeqCst), 0);
    assert_eq!(proxy.route_generation(), generation);

    // and a good switch through it changes both apps in one generation
    checked
        .set_routes_many(&[(web.clone(), table("g2")), (api.clone(), table("h2"))])
        .await
        .unwrap();
    assert_eq!(checked.inner().many.load(Ordering::SeqCst), 1);
    assert_eq!(router.routes(&web).await.unwrap(), table("g2"));
    assert_eq!(router.routes(&api).await.unwrap(), table("h2"));
    assert_eq!(proxy.route_generation(), generation + 1);
    // setting the same tables again is idempotent, and nothing is a no-op
    router
        .set_routes_many(&[(web.clone(), table("g2")), (api.clone(), table("h2"))])
        .await
        .unwrap();
    router.set_routes_many(&[]).await.unwrap();
    assert_eq!(proxy.route_generation(), generation + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_routes_many_in_process() {
    let proxy = RunningProxy::start(test_options()).await;
    let router = ProxyRouter::embedded(proxy.proxy.clone());
    set_routes_many_checks(router, &proxy.proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_routes_many_through_the_admin_api() {
    let proxy = RunningProxy::start(test_options()).await;
    let token = AdminToken::random();
    let url = start_admin(&proxy.proxy, &token).await;
    let router = ProxyRouter::remote(&url, token).unwrap();
    set_routes_many_checks(router, &proxy.proxy).await;
}

// --- web calls api through the proxy, under load, while both flip together ---

/// A `sample-app` process on a loopback port, killed when dropped.
struct SampleApp {
    child: Child,
    address: String,
}

impl SampleApp {
    fn start(args: &[&str]) -> SampleApp {
        let binary = bluegreen_testkit::binaries::binary("sample-app", "sample-app");
        let mut child = Command::new(binary)
            .args(["--port", "0"])
            .args(args)
            .stderr(Stdio::piped())
            .spawn()
            .expect("sample-app starts");
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        stderr.read_line(&mut line).unwrap();
        let address = line
            .trim()
            .rsplit(' ')
            .next()
            .filter(|a| a.contains(':'))
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_owned();
        // keep reading, so that the app never blocks on a full pipe
        std::thread::spawn(move || {
            let mut sink = String::new();
            while stderr.read_line(&mut sink).unwrap_or(0) > 0 {
                sink.clear();
            }
        });
        SampleApp { child, address }
    }
}

impl Drop for SampleApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How web and api are switched between v1 and v2.
#[derive(Clone, Copy, Debug)]
enum Switch {
    /// One `Router::set_routes_many`.
    Together,
    /// `set_routes` for web, then for api `gap` later (as an engine that confirms
    /// each app's switch before the next would).
    OneByOne { gap: Duration },
}

const CLIENTS: usize = 8;
const FLIPS: usize = 8;
/// What web waits before it calls api: the window in which a switch can fall.
const WEB_LATENCY_MS: &str = "20";

#[derive(Debug, Default)]
struct Outcome {
    /// Responses that name one version of both apps.
    consistent: usize,
    /// Versions seen in consistent responses.
    versions: BTreeSet<String>,
    /// Responses that name two versions (`web=v2 api=v1`).
    mixed: Vec<String>,
    /// Anything else: a failed request, or a response that names no versions.
    failed: Vec<String>,
}

/// `web=X api=Y` from the first line of a peer answer.
fn versions(body: &str) -> Option<(String, String)> {
    let line = body.lines().next()?;
    let (web, api) = line.split_once(' ')?;
    Some((
        web.strip_prefix("web=")?.to_owned(),
        api.strip_prefix("api=")?.to_owned(),
    ))
}

/// Web (whose v2 works only with api v2) and api, each v1 and v2 behind the
/// proxy; `CLIENTS` clients ask web, which asks api through the proxy with the
/// route header it got, while both apps flip `FLIPS` times between v1 and v2.
async fn flip_under_load(pinning: bool, switch: Switch) -> Outcome {
    let options = test_options()
        .with_route_header(pinning.then(|| http::HeaderName::from_static(ROUTE_HEADER)));
    let proxy = RunningProxy::start(options).await;
    let router = CheckedRouter::new(ProxyRouter::embedded(proxy.proxy.clone()));
    let web = App::new("web", "test").unwrap();
    let api = App::new("api", "test").unwrap();
    let peer_url = format!("http://{}", proxy.addr);
    let mut apps = Vec::new();
    for (app, version) in [(&api, "v1"), (&api, "v2"), (&web, "v1"), (&web, "v2")] {
        let mut args = vec!["--app-version", version, "--app-name", app.name()];
        if app == &web {
            args.extend([
                "--peer-url",
                &peer_url,
                "--peer-host",
                "api.test",
                "--require-peer-version",
                version,
                "--latency-ms",
                WEB_LATENCY_MS,
            ]);
        }
        let sample = tokio::task::block_in_place(|| SampleApp::start(&args));
        let instance = Instance::new(
            format!("{}-{version}", app.name()).as_str(),
            Some(sample.address.clone()),
            Health::Healthy,
        );
        let group = GroupId::from(format!("{}-{version}", app.name()));
        router.attach(app, &group, &[instance]).await.unwrap();
        let serving = router.serving(app, &group).await.unwrap();
        assert_eq!(serving.healthy, 1, "{group} is healthy at the proxy");
        apps.push(sample);
    }
    let tables = |v: &str| {
        [
            (web.clone(), table(&format!("web-{v}"))),
            (api.clone(), table(&format!("api-{v}"))),
        ]
    };
    router.set_routes_many(&tables("v1")).await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let stop = stop.clone();
        let url = proxy.url("/");
        clients.push(tokio::spawn(async move {
            let client = http1_client();
            let mut outcome = Outcome::default();
            // bounded: stops with the flips, or after 5 000 requests
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) && n < 5_000 {
                n += 1;
                match get(&client, &url, "web.test", &[]).await {
                    Ok((status, _, body)) => match versions(&body) {
                        // new web answers 500 with the versions when api is old
                        Some((w, a)) if w != a => outcome.mixed.push(body),
                        Some((w, _)) if status == StatusCode::OK => {
                            outcome.consistent += 1;
                            outcome.versions.insert(w);
                        }
                        _ => outcome.failed.push(format!("{status}: {body}")),
                    },
                    Err(e) => outcome.failed.push(e),
                }
            }
            outcome
        }));
    }
    for i in 0..FLIPS {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let v = if i % 2 == 0 { "v2" } else { "v1" };
        match switch {
            Switch::Together => router.set_routes_many(&tables(v)).await.unwrap(),
            Switch::OneByOne { gap } => {
                let [(web, web_table), (api, api_table)] = tables(v);
                router.set_routes(&web, &web_table).await.unwrap();
                tokio::time::sleep(gap).await;
                router.set_routes(&api, &api_table).await.unwrap();
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = Outcome::default();
    for c in clients {
        let o = c.await.unwrap();
        total.consistent += o.consistent;
        total.versions.extend(o.versions);
        total.mixed.extend(o.mixed);
        total.failed.extend(o.failed);
    }
    println!(
        "pinning {pinning}, {switch:?}: {} consistent ({:?}), {} mixed, {} failed",
        total.consistent,
        total.versions,
        total.mixed.len(),
        total.failed.len()
    );
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipping_web_and_api_together_never_mixes_versions() {
    let outcome = flip_under_load(true, Switch::Together).await;
    assert!(outcome.mixed.is_empty(), "mixed: {:?}", outcome.mixed);
    assert!(outcome.failed.is_empty(), "failed: {:?}", outcome.failed);
    assert!(outcome.consistent >= 100, "too few requests: {outcome:?}");
    let both: BTreeSet<String> = ["v1".to_owned(), "v2".to_owned()].into();
    assert_eq!(outcome.versions, both, "the flips took effect");
}

/// The check above can fail: without route generations, a request that reached
/// old web before a switch calls api after it and reaches new api.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_pinning_a_switch_together_mixes_versions() {
    let outcome = flip_under_load(false, Switch::Together).await;
    assert!(
        !outcome.mixed.is_empty(),
        "no mixed response without pinning: {outcome:?}"
    );
}

/// And it fails too when the apps are switched one after the other: between the
/// two switches, new web is routed with old api.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_one_app_after_the_other_mixes_versions() {
    let gap = Duration::from_millis(40);
    let outcome = flip_under_load(true, Switch::OneByOne { gap }).await;
    assert!(
        outcome.mixed.iter().any(|m| m.starts_with("web=v2 api=v1")),
        "no new web with old api between two single switches: {outcome:?}"
    );
}
