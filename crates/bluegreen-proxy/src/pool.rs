//! The pool of idle HTTP/1 connections to one backend, shared by every client
//! connection.
//!
//! A backend connection is in one of two places: in use, carrying the request of
//! one client connection and read by that request's response body
//! ([`crate::h1`]), or idle here. It comes back here only once its response was
//! read to the end and its request was sent whole; any other connection is
//! closed.
//!
//! - **Per group state.** Each idle connection belongs to one state of one group
//!   (its [`GroupState::serial`](crate::state::GroupState::serial)): a request of that state alone takes it, and the
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
//! - **Checked.** A connection is checked when taken: one the backend closed (or
//!   sent bytes on) while it was idle closes there and the next is tried. The
//!   backend's health check loop also checks the idle connections once per check
//!   interval, so that
//!   connections the backend closed, and expired ones, release their descriptors
//!   without waiting for a request.
//!
//! [`ProxyOptions::pool_max_idle`]: crate::ProxyOptions::pool_max_idle
//! [`ProxyOptions::pool_idle_timeout`]: crate::ProxyOptions::pool_idle_timeout

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use crate::h1::BackendConn;
use crate::options::ProxyOptions;

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
    /// thread; closed and expired ones met on the way are dropped.
    pub(crate) fn take(&self, group: u64) -> Option<BackendConn> {
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
                if idle[i].group != group || idle[i].conn.home() != thread {
                    continue;
                }
                let entry = idle.remove(i);
                if entry.conn.is_open_idle() {
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
        let gone: Vec<Idle> = {
            let mut idle = self.lock();
            let (kept, gone) = std::mem::take(&mut *idle)
                .into_iter()
                .partition(|e| now.saturating_duration_since(e.since) < self.limits.idle_timeout);
            *idle = kept;
            let mut gone = gone;
            let mut i = 0;
            while i < idle.len() {
                if idle[i].conn.is_open_idle() {
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
