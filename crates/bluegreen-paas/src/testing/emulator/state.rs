//! What the emulated platform holds, and the helpers every resource uses.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use hyper::StatusCode;
use serde_json::{json, Value};

use super::Hang;

/// A status and a JSON body.
pub(super) type Answer = (StatusCode, Value);

/// A request as the resources see it.
pub(super) struct Req<'a> {
    pub(super) method: &'a str,
    pub(super) body: Value,
    /// The emulator's address, for the URLs it hands out (blobs, output streams).
    pub(super) addr: SocketAddr,
}

/// What a test can turn.
pub(super) struct Knobs {
    pub(super) boot_time: Duration,
    pub(super) build_time: Duration,
    pub(super) latency: Duration,
    pub(super) page_size: usize,
    pub(super) fail: VecDeque<(u16, String)>,
    pub(super) hang: Option<(u64, Hang)>,
    pub(super) hang_on: Option<(String, Hang)>,
    pub(super) spend_budget: bool,
    pub(super) tamper: Option<super::Tamper>,
}

#[derive(Clone)]
pub(super) struct Rel {
    pub(super) id: String,
    pub(super) version: u64,
    pub(super) slug: Option<String>,
    pub(super) config: BTreeMap<String, String>,
    pub(super) description: String,
    pub(super) created_at: String,
}

#[derive(Clone)]
pub(super) struct Form {
    pub(super) id: String,
    pub(super) quantity: u32,
    pub(super) size: String,
    pub(super) command: String,
    pub(super) created_at: String,
}

#[derive(Clone)]
pub(super) struct DynoRec {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) kind: String,
    pub(super) release: String,
    pub(super) version: u64,
    pub(super) born: Instant,
    pub(super) crash: bool,
    /// Replaced by a newer release; kept running until the new dynos are up
    /// (preboot).
    pub(super) retiring: bool,
    pub(super) size: String,
    pub(super) command: String,
    pub(super) created_at: String,
}

/// A one-off dyno (`POST /apps/{app}/dynos`): a real `sh -c` process on this host
/// with the release's config vars, whose output goes to the app's log.
#[derive(Clone)]
pub(super) struct RunRec {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) kind: String,
    pub(super) release: String,
    pub(super) version: u64,
    pub(super) size: String,
    pub(super) command: String,
    pub(super) created_at: String,
    /// The process's id, to stop it; its exit status once it ended.
    pub(super) pid: u32,
    pub(super) exit: std::sync::Arc<std::sync::Mutex<Option<i32>>>,
}

/// How many lines of an app's log the emulator keeps, as Logplex does.
pub(super) const LOG_LINES: usize = 1500;

/// An app's log, shared with the threads of its one-off dynos.
pub(super) type AppLog = std::sync::Arc<std::sync::Mutex<VecDeque<String>>>;

/// Appends a line to an app's log in Logplex's format: `<time> <source>[<dyno>]: <text>`.
pub(super) fn log_line(log: &AppLog, source: &str, dyno: &str, text: &str) {
    let mut log = log.lock().expect("not poisoned");
    if log.len() == LOG_LINES {
        log.pop_front();
    }
    log.push_back(format!("{} {source}[{dyno}]: {text}", now()));
}

/// A log session (`POST /apps/{app}/log-sessions`): what its `logplex_url` gives.
pub(super) struct LogSession {
    pub(super) log: AppLog,
    pub(super) dyno: Option<String>,
    pub(super) source: Option<String>,
    pub(super) lines: usize,
}

#[derive(Clone)]
pub(super) struct DomainRec {
    pub(super) id: String,
    pub(super) hostname: String,
    pub(super) cname: String,
    pub(super) created_at: String,
}

