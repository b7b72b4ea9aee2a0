//! The emulator: an HTTP server on 127.0.0.1, one router in front of one module per
//! resource (apps, config vars, slugs, builds, releases, formation, dynos, domains,
//! features).

mod apps;
mod builds;
mod config_vars;
mod domains;
mod dynos;
mod features;
mod formation;
mod logs;
mod releases;
mod slugs;
mod state;

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use serde_json::Value;
use tokio::sync::Notify;

use super::schema::{Schema, SchemaError, SCHEMA_ENV};
use crate::{ClientOptions, PlatformClient, Token};
use state::{error, Answer, Knobs, Rel, Req, State};

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

/// A change to the next successful answer's body.
type Tamper = Box<dyn FnOnce(&mut Value) + Send>;

/// Where the schema comes from.
#[derive(Clone, Debug)]
enum SchemaSource {
    /// `HEROKU_PLATFORM_API_SCHEMA`, when it is set and not empty.
    Env,
    Path(PathBuf),
    Off,
}

/// How an [`Emulator`] starts.
///
/// The schema checks run when a schema file is given: with
/// [`with_schema`](EmulatorOptions::with_schema), or by default the file named by
/// `HEROKU_PLATFORM_API_SCHEMA`. Without one they are off, which the emulator says
/// in one warning when it starts.
#[derive(Clone, Debug)]
pub struct EmulatorOptions {
    schema: SchemaSource,
    boot_time: Duration,
    build_time: Duration,
    latency: Duration,
    page_size: usize,
}

impl Default for EmulatorOptions {
    fn default() -> Self {
        EmulatorOptions {
            schema: SchemaSource::Env,
            boot_time: Duration::from_millis(120),
            build_time: Duration::from_millis(60),
            latency: Duration::ZERO,
            page_size: 1000,
        }
    }
}

impl EmulatorOptions {
    /// The defaults: the schema from `HEROKU_PLATFORM_API_SCHEMA`, dynos up 120 ms
    /// after they start, builds done after 60 ms, no added latency, pages of 1000.
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks requests and answers against the schema file at `path`
    /// (`heroku-platform-api-schema.json`, as Heroku publishes it at
    /// `https://api.heroku.com/schema`).
    pub fn with_schema(mut self, path: impl Into<PathBuf>) -> Self {
        self.schema = SchemaSource::Path(path.into());
        self
    }

    /// No schema checks, whatever the environment says.
    pub fn without_schema(mut self) -> Self {
        self.schema = SchemaSource::Off;
        self
    }

    /// How long a dyno is `starting` before it is `up`.
    pub fn with_boot_time(mut self, d: Duration) -> Self {
        self.boot_time = d;
        self
    }

    /// How long a build takes.
    pub fn with_build_time(mut self, d: Duration) -> Self {
        self.build_time = d;
        self
    }

    /// How long the emulator waits before it carries out each API request.
    pub fn with_latency(mut self, d: Duration) -> Self {
        self.latency = d;
        self
    }

    /// How many items a page of a list holds.
    pub fn with_page_size(mut self, n: usize) -> Self {
        self.page_size = n.max(1);
        self
    }
}

/// Why an emulator did not start.
#[derive(Debug)]
pub enum EmulatorError {
    /// The schema file given cannot be read or compiled.
    Schema(SchemaError),
    /// No loopback port.
    Io(std::io::Error),
}

impl fmt::Display for EmulatorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EmulatorError::Schema(e) => write!(f, "the Heroku Platform API schema: {e}"),
            EmulatorError::Io(e) => write!(f, "the emulator cannot listen: {e}"),
        }
    }
}

impl std::error::Error for EmulatorError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            EmulatorError::Schema(e) => Some(e),
            EmulatorError::Io(e) => Some(e),
        }
    }
}

struct Shared {
    state: Mutex<State>,
    schema: Option<Arc<Schema>>,
    violations: Mutex<Vec<String>>,
    addr: SocketAddr,
    hung: Notify,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn violation(&self, v: String) {
        tracing::error!(violation = %v, "the Heroku Platform API schema is broken");
        self.violations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(v);
    }
}

