//! The proxy's state: apps by host, each with its attached groups and an atomically
//! replaced snapshot that the request path reads without a lock.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use bluegreen_core::{Error, GroupId, Result, RouteTable, Serving};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde::{Deserialize, Serialize};

use crate::backend::{self, Backend, BackendHealth, BackendSpec, CheckClient, Epoch};
use crate::body::UpstreamBody;
use crate::drain;
use crate::options::ProxyOptions;
use crate::pin;
use crate::pool::PoolLimits;
use crate::preview::Previews;
use crate::stats::{AppStats, GroupStats, StatsSnapshot};

pub(crate) type UpstreamClient = Client<HttpConnector, UpstreamBody>;

/// One attached group as the request path sees it.
pub(crate) struct GroupState {
    pub(crate) id: GroupId,
    pub(crate) backends: Vec<Arc<Backend>>,
    pub(crate) stats: Arc<GroupStats>,
    /// This generation's connection pool: replaced when the group loses traffic, so
    /// that idle keep-alive connections to it close once its requests finish.
    pub(crate) client: UpstreamClient,
    /// Set once a change replaced or removed this state: connections kept for it
    /// are no longer reused.
    pub(crate) retired: AtomicBool,
    /// Set when the drain timeout cut the requests still in flight.
    pub(crate) cut: AtomicBool,
    /// Unique to this state: the mark of its idle connections in its backends'
    /// pools.
    pub(crate) serial: u64,
    next: AtomicUsize,
}

/// The next [`GroupState::serial`].
static SERIALS: AtomicU64 = AtomicU64::new(0);

impl GroupState {
    fn new(
        id: GroupId,
        backends: Vec<Arc<Backend>>,
        stats: Arc<GroupStats>,
        options: &ProxyOptions,
    ) -> Self {
        GroupState {
            id,
            backends,
            stats,
            client: upstream_client(options),
            retired: AtomicBool::new(false),
            cut: AtomicBool::new(false),
            serial: SERIALS.fetch_add(1, Ordering::Relaxed),
            next: AtomicUsize::new(fastrand::usize(..1024)),
        }
    }

    /// Closes this state's idle connections in its backends' pools.
    pub(crate) fn retire_pooled(&self) {
        for backend in &self.backends {
            backend.pool.purge(self.serial);
        }
    }

    pub(crate) fn healthy(&self) -> usize {
        self.backends.iter().filter(|b| b.is_healthy()).count()
    }

    pub(crate) fn has_healthy(&self) -> bool {
        self.backends.iter().any(|b| b.is_healthy())
    }

    /// The next healthy backend in turn, other than `exclude`.
    pub(crate) fn pick(&self, exclude: Option<&Arc<Backend>>) -> Option<Arc<Backend>> {
        let n = self.backends.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| &self.backends[(start + i) % n])
            .find(|b| b.is_healthy() && !exclude.is_some_and(|x| Arc::ptr_eq(x, b)))
            .cloned()
    }
}

