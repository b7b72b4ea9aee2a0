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
//!   Each thread keeps its idle connections in its own shard, with its own lock:
//!   the serving threads never wait for each other's takes and puts (a thread
//!   switched out while holding one shared lock stalled every connection of the
//!   other thread behind it), and no cache line goes back and forth between
//!   them on each request.
//! - **Newest first.** The most recently used connection is taken first: it is the
//!   one least likely to have reached the backend's own idle timeout, and the
//!   older ones age out.
//! - **Bounded.** At most [`ProxyOptions::pool_max_idle`] idle connections per
//!   backend, over all threads (the oldest of the thread's own closes for a new
//!   one, or, when it has no other, the oldest of another thread's), each for at most
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

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use crate::h1::BackendConn;
use crate::options::ProxyOptions;

/// Shards per pool. Threads are given shards in the order they first use a
/// pool; past this many, threads share shards (a shard's connections are still
/// taken only on the thread that opened them).
const SHARDS: usize = 16;

/// The shard of the current thread, the same for every pool.
pub(crate) fn thread_shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|s| *s)
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

/// One thread's idle connections to a backend, oldest first, on a cache line of
/// its own.
#[repr(align(64))]
#[derive(Default)]
struct Shard(Mutex<Vec<Idle>>);

impl Shard {
    fn lock(&self) -> MutexGuard<'_, Vec<Idle>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The idle connections to one backend.
pub(crate) struct Pool {
    limits: PoolLimits,
    shards: [Shard; SHARDS],
    /// Idle connections over every shard.
    count: AtomicUsize,
}

impl Pool {
    pub(crate) fn new(limits: PoolLimits) -> Self {
        Pool {
            limits,
            shards: Default::default(),
            count: AtomicUsize::new(0),
        }
    }

    fn forget(&self, n: usize) {
        if n > 0 {
            self.count.fetch_sub(n, Ordering::Relaxed);
        }
    }

    /// The newest open idle connection of group state `group` opened on this
    /// thread; closed and expired ones met on the way are dropped.
    pub(crate) fn take(&self, group: u64) -> Option<BackendConn> {
        let thread = std::thread::current().id();
        let now = Instant::now();
        let mut closed = Vec::new();
        let (found, removed) = {
            let mut idle = self.shards[thread_shard()].lock();
            let before = idle.len();
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
            (found, before - idle.len())
        };
        self.forget(removed);
        drop(closed);
        found
    }

    /// Keeps `conn`, idle, for group state `group`. Past the bound, the oldest
    /// idle connection of this thread's closes, or when it has no other, the
    /// oldest of another thread's.
    pub(crate) fn put(&self, group: u64, conn: BackendConn) {
        if self.limits.max_idle == 0 {
            return;
        }
        let shard = &self.shards[conn.shard()];
        let evicted = {
            let mut idle = shard.lock();
            let full = self.count.fetch_add(1, Ordering::Relaxed) >= self.limits.max_idle;
            let evicted = (full && !idle.is_empty()).then(|| idle.remove(0));
            idle.push(Idle {
                group,
                since: Instant::now(),
                conn,
            });
            match evicted {
                Some(e) => Ok(e),
                None => Err(full),
            }
        };
        match evicted {
            Ok(evicted) => {
                self.forget(1);
                drop(evicted);
            }
            Err(true) => self.evict_elsewhere(shard),
            Err(false) => {}
        }
    }

    /// Closes the oldest idle connection of the shards other than `own`.
    fn evict_elsewhere(&self, own: &Shard) {
        let mut oldest: Option<(usize, Instant)> = None;
        for (i, shard) in self.shards.iter().enumerate() {
            if std::ptr::eq(shard, own) {
                continue;
            }
            if let Some(first) = shard.lock().first() {
                if oldest.is_none_or(|(_, since)| first.since < since) {
                    oldest = Some((i, first.since));
                }
            }
        }
        let evicted = oldest.and_then(|(i, _)| {
            let mut idle = self.shards[i].lock();
            (!idle.is_empty()).then(|| idle.remove(0))
        });
        if let Some(evicted) = evicted {
            self.forget(1);
            drop(evicted);
        }
    }

    /// Closes the idle connections of group state `group`.
    pub(crate) fn purge(&self, group: u64) {
        for shard in &self.shards {
            let gone: Vec<Idle> = {
                let mut idle = shard.lock();
                if idle.is_empty() {
                    continue;
                }
                let (gone, kept) = std::mem::take(&mut *idle)
                    .into_iter()
                    .partition(|e| e.group == group);
                *idle = kept;
                gone
            };
            self.forget(gone.len());
            drop(gone);
        }
    }

