//! Backend connections kept by one HTTP/1 client connection and driven by the
//! client connection's own task.
//!
//! A client connection keeps the backend connections it opened, and sends its
//! next requests on them: a request and its response then never leave the
//! client connection's task (the shared pool's connections each run as a task of
//! their own, so that every request there goes to another task and back).
//! A connection is kept only while its group keeps its state: a group that loses
//! its traffic (or its members) is retired, and its kept connections close as
//! soon as their requests are done.

use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::backend::Backend;
use crate::body::UpstreamBody;
use crate::state::GroupState;

/// The most backend connections one client connection keeps.
const MAX_KEPT: usize = 4;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

type Conn = http1::Connection<TokioIo<TcpStream>, UpstreamBody>;

/// Why a request to a backend failed.
#[derive(Debug)]
pub(crate) enum UpstreamError {
    /// No connection could be opened.
    Connect(io::Error),
    /// The HTTP exchange failed (on a connection of the client connection).
    Http(hyper::Error),
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
            UpstreamError::Http(_) => false,
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
            UpstreamError::Http(e) => e.source(),
            UpstreamError::Pool(e) => e.source(),
            UpstreamError::Cut | UpstreamError::Timeout | UpstreamError::Unhealthy => None,
        }
    }
}

struct Kept {
    group: Arc<GroupState>,
    backend: Arc<Backend>,
    sender: SendRequest<UpstreamBody>,
}

impl Kept {
    fn matches(&self, group: &Arc<GroupState>, backend: &Arc<Backend>) -> bool {
        Arc::ptr_eq(&self.group, group) && Arc::ptr_eq(&self.backend, backend)
    }

    fn usable(&self) -> bool {
        !self.group.retired.load(Ordering::Acquire) && !self.sender.is_closed()
    }
}

#[derive(Default)]
struct State {
    kept: Vec<Kept>,
    /// Connections opened since the driver last ran, with their group.
    opened: Vec<(Arc<GroupState>, Pin<Box<Conn>>)>,
    driver: Option<Waker>,
}

/// The backend connections of one client connection.
#[derive(Default)]
pub(crate) struct Affinity {
    state: Mutex<State>,
}

impl Affinity {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take(
        &self,
        group: &Arc<GroupState>,
        backend: &Arc<Backend>,
    ) -> Option<SendRequest<UpstreamBody>> {
        let mut state = self.lock();
        state.kept.retain(Kept::usable);
        let i = state.kept.iter().position(|k| k.matches(group, backend))?;
        Some(state.kept.swap_remove(i).sender)
    }

    fn keep(
        &self,
        group: &Arc<GroupState>,
        backend: &Arc<Backend>,
        sender: SendRequest<UpstreamBody>,
    ) {
        let kept = Kept {
            group: group.clone(),
            backend: backend.clone(),
            sender,
        };
        if !kept.usable() {
            return;
        }
        let mut state = self.lock();
        if state.kept.len() >= MAX_KEPT {
            state.kept.remove(0);
        }
        state.kept.push(kept);
    }

    async fn connect(
        &self,
        group: &Arc<GroupState>,
        backend: &Backend,
    ) -> Result<SendRequest<UpstreamBody>, UpstreamError> {
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
        let mut state = self.lock();
        state.opened.push((group.clone(), Box::pin(conn)));
        if let Some(w) = &state.driver {
            w.wake_by_ref();
        }
        Ok(sender)
    }

    /// Sends `request` to `backend` of `group` on a kept connection, or on a new
    /// one kept for the next requests.
    pub(crate) async fn send(
        &self,
        group: &Arc<GroupState>,
        backend: &Arc<Backend>,
        mut request: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        if let Some(mut sender) = self.take(group, backend) {
            if sender.ready().await.is_ok() {
                match sender.try_send_request(request).await {
                    Ok(response) => {
                        self.keep(group, backend, sender);
                        return Ok(response);
                    }
                    Err(mut e) => match e.take_message() {
                        // never written: a new connection takes it
                        Some(r) => request = r,
                        None => return Err(UpstreamError::Http(e.into_error())),
                    },
                }
            }
        }
        let mut sender = self.connect(group, backend).await?;
        match sender.try_send_request(request).await {
            Ok(response) => {
                self.keep(group, backend, sender);
                Ok(response)
            }
            Err(e) => Err(UpstreamError::Http(e.into_error())),
        }
    }

