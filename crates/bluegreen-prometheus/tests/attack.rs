//! Adversarial tests of `PromQlCheck`, written from its public documentation:
//! a real Prometheus (Debian's, via `BLUEGREEN_PROMETHEUS`) for the query
//! results and PromQL errors, and a tiny fake HTTP server for the faults a real
//! server does not produce on demand (hangs, 5xx, non-JSON, wrong shapes, ...).

mod support;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bluegreen_core::{App, Check, Error, GroupId};
use bluegreen_prometheus::{Limit, PromQlCheck};
use bluegreen_testkit::scratch::Scratch;
use support::{free_port, prometheus_binary};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

// ---------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------

fn app() -> App {
    App::new("web", "production").unwrap()
}

fn group() -> GroupId {
    GroupId::from("web-production-v002")
}

/// Runs `f`, panicking when it takes longer than `limit`; returns its output and
/// how long it took.
async fn timed<F: Future>(limit: Duration, f: F) -> (F::Output, Duration) {
    let start = Instant::now();
    match tokio::time::timeout(limit, f).await {
        Ok(out) => (out, start.elapsed()),
        Err(_) => panic!("did not end within {limit:?}"),
    }
}

/// Collects failed expectations so that one test reports all of its cases.
#[derive(Default)]
struct Soft(Vec<String>);

impl Soft {
    fn expect(&mut self, ok: bool, what: impl Into<String>) {
        if !ok {
            self.0.push(what.into());
        }
    }

    fn done(self) {
        assert!(
            self.0.is_empty(),
            "{} failed expectation(s):\n  - {}",
            self.0.len(),
            self.0.join("\n  - ")
        );
    }
}

/// A Prometheus process of this test with an empty scrape configuration (no
/// data is needed: `vector()`, arithmetic and subqueries make every result
/// shape). Killed when dropped.
struct Prometheus {
    url: String,
    child: tokio::process::Child,
    _dir: Scratch,
}

