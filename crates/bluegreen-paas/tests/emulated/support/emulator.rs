//! An emulator of the Platform API endpoints the provider uses (apps, config vars,
//! slugs with blob upload, builds with output streams, releases and rollbacks,
//! formation, dynos, domains, app features), in memory, on 127.0.0.1.
//!
//! Every request body and every answer body is checked against Heroku's published
//! schema (see [`super::schema`]); a mismatch is recorded, answered 422 when it is
//! the request's, and fails the test when the emulator is dropped.
//!
//! Knobs: dyno boot time, crashing slugs (a tarball or source URL containing
//! `crash`), failing builds (a source URL containing `fail`), page size, failures
//! of the next requests, a hang at the Nth request, a spent rate-limit budget.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bluegreen_paas::{ClientOptions, PlatformClient, Token};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};
use tokio::sync::Notify;

use super::schema::Schema;

/// The token the emulator accepts.
pub const TOKEN: &str = "emulator-token-0123";

/// Where a hang happens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hang {
    /// Before the request is carried out.
    Before,
    /// After it is carried out, before the answer.
    After,
}

struct Knobs {
    boot_time: Duration,
    build_time: Duration,
    page_size: usize,
    fail: VecDeque<(u16, String)>,
    hang: Option<(u64, Hang)>,
    spend_budget: bool,
}

#[derive(Clone)]
struct Rel {
    id: String,
    version: u64,
    slug: Option<String>,
    config: BTreeMap<String, String>,
    description: String,
    created_at: String,
}

#[derive(Clone)]
struct Form {
    id: String,
    quantity: u32,
    size: String,
    command: String,
    created_at: String,
}

#[derive(Clone)]
struct DynoRec {
    id: String,
    name: String,
    kind: String,
    release: String,
    version: u64,
    born: Instant,
    crash: bool,
    retiring: bool,
    size: String,
    command: String,
    created_at: String,
}

#[derive(Clone)]
struct DomainRec {
    id: String,
    hostname: String,
    cname: String,
    created_at: String,
}

#[derive(Clone)]
struct AppRec {
    id: String,
    name: String,
    host: String,
    created_at: String,
    maintenance: bool,
    config: BTreeMap<String, String>,
    releases: Vec<Rel>,
    formation: BTreeMap<String, Form>,
    dynos: Vec<DynoRec>,
    domains: Vec<DomainRec>,
    preboot: bool,
}

struct SlugRec {
    id: String,
    app: String,
    process_types: BTreeMap<String, String>,
    blob: Option<Vec<u8>>,
    crash: bool,
    created_at: String,
}

struct BuildRec {
    id: String,
    app: String,
    url: String,
    born: Instant,
    status: String,
    slug: Option<String>,
    release: Option<String>,
    created_at: String,
}

struct State {
    apps: BTreeMap<String, AppRec>,
    slugs: BTreeMap<String, SlugRec>,
    builds: BTreeMap<String, BuildRec>,
    knobs: Knobs,
    requests: u64,
    log: Vec<String>,
}

struct Shared {
    state: Mutex<State>,
    schema: Option<Arc<Schema>>,
    violations: Mutex<Vec<String>>,
    addr: SocketAddr,
    hung: Notify,
}

