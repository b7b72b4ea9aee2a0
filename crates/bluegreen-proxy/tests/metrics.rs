//! `GET /metrics` on the admin listener: the exposition is read by a strict
//! line reader (every line a comment it knows or a sample it can parse) and the
//! counts after known traffic are checked exactly, family by family and label
//! set by label set.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use bluegreen_core::{GroupId, RouteTable};
use bluegreen_proxy::{admin, AdminListener, AdminToken, BackendSpec};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use support::*;

const HOST: &str = "web.production";
const TOKEN: &str = "metrics-test-token";

/// One sample of the exposition.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// The samples of an OpenMetrics text exposition, and the type of each family;
/// panics on any line that is not `# HELP`, `# TYPE`, `# UNIT`, `# EOF` or a
/// well-formed sample, and when `# EOF` is not the last line.
fn parse(text: &str) -> (Vec<Sample>, BTreeMap<String, String>) {
    let mut samples = Vec::new();
    let mut types = BTreeMap::new();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.last(),
        Some(&"# EOF"),
        "no `# EOF` at the end:\n{text}"
    );
    for line in &lines[..lines.len() - 1] {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("`# TYPE name kind`");
            assert!(
                ["counter", "gauge", "histogram"].contains(&kind),
                "type {kind}"
            );
            types.insert(name.to_owned(), kind.to_owned());
            continue;
        }
        if line.starts_with("# HELP ") || line.starts_with("# UNIT ") {
            continue;
        }
        assert!(!line.starts_with('#'), "unknown comment: {line}");
        samples.push(parse_sample(line));
    }
    (samples, types)
}

fn parse_sample(line: &str) -> Sample {
    let name_end = line
        .find(['{', ' '])
        .unwrap_or_else(|| panic!("no value: {line}"));
    let name = &line[..name_end];
    assert!(
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
        "bad metric name in {line}"
    );
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices().peekable();
        loop {
            let (start, c) = chars.next().expect("unterminated label set");
            if c == '}' {
                rest = &inner[start + 1..];
                break;
            }
            let key_end = inner[start..].find('=').expect("label without `=`") + start;
            let key = &inner[start..key_end];
            assert!(
                key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "bad label name {key:?} in {line}"
            );
            while chars.peek().is_some_and(|(i, _)| *i <= key_end) {
                chars.next();
            }
            assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "{line}");
            let mut value = String::new();
            loop {
                match chars.next().expect("unterminated label value").1 {
                    '"' => break,
                    '\\' => match chars.next().expect("escape").1 {
                        'n' => value.push('\n'),
                        c @ ('"' | '\\') => value.push(c),
                        c => panic!("bad escape \\{c} in {line}"),
                    },
                    c => value.push(c),
                }
            }
            assert!(
                labels.insert(key.to_owned(), value).is_none(),
                "label {key} twice in {line}"
            );
            match chars.peek().map(|(_, c)| *c) {
                Some(',') => {
                    chars.next();
                }
                Some('}') => {}
                other => panic!("expected `,` or `}}`, got {other:?} in {line}"),
            }
        }
    }
    let value = rest
        .strip_prefix(' ')
        .unwrap_or_else(|| panic!("no space before the value: {line}"));
    let value: f64 = match value {
        "+Inf" => f64::INFINITY,
        v => v
            .parse()
            .unwrap_or_else(|_| panic!("bad value {v:?} in {line}")),
    };
    Sample {
        name: name.to_owned(),
        labels,
        value,
    }
}

struct Exposition {
    samples: Vec<Sample>,
    types: BTreeMap<String, String>,
}

impl Exposition {
    /// The value of the one sample named `name` with exactly these labels.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let found: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| s.name == name && s.labels == want)
            .collect();
        assert_eq!(found.len(), 1, "{name} {want:?}: {found:?}");
        found[0].value
    }

    /// The label sets of the samples named `name`.
    fn series(&self, name: &str) -> Vec<BTreeMap<String, String>> {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .map(|s| s.labels.clone())
            .collect()
    }
}

struct Subject {
    proxy: RunningProxy,
    admin: String,
    backend: TestBackend,
}

impl Subject {
    async fn start(options: bluegreen_proxy::ProxyOptions) -> Subject {
        let proxy = RunningProxy::start(options).await;
        let listener = AdminListener::bind(&"127.0.0.1:0".parse().unwrap(), false)
            .await
            .unwrap();
        let admin = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(admin::serve(
            proxy.proxy.clone(),
            listener,
            AdminToken::new(TOKEN).unwrap(),
            std::future::pending(),
        ));
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
        Subject {
            proxy,
            admin,
            backend,
        }
    }

