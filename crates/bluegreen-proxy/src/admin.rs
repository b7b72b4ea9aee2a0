//! The admin API: JSON over HTTP/1.1, on loopback or a unix socket, behind a bearer
//! token.
//!
//! | method and path | body | does |
//! | --- | --- | --- |
//! | `GET /v1/apps` | | every app ([`AppReport`]s) |
//! | `GET /v1/apps/{host}` | | one app |
//! | `PUT /v1/apps/{host}` | `{"routes": {"g": 100}, "groups": {"g": [{"address": "127.0.0.1:8000"}]}}` | attaches the groups and sets the routes in one atomic change |
//! | `GET /v1/apps/{host}/routes` | | `{"routes": {...}}`, empty for an unknown app |
//! | `PUT /v1/apps/{host}/routes` | `{"routes": {"g": 90, "h": 10}}` | sets the route table |
//! | `GET /v1/routes` | | `{"route_generation": n, "apps": {"web.test": {"g1": 100}, ...}}`: every app's table and the current [route generation](crate::pin) |
//! | `PUT /v1/routes` | `{"apps": {"web.test": {"g1": 100}, "api.test": {"h1": 100}}}` | sets several apps' tables in one atomic change ([`Proxy::set_routes_many`]): every table is checked first (a bad host, weights or group id is a 400 naming `apps.<host>` or `apps.<host>.<group>`, a group not attached a 404 naming the group and the app) and any failure changes nothing; `{"route_generation": n, "apps": [...]}` with the changed apps' reports |
//! | `PUT /v1/apps/{host}/groups/{group}` | `{"backends": [{"address": "...", "instance": "..."}]}` | attaches a group and opens its preview listener |
//! | `GET /v1/apps/{host}/groups/{group}` | | the group's health, counters and preview address ([`GroupReport`]) |
//! | `DELETE /v1/apps/{host}/groups/{group}` | | detaches a group and closes its preview listener (409 while it has traffic); `{"detached": "g", "was_attached": true}` |
//! | `POST /v1/apps/{host}/pause`, `POST /v1/apps/{host}/resume` | | holds or releases the app's requests |
//! | `PUT /v1/default` | `{"host": "..."}` | sets the default app |
//! | `GET /v1/health` | | `{"status": "ok", "held": n}` |
//! | `GET /metrics` | | the counters in the OpenMetrics text format, for Prometheus (families in the crate's README, "Metrics") |
//!
//! Path segments are percent-decoded. Every input is checked the same way on
//! every route: a host is a DNS name; a group id has 1 to 128 ASCII letters,
//! digits and `-._~:+` (in a path, a route table or a `groups` map); a backend
//! address is `host:port` with no user info; an instance id is printable ASCII.
//!
//! Every request needs `Authorization: Bearer <token>` (401 otherwise). Errors are
//! `{"error": "...", "kind": "...", "field": "..."}` with 400 (bad input, naming the
//! field), 404, 409 or 500.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bluegreen_core::{Error, ErrorKind, GroupId, RouteTable};
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, UnixListener};

use crate::backend::BackendSpec;
use crate::state::{normalize_host, AppReport, GroupReport, Proxy};

/// The admin API's bearer token. Its `Debug` output never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl AdminToken {
    /// A token, or [`Error::Invalid`] when empty or not printable ASCII.
    pub fn new(token: impl Into<String>) -> Result<Self, Error> {
        let token = token.into().trim().to_owned();
        if token.len() < 8 {
            return Err(Error::invalid(
                "admin token",
                "must be at least 8 characters long",
            ));
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::invalid(
                "admin token",
                "must be printable ASCII without spaces",
            ));
        }
        Ok(AdminToken(token))
    }

    /// A random token of 32 hex digits (128 bits from the operating system's
    /// CSPRNG).
    ///
    /// # Panics
    /// When the operating system gives no random bytes (no usable entropy source),
    /// rather than hand out a guessable token.
    pub fn random() -> Self {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).expect("the operating system's random source");
        AdminToken(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The token itself, to hand to a client.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether an `Authorization` header value carries this token (compared in
    /// constant time).
    fn accepts(&self, authorization: Option<&[u8]>) -> bool {
        let Some(value) = authorization else {
            return false;
        };
        let Some(given) = value.strip_prefix(b"Bearer ") else {
            return false;
        };
        use subtle::ConstantTimeEq;
        // lengths are not secret (every random token has 32 digits); contents are
        given.ct_eq(self.0.as_bytes()).into()
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// Where the admin API listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminAddr {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A unix socket path (`unix:/run/bluegreen-proxy.sock`).
    Unix(PathBuf),
}

impl std::str::FromStr for AdminAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            return Ok(AdminAddr::Unix(PathBuf::from(path)));
        }
        s.parse::<SocketAddr>()
            .map(AdminAddr::Tcp)
            .map_err(|_| format!("`{s}` is neither ip:port nor unix:/path"))
    }
}