/// The emulator; dropping it checks that no schema violation was seen.
pub struct Emulator {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

type Answer = (StatusCode, Value);

fn uuid() -> String {
    let h = |n: usize| -> String {
        (0..n)
            .map(|_| format!("{:x}", fastrand::u8(..16)))
            .collect()
    };
    format!("{}-{}-{}-{}-{}", h(8), h(4), h(4), h(4), h(12))
}

fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

fn error(status: u16, id: &str, message: &str) -> Answer {
    (
        StatusCode::from_u16(status).unwrap(),
        json!({ "id": id, "message": message }),
    )
}

fn not_found(what: &str) -> Answer {
    error(404, "not_found", &format!("Couldn't find that {what}."))
}

const OWNER_ID: &str = "01234567-89ab-cdef-0123-456789abcdef";
const STACK_ID: &str = "11234567-89ab-cdef-0123-456789abcdef";
const SIZE_ID: &str = "21234567-89ab-cdef-0123-456789abcdef";

fn user() -> Value {
    json!({ "id": OWNER_ID, "email": "owner@example.com" })
}

fn stack() -> Value {
    json!({ "id": STACK_ID, "name": "heroku-22" })
}

impl Emulator {
    /// Starts an emulator on 127.0.0.1 with the schema from the environment.
    pub async fn start() -> Emulator {
        let schema = super::schema::load();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                apps: BTreeMap::new(),
                slugs: BTreeMap::new(),
                builds: BTreeMap::new(),
                knobs: Knobs {
                    boot_time: Duration::from_millis(120),
                    build_time: Duration::from_millis(60),
                    page_size: 1000,
                    fail: VecDeque::new(),
                    hang: None,
                    spend_budget: false,
                },
                requests: 0,
                log: Vec::new(),
            }),
            schema,
            violations: Mutex::new(Vec::new()),
            addr,
            hung: Notify::new(),
        });
        let serving = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let shared = serving.clone();
                tokio::spawn(async move {
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let service = hyper::service::service_fn(move |req| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(handle(shared, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                });
            }
        });
        Emulator { shared, task }
    }

    /// The API's base URL.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// A client with the right token and short pauses.
    pub fn client(&self) -> PlatformClient {
        self.client_with_token(TOKEN)
    }

    /// A client with `token`.
    pub fn client_with_token(&self, token: &str) -> PlatformClient {
        PlatformClient::with_options(
            &self.base_url(),
            Token::new(token),
            ClientOptions::default()
                .with_rate_limit_pause(Duration::from_millis(300))
                .with_build_poll_interval(Duration::from_millis(20))
                .with_request_timeout(Duration::from_secs(30)),
        )
        .unwrap()
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.shared.state.lock().unwrap())
    }

    /// How long a dyno takes to come up.
    pub fn set_boot_time(&self, d: Duration) {
        self.with(|s| s.knobs.boot_time = d);
    }

    /// How many items a page of a list holds.
    pub fn set_page_size(&self, n: usize) {
        self.with(|s| s.knobs.page_size = n.max(1));
    }

    /// The next `n` API requests fail with `status` and error `id`.
    pub fn fail_next(&self, n: usize, status: u16, id: &str) {
        self.with(|s| {
            for _ in 0..n {
                s.knobs.fail.push_back((status, id.to_owned()));
            }
        });
    }

    /// The `n`th API request from now (1 is the next) never gets an answer.
    pub fn hang_at(&self, n: u64, at: Hang) {
        self.with(|s| s.knobs.hang = Some((s.requests + n, at)));
    }

    /// Whether a set hang is still to come.
    pub fn hang_pending(&self) -> bool {
        self.with(|s| s.knobs.hang.is_some())
    }

    /// Resolves once a request hangs.
    pub async fn hung(&self) {
        self.shared.hung.notified().await
    }

    /// The next answer says `RateLimit-Remaining: 0`.
    pub fn spend_budget(&self) {
        self.with(|s| s.knobs.spend_budget = true);
    }

    /// API requests so far.
    pub fn requests(&self) -> u64 {
        self.with(|s| s.requests)
    }

    /// `METHOD path` of every API request so far.
    pub fn log(&self) -> Vec<String> {
        self.with(|s| s.log.clone())
    }

    /// The names of every app.
    pub fn app_names(&self) -> Vec<String> {
        self.with(|s| s.apps.keys().cloned().collect())
    }

    /// An app's config vars.
    pub fn config(&self, app: &str) -> Option<BTreeMap<String, String>> {
        self.with(|s| s.apps.get(app).map(|a| a.config.clone()))
    }

    /// An app's maintenance mode.
    pub fn maintenance(&self, app: &str) -> Option<bool> {
        self.with(|s| s.apps.get(app).map(|a| a.maintenance))
    }

    /// The custom domains of an app.
    pub fn domains(&self, app: &str) -> Vec<String> {
        self.with(|s| {
            s.apps
                .get(app)
                .map(|a| a.domains.iter().map(|d| d.hostname.clone()).collect())
                .unwrap_or_default()
        })
    }

    /// How many releases an app has.
    pub fn release_count(&self, app: &str) -> usize {
        self.with(|s| s.apps.get(app).map(|a| a.releases.len()).unwrap_or(0))
    }

    /// Creates an app that is not bluegreen's, with config vars and, optionally, a
    /// custom domain and a running slug.
    pub fn add_foreign_app(&self, name: &str, config: &[(&str, &str)], domain: Option<&str>) {
        self.with(|s| {
            let mut app = new_app(name);
            app.config = config
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            if let Some(d) = domain {
                app.domains.push(DomainRec {
                    id: uuid(),
                    hostname: d.into(),
                    cname: format!("{}.herokudns.com", uuid()),
                    created_at: now(),
                });
            }
            let version = app.releases.len() as u64 + 1;
            app.releases.push(Rel {
                id: uuid(),
                version,
                slug: Some(uuid()),
                config: app.config.clone(),
                description: "Deploy 1234abc".into(),
                created_at: now(),
            });
            s.apps.insert(name.into(), app);
        });
    }

    /// Panics with the schema violations seen so far.
    pub fn assert_schema_clean(&self) {
        let v = self.shared.violations.lock().unwrap();
        assert!(v.is_empty(), "schema violations:\n{}", v.join("\n"));
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.task.abort();
        if !std::thread::panicking() {
            self.assert_schema_clean();
        }
    }
}

