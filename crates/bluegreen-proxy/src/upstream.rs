//! HTTP/1 requests of a client connection, on backend connections driven by the
//! client connection's own task.
//!
//! A request takes an idle connection from its backend's [`Pool`](crate::pool::Pool) (or opens
//! one), and the connection is driven by the task of the client connection
//! while the request and its response last: a request and its response then
//! never leave the client connection's task (the shared pool's connections of
//! HTTP/2 streams and upgrades each run as a task of their own, so that every
//! request there goes to another task and back). Once the response was read to
//! its end and the request sent whole, the connection goes back to the pool,
//! where any client connection on the same thread takes it: an idle client
//! connection holds no backend connection. A connection whose response was
//! abandoned (the client left, a timeout, the drain cut) closes.
//!
//! A connection is reused only while its group keeps its state: a group that
//! loses its traffic (or its members) is retired, its idle connections close,
//! and its connections in use close as soon as their requests are done.

use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use crate::backend::Backend;
use crate::body::UpstreamBody;
use crate::pool::BackendConn;
use crate::state::GroupState;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a request to a backend failed.
#[derive(Debug)]
pub(crate) enum UpstreamError {
    /// No connection could be opened.
    Connect(io::Error),
    /// The HTTP exchange failed (on a connection of the client connection).
    Http(hyper::Error),
    /// A pooled connection ended after the request was written and before any
    /// response: the backend had closed it while it was idle, most likely.
    Stale(hyper::Error),
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
            UpstreamError::Http(_) | UpstreamError::Stale(_) => false,
            UpstreamError::Pool(e) => e.is_connect(),
            UpstreamError::Cut | UpstreamError::Timeout | UpstreamError::Unhealthy => false,
        }
    }
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamError::Connect(e) => write!(f, "connect: {e}"),
            UpstreamError::Http(e) => e.fmt(f),
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
            UpstreamError::Http(e) | UpstreamError::Stale(e) => e.source(),
            UpstreamError::Pool(e) => e.source(),
            UpstreamError::Cut | UpstreamError::Timeout | UpstreamError::Unhealthy => None,
        }
    }
}

/// Where a leased connection is: its request and response still going, its
/// response read to the end (it may go back to the pool), or abandoned (it closes).
const IN_USE: u8 = 0;
const DONE: u8 = 1;
const ABANDONED: u8 = 2;

/// What the response of a leased connection tells its client connection's driver.
struct LeaseState {
    state: AtomicU8,
    /// The driver, woken when the response is done or abandoned.
    driver: Waker,
}

/// A backend connection lent to one request: held by its response body, it says
/// whether the response was read to the end. Dropped without
/// [`Lease::done`], the connection closes.
pub(crate) struct Lease(Arc<LeaseState>);

impl Lease {
    /// The response was read to its end: the connection may be reused once its
    /// request was sent whole.
    pub(crate) fn done(self) {
        self.0.state.store(DONE, Ordering::Release);
        self.0.driver.wake_by_ref();
        std::mem::forget(self);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.0.state.store(ABANDONED, Ordering::Release);
        self.0.driver.wake_by_ref();
    }
}

/// A connection in use by a request of the client connection.
struct InUse {
    group: Arc<GroupState>,
    backend: Arc<Backend>,
    conn: BackendConn,
    lease: Arc<LeaseState>,
}

#[derive(Default)]
struct State {
    /// Connections taken or opened since the driver last ran.
    opened: Vec<InUse>,
    driver: Option<Waker>,
}

/// The backend connections in use by one client connection's requests. Between
/// requests it holds none: each goes back to its backend's [`Pool`](crate::pool::Pool) once its
/// response was read to the end.
#[derive(Default)]
pub(crate) struct Affinity {
    state: Mutex<State>,
    /// The upstream timeout's timer, made once per client connection and set
    /// again for each request (moving a registered timer's deadline later is a
    /// compare-and-swap; a new timer is a registration and a removal under the
    /// timer driver's lock). Between requests it stays armed at the last
    /// request's deadline: when that passes, it wakes the idle connection's
    /// task once, which finds nothing to do.
    timer: Mutex<Option<Pin<Box<Sleep>>>>,
}

