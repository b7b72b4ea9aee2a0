//! Scripted backends and a strict HTTP/1.1 client, for the tests of what the
//! proxy does with what backends send (`backend_protocol.rs`,
//! `backend_attack.rs`): a backend records the exact bytes the proxy sends it
//! and answers exact bytes; the client reads the exact bytes the proxy sends back
//! and says whether a body arrived as its framing promised.

#![allow(dead_code)]

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::support::*;
pub const HOST: &str = "web.production";
/// Only stops a hung test.
pub const BOUND: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// bytes on a connection

/// A connection and the bytes read from it and not yet consumed.
pub struct Wire {
    pub stream: TcpStream,
    pub buf: Vec<u8>,
    /// Every byte consumed so far, in order.
    pub taken: Vec<u8>,
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The result of reading a chunked body.
pub struct Chunked {
    pub data: Vec<u8>,
    /// The trailer section (without the final empty line).
    pub trailers: String,
    /// The last chunk and the trailer section's end were read.
    pub complete: bool,
}

impl Wire {
    pub fn new(stream: TcpStream) -> Wire {
        Wire {
            stream,
            buf: Vec::new(),
            taken: Vec::new(),
        }
    }

    /// Reads more bytes; false at the end of the stream (or an error).
    pub async fn fill(&mut self) -> bool {
        self.buf.reserve(64 * 1024);
        matches!(self.stream.read_buf(&mut self.buf).await, Ok(n) if n > 0)
    }

    pub fn take(&mut self, n: usize) -> Vec<u8> {
        let out: Vec<u8> = self.buf.drain(..n).collect();
        self.taken.extend_from_slice(&out);
        out
    }

    /// The bytes up to and with `delim`; None if the stream ends first.
    pub async fn until(&mut self, delim: &[u8]) -> Option<Vec<u8>> {
        loop {
            if let Some(i) = find(&self.buf, delim) {
                return Some(self.take(i + delim.len()));
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    /// `n` bytes, or `Err` with what came before the stream ended.
    pub async fn exact(&mut self, n: usize) -> Result<Vec<u8>, Vec<u8>> {
        while self.buf.len() < n {
            if !self.fill().await {
                let all = self.buf.len();
                return Err(self.take(all));
            }
        }
        Ok(self.take(n))
    }

    /// Everything until the stream ends.
    pub async fn rest(&mut self) -> Vec<u8> {
        while self.fill().await {}
        let all = self.buf.len();
        self.take(all)
    }

    /// A chunked body; stops at the first framing error.
    pub async fn chunked(&mut self) -> Chunked {
        let mut out = Chunked {
            data: Vec::new(),
            trailers: String::new(),
            complete: false,
        };
        loop {
            let Some(line) = self.until(b"\r\n").await else {
                return out;
            };
            let line = String::from_utf8_lossy(&line);
            let size = line.trim_end().split(';').next().unwrap_or("").trim();
            let Ok(size) = usize::from_str_radix(size, 16) else {
                return out;
            };
            if size == 0 {
                loop {
                    let Some(field) = self.until(b"\r\n").await else {
                        return out;
                    };
                    if field == b"\r\n" {
                        out.complete = true;
                        return out;
                    }
                    out.trailers.push_str(&String::from_utf8_lossy(&field));
                }
            }
            match self.exact(size).await {
                Ok(data) => out.data.extend_from_slice(&data),
                Err(data) => {
                    out.data.extend_from_slice(&data);
                    return out;
                }
            }
            if self.exact(2).await.as_deref() != Ok(b"\r\n") {
                return out;
            }
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).await.is_ok()
    }
}

/// The values of field `name` in `head` (one per field line, trimmed).
pub fn fields(head: &str, name: &str) -> Vec<String> {
    head.split("\r\n")
        .skip(1)
        .filter_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
        .collect()
}

pub fn field(head: &str, name: &str) -> Option<String> {
    fields(head, name).into_iter().next()
}

pub fn is_chunked(head: &str) -> bool {
    fields(head, "transfer-encoding")
        .iter()
        .any(|v| v.to_ascii_lowercase().contains("chunked"))
}

// ---------------------------------------------------------------------------
// a scripted backend

/// One request a scripted backend read.
#[derive(Clone, Debug)]
pub struct Seen {
    /// The backend connection (0 for the first one that carried a request).
    pub connection: usize,
    /// The request line and fields, as sent.
    pub head: String,
    /// The body, unframed.
    pub body: Vec<u8>,
    /// The head and the body exactly as they came.
    pub raw: Vec<u8>,
}

/// A connection the proxy opened to a scripted backend for a request (health
/// checks are answered apart and never reach a script).
pub struct Peer {
    pub wire: Wire,
    pub connection: usize,
    pub log: Arc<Mutex<Vec<Seen>>>,
}

impl Peer {
    /// The next request's head, not recorded (for scripts that answer before
    /// the body); None when the proxy closed the connection.
    pub async fn head(&mut self) -> Option<String> {
        let head = self.wire.until(b"\r\n\r\n").await?;
        Some(String::from_utf8_lossy(&head).into_owned())
    }

    /// The next whole request (head and body), recorded.
    pub async fn request(&mut self) -> Option<Seen> {
        self.wire.taken.clear();
        let head = self.head().await?;
        let body = if is_chunked(&head) {
            let chunked = self.wire.chunked().await;
            if !chunked.complete {
                return None;
            }
            chunked.data
        } else if let Some(length) = field(&head, "content-length") {
            self.wire.exact(length.parse().unwrap()).await.ok()?
        } else {
            Vec::new()
        };
        let seen = Seen {
            connection: self.connection,
            head,
            body,
            raw: std::mem::take(&mut self.wire.taken),
        };
        self.log.lock().unwrap().push(seen.clone());
        Some(seen)
    }

    pub async fn send(&mut self, bytes: &[u8]) -> bool {
        self.wire.send(bytes).await
    }
}

/// What a scripted backend does after its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum After {
    /// Waits for the next request on the connection.
    KeepOpen,
    /// Closes the connection.
    Close,
    /// Closes its sending side only, and goes on reading (and recording) any
    /// request the proxy would still send on the connection.
    HalfClose,
}

pub type Script = Arc<dyn Fn(Peer) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

pub struct Scripted {
    pub addr: std::net::SocketAddr,
    pub log: Arc<Mutex<Vec<Seen>>>,
    pub connections: Arc<AtomicUsize>,
    pub task: tokio::task::JoinHandle<()>,
}

impl Scripted {
    /// A backend whose request connections run `script`.
    pub async fn custom<F, Fut>(script: F) -> Scripted
    where
        F: Fn(Peer) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let script: Script = Arc::new(move |peer| Box::pin(script(peer)));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let (l, c) = (log.clone(), connections.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (script, log, connections) = (script.clone(), l.clone(), c.clone());
                tokio::spawn(async move {
                    let mut wire = Wire::new(stream);
                    while find(&wire.buf, b"\r\n\r\n").is_none() {
                        if !wire.fill().await {
                            return;
                        }
                    }
                    if wire.buf.starts_with(b"GET /health ") {
                        while wire.until(b"\r\n\r\n").await.is_some() {
                            if !wire
                                .send(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                                .await
                            {
                                return;
                            }
                        }
                        return;
                    }
                    let connection = connections.fetch_add(1, Ordering::SeqCst);
                    script(Peer {
                        wire,
                        connection,
                        log,
                    })
                    .await;
                });
            }
        });
        Scripted {
            addr,
            log,
            connections,
            task,
        }
    }