impl Drop for GroupState {
    fn drop(&mut self) {
        // a retired state is gone: its drain is over
        if self.retired.load(Ordering::Acquire) {
            self.stats.draining.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

fn upstream_client(options: &ProxyOptions) -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(options.pool_idle_timeout)
        .build(connector)
}

/// What the request path reads: replaced as a whole on every change.
pub(crate) struct Snapshot {
    pub(crate) generation: u64,
    /// The [route generation](crate::pin) whose change made this table: newer
    /// than the current one while that change is being published.
    pub(crate) route_generation: u64,
    pub(crate) table: RouteTable,
    pub(crate) paused: bool,
    pub(crate) groups: BTreeMap<GroupId, Arc<GroupState>>,
    /// The groups with traffic and their weights.
    pub(crate) routed: Vec<(Arc<GroupState>, u8)>,
}

/// An app: a host name and its groups.
pub(crate) struct AppState {
    pub(crate) host: String,
    pub(crate) snapshot: ArcSwap<Snapshot>,
    /// The attached groups' counters.
    pub(crate) stats: Mutex<HashMap<GroupId, Arc<GroupStats>>>,
    /// What is no group's: errors while no group was to blame, route switches.
    pub(crate) counters: AppStats,
}

#[derive(Default)]
struct Apps {
    by_host: HashMap<String, Arc<AppState>>,
    default: Option<Arc<AppState>>,
}

pub(crate) struct Inner {
    apps: ArcSwap<Apps>,
    changes: Mutex<()>,
    pub(crate) epoch: Arc<Epoch>,
    pub(crate) held: AtomicUsize,
    pub(crate) options: ProxyOptions,
    check_client: CheckClient,
    generation: AtomicU64,
    pub(crate) previews: Previews,
    pub(crate) connections: crate::conn::Connections,
    /// The state file, once [`Proxy::restore`] read it: written after each change.
    persist: std::sync::OnceLock<std::path::PathBuf>,
    /// Set when the last write of the state file failed: the next change, even
    /// one that changes nothing, writes it again.
    persist_failed: AtomicBool,
    /// Every app's tables at the kept route generations ([`crate::pin`]).
    pub(crate) routes: ArcSwap<pin::Routes>,
    pin_key: pin::PinKey,
}

/// The proxy: apps by host, their groups, route tables and health. A cheap handle
/// to share; serve it with [`Proxy::serve`](crate::Proxy::serve) and change it
/// directly or through the [admin API](crate::admin).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), bluegreen_core::Error> {
/// use bluegreen_core::{GroupId, RouteTable};
/// use bluegreen_proxy::{BackendSpec, Proxy, ProxyOptions};
///
/// let proxy = Proxy::new(ProxyOptions::default());
/// let blue = GroupId::from("web-production-v001");
/// proxy.attach("web.example", &blue, &[BackendSpec::new("127.0.0.1:9")]).await?;
/// proxy.set_routes("web.example", &RouteTable::single(blue.clone()))?;
/// assert_eq!(proxy.routes("web.example")?, RouteTable::single(blue.clone()));
/// // nothing listens on port 9: the backend is not healthy
/// assert_eq!(proxy.serving("web.example", &blue)?.healthy, 0);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Proxy {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("apps", &self.inner.apps.load().by_host.len())
            .field("options", &self.inner.options)
            .finish()
    }
}

/// A host name checked and lower-cased, or [`Error::Invalid`] naming `host`.
pub(crate) fn normalize_host(host: &str) -> Result<String> {
    let host = host.trim().to_ascii_lowercase();
    if host.is_empty() {
        return Err(Error::invalid("host", "must not be empty"));
    }
    if host.len() > 253 {
        return Err(Error::invalid("host", "is longer than 253 characters"));
    }
    if let Some(c) = host
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')))
    {
        return Err(Error::invalid(
            "host",
            format!("`{host}` contains {c:?}; a host name has letters, digits, `-` and `.`"),
        ));
    }
    Ok(host)
}

/// The most characters of a group id (and of an instance id).
const MAX_ID: usize = 128;