impl Affinity {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

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
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(UpstreamError::Http)?;
        Ok(BackendConn::new(sender, conn))
    }

    /// Hands `conn` to the driver, lent to the request being sent on it.
    fn lend(&self, group: &Arc<GroupState>, backend: &Arc<Backend>, conn: BackendConn) -> Lease {
        let mut state = self.lock();
        let driver = state
            .driver
            .clone()
            .unwrap_or_else(|| Waker::noop().clone());
        let lease = Arc::new(LeaseState {
            state: AtomicU8::new(IN_USE),
            driver,
        });
        state.opened.push(InUse {
            group: group.clone(),
            backend: backend.clone(),
            conn,
            lease: lease.clone(),
        });
        if let Some(w) = &state.driver {
            w.wake_by_ref();
        }
        Lease(lease)
    }

    /// Sends `request` to `backend` of `group` on an idle pooled connection, or
    /// on a new one when there is none (or `fresh`). A request that a pooled
    /// connection did not send (the backend had closed it) goes on the next one.
    /// A request sent on a pooled connection that ended before any response
    /// fails with [`UpstreamError::Stale`]: the caller may send it again, on a
    /// fresh connection, when that is safe.
    pub(crate) async fn send(
        &self,
        group: &Arc<GroupState>,
        backend: &Arc<Backend>,
        mut request: Request<UpstreamBody>,
        fresh: bool,
    ) -> Result<(Response<Incoming>, Lease), UpstreamError> {
        if !fresh && !group.retired.load(Ordering::Acquire) {
            // a connection taken is polled with the driver's waker: from then
            // on it is the driver's to poll
            let driver = self.lock().driver.clone();
            loop {
                let taken = match &driver {
                    Some(w) => backend.pool.take(group.serial, &mut Context::from_waker(w)),
                    None => poll_fn(|cx| Poll::Ready(backend.pool.take(group.serial, cx))).await,
                };
                let Some(mut conn) = taken else { break };
                let sent = conn.sender.try_send_request(request);
                let lease = self.lend(group, backend, conn);
                match sent.await {
                    Ok(response) => return Ok((response, lease)),
                    Err(mut e) => match e.take_message() {
                        // never written: the next connection takes it
                        Some(r) => request = r,
                        None => {
                            let e = e.into_error();
                            return Err(if e.is_parse() || e.is_user() {
                                UpstreamError::Http(e)
                            } else {
                                UpstreamError::Stale(e)
                            });
                        }
                    },
                }
            }
        }
        let mut conn = Self::connect(backend).await?;
        let sent = conn.sender.try_send_request(request);
        let lease = self.lend(group, backend, conn);
        match sent.await {
            Ok(response) => Ok((response, lease)),
            Err(e) => Err(UpstreamError::Http(e.into_error())),
        }
    }
}