/// An emulator of the Platform API endpoints this crate uses, in memory, on
/// 127.0.0.1: apps, config vars, slugs with their archive upload, builds with their
/// output stream, releases and rollbacks, formation, dynos, domains and the
/// `preboot` feature.
///
/// With the schema checks on, every request body and every successful answer is
/// checked against Heroku's schema: a request that breaks it is answered `422`,
/// and every violation (the emulator's own answers included) is kept; dropping the
/// emulator panics if there is any (unless the thread is already panicking), so a
/// test cannot pass over one. [`violations`](Emulator::violations) lists them.
///
/// Slugs whose archive (or build source URL) contains `crash` give dynos that crash
/// after booting; a build whose source URL contains `fail` fails. Fault injection:
/// [`fail_next`](Emulator::fail_next), [`hang_at`](Emulator::hang_at),
/// [`hang_on`](Emulator::hang_on), [`spend_budget`](Emulator::spend_budget),
/// [`tamper_next_answer`](Emulator::tamper_next_answer); timing:
/// [`set_boot_time`](Emulator::set_boot_time), [`set_latency`](Emulator::set_latency).
///
/// The emulator's server runs on the tokio runtime it is started on.
pub struct Emulator {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl fmt::Debug for Emulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Emulator")
            .field("addr", &self.shared.addr)
            .field("schema_checks", &self.schema_checks())
            .finish()
    }
}

impl Emulator {
    /// Starts an emulator with the default [`EmulatorOptions`].
    pub async fn start() -> Result<Emulator, EmulatorError> {
        Self::start_with(EmulatorOptions::default()).await
    }

    /// Starts an emulator with `options`.
    pub async fn start_with(options: EmulatorOptions) -> Result<Emulator, EmulatorError> {
        let path = match &options.schema {
            SchemaSource::Path(p) => Some(p.clone()),
            SchemaSource::Env => std::env::var_os(SCHEMA_ENV)
                .filter(|p| !p.is_empty())
                .map(PathBuf::from),
            SchemaSource::Off => None,
        };
        let schema = match &path {
            Some(p) => Some(Schema::load(p).map_err(EmulatorError::Schema)?),
            None => {
                let why = match options.schema {
                    SchemaSource::Off => "turned off".to_owned(),
                    _ => format!("{SCHEMA_ENV} is not set"),
                };
                tracing::warn!(
                    "Platform API emulator: schema checks OFF ({why}); requests and answers are not checked against Heroku's schema"
                );
                None
            }
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(EmulatorError::Io)?;
        let addr = listener.local_addr().map_err(EmulatorError::Io)?;
        let knobs = Knobs {
            boot_time: options.boot_time,
            build_time: options.build_time,
            latency: options.latency,
            page_size: options.page_size,
            fail: VecDeque::new(),
            hang: None,
            hang_on: None,
            spend_budget: false,
            tamper: None,
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(knobs)),
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
        Ok(Emulator { shared, task })
    }

    /// Whether requests and answers are checked against the schema.
    pub fn schema_checks(&self) -> bool {
        self.shared.schema.is_some()
    }

    /// The API's base URL.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// A client of the emulator with its token ([`TOKEN`]) and short pauses.
    pub fn client(&self) -> PlatformClient {
        self.client_with_token(TOKEN)
    }

    /// A client of the emulator with `token`.
    pub fn client_with_token(&self, token: &str) -> PlatformClient {
        PlatformClient::with_options(
            &self.base_url(),
            Token::new(token),
            ClientOptions::default()
                .with_rate_limit_pause(Duration::from_millis(300))
                .with_build_poll_interval(Duration::from_millis(20))
                .with_request_timeout(Duration::from_secs(30)),
        )
        .expect("the emulator's URL is valid")
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.shared.state())
    }

    /// How long a dyno is `starting` before it is `up`, from now on.
    pub fn set_boot_time(&self, d: Duration) {
        self.with(|s| s.knobs.boot_time = d);
    }