fn new_app(name: &str) -> AppRec {
    let created_at = now();
    AppRec {
        id: uuid(),
        name: name.into(),
        host: format!("{name}-{:06x}", fastrand::u32(..0xff_ffff)),
        created_at: created_at.clone(),
        maintenance: false,
        config: BTreeMap::new(),
        releases: vec![Rel {
            id: uuid(),
            version: 1,
            slug: None,
            config: BTreeMap::new(),
            description: "Initial release".into(),
            created_at,
        }],
        formation: BTreeMap::new(),
        dynos: Vec::new(),
        domains: Vec::new(),
        preboot: false,
    }
}

fn respond(status: StatusCode, body: Bytes, headers: &[(&str, String)]) -> Response<Full<Bytes>> {
    let mut r = Response::builder().status(status);
    for (k, v) in headers {
        r = r.header(*k, v);
    }
    r.body(Full::new(body)).unwrap()
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let auth = header("authorization");
    let accept = header("accept");
    let range = header("range");
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();

    // blob uploads and output streams: not the API, no token
    if let Some(id) = path.strip_prefix("/blobs/") {
        let mut s = shared.state.lock().unwrap();
        return match s.slugs.get_mut(id) {
            Some(slug) if method == "PUT" => {
                slug.crash = body.windows(5).any(|w| w.eq_ignore_ascii_case(b"crash"));
                slug.blob = Some(body.to_vec());
                respond(StatusCode::OK, Bytes::new(), &[])
            }
            _ => respond(StatusCode::NOT_FOUND, Bytes::new(), &[]),
        };
    }
    if let Some(id) = path.strip_prefix("/streams/") {
        let s = shared.state.lock().unwrap();
        return match s.builds.get(id) {
            Some(b) => {
                let text = format!(
                    "-----> Building source from {}\n-----> Compressing slug\n-----> Done\n",
                    b.url
                );
                respond(
                    StatusCode::OK,
                    Bytes::from(text),
                    &[("content-type", "text/plain".into())],
                )
            }
            None => respond(StatusCode::NOT_FOUND, Bytes::new(), &[]),
        };
    }

    let json_answer = |(status, value): Answer, extra: &[(&str, String)]| {
        let mut headers = vec![("content-type", "application/json".to_owned())];
        headers.extend(extra.iter().cloned());
        respond(status, Bytes::from(value.to_string()), &headers)
    };

    if auth.as_deref() != Some(&format!("Bearer {TOKEN}")) {
        return json_answer(
            error(401, "unauthorized", "Invalid credentials provided."),
            &[],
        );
    }
    if accept.as_deref() != Some(bluegreen_paas::ACCEPT_V3) {
        return json_answer(
            error(
                400,
                "bad_request",
                "Accept: application/vnd.heroku+json; version=3 is required",
            ),
            &[],
        );
    }
    let (hang, failure, budget) = {
        let mut s = shared.state.lock().unwrap();
        s.requests += 1;
        let n = s.requests;
        s.log.push(format!("{method} {path}"));
        let hang = match s.knobs.hang {
            Some((at, how)) if at == n => {
                s.knobs.hang = None;
                Some(how)
            }
            _ => None,
        };
        let failure = s.knobs.fail.pop_front();
        let budget = std::mem::take(&mut s.knobs.spend_budget);
        (hang, failure, budget)
    };
    if hang == Some(Hang::Before) {
        shared.hung.notify_one();
        std::future::pending::<()>().await;
    }
    if let Some((status, id)) = failure {
        let mut extra = vec![];
        if status == 429 {
            extra.push(("RateLimit-Remaining", "0".to_owned()));
        }
        return json_answer(error(status, &id, "injected by the emulator"), &extra);
    }
    let parsed: Option<Value> = if body.is_empty() {
        None
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => Some(v),
            Err(e) => {
                return json_answer(error(400, "bad_request", &format!("not JSON: {e}")), &[])
            }
        }
    };
    if let Some(schema) = &shared.schema {
        if let Err(v) = schema.check_request(&method, &path, parsed.as_ref()) {
            shared.violations.lock().unwrap().push(v.clone());
            return json_answer(error(422, "invalid_params", &v), &[]);
        }
    }
    let answer = {
        let mut s = shared.state.lock().unwrap();
        let addr = shared.addr;
        route(&mut s, addr, &method, &path, parsed.unwrap_or(Value::Null))
    };
    if hang == Some(Hang::After) {
        shared.hung.notify_one();
        std::future::pending::<()>().await;
    }
    let (status, value) = answer;
    if status.is_success() {
        if let Some(schema) = &shared.schema {
            if let Err(v) = schema.check_response(&method, &path, &value) {
                shared.violations.lock().unwrap().push(v);
            }
        }
    }
    let remaining = if budget { "0" } else { "4500" };
    let mut extra = vec![("RateLimit-Remaining", remaining.to_owned())];
    let (status, value) = match value {
        Value::Array(items) if method == "GET" && status.is_success() => {
            let page_size = shared.state.lock().unwrap().knobs.page_size;
            let mut items: Vec<Value> = items;
            let key = |v: &Value| v.get("id").and_then(Value::as_str).unwrap_or("").to_owned();
            items.sort_by_key(key);
            let after = range
                .as_deref()
                .and_then(|r| r.split(']').nth(1))
                .and_then(|r| r.split("..").next())
                .map(|r| r.trim().to_owned());
            if let Some(after) = &after {
                items.retain(|v| &key(v) > after);
            }
            if items.len() > page_size {
                items.truncate(page_size);
                let last = key(items.last().unwrap());
                extra.push(("Next-Range", format!("id ]{last}..; max={page_size}")));
                (StatusCode::PARTIAL_CONTENT, Value::Array(items))
            } else {
                (status, Value::Array(items))
            }
        }
        other => (status, other),
    };
    json_answer((status, value), &extra)
}