/// A bound admin listener.
#[derive(Debug)]
pub enum AdminListener {
    /// On TCP.
    Tcp(TcpListener),
    /// On a unix socket.
    Unix(UnixListener),
}

impl AdminListener {
    /// Binds `addr`. A TCP address beyond loopback is refused unless
    /// `allow_non_loopback`: the admin API changes where traffic goes.
    pub async fn bind(addr: &AdminAddr, allow_non_loopback: bool) -> io::Result<Self> {
        match addr {
            AdminAddr::Tcp(a) => {
                if !a.ip().is_loopback() && !allow_non_loopback {
                    return Err(io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        format!(
                            "refusing to bind the admin API to {a}, which is not a loopback \
                             address; allow it explicitly (--admin-allow-remote)"
                        ),
                    ));
                }
                Ok(AdminListener::Tcp(TcpListener::bind(a).await?))
            }
            AdminAddr::Unix(path) => {
                if path.exists() {
                    std::fs::remove_file(path)?;
                }
                Ok(AdminListener::Unix(UnixListener::bind(path)?))
            }
        }
    }

    /// The TCP address it is bound to, if on TCP.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            AdminListener::Tcp(l) => l.local_addr().ok(),
            AdminListener::Unix(_) => None,
        }
    }
}

/// The default admin address: loopback only.
pub const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:8081";

#[derive(Serialize)]
struct ErrorBody {
    error: String,
    kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
}

