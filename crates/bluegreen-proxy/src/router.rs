//! [`ProxyRouter`]: the [`Router`] that drives a proxy, in process or through its
//! admin API.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bluegreen_core::{
    App, Attachment, Error, GroupId, Instance, Result, RouteTable, Router, RouterCapabilities,
    Serving,
};
use bytes::Bytes;
use http::{header, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::admin::{
    AdminToken, AttachBody, ErrorReply, ManyRoutesBody, ManyRoutesReply, RoutesBody,
};
use crate::backend::BackendSpec;
use crate::state::{GroupReport, Proxy};

type HostFn = Arc<dyn Fn(&App) -> String + Send + Sync>;

/// A [`Router`] over a bluegreen proxy.
///
/// - [`ProxyRouter::embedded`] changes a [`Proxy`] of this process directly;
/// - [`ProxyRouter::remote`] talks to a proxy's [admin API](crate::admin), over
///   TCP (`http://127.0.0.1:8081`) or a unix socket (`unix:/run/proxy.sock`).
///
/// An [`App`] is served on the host name `<name>.<environment>` (`web.production`)
/// unless [`ProxyRouter::with_host_fn`] says otherwise. The first app a proxy
/// learns of also gets requests for unknown hosts, unless the proxy was given a
/// default ([`ProxyOptions::default_host`](crate::ProxyOptions::default_host),
/// `--default-app`).
///
/// [`RouterCapabilities`]: weighted routing, holding requests, previews, and
/// switching several apps at once ([`Router::set_routes_many`], one atomic change of
/// the proxy; with [route generations](crate::pin), a user request crossing those
/// apps through the proxy sees one version of each). Each attached
/// group gets a preview address (`http://127.0.0.1:<port>/`, see
/// [`Proxy::preview_address`]) that serves it alone before it has traffic; the
/// `X-Bluegreen-Preview: <group>` request header does the same on the proxy's own
/// address for clients of
/// [`ProxyOptions::preview_header_from`](crate::ProxyOptions::preview_header_from).
/// A remote proxy started with `--preview-bind off` gives no preview
/// address.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), bluegreen_core::Error> {
/// use bluegreen_core::{App, GroupId, Router};
/// use bluegreen_proxy::{Proxy, ProxyOptions, ProxyRouter};
///
/// let router = ProxyRouter::embedded(Proxy::new(ProxyOptions::default()));
/// let app = App::new("web", "production")?;
/// assert!(router.capabilities().weighted_routing);
/// assert!(router.capabilities().preview);
/// assert!(router.routes(&app).await?.is_empty());
/// assert_eq!(router.host_of(&app), "web.production");
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ProxyRouter {
    mode: Mode,
    host_of: HostFn,
    /// Set for the router of an [`EmbeddedProxy`](crate::EmbeddedProxy): calls fail
    /// once it has stopped.
    stopped: Option<Arc<crate::embedded::StopFlag>>,
}

#[derive(Clone)]
enum Mode {
    Embedded(Proxy),
    Remote(Arc<RemoteAdmin>),
}

struct RemoteAdmin {
    endpoint: Endpoint,
    token: AdminToken,
}

/// Where a remote admin API listens.
#[derive(Debug)]
enum Endpoint {
    /// `host:port` of an http:// URL, and the path prefix before `/v1`.
    Tcp { authority: String, prefix: String },
    /// A unix socket.
    Unix(PathBuf),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Tcp { authority, prefix } => write!(f, "http://{authority}{prefix}"),
            Endpoint::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl std::fmt::Debug for ProxyRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.mode {
            Mode::Embedded(p) => f.debug_tuple("ProxyRouter::Embedded").field(p).finish(),
            Mode::Remote(r) => f
                .debug_struct("ProxyRouter::Remote")
                .field("admin", &r.endpoint.to_string())
                .field("token", &r.token)
                .finish(),
        }
    }
}

/// `<name>.<environment>`.
pub fn default_host(app: &App) -> String {
    format!("{}.{}", app.name(), app.environment())
}

impl ProxyRouter {
    /// Drives `proxy` in this process.
    pub fn embedded(proxy: Proxy) -> Self {
        ProxyRouter {
            mode: Mode::Embedded(proxy),
            host_of: Arc::new(default_host),
            stopped: None,
        }
    }