fn find_app<'a>(s: &'a mut State, key: &str) -> Option<&'a mut AppRec> {
    let name = s
        .apps
        .values()
        .find(|a| a.name == key || a.id == key)
        .map(|a| a.name.clone())?;
    s.apps.get_mut(&name)
}

fn route(s: &mut State, addr: SocketAddr, method: &str, path: &str, body: Value) -> Answer {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method, parts.as_slice()) {
        ("GET", ["apps"]) => {
            let apps: Vec<Value> = s.apps.values().map(app_json).collect();
            (StatusCode::OK, Value::Array(apps))
        }
        ("POST", ["apps"]) => {
            let name = body
                .get("name")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| format!("app-{:08x}", fastrand::u32(..)));
            if s.apps.contains_key(&name) {
                return error(422, "invalid_params", "Name is already taken");
            }
            let app = new_app(&name);
            let out = app_json(&app);
            s.apps.insert(name, app);
            (StatusCode::CREATED, out)
        }
        (_, ["apps", key, rest @ ..]) => {
            let key = key.to_string();
            let boot = s.knobs.boot_time;
            let build_time = s.knobs.build_time;
            if method == "DELETE" && rest.is_empty() {
                let Some(name) = find_app(s, &key).map(|a| a.name.clone()) else {
                    return not_found("app");
                };
                let app = s.apps.remove(&name).unwrap();
                return (StatusCode::OK, app_json(&app));
            }
            // builds finish lazily, creating their slug and release
            settle_builds(s, build_time, boot);
            let Some(app) = find_app(s, &key) else {
                return not_found("app");
            };
            let app_name = app.name.clone();
            settle(app, boot);
            app_route(s, addr, &app_name, method, rest, body)
        }
        _ => error(404, "not_found", &format!("no route {method} {path}")),
    }
}

fn settle(app: &mut AppRec, boot: Duration) {
    let kinds: Vec<String> = app.dynos.iter().map(|d| d.kind.clone()).collect();
    for kind in kinds {
        let fresh: Vec<&DynoRec> = app
            .dynos
            .iter()
            .filter(|d| d.kind == kind && !d.retiring)
            .collect();
        let ready = fresh.iter().all(|d| d.born.elapsed() >= boot);
        if ready {
            app.dynos.retain(|d| !(d.kind == kind && d.retiring));
        }
    }
}