/// Checks a group id wherever one comes in (attach, apply, routes, detach), or
/// [`Error::Invalid`] naming `field`: 1 to 128 ASCII letters, digits and
/// `-._~:+`, so that it is safe in a cookie, a header and a URL path.
pub(crate) fn check_group_id(group: &GroupId, field: &str) -> Result<()> {
    let id = group.as_str();
    if id.is_empty() || id.len() > MAX_ID {
        return Err(Error::invalid(
            field,
            format!("{id:?} is not a group id: it must have 1 to {MAX_ID} characters"),
        ));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~' | ':' | '+')))
    {
        return Err(Error::invalid(
            field,
            format!("{id:?} is not a group id: it contains {c:?}; use letters, digits and -._~:+"),
        ));
    }
    Ok(())
}

/// Checks the group ids of a route table.
fn check_table(table: &RouteTable) -> Result<()> {
    for group in table.groups() {
        check_group_id(group, "routes")?;
    }
    Ok(())
}

/// A draft of an app's next snapshot.
pub(crate) struct Draft {
    pub(crate) table: RouteTable,
    pub(crate) paused: bool,
    pub(crate) groups: BTreeMap<GroupId, Arc<GroupState>>,
}

impl Proxy {
    /// A proxy with no app yet. Call it inside a Tokio runtime: health checks run as
    /// tasks.
    pub fn new(options: ProxyOptions) -> Self {
        let (epoch, _) = tokio::sync::watch::channel(0u64);
        let pin_key = pin::PinKey::random();
        Proxy {
            inner: Arc::new(Inner {
                apps: ArcSwap::from_pointee(Apps::default()),
                changes: Mutex::new(()),
                epoch: Arc::new(epoch),
                held: AtomicUsize::new(0),
                options,
                check_client: backend::check_client(),
                generation: AtomicU64::new(0),
                previews: Previews::default(),
                connections: Default::default(),
                persist: std::sync::OnceLock::new(),
                persist_failed: AtomicBool::new(false),
                routes: ArcSwap::from_pointee(pin::Routes::new(&pin_key)),
                pin_key,
            }),
        }
    }

    /// A proxy whose routing state lives in [`ProxyOptions::state_file`]: the file
    /// is read now (apps, their groups' backends, route tables, pauses and the
    /// default app, as they were after the last change), and written again after
    /// every change, so that a restarted proxy serves the same tables at once.
    ///
    /// Each restored group is checked at once, like a new attachment (the call waits
    /// for these first checks, at most one check timeout); until a backend passes,
    /// its requests are held, not refused.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming `state_file` when the option is not set, when the
    /// file exists but does not read whole (not JSON, an unknown field, a table that
    /// does not sum to 100, a bad group id or address: the message names the file
    /// and the field), or when the file cannot be written in its directory. A
    /// missing file is an empty state, written at once.
    pub async fn restore(options: ProxyOptions) -> Result<Proxy> {
        let path = options.state_file.clone().ok_or_else(|| {
            Error::invalid("state_file", "is required to restore a proxy's state")
        })?;
        let bad = |reason: String| {
            Error::invalid(
                "state_file",
                format!(
                    "{} {reason}; fix it, or remove it to start with no app",
                    path.display()
                ),
            )
        };
        let saved: SavedState = match std::fs::read(&path) {
            Ok(bytes) => {
                let de = &mut serde_json::Deserializer::from_slice(&bytes);
                serde_path_to_error::deserialize(de).map_err(|e| {
                    let at = e.path().to_string();
                    bad(format!(
                        "does not read as a proxy state (at {at}): {}",
                        e.inner()
                    ))
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => SavedState::default(),
            Err(e) => return Err(bad(format!("cannot be read: {e}"))),
        };
        if saved.version != STATE_VERSION {
            return Err(bad(format!(
                "has version {}, this proxy reads version {STATE_VERSION}",
                saved.version
            )));
        }
        let proxy = Proxy::new(options);
        for app in &saved.apps {
            let at = |e: Error| bad(format!("holds a bad app {}: {e}", app.host));
            proxy
                .apply(&app.host, &app.routes, &app.groups)
                .await
                .map_err(at)?;
            if app.paused {
                proxy.pause(&app.host).map_err(at)?;
            }
        }
        if let Some(host) = &saved.default {
            proxy
                .set_default_app(host)
                .map_err(|e| bad(format!("holds a bad default app: {e}")))?;
        }
        let _ = proxy.inner.persist.set(path.clone());
        proxy
            .persist()
            .map_err(|e| bad(format!("cannot be written: {e}")))?;
        tracing::info!(
            path = %path.display(),
            apps = saved.apps.len(),
            "routing state restored"
        );
        Ok(proxy)
    }

    /// The routing state as the state file keeps it.
    fn saved_state(&self) -> SavedState {
        let apps = self.inner.apps.load();
        let mut list: Vec<SavedApp> = apps
            .by_host
            .values()
            .map(|app| {
                let snap = app.snapshot.load();
                SavedApp {
                    host: app.host.clone(),
                    paused: snap.paused,
                    routes: snap.table.clone(),
                    groups: snap
                        .groups
                        .iter()
                        .map(|(id, g)| {
                            (
                                id.clone(),
                                g.backends.iter().map(|b| b.spec.clone()).collect(),
                            )
                        })
                        .collect(),
                }
            })
            .collect();
        list.sort_by(|a, b| a.host.cmp(&b.host));
        SavedState {
            version: STATE_VERSION,
            default: apps.default.as_ref().map(|a| a.host.clone()),
            apps: list,
        }
    }

    /// Writes the state file, when there is one: a new file (0600) beside it,
    /// synced, then renamed over it. Call with the changes lock held.
    fn persist(&self) -> Result<()> {
        let Some(path) = self.inner.persist.get() else {
            return Ok(());
        };
        let out = write_atomically(path, &self.saved_state());
        self.inner
            .persist_failed
            .store(out.is_err(), Ordering::SeqCst);
        out.map_err(|e| {
            tracing::error!(path = %path.display(), error = %e, "the state file was not written");
            Error::provider(
                "proxy",
                format!(
                    "the change is made but the state file {} was not written: {e}",
                    path.display()
                ),
                true,
            )
        })
    }

    /// The proxy's options.
    pub fn options(&self) -> &ProxyOptions {
        &self.inner.options
    }

    /// The app for a request's host (without port), or the default app.
    pub(crate) fn app_for(&self, host: Option<&str>) -> Option<Arc<AppState>> {
        let apps = self.inner.apps.load();
        if let Some(host) = host {
            let found = if host.bytes().any(|b| b.is_ascii_uppercase()) {
                apps.by_host.get(&host.to_ascii_lowercase())
            } else {
                apps.by_host.get(host)
            };
            if let Some(app) = found {
                return Some(app.clone());
            }
        }
        apps.default.clone()
    }

    /// The app whose host is exactly `host` (already normalized).
    pub(crate) fn app_exact(&self, host: &str) -> Option<Arc<AppState>> {
        self.inner.apps.load().by_host.get(host).cloned()
    }

    fn known_app(&self, host: &str) -> Result<Option<Arc<AppState>>> {
        Ok(self.app_exact(&normalize_host(host)?))
    }

    /// The app for `host`, and whether it is new (not yet published). Call with
    /// the changes lock held.
    fn app_or_new(&self, host: &str) -> Result<(Arc<AppState>, bool)> {
        let host = normalize_host(host)?;
        if let Some(app) = self.inner.apps.load().by_host.get(&host) {
            return Ok((app.clone(), false));
        }
        let app = Arc::new(AppState {
            host,
            snapshot: ArcSwap::from_pointee(Snapshot {
                generation: self.inner.generation.fetch_add(1, Ordering::Relaxed),
                route_generation: self.inner.routes.load().current().number,
                table: RouteTable::empty(),
                paused: false,
                groups: BTreeMap::new(),
                routed: Vec::new(),
            }),
            stats: Mutex::new(HashMap::new()),
            counters: AppStats::default(),
        });
        Ok((app, true))
    }

    /// Publishes a new app. Call with the changes lock held.
    fn publish_app(&self, app: Arc<AppState>) {
        let apps = self.inner.apps.load();
        let host = app.host.clone();
        let mut by_host = apps.by_host.clone();
        by_host.insert(host.clone(), app.clone());
        let default = match &self.inner.options.default_host {
            Some(d) if normalize_host(d).ok().as_deref() == Some(host.as_str()) => Some(app),
            Some(_) => apps.default.clone(),
            None => apps.default.clone().or(Some(app)),
        };
        self.inner.apps.store(Arc::new(Apps { by_host, default }));
        tracing::info!(host = %host, "app added");
    }

    /// Makes `host` the default app: the one that gets requests whose `Host` is no
    /// known app.
    pub fn set_default_app(&self, host: &str) -> Result<()> {
        let _guard = self.inner.changes.lock().expect("changes lock");
        let (app, new) = self.app_or_new(host)?;
        if new {
            self.publish_app(app.clone());
        }
        let apps = self.inner.apps.load();
        self.inner.apps.store(Arc::new(Apps {
            by_host: apps.by_host.clone(),
            default: Some(app),
        }));
        self.persist()
    }

    /// The default app's host, if any.
    pub fn default_app(&self) -> Option<String> {
        self.inner
            .apps
            .load()
            .default
            .as_ref()
            .map(|a| a.host.clone())
    }

    /// Changes one app under the changes lock and publishes the result at once.
    pub(crate) fn change<T>(
        &self,
        host: &str,
        f: impl FnOnce(&Proxy, &AppState, &mut Draft) -> Result<T>,
    ) -> Result<T> {
        self.change_many(&[host], false, |proxy, apps, drafts| {
            f(proxy, &apps[0], &mut drafts[0])
        })
    }

    /// Changes several apps under the changes lock and publishes the result in one
    /// atomic change: their snapshots first, then the [route generation](crate::pin)
    /// that the request path reads first, so that a request sees every app's new
    /// table or none. `hosts` must be distinct once normalized; `name_apps` makes
    /// the errors of the checks name the app.
    pub(crate) fn change_many<T>(
        &self,
        hosts: &[&str],
        name_apps: bool,
        f: impl FnOnce(&Proxy, &[Arc<AppState>], &mut [Draft]) -> Result<T>,
    ) -> Result<T> {
        let _guard = self.inner.changes.lock().expect("changes lock");
        let mut apps = Vec::with_capacity(hosts.len());
        let mut new = Vec::with_capacity(hosts.len());
        for host in hosts {
            let (app, is_new) = self.app_or_new(host)?;
            apps.push(app);
            new.push(is_new);
        }
        let currents: Vec<Arc<Snapshot>> = apps.iter().map(|a| a.snapshot.load_full()).collect();
        let mut drafts: Vec<Draft> = currents
            .iter()
            .map(|current| Draft {
                table: current.table.clone(),
                paused: current.paused,
                groups: current.groups.clone(),
            })
            .collect();
        let out = f(self, &apps, &mut drafts)?;
        for (app, draft) in apps.iter().zip(&drafts) {
            for group in draft.table.groups() {
                if !draft.groups.contains_key(group) {
                    let of = if name_apps {
                        format!(" of app {}", app.host)
                    } else {
                        String::new()
                    };
                    return Err(Error::not_found(format!(
                        "group {group}{of} (attach it before routing traffic to it)"
                    )));
                }
            }
        }
        let routes = self.inner.routes.load_full();
        let table_changed = currents
            .iter()
            .zip(&drafts)
            .any(|(current, draft)| draft.table != current.table);
        let route_generation = routes.current().number + u64::from(table_changed);
        let mut published = Vec::new();
        for (((app, is_new), current), mut draft) in apps.iter().zip(new).zip(currents).zip(drafts)
        {
            // groups that lose traffic get a new pool: the old one, with its idle
            // keep-alive connections, goes when the requests still using it finish
            for (id, group) in draft.groups.iter_mut() {
                if current.table.weight(id) > 0 && draft.table.weight(id) == 0 {
                    *group = Arc::new(GroupState::new(
                        id.clone(),
                        group.backends.clone(),
                        group.stats.clone(),
                        &self.inner.options,
                    ));
                }
            }
            if is_new {
                self.publish_app(app.clone());
            }
            let unchanged = draft.table == current.table
                && draft.paused == current.paused
                && draft.groups.len() == current.groups.len()
                && draft
                    .groups
                    .iter()
                    .zip(current.groups.iter())
                    .all(|((a, x), (b, y))| a == b && Arc::ptr_eq(x, y));
            if unchanged {
                continue;
            }
            let routed = draft
                .table
                .iter()
                .map(|(id, w)| (draft.groups[id].clone(), w))
                .collect();
            if draft.table != current.table {
                app.counters.switched();
                tracing::info!(host = %app.host, from = %current.table, to = %draft.table, route_generation, "routes changed");
            }
            let next = Arc::new(Snapshot {
                generation: self.inner.generation.fetch_add(1, Ordering::Relaxed),
                route_generation: if draft.table != current.table {
                    route_generation
                } else {
                    current.route_generation
                },
                table: draft.table,
                paused: draft.paused,
                groups: draft.groups,
                routed,
            });
            app.snapshot.store(next.clone());
            published.push((app, current, next));
        }
        if published.is_empty() {
            if self.inner.persist_failed.load(Ordering::SeqCst) {
                self.persist()?;
            }
            return Ok(out);
        }
        // the one moment every app of the change switches (see `pin::resolve`)
        let changed: Vec<(&str, &Snapshot)> = published
            .iter()
            .map(|(app, _, next)| (app.host.as_str(), &**next))
            .collect();
        let next_routes = routes.next(&self.inner.pin_key, &changed, table_changed);
        self.inner.routes.store(Arc::new(next_routes));
        for (app, current, next) in &published {
            for (id, group) in &current.groups {
                if !next.groups.get(id).is_some_and(|g| Arc::ptr_eq(g, group)) {
                    if !group.retired.swap(true, Ordering::AcqRel) {
                        group.stats.draining.fetch_add(1, Ordering::Relaxed);
                    }
                    // its idle connections close; those in use close once done
                    group.retire_pooled();
                    // its requests in flight drain once the group is out of traffic
                    // (now, or later for a state replaced by a new attachment)
                    drain::cut_after(
                        self.inner.options.drain_timeout,
                        app,
                        group.clone(),
                        self.inner.epoch.clone(),
                    );
                }
            }
        }
        backend::bump(&self.inner.epoch);
        self.persist()?;
        Ok(out)
    }

    /// Builds a group's state from `backends`, keeping the backends (and their
    /// health) that `previous` already had.
    pub(crate) fn build_group(
        &self,
        app: &AppState,
        group: &GroupId,
        backends: &[BackendSpec],
        previous: Option<&Arc<GroupState>>,
    ) -> Result<(Arc<GroupState>, Vec<Arc<Backend>>)> {
        let mut members = Vec::with_capacity(backends.len());
        let mut fresh = Vec::new();
        for (i, spec) in backends.iter().enumerate() {
            let authority = spec.authority(&format!("groups.{group}.backends[{i}].address"))?;
            if members
                .iter()
                .any(|b: &Arc<Backend>| b.authority == authority)
            {
                return Err(Error::invalid(
                    format!("groups.{group}.backends[{i}].address"),
                    format!("`{}` is listed twice", spec.address),
                ));
            }
            let kept = previous.and_then(|p| {
                p.backends
                    .iter()
                    .find(|b| b.authority == authority && b.spec.instance == spec.instance)
                    .cloned()
            });
            let backend = match kept {
                Some(b) => b,
                None => {
                    let b = Backend::start(
                        spec.clone(),
                        authority,
                        self.inner.epoch.clone(),
                        self.inner.check_client.clone(),
                        self.inner.options.health.clone(),
                        PoolLimits::new(&self.inner.options),
                    );
                    fresh.push(b.clone());
                    b
                }
            };
            members.push(backend);
        }
        let stats = app
            .stats
            .lock()
            .expect("stats lock")
            .entry(group.clone())
            .or_insert_with(|| Arc::new(GroupStats::new()))
            .clone();
        let state = Arc::new(GroupState::new(
            group.clone(),
            members,
            stats,
            &self.inner.options,
        ));
        Ok((state, fresh))
    }

    /// Waits (at most one check timeout) until the first check of each backend
    /// is done, so that a group reports its health as soon as it is attached.
    async fn await_first_checks(&self, fresh: Vec<Arc<Backend>>) {
        let deadline = tokio::time::Instant::now() + self.inner.options.health.timeout;
        loop {
            let mut rx = self.inner.epoch.subscribe();
            if fresh.iter().all(|b| b.health() != BackendHealth::Unknown) {
                return;
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                return;
            }
        }
    }

    /// Makes `group` of the app at `host` known with `backends`, without traffic,
    /// and opens its [preview listener](Proxy::preview_address).
    /// Attaching again replaces the members; backends already known keep their
    /// health. Each new backend is checked at once, and the call returns when these
    /// first checks are done (or after one check timeout).
    pub async fn attach(
        &self,
        host: &str,
        group: &GroupId,
        backends: &[BackendSpec],
    ) -> Result<()> {
        let host = normalize_host(host)?;
        check_group_id(group, "group")?;
        let fresh = self.change(&host, |proxy, app, draft| {
            let (state, fresh) =
                proxy.build_group(app, group, backends, draft.groups.get(group))?;
            draft.groups.insert(group.clone(), state);
            Ok(fresh)
        })?;
        tracing::info!(host, %group, backends = backends.len(), "group attached");
        self.open_preview(&host, group)?;
        self.await_first_checks(fresh).await;
        Ok(())
    }

    /// Forgets `group` and closes its preview listener. Idempotent; a group that
    /// has traffic is [`Error::Conflict`].
    pub fn detach(&self, host: &str, group: &GroupId) -> Result<()> {
        self.detach_group(host, group).map(|_| ())
    }

    /// Like [`Proxy::detach`]; whether the group was attached.
    pub(crate) fn detach_group(&self, host: &str, group: &GroupId) -> Result<bool> {
        let host = normalize_host(host)?;
        check_group_id(group, "group")?;
        if self.app_exact(&host).is_none() {
            return Ok(false);
        }
        let detached = self.change(&host, |_, app, draft| {
            if draft.table.weight(group) > 0 {
                return Err(Error::conflict(format!(
                    "group {group} still has {}% of {}'s traffic",
                    draft.table.weight(group),
                    app.host
                )));
            }
            let found = draft.groups.remove(group).is_some();
            if found {
                app.stats.lock().expect("stats lock").remove(group);
                tracing::info!(host = %app.host, %group, "group detached");
            }
            Ok(found)
        })?;
        self.close_preview(&host, group);
        Ok(detached)
    }

    /// Replaces the app's route table at once. Every group must be attached, or
    /// [`Error::NotFound`] and nothing changes.
    pub fn set_routes(&self, host: &str, table: &RouteTable) -> Result<()> {
        table.validate()?;
        check_table(table)?;
        self.change(host, |_, _, draft| {
            draft.table = table.clone();
            Ok(())
        })
    }

    /// Replaces several apps' route tables in one atomic change: a request sees
    /// every app's new table or every old one, and a request pinned to a [route
    /// generation](crate::pin) from before the change keeps the old ones while
    /// their groups are attached. Returns the new route generation.
    ///
    /// Every table is checked first, and any failure changes nothing:
    /// [`Error::Invalid`] naming `apps.<host>` for a bad host, a host named twice
    /// (once lower-cased) or bad weights, `apps.<host>.<group>` for a bad group id;
    /// [`Error::NotFound`] naming the group and the app when a group is not
    /// attached (an unknown app has no group). An empty list changes nothing.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), bluegreen_core::Error> {
    /// use bluegreen_core::{ErrorKind, GroupId, RouteTable};
    /// use bluegreen_proxy::{BackendSpec, Proxy, ProxyOptions};
    ///
    /// let proxy = Proxy::new(ProxyOptions::default());
    /// let (web, api) = (GroupId::from("web-v2"), GroupId::from("api-v2"));
    /// proxy.attach("web.test", &web, &[BackendSpec::new("127.0.0.1:9")]).await?;
    /// proxy.attach("api.test", &api, &[BackendSpec::new("127.0.0.1:9")]).await?;
    /// let before = proxy.route_generation();
    /// // api-v3 is not attached: nothing changes
    /// let bad = [
    ///     ("web.test".to_owned(), RouteTable::single(web.clone())),
    ///     ("api.test".to_owned(), RouteTable::single(GroupId::from("api-v3"))),
    /// ];
    /// assert_eq!(proxy.set_routes_many(&bad).unwrap_err().kind(), ErrorKind::NotFound);
    /// assert!(proxy.routes("web.test")?.is_empty());
    /// let good = [
    ///     ("web.test".to_owned(), RouteTable::single(web.clone())),
    ///     ("api.test".to_owned(), RouteTable::single(api.clone())),
    /// ];
    /// assert_eq!(proxy.set_routes_many(&good)?, before + 1);
    /// assert_eq!(proxy.routes("api.test")?, RouteTable::single(api));
    /// # Ok(())
    /// # }
    /// ```
    pub fn set_routes_many(&self, tables: &[(String, RouteTable)]) -> Result<u64> {
        let mut hosts: Vec<String> = Vec::with_capacity(tables.len());
        for (host, table) in tables {
            let field = format!("apps.{host}");
            let normal = normalize_host(host).map_err(|e| rename(e, &field))?;
            if hosts.contains(&normal) {
                return Err(Error::invalid(
                    field,
                    format!("app {normal} is named twice"),
                ));
            }
            table.validate().map_err(|e| rename(e, &field))?;
            for group in table.groups() {
                check_group_id(group, &format!("{field}.{group}"))?;
            }
            hosts.push(normal);
        }
        if hosts.is_empty() {
            return Ok(self.route_generation());
        }
        let refs: Vec<&str> = hosts.iter().map(String::as_str).collect();
        self.change_many(&refs, true, |_, _, drafts| {
            for (draft, (_, table)) in drafts.iter_mut().zip(tables) {
                draft.table = table.clone();
            }
            Ok(())
        })?;
        Ok(self.route_generation())
    }

    /// The current [route generation](crate::pin): grows by one with every change
    /// of any app's route table (a [`Proxy::set_routes_many`] is one change).
    pub fn route_generation(&self) -> u64 {
        self.inner.routes.load().current().number
    }

    /// Attaches `groups` (replacing their members) and sets `table`, in one atomic
    /// change: requests see either the old state or all of the new one.
    pub async fn apply(
        &self,
        host: &str,
        table: &RouteTable,
        groups: &BTreeMap<GroupId, Vec<BackendSpec>>,
    ) -> Result<()> {
        table.validate()?;
        check_table(table)?;
        for group in groups.keys() {
            check_group_id(group, "groups")?;
        }
        let host = normalize_host(host)?;
        let fresh = self.change(&host, |proxy, app, draft| {
            let mut fresh = Vec::new();
            for (group, backends) in groups {
                let (state, new) =
                    proxy.build_group(app, group, backends, draft.groups.get(group))?;
                draft.groups.insert(group.clone(), state);
                fresh.extend(new);
            }
            draft.table = table.clone();
            Ok(fresh)
        })?;
        for group in groups.keys() {
            self.open_preview(&host, group)?;
        }
        self.await_first_checks(fresh).await;
        Ok(())
    }

    /// The app's route table; empty for an unknown app.
    pub fn routes(&self, host: &str) -> Result<RouteTable> {
        Ok(self
            .known_app(host)?
            .map(|a| a.snapshot.load().table.clone())
            .unwrap_or_default())
    }

    /// Pauses the app: its requests wait (up to the hold timeout) until
    /// [`Proxy::resume`].
    pub fn pause(&self, host: &str) -> Result<()> {
        self.change(host, |_, _, draft| {
            draft.paused = true;
            Ok(())
        })
    }

    /// Resumes a paused app; waiting requests proceed.
    pub fn resume(&self, host: &str) -> Result<()> {
        self.change(host, |_, _, draft| {
            draft.paused = false;
            Ok(())
        })
    }

    /// How an attached group serves, from the proxy's own checks and counters;
    /// [`Error::NotFound`] when it is not attached.
    pub fn serving(&self, host: &str, group: &GroupId) -> Result<Serving> {
        let report = self
            .report(host)?
            .ok_or_else(|| Error::not_found(format!("group {group}")))?;
        report
            .groups
            .into_iter()
            .find(|g| &g.id == group)
            .map(|g| g.serving())
            .ok_or_else(|| Error::not_found(format!("group {group}")))
    }

    /// The state of the app at `host`, or `None` when unknown.
    pub fn report(&self, host: &str) -> Result<Option<AppReport>> {
        let Some(app) = self.known_app(host)? else {
            return Ok(None);
        };
        Ok(Some(self.app_report(&app)))
    }

    /// The state of every app.
    pub fn reports(&self) -> Vec<AppReport> {
        let apps = self.inner.apps.load();
        let mut list: Vec<AppReport> = apps.by_host.values().map(|a| self.app_report(a)).collect();
        list.sort_by(|a, b| a.host.cmp(&b.host));
        list
    }

    fn app_report(&self, app: &Arc<AppState>) -> AppReport {
        let snap = app.snapshot.load();
        let default = self
            .inner
            .apps
            .load()
            .default
            .as_ref()
            .is_some_and(|d| Arc::ptr_eq(d, app));
        AppReport {
            host: app.host.clone(),
            default,
            paused: snap.paused,
            generation: snap.generation,
            routes: snap.table.clone(),
            groups: snap
                .groups
                .values()
                .map(|g| GroupReport {
                    id: g.id.clone(),
                    weight: snap.table.weight(&g.id),
                    healthy: g.healthy(),
                    total: g.backends.len(),
                    backends: g
                        .backends
                        .iter()
                        .map(|b| BackendReport {
                            address: b.spec.address.clone(),
                            instance: b.spec.instance.clone(),
                            health: b.health(),
                        })
                        .collect(),
                    stats: g.stats.snapshot(),
                    preview: self.inner.previews.address(&app.host, &g.id),
                })
                .collect(),
        }
    }

    /// Every app, by host.
    pub(crate) fn apps(&self) -> Vec<Arc<AppState>> {
        let mut apps: Vec<Arc<AppState>> =
            self.inner.apps.load().by_host.values().cloned().collect();
        apps.sort_by(|a, b| a.host.cmp(&b.host));
        apps
    }

    /// How many requests wait now.
    pub fn held(&self) -> usize {
        self.inner.held.load(Ordering::Relaxed)
    }
}

/// The version of the state file's format.
const STATE_VERSION: u32 = 1;

/// The state file: `{"version": 1, "default": "web.production", "apps": [...]}`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedState {
    version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    default: Option<String>,
    apps: Vec<SavedApp>,
}

impl Default for SavedState {
    fn default() -> Self {
        SavedState {
            version: STATE_VERSION,
            default: None,
            apps: Vec::new(),
        }
    }
}

/// One app in the state file.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedApp {
    host: String,
    #[serde(default)]
    paused: bool,
    routes: RouteTable,
    groups: BTreeMap<GroupId, Vec<BackendSpec>>,
}

/// Writes `value` as JSON to `path` through a new file in the same directory
/// (mode 0600, synced) renamed over it: a reader sees the old file or the new one,
/// never a part.
fn write_atomically(path: &std::path::Path, value: &impl Serialize) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let bytes = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("the path has no file name"))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&tmp);
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // the rename itself survives a crash once the directory is synced
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// The state of one app, as the admin API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AppReport {
    /// The host name that selects the app.
    pub host: String,
    /// Whether it gets requests for unknown hosts.
    pub default: bool,
    /// Whether its requests are held.
    pub paused: bool,
    /// Grows with every change of the app's routing state.
    pub generation: u64,
    /// Its route table.
    pub routes: RouteTable,
    /// Its attached groups.
    pub groups: Vec<GroupReport>,
}

/// One attached group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct GroupReport {
    /// The group.
    pub id: GroupId,
    /// Its share of traffic.
    pub weight: u8,
    /// Backends passing their checks.
    pub healthy: usize,
    /// Backends attached.
    pub total: usize,
    /// Each backend.
    pub backends: Vec<BackendReport>,
    /// Its counters.
    pub stats: StatsSnapshot,
    /// Its [preview listener](Proxy::preview_address), when previews are on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<std::net::SocketAddr>,
}

impl GroupReport {
    /// As a [`Serving`] report.
    pub fn serving(&self) -> Serving {
        let serving = Serving::new(self.healthy, self.total)
            .with_counts(self.stats.requests, self.stats.errors);
        match self.stats.p99 {
            Some(p99) => serving.with_p99(p99),
            None => serving,
        }
    }
}

/// One backend of a group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BackendReport {
    /// Its address.
    pub address: String,
    /// Its instance id, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Its health, from the proxy's checks.
    pub health: BackendHealth,
}

/// `error` with its field renamed to `field` when it is [`Error::Invalid`].
fn rename(error: Error, field: &str) -> Error {
    match error {
        Error::Invalid { reason, .. } => Error::invalid(field, reason),
        other => other,
    }
}
