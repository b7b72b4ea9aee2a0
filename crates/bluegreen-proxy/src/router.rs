//! [`ProxyRouter`]: the [`Router`] that drives a proxy, in process or through its
//! admin API.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bluegreen_core::{
    App, Attachment, Capabilities, Error, GroupId, Instance, Result, RouteTable, Router, Serving,
};
use bytes::Bytes;
use http::{header, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::admin::{AdminToken, AttachBody, ErrorReply, RoutesBody};
use crate::backend::BackendSpec;
use crate::state::{GroupReport, Proxy};

type HostFn = Arc<dyn Fn(&App) -> String + Send + Sync>;

/// A [`Router`] over a bluegreen proxy.
///
/// - [`ProxyRouter::embedded`] changes a [`Proxy`] of this process directly;
/// - [`ProxyRouter::remote`] talks to a proxy's [admin API](crate::admin).
///
/// An [`App`] is served on the host name `<name>.<environment>` (`web.production`)
/// unless [`ProxyRouter::with_host_fn`] says otherwise. The first app a proxy
/// learns of also gets requests for unknown hosts, unless the proxy was given a
/// default ([`ProxyOptions::default_host`](crate::ProxyOptions::default_host),
/// `--default-app`).
///
/// Capabilities: weighted routing and holding requests. Groups are previewed with
/// the `X-Bluegreen-Preview: <group>` request header on the proxy's own address; no
/// separate preview address is given.
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
/// assert!(router.routes(&app).await?.is_empty());
/// assert_eq!(router.host_of(&app), "web.production");
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ProxyRouter {
    mode: Mode,
    host_of: HostFn,
}

#[derive(Clone)]
enum Mode {
    Embedded(Proxy),
    Remote(Arc<RemoteAdmin>),
}

struct RemoteAdmin {
    base: String,
    token: AdminToken,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl std::fmt::Debug for ProxyRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.mode {
            Mode::Embedded(p) => f.debug_tuple("ProxyRouter::Embedded").field(p).finish(),
            Mode::Remote(r) => f
                .debug_struct("ProxyRouter::Remote")
                .field("admin", &r.base)
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
        }
    }

    /// Drives the proxy whose admin API is at `admin_url` (`http://127.0.0.1:8081`).
    pub fn remote(admin_url: &str, token: AdminToken) -> Result<Self> {
        let uri: Uri = admin_url
            .parse()
            .map_err(|_| Error::invalid("admin_url", format!("`{admin_url}` is not a URL")))?;
        if uri.scheme_str() != Some("http") || uri.authority().is_none() {
            return Err(Error::invalid(
                "admin_url",
                format!("`{admin_url}` is not an http://host:port URL"),
            ));
        }
        let base = admin_url.trim_end_matches('/').to_owned();
        let client = Client::builder(TokioExecutor::new()).build_http();
        Ok(ProxyRouter {
            mode: Mode::Remote(Arc::new(RemoteAdmin {
                base,
                token,
                client,
            })),
            host_of: Arc::new(default_host),
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

impl RemoteAdmin {
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
        let request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(
                header::AUTHORIZATION,
                format!("Bearer {}", self.token.expose()),
            )
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|e| Error::provider_source("proxy", false, e))?;
        let response = tokio::time::timeout(Duration::from_secs(60), self.client.request(request))
            .await
            .map_err(|_| Error::provider("proxy", "the admin API did not answer in 60 s", true))?
            .map_err(|e| Error::provider_source("proxy", true, e))?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| Error::provider_source("proxy", true, e))?
            .to_bytes();
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
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
            .with_weighted_routing(true)
            .with_holds_requests(true)
    }

    async fn attach(
        &self,
        app: &App,
        group: &GroupId,
        instances: &[Instance],
    ) -> Result<Attachment> {
        let specs = backends(instances)?;
        let host = self.host_of(app);
        match &self.mode {
            Mode::Embedded(proxy) => proxy.attach(&host, group, &specs).await?,
            Mode::Remote(admin) => {
                let _: GroupReport = admin
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
            }
        }
        Ok(Attachment::default())
    }

    async fn detach(&self, app: &App, group: &GroupId) -> Result<()> {
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

    async fn serving(&self, app: &App, group: &GroupId) -> Result<Serving> {
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