fn settle_builds(s: &mut State, build_time: Duration, boot: Duration) {
    let due: Vec<String> = s
        .builds
        .values()
        .filter(|b| b.status == "pending" && b.born.elapsed() >= build_time)
        .map(|b| b.id.clone())
        .collect();
    for id in due {
        let (app, url) = {
            let b = &s.builds[&id];
            (b.app.clone(), b.url.clone())
        };
        if url.contains("fail") || !s.apps.contains_key(&app) {
            s.builds.get_mut(&id).unwrap().status = "failed".into();
            continue;
        }
        let slug_id = uuid();
        s.slugs.insert(
            slug_id.clone(),
            SlugRec {
                id: slug_id.clone(),
                app: app.clone(),
                process_types: BTreeMap::from([("web".to_owned(), "./bin/web".to_owned())]),
                blob: Some(url.clone().into_bytes()),
                crash: url.contains("crash"),
                created_at: now(),
            },
        );
        let release = release_slug(s, &app, &slug_id, format!("Deploy {}", &id[..8]), boot);
        let b = s.builds.get_mut(&id).unwrap();
        b.status = "succeeded".into();
        b.slug = Some(slug_id);
        b.release = Some(release);
    }
}

/// Creates a release of a slug on an app and rolls its dynos; gives the release id.
fn release_slug(
    s: &mut State,
    app: &str,
    slug_id: &str,
    description: String,
    _boot: Duration,
) -> String {
    let slug = &s.slugs[slug_id];
    let types = slug.process_types.clone();
    let crash = slug.crash;
    let app = s.apps.get_mut(app).unwrap();
    let first = app.formation.is_empty();
    for (kind, command) in &types {
        app.formation.entry(kind.clone()).or_insert_with(|| Form {
            id: uuid(),
            quantity: u32::from(first && kind == "web"),
            size: "standard-1X".into(),
            command: command.clone(),
            created_at: now(),
        });
    }
    let rel = Rel {
        id: uuid(),
        version: app.releases.last().map(|r| r.version + 1).unwrap_or(1),
        slug: Some(slug_id.to_owned()),
        config: app.config.clone(),
        description,
        created_at: now(),
    };
    let id = rel.id.clone();
    app.releases.push(rel);
    roll(app, crash);
    id
}

/// Replaces the dynos with dynos of the current release (preboot keeps the old ones
/// until the new ones are up).
fn roll(app: &mut AppRec, crash: bool) {
    let Some(current) = app.releases.last().cloned() else {
        return;
    };
    if current.slug.is_none() {
        return;
    }
    if app.preboot {
        for d in &mut app.dynos {
            d.retiring = true;
        }
    } else {
        app.dynos.clear();
    }
    let forms: Vec<(String, Form)> = app
        .formation
        .iter()
        .map(|(k, f)| (k.clone(), f.clone()))
        .collect();
    for (kind, form) in forms {
        for n in 1..=form.quantity {
            app.dynos.push(new_dyno(&kind, n, &current, &form, crash));
        }
    }
}

fn new_dyno(kind: &str, n: u32, release: &Rel, form: &Form, crash: bool) -> DynoRec {
    DynoRec {
        id: uuid(),
        name: format!("{kind}.{n}"),
        kind: kind.to_owned(),
        release: release.id.clone(),
        version: release.version,
        born: Instant::now(),
        crash,
        retiring: false,
        size: form.size.clone(),
        command: form.command.clone(),
        created_at: now(),
    }
}

fn current_crash(s: &State, app: &AppRec) -> bool {
    app.releases
        .last()
        .and_then(|r| r.slug.as_ref())
        .and_then(|id| s.slugs.get(id))
        .map(|slug| slug.crash)
        .unwrap_or(false)
}