    /// Closes idle connections that expired or that the backend closed.
    pub(crate) fn sweep(&self) {
        let now = Instant::now();
        for shard in &self.shards {
            let gone: Vec<Idle> = {
                let mut idle = shard.lock();
                if idle.is_empty() {
                    continue;
                }
                let (kept, mut gone): (Vec<Idle>, Vec<Idle>) =
                    std::mem::take(&mut *idle).into_iter().partition(|e| {
                        now.saturating_duration_since(e.since) < self.limits.idle_timeout
                    });
                *idle = kept;
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
            self.forget(gone.len());
            drop(gone);
        }
    }

    /// The count kept, and each shard's connections (group, local port), oldest
    /// first.
    #[cfg(test)]
    fn snapshot(&self) -> (usize, Vec<Vec<(u64, u16)>>) {
        let shards = self
            .shards
            .iter()
            .map(|s| {
                s.lock()
                    .iter()
                    .map(|e| (e.group, e.conn.local_port()))
                    .collect()
            })
            .collect();
        (self.count.load(Ordering::Relaxed), shards)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::{mpsc, Arc};

    enum Op {
        Put(u64),
        Take(u64),
    }

    /// A thread with a runtime of its own that opens connections to `to` and
    /// puts them into, and takes them from, the pool, as told.
    fn worker(
        pool: Arc<Pool>,
        to: std::net::SocketAddr,
    ) -> (mpsc::Sender<Op>, mpsc::Receiver<(usize, Option<u16>)>) {
        let (tx, rx) = mpsc::channel::<Op>();
        let (done_tx, done_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut opened = Vec::new();
                while let Ok(op) = rx.recv() {
                    let got = match op {
                        Op::Put(group) => {
                            let io = tokio::net::TcpStream::connect(to).await.unwrap();
                            let conn = BackendConn::new(io);
                            let port = conn.local_port();
                            opened.push(port);
                            pool.put(group, conn);
                            Some(port)
                        }
                        Op::Take(group) => pool.take(group).map(|c| {
                            assert_eq!(c.home(), std::thread::current().id());
                            c.local_port()
                        }),
                    };
                    done_tx.send((thread_shard(), got)).unwrap();
                }
            });
        });
        (tx, done_rx)
    }

    /// Random puts, takes and purges from two threads, each checked against a
    /// model of the pool: per thread, newest first, the bound kept over both
    /// (the oldest of the putting thread's own goes first, else the other's
    /// oldest), a take never hands over another thread's connection.
    #[test]
    fn two_threads_against_a_model() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let to = listener.local_addr().unwrap();
        // accepted connections stay open and silent while the test runs
        std::thread::spawn(move || {
            let mut kept = Vec::new();
            for s in listener.incoming() {
                kept.push(s);
            }
        });
        let max_idle = 5;
        let pool = Arc::new(Pool::new(PoolLimits {
            max_idle,
            idle_timeout: Duration::from_secs(3600),
        }));
        // two threads on shards of their own (threads of other tests may have
        // taken shards meanwhile, and past `SHARDS` threads share them)
        let shard = |w: &(mpsc::Sender<Op>, mpsc::Receiver<(usize, Option<u16>)>)| {
            w.0.send(Op::Take(0)).unwrap();
            w.1.recv().unwrap().0
        };
        let workers = loop {
            let pair = [worker(pool.clone(), to), worker(pool.clone(), to)];
            if shard(&pair[0]) != shard(&pair[1]) {
                break pair;
            }
        };
        let mut rng = fastrand::Rng::with_seed(0x900d);
        // per worker: (group, port, sequence of the put), oldest first
        let mut model: [Vec<(u64, u16, u64)>; 2] = [Vec::new(), Vec::new()];
        let mut shard_of = [None, None];
        let mut seq = 0u64;
        let mut taken_twice = HashSet::new();
        for step in 0..400 {
            let w = rng.usize(0..2);
            let group = rng.u64(1..3);
            match rng.u8(0..10) {
                0 => {
                    pool.purge(group);
                    for m in &mut model {
                        m.retain(|e| e.0 != group);
                    }
                }
                1..=5 => {
                    workers[w].0.send(Op::Put(group)).unwrap();
                    let (shard, port) = workers[w].1.recv().unwrap();
                    shard_of[w] = Some(shard);
                    let total: usize = model.iter().map(Vec::len).sum();
                    if total >= max_idle {
                        if !model[w].is_empty() {
                            model[w].remove(0);
                        } else {
                            model[1 - w].remove(0);
                        }
                    }
                    seq += 1;
                    model[w].push((group, port.unwrap(), seq));
                }
                _ => {
                    workers[w].0.send(Op::Take(group)).unwrap();
                    let (shard, port) = workers[w].1.recv().unwrap();
                    shard_of[w] = Some(shard);
                    let expected = model[w].iter().rposition(|e| e.0 == group);
                    let expected = expected.map(|i| model[w].remove(i).1);
                    assert_eq!(port, expected, "step {step}: take({group}) on thread {w}");
                    if let Some(p) = port {
                        assert!(taken_twice.insert(p), "step {step}: {p} handed over twice");
                    }
                }
            }
            let (count, shards) = pool.snapshot();
            let total: usize = model.iter().map(Vec::len).sum();
            assert_eq!(count, total, "step {step}: the count");
            assert!(
                count <= max_idle,
                "step {step}: {count} idle past the bound"
            );
            for (w, m) in model.iter().enumerate() {
                if let Some(s) = shard_of[w] {
                    let want: Vec<(u64, u16)> = m.iter().map(|e| (e.0, e.1)).collect();
                    assert_eq!(shards[s], want, "step {step}: thread {w}'s shard");
                }
            }
        }
    }
}