    /// This router, failing once `flag` says its embedded proxy stopped.
    pub(crate) fn stopping_with(mut self, flag: Arc<crate::embedded::StopFlag>) -> Self {
        self.stopped = Some(flag);
        self
    }

    fn ensure_serving(&self) -> Result<()> {
        match &self.stopped {
            Some(flag) => flag.ensure(),
            None => Ok(()),
        }
    }

    /// Drives the proxy whose admin API is at `admin_url`: `http://127.0.0.1:8081`
    /// or `unix:/run/bluegreen-proxy.sock`. Each call opens its own connection,
    /// so a restarted proxy is reached again at once.
    pub fn remote(admin_url: &str, token: AdminToken) -> Result<Self> {
        let endpoint = match admin_url.strip_prefix("unix:") {
            Some(path) if !path.is_empty() => Endpoint::Unix(PathBuf::from(path)),
            Some(_) => {
                return Err(Error::invalid(
                    "admin_url",
                    "`unix:` needs a socket path, as in unix:/run/bluegreen-proxy.sock",
                ))
            }
            None => {
                let uri: Uri = admin_url.parse().map_err(|_| {
                    Error::invalid("admin_url", format!("`{admin_url}` is not a URL"))
                })?;
                match (uri.scheme_str(), uri.authority()) {
                    (Some("http"), Some(authority)) if authority.port_u16().is_some() => {
                        Endpoint::Tcp {
                            authority: authority.as_str().to_owned(),
                            prefix: uri.path().trim_end_matches('/').to_owned(),
                        }
                    }
                    _ => {
                        return Err(Error::invalid(
                            "admin_url",
                            format!(
                                "`{admin_url}` is neither an http://host:port URL nor unix:/path"
                            ),
                        ))
                    }
                }
            }
        };
        Ok(ProxyRouter {
            mode: Mode::Remote(Arc::new(RemoteAdmin { endpoint, token })),
            host_of: Arc::new(default_host),
            stopped: None,
        })
    }

    /// Maps apps to host names with `f` instead of `<name>.<environment>`.
    pub fn with_host_fn(mut self, f: impl Fn(&App) -> String + Send + Sync + 'static) -> Self {
        self.host_of = Arc::new(f);
        self
    }

    /// The host name that serves `app`.
    pub fn host_of(&self, app: &App) -> String {
        (self.host_of)(app)
    }
}

fn backends(instances: &[Instance]) -> Result<Vec<BackendSpec>> {
    instances
        .iter()
        .enumerate()
        .map(|(i, instance)| {
            let address = instance.address.as_deref().ok_or_else(|| {
                Error::invalid(
                    format!("instances[{i}].address"),
                    format!("instance {} has no address yet", instance.id),
                )
            })?;
            let spec = BackendSpec::new(address).with_instance(instance.id.as_str());
            spec.authority(&format!("instances[{i}].address"))?;
            Ok(spec)
        })
        .collect()
}

fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// One HTTP/1.1 request and its whole response on `io`.
async fn exchange<I>(io: I, request: Request<Full<Bytes>>) -> Result<http::Response<Bytes>>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let failed = |e: hyper::Error| Error::provider_source("proxy", true, e);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(failed)?;
    let driving = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "admin connection ended");
        }
    });
    let response = sender.send_request(request).await.map_err(failed)?;
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.map_err(failed)?.to_bytes();
    drop(sender);
    let _ = driving.await;
    Ok(http::Response::from_parts(parts, bytes))
}

/// How long one admin call may take, connection included.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(60);