fn app_route(
    s: &mut State,
    addr: SocketAddr,
    name: &str,
    method: &str,
    rest: &[&str],
    body: Value,
) -> Answer {
    let boot = s.knobs.boot_time;
    let crash = current_crash(s, &s.apps[name]);
    match (method, rest) {
        ("GET", []) => (StatusCode::OK, app_json(&s.apps[name])),
        ("PATCH", []) => {
            let app = s.apps.get_mut(name).unwrap();
            if let Some(m) = body.get("maintenance").and_then(Value::as_bool) {
                app.maintenance = m;
            }
            (StatusCode::OK, app_json(app))
        }
        ("GET", ["config-vars"]) => (StatusCode::OK, json!(s.apps[name].config)),
        ("PATCH", ["config-vars"]) => {
            let app = s.apps.get_mut(name).unwrap();
            let mut names = Vec::new();
            for (k, v) in body.as_object().cloned().unwrap_or_default() {
                names.push(k.clone());
                match v.as_str() {
                    Some(v) => app.config.insert(k, v.to_owned()),
                    None => app.config.remove(&k),
                };
            }
            let current = app.releases.last().cloned();
            app.releases.push(Rel {
                id: uuid(),
                version: current.as_ref().map(|r| r.version + 1).unwrap_or(1),
                slug: current.and_then(|r| r.slug),
                config: app.config.clone(),
                description: format!("Set {} config vars", names.join(", ")),
                created_at: now(),
            });
            roll(app, crash);
            (StatusCode::OK, json!(app.config))
        }
        ("POST", ["slugs"]) => {
            let id = uuid();
            let process_types: BTreeMap<String, String> =
                serde_json::from_value(body.get("process_types").cloned().unwrap_or(json!({})))
                    .unwrap_or_default();
            let slug = SlugRec {
                id: id.clone(),
                app: s.apps[name].id.clone(),
                process_types,
                blob: None,
                crash: false,
                created_at: now(),
            };
            let out = slug_json(&slug, addr, "PUT");
            s.slugs.insert(id, slug);
            (StatusCode::CREATED, out)
        }
        ("GET", ["slugs", id]) => {
            let app_id = s.apps[name].id.clone();
            match s.slugs.get(*id) {
                Some(slug) if slug.app == app_id || slug.app == name => {
                    (StatusCode::OK, slug_json(slug, addr, "GET"))
                }
                _ => not_found("slug"),
            }
        }
        ("POST", ["builds"]) => {
            let url = body["source_blob"]["url"].as_str().unwrap_or("").to_owned();
            let id = uuid();
            let build = BuildRec {
                id: id.clone(),
                app: name.to_owned(),
                url,
                born: Instant::now(),
                status: "pending".into(),
                slug: None,
                release: None,
                created_at: now(),
            };
            let out = build_json(&build, &s.apps[name], addr);
            s.builds.insert(id, build);
            (StatusCode::CREATED, out)
        }
        ("GET", ["builds", id]) => match s.builds.get(*id) {
            Some(b) if b.app == name => (StatusCode::OK, build_json(b, &s.apps[name], addr)),
            _ => not_found("build"),
        },
        ("GET", ["releases"]) => {
            let app = &s.apps[name];
            (
                StatusCode::OK,
                Value::Array(app.releases.iter().map(|r| release_json(app, r)).collect()),
            )
        }
        ("GET", ["releases", id, "config-vars"]) => {
            let app = &s.apps[name];
            match app
                .releases
                .iter()
                .find(|r| r.id == *id || r.version.to_string() == *id)
            {
                Some(r) => (StatusCode::OK, json!(r.config)),
                None => not_found("release"),
            }
        }
        ("POST", ["releases"]) => {
            if let Some(target) = body.get("release").and_then(Value::as_str) {
                let app = s.apps.get_mut(name).unwrap();
                let Some(old) = app.releases.iter().find(|r| r.id == target).cloned() else {
                    return not_found("release");
                };
                let crash = old
                    .slug
                    .as_ref()
                    .and_then(|id| s.slugs.get(id))
                    .map(|slug| slug.crash)
                    .unwrap_or(false);
                let app = s.apps.get_mut(name).unwrap();
                app.config = old.config.clone();
                let rel = Rel {
                    id: uuid(),
                    version: app.releases.last().map(|r| r.version + 1).unwrap_or(1),
                    slug: old.slug.clone(),
                    config: old.config.clone(),
                    description: format!("Rollback to v{}", old.version),
                    created_at: now(),
                };
                app.releases.push(rel.clone());
                roll(app, crash);
                return (StatusCode::CREATED, release_json(app, &rel));
            }
            let slug_id = body
                .get("slug")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            match s.slugs.get(&slug_id) {
                None => return not_found("slug"),
                Some(slug) if slug.blob.is_none() => {
                    return error(422, "invalid_params", "the slug has no archive uploaded")
                }
                _ => {}
            }
            let description = body
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or("Deploy")
                .to_owned();
            let id = release_slug(s, name, &slug_id, description, boot);
            let app = &s.apps[name];
            let rel = app.releases.iter().find(|r| r.id == id).unwrap();
            (StatusCode::CREATED, release_json(app, rel))
        }
        ("GET", ["formation"]) => {
            let app = &s.apps[name];
            (
                StatusCode::OK,
                Value::Array(
                    app.formation
                        .iter()
                        .map(|(k, f)| formation_json(app, k, f))
                        .collect(),
                ),
            )
        }
        ("PATCH", ["formation", kind]) => {
            let app = s.apps.get_mut(name).unwrap();
            let Some(form) = app.formation.get_mut(*kind) else {
                return not_found("formation");
            };
            if let Some(q) = body.get("quantity").and_then(Value::as_u64) {
                form.quantity = q as u32;
            }
            if let Some(size) = body
                .get("dyno_size")
                .and_then(|d| d.get("name"))
                .and_then(Value::as_str)
            {
                form.size = size.to_owned();
            }
            let form = form.clone();
            let current = app.releases.last().cloned();
            if let Some(current) = current.filter(|r| r.slug.is_some()) {
                let mut live: Vec<u32> = app
                    .dynos
                    .iter()
                    .filter(|d| d.kind == *kind && !d.retiring)
                    .filter_map(|d| d.name.rsplit('.').next()?.parse().ok())
                    .collect();
                live.sort();
                app.dynos.retain(|d| {
                    d.kind != *kind
                        || d.retiring
                        || d.name
                            .rsplit('.')
                            .next()
                            .and_then(|n| n.parse::<u32>().ok())
                            .unwrap_or(0)
                            <= form.quantity
                });
                for n in 1..=form.quantity {
                    if !live.contains(&n) {
                        app.dynos.push(new_dyno(kind, n, &current, &form, crash));
                    }
                }
            }
            (StatusCode::OK, formation_json(app, kind, &form))
        }
        ("GET", ["dynos"]) => {
            let app = &s.apps[name];
            let list = app.dynos.iter().map(|d| dyno_json(app, d, boot)).collect();
            (StatusCode::OK, Value::Array(list))
        }
        ("GET", ["domains"]) => {
            let app = &s.apps[name];
            let mut list: Vec<Value> = app
                .domains
                .iter()
                .map(|d| domain_json(app, d, "custom"))
                .collect();
            list.push(domain_json(
                app,
                &DomainRec {
                    id: app.id.clone(),
                    hostname: format!("{}.herokuapp.com", app.host),
                    cname: String::new(),
                    created_at: app.created_at.clone(),
                },
                "heroku",
            ));
            (StatusCode::OK, Value::Array(list))
        }
        ("POST", ["domains"]) => {
            let hostname = body
                .get("hostname")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            if s.apps
                .values()
                .any(|a| a.domains.iter().any(|d| d.hostname == hostname))
            {
                return error(422, "invalid_params", "Domain already added to an app.");
            }
            let app = s.apps.get_mut(name).unwrap();
            let d = DomainRec {
                id: uuid(),
                hostname,
                cname: format!(
                    "{}-{:06x}.herokudns.com",
                    app.name,
                    fastrand::u32(..0xff_ffff)
                ),
                created_at: now(),
            };
            app.domains.push(d.clone());
            (StatusCode::CREATED, domain_json(app, &d, "custom"))
        }
        ("DELETE", ["domains", key]) => {
            let app = s.apps.get_mut(name).unwrap();
            let Some(i) = app
                .domains
                .iter()
                .position(|d| d.hostname == *key || d.id == *key)
            else {
                return not_found("domain");
            };
            let d = app.domains.remove(i);
            (StatusCode::OK, domain_json(app, &d, "custom"))
        }
        ("GET", ["features"]) => {
            let app = &s.apps[name];
            (StatusCode::OK, json!([feature_json(app)]))
        }
        ("GET", ["features", "preboot"]) => (StatusCode::OK, feature_json(&s.apps[name])),
        ("PATCH", ["features", "preboot"]) => {
            let app = s.apps.get_mut(name).unwrap();
            app.preboot = body
                .get("enabled")
                .and_then(Value::as_bool)
                .unwrap_or(app.preboot);
            (StatusCode::OK, feature_json(app))
        }
        ("GET" | "PATCH", ["features", _]) => not_found("feature"),
        _ => error(
            404,
            "not_found",
            &format!("no route {method} /apps/{name}/{}", rest.join("/")),
        ),
    }
}

