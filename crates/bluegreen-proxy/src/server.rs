//! Serving clients: plain HTTP/1.1 and h2c, or TLS with ALPN, with graceful shutdown.

use std::future::Future;
use std::io;
use std::path::Path;
use std::sync::Arc;

use hyper_util::rt::TokioTimer;
use hyper_util::server::conn::auto;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::conn::{AcceptErrors, Guarded, Limits};
use crate::forward::{ClientConn, ConnInfo};
use crate::h1_server::{self, Graceful, Watcher};
use crate::options::ProxyOptions;
use crate::stall::StreamExecutor;
use crate::state::Proxy;
use crate::upstream::{self, Affinity};

/// TLS termination settings: a certificate chain and its key, from PEM files.
#[derive(Clone)]
pub struct TlsConfig {
    acceptor: TlsAcceptor,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsConfig { .. }")
    }
}

impl TlsConfig {
    /// Loads a PEM certificate chain and a PEM private key; offers `h2` and
    /// `http/1.1` by ALPN.
    pub fn from_pem_files(cert: &Path, key: &Path) -> io::Result<Self> {
        let cert_pem = std::fs::read(cert).map_err(|e| with_path(e, cert))?;
        let key_pem = std::fs::read(key).map_err(|e| with_path(e, key))?;
        Self::from_pem(&cert_pem, &key_pem)
    }

    /// Like [`TlsConfig::from_pem_files`], from PEM text.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> io::Result<Self> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| invalid(format!("certificate: {e}")))?;
        if certs.is_empty() {
            return Err(invalid("certificate: no PEM certificate found".into()));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| invalid(format!("private key: {e}")))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| invalid(format!("certificate and key: {e}")))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(TlsConfig {
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

fn with_path(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

pub(crate) fn connection_builder(options: &ProxyOptions) -> auto::Builder<StreamExecutor> {
    let mut builder = auto::Builder::new(StreamExecutor::new(options.send_timeout));
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(options.http2_keep_alive_interval)
        .keep_alive_timeout(options.http2_keep_alive_timeout);
    builder
}

impl Proxy {
    /// Serves clients on `listener` (plain HTTP/1.1 and h2c by prior knowledge, or
    /// TLS when `tls` is given) until `shutdown` completes; then stops accepting
    /// (preview listeners included) and lets requests in flight finish, for at most
    /// [`ProxyOptions::shutdown_timeout`](crate::ProxyOptions::shutdown_timeout).
    pub async fn serve(
        &self,
        listener: TcpListener,
        tls: Option<TlsConfig>,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        self.serve_spread(listener, tls, shutdown, &[]).await
    }

    /// Like [`Proxy::serve`], with each client connection handed in turn to one of
    /// `runtimes` (for instance one current-thread runtime per core, so that a
    /// connection and the backend connections it uses stay on one thread); with
    /// no runtime, connections run on the current one.
    pub async fn serve_spread(
        &self,
        listener: TcpListener,
        tls: Option<TlsConfig>,
        shutdown: impl Future<Output = ()>,
        runtimes: &[tokio::runtime::Handle],
    ) -> io::Result<()> {
        let builder = Arc::new(connection_builder(&self.inner.options));
        let graceful = Graceful::new();
        tokio::pin!(shutdown);
        let mut turn = 0usize;
        let mut errors = AcceptErrors::default();
        loop {
            let (stream, remote) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => {
                        errors.succeeded("clients");
                        a
                    }
                    Err(e) => {
                        let pause = errors.failed(&e, &self.inner.connections, "clients");
                        tokio::select! {
                            () = tokio::time::sleep(pause) => continue,
                            () = &mut shutdown => break,
                        }
                    }
                },
                () = &mut shutdown => break,
            };
            let _ = stream.set_nodelay(true);
            let client = Client {
                proxy: self.clone(),
                info: ConnInfo::new(remote, tls.is_some(), &self.inner.options),
                builder: builder.clone(),
                watcher: graceful.watcher(),
                tls: tls.as_ref().map(|t| t.acceptor.clone()),
            };
            if runtimes.is_empty() {
                tokio::spawn(client.run(stream));
                continue;
            }
            let runtime = &runtimes[turn % runtimes.len()];
            turn = turn.wrapping_add(1);
            match stream.into_std() {
                Ok(stream) => {
                    runtime.spawn(async move {
                        match TcpStream::from_std(stream) {
                            Ok(stream) => client.run(stream).await,
                            Err(e) => {
                                tracing::warn!(error = %e, "client connection not registered")
                            }
                        }
                    });
                }
                Err(e) => tracing::warn!(error = %e, "client connection not handed over"),
            }
        }
        drop(listener);
        self.close_previews();
        let timeout = self.inner.options.shutdown_timeout;
        tracing::info!(connections = graceful.count(), "shutting down");
        if tokio::time::timeout(timeout, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(?timeout, "requests still in flight at the shutdown bound");
        }
        Ok(())
    }
}

/// One accepted client connection, ready to run on some runtime.
pub(crate) struct Client {
    pub(crate) proxy: Proxy,
    pub(crate) info: ConnInfo,
    pub(crate) builder: Arc<auto::Builder<StreamExecutor>>,
    pub(crate) watcher: Watcher,
    pub(crate) tls: Option<TlsAcceptor>,
}

impl Client {
    pub(crate) async fn run(self, stream: TcpStream) {
        let Client {
            proxy,
            info,
            builder,
            watcher,
            tls,
        } = self;
        let epoch = proxy.inner.epoch.subscribe();
        let activity = proxy.inner.connections.register();
        let limits = Limits::new(&proxy.inner.options);
        let handshake = proxy.inner.options.header_timeout;
        let stream = Guarded::new(stream, activity.clone(), limits);
        let client = Arc::new(ClientConn {
            proxy,
            info,
            affinity: Affinity::default(),
            activity,
        });
        let result = match tls {
            None => serve_io(stream, &builder, watcher, &client, epoch).await,
            // boxed: a plain connection's task keeps no room for TLS state
            Some(acceptor) => {
                Box::pin(async move {
                    let stream =
                        match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::debug!(error = %e, "TLS handshake failed");
                                return Ok(());
                            }
                            Err(_) => return Ok(()),
                        };
                    serve_io(stream, &builder, watcher, &client, epoch).await
                })
                .await
            }
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "client connection ended");
        }
    }
}

/// Serves HTTP/1.1 and HTTP/2 on `io` for `client`, with its backend connections
/// driven in the same task, until the connection ends or shuts down gracefully.
async fn serve_io<I>(
    io: I,
    builder: &auto::Builder<StreamExecutor>,
    watcher: Watcher,
    client: &Arc<ClientConn>,
    epoch: tokio::sync::watch::Receiver<u64>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    upstream::drive(h1_server::serve(io, builder, client, watcher), epoch).await
}
