//! Preview listeners: every attached group gets a port of its own (on loopback by
//! default) that serves that group alone, with or without traffic, so that a check
//! or a person can try a new version before any user reaches it.
//!
//! A preview listener opens when its group is attached and closes when the group
//! is detached; its connections then finish their requests and close.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Weak};

use bluegreen_core::{Error, GroupId, Result};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::conn::AcceptErrors;
use crate::forward::ConnInfo;
use crate::server::{connection_builder, Client};
use crate::state::{Inner, Proxy};

/// The group a preview connection is pinned to.
#[derive(Debug)]
pub(crate) struct PreviewPin {
    pub(crate) host: String,
    pub(crate) group: GroupId,
}

/// One open preview listener; dropping it stops accepting.
struct PreviewListener {
    address: SocketAddr,
    accepting: JoinHandle<()>,
}

impl Drop for PreviewListener {
    fn drop(&mut self) {
        // the accept loop owns the graceful-shutdown handle of its connections:
        // aborting it lets them finish their requests and close
        self.accepting.abort();
    }
}

/// The open preview listeners, by app host and group.
#[derive(Default)]
pub(crate) struct Previews {
    open: std::sync::Mutex<HashMap<(String, GroupId), PreviewListener>>,
}

impl Previews {
    pub(crate) fn address(&self, host: &str, group: &GroupId) -> Option<SocketAddr> {
        self.open
            .lock()
            .expect("previews lock")
            .get(&(host.to_owned(), group.clone()))
            .map(|l| l.address)
    }
}

fn bind(ip: IpAddr) -> std::io::Result<TcpListener> {
    let listener = std::net::TcpListener::bind(SocketAddr::new(ip, 0))?;
    listener.set_nonblocking(true)?;
    TcpListener::from_std(listener)
}

impl Proxy {
    /// Opens the preview listener of `group` if the proxy gives previews and the
    /// group is still attached. Call inside a Tokio runtime.
    pub(crate) fn open_preview(&self, host: &str, group: &GroupId) -> Result<()> {
        let Some(ip) = self.inner.options.preview_bind else {
            return Ok(());
        };
        let mut open = self.inner.previews.open.lock().expect("previews lock");
        let key = (host.to_owned(), group.clone());
        if open.contains_key(&key) {
            return Ok(());
        }
        // a detach that ran since the attach wins: no listener for a gone group
        let attached = self
            .app_exact(host)
            .is_some_and(|app| app.snapshot.load().groups.contains_key(group));
        if !attached {
            return Ok(());
        }
        let listener = bind(ip).map_err(|e| {
            Error::provider_source(
                "proxy",
                true,
                format!("opening the preview listener of group {group} on {ip}: {e}"),
            )
        })?;
        let address = listener
            .local_addr()
            .map_err(|e| Error::provider_source("proxy", true, e))?;
        let pin = Arc::new(PreviewPin {
            host: host.to_owned(),
            group: group.clone(),
        });
        let accepting = tokio::spawn(accept(Arc::downgrade(&self.inner), listener, pin));
        tracing::info!(host, %group, preview = %address, "preview listener opened");
        open.insert(key, PreviewListener { address, accepting });
        Ok(())
    }

    /// Closes the preview listener of `group`, if one is open.
    pub(crate) fn close_preview(&self, host: &str, group: &GroupId) {
        let removed = self
            .inner
            .previews
            .open
            .lock()
            .expect("previews lock")
            .remove(&(host.to_owned(), group.clone()));
        if let Some(listener) = removed {
            tracing::info!(host, %group, preview = %listener.address, "preview listener closed");
        }
    }

    /// Closes every preview listener (when the proxy stops serving).
    pub(crate) fn close_previews(&self) {
        let closed = std::mem::take(&mut *self.inner.previews.open.lock().expect("previews lock"));
        if !closed.is_empty() {
            tracing::info!(count = closed.len(), "preview listeners closed");
        }
    }

    /// Where `group` of the app at `host` is previewed: a port that serves that
    /// group alone, whatever its share of traffic. `None` when the group is not
    /// attached or previews are off ([`ProxyOptions::preview_bind`](crate::ProxyOptions::preview_bind)).
    pub fn preview_address(&self, host: &str, group: &GroupId) -> Option<SocketAddr> {
        let host = crate::state::normalize_host(host).ok()?;
        self.inner.previews.address(&host, group)
    }
}

/// Accepts preview connections until aborted. It holds the proxy weakly, so that
/// a dropped proxy closes its preview listeners.
async fn accept(proxy: Weak<Inner>, listener: TcpListener, pin: Arc<PreviewPin>) {
    let Some(builder) = proxy
        .upgrade()
        .map(|inner| Arc::new(connection_builder(&inner.options)))
    else {
        return;
    };
    let graceful = crate::h1_server::Graceful::new();
    let mut errors = AcceptErrors::default();
    loop {
        let accepted = listener.accept().await;
        let Some(inner) = proxy.upgrade() else { return };
        let (stream, remote) = match accepted {
            Ok(a) => {
                errors.succeeded("preview");
                a
            }
            Err(e) => {
                let pause = errors.failed(&e, &inner.connections, "preview");
                drop(inner);
                tokio::time::sleep(pause).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let info = ConnInfo::new(remote, false, &inner.options).pinned(pin.clone());
        let client = Client {
            proxy: Proxy { inner },
            info,
            builder: builder.clone(),
            watcher: graceful.watcher(),
            tls: None,
        };
        tokio::spawn(client.run(stream));
    }
}
