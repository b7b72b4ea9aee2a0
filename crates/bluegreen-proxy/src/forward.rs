//! The request path: pick an app by host, a group by stickiness or weight, a
//! healthy backend in turn; hold the request while there is none; forward it.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::{Body, Incoming};
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use crate::backend::Backend;
use crate::body::{BackendBody, ClientBody, ClientFault, FromBackend, ProxyBody, UpstreamBody};
use crate::conn::{ActiveGuard, Activity};
use crate::h1::{RawFields, RequestHead};
use crate::options::{IpNetwork, ProxyOptions};
use crate::pin;
use crate::preview::PreviewPin;
use crate::stall::StreamProgress;
use crate::state::{AppState, GroupState, Proxy, Snapshot};
use crate::stats::Cause;
use crate::upstream::{Affinity, UpstreamError};

/// The cookie that keeps a client on one group of a weighted split.
pub const GROUP_COOKIE: &str = "bluegreen-group";
/// A request header that asks for a group (honoured while the group has traffic).
pub const GROUP_HEADER: &str = "x-bluegreen-group";
/// A request header that sends the request to an attached group even without
/// traffic, to try it before a switch; honoured only from the networks of
/// [`ProxyOptions::preview_header_from`](crate::ProxyOptions::preview_header_from)
/// (none by default) and removed from every request.
pub const PREVIEW_HEADER: &str = "x-bluegreen-preview";

/// Where a connection comes from.
#[derive(Clone, Debug)]
pub(crate) struct ConnInfo {
    /// The client's address, as `X-Forwarded-For` gives it.
    ip: HeaderValue,
    tls: bool,
    /// Whether the client may ask for a preview by header.
    preview_header: bool,
    /// Whether the client's forwarded headers are kept.
    trusted_proxy: bool,
    /// The group of a preview listener's connection.
    pin: Option<Arc<PreviewPin>>,
}

impl ConnInfo {
    pub(crate) fn new(remote: SocketAddr, tls: bool, options: &ProxyOptions) -> Self {
        let ip = HeaderValue::from_str(&remote.ip().to_string())
            .expect("an IP address is a header value");
        ConnInfo {
            ip,
            tls,
            preview_header: IpNetwork::any_contains(&options.preview_header_from, remote.ip()),
            trusted_proxy: IpNetwork::any_contains(&options.trusted_proxies, remote.ip()),
            pin: None,
        }
    }

    /// A connection of `pin`'s preview listener: every request goes to its group.
    pub(crate) fn pinned(mut self, pin: Arc<PreviewPin>) -> Self {
        self.pin = Some(pin);
        self
    }
}

/// One client connection: where it comes from and the backend connections it keeps.
pub(crate) struct ClientConn {
    pub(crate) proxy: Proxy,
    pub(crate) info: ConnInfo,
    pub(crate) affinity: Affinity,
    pub(crate) activity: Arc<Activity>,
}

/// [`GROUP_HEADER`] and [`PREVIEW_HEADER`] as names, made once, not per request.
const GROUP_NAME: HeaderName = HeaderName::from_static(GROUP_HEADER);
const PREVIEW_NAME: HeaderName = HeaderName::from_static(PREVIEW_HEADER);
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// The same names, to lend to a [`RequestHead`].
static FORWARDED_NAMES: [HeaderName; 3] = [X_FORWARDED_FOR, X_FORWARDED_PROTO, X_FORWARDED_HOST];

/// The hop-by-hop fields of RFC 9110 section 7.6.1 and the ones in use before it.
pub(crate) static HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Which of the names the request path looks at a request has, found in one
/// pass comparing its names (a few, mostly standard ones: an enum comparison
/// each) rather than a hashed lookup per name, most of which find nothing. A
/// flag that is false means the name is absent; true means it may be present
/// (a field named in `Connection` may have been removed since).
#[derive(Clone, Copy, Default)]
struct Names {
    group: bool,
    cookie: bool,
    upgrade: bool,
    connection: bool,
    hop_by_hop: bool,
    preview: bool,
    forwarded: bool,
    x_forwarded: bool,
    route: bool,
}

impl Names {
    fn of(headers: &HeaderMap, route: Option<&HeaderName>) -> Self {
        let mut n = Names::default();
        for name in headers.keys() {
            if name == header::COOKIE {
                n.cookie = true;
            } else if name == header::FORWARDED {
                n.forwarded = true;
            } else if HOP_BY_HOP.contains(name) {
                n.hop_by_hop = true;
                n.connection |= name == header::CONNECTION;
                n.upgrade |= name == header::UPGRADE;
            } else if name == GROUP_NAME {
                n.group = true;
            } else if name == PREVIEW_NAME {
                n.preview = true;
            } else if name == X_FORWARDED_FOR
                || name == X_FORWARDED_PROTO
                || name == X_FORWARDED_HOST
            {
                n.x_forwarded = true;
            } else if route == Some(name) {
                n.route = true;
            }
        }
        n
    }
}

