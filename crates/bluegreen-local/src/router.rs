//! [`LocalProxy`]: the bluegreen proxy in front of local instances, embedded in this
//! program or running as its own `bluegreen-proxy` process.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bluegreen_core::Result;
use bluegreen_proxy::{AdminToken, EmbeddedProxy, ProxyOptions, ProxyRouter};
use serde::{Deserialize, Serialize};

use crate::config::{read_json, write_json, StateDir};
use crate::error::io_error;
use crate::error::{failed, os_error};
use crate::process::{spawn_detached, ProcessId};

/// The proxy that routes to local instances, and the [`ProxyRouter`] that drives it.
pub struct LocalProxy {
    router: ProxyRouter,
    address: SocketAddr,
    stop: Stop,
}

impl std::fmt::Debug for LocalProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalProxy")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

enum Stop {
    Embedded(EmbeddedProxy),
    Process(ProcessId),
}

#[derive(Serialize, Deserialize)]
struct ProxyFile {
    process: ProcessId,
    listen: SocketAddr,
    admin: SocketAddr,
}

impl LocalProxy {
    /// Starts a proxy inside this program, serving on `listen` (port 0 picks one).
    /// It stops when this program ends, or at [`LocalProxy::stop`].
    pub async fn embedded(listen: SocketAddr, options: ProxyOptions) -> Result<LocalProxy> {
        let proxy = EmbeddedProxy::start(listen, options).await?;
        Ok(LocalProxy {
            router: proxy.router(),
            address: proxy.address(),
            stop: Stop::Embedded(proxy),
        })
    }

    /// Uses the `bluegreen-proxy` process recorded in `state`, or starts one from
    /// `binary` listening on `listen` when none runs. The process outlives this
    /// program; its admin API listens on a loopback port with a token kept in
    /// `<state>/proxy/token` (mode 0600).
    pub async fn process(
        state: &StateDir,
        listen: SocketAddr,
        binary: &Path,
    ) -> Result<LocalProxy> {
        let dir = state.root().join("proxy");
        let token_path = dir.join("token");
        if let Some(file) = read_json::<ProxyFile>(&dir.join("proxy.json"))? {
            if file.process.is_alive() {
                let token = read_token(&token_path)?;
                let router = ProxyRouter::remote(&format!("http://{}", file.admin), token)?;
                return Ok(LocalProxy {
                    router,
                    address: file.listen,
                    stop: Stop::Process(file.process),
                });
            }
        }
        std::fs::create_dir_all(&dir).map_err(|e| io_error(&dir, e))?;
        let token = AdminToken::random();
        write_token(&token_path, &token)?;
        let admin = free_loopback()?;
        let log_path = dir.join("proxy.log");
        let mut command = tokio::process::Command::new(binary);
        command
            .arg("--listen")
            .arg(listen.to_string())
            .arg("--admin")
            .arg(admin.to_string())
            .arg("--admin-token-file")
            .arg(&token_path);
        let (_child, process) = spawn_detached(&mut command, binary, &log_path)?;
        // wait for the admin API
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(admin).await.is_err() {
            if !process.is_alive() || tokio::time::Instant::now() > deadline {
                // nothing records it yet: it must not outlive this failure
                process.signal(rustix::process::Signal::KILL);
                return Err(failed(format!(
                    "bluegreen-proxy did not start; see {}",
                    log_path.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        write_json(
            &dir.join("proxy.json"),
            &ProxyFile {
                process,
                listen,
                admin,
            },
        )?;
        let router = ProxyRouter::remote(&format!("http://{admin}"), token)?;
        Ok(LocalProxy {
            router,
            address: listen,
            stop: Stop::Process(process),
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

    /// Stops the proxy: the embedded one at once (requests in flight finish), the
    /// process with SIGTERM.
    pub fn stop(&mut self) {
        match &mut self.stop {
            Stop::Embedded(proxy) => proxy.stop(),
            Stop::Process(p) => p.signal(rustix::process::Signal::TERM),
        }
    }
}

/// The conventional place of the `bluegreen-proxy` binary: `$BLUEGREEN_PROXY_BIN`,
/// else beside this program (or one directory up, for examples and tests), else
/// `bluegreen-proxy` on the `PATH`.
pub fn proxy_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("BLUEGREEN_PROXY_BIN") {
        return PathBuf::from(path);
    }
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1).take(2) {
            let candidate = dir.join("bluegreen-proxy");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    PathBuf::from("bluegreen-proxy")
}

fn free_loopback() -> Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(os_error)?;
    l.local_addr().map_err(os_error)
}

fn write_token(path: &Path, token: &AdminToken) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io_error(path, e))?;
    f.write_all(token.expose().as_bytes())
        .map_err(|e| io_error(path, e))
}

fn read_token(path: &Path) -> Result<AdminToken> {
    let text = std::fs::read_to_string(path).map_err(|e| io_error(path, e))?;
    AdminToken::new(text.trim())
}
