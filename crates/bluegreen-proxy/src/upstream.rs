//! HTTP/1 requests of a client connection, on backend connections of the
//! backends' pools, sent and read by the client connection's own task.
//!
//! A request takes an idle connection from its backend's [`Pool`](crate::pool::Pool) (or opens
//! one) and is sent on it by the request path's own HTTP/1.1 client
//! ([`crate::h1`]): the request, its response and the response's body never
//! leave the client connection's task (the shared pool's connections of HTTP/2
//! streams and upgrades each run as a task of their own). Once the response was
//! read to its end and the request sent whole, the response's body puts the
//! connection back in the pool, where any client connection on the same thread
//! takes it: an idle client connection holds no backend connection. A
//! connection whose response was abandoned (the client left, a timeout, the
//! drain cut) closes.
//!
//! A connection is reused only while its group keeps its state: a group that
//! loses its traffic (or its members) is retired and its idle connections close.
//! Whenever the proxy's state changes, [`drive`] polls the client connection
//! again, so that its requests and response bodies check their group's cut.

use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use http::Response;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use crate::backend::Backend;
use crate::body::UpstreamBody;
use crate::h1::{self, BackendConn, H1Body, RequestHead};
use crate::state::GroupState;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a request to a backend failed.
#[derive(Debug)]
pub(crate) enum UpstreamError {
    /// No connection could be opened.
    Connect(io::Error),
    /// The HTTP exchange failed (on a connection of the client connection): the
    /// connection failed, or the response broke the protocol.
    Exchange(io::Error),
    /// A pooled connection failed before any byte of a response came: the
    /// backend had closed it while it was idle, most likely.
    Stale(io::Error),
    /// The shared pool failed.
    Pool(hyper_util::client::legacy::Error),
    /// The drain timeout cut the request before its response came.
    Cut,
    /// No response came within the upstream timeout.
    Timeout,
    /// The backend turned unhealthy before its response came.
    Unhealthy,
}

impl UpstreamError {
    /// Whether the backend could not be reached at all.
    pub(crate) fn is_connect(&self) -> bool {
        match self {
            UpstreamError::Connect(_) => true,
            UpstreamError::Exchange(_) | UpstreamError::Stale(_) => false,
            UpstreamError::Pool(e) => e.is_connect(),
            UpstreamError::Cut | UpstreamError::Timeout | UpstreamError::Unhealthy => false,
        }
    }
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamError::Connect(e) => write!(f, "connect: {e}"),
            UpstreamError::Exchange(e) => e.fmt(f),
            UpstreamError::Stale(e) => write!(f, "idle connection closed by the backend: {e}"),
            UpstreamError::Pool(e) => e.fmt(f),
            UpstreamError::Cut => f.write_str("cut by the drain timeout"),
            UpstreamError::Timeout => f.write_str("no response within the upstream timeout"),
            UpstreamError::Unhealthy => f.write_str("the backend turned unhealthy"),
        }
    }
}

impl std::error::Error for UpstreamError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            UpstreamError::Connect(e) => e.source(),
            UpstreamError::Exchange(e) | UpstreamError::Stale(e) => e.source(),
            UpstreamError::Pool(e) => e.source(),
            UpstreamError::Cut | UpstreamError::Timeout | UpstreamError::Unhealthy => None,
        }
    }
}

/// What a client connection keeps for the requests it sends to backends. Between
/// requests it holds no backend connection: each goes back to its backend's
/// [`Pool`](crate::pool::Pool) once its response was read to the end.
#[derive(Default)]
pub(crate) struct Affinity {
    /// The upstream timeout's timer, made once per client connection and set
    /// again for each request (moving a registered timer's deadline later is a
    /// compare-and-swap; a new timer is a registration and a removal under the
    /// timer driver's lock). Between requests it stays armed at the last
    /// request's deadline: when that passes, it wakes the idle connection's
    /// task once, which finds nothing to do.
    timer: Mutex<Option<Pin<Box<Sleep>>>>,
}

impl Affinity {
    /// The connection's upstream timer, set to `deadline`; give it back with
    /// [`Affinity::keep_timer`].
    pub(crate) fn timer(&self, deadline: Instant) -> Pin<Box<Sleep>> {
        let kept = self.timer.lock().unwrap_or_else(|e| e.into_inner()).take();
        match kept {
            Some(mut timer) => {
                timer.as_mut().reset(deadline);
                timer
            }
            None => Box::pin(tokio::time::sleep_until(deadline)),
        }
    }