struct Choice {
    group: Arc<GroupState>,
    backend: Arc<Backend>,
    set_cookie: bool,
    /// The route header to forward: the route generation that routed the request.
    stamp: Option<HeaderValue>,
}

enum Wait {
    Paused,
    NoRoutes,
    /// The groups that have no healthy backend: a 503 that ends the wait counts
    /// against them.
    NoHealthy(Vec<Arc<GroupState>>),
    UnknownPreview(String),
}

impl Wait {
    /// What the client is told: no group or backend is named.
    fn describe(&self, host: &str) -> String {
        match self {
            Wait::Paused => format!("app {host} is paused"),
            Wait::NoRoutes => format!("app {host} has no route"),
            Wait::NoHealthy(_) => format!("app {host} has no healthy backend"),
            Wait::UnknownPreview(_) => "no such preview".into(),
        }
    }

    /// Counts the 503 that ends this wait against the groups it waited for: the
    /// proxy's own answer for a group with no healthy backend is the group's
    /// error; a paused app or one without routes is nobody's (the app's alone).
    fn count(&self, app: &AppState, cause: Cause, waited: Duration) {
        match self {
            Wait::NoHealthy(groups) => {
                for group in groups {
                    group.stats.record_error(503, cause, waited);
                }
            }
            _ => app.counters.record_error(503, cause),
        }
    }

    /// What the log is told.
    fn detail(&self, host: &str) -> String {
        match self {
            Wait::Paused => format!("app {host} is paused"),
            Wait::NoRoutes => format!("app {host} has no route table"),
            Wait::NoHealthy(groups) => {
                let names: Vec<&str> = groups.iter().map(|g| g.id.as_str()).collect();
                format!(
                    "no healthy backend in group {} of app {host}",
                    names.join(", ")
                )
            }
            Wait::UnknownPreview(g) => format!("group {g} is not attached to app {host}"),
        }
    }
}

