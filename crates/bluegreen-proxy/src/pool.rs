//! The pool of idle HTTP/1 connections to one backend, shared by every client
//! connection.
//!
//! A backend connection is in one of two places: in use, driven by the task of
//! the client connection whose request it carries ([`crate::upstream`]), or idle
//! here, driven by nobody. It comes back here only once its response was read to
//! the end and its request was sent whole; any other connection is closed.
//!
//! - **Per group state.** Each idle connection belongs to one state of one group
//!   (its [`GroupState::serial`]): a request of that state alone takes it, and the
//!   state's idle connections close when a change retires it (the group lost its
//!   traffic, or was detached or attached again), so that none is reused past
//!   the group's drain.
//! - **Per thread.** A connection is taken only on the thread that opened it, so
//!   that its socket's readiness comes from the runtime that drives the client
//!   connection (one runtime per serving thread, [`crate::Proxy::serve_spread`]).
//! - **Newest first.** The most recently used connection is taken first: it is the
//!   one least likely to have reached the backend's own idle timeout, and the
//!   older ones age out.
//! - **Bounded.** At most [`ProxyOptions::pool_max_idle`] idle connections per
//!   backend (the oldest closes for a new one), each for at most
//!   [`ProxyOptions::pool_idle_timeout`].
//! - **Checked.** A connection is polled once when taken: one the backend closed
//!   while it was idle ends there and the next is tried. The backend's health
//!   check loop also polls the idle connections once per check interval, so that
//!   connections the backend closed, and expired ones, release their descriptors
//!   without waiting for a request.
//!
//! [`ProxyOptions::pool_max_idle`]: crate::ProxyOptions::pool_max_idle
//! [`ProxyOptions::pool_idle_timeout`]: crate::ProxyOptions::pool_idle_timeout

use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::thread::ThreadId;
use std::time::Duration;

use hyper::client::conn::http1::{Connection, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::body::UpstreamBody;
use crate::options::ProxyOptions;

/// The connection future of a backend connection.
pub(crate) type Conn = Connection<TokioIo<TcpStream>, UpstreamBody>;

/// One HTTP/1 connection to a backend: the handle that sends requests on it and
/// the future that drives it, moved together between the pool and the client
/// connection that uses it.
pub(crate) struct BackendConn {
    pub(crate) sender: SendRequest<UpstreamBody>,
    pub(crate) conn: Pin<Box<Conn>>,
    /// The thread whose runtime registered the socket.
    home: ThreadId,
}

impl BackendConn {
    /// A connection opened on the current thread.
    pub(crate) fn new(sender: SendRequest<UpstreamBody>, conn: Conn) -> Self {
        BackendConn {
            sender,
            conn: Box::pin(conn),
            home: std::thread::current().id(),
        }
    }

    /// Polls the connection; `true` while it is open.
    pub(crate) fn poll_open(&mut self, cx: &mut Context<'_>) -> bool {
        match self.conn.as_mut().poll(cx) {
            Poll::Pending => true,
            Poll::Ready(Err(e)) => {
                tracing::debug!(error = %e, "backend connection ended");
                false
            }
            Poll::Ready(Ok(())) => false,
        }
    }
}

/// The bounds of a pool, from [`ProxyOptions`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct PoolLimits {
    pub(crate) max_idle: usize,
    pub(crate) idle_timeout: Duration,
}

impl PoolLimits {
    pub(crate) fn new(options: &ProxyOptions) -> Self {
        PoolLimits {
            max_idle: options.pool_max_idle,
            idle_timeout: options.pool_idle_timeout,
        }
    }
}

struct Idle {
    /// The [`GroupState::serial`](crate::state::GroupState) it belongs to.
    group: u64,
    since: Instant,
    conn: BackendConn,
}

/// The idle connections to one backend.
pub(crate) struct Pool {
    limits: PoolLimits,
    /// Oldest first.
    idle: Mutex<Vec<Idle>>,
}

impl Pool {
    pub(crate) fn new(limits: PoolLimits) -> Self {
        Pool {
            limits,
            idle: Mutex::new(Vec::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Idle>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The newest open idle connection of group state `group` opened on this
    /// thread, polled once with `cx`; closed and expired ones met on the way are
    /// dropped.
    pub(crate) fn take(&self, group: u64, cx: &mut Context<'_>) -> Option<BackendConn> {
        let thread = std::thread::current().id();
        let now = Instant::now();
        let mut closed = Vec::new();
        let found = {
            let mut idle = self.lock();
            let mut found = None;
            let mut i = idle.len();
            while i > 0 {
                i -= 1;
                if now.saturating_duration_since(idle[i].since) >= self.limits.idle_timeout {
                    // the entries before it are older still
                    closed.extend(idle.drain(..=i));
                    break;
                }
                if idle[i].group != group || idle[i].conn.home != thread {
                    continue;
                }
                let mut entry = idle.remove(i);
                if entry.conn.poll_open(cx) && entry.conn.sender.is_ready() {
                    found = Some(entry.conn);
                    break;
                }
                closed.push(entry);
            }
            found
        };
        drop(closed);
        found
    }

    /// Keeps `conn`, idle, for group state `group`; the oldest idle connection
    /// closes when the pool is full.
    pub(crate) fn put(&self, group: u64, conn: BackendConn) {
        if self.limits.max_idle == 0 {
            return;
        }
        let evicted = {
            let mut idle = self.lock();
            let evicted = (idle.len() >= self.limits.max_idle).then(|| idle.remove(0));
            idle.push(Idle {
                group,
                since: Instant::now(),
                conn,
            });
            evicted
        };
        drop(evicted);
    }

    /// Closes the idle connections of group state `group`.
    pub(crate) fn purge(&self, group: u64) {
        let gone: Vec<Idle> = {
            let mut idle = self.lock();
            let (gone, kept) = std::mem::take(&mut *idle)
                .into_iter()
                .partition(|e| e.group == group);
            *idle = kept;
            gone
        };
        drop(gone);
    }

    /// Closes idle connections that expired or that the backend closed.
    pub(crate) fn sweep(&self) {
        let now = Instant::now();
        let mut cx = Context::from_waker(Waker::noop());
        let gone: Vec<Idle> = {
            let mut idle = self.lock();
            let (kept, gone) = std::mem::take(&mut *idle)
                .into_iter()
                .partition(|e| now.saturating_duration_since(e.since) < self.limits.idle_timeout);
            *idle = kept;
            let mut gone = gone;
            let mut i = 0;
            while i < idle.len() {
                if idle[i].conn.poll_open(&mut cx) {
                    i += 1;
                } else {
                    gone.push(idle.remove(i));
                }
            }
            gone
        };
        drop(gone);
    }
}