    fn retire(&self) {
        self.lock().kept.retain(Kept::usable);
    }
}

type Changes = Pin<Box<dyn Future<Output = Option<watch::Receiver<u64>>> + Send>>;

fn next_change(mut rx: watch::Receiver<u64>) -> Changes {
    Box::pin(async move { rx.changed().await.ok().map(|()| rx) })
}

/// The waker that the futures of one client connection see. A wake while the
/// connection's task runs them only asks for one more round in the same poll;
/// a wake from outside wakes the task.
struct Rounds {
    polling: AtomicBool,
    woken: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl Wake for Rounds {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::SeqCst);
        if !self.polling.load(Ordering::SeqCst) {
            if let Some(w) = &*self.task.lock().unwrap_or_else(|e| e.into_inner()) {
                w.wake_by_ref();
            }
        }
    }
}

/// The waker of the driver's wait for the next change: notes that the wait was
/// woken, so that the driver polls it again (and only then), then wakes the rounds.
struct ChangeWake {
    woken: AtomicBool,
    rounds: Arc<Rounds>,
}

impl Wake for ChangeWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::SeqCst);
        self.rounds.wake_by_ref();
    }
}

/// Rounds of polling in one poll of the task, at most: past them the task yields.
const MAX_ROUNDS: usize = 8;

/// Runs `served` (a client connection) and, in the same task, the backend
/// connections it opens; whenever the proxy's state changes (`epoch`), drops
/// kept connections of retired groups and every connection of groups that the
/// drain timeout cut.
pub(crate) async fn drive<F: Future>(
    served: F,
    affinity: &Affinity,
    epoch: watch::Receiver<u64>,
) -> F::Output {
    let mut served = std::pin::pin!(served);
    let mut conns: Vec<(Arc<GroupState>, Pin<Box<Conn>>)> = Vec::new();
    let mut changes = Some(next_change(epoch));
    let rounds = Arc::new(Rounds {
        polling: AtomicBool::new(false),
        woken: AtomicBool::new(false),
        task: Mutex::new(None),
    });
    let waker = Waker::from(rounds.clone());
    // the wait for a change is polled first, then whenever it was woken: it may
    // be woken without a change (a notification racing with its last poll), and
    // must then be polled again to wait anew
    let change_wake = Arc::new(ChangeWake {
        woken: AtomicBool::new(true),
        rounds: rounds.clone(),
    });
    let change_waker = Waker::from(change_wake.clone());
    {
        let mut state = affinity.lock();
        state.driver = Some(waker.clone());
    }
    poll_fn(|outer| {
        {
            let mut task = rounds.task.lock().unwrap_or_else(|e| e.into_inner());
            if !task.as_ref().is_some_and(|w| w.will_wake(outer.waker())) {
                *task = Some(outer.waker().clone());
            }
        }
        let mut cx = Context::from_waker(&waker);
        rounds.polling.store(true, Ordering::SeqCst);
        for _ in 0..MAX_ROUNDS {
            rounds.woken.store(false, Ordering::SeqCst);
            if let Poll::Ready(out) = served.as_mut().poll(&mut cx) {
                rounds.polling.store(false, Ordering::SeqCst);
                return Poll::Ready(out);
            }
            conns.append(&mut affinity.lock().opened);
            if !conns.is_empty() {
                conns.retain_mut(|(_, c)| match c.as_mut().poll(&mut cx) {
                    Poll::Pending => true,
                    Poll::Ready(Err(e)) => {
                        tracing::debug!(error = %e, "backend connection ended");
                        false
                    }
                    Poll::Ready(Ok(())) => false,
                });
            }
            if change_wake.woken.swap(false, Ordering::SeqCst) {
                let mut change_cx = Context::from_waker(&change_waker);
                while let Some(ch) = changes.as_mut() {
                    match ch.as_mut().poll(&mut change_cx) {
                        Poll::Pending => break,
                        Poll::Ready(rx) => {
                            affinity.retire();
                            conns.retain(|(group, _)| !group.is_cut());
                            changes = rx.map(next_change);
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

    #[test]
    fn connect_errors_are_connect_errors() {
        let e = UpstreamError::Connect(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert!(e.is_connect());
        assert!(e.to_string().starts_with("connect: "));
    }
}