impl Prometheus {
    /// `None` without a Prometheus binary (and not CI). With `prefix`
    /// (`/prom`), Prometheus serves under that path.
    async fn start(tag: &str, prefix: Option<&str>) -> Option<Prometheus> {
        let binary = prometheus_binary()?;
        let dir = Scratch::new(tag);
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n",
        )
        .unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let mut cmd = tokio::process::Command::new(&binary);
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"));
        if let Some(prefix) = prefix {
            cmd.arg(format!(
                "--web.external-url=http://127.0.0.1:{port}{prefix}"
            ))
            .arg(format!("--web.route-prefix={prefix}"));
        }
        let child = cmd
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{} did not start: {e}", binary.display()));
        let url = format!("http://127.0.0.1:{port}{}", prefix.unwrap_or(""));
        let probe = PromQlCheck::above("ready", &url, "vector(1)", 10.0)
            .unwrap()
            .with_timeout(Duration::from_secs(2));
        let mut last = String::new();
        for _ in 0..300 {
            match probe.evaluate("vector(1)").await {
                Ok(1.0) => {
                    return Some(Prometheus {
                        url,
                        child,
                        _dir: dir,
                    })
                }
                Ok(v) => last = format!("vector(1) is {v}"),
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let log = std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default();
        panic!("Prometheus did not answer within 30 s: {last}\n{log}");
    }

    fn above(&self, query: &str, limit: f64) -> PromQlCheck {
        PromQlCheck::above("attack", &self.url, query, limit).unwrap()
    }

    fn below(&self, query: &str, limit: f64) -> PromQlCheck {
        PromQlCheck::below("attack", &self.url, query, limit).unwrap()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// `check.check(app, group)`, bounded by 15 s.
async fn run(check: &PromQlCheck) -> Result<f64, String> {
    timed(Duration::from_secs(15), check.check(&app(), &group()))
        .await
        .0
}

/// Runs `q` against limits on both sides that no number crosses (`above(q,
/// limit)`, `below(q, -limit)`): each must fail with a reason naming `needle`.
async fn fails_both_ways(p: &Prometheus, q: &str, limit: f64, needle: &str, soft: &mut Soft) {
    for check in [p.above(q, limit), p.below(q, -limit)] {
        let r = run(&check).await;
        soft.expect(
            matches!(&r, Err(e) if e.contains(needle)),
            format!("{q} ({:?}) should name {needle:?}: {r:?}", check.limit()),
        );
    }
}

// --- the fake server -------------------------------------------------------

/// A request the fake server received.
#[derive(Clone, Debug)]
struct Seen {
    head: String,
    method: String,
    path: String,
    query: Vec<(String, String)>,
}

impl Seen {
    fn param(&self, name: &str) -> Option<String> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
}

/// What the fake server does with one connection.
enum Reply {
    /// Writes these bytes and closes.
    Raw(Vec<u8>),
    /// Reads the request and never answers (the socket stays open).
    Hang,
    /// Closes the connection without answering.
    Close,
    /// Sends the headers of a 1 MB body, then a byte every 100 ms.
    Trickle,
    /// A chunked 200 whose body never ends (about 12 MB/s).
    Endless,
    /// Waits, then writes these bytes.
    Delayed(Duration, Vec<u8>),
}

type Handler = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

/// One of the fake server's answers, made anew for each request.
type MakeReply = fn() -> Reply;

struct Fake {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Fake {
    async fn start(handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Fake {
        let handler: Handler = Arc::new(handler);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(serve(sock, handler.clone(), seen2.clone()));
            }
        });
        Fake {
            url: format!("http://127.0.0.1:{}", addr.port()),
            seen,
            task,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn port(&self) -> u16 {
        self.url.rsplit(':').next().unwrap().parse().unwrap()
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut sock: TcpStream, handler: Handler, seen: Arc<Mutex<Vec<Seen>>>) {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    loop {
        let n = match sock.read(&mut tmp).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&tmp[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
        if buf.len() > 1 << 20 {
            return;
        }
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let line = head.lines().next().unwrap_or_default().to_string();
    let mut parts = line.split(' ');
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let url = reqwest::Url::parse(&format!("http://fake{target}"))
        .unwrap_or_else(|_| reqwest::Url::parse("http://fake/unparsable").unwrap());
    let request = Seen {
        head: head.clone(),
        method,
        path: url.path().to_string(),
        query: url
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect(),
    };
    seen.lock().unwrap().push(request.clone());
    match handler(&request) {
        Reply::Raw(bytes) => {
            let _ = sock.write_all(&bytes).await;
            let _ = sock.shutdown().await;
        }
        Reply::Delayed(wait, bytes) => {
            tokio::time::sleep(wait).await;
            let _ = sock.write_all(&bytes).await;
            let _ = sock.shutdown().await;
        }
        Reply::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        Reply::Close => {
            drop(sock);
        }
        Reply::Trickle => {
            let _ = sock
                .write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n",
                )
                .await;
            for _ in 0..36000 {
                if sock.write_all(b" ").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Reply::Endless => {
            let _ = sock
                .write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
                )
                .await;
            let start = br#"{"status":"success","data":{"resultType":"vector","result":["#;
            let _ = write_chunk(&mut sock, start).await;
            let series = br#"{"metric":{"i":"xxxxxxxxxxxxxxxx"},"value":[1,"0"]},"#.repeat(1000);
            for _ in 0..100_000 {
                if write_chunk(&mut sock, &series).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
}

async fn write_chunk(sock: &mut TcpStream, data: &[u8]) -> std::io::Result<()> {
    sock.write_all(format!("{:x}\r\n", data.len()).as_bytes())
        .await?;
    sock.write_all(data).await?;
    sock.write_all(b"\r\n").await
}

fn http(status: &str, content_type: &str, body: impl AsRef<[u8]>) -> Vec<u8> {
    let body = body.as_ref();
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

fn json_200(body: &str) -> Vec<u8> {
    http("200 OK", "application/json", body)
}

/// A successful one-series instant vector whose value is the string `v`.
fn vector_of(v: &str) -> String {
    format!(
        r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{"job":"x"}},"value":[1700000000.123,"{v}"]}}]}}}}"#
    )
}

/// A check on `url` failing above `limit`, with a 2 s timeout.
fn fake_check(url: &str, limit: f64) -> PromQlCheck {
    PromQlCheck::above("attack", url, "up", limit)
        .unwrap()
        .with_timeout(Duration::from_secs(2))
}

/// The field of an [`Error::Invalid`], or a description of what came instead.
fn invalid_field(r: Result<PromQlCheck, Error>) -> String {
    match r {
        Err(Error::Invalid { field, .. }) => field,
        Err(other) => format!("not Invalid: {other}"),
        Ok(_) => "accepted".to_string(),
    }
}

// ---------------------------------------------------------------------------
// settings
// ---------------------------------------------------------------------------

#[test]
fn non_finite_limits_are_refused_naming_limit() {
    let mut soft = Soft::default();
    for limit in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -f64::NAN] {
        let a = invalid_field(PromQlCheck::above(
            "c",
            "http://127.0.0.1:9090",
            "up",
            limit,
        ));
        soft.expect(a == "limit", format!("above(.., {limit}) gave {a}"));
        let b = invalid_field(PromQlCheck::below(
            "c",
            "http://127.0.0.1:9090",
            "up",
            limit,
        ));
        soft.expect(b == "limit", format!("below(.., {limit}) gave {b}"));
    }
    // negative, zero and tiny finite limits are numbers like any other
    for limit in [-1.0, 0.0, -0.0, f64::MIN_POSITIVE, -1e300, f64::MAX] {
        let c = PromQlCheck::above("c", "http://127.0.0.1:9090", "up", limit);
        match c {
            Ok(c) => soft.expect(
                c.limit() == Limit::Above(limit),
                format!("limit {limit} kept"),
            ),
            Err(e) => soft.expect(false, format!("finite limit {limit} refused: {e}")),
        }
    }
    soft.done();
}

#[test]
fn bad_servers_are_refused_naming_server() {
    let mut soft = Soft::default();
    for server in [
        "",
        "   ",
        "127.0.0.1:9090",
        "localhost:9090",
        "ftp://127.0.0.1:9090",
        "file:///etc/passwd",
        "unix:///tmp/prom.sock",
        "http://",
        "https://",
        "not a url",
        "://127.0.0.1:9090",
    ] {
        let got = invalid_field(PromQlCheck::above("c", server, "up", 1.0));
        soft.expect(got == "server", format!("server {server:?} gave {got}"));
    }
    for server in [
        "http://127.0.0.1:9090",
        "https://prometheus.example:443",
        "http://127.0.0.1:9090/",
        "http://127.0.0.1:9090/prom",
        "http://127.0.0.1:9090/prom/",
        "HTTP://127.0.0.1:9090",
    ] {
        let got = PromQlCheck::above("c", server, "up", 1.0);
        soft.expect(
            got.is_ok(),
            format!("server {server:?} refused: {:?}", got.err()),
        );
    }
    soft.done();
}

#[test]
fn empty_name_or_query_is_refused_naming_the_field() {
    let mut soft = Soft::default();
    for name in ["", " ", "\t\n"] {
        let got = invalid_field(PromQlCheck::above(name, "http://127.0.0.1:9090", "up", 1.0));
        soft.expect(got == "name", format!("name {name:?} gave {got}"));
    }
    let got = invalid_field(PromQlCheck::below("c", "http://127.0.0.1:9090", "", 1.0));
    soft.expect(got == "query", format!("query \"\" gave {got}"));
    soft.done();
}

/// "when empty": a blank query is as empty as a blank name (the name is
/// trimmed). A stricter reading than the docs strictly require.
#[test]
fn blank_query_is_refused_naming_query() {
    let mut soft = Soft::default();
    for query in [" ", "\n\t "] {
        let got = invalid_field(PromQlCheck::above("c", "http://127.0.0.1:9090", query, 1.0));
        soft.expect(got == "query", format!("query {query:?} gave {got}"));
    }
    soft.done();
}

#[test]
fn check_trait_name_and_limit_are_kept() {
    let c = PromQlCheck::below("success ratio", "http://127.0.0.1:9090", "up", 0.99).unwrap();
    assert_eq!(Check::name(&c), "success ratio");
    assert_eq!(c.limit(), Limit::Below(0.99));
}

// ---------------------------------------------------------------------------
// placeholders
// ---------------------------------------------------------------------------

#[test]
fn placeholders_are_replaced_everywhere_and_other_braces_kept() {
    let c = PromQlCheck::above(
        "c",
        "http://127.0.0.1:9090",
        r#"a{app="{app}.{environment}",group="{group}"} + b{group="{group}"} + c{job="{job}"} + d{x="{Group}"}"#,
        1.0,
    )
    .unwrap();
    let e = c.expression(&app(), &group());
    assert_eq!(
        e,
        r#"a{app="web.production",group="web-production-v002"} + b{group="web-production-v002"} + c{job="{job}"} + d{x="{Group}"}"#
    );
}

#[test]
fn quotes_and_backslashes_in_a_group_are_escaped() {
    let c =
        PromQlCheck::above("c", "http://127.0.0.1:9090", r#"up{group="{group}"}"#, 1.0).unwrap();
    let mut soft = Soft::default();
    for (g, want) in [
        (r#"a"b"#, r#"up{group="a\"b"}"#),
        (r"a\b", r#"up{group="a\\b"}"#),
        (r"x\", r#"up{group="x\\"}"#),
        (r#"x"}or vector(0)#"#, r#"up{group="x\"}or vector(0)#"}"#),
    ] {
        let got = c.expression(&app(), &GroupId::from(g));
        soft.expect(got == want, format!("group {g:?}: {got} (want {want})"));
    }
    soft.done();
}

/// The replaced values are not themselves searched for placeholders: a group
/// id that contains `{app}` stays as it is.
#[test]
fn a_replaced_value_is_not_replaced_again() {
    let c = PromQlCheck::above(
        "c",
        "http://127.0.0.1:9090",
        "{group}|{app}|{environment}",
        1.0,
    )
    .unwrap();
    let mut soft = Soft::default();
    for g in ["g{app}", "{environment}", "{group}", "x{group}{app}"] {
        let got = c.expression(&app(), &GroupId::from(g));
        let want = format!("{g}|web|production");
        soft.expect(got == want, format!("group {g:?}: {got} (want {want})"));
    }
    soft.done();
}

// ---------------------------------------------------------------------------
// a real Prometheus
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_result_shapes_fail_closed() {
    let Some(p) = Prometheus::start("attack-shapes", None).await else {
        return;
    };
    let mut soft = Soft::default();
    // empty vectors (generous limits: only the shape may fail them)
    for q in [
        "vector(1) == 2",
        "absent(vector(1))",
        r#"up{group="}"}"#,
        "nosuchmetric_at_all",
    ] {
        fails_both_ways(&p, q, 1e9, "empty", &mut soft).await;
    }
    // several series
    let q = r#"vector(1) or label_replace(vector(2), "a", "b", "", "")"#;
    fails_both_ways(&p, q, 1e9, "2 series", &mut soft).await;
    // a string
    let r = run(&p.above(r#""hello""#, 1e9)).await;
    soft.expect(
        matches!(&r, Err(e) if e.contains("string")),
        format!("string: {r:?}"),
    );
    // a range vector (a subquery, no data needed)
    let r = run(&p.above("vector(1)[5s:1s]", 1e9)).await;
    soft.expect(
        matches!(&r, Err(e) if e.contains("matrix") || e.contains("range")),
        format!("matrix: {r:?}"),
    );
    // a scalar and a one-series vector are values
    let r = run(&p.above("3", 5.0)).await;
    soft.expect(r == Ok(3.0), format!("scalar 3: {r:?}"));
    let r = run(&p.above("vector(0.25)", 1.0)).await;
    soft.expect(r == Ok(0.25), format!("vector(0.25): {r:?}"));
    let r = run(&p.above("1e-05", 1.0)).await;
    soft.expect(r == Ok(1e-5), format!("1e-05: {r:?}"));
    soft.done();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_nan_and_infinities_fail_on_the_right_side() {
    let Some(p) = Prometheus::start("attack-nan", None).await else {
        return;
    };
    let mut soft = Soft::default();
    // NaN fails both ways, scalar or vector
    for q in [
        "0/0",
        "vector(0)/0",
        "scalar(vector(1) or label_replace(vector(2), \"a\", \"b\", \"\", \"\"))",
    ] {
        fails_both_ways(&p, q, 1e9, "NaN", &mut soft).await;
    }
    // +Inf is above any limit, -Inf below any limit
    for q in ["1/0", "vector(1)/0"] {
        let r = run(&p.above(q, 1e300)).await;
        soft.expect(
            matches!(&r, Err(e) if e.contains("above the limit")),
            format!("{q} above 1e300: {r:?}"),
        );
    }
    for q in ["-1/0", "vector(-1)/0"] {
        let r = run(&p.below(q, -1e300)).await;
        soft.expect(
            matches!(&r, Err(e) if e.contains("below the limit")),
            format!("{q} below -1e300: {r:?}"),
        );
    }
    soft.done();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_refused_expressions_fail_with_prometheus_text() {
    let Some(p) = Prometheus::start("attack-syntax", None).await else {
        return;
    };
    let mut soft = Soft::default();
    for (q, needle) in [
        ("sum(rate(", "parse error"),
        (r#"up{job="a""#, "parse error"),
        ("}", "parse error"),
        ("up[5x]", "parse error"),
        ("nosuchfunction(1)", "unknown function"),
        (
            r#"label_replace(vector(1), "g", "x", "", "(")"#,
            "regular expression",
        ),
        (
            r#"vector(1) + on() (vector(1) or label_replace(vector(1), "a", "b", "", ""))"#,
            "many",
        ),
    ] {
        fails_both_ways(&p, q, 1e300, needle, &mut soft).await;
    }
    soft.done();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_limits_including_negative_ones() {
    let Some(p) = Prometheus::start("attack-limits", None).await else {
        return;
    };
    let mut soft = Soft::default();
    let cases: [(PromQlCheck, Result<f64, &str>); 8] = [
        (p.above("vector(2)", 2.0), Ok(2.0)),
        (p.below("vector(2)", 2.0), Ok(2.0)),
        (p.above("vector(2.0001)", 2.0), Err("above the limit 2")),
        (p.below("vector(1.9999)", 2.0), Err("below the limit 2")),
        (p.above("vector(0)", -1.0), Err("above the limit -1")),
        (p.below("vector(-2)", -1.0), Err("below the limit -1")),
        (p.below("vector(-1)", -1.0), Ok(-1.0)),
        (p.above("-5", -1.0), Ok(-5.0)),
    ];
    for (check, want) in cases {
        let r = run(&check).await;
        let ok = match (&r, want) {
            (Ok(v), Ok(w)) => *v == w,
            (Err(e), Err(needle)) => e.contains(needle),
            _ => false,
        };
        soft.expect(ok, format!("{:?}: got {r:?}, want {want:?}", check.limit()));
    }
    soft.done();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_server_accepts_the_timeouts_sent() {
    let Some(p) = Prometheus::start("attack-timeouts", None).await else {
        return;
    };
    let mut soft = Soft::default();
    for t in [
        Duration::from_millis(1500),
        Duration::from_millis(250),
        Duration::from_secs(3600),
        Duration::from_secs(10 * 365 * 24 * 3600),
    ] {
        let check = p.above("vector(1)", 5.0).with_timeout(t);
        let r = run(&check).await;
        soft.expect(r == Ok(1.0), format!("with_timeout({t:?}): {r:?}"));
    }
    soft.done();
}

/// `Duration::MAX` as "no limit": must not panic, and (being a timeout that
/// is never reached) should still evaluate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_server_with_duration_max_timeout() {
    let Some(p) = Prometheus::start("attack-maxtimeout", None).await else {
        return;
    };
    let check = p.above("vector(1)", 5.0).with_timeout(Duration::MAX);
    let r = timed(
        Duration::from_secs(15),
        tokio::spawn(async move { check.check(&app(), &group()).await }),
    )
    .await
    .0;
    match r {
        Err(join) => panic!("the check panicked: {join}"),
        Ok(r) => assert_eq!(r, Ok(1.0)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_server_under_a_path_prefix() {
    let Some(p) = Prometheus::start("attack-prefix", Some("/prom")).await else {
        return;
    };
    let mut soft = Soft::default();
    for server in [p.url.clone(), format!("{}/", p.url)] {
        let check = PromQlCheck::above("c", &server, "vector(1)", 5.0).unwrap();
        let r = run(&check).await;
        soft.expect(r == Ok(1.0), format!("{server}: {r:?}"));
    }
    // without the prefix: the server does not answer the query API, fail closed
    let root = p.url.trim_end_matches("/prom").to_string();
    let r = run(&PromQlCheck::above("c", &root, "vector(1)", 5.0).unwrap()).await;
    soft.expect(r.is_err(), format!("{root} (no prefix): {r:?}"));
    soft.done();
}

/// A group id cannot change the expression: with its quote and backslash
/// escaped, it stays inside its string. Unescaped, this id would turn the
/// failing 5 into a passing 0 (or a parse error for the backslash).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_injection_through_the_group_id_is_inert() {
    let Some(p) = Prometheus::start("attack-inject", None).await else {
        return;
    };
    let check = p.above(
        r#"vector(5) + 0 * count(label_replace(vector(1), "g", "{group}", "", ""))"#,
        1.0,
    );
    let mut soft = Soft::default();
    for g in [
        r#"x", "", "")) - 5 + 0 * count(label_replace(vector(1), "h", ""#,
        r"x\",
        r#"\"#,
        r#"a"b\"c"#,
    ] {
        let r = timed(
            Duration::from_secs(15),
            check.check(&app(), &GroupId::from(g)),
        )
        .await
        .0;
        soft.expect(
            matches!(&r, Err(e) if e.contains("is 5")),
            format!(
                "group {g:?}: {r:?} (expression {})",
                check.expression(&app(), &GroupId::from(g))
            ),
        );
    }
    soft.done();
}

// ---------------------------------------------------------------------------
// an unreachable or misbehaving server
// ---------------------------------------------------------------------------

#[tokio::test]
async fn refused_connection_fails_closed_quickly() {
    let url = format!("http://127.0.0.1:{}", free_port());
    let check = PromQlCheck::below("c", &url, "up", -1e300).unwrap();
    let (r, took) = timed(Duration::from_secs(10), check.check(&app(), &group())).await;
    let e = r.unwrap_err();
    assert!(e.contains("could not be reached"), "{e}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[tokio::test]
async fn unresolvable_host_fails_closed() {
    let check = PromQlCheck::below("c", "http://no-such-host.invalid:9090", "up", -1e300)
        .unwrap()
        .with_timeout(Duration::from_secs(3));
    let (r, _) = timed(Duration::from_secs(8), check.check(&app(), &group())).await;
    let e = r.unwrap_err();
    assert!(e.contains("could not be reached"), "{e}");
}

#[tokio::test]
async fn a_connection_closed_without_answer_fails_closed() {
    let fake = Fake::start(|_| Reply::Close).await;
    let check = fake_check(&fake.url, 1e300);
    let (r, _) = timed(Duration::from_secs(8), check.check(&app(), &group())).await;
    let e = r.unwrap_err();
    assert!(!e.trim().is_empty(), "an empty reason");
}

#[tokio::test]
async fn https_to_a_plain_http_server_fails_closed() {
    let fake = Fake::start(|_| Reply::Raw(json_200(&vector_of("0")))).await;
    let url = fake.url.replace("http://", "https://");
    let check = fake_check(&url, 1e300);
    let (r, _) = timed(Duration::from_secs(8), check.check(&app(), &group())).await;
    assert!(r.is_err(), "{r:?}");
}

#[tokio::test]
async fn a_hung_server_ends_within_the_timeout() {
    let fake = Fake::start(|_| Reply::Hang).await;
    let check = PromQlCheck::above("c", &fake.url, "up", 1e300)
        .unwrap()
        .with_timeout(Duration::from_secs(1));
    let (r, took) = timed(Duration::from_secs(10), check.check(&app(), &group())).await;
    let e = r.unwrap_err();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "took {took:?}: {e}"
    );
    let lower = e.to_lowercase();
    assert!(
        lower.contains("time") || lower.contains("within") || lower.contains("answer"),
        "the reason should say it timed out: {e}"
    );
}

#[tokio::test]
async fn a_hung_server_ends_within_the_default_10s() {
    let fake = Fake::start(|_| Reply::Hang).await;
    let check = PromQlCheck::above("c", &fake.url, "up", 1e300).unwrap();
    let (r, took) = timed(Duration::from_secs(20), check.check(&app(), &group())).await;
    assert!(r.is_err(), "{r:?}");
    assert!(
        took >= Duration::from_secs(9) && took < Duration::from_secs(13),
        "took {took:?}"
    );
}

#[tokio::test]
async fn a_trickling_answer_ends_within_the_timeout() {
    let fake = Fake::start(|_| Reply::Trickle).await;
    let check = PromQlCheck::above("c", &fake.url, "up", 1e300)
        .unwrap()
        .with_timeout(Duration::from_secs(1));
    let (r, took) = timed(Duration::from_secs(15), check.check(&app(), &group())).await;
    assert!(r.is_err(), "{r:?}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

#[tokio::test]
async fn an_endless_answer_ends_within_the_timeout() {
    let fake = Fake::start(|_| Reply::Endless).await;
    let check = PromQlCheck::above("c", &fake.url, "up", 1e300)
        .unwrap()
        .with_timeout(Duration::from_secs(2));
    let (r, took) = timed(Duration::from_secs(20), check.check(&app(), &group())).await;
    assert!(r.is_err(), "{r:?}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[tokio::test]
async fn a_slow_but_timely_answer_is_read() {
    let fake =
        Fake::start(|_| Reply::Delayed(Duration::from_millis(700), json_200(&vector_of("0.5"))))
            .await;
    let check = fake_check(&fake.url, 1.0);
    let (r, _) = timed(Duration::from_secs(8), check.check(&app(), &group())).await;
    assert_eq!(r, Ok(0.5));
}

#[tokio::test]
async fn http_errors_fail_closed_with_a_reason() {
    let prom_error = r#"{"status":"error","errorType":"unavailable","error":"TSDB not ready yet"}"#;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "500 html",
            http(
                "500 Internal Server Error",
                "text/html",
                "<html>oops</html>",
            ),
            "500",
        ),
        (
            "502 empty",
            http("502 Bad Gateway", "text/plain", ""),
            "502",
        ),
        (
            "503 prometheus error",
            http("503 Service Unavailable", "application/json", prom_error),
            "TSDB not ready yet",
        ),
        (
            "400 bad_data",
            http(
                "400 Bad Request",
                "application/json",
                r#"{"status":"error","errorType":"bad_data","error":"invalid parameter \"query\": 1:1: parse error: boom"}"#,
            ),
            "boom",
        ),
        (
            "422 execution",
            http(
                "422 Unprocessable Entity",
                "application/json",
                r#"{"status":"error","errorType":"execution","error":"too many samples"}"#,
            ),
            "too many samples",
        ),
        (
            "200 status error",
            json_200(r#"{"status":"error","errorType":"internal","error":"disk on fire"}"#),
            "disk on fire",
        ),
        (
            "404 not found",
            http("404 Not Found", "text/plain", "404 page not found"),
            "404",
        ),
    ];
    let mut soft = Soft::default();
    for (name, bytes, needle) in cases {
        let bytes = Arc::new(bytes);
        let b = bytes.clone();
        let fake = Fake::start(move |_| Reply::Raw((*b).clone())).await;
        for check in [
            fake_check(&fake.url, 1e300),
            PromQlCheck::below("c", &fake.url, "up", -1e300).unwrap(),
        ] {
            let (r, _) = timed(Duration::from_secs(8), check.check(&app(), &group())).await;
            soft.expect(
                matches!(&r, Err(e) if e.contains(needle)),
                format!("{name}: want an error naming {needle:?}, got {r:?}"),
            );
        }
    }
    soft.done();
}

/// A 5xx whose body happens to look like a success is still not a value
/// (fail closed). The docs do not name this case explicitly.
#[tokio::test]
async fn a_5xx_with_a_success_body_fails_closed() {
    let fake = Fake::start(|_| {
        Reply::Raw(http(
            "503 Service Unavailable",
            "application/json",
            vector_of("0"),
        ))
    })
    .await;
    let (r, _) = timed(
        Duration::from_secs(8),
        fake_check(&fake.url, 1.0).check(&app(), &group()),
    )
    .await;
    assert!(r.is_err(), "HTTP 503 read as a value: {r:?}");
}

#[tokio::test]
async fn wrong_shapes_fail_closed() {
    let truncated = vector_of("0");
    let truncated = truncated[..truncated.len() - 10].to_string();
    let bodies: Vec<(&str, String)> = vec![
        ("not json", "hello".into()),
        ("empty body", "".into()),
        ("json null", "null".into()),
        ("json array", "[]".into()),
        ("json object", "{}".into()),
        ("no data", r#"{"status":"success"}"#.into()),
        ("empty data", r#"{"status":"success","data":{}}"#.into()),
        ("no result", r#"{"status":"success","data":{"resultType":"vector"}}"#.into()),
        ("result object", r#"{"status":"success","data":{"resultType":"vector","result":{}}}"#.into()),
        ("unknown type", r#"{"status":"success","data":{"resultType":"weird","result":[1,"0"]}}"#.into()),
        ("unknown status", vector_of("0").replace("success", "maybe")),
        ("no status", vector_of("0").replace(r#""status":"success","#, "")),
        ("value not a number", vector_of("abc")),
        ("value empty", vector_of("")),
        ("value lowercase nan", vector_of("nan")),
        ("value NaN", vector_of("NaN")),
        ("value +Inf", vector_of("+Inf")),
        ("value inf", vector_of("inf")),
        ("value too large", vector_of("1e999")),
        ("value missing", r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{}}]}}"#.into()),
        ("value short", r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1]}]}}"#.into()),
        ("native histogram", r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"histogram":[1,{"count":"3","sum":"5","buckets":[]}]}]}}"#.into()),
        ("scalar not a number", r#"{"status":"success","data":{"resultType":"scalar","result":[1,"x"]}}"#.into()),
        ("scalar NaN", r#"{"status":"success","data":{"resultType":"scalar","result":[1,"NaN"]}}"#.into()),
        ("matrix one series", r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1,"0"]]}]}}"#.into()),
        ("string", r#"{"status":"success","data":{"resultType":"string","result":[1,"0"]}}"#.into()),
        ("empty vector", r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#.into()),
        ("truncated", truncated),
    ];
    let mut soft = Soft::default();
    for (name, body) in bodies {
        let bytes = json_200(&body);
        let fake = Fake::start(move |_| Reply::Raw(bytes.clone())).await;
        // a limit every ordinary number passes
        let check = fake_check(&fake.url, 1e300);
        let (r, _) = timed(Duration::from_secs(8), check.check(&app(), &group())).await;
        soft.expect(r.is_err(), format!("{name}: passed with {r:?} on {body}"));
    }
    soft.done();
}

#[tokio::test]
async fn a_huge_many_series_reply_fails_closed() {
    let mut body = String::from(r#"{"status":"success","data":{"resultType":"vector","result":["#);
    for i in 0..50_000 {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&format!(r#"{{"metric":{{"i":"{i}"}},"value":[1,"0"]}}"#));
    }
    body.push_str("]}}");
    let bytes = json_200(&body);
    let fake = Fake::start(move |_| Reply::Raw(bytes.clone())).await;
    let (r, _) = timed(
        Duration::from_secs(10),
        fake_check(&fake.url, 1e300).check(&app(), &group()),
    )
    .await;
    let e = r.unwrap_err();
    assert!(e.contains("50000 series"), "{}", &e[..e.len().min(500)]);
}

/// The reason ends up in errors and events: it should not list 50 000 series.
/// (The docs do not bound its length: a usability expectation.)
#[tokio::test]
async fn the_reason_for_a_huge_reply_is_bounded() {
    let mut body = String::from(r#"{"status":"success","data":{"resultType":"vector","result":["#);
    for i in 0..50_000 {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&format!(
            r#"{{"metric":{{"instance":"host-{i}:9100"}},"value":[1,"0"]}}"#
        ));
    }
    body.push_str("]}}");
    let bytes = json_200(&body);
    let fake = Fake::start(move |_| Reply::Raw(bytes.clone())).await;
    let (r, _) = timed(
        Duration::from_secs(10),
        fake_check(&fake.url, 1e300).check(&app(), &group()),
    )
    .await;
    let e = r.unwrap_err();
    assert!(
        e.len() < 10_000,
        "a reason of {} bytes: {}...",
        e.len(),
        &e[..300.min(e.len())]
    );
    // same for a huge non-JSON body
    let page = "<html>".to_string() + &"x".repeat(5_000_000);
    let bytes = http("500 Internal Server Error", "text/html", page);
    let fake = Fake::start(move |_| Reply::Raw(bytes.clone())).await;
    let (r, _) = timed(
        Duration::from_secs(10),
        fake_check(&fake.url, 1e300).check(&app(), &group()),
    )
    .await;
    let e = r.unwrap_err();
    assert!(e.len() < 10_000, "a reason of {} bytes", e.len());
}

#[tokio::test]
async fn a_redirect_loop_fails_closed_in_time() {
    let fake = Fake::start(|_| {
        Reply::Raw(
            b"HTTP/1.1 302 Found\r\nLocation: /api/v1/query?query=up\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                .to_vec(),
        )
    })
    .await;
    let (r, _) = timed(
        Duration::from_secs(10),
        fake_check(&fake.url, 1e300).check(&app(), &group()),
    )
    .await;
    assert!(r.is_err(), "{r:?}");
}

/// Redirected to another host, the bearer token must not follow.
#[tokio::test]
async fn a_redirect_to_another_host_does_not_carry_the_token() {
    let other = Fake::start(|_| Reply::Raw(json_200(&vector_of("0")))).await;
    // "localhost" vs "127.0.0.1": another host for the client
    let location = format!("http://localhost:{}/api/v1/query?query=up", other.port());
    let fake = Fake::start(move |_| {
        Reply::Raw(
            format!("HTTP/1.1 307 Temporary Redirect\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .into_bytes(),
        )
    })
    .await;
    let check = fake_check(&fake.url, 1e300).with_bearer_token("tok-s3cr3t");
    let (r, _) = timed(Duration::from_secs(10), check.check(&app(), &group())).await;
    let leaked: Vec<_> = other
        .seen()
        .into_iter()
        .filter(|s| s.head.contains("tok-s3cr3t"))
        .collect();
    assert!(
        leaked.is_empty(),
        "token sent to the other host: {leaked:?} ({r:?})"
    );
    assert!(!format!("{r:?}").contains("tok-s3cr3t"), "{r:?}");
}

// ---------------------------------------------------------------------------
// what is sent
// ---------------------------------------------------------------------------

#[tokio::test]
async fn the_request_carries_the_expression_exactly_and_the_timeout() {
    let fake = Fake::start(|_| Reply::Raw(json_200(&vector_of("0")))).await;
    let query = r#"sum(rate(x{app="{app}.{environment}",group="{group}",q=~"a&b=c#d%20e+f;g?h/i"}[1m])) + 1 # note"#;
    let check = PromQlCheck::above("c", &fake.url, query, 1.0)
        .unwrap()
        .with_timeout(Duration::from_millis(1500))
        .with_bearer_token("tok-123");
    let (r, _) = timed(Duration::from_secs(8), check.check(&app(), &group())).await;
    assert_eq!(r, Ok(0.0));
    let seen = fake.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let s = &seen[0];
    assert_eq!(s.method, "GET", "{}", s.head);
    assert_eq!(s.path, "/api/v1/query", "{}", s.head);
    let want = r#"sum(rate(x{app="web.production",group="web-production-v002",q=~"a&b=c#d%20e+f;g?h/i"}[1m])) + 1 # note"#;
    assert_eq!(s.param("query").as_deref(), Some(want), "{}", s.head);
    let timeout = s.param("timeout").unwrap_or_default();
    assert!(
        ["1.5", "1.5s", "1500ms", "1s500ms", "1.500s"].contains(&timeout.as_str()),
        "timeout sent as {timeout:?}: {}",
        s.head
    );
    assert!(
        s.head
            .lines()
            .any(|l| l.eq_ignore_ascii_case("authorization: Bearer tok-123")),
        "{}",
        s.head
    );
}

#[tokio::test]
async fn path_prefixes_and_trailing_slashes_make_one_query_path() {
    let fake = Fake::start(|_| Reply::Raw(json_200(&vector_of("0")))).await;
    let mut soft = Soft::default();
    for (suffix, want) in [
        ("", "/api/v1/query"),
        ("/", "/api/v1/query"),
        ("/prom", "/prom/api/v1/query"),
        ("/prom/", "/prom/api/v1/query"),
        ("/a/b", "/a/b/api/v1/query"),
    ] {
        let server = format!("{}{suffix}", fake.url);
        let before = fake.seen().len();
        let check = fake_check(&server, 1.0);
        let (r, _) = timed(Duration::from_secs(8), check.check(&app(), &group())).await;
        let seen = fake.seen();
        let path = seen.get(before).map(|s| s.path.clone());
        soft.expect(
            r == Ok(0.0) && path.as_deref() == Some(want),
            format!("{server}: {r:?}, path {path:?}, want {want}"),
        );
    }
    soft.done();
}

// ---------------------------------------------------------------------------
// secrets
// ---------------------------------------------------------------------------

#[tokio::test]
async fn credentials_never_appear_in_reasons() {
    let mut soft = Soft::default();
    let secret = "s3cr3tPW";
    let token = "tok-s3cr3t-bearer";
    let leaks = |s: &str| s.contains(secret) || s.contains(token);

    // refused
    let url = format!("http://alice:{secret}@127.0.0.1:{}", free_port());
    let c = PromQlCheck::above("c", &url, "up", 1e300)
        .unwrap()
        .with_bearer_token(token);
    let (r, _) = timed(Duration::from_secs(8), c.check(&app(), &group())).await;
    soft.expect(matches!(&r, Err(e) if !leaks(e)), format!("refused: {r:?}"));

    // each kind of bad answer
    let replies: Vec<(&str, MakeReply)> = vec![
        ("hang", || Reply::Hang),
        ("close", || Reply::Close),
        ("500", || {
            Reply::Raw(http("500 Internal Server Error", "text/html", "oops"))
        }),
        ("not json", || Reply::Raw(json_200("hello"))),
        ("refused query", || {
            Reply::Raw(http(
                "400 Bad Request",
                "application/json",
                r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#,
            ))
        }),
        ("empty", || {
            Reply::Raw(json_200(
                r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#,
            ))
        }),
        ("above", || Reply::Raw(json_200(&vector_of("5")))),
        ("redirect loop", || {
            Reply::Raw(b"HTTP/1.1 302 Found\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n".to_vec())
        }),
    ];
    for (name, reply) in replies {
        let fake = Fake::start(move |_| reply()).await;
        let url = fake
            .url
            .replace("http://", &format!("http://alice:{secret}@"));
        let c = PromQlCheck::above("c", &url, "up", 1.0)
            .unwrap()
            .with_bearer_token(token)
            .with_timeout(Duration::from_millis(800));
        let (r, _) = timed(Duration::from_secs(8), c.check(&app(), &group())).await;
        soft.expect(matches!(&r, Err(e) if !leaks(e)), format!("{name}: {r:?}"));
    }

    // a refused setting
    let e = PromQlCheck::above(
        "c",
        &format!("ftp://alice:{secret}@127.0.0.1:9090"),
        "up",
        1.0,
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    soft.expect(
        !e.is_empty() && !leaks(&e),
        format!("invalid server: {e:?}"),
    );
    soft.done();
}

/// The bearer token is a secret: `Debug` of the check should not show it (the
/// convention of `bluegreen_core::Release` and `bluegreen-aws`; this crate's
/// docs do not promise it).
#[test]
fn debug_does_not_show_the_bearer_token() {
    let c = PromQlCheck::above("c", "http://alice:pw-s3cr3t@127.0.0.1:9090", "up", 1.0)
        .unwrap()
        .with_bearer_token("tok-s3cr3t");
    let debug = format!("{c:?}");
    assert!(
        !debug.contains("tok-s3cr3t") && !debug.contains("pw-s3cr3t"),
        "{debug}"
    );
}

/// A token that would inject a header line: the check fails (or the header is
/// refused) rather than panicking or sending a second header.
#[tokio::test]
async fn a_bearer_token_with_a_newline_injects_no_header() {
    let fake = Fake::start(|_| Reply::Raw(json_200(&vector_of("0")))).await;
    let check = fake_check(&fake.url, 1e300).with_bearer_token("t\r\nX-Evil: 1");
    let r = timed(
        Duration::from_secs(8),
        tokio::spawn(async move { check.check(&app(), &group()).await }),
    )
    .await
    .0;
    let r = match r {
        Err(join) => panic!("the check panicked: {join}"),
        Ok(r) => r,
    };
    let evil: Vec<_> = fake
        .seen()
        .into_iter()
        .filter(|s| s.head.to_ascii_lowercase().contains("x-evil"))
        .collect();
    assert!(evil.is_empty(), "header injected: {evil:?}");
    assert!(
        r.is_err(),
        "a token that cannot be sent still passed: {r:?}"
    );
}

/// Prometheus adds `warnings` (and, newer, `infos`) to successful replies: a
/// value with them is still the value.
#[tokio::test]
async fn warnings_and_infos_in_a_reply_are_tolerated() {
    let body = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"0.5"]}]},"warnings":["partial"],"infos":["x"]}"#;
    let fake = Fake::start(move |_| Reply::Raw(json_200(body))).await;
    let (r, _) = timed(
        Duration::from_secs(8),
        fake_check(&fake.url, 1.0).check(&app(), &group()),
    )
    .await;
    assert_eq!(r, Ok(0.5));
}

/// Non-ASCII text in the expression arrives unchanged.
#[tokio::test]
async fn non_ascii_in_the_expression_arrives_unchanged() {
    let fake = Fake::start(|_| Reply::Raw(json_200(&vector_of("0")))).await;
    let query = r#"count(label_replace(vector(1), "g", "é ü 日本 ✓", "", ""))"#;
    let check = PromQlCheck::above("c", &fake.url, query, 1.0).unwrap();
    let (r, _) = timed(Duration::from_secs(8), check.check(&app(), &group())).await;
    assert_eq!(r, Ok(0.0));
    let seen = fake.seen();
    assert_eq!(
        seen.first().and_then(|s| s.param("query")).as_deref(),
        Some(query)
    );
}