    /// Keeps `timer` for the connection's next request.
    pub(crate) fn keep_timer(&self, timer: Pin<Box<Sleep>>) {
        *self.timer.lock().unwrap_or_else(|e| e.into_inner()) = Some(timer);
    }

    async fn connect(backend: &Backend) -> Result<BackendConn, UpstreamError> {
        let stream = tokio::time::timeout(
            CONNECT_TIMEOUT,
            TcpStream::connect(backend.authority.as_str()),
        )
        .await
        .map_err(|_| {
            UpstreamError::Connect(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no connection within {} s", CONNECT_TIMEOUT.as_secs()),
            ))
        })?
        .map_err(UpstreamError::Connect)?;
        let _ = stream.set_nodelay(true);
        Ok(BackendConn::new(stream))
    }

    /// Sends the request `head` and `body` to `backend` of `group` on an idle
    /// pooled connection, or on a new one when there is none (or `fresh`). A
    /// request on a pooled connection that failed before any byte of a response
    /// came fails with [`UpstreamError::Stale`]: the caller may send it again, on
    /// a fresh connection, when that is safe.
    pub(crate) async fn send(
        &self,
        group: &Arc<GroupState>,
        backend: &Arc<Backend>,
        head: &RequestHead<'_>,
        body: UpstreamBody,
        fresh: bool,
    ) -> Result<Response<Box<H1Body>>, UpstreamError> {
        if !fresh && !group.retired.load(Ordering::Acquire) {
            if let Some(conn) = backend.pool.take(group.serial) {
                return h1::exchange(conn, head, body, group, backend)
                    .await
                    .map_err(|e| match e.silent {
                        true => UpstreamError::Stale(e.error),
                        false => UpstreamError::Exchange(e.error),
                    });
            }
        }
        let conn = Self::connect(backend).await?;
        h1::exchange(conn, head, body, group, backend)
            .await
            .map_err(|e| UpstreamError::Exchange(e.error))
    }
}

type Changes = Pin<Box<dyn Future<Output = Option<watch::Receiver<u64>>> + Send>>;

fn next_change(mut rx: watch::Receiver<u64>) -> Changes {
    Box::pin(async move { rx.changed().await.ok().map(|()| rx) })
}

/// The task of one client connection, as its parts' wakers see it. A wake while
/// the task runs its rounds only asks for one more round in the same poll; a wake
/// from outside wakes the task.
struct Rounds {
    polling: AtomicBool,
    woken: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl Rounds {
    fn wake(&self) {
        self.woken.store(true, Ordering::SeqCst);
        if !self.polling.load(Ordering::SeqCst) {
            if let Some(w) = &*self.task.lock().unwrap_or_else(|e| e.into_inner()) {
                w.wake_by_ref();
            }
        }
    }
}

/// The waker of one part of a client connection's task: the client connection
/// itself, the backend connections in use, or the wait for the next change of
/// the proxy's state. It notes that its part was woken, so that the next round
/// polls that part (and only the parts that were woken), then wakes the rounds.
/// A backend connection's readiness then polls no client connection, and a
/// client connection's read polls no backend connection.
struct PartWake {
    woken: AtomicBool,
    rounds: Arc<Rounds>,
}

impl PartWake {
    fn new(rounds: &Arc<Rounds>, woken: bool) -> Arc<Self> {
        Arc::new(PartWake {
            woken: AtomicBool::new(woken),
            rounds: rounds.clone(),
        })
    }

    /// Whether the part was woken since the last call; clears the note.
    fn take(&self) -> bool {
        self.woken.swap(false, Ordering::SeqCst)
    }
}

impl Wake for PartWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::SeqCst);
        self.rounds.wake();
    }
}

/// Rounds of polling in one poll of the task, at most: past them the task yields.
const MAX_ROUNDS: usize = 8;

