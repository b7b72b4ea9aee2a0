//! [`EmbeddedProxy`]: a proxy serving inside this program, with the router that
//! drives it.

use std::net::SocketAddr;

use bluegreen_core::{Error, Result};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::{Proxy, ProxyOptions, ProxyRouter};

/// A proxy serving on a loopback (or any) address inside this program. It stops at
/// [`EmbeddedProxy::stop`], when dropped, or when the program ends; requests in
/// flight finish. Keep the value alive as long as its router is used: once it has
/// stopped, every call of its [`ProxyRouter`] fails with an error that says so
/// (never a deployment that succeeds while nothing serves).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), bluegreen_core::Error> {
/// use bluegreen_core::{App, Router};
/// use bluegreen_proxy::{EmbeddedProxy, ProxyOptions};
/// let proxy = EmbeddedProxy::start("127.0.0.1:0".parse().unwrap(), ProxyOptions::default()).await?;
/// assert!(proxy.address().ip().is_loopback());
/// let app = App::new("web", "production")?;
/// assert!(proxy.router().routes(&app).await?.is_empty());
/// # Ok(()) }
/// ```
pub struct EmbeddedProxy {
    router: ProxyRouter,
    address: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    stopped: std::sync::Arc<StopFlag>,
}

/// Whether an embedded proxy has stopped, shared with its routers.
#[derive(Debug)]
pub(crate) struct StopFlag {
    stopped: std::sync::atomic::AtomicBool,
    address: SocketAddr,
}

impl StopFlag {
    /// [`Error::NotSupported`]-free check: a provider error, not retryable, once the
    /// proxy has stopped.
    pub(crate) fn ensure(&self) -> Result<()> {
        if self.stopped.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Error::provider(
                "proxy",
                format!(
                    "the embedded proxy on {} has stopped (its EmbeddedProxy was stopped or \
                     dropped): keep it alive while its router is used",
                    self.address
                ),
                false,
            ));
        }
        Ok(())
    }
}

impl EmbeddedProxy {
    /// Binds `listen` (port 0 picks one) and serves there.
    pub async fn start(listen: SocketAddr, options: ProxyOptions) -> Result<EmbeddedProxy> {
        let listener = TcpListener::bind(listen).await.map_err(|e| {
            Error::provider_source("proxy", false, format!("listening on {listen}: {e}"))
        })?;
        let address = listener
            .local_addr()
            .map_err(|e| Error::provider_source("proxy", false, e))?;
        let proxy = Proxy::new(options);
        let (tx, rx) = oneshot::channel();
        let serving = proxy.clone();
        tokio::spawn(async move {
            let stopped = async {
                let _ = rx.await;
            };
            if let Err(e) = serving.serve(listener, None, stopped).await {
                tracing::error!(error = %e, "the embedded proxy stopped");
            }
        });
        let stopped = std::sync::Arc::new(StopFlag {
            stopped: std::sync::atomic::AtomicBool::new(false),
            address,
        });
        Ok(EmbeddedProxy {
            router: ProxyRouter::embedded(proxy).stopping_with(stopped.clone()),
            address,
            stop: Some(tx),
            stopped,
        })
    }

    /// The router that drives this proxy.
    pub fn router(&self) -> ProxyRouter {
        self.router.clone()
    }

    /// Where clients reach the proxy.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Stops accepting connections; requests in flight finish.
    pub fn stop(&mut self) {
        self.stopped
            .stopped
            .store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

impl Drop for EmbeddedProxy {
    fn drop(&mut self) {
        self.stop();
    }
}

impl std::fmt::Debug for EmbeddedProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedProxy")
            .field("address", &self.address)
            .finish()
    }
}