#[derive(Clone)]
pub(super) struct AppRec {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) host: String,
    pub(super) created_at: String,
    pub(super) maintenance: bool,
    pub(super) config: BTreeMap<String, String>,
    pub(super) releases: Vec<Rel>,
    pub(super) formation: BTreeMap<String, Form>,
    pub(super) dynos: Vec<DynoRec>,
    pub(super) runs: Vec<RunRec>,
    pub(super) logs: AppLog,
    pub(super) domains: Vec<DomainRec>,
    pub(super) preboot: bool,
}

pub(super) struct SlugRec {
    pub(super) id: String,
    /// The id of the app the slug was created on.
    pub(super) app: String,
    pub(super) process_types: BTreeMap<String, String>,
    pub(super) blob: Option<Vec<u8>>,
    pub(super) crash: bool,
    pub(super) created_at: String,
}

pub(super) struct BuildRec {
    pub(super) id: String,
    /// The name of the app the build runs on.
    pub(super) app: String,
    pub(super) url: String,
    pub(super) born: Instant,
    pub(super) status: String,
    pub(super) slug: Option<String>,
    pub(super) release: Option<String>,
    pub(super) created_at: String,
}

/// The whole platform.
pub(super) struct State {
    pub(super) apps: BTreeMap<String, AppRec>,
    pub(super) slugs: BTreeMap<String, SlugRec>,
    pub(super) builds: BTreeMap<String, BuildRec>,
    pub(super) log_sessions: BTreeMap<String, LogSession>,
    pub(super) knobs: Knobs,
    pub(super) requests: u64,
    pub(super) log: Vec<String>,
}

impl State {
    pub(super) fn new(knobs: Knobs) -> State {
        State {
            apps: BTreeMap::new(),
            slugs: BTreeMap::new(),
            builds: BTreeMap::new(),
            log_sessions: BTreeMap::new(),
            knobs,
            requests: 0,
            log: Vec::new(),
        }
    }

    /// The name of the app called or identified `key`.
    pub(super) fn app_name(&self, key: &str) -> Option<String> {
        self.apps
            .values()
            .find(|a| a.name == key || a.id == key)
            .map(|a| a.name.clone())
    }

    /// The app called `name`, which the router found.
    pub(super) fn app(&self, name: &str) -> &AppRec {
        &self.apps[name]
    }

    /// The app called `name`, which the router found.
    pub(super) fn app_mut(&mut self, name: &str) -> &mut AppRec {
        self.apps.get_mut(name).expect("the router found the app")
    }

    /// Whether the slug of the app's current release crashes.
    pub(super) fn current_crash(&self, name: &str) -> bool {
        self.app(name)
            .releases
            .last()
            .and_then(|r| r.slug.as_ref())
            .and_then(|id| self.slugs.get(id))
            .is_some_and(|slug| slug.crash)
    }
}

/// A random UUID (version bits left random: the schema asks for the format only).
pub(super) fn uuid() -> String {
    let h = |n: usize| -> String {
        (0..n)
            .map(|_| format!("{:x}", fastrand::u8(..16)))
            .collect()
    };
    format!("{}-{}-{}-{}-{}", h(8), h(4), h(4), h(4), h(12))
}

/// Now, as the API writes times.
pub(super) fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// An API error.
pub(super) fn error(status: u16, id: &str, message: &str) -> Answer {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        json!({ "id": id, "message": message }),
    )
}

/// The API's 404.
pub(super) fn not_found(what: &str) -> Answer {
    error(404, "not_found", &format!("Couldn't find that {what}."))
}

pub(super) const OWNER_ID: &str = "01234567-89ab-cdef-0123-456789abcdef";
pub(super) const STACK_ID: &str = "11234567-89ab-cdef-0123-456789abcdef";
pub(super) const SIZE_ID: &str = "21234567-89ab-cdef-0123-456789abcdef";

/// The account every app belongs to.
pub(super) fn user() -> Value {
    json!({ "id": OWNER_ID, "email": "owner@example.com" })
}

/// The one stack.
pub(super) fn stack() -> Value {
    json!({ "id": STACK_ID, "name": "heroku-22" })
}