/// Runs `served` (a client connection) and, whenever the proxy's state changes
/// (`epoch`), polls it again: its requests and response bodies check their
/// group's cut and their backend's health when polled.
///
/// Each part (`served`, the wait for a change) has a waker of its own, and a
/// round polls only the parts woken since they were last polled: a change that
/// is not there yet polls no client connection.
pub(crate) async fn drive<F: Future>(served: F, epoch: watch::Receiver<u64>) -> F::Output {
    let mut served = std::pin::pin!(served);
    let mut changes = Some(next_change(epoch));
    let rounds = Arc::new(Rounds {
        polling: AtomicBool::new(false),
        woken: AtomicBool::new(false),
        task: Mutex::new(None),
    });
    // `served` and the wait for a change are polled first; then each whenever
    // it was woken. The wait for a change may be woken without a change (a
    // notification racing with its last poll), and must then be polled again
    // to wait anew.
    let served_wake = PartWake::new(&rounds, true);
    let change_wake = PartWake::new(&rounds, true);
    let served_waker = Waker::from(served_wake.clone());
    let change_waker = Waker::from(change_wake.clone());
    poll_fn(|outer| {
        {
            let mut task = rounds.task.lock().unwrap_or_else(|e| e.into_inner());
            if !task.as_ref().is_some_and(|w| w.will_wake(outer.waker())) {
                *task = Some(outer.waker().clone());
            }
        }
        rounds.polling.store(true, Ordering::SeqCst);
        for _ in 0..MAX_ROUNDS {
            rounds.woken.store(false, Ordering::SeqCst);
            if served_wake.take() {
                if let Poll::Ready(out) = served
                    .as_mut()
                    .poll(&mut Context::from_waker(&served_waker))
                {
                    rounds.polling.store(false, Ordering::SeqCst);
                    return Poll::Ready(out);
                }
            }
            if change_wake.take() {
                let mut change_cx = Context::from_waker(&change_waker);
                while let Some(ch) = changes.as_mut() {
                    match ch.as_mut().poll(&mut change_cx) {
                        Poll::Pending => break,
                        Poll::Ready(rx) => {
                            changes = rx.map(next_change);
                            // the requests check their cut and health again
                            served_wake.wake_by_ref();
                        }
                    }
                }
            }
            if !rounds.woken.load(Ordering::SeqCst) {
                rounds.polling.store(false, Ordering::SeqCst);
                // a wake between the check and the store is not lost
                if !rounds.woken.load(Ordering::SeqCst) {
                    return Poll::Pending;
                }
                rounds.polling.store(true, Ordering::SeqCst);
            }
        }
        rounds.polling.store(false, Ordering::SeqCst);
        outer.waker().wake_by_ref();
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A change of the proxy's state polls the client connection again; a wake
    /// of the client connection polls it once; nothing else polls it.
    #[tokio::test]
    async fn the_client_connection_is_polled_when_woken_or_on_a_change() {
        use std::sync::atomic::AtomicUsize;
        let (epoch_tx, epoch) = watch::channel(0u64);
        let polls = Arc::new(AtomicUsize::new(0));
        let served_waker: Arc<Mutex<Option<Waker>>> = Arc::default();
        let served = {
            let (polls, served_waker) = (polls.clone(), served_waker.clone());
            poll_fn(move |cx| {
                polls.fetch_add(1, Ordering::SeqCst);
                *served_waker.lock().unwrap() = Some(cx.waker().clone());
                Poll::<()>::Pending
            })
        };
        let driving = tokio::spawn(drive(served, epoch));
        let settle = || async {
            for _ in 0..8 {
                tokio::task::yield_now().await;
            }
        };
        settle().await;
        assert_eq!(polls.load(Ordering::SeqCst), 1, "served is polled first");
        settle().await;
        assert_eq!(polls.load(Ordering::SeqCst), 1, "polled with nothing woken");
        epoch_tx.send_modify(|e| *e += 1);
        settle().await;
        assert_eq!(polls.load(Ordering::SeqCst), 2, "a change polls it again");
        served_waker.lock().unwrap().take().unwrap().wake();
        settle().await;
        assert_eq!(polls.load(Ordering::SeqCst), 3);
        driving.abort();
    }

    #[test]
    fn connect_errors_are_connect_errors() {
        let e = UpstreamError::Connect(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert!(e.is_connect());
        assert!(e.to_string().starts_with("connect: "));
    }
}