fn app_json(a: &AppRec) -> Value {
    let released = a
        .releases
        .iter()
        .rev()
        .find(|r| r.slug.is_some())
        .map(|r| r.created_at.clone());
    json!({
        "acm": false,
        "archived_at": null,
        "buildpack_provided_description": null,
        "build_stack": stack(),
        "created_at": a.created_at,
        "generation": { "id": "31234567-89ab-cdef-0123-456789abcdef", "name": "cedar" },
        "git_url": format!("https://git.heroku.com/{}.git", a.name),
        "id": a.id,
        "internal_routing": null,
        "maintenance": a.maintenance,
        "name": a.name,
        "owner": user(),
        "organization": null,
        "team": null,
        "region": { "id": "41234567-89ab-cdef-0123-456789abcdef", "name": "us" },
        "released_at": released,
        "repo_size": null,
        "slug_size": null,
        "space": null,
        "stack": stack(),
        "updated_at": a.created_at,
        "web_url": format!("https://{}.herokuapp.com/", a.host),
    })
}

fn slug_json(s: &SlugRec, addr: SocketAddr, method: &str) -> Value {
    let checksum = s.blob.as_ref().map(|b| {
        use sha2::Digest;
        let d = sha2::Sha256::digest(b);
        format!(
            "SHA256:{}",
            d.iter().map(|b| format!("{b:02x}")).collect::<String>()
        )
    });
    json!({
        "blob": { "method": method, "url": format!("http://{addr}/blobs/{}", s.id) },
        "buildpack_provided_description": null,
        "checksum": checksum,
        "commit": null,
        "commit_description": null,
        "created_at": s.created_at,
        "id": s.id,
        "process_types": s.process_types,
        "size": s.blob.as_ref().map(|b| b.len()),
        "stack": stack(),
        "updated_at": s.created_at,
    })
}