    async fn get_metrics(&self, token: Option<&str>) -> (StatusCode, String, String) {
        let mut builder = Request::builder()
            .method(Method::GET)
            .uri(format!("{}/metrics", self.admin));
        if let Some(t) = token {
            builder = builder.header("authorization", format!("Bearer {t}"));
        }
        let response = http1_client()
            .request(builder.body(Full::new(Bytes::new())).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            content_type,
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    async fn scrape(&self) -> Exposition {
        let (status, content_type, text) = self.get_metrics(Some(TOKEN)).await;
        assert_eq!(status, 200, "{text}");
        assert!(
            content_type.starts_with("application/openmetrics-text"),
            "{content_type}"
        );
        let (samples, types) = parse(&text);
        Exposition { samples, types }
    }

    /// One request on a connection of its own (`Connection: close`); the status.
    async fn request(&self, raw: &str) -> Option<u16> {
        raw_exchange(self.proxy.addr, raw.as_bytes(), Duration::from_secs(10))
            .await
            .status()
    }
}

fn get_request(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n")
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_after_known_traffic_are_exact() {
    let subject =
        Subject::start(test_options().with_hold_timeout(Duration::from_millis(200))).await;
    // good
    for _ in 0..3 {
        assert_eq!(subject.request(&get_request("/")).await, Some(200));
    }
    // 5xx from the backend
    for _ in 0..2 {
        assert_eq!(
            subject.request(&get_request("/status/500")).await,
            Some(500)
        );
    }
    assert_eq!(
        subject.request(&get_request("/status/503")).await,
        Some(503)
    );
    // a client fault: a malformed chunked body
    assert_eq!(
        subject
            .request(&format!(
                "POST /body HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\n"
            ))
            .await,
        Some(400)
    );
    // held past the hold timeout for want of a healthy backend: the group's
    subject.backend.set_healthy(false);
    assert!(
        eventually(Duration::from_secs(5), || subject
            .proxy
            .proxy
            .serving(HOST, &GroupId::from("blue"))
            .unwrap()
            .healthy
            == 0)
        .await,
        "the backend goes unhealthy"
    );
    assert_eq!(subject.request(&get_request("/")).await, Some(503));
    // held past the hold timeout while paused: no group's
    subject.proxy.proxy.pause(HOST).unwrap();
    assert_eq!(subject.request(&get_request("/")).await, Some(503));

    let m = subject.scrape().await;
    for (family, kind) in [
        ("bluegreen_proxy_requests", "counter"),
        ("bluegreen_proxy_errors", "counter"),
        ("bluegreen_proxy_request_duration_seconds", "histogram"),
        ("bluegreen_proxy_connections_accepted", "counter"),
        ("bluegreen_proxy_connections_open", "gauge"),
        ("bluegreen_proxy_held_requests", "gauge"),
        ("bluegreen_proxy_drains", "gauge"),
        ("bluegreen_proxy_route_switches", "counter"),
    ] {
        assert_eq!(
            m.types.get(family).map(String::as_str),
            Some(kind),
            "{family}"
        );
    }

    let requests = "bluegreen_proxy_requests_total";
    let group = |class| {
        m.value(
            requests,
            &[("app", HOST), ("group", "blue"), ("class", class)],
        )
    };
    assert_eq!(
        CLASSES.map(group),
        [0.0, 3.0, 0.0, 0.0, 4.0],
        "the group's responses by class: 3 good, 3 from the backend, 1 held"
    );
    let app = |class| m.value(requests, &[("app", HOST), ("class", class)]);
    assert_eq!(
        ["4xx", "5xx"].map(app),
        [1.0, 1.0],
        "no group's: the client fault and the paused hold"
    );
    assert_eq!(m.series(requests).len(), 7, "{:?}", m.series(requests));

    let errors = "bluegreen_proxy_errors_total";
    let group = |cause| {
        m.value(
            errors,
            &[("app", HOST), ("group", "blue"), ("cause", cause)],
        )
    };
    assert_eq!(
        [
            "backend_error",
            "upstream_timeout",
            "hold_timeout",
            "queue_full",
            "drain_cut"
        ]
        .map(group),
        [3.0, 0.0, 1.0, 0.0, 0.0]
    );
    let app = |cause| m.value(errors, &[("app", HOST), ("cause", cause)]);
    assert_eq!(
        ["hold_timeout", "queue_full", "client_fault"].map(app),
        [1.0, 0.0, 1.0]
    );
    assert!(
        !m.series(errors)
            .iter()
            .any(|l| l.contains_key("group") && l["cause"] == "client_fault"),
        "a client fault is never a group's"
    );

    // the histogram: every response of the group, buckets cumulative to +Inf
    let labels = [("app", HOST), ("group", "blue")];
    let histogram = "bluegreen_proxy_request_duration_seconds";
    assert_eq!(m.value(&format!("{histogram}_count"), &labels), 7.0);
    let sum = m.value(&format!("{histogram}_sum"), &labels);
    assert!(sum >= 0.2, "the held request alone waited 0.2 s: {sum}");
    let mut buckets: Vec<(f64, f64)> = m
        .samples
        .iter()
        .filter(|s| s.name == format!("{histogram}_bucket"))
        .map(|s| {
            (
                s.labels["le"].parse::<f64>().unwrap_or(f64::INFINITY),
                s.value,
            )
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert_eq!(buckets.len(), 21, "{buckets:?}");
    assert_eq!(buckets.last(), Some(&(f64::INFINITY, 7.0)));
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{buckets:?}");
    // the held request: 0.2 s, above the 0.131072 s bound and within 0.262144 s
    let at = |le: f64| buckets.iter().find(|b| b.0 == le).unwrap().1;
    assert_eq!(at(0.262144) - at(0.131072), 1.0, "{buckets:?}");

    // one connection per request, all closed by now
    assert_eq!(
        m.value("bluegreen_proxy_connections_accepted_total", &[]),
        9.0
    );
    assert_eq!(m.value("bluegreen_proxy_held_requests", &[]), 0.0);
    assert_eq!(
        m.value(
            "bluegreen_proxy_drains",
            &[("app", HOST), ("group", "blue")]
        ),
        0.0
    );
    assert_eq!(
        m.value("bluegreen_proxy_route_switches_total", &[("app", HOST)]),
        1.0,
        "one route change; a pause is none"
    );
    let mut open = m.value("bluegreen_proxy_connections_open", &[]);
    for _ in 0..100 {
        if open == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        open = subject
            .scrape()
            .await
            .value("bluegreen_proxy_connections_open", &[]);
    }
    assert_eq!(open, 0.0, "every connection closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gauges_follow_held_requests_open_connections_and_drains() {
    let subject = Subject::start(test_options()).await;
    // a request in flight on blue when the traffic moves to green: blue drains
    let green = TestBackend::start("green", "i0").await;
    subject
        .proxy
        .proxy
        .attach(HOST, &"green".into(), &[BackendSpec::new(green.address())])
        .await
        .unwrap();
    let url = subject.proxy.url("/slow?ms=1500");
    let slow = tokio::spawn(async move { get(&http1_client(), &url, HOST, &[]).await });
    assert!(
        eventually(Duration::from_secs(5), || subject.backend.in_flight() == 1).await,
        "the slow request reached blue"
    );
    subject
        .proxy
        .proxy
        .set_routes(HOST, &RouteTable::single("green".into()))
        .unwrap();
    let m = subject.scrape().await;
    assert_eq!(
        m.value(
            "bluegreen_proxy_drains",
            &[("app", HOST), ("group", "blue")]
        ),
        1.0
    );
    assert_eq!(
        m.value(
            "bluegreen_proxy_drains",
            &[("app", HOST), ("group", "green")]
        ),
        0.0
    );
    assert_eq!(m.value("bluegreen_proxy_connections_open", &[]), 1.0);
    assert_eq!(
        m.value("bluegreen_proxy_route_switches_total", &[("app", HOST)]),
        2.0
    );
    let (status, _, body) = slow.await.unwrap().unwrap();
    assert_eq!((status.as_u16(), body.as_str()), (200, "blue i0"));

    // a held request while the app is paused
    subject.proxy.proxy.pause(HOST).unwrap();
    let url = subject.proxy.url("/");
    let held = tokio::spawn(async move { get(&http1_client(), &url, HOST, &[]).await });
    assert!(
        eventually(Duration::from_secs(5), || subject.proxy.proxy.held() == 1).await,
        "the request is held"
    );
    let m = subject.scrape().await;
    assert_eq!(m.value("bluegreen_proxy_held_requests", &[]), 1.0);
    subject.proxy.proxy.resume(HOST).unwrap();
    let (status, _, body) = held.await.unwrap().unwrap();
    assert_eq!((status.as_u16(), body.as_str()), (200, "green i0"));

    // once its request is done (and its client connection gone), blue's drain
    // is over
    let mut drains = f64::NAN;
    for _ in 0..100 {
        drains = subject.scrape().await.value(
            "bluegreen_proxy_drains",
            &[("app", HOST), ("group", "blue")],
        );
        if drains == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(drains, 0.0);
    let m = subject.scrape().await;
    assert_eq!(m.value("bluegreen_proxy_held_requests", &[]), 0.0);
    assert_eq!(
        m.value(
            "bluegreen_proxy_requests_total",
            &[("app", HOST), ("group", "green"), ("class", "2xx")]
        ),
        1.0
    );
}

#[tokio::test]
async fn metrics_need_the_admin_token() {
    let subject = Subject::start(test_options()).await;
    for token in [None, Some("metrics-test-tokeN")] {
        let (status, _, body) = subject.get_metrics(token).await;
        assert_eq!(status, 401, "{token:?}: {body}");
        assert!(!body.contains("bluegreen_proxy"), "{body}");
    }
    let (status, _, _) = subject.get_metrics(Some(TOKEN)).await;
    assert_eq!(status, 200);
}
