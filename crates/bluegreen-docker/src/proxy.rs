//! [`DockerProxy`]: the bluegreen proxy in front of a Docker fleet.

use std::net::SocketAddr;

use bluegreen_core::{Error, Result};
use bluegreen_proxy::{Proxy, ProxyOptions, ProxyRouter};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::error::PROVIDER;

/// The bluegreen proxy that routes to a [`DockerFleet`](crate::DockerFleet)'s
/// published ports, running inside this program, and its [`ProxyRouter`].
///
/// A proxy that must outlive the deploying program runs as its own
/// `bluegreen-proxy` process (or as a service) and is driven with
/// [`ProxyRouter::remote`]; the fleet's addresses (`127.0.0.1:<port>` by default)
/// reach the containers from any process on the host.
pub struct DockerProxy {
    router: ProxyRouter,
    address: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
}

impl DockerProxy {
    /// Starts a proxy in this program, serving on `listen` (port 0 picks one). It
    /// stops at [`DockerProxy::stop`], on drop, or when the program ends.
    pub async fn embedded(listen: SocketAddr, options: ProxyOptions) -> Result<DockerProxy> {
        let listener = TcpListener::bind(listen).await.map_err(|e| {
            Error::provider_source(PROVIDER, false, format!("proxy on {listen}: {e}"))
        })?;
        let address = listener
            .local_addr()
            .map_err(|e| Error::provider_source(PROVIDER, false, e))?;
        let proxy = Proxy::new(options);
        let (tx, rx) = oneshot::channel();
        let serving = proxy.clone();
        tokio::spawn(async move {
            if let Err(e) = serving
                .serve(listener, None, async {
                    let _ = rx.await;
                })
                .await
            {
                tracing::error!(error = %e, "the embedded proxy stopped");
            }
        });
        Ok(DockerProxy {
            router: ProxyRouter::embedded(proxy),
            address,
            stop: Some(tx),
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
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

impl Drop for DockerProxy {
    fn drop(&mut self) {
        self.stop();
    }
}

impl std::fmt::Debug for DockerProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerProxy")
            .field("address", &self.address)
            .finish()
    }
}