fn plain(status: StatusCode, message: String) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::full(format!(
        "{} {}: {message}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    )));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn try_pick(
    snap: &Snapshot,
    routed: Option<&[(Arc<GroupState>, u8)]>,
    preview: Option<&str>,
    prefer: Option<&str>,
    exclude: Option<&Arc<Backend>>,
) -> Result<Choice, Wait> {
    // a preview is not live traffic: it is served while the app is paused
    if let Some(p) = preview {
        let group = snap
            .groups
            .values()
            .find(|g| g.id.as_str() == p)
            .ok_or_else(|| Wait::UnknownPreview(p.to_owned()))?;
        let backend = group
            .pick(exclude)
            .or_else(|| group.pick(None))
            .ok_or_else(|| Wait::NoHealthy(vec![group.clone()]))?;
        return Ok(Choice {
            group: group.clone(),
            backend,
            set_cookie: false,
            stamp: None,
        });
    }
    if snap.paused {
        return Err(Wait::Paused);
    }
    let routed = routed.unwrap_or(&snap.routed);
    if routed.is_empty() {
        return Err(Wait::NoRoutes);
    }
    if let Some(group) =
        prefer.and_then(|p| routed.iter().map(|(g, _)| g).find(|g| g.id.as_str() == p))
    {
        if let Some(backend) = group.pick(exclude) {
            return Ok(Choice {
                group: group.clone(),
                backend,
                set_cookie: false,
                stamp: None,
            });
        }
    }
    let split = routed.len() > 1;
    let total: u32 = routed
        .iter()
        .filter(|(g, _)| g.has_healthy())
        .map(|(_, w)| u32::from(*w))
        .sum();
    if total > 0 {
        let mut r = fastrand::u32(..total);
        let start = routed
            .iter()
            .position(|(g, w)| {
                if !g.has_healthy() {
                    return false;
                }
                if r < u32::from(*w) {
                    return true;
                }
                r -= u32::from(*w);
                false
            })
            .unwrap_or(0);
        let n = routed.len();
        for i in 0..n {
            let group = &routed[(start + i) % n].0;
            if let Some(backend) = group.pick(exclude).or_else(|| group.pick(None)) {
                return Ok(Choice {
                    group: group.clone(),
                    backend,
                    set_cookie: split,
                    stamp: None,
                });
            }
        }
    }
    Err(Wait::NoHealthy(
        routed.iter().map(|(g, _)| g.clone()).collect(),
    ))
}

/// [`try_pick`] by the route generation that routes the request (see
/// [`pin::resolve`]): the current one, or the one `pinned` names. The choice
/// carries that generation's stamp when the proxy has a route header.
fn try_route(
    proxy: &Proxy,
    app: &AppState,
    pinned: Option<u64>,
    preview: Option<&str>,
    prefer: Option<&str>,
    exclude: Option<&Arc<Backend>>,
) -> Result<Choice, Wait> {
    // the routes first, then the snapshot: a change publishes them the other way,
    // so that a change of several apps takes effect at one moment for all of them
    let routes = proxy.inner.routes.load();
    let snap = app.snapshot.load();
    let (routed, stamp) = pin::resolve(&routes, &snap, &app.host, pinned);
    let mut choice = try_pick(&snap, routed.as_deref(), preview, prefer, exclude)?;
    if proxy.inner.options.route_header.is_some() {
        choice.stamp = Some(stamp.clone());
    }
    Ok(choice)
}

struct HeldGuard<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for HeldGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A backend for the request, waiting (bounded) while there is none.
async fn choose(
    proxy: &Proxy,
    app: &AppState,
    pinned: Option<u64>,
    preview: Option<&str>,
    prefer: Option<&str>,
    exclude: Option<&Arc<Backend>>,
) -> Result<Choice, Response<ProxyBody>> {
    let wait = match try_route(proxy, app, pinned, preview, prefer, exclude) {
        Ok(choice) => return Ok(choice),
        Err(w @ Wait::UnknownPreview(_)) => {
            return Err(plain(StatusCode::NOT_FOUND, w.describe(&app.host)))
        }
        Err(w) => w,
    };
    let inner = &proxy.inner;
    let max = inner.options.max_held;
    if inner.held.fetch_add(1, Ordering::AcqRel) >= max {
        inner.held.fetch_sub(1, Ordering::AcqRel);
        tracing::warn!(host = %app.host, max, reason = %wait.detail(&app.host), "hold queue full");
        wait.count(app, Cause::QueueFull, Duration::ZERO);
        return Err(plain(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{} and {max} requests already wait, the most the proxy holds",
                wait.describe(&app.host)
            ),
        ));
    }
    let _held = HeldGuard(&inner.held);
    let timeout = inner.options.hold_timeout;
    let deadline = Instant::now() + timeout;
    tracing::debug!(host = %app.host, reason = %wait.detail(&app.host), "holding a request");
    let mut last;
    loop {
        let mut changes = inner.epoch.subscribe();
        match try_route(proxy, app, pinned, preview, prefer, exclude) {
            Ok(choice) => return Ok(choice),
            Err(w @ Wait::UnknownPreview(_)) => {
                return Err(plain(StatusCode::NOT_FOUND, w.describe(&app.host)))
            }
            Err(w) => last = w,
        }
        match tokio::time::timeout_at(deadline, changes.changed()).await {
            Ok(Ok(())) => continue,
            _ => {
                last.count(app, Cause::HoldTimeout, timeout);
                tracing::info!(host = %app.host, reason = %last.detail(&app.host), ?timeout, "held past the hold timeout");
                return Err(plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "held for {} while {}",
                        human(timeout),
                        last.describe(&app.host)
                    ),
                ));
            }
        }
    }
}

fn human(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// The request's host, without port, or why the request is malformed.
///
/// The request target's authority (an absolute-form target in HTTP/1.1, the
/// `:authority` of HTTP/2) wins over the `Host` field (RFC 9112 §3.2.2); the
/// request is forwarded with that authority as its `Host`. More than one `Host`
/// field, a `Host` that is not text, or an HTTP/1.1 request with neither a `Host`
/// nor an absolute-form target, is a 400 (RFC 9112 §3.2).
fn request_host<B>(req: &Request<B>) -> Result<Option<&str>, &'static str> {
    let mut fields = req.headers().get_all(header::HOST).iter();
    let field = fields.next();
    if fields.next().is_some() {
        return Err("more than one Host header field");
    }
    let raw = match req.uri().authority() {
        Some(authority) => authority.host(),
        None => match field {
            Some(v) if !is_host_value(v.as_bytes()) => {
                return Err("the Host header field is not a host and an optional port")
            }
            Some(v) => v
                .to_str()
                .map_err(|_| "the Host header field is not text")?,
            None if req.version() == Version::HTTP_11 => return Err("no Host header field"),
            None => return Ok(None),
        },
    };
    if let Some(rest) = raw.strip_prefix('[') {
        return Ok(rest.split(']').next());
    }
    Ok(raw.split(':').next())
}