    /// A backend that reads each whole request and answers what `reply` makes
    /// of it.
    pub async fn replying<F>(reply: F) -> Scripted
    where
        F: Fn(&Seen) -> (Vec<u8>, After) + Send + Sync + 'static,
    {
        let reply = Arc::new(reply);
        Scripted::custom(move |mut peer| {
            let reply = reply.clone();
            async move {
                let mut open = true;
                while let Some(seen) = peer.request().await {
                    if !open {
                        continue;
                    }
                    let (bytes, after) = reply(&seen);
                    let _ = peer.send(&bytes).await;
                    match after {
                        After::KeepOpen => {}
                        After::Close => return,
                        After::HalfClose => {
                            let _ = peer.wire.stream.shutdown().await;
                            open = false;
                        }
                    }
                }
            }
        })
        .await
    }

    /// A backend that answers `bytes` to every request, then does `after`.
    pub async fn always(bytes: &[u8], after: After) -> Scripted {
        let bytes = bytes.to_vec();
        Scripted::replying(move |_| (bytes.clone(), after)).await
    }

    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// The requests read so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.log.lock().unwrap().clone()
    }

    /// Connections that carried a request (health checks aside).
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Panics if a connection carried more than one request.
    pub fn assert_one_request_per_connection(&self) {
        let seen = self.seen();
        let mut connections: Vec<usize> = seen.iter().map(|s| s.connection).collect();
        connections.sort_unstable();
        let before = connections.len();
        connections.dedup();
        assert_eq!(
            connections.len(),
            before,
            "a backend connection was reused: {:?}",
            seen.iter()
                .map(|s| (s.connection, s.head.lines().next().unwrap_or("").to_owned()))
                .collect::<Vec<_>>()
        );
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A proxy whose app `HOST` has all its traffic on `backend`.
pub async fn proxy_to(backend: &Scripted) -> RunningProxy {
    let proxy = RunningProxy::start(test_options()).await;
    proxy.serve_from(HOST, "blue", backend.address()).await;
    proxy
}

// ---------------------------------------------------------------------------
// a client that reads exact bytes

/// One response as a strict HTTP/1.1 client reads it.
#[derive(Debug, Default)]
pub struct Reply {
    /// The heads of informational (1xx) responses before it.
    pub interim: Vec<String>,
    /// The status line and fields; empty when none came.
    pub head: String,
    pub status: u16,
    pub body: Vec<u8>,
    pub trailers: String,
    /// The body arrived as its framing promised (a close-delimited body always
    /// does).
    pub complete: bool,
    /// The body was delimited by the end of the connection.
    pub close_delimited: bool,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub struct Client {
    pub wire: Wire,
}

impl Client {
    pub async fn connect(proxy: &RunningProxy) -> Client {
        Client {
            wire: Wire::new(TcpStream::connect(proxy.addr).await.unwrap()),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        assert!(
            self.wire.send(bytes).await,
            "the proxy closed the connection"
        );
    }

    /// Sends a keep-alive request for `path` with `method` and reads its response.
    pub async fn ask(&mut self, method: &str, path: &str) -> Reply {
        self.send(format!("{method} {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())
            .await;
        self.response(method == "HEAD").await
    }

    pub async fn get(&mut self, path: &str) -> Reply {
        self.ask("GET", path).await
    }

    /// Reads the next response (after any 1xx); `head_request`: it answers a HEAD.
    pub async fn response(&mut self, head_request: bool) -> Reply {
        let mut reply = Reply::default();
        let read = tokio::time::timeout(BOUND, async {
            loop {
                let Some(head) = self.wire.until(b"\r\n\r\n").await else {
                    // what came, if anything, is no response head
                    let all = self.wire.buf.len();
                    reply.head = String::from_utf8_lossy(&self.wire.take(all)).into_owned();
                    return;
                };
                let head = String::from_utf8_lossy(&head).into_owned();
                let status: u16 = head
                    .split(' ')
                    .nth(1)
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0);
                if (100..200).contains(&status) && status != 101 {
                    reply.interim.push(head);
                    continue;
                }
                reply.head = head;
                reply.status = status;
                break;
            }
            let head = reply.head.clone();
            if head_request || matches!(reply.status, 101 | 204 | 304) {
                reply.complete = true;
            } else if is_chunked(&head) {
                let chunked = self.wire.chunked().await;
                reply.body = chunked.data;
                reply.trailers = chunked.trailers;
                reply.complete = chunked.complete;
            } else if let Some(length) = field(&head, "content-length") {
                // a length a strict client can't read: no body, incomplete
                let Ok(length) = length.parse() else {
                    return;
                };
                match self.wire.exact(length).await {
                    Ok(body) => {
                        reply.body = body;
                        reply.complete = true;
                    }
                    Err(part) => reply.body = part,
                }
            } else {
                reply.body = self.wire.rest().await;
                reply.complete = true;
                reply.close_delimited = true;
            }
        })
        .await;
        if read.is_err() {
            reply.complete = false;
        }
        reply
    }

    /// True if the proxy closes the connection (reads nothing more) within the bound.
    pub async fn closed(&mut self) -> bool {
        matches!(
            tokio::time::timeout(BOUND, self.wire.fill()).await,
            Ok(false)
        ) && self.wire.buf.is_empty()
    }
}

/// One keep-alive GET of `path` on a new connection.
pub async fn get_once(proxy: &RunningProxy, path: &str) -> Reply {
    Client::connect(proxy).await.get(path).await
}

pub const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/// A proxy with `options` whose app `HOST` has all its traffic on `backend`.
pub async fn proxy_with(
    backend: &Scripted,
    options: bluegreen_proxy::ProxyOptions,
) -> RunningProxy {
    let proxy = RunningProxy::start(options).await;
    proxy.serve_from(HOST, "blue", backend.address()).await;
    proxy
}

/// Sends `bytes` in pieces of `piece` bytes, pausing `pause` between them.
pub async fn trickle(peer: &mut Peer, bytes: &[u8], piece: usize, pause: Duration) -> bool {
    for part in bytes.chunks(piece) {
        if !peer.send(part).await {
            return false;
        }
        let _ = peer.wire.stream.flush().await;
        tokio::time::sleep(pause).await;
    }
    true
}

// ---------------------------------------------------------------------------
// bytes in odd pieces