impl RemoteAdmin {
    /// Sends one request on a connection of its own.
    async fn send(&self, request: Request<Full<Bytes>>) -> Result<http::Response<Bytes>> {
        let unreachable = |e: std::io::Error| {
            Error::provider_source(
                "proxy",
                true,
                format!("admin API at {}: {e}", self.endpoint),
            )
        };
        let response = match &self.endpoint {
            Endpoint::Tcp { authority, .. } => {
                let stream = tokio::net::TcpStream::connect(authority.as_str())
                    .await
                    .map_err(unreachable)?;
                let _ = stream.set_nodelay(true);
                exchange(TokioIo::new(stream), request).await?
            }
            Endpoint::Unix(path) => {
                let stream = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(unreachable)?;
                exchange(TokioIo::new(stream), request).await?
            }
        };
        Ok(response)
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T> {
        let body = match body {
            Some(b) => Bytes::from(
                serde_json::to_vec(b).map_err(|e| Error::provider_source("proxy", false, e))?,
            ),
            None => Bytes::new(),
        };
        let (host, uri) = match &self.endpoint {
            Endpoint::Tcp { authority, prefix } => (authority.as_str(), format!("{prefix}{path}")),
            Endpoint::Unix(_) => ("localhost", path.to_owned()),
        };
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::HOST, host)
            .header(
                header::AUTHORIZATION,
                format!("Bearer {}", self.token.expose()),
            )
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|e| Error::provider_source("proxy", false, e))?;
        let response = tokio::time::timeout(ADMIN_TIMEOUT, self.send(request))
            .await
            .map_err(|_| {
                Error::provider(
                    "proxy",
                    format!(
                        "the admin API at {} did not answer in {} s",
                        self.endpoint,
                        ADMIN_TIMEOUT.as_secs()
                    ),
                    true,
                )
            })??;
        let status = response.status();
        let bytes = response.into_body();
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| {
                Error::provider("proxy", format!("unreadable admin reply: {e}"), false)
            });
        }
        let reply: Option<ErrorReply> = serde_json::from_slice(&bytes).ok();
        let message = reply
            .as_ref()
            .map(|r| r.error.clone())
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
        Err(match status {
            StatusCode::BAD_REQUEST => {
                let field = reply
                    .as_ref()
                    .and_then(|r| r.field.clone())
                    .unwrap_or_else(|| "request".into());
                let reason = message
                    .strip_prefix(&format!("invalid {field}: "))
                    .unwrap_or(&message)
                    .to_owned();
                Error::invalid(field, reason)
            }
            StatusCode::NOT_FOUND => Error::not_found(
                message
                    .strip_suffix(" not found")
                    .unwrap_or(&message)
                    .to_owned(),
            ),
            StatusCode::CONFLICT => Error::conflict(
                message
                    .strip_prefix("conflict: ")
                    .unwrap_or(&message)
                    .to_owned(),
            ),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Error::PermissionDenied {
                message: "the admin API refused the token".into(),
            },
            s => Error::provider(
                "proxy",
                format!("admin API answered {s}: {message}"),
                s.is_server_error(),
            ),
        })
    }
}

#[async_trait]
impl Router for ProxyRouter {
    fn capabilities(&self) -> RouterCapabilities {
        let preview = match &self.mode {
            Mode::Embedded(proxy) => proxy.options().preview_bind.is_some(),
            Mode::Remote(_) => true,
        };
        RouterCapabilities::default()
            .with_weighted_routing(true)
            .with_holds_requests(true)
            .with_preview(preview)
            .with_multi_app_switch(true)
    }

    async fn attach(
        &self,
        app: &App,
        group: &GroupId,
        instances: &[Instance],
    ) -> Result<Attachment> {
        self.ensure_serving()?;
        let specs = backends(instances)?;
        let host = self.host_of(app);
        let preview = match &self.mode {
            Mode::Embedded(proxy) => {
                proxy.attach(&host, group, &specs).await?;
                proxy.preview_address(&host, group)
            }
            Mode::Remote(admin) => {
                let report: GroupReport = admin
                    .call(
                        Method::PUT,
                        &format!(
                            "/v1/apps/{}/groups/{}",
                            segment(&host),
                            segment(group.as_str())
                        ),
                        Some(&AttachBody { backends: specs }),
                    )
                    .await?;
                report.preview
            }
        };
        Ok(match preview {
            Some(address) => Attachment::with_preview(format!("http://{address}/")),
            None => Attachment::default(),
        })
    }