/// Whether `value` is `uri-host [ ":" port ]` (RFC 9110 section 7.2): an IP
/// literal in brackets or a registered name, then digits after a colon. No
/// user information, path, list, space or control character; a comma, which a
/// registered name may hold in RFC 3986 but no host does, is refused as a list.
fn is_host_value(value: &[u8]) -> bool {
    let (host, port) = match value.strip_prefix(b"[") {
        Some(rest) => {
            let Some(end) = rest.iter().position(|&b| b == b']') else {
                return false;
            };
            let literal = &rest[..end];
            if literal.is_empty()
                || !literal
                    .iter()
                    .all(|&b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.' | b'v' | b'V'))
            {
                return false;
            }
            (&[][..], &rest[end + 1..])
        }
        None => {
            let end = value.iter().position(|&b| b == b':').unwrap_or(value.len());
            (&value[..end], &value[end..])
        }
    };
    let name_ok = host.iter().all(|&b| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'%'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b';'
                    | b'='
            )
    });
    let port_ok = match port.split_first() {
        None => true,
        Some((b':', digits)) => digits.iter().all(u8::is_ascii_digit),
        Some(_) => false,
    };
    !value.is_empty() && name_ok && port_ok
}

/// Whether the request's target has a form its method may use (RFC 9112
/// section 3.2): origin form (a path), absolute form with an `http` or `https`
/// scheme, or `*` for `OPTIONS`. The authority form is `CONNECT`'s, which the
/// proxy does not serve; a target in none of them is never made a path.
fn target_form<B>(req: &Request<B>) -> Result<(), &'static str> {
    let uri = req.uri();
    if let Some(scheme) = uri.scheme_str() {
        return match (
            scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https"),
            uri.authority(),
        ) {
            (true, Some(_)) => Ok(()),
            _ => Err("the request target's scheme is not http or https"),
        };
    }
    if uri.authority().is_some() {
        return Err("a request target in authority form (CONNECT's)");
    }
    match uri.path_and_query().map(|p| p.as_str()) {
        Some("*") if req.method() == Method::OPTIONS => Ok(()),
        Some("*") => Err("a request target of * for a method other than OPTIONS"),
        Some(p) if p.starts_with('/') => Ok(()),
        _ => Err("a request target that is not a path"),
    }
}

/// The `Host` to forward for a request whose target names `authority`.
fn host_value(authority: &http::uri::Authority) -> Option<HeaderValue> {
    let text = authority.as_str();
    match text.rsplit_once('@') {
        None => HeaderValue::from_str(text).ok(),
        Some((_, host)) => HeaderValue::from_str(host).ok(),
    }
}

fn cookie_group(headers: &HeaderMap, names: Names) -> Option<String> {
    if names.group {
        if let Some(v) = headers.get(GROUP_NAME).and_then(|v| v.to_str().ok()) {
            return Some(v.trim().to_owned());
        }
    }
    if !names.cookie {
        return None;
    }
    for value in headers.get_all(header::COOKIE) {
        let Ok(value) = value.to_str() else { continue };
        for pair in value.split(';') {
            if let Some((k, v)) = pair.split_once('=') {
                if k.trim() == GROUP_COOKIE {
                    return Some(v.trim().to_owned());
                }
            }
        }
    }
    None
}

fn is_upgrade<B>(req: &Request<B>, names: Names) -> bool {
    req.version() == Version::HTTP_11
        && names.upgrade
        && names.connection
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // one pass comparing the few names a message has, rather than a hashed
    // lookup per hop-by-hop name: most messages have none
    if headers.keys().any(|k| HOP_BY_HOP.contains(k)) {
        strip_named_hop_by_hop(headers);
    }
}

/// [`strip_hop_by_hop`] for a message known to have a hop-by-hop field.
fn strip_named_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            // the request's Host routes it and is what the backend is asked
            // for: a client cannot name it away
            .filter(|name| name != header::HOST)
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// The parts of the client's request that every attempt is built from.
struct Outgoing {
    method: Method,
    path_and_query: http::uri::PathAndQuery,
    headers: HeaderMap,
}

impl Outgoing {
    /// A request for the shared pool: its URI names the backend.
    fn request(
        &self,
        backend: &Backend,
        headers: HeaderMap,
        body: UpstreamBody,
    ) -> Request<UpstreamBody> {
        let uri = Uri::builder()
            .scheme("http")
            .authority(backend.authority.clone())
            .path_and_query(self.path_and_query.clone())
            .build()
            .expect("an authority and a path make a URI");
        let mut request = Request::new(body);
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = uri;
        *request.version_mut() = Version::HTTP_11;
        *request.headers_mut() = headers;
        request
    }
}