/// An error of the admin API, as the client reads it back.
#[derive(Deserialize)]
pub(crate) struct ErrorReply {
    pub(crate) error: String,
    #[serde(default)]
    pub(crate) field: Option<String>,
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

fn error_response(error: &Error) -> Response<Full<Bytes>> {
    let (status, field, message) = match error {
        Error::Invalid { field, reason } => (
            StatusCode::BAD_REQUEST,
            Some(field.clone()),
            format!("invalid {field}: {reason}"),
        ),
        other => {
            let status = match other.kind() {
                ErrorKind::NotFound => StatusCode::NOT_FOUND,
                ErrorKind::Conflict => StatusCode::CONFLICT,
                ErrorKind::PermissionDenied => StatusCode::UNAUTHORIZED,
                ErrorKind::NotSupported => StatusCode::METHOD_NOT_ALLOWED,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            (status, None, other.to_string())
        }
    };
    json(
        status,
        &ErrorBody {
            error: message,
            kind: format!("{:?}", error.kind()).to_lowercase(),
            field,
        },
    )
}

const MAX_BODY: usize = 1 << 20;

async fn read_json<T: DeserializeOwned>(body: Incoming) -> Result<T, Error> {
    let bytes = Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map_err(|e| Error::invalid("body", format!("could not be read: {e}")))?
        .to_bytes();
    if bytes.is_empty() {
        return Err(Error::invalid(
            "body",
            "is empty; a JSON object is expected",
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(&bytes);
    let mut track = serde_path_to_error::Track::new();
    let value = T::deserialize(serde_path_to_error::Deserializer::new(de, &mut track));
    value.map_err(|e| {
        let path = track.path().to_string();
        let field = if path == "." || path == "?" || path.is_empty() {
            "body".to_owned()
        } else {
            path
        };
        let message = if e.is_syntax() || e.is_eof() {
            format!("is not valid JSON: {e}")
        } else {
            e.to_string()
        };
        // a route table names its own field: "invalid routes: weights sum to 120, ..."
        let reason = message
            .strip_prefix(&format!("invalid {field}: "))
            .map(|s| s.to_owned())
            .unwrap_or(message);
        Error::invalid(field, reason)
    })
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RoutesBody {
    pub(crate) routes: RouteTable,
}

/// Several apps' tables, by host: the body of `PUT /v1/routes`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ManyRoutesBody {
    pub(crate) apps: BTreeMap<String, RouteTable>,
}

/// What `PUT /v1/routes` answers.
#[derive(Serialize, Deserialize)]
pub(crate) struct ManyRoutesReply {
    pub(crate) route_generation: u64,
    pub(crate) apps: Vec<AppReport>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AppBody {
    pub(crate) routes: RouteTable,
    #[serde(default)]
    pub(crate) groups: BTreeMap<GroupId, Vec<BackendSpec>>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AttachBody {
    pub(crate) backends: Vec<BackendSpec>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DefaultBody {
    host: String,
}

fn app_report(proxy: &Proxy, host: &str) -> Result<AppReport, Error> {
    proxy
        .report(host)?
        .ok_or_else(|| Error::not_found(format!("app {host}")))
}

fn group_report(proxy: &Proxy, host: &str, group: &str) -> Result<GroupReport, Error> {
    app_report(proxy, host)?
        .groups
        .into_iter()
        .find(|g| g.id.as_str() == group)
        .ok_or_else(|| Error::not_found(format!("group {group}")))
}

fn check_group_id(group: &str) -> Result<GroupId, Error> {
    let group = GroupId::from(group);
    crate::state::check_group_id(&group, "group")?;
    Ok(group)
}

/// A path segment, percent-decoded, or [`Error::Invalid`] naming `field`.
fn decode_segment(segment: &str) -> Result<String, Error> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    Error::invalid("path", format!("`{segment}` has a bad percent escape"))
                })?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map_err(|_| Error::invalid("path", format!("`{segment}` is not UTF-8 once decoded")))
}

async fn route(proxy: &Proxy, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Error> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    let decoded: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .map(decode_segment)
        .collect::<Result<_, _>>()?;
    let segments: Vec<&str> = decoded.iter().map(String::as_str).collect();
    let method = parts.method;
    let ok = StatusCode::OK;
    match (method.clone(), segments.as_slice()) {
        (Method::GET, ["metrics"]) => {
            let mut response = Response::new(Full::new(Bytes::from(crate::metrics::render(proxy))));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
            );
            Ok(response)
        }
        (Method::GET, ["v1", "health"]) => Ok(json(
            ok,
            &serde_json::json!({"status": "ok", "held": proxy.held()}),
        )),
        (Method::GET, ["v1", "apps"]) => Ok(json(ok, &proxy.reports())),
        (Method::GET, ["v1", "routes"]) => {
            let apps: BTreeMap<String, RouteTable> = proxy
                .reports()
                .into_iter()
                .map(|r| (r.host, r.routes))
                .collect();
            Ok(json(
                ok,
                &serde_json::json!({"route_generation": proxy.route_generation(), "apps": apps}),
            ))
        }
        (Method::PUT, ["v1", "routes"]) => {
            let body: ManyRoutesBody = read_json(body).await?;
            let tables: Vec<(String, RouteTable)> = body.apps.into_iter().collect();
            let route_generation = proxy.set_routes_many(&tables)?;
            let apps = tables
                .iter()
                .map(|(host, _)| app_report(proxy, host))
                .collect::<Result<_, _>>()?;
            Ok(json(
                ok,
                &ManyRoutesReply {
                    route_generation,
                    apps,
                },
            ))
        }
        (Method::PUT, ["v1", "default"]) => {
            let body: DefaultBody = read_json(body).await?;
            proxy.set_default_app(&body.host)?;
            Ok(json(ok, &app_report(proxy, &body.host)?))
        }
        (Method::GET, ["v1", "apps", host]) => Ok(json(ok, &app_report(proxy, host)?)),
        (Method::PUT, ["v1", "apps", host]) => {
            normalize_host(host)?;
            let body: AppBody = read_json(body).await?;
            proxy.apply(host, &body.routes, &body.groups).await?;
            Ok(json(ok, &app_report(proxy, host)?))
        }
        (Method::GET, ["v1", "apps", host, "routes"]) => Ok(json(
            ok,
            &RoutesBody {
                routes: proxy.routes(host)?,
            },
        )),
        (Method::PUT, ["v1", "apps", host, "routes"]) => {
            normalize_host(host)?;
            let body: RoutesBody = read_json(body).await?;
            proxy.set_routes(host, &body.routes)?;
            Ok(json(ok, &app_report(proxy, host)?))
        }
        (Method::POST, ["v1", "apps", host, "pause"]) => {
            proxy.pause(host)?;
            Ok(json(ok, &app_report(proxy, host)?))
        }
        (Method::POST, ["v1", "apps", host, "resume"]) => {
            proxy.resume(host)?;
            Ok(json(ok, &app_report(proxy, host)?))
        }
        (Method::GET, ["v1", "apps", host, "groups", group]) => {
            check_group_id(group)?;
            Ok(json(ok, &group_report(proxy, host, group)?))
        }
        (Method::PUT, ["v1", "apps", host, "groups", group]) => {
            normalize_host(host)?;
            let group = check_group_id(group)?;
            let body: AttachBody = read_json(body).await?;
            proxy.attach(host, &group, &body.backends).await?;
            Ok(json(ok, &group_report(proxy, host, group.as_str())?))
        }
        (Method::DELETE, ["v1", "apps", host, "groups", group]) => {
            let group = check_group_id(group)?;
            let attached = proxy.detach_group(host, &group)?;
            Ok(json(
                ok,
                &serde_json::json!({"detached": group, "was_attached": attached}),
            ))
        }
        _ => Err(Error::not_found(format!("admin route {method} {path}"))),
    }
}

async fn handle(
    proxy: Proxy,
    token: AdminToken,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    if !token.accepts(authorization) {
        let mut response = error_response(&Error::PermissionDenied {
            message: "a valid `Authorization: Bearer <token>` header is required".into(),
        });
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return Ok(response);
    }
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let response = match route(&proxy, req).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    };
    tracing::debug!(%method, %path, status = response.status().as_u16(), "admin request");
    Ok(response)
}

/// Serves the admin API on `listener` until `shutdown` completes.
pub async fn serve(
    proxy: Proxy,
    listener: AdminListener,
    token: AdminToken,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let io: Box<dyn IoStream> = tokio::select! {
            accepted = accept(&listener) => match accepted {
                Ok(io) => io,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let proxy = proxy.clone();
        let token = token.clone();
        let service = service_fn(move |req| handle(proxy.clone(), token.clone(), req));
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(10))
            .serve_connection(TokioIo::new(io), service);
        let watched = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = watched.await {
                tracing::debug!(error = %e, "admin connection ended");
            }
        });
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
    Ok(())
}

trait IoStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static> IoStream for T {}

async fn accept(listener: &AdminListener) -> io::Result<Box<dyn IoStream>> {
    match listener {
        AdminListener::Tcp(l) => {
            let (s, _) = l.accept().await?;
            let _ = s.set_nodelay(true);
            Ok(Box::new(s))
        }
        AdminListener::Unix(l) => {
            let (s, _) = l.accept().await?;
            Ok(Box::new(s))
        }
    }
}

#[cfg(test)]
mod token_tests {
    use super::AdminToken;

    #[test]
    fn random_tokens_are_32_hex_digits_and_differ() {
        let a = AdminToken::random();
        let b = AdminToken::random();
        assert_eq!(a.expose().len(), 32);
        assert!(a.expose().bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a.expose(), b.expose());
    }

    #[test]
    fn only_the_exact_bearer_token_is_accepted() {
        let t = AdminToken::new("s3cret-token").unwrap();
        assert!(t.accepts(Some(b"Bearer s3cret-token")));
        for wrong in [
            &b"Bearer s3cret-tokeN"[..],
            b"Bearer s3cret-toke",
            b"Bearer s3cret-token2",
            b"bearer s3cret-token",
            b"s3cret-token",
            b"",
        ] {
            assert!(
                !t.accepts(Some(wrong)),
                "{}",
                String::from_utf8_lossy(wrong)
            );
        }
        assert!(!t.accepts(None));
    }
}