    async fn detach(&self, app: &App, group: &GroupId) -> Result<()> {
        self.ensure_serving()?;
        let host = self.host_of(app);
        match &self.mode {
            Mode::Embedded(proxy) => proxy.detach(&host, group),
            Mode::Remote(admin) => {
                let _: serde_json::Value = admin
                    .call(
                        Method::DELETE,
                        &format!(
                            "/v1/apps/{}/groups/{}",
                            segment(&host),
                            segment(group.as_str())
                        ),
                        None::<&()>,
                    )
                    .await?;
                Ok(())
            }
        }
    }

    async fn routes(&self, app: &App) -> Result<RouteTable> {
        self.ensure_serving()?;
        let host = self.host_of(app);
        match &self.mode {
            Mode::Embedded(proxy) => proxy.routes(&host),
            Mode::Remote(admin) => {
                let body: RoutesBody = admin
                    .call(
                        Method::GET,
                        &format!("/v1/apps/{}/routes", segment(&host)),
                        None::<&()>,
                    )
                    .await?;
                Ok(body.routes)
            }
        }
    }

    async fn set_routes(&self, app: &App, table: &RouteTable) -> Result<()> {
        self.ensure_serving()?;
        let host = self.host_of(app);
        match &self.mode {
            Mode::Embedded(proxy) => proxy.set_routes(&host, table),
            Mode::Remote(admin) => {
                let _: serde_json::Value = admin
                    .call(
                        Method::PUT,
                        &format!("/v1/apps/{}/routes", segment(&host)),
                        Some(&RoutesBody {
                            routes: table.clone(),
                        }),
                    )
                    .await?;
                Ok(())
            }
        }
    }

    /// One atomic change of every app's table ([`Proxy::set_routes_many`], `PUT
    /// /v1/routes` on a remote proxy): nothing changes when any table is refused.
    /// An app named twice (or two apps served on one host) is [`Error::Invalid`]
    /// naming `tables[i]`, before the proxy is asked.
    async fn set_routes_many(&self, tables: &[(App, RouteTable)]) -> Result<()> {
        self.ensure_serving()?;
        let mut by_host: Vec<(String, RouteTable)> = Vec::with_capacity(tables.len());
        for (i, (app, table)) in tables.iter().enumerate() {
            let host = self.host_of(app);
            if let Some(j) = by_host.iter().position(|(h, _)| *h == host) {
                let why = if tables[j].0 == *app {
                    format!("{app} is named twice")
                } else {
                    format!("{app} is served on host {host}, as {} is", tables[j].0)
                };
                return Err(Error::invalid(format!("tables[{i}]"), why));
            }
            by_host.push((host, table.clone()));
        }
        match &self.mode {
            Mode::Embedded(proxy) => proxy.set_routes_many(&by_host).map(|_| ()),
            Mode::Remote(admin) => {
                let _: ManyRoutesReply = admin
                    .call(
                        Method::PUT,
                        "/v1/routes",
                        Some(&ManyRoutesBody {
                            apps: by_host.into_iter().collect(),
                        }),
                    )
                    .await?;
                Ok(())
            }
        }
    }

    async fn serving(&self, app: &App, group: &GroupId) -> Result<Serving> {
        self.ensure_serving()?;
        let host = self.host_of(app);
        match &self.mode {
            Mode::Embedded(proxy) => proxy.serving(&host, group),
            Mode::Remote(admin) => {
                let report: GroupReport = admin
                    .call(
                        Method::GET,
                        &format!(
                            "/v1/apps/{}/groups/{}",
                            segment(&host),
                            segment(group.as_str())
                        ),
                        None::<&()>,
                    )
                    .await
                    .map_err(|e| match e {
                        Error::NotFound { .. } => Error::not_found(format!("group {group}")),
                        other => other,
                    })?;
                Ok(report.serving())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bluegreen_testkit::names::{assert_distinct, near_collisions};

    #[test]
    fn every_app_has_a_host_of_its_own() {
        let apps = near_collisions();
        assert_distinct("host", &apps, default_host);
        for app in &apps {
            let host = default_host(app);
            assert_eq!(normalize(&host), host);
            // `name.environment` names one app: it parses back to it
            assert_eq!(host.parse::<App>().unwrap(), *app);
        }
    }

    fn normalize(host: &str) -> String {
        crate::state::normalize_host(host).unwrap()
    }
}