/// Serves one request of a client connection, for hyper's server.
pub(crate) async fn handle(
    client: Arc<ClientConn>,
    req: Request<Incoming>,
) -> Result<Response<ClientBody>, std::convert::Infallible> {
    let (mut response, active, fields) = forward_one(&client, req.map(Some)).await;
    if let Some(fields) = fields {
        fields.append_to(response.headers_mut());
    }
    Ok(response.map(|body| ClientBody::new(body, active)))
}

/// Serves one request without a body of a client connection, for the proxy's
/// own HTTP/1.1 server ([`crate::h1_server`]).
pub(crate) async fn handle_plain(client: &ClientConn, req: Request<()>) -> Response<ClientBody> {
    let (response, active, fields) = forward_one(client, req.map(|()| None)).await;
    response.map(|body| ClientBody::new(body, active).with_fields(fields))
}

/// A request of `client`, in progress from here until its response's body is
/// sent; with a backend's response fields when they are to be written as they
/// came.
async fn forward_one(
    client: &ClientConn,
    req: Request<Option<Incoming>>,
) -> (Response<ProxyBody>, ActiveGuard, Option<RawFields>) {
    crate::slice::account();
    let active = client.activity.begin();
    let mut fields = None;
    let response = forward(
        &client.proxy,
        &client.info,
        &client.affinity,
        &active,
        req,
        &mut fields,
    )
    .await;
    (response, active, fields)
}