    /// How long the emulator waits before it carries out each API request, from now
    /// on.
    pub fn set_latency(&self, d: Duration) {
        self.with(|s| s.knobs.latency = d);
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

    /// The next API request `METHOD path` (`"PATCH /apps/web/formation/web"`) never
    /// gets an answer.
    pub fn hang_on(&self, request: &str, at: Hang) {
        self.with(|s| s.knobs.hang_on = Some((request.to_owned(), at)));
    }

    /// Whether a set hang is still to come.
    pub fn hang_pending(&self) -> bool {
        self.with(|s| s.knobs.hang.is_some() || s.knobs.hang_on.is_some())
    }

    /// Resolves once a request hangs.
    pub async fn hung(&self) {
        self.shared.hung.notified().await
    }

    /// The next answer says `RateLimit-Remaining: 0`.
    pub fn spend_budget(&self) {
        self.with(|s| s.knobs.spend_budget = true);
    }

    /// The next successful API answer's body goes through `f` before it is checked
    /// and sent: to see how code meets an answer the platform should not give. With
    /// the schema checks on, an answer that breaks the schema is a violation.
    pub fn tamper_next_answer(&self, f: impl FnOnce(&mut Value) + Send + 'static) {
        self.with(|s| s.knobs.tamper = Some(Box::new(f)));
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

    /// Creates an app that is not bluegreen's, with config vars, a released slug
    /// and, optionally, a custom domain.
    pub fn add_foreign_app(&self, name: &str, config: &[(&str, &str)], domain: Option<&str>) {
        self.with(|s| {
            let mut app = apps::new_app(name);
            app.config = config
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            if let Some(d) = domain {
                app.domains.push(domains::custom(d));
            }
            let version = app.releases.len() as u64 + 1;
            app.releases.push(Rel {
                id: state::uuid(),
                version,
                slug: Some(state::uuid()),
                config: app.config.clone(),
                description: "Deploy 1234abc".into(),
                created_at: state::now(),
            });
            s.apps.insert(name.into(), app);
        });
    }

    /// The schema violations seen so far.
    pub fn violations(&self) -> Vec<String> {
        self.shared
            .violations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The schema violations seen so far, forgotten: dropping the emulator no
    /// longer fails on them.
    pub fn take_violations(&self) -> Vec<String> {
        std::mem::take(
            &mut *self
                .shared
                .violations
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        )
    }

    /// Panics with the schema violations seen so far, if any.
    pub fn assert_schema_clean(&self) {
        let v = self.violations();
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

fn respond(status: StatusCode, body: Bytes, headers: &[(&str, String)]) -> Response<Full<Bytes>> {
    let mut r = Response::builder().status(status);
    for (k, v) in headers {
        r = r.header(*k, v);
    }
    r.body(Full::new(body))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

fn json_answer((status, value): Answer, extra: &[(&str, String)]) -> Response<Full<Bytes>> {
    let mut headers = vec![("content-type", "application/json".to_owned())];
    headers.extend(extra.iter().cloned());
    respond(status, Bytes::from(value.to_string()), &headers)
}

/// What a request meets before it is carried out.
struct Before {
    hang: Option<Hang>,
    failure: Option<(u16, String)>,
    budget: bool,
    latency: Duration,
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

    // archive uploads and output streams: not the API, no token
    if let Some(id) = path.strip_prefix("/blobs/") {
        let status = slugs::upload(&mut shared.state(), id, &method, &body);
        return respond(status, Bytes::new(), &[]);
    }
    if let Some(id) = path.strip_prefix("/logs/") {
        return match logs::read(&shared.state(), id) {
            Some(text) => respond(
                StatusCode::OK,
                Bytes::from(text),
                &[("content-type", "text/plain".into())],
            ),
            None => respond(StatusCode::NOT_FOUND, Bytes::new(), &[]),
        };
    }
    if let Some(id) = path.strip_prefix("/streams/") {
        return match builds::stream(&shared.state(), id) {
            Some(text) => respond(
                StatusCode::OK,
                Bytes::from(text),
                &[("content-type", "text/plain".into())],
            ),
            None => respond(StatusCode::NOT_FOUND, Bytes::new(), &[]),
        };
    }

    if auth.as_deref() != Some(&format!("Bearer {TOKEN}")) {
        return json_answer(
            error(401, "unauthorized", "Invalid credentials provided."),
            &[],
        );
    }
    if accept.as_deref() != Some(crate::ACCEPT_V3) {
        return json_answer(
            error(
                400,
                "bad_request",
                "Accept: application/vnd.heroku+json; version=3 is required",
            ),
            &[],
        );
    }
    let before = {
        let mut s = shared.state();
        s.requests += 1;
        let n = s.requests;
        let line = format!("{method} {path}");
        let hang = match (s.knobs.hang, &s.knobs.hang_on) {
            (Some((at, how)), _) if at == n => {
                s.knobs.hang = None;
                Some(how)
            }
            (_, Some((request, how))) if *request == line => {
                let how = *how;
                s.knobs.hang_on = None;
                Some(how)
            }
            _ => None,
        };
        s.log.push(line);
        Before {
            hang,
            failure: s.knobs.fail.pop_front(),
            budget: std::mem::take(&mut s.knobs.spend_budget),
            latency: s.knobs.latency,
        }
    };
    if !before.latency.is_zero() {
        tokio::time::sleep(before.latency).await;
    }
    if before.hang == Some(Hang::Before) {
        shared.hung.notify_one();
        std::future::pending::<()>().await;
    }
    if let Some((status, id)) = before.failure {
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
            shared.violation(v.clone());
            return json_answer(error(422, "invalid_params", &v), &[]);
        }
    }
    let (answer, tamper, page_size) = {
        let mut s = shared.state();
        let req = Req {
            method: &method,
            body: parsed.unwrap_or(Value::Null),
            addr: shared.addr,
        };
        let answer = route(&mut s, &path, &req);
        let tamper = if answer.0.is_success() {
            s.knobs.tamper.take()
        } else {
            None
        };
        (answer, tamper, s.knobs.page_size)
    };
    if before.hang == Some(Hang::After) {
        shared.hung.notify_one();
        std::future::pending::<()>().await;
    }
    let (status, mut value) = answer;
    if let Some(f) = tamper {
        f(&mut value);
    }
    if status.is_success() {
        if let Some(schema) = &shared.schema {
            if let Err(v) = schema.check_response(&method, &path, &value) {
                shared.violation(v);
            }
        }
    }
    let remaining = if before.budget { "0" } else { "4500" };
    let mut extra = vec![("RateLimit-Remaining", remaining.to_owned())];
    let (status, value) = match value {
        Value::Array(items) if method == "GET" && status.is_success() => {
            let (status, items, next) = page(items, range.as_deref(), page_size, status);
            if let Some(next) = next {
                extra.push(("Next-Range", next));
            }
            (status, Value::Array(items))
        }
        other => (status, other),
    };
    json_answer((status, value), &extra)
}

/// One page of a list, by id: the items after the `Range` header's start, at most
/// `page_size`, and the `Next-Range` when more follow.
fn page(
    mut items: Vec<Value>,
    range: Option<&str>,
    page_size: usize,
    status: StatusCode,
) -> (StatusCode, Vec<Value>, Option<String>) {
    let key = |v: &Value| v.get("id").and_then(Value::as_str).unwrap_or("").to_owned();
    items.sort_by_key(key);
    let after = range
        .and_then(|r| r.split(']').nth(1))
        .and_then(|r| r.split("..").next())
        .map(|r| r.trim().to_owned());
    if let Some(after) = &after {
        items.retain(|v| &key(v) > after);
    }
    if items.len() > page_size {
        items.truncate(page_size);
        let last = items.last().map(key).unwrap_or_default();
        let next = format!("id ]{last}..; max={page_size}");
        (StatusCode::PARTIAL_CONTENT, items, Some(next))
    } else {
        (status, items, None)
    }
}

/// The one router: `/apps` and `/apps/{app}` to [`apps`], and `/apps/{app}/<resource>`
/// to the resource's module.
fn route(s: &mut State, path: &str, req: &Req) -> Answer {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let no_route = || error(404, "not_found", &format!("no route {} {path}", req.method));
    let (key, rest) = match parts.as_slice() {
        ["apps"] => return apps::collection(s, req).unwrap_or_else(no_route),
        ["apps", key, rest @ ..] => (*key, rest),
        _ => return no_route(),
    };
    // builds finish lazily, creating their slug and release
    builds::settle(s);
    let Some(name) = s.app_name(key) else {
        return state::not_found("app");
    };
    let boot = s.knobs.boot_time;
    dynos::settle(s.app_mut(&name), boot);
    let answer = match rest {
        [] => apps::one(s, &name, req),
        ["config-vars", more @ ..] => config_vars::route(s, &name, req, more),
        ["slugs", more @ ..] => slugs::route(s, &name, req, more),
        ["builds", more @ ..] => builds::route(s, &name, req, more),
        ["releases", more @ ..] => releases::route(s, &name, req, more),
        ["formation", more @ ..] => formation::route(s, &name, req, more),
        ["dynos", more @ ..] => dynos::route(s, &name, req, more),
        ["log-sessions", more @ ..] => logs::route(s, &name, req, more),
        ["domains", more @ ..] => domains::route(s, &name, req, more),
        ["features", more @ ..] => features::route(s, &name, req, more),
        _ => None,
    };
    answer.unwrap_or_else(no_route)
}