/// Returns `c` to its backend's pool when its response was read to the end and
/// its request sent whole, and its group state still serves; else it closes.
fn release(c: InUse) {
    if c.group.retired.load(Ordering::Acquire) {
        return;
    }
    c.backend.pool.put(c.group.serial, c.conn);
    // a retirement between the check and the put has purged the pool before
    // the put: purge again
    if c.group.retired.load(Ordering::Acquire) {
        c.backend.pool.purge(c.group.serial);
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

/// Polls the connections in use (when `cx` is given): those whose response was
/// read to the end and whose request was sent whole go back to their pools,
/// those that ended or whose response was abandoned close. A connection already
/// done and ready for its next request goes back unpolled: nothing is left for
/// it to do, and the pool polls it when it is taken.
fn drive_conns(conns: &mut Vec<InUse>, mut cx: Option<&mut Context<'_>>) {
    let mut i = 0;
    while i < conns.len() {
        let c = &mut conns[i];
        let state = c.lease.state.load(Ordering::Acquire);
        let settled = state == ABANDONED || (state == DONE && c.conn.sender.is_ready());
        let open = match cx.as_mut() {
            Some(cx) if !settled => c.conn.poll_open(cx),
            _ => !c.conn.sender.is_closed(),
        };
        let ready = state == DONE && c.conn.sender.is_ready();
        if open && (state == IN_USE || (state == DONE && !ready)) {
            i += 1;
            continue;
        }
        let c = conns.swap_remove(i);
        if open && ready {
            release(c);
        }
    }
}

/// Rounds of polling in one poll of the task, at most: past them the task yields.
const MAX_ROUNDS: usize = 8;

/// Runs `served` (a client connection) and, in the same task, the backend
/// connections it opens; whenever the proxy's state changes (`epoch`), drops
/// kept connections of retired groups and every connection of groups that the
/// drain timeout cut, and polls `served` again (its requests check their
/// group's cut and their backend's health when polled).
///
/// Each part (`served`, the backend connections, the wait for a change) has a
/// waker of its own, and a round polls only the parts woken since they were
/// last polled.
pub(crate) async fn drive<F: Future>(
    served: F,
    affinity: &Affinity,
    epoch: watch::Receiver<u64>,
) -> F::Output {
    let mut served = std::pin::pin!(served);
    let mut conns: Vec<InUse> = Vec::new();
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
    let conns_wake = PartWake::new(&rounds, false);
    let change_wake = PartWake::new(&rounds, true);
    let served_waker = Waker::from(served_wake.clone());
    let conns_waker = Waker::from(conns_wake.clone());
    let change_waker = Waker::from(change_wake.clone());
    {
        // a connection lent to a request, and the end of its response, wake
        // the backend connections' part
        let mut state = affinity.lock();
        state.driver = Some(conns_waker.clone());
    }
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
                    // the last responses' connections go back to their pools
                    conns.append(&mut affinity.lock().opened);
                    drive_conns(&mut conns, None);
                    return Poll::Ready(out);
                }
            }
            if conns_wake.take() {
                conns.append(&mut affinity.lock().opened);
                drive_conns(&mut conns, Some(&mut Context::from_waker(&conns_waker)));
            }
            if change_wake.take() {
                let mut change_cx = Context::from_waker(&change_waker);
                while let Some(ch) = changes.as_mut() {
                    match ch.as_mut().poll(&mut change_cx) {
                        Poll::Pending => break,
                        Poll::Ready(rx) => {
                            conns.retain(|c| !c.group.is_cut());
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

    /// A wake of the backend connections' part (a connection lent, a response
    /// read to its end, a backend socket's readiness) polls them alone, not the
    /// client connection; a wake of the client connection polls it once.
    #[tokio::test]
    async fn each_part_is_polled_only_when_woken() {
        use std::sync::atomic::AtomicUsize;
        let affinity = Arc::new(Affinity::default());
        let (_epoch_tx, epoch) = watch::channel(0u64);
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
        let driving = tokio::spawn({
            let affinity = affinity.clone();
            async move { drive(served, &affinity, epoch).await }
        });
        let settle = || async {
            for _ in 0..8 {
                tokio::task::yield_now().await;
            }
        };
        settle().await;
        assert_eq!(polls.load(Ordering::SeqCst), 1, "served is polled first");
        let conns_waker = affinity.lock().driver.clone().expect("the driver's waker");
        for _ in 0..3 {
            conns_waker.wake_by_ref();
            settle().await;
        }
        assert_eq!(
            polls.load(Ordering::SeqCst),
            1,
            "a wake of the backend connections polled the client connection"
        );
        served_waker.lock().unwrap().take().unwrap().wake();
        settle().await;
        assert_eq!(polls.load(Ordering::SeqCst), 2);
        driving.abort();
    }

    #[test]
    fn connect_errors_are_connect_errors() {
        let e = UpstreamError::Connect(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert!(e.is_connect());
        assert!(e.to_string().starts_with("connect: "));
    }
}