async fn forward(
    proxy: &Proxy,
    conn: &ConnInfo,
    affinity: &Affinity,
    active: &ActiveGuard,
    mut req: Request<Option<Incoming>>,
    fields: &mut Option<RawFields>,
) -> Response<ProxyBody> {
    if let Err(why) = target_form(&req) {
        return plain(StatusCode::BAD_REQUEST, why.into());
    }
    let host = match request_host(&req) {
        Ok(host) => host.map(str::to_owned),
        Err(why) => return plain(StatusCode::BAD_REQUEST, why.into()),
    };
    let (app, preview) = match &conn.pin {
        Some(pin) => (proxy.app_exact(&pin.host), Some(pin.group.to_string())),
        None if conn.preview_header => (
            proxy.app_for(host.as_deref()),
            req.headers()
                .get(PREVIEW_NAME)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.trim().to_owned()),
        ),
        None => (proxy.app_for(host.as_deref()), None),
    };
    let Some(app) = app else {
        return plain(
            StatusCode::NOT_FOUND,
            format!(
                "no app is served for host {}",
                host.as_deref().unwrap_or("(none)")
            ),
        );
    };
    let names = Names::of(req.headers(), proxy.inner.options.route_header.as_ref());
    let sticky = cookie_group(req.headers(), names);
    let upgrade = is_upgrade(&req, names);
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));

    let (parts, body) = req.into_parts();
    // HTTP/1 requests run one at a time in their connection's task, which drives
    // the backend connections they use; HTTP/2 streams and upgrades use the pool
    let pooled = upgrade || parts.version == Version::HTTP_2;
    let idempotent = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
    let mut headers = parts.headers;
    let upgrade_value = if upgrade {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    };
    if names.hop_by_hop {
        strip_named_hop_by_hop(&mut headers);
    }
    if names.preview {
        headers.remove(PREVIEW_NAME);
    }
    // a route header the proxy made pins the request; any other is dropped
    let pinned = proxy.inner.options.route_header.as_ref().and_then(|name| {
        if !names.route {
            return None;
        }
        let value = headers.remove(name)?;
        proxy.inner.routes.load().verify(&value)
    });
    if let (true, Some(value)) = (upgrade, upgrade_value) {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, value);
    }
    // the target's authority wins over a Host field
    if let Some(v) = parts.uri.authority().and_then(host_value) {
        headers.insert(header::HOST, v);
    }
    if parts.version == Version::HTTP_2 && names.cookie {
        // HTTP/2 may split cookies over several fields; HTTP/1.1 wants one
        if headers.get_all(header::COOKIE).iter().count() > 1 {
            let joined: Vec<&[u8]> = headers
                .get_all(header::COOKIE)
                .iter()
                .map(|v| v.as_bytes())
                .collect();
            if let Ok(v) = HeaderValue::from_bytes(&joined.join(&b"; "[..])) {
                headers.insert(header::COOKIE, v);
            }
        }
    }
    // the forwarded fields a request without any gets are written by the own
    // client after the others rather than inserted into the map
    let appended = add_forwarded(&mut headers, conn, host.as_deref(), names, !pooled);

    let mut outgoing = Outgoing {
        method: parts.method,
        path_and_query: parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
        headers,
    };
    let body = body.filter(|b| !b.is_end_stream());
    let empty_body = body.is_none();
    let (mut body, slot) = match body {
        None => (UpstreamBody::Empty, None),
        Some(body) => {
            let (b, slot) = UpstreamBody::recoverable(body, proxy.inner.options.body_timeout);
            (b, Some(slot))
        }
    };

    let mut exclude: Option<Arc<Backend>> = None;
    let mut prefer = sticky;
    let mut attempt = 0;
    // set once a pooled connection went stale under the request: its next
    // attempt goes on a new connection
    let mut fresh = false;
    loop {
        let choice = match choose(
            proxy,
            &app,
            pinned,
            preview.as_deref(),
            prefer.as_deref(),
            exclude.as_ref(),
        )
        .await
        {
            Ok(c) => c,
            Err(response) => return response,
        };
        let last_try = attempt > 0;
        let started = Instant::now();
        let deadline = started + proxy.inner.options.upstream_timeout;
        let stamp = proxy.inner.options.route_header.as_ref().zip(choice.stamp);
        let result = if pooled {
            let mut headers = if last_try || !(empty_body || slot.is_some()) {
                std::mem::take(&mut outgoing.headers)
            } else {
                outgoing.headers.clone()
            };
            if let Some((name, stamp)) = stamp {
                headers.insert(name.clone(), stamp);
            }
            let request = outgoing.request(&choice.backend, headers, body);
            let watch = watch_backend(&choice.group, &choice.backend, &proxy.inner.epoch, deadline);
            tokio::select! {
                r = choice.group.client.request(request) => r
                    .map(|r| r.map(FromBackend::Shared))
                    .map_err(UpstreamError::Pool),
                e = watch => Err(e),
            }
        } else {
            // the request's head is written from the parts, borrowed: nothing is
            // copied for a later attempt
            let head = RequestHead {
                method: &outgoing.method,
                target: outgoing.path_and_query.as_str(),
                headers: &outgoing.headers,
                host: choice.backend.authority.as_str(),
                extra: [
                    appended.as_ref().map(|f| (&FORWARDED_NAMES[0], &f.for_)),
                    appended.as_ref().map(|f| (&FORWARDED_NAMES[1], &f.proto)),
                    appended
                        .as_ref()
                        .and_then(|f| f.host.as_ref().map(|v| (&FORWARDED_NAMES[2], v))),
                    stamp.as_ref().map(|(name, value)| (*name, value)),
                ],
            };
            let mut timer = affinity.timer(deadline);
            let watch = watch_driven(&choice.group, &choice.backend, timer.as_mut());
            let result = tokio::select! {
                r = affinity.send(&choice.group, &choice.backend, &head, body, fresh) => {
                    r.map(|r| r.map(FromBackend::Own))
                }
                e = watch => Err(e),
            };
            affinity.keep_timer(timer);
            result
        };
        match result {
            Ok(mut response) => {
                choice
                    .group
                    .stats
                    .record(response.status().as_u16(), started.elapsed());
                // the own client's response keeps its fields as they came, for
                // the response's head to be written from (or made a header map)
                if let FromBackend::Own(body) = response.body_mut() {
                    *fields = body.take_fields();
                }
                if let Some(name) = &proxy.inner.options.route_header {
                    response.headers_mut().remove(name);
                    if let Some(fields) = fields.as_mut() {
                        fields.remove(name);
                    }
                }
                if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                    if let Some(client_side) = client_upgrade {
                        let backend_side = hyper::upgrade::on(&mut response);
                        let (group, epoch) = (choice.group.clone(), proxy.inner.epoch.clone());
                        // a tunnel is in progress while it lasts: no idle timeout
                        let tunnel_active = active.activity().begin();
                        tokio::spawn(async move {
                            let _active = tunnel_active;
                            tokio::select! {
                                () = tunnel(client_side, backend_side) => {}
                                () = group.until_cut(&epoch) => {
                                    tracing::info!(group = %group.id, "upgraded connection cut by the drain timeout");
                                }
                            }
                        });
                    }
                    return response.map(|_| ProxyBody::empty());
                }
                let (mut rparts, rbody) = response.into_parts();
                strip_hop_by_hop(&mut rparts.headers);
                if choice.set_cookie {
                    if let Ok(v) = HeaderValue::from_str(&format!(
                        "{GROUP_COOKIE}={}; Path=/; HttpOnly; SameSite=Lax",
                        choice.group.id
                    )) {
                        rparts.headers.append(header::SET_COOKIE, v);
                    }
                }
                let epoch = pooled.then(|| proxy.inner.epoch.clone());
                let mut body = BackendBody::new(rbody, choice.group, epoch);
                if parts.version == Version::HTTP_2 {
                    if let Some(progress) = StreamProgress::current() {
                        body = body.reporting_to(progress);
                    }
                }
                return Response::from_parts(rparts, ProxyBody::Backend(body));
            }
            // the client's body could not be read (malformed, cut short, reset):
            // the client's fault, never counted against the group
            Err(error) if slot.as_ref().is_some_and(|s| s.client_fault().is_some()) => {
                tracing::debug!(
                    host = %app.host,
                    error = %error_chain(&error),
                    "request body from the client failed"
                );
                let stalled = matches!(
                    slot.as_ref().and_then(|s| s.client_fault()),
                    Some(ClientFault::Stalled)
                );
                let status = if stalled { 408 } else { 400 };
                app.counters.record_error(status, Cause::ClientFault);
                return match stalled {
                    true => plain(
                        StatusCode::REQUEST_TIMEOUT,
                        format!(
                            "the request body stalled for the body timeout ({})",
                            human(proxy.inner.options.body_timeout)
                        ),
                    ),
                    false => plain(
                        StatusCode::BAD_REQUEST,
                        "the request body could not be read".into(),
                    ),
                };
            }
            Err(_) if choice.group.is_cut() => {
                tracing::info!(
                    host = %app.host,
                    group = %choice.group.id,
                    backend = %choice.backend.authority,
                    "request cut by the drain timeout"
                );
                choice
                    .group
                    .stats
                    .record_error(504, Cause::DrainCut, started.elapsed());
                return plain(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!(
                        "the traffic moved and no response came within the drain timeout ({})",
                        human(proxy.inner.options.drain_timeout)
                    ),
                );
            }
            Err(error) => {
                let again = || {
                    if empty_body {
                        Some(UpstreamBody::Empty)
                    } else {
                        slot.as_ref()
                            .and_then(|s| Some(UpstreamBody::again(s, s.take_back()?)))
                    }
                };
                // the backend closed an idle connection as the request went out on
                // it: the backend is fine, and a request safe to repeat goes again
                // on a new connection, once, without counting as an attempt
                if let (UpstreamError::Stale(_), false, true) = (&error, fresh, idempotent) {
                    if let Some(again) = again() {
                        tracing::debug!(
                            host = %app.host,
                            backend = %choice.backend.authority,
                            error = %error_chain(&error),
                            "pooled connection closed by the backend; sending again"
                        );
                        body = again;
                        fresh = true;
                        prefer = Some(choice.group.id.to_string());
                        continue;
                    }
                }
                let connect = error.is_connect();
                if connect {
                    choice.backend.connection_failed();
                }
                let again = again();
                let retry = !last_try
                    && (connect || idempotent)
                    && again.is_some()
                    && !matches!(error, UpstreamError::Timeout);
                tracing::warn!(
                    host = %app.host,
                    group = %choice.group.id,
                    backend = %choice.backend.authority,
                    error = %error_chain(&error),
                    retry,
                    "backend request failed"
                );
                if let (true, Some(again)) = (retry, again) {
                    body = again;
                    prefer = Some(choice.group.id.to_string());
                    exclude = Some(choice.backend);
                    attempt += 1;
                    continue;
                }
                return match error {
                    UpstreamError::Timeout => {
                        choice.group.stats.record_error(
                            504,
                            Cause::UpstreamTimeout,
                            started.elapsed(),
                        );
                        plain(
                            StatusCode::GATEWAY_TIMEOUT,
                            format!(
                                "no response within the upstream timeout ({})",
                                human(proxy.inner.options.upstream_timeout)
                            ),
                        )
                    }
                    UpstreamError::Unhealthy => {
                        choice.group.stats.record_error(
                            504,
                            Cause::BackendError,
                            started.elapsed(),
                        );
                        plain(
                            StatusCode::GATEWAY_TIMEOUT,
                            "the backend became unhealthy before it answered".into(),
                        )
                    }
                    _ => {
                        choice.group.stats.record_error(
                            502,
                            Cause::BackendError,
                            started.elapsed(),
                        );
                        plain(StatusCode::BAD_GATEWAY, "the backend failed".into())
                    }
                };
            }
        }
    }
}