fn build_json(b: &BuildRec, app: &AppRec, addr: SocketAddr) -> Value {
    json!({
        "app": { "id": app.id },
        "buildpacks": null,
        "created_at": b.created_at,
        "id": b.id,
        "output_stream_url": format!("http://{addr}/streams/{}", b.id),
        "source_blob": { "checksum": null, "url": b.url, "version": null, "version_description": null },
        "release": b.release.as_ref().map(|id| json!({ "id": id })),
        "slug": b.slug.as_ref().map(|id| json!({ "id": id })),
        "stack": "heroku-22",
        "status": b.status,
        "updated_at": b.created_at,
        "user": user(),
    })
}

fn release_json(app: &AppRec, r: &Rel) -> Value {
    let current = app.releases.last().map(|l| l.id == r.id).unwrap_or(false);
    json!({
        "addon_plan_names": [],
        "artifacts": r.slug.as_ref().map(|id| vec![json!({ "type": "slug", "id": id })]).unwrap_or_default(),
        "app": { "name": app.name, "id": app.id },
        "created_at": r.created_at,
        "description": r.description,
        "id": r.id,
        "updated_at": r.created_at,
        "slug": r.slug.as_ref().map(|id| json!({ "id": id })),
        "status": "succeeded",
        "user": user(),
        "version": r.version,
        "current": current,
        "output_stream_url": null,
        "eligible_for_rollback": true,
    })
}

fn formation_json(app: &AppRec, kind: &str, f: &Form) -> Value {
    json!({
        "app": { "name": app.name, "id": app.id },
        "command": f.command,
        "created_at": f.created_at,
        "dyno_size": { "id": SIZE_ID, "name": f.size },
        "id": f.id,
        "quantity": f.quantity,
        "size": f.size,
        "type": kind,
        "updated_at": f.created_at,
    })
}

fn dyno_json(app: &AppRec, d: &DynoRec, boot: Duration) -> Value {
    let state = if d.born.elapsed() < boot {
        "starting"
    } else if d.crash {
        "crashed"
    } else {
        "up"
    };
    json!({
        "attach_url": null,
        "command": d.command,
        "created_at": d.created_at,
        "id": d.id,
        "name": d.name,
        "release": { "id": d.release, "version": d.version },
        "app": { "name": app.name, "id": app.id },
        "size": d.size,
        "state": state,
        "type": d.kind,
        "updated_at": d.created_at,
    })
}

fn domain_json(app: &AppRec, d: &DomainRec, kind: &str) -> Value {
    json!({
        "acm_status": null,
        "acm_status_reason": null,
        "app": { "name": app.name, "id": app.id },
        "cname": if kind == "heroku" { Value::Null } else { json!(d.cname) },
        "created_at": d.created_at,
        "hostname": d.hostname,
        "id": d.id,
        "kind": kind,
        "updated_at": d.created_at,
        "status": "succeeded",
        "sni_endpoint": null,
    })
}

fn feature_json(app: &AppRec) -> Value {
    json!({
        "created_at": app.created_at,
        "description": "Provide seamless web dyno deploys",
        "doc_url": "http://devcenter.heroku.com/articles/preboot",
        "enabled": app.preboot,
        "id": "51234567-89ab-cdef-0123-456789abcdef",
        "name": "preboot",
        "state": "general",
        "updated_at": app.created_at,
        "display_name": "Preboot",
        "feedback_email": "feedback@example.com",
    })
}