/// Completes with the reason a request to `backend` of `group` stops waiting for
/// its response: the upstream timeout passed, the backend turned unhealthy, or
/// the drain timeout cut the group (the pool's connections have no
/// client-connection driver to drop them).
async fn watch_backend(
    group: &GroupState,
    backend: &Backend,
    epoch: &crate::backend::Epoch,
    deadline: Instant,
) -> UpstreamError {
    let mut changes = epoch.subscribe();
    loop {
        if group.is_cut() {
            return UpstreamError::Cut;
        }
        if backend.health() == crate::BackendHealth::Unhealthy {
            return UpstreamError::Unhealthy;
        }
        match tokio::time::timeout_at(deadline, changes.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                tokio::time::sleep_until(deadline).await;
                return UpstreamError::Timeout;
            }
            Err(_) => return UpstreamError::Timeout,
        }
    }
}

/// [`watch_backend`] for a request on a connection of the client connection.
/// The client connection's driver ([`crate::upstream::drive`]) polls its
/// requests again whenever the proxy's state changes, so the checks need no
/// wait of their own on the change (a subscription and a registration per
/// request): only the upstream timeout's `timer` (the client connection's own,
/// set to the request's deadline).
async fn watch_driven(
    group: &GroupState,
    backend: &Backend,
    mut timer: std::pin::Pin<&mut tokio::time::Sleep>,
) -> UpstreamError {
    std::future::poll_fn(|cx| {
        if group.is_cut() {
            return std::task::Poll::Ready(UpstreamError::Cut);
        }
        if backend.health() == crate::BackendHealth::Unhealthy {
            return std::task::Poll::Ready(UpstreamError::Unhealthy);
        }
        timer.as_mut().poll(cx).map(|()| UpstreamError::Timeout)
    })
    .await
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The forwarded fields of a request that carried none, to send after its
/// other fields.
struct Forwarded {
    for_: HeaderValue,
    proto: HeaderValue,
    host: Option<HeaderValue>,
}

/// Sets the forwarded headers: the proxy's own for a client, kept (and
/// `X-Forwarded-For` appended to) for a trusted proxy in front.
///
/// `names` says which of the request's fields may be present: a field it says
/// is absent is not looked up. With `defer`, the fields of a request from a
/// client that has none of them are returned for the caller to send after the
/// others, instead of added to `headers`.
fn add_forwarded(
    headers: &mut HeaderMap,
    conn: &ConnInfo,
    host: Option<&str>,
    names: Names,
    defer: bool,
) -> Option<Forwarded> {
    let (xff, xfp, xfh) = (X_FORWARDED_FOR, X_FORWARDED_PROTO, X_FORWARDED_HOST);
    let proto = HeaderValue::from_static(if conn.tls { "https" } else { "http" });
    // the Host field's own value when it is the host (no port): shared, not copied
    let host = host.and_then(|h| match headers.get(header::HOST) {
        Some(v) if v.as_bytes() == h.as_bytes() => Some(v.clone()),
        _ => HeaderValue::from_str(h).ok(),
    });
    if !conn.trusted_proxy {
        if names.forwarded {
            headers.remove(header::FORWARDED);
        }
        if names.x_forwarded {
            headers.insert(xff, conn.ip.clone());
            headers.insert(xfp, proto);
            match host {
                Some(v) => headers.insert(xfh, v),
                None => headers.remove(xfh),
            };
        } else if defer {
            return Some(Forwarded {
                for_: conn.ip.clone(),
                proto,
                host,
            });
        } else {
            // none of them is there: appended without looking for an old one,
            // into room reserved once
            headers.reserve(3);
            headers.append(xff, conn.ip.clone());
            headers.append(xfp, proto);
            if let Some(v) = host {
                headers.append(xfh, v);
            }
        }
        return None;
    }
    let appended = match headers.get(&xff).and_then(|v| v.to_str().ok()) {
        Some(prev) => {
            HeaderValue::from_str(&format!("{prev}, {}", conn.ip.to_str().unwrap_or(""))).ok()
        }
        None => Some(conn.ip.clone()),
    };
    if let Some(v) = appended {
        headers.insert(xff, v);
    }
    if !headers.contains_key(&xfp) {
        headers.insert(xfp, proto);
    }
    if let (false, Some(v)) = (headers.contains_key(&xfh), host) {
        headers.insert(xfh, v);
    }
    None
}

async fn tunnel(client: hyper::upgrade::OnUpgrade, backend: hyper::upgrade::OnUpgrade) {
    match tokio::try_join!(client, backend) {
        Ok((client, backend)) => {
            let mut client = TokioIo::new(client);
            let mut backend = TokioIo::new(backend);
            if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut backend).await {
                tracing::debug!(error = %e, "upgraded connection ended");
            }
        }
        Err(e) => tracing::debug!(error = %e, "upgrade failed"),
    }
}
