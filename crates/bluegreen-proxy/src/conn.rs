//! Bounds on every phase of a client connection, kept by its I/O.
//!
//! A client connection's socket is wrapped in [`Guarded`], which knows from the
//! connection's [`Activity`] whether a request is in progress:
//!
//! - with no request in progress, a read that waits is bounded: by
//!   [`ProxyOptions::header_timeout`] until the first request (protocol
//!   detection, TLS handshake, the first request's head), then by
//!   [`ProxyOptions::idle_timeout`] from the end of the last request (HTTP/1.1
//!   keep-alive, HTTP/2 with no stream open). Bytes that arrive do not extend
//!   it: PINGs or SETTINGS keep no idle HTTP/2 connection open;
//! - a write that waits (the client reads nothing) is bounded by
//!   [`ProxyOptions::send_timeout`], in every phase, tunnels included;
//! - with requests in progress, reads wait unbounded here: an HTTP/2 stream
//!   whose response data waits for the client's flow-control window is bounded
//!   on its own, by [`crate::stall`].
//!
//! Past a bound the I/O fails, so the connection closes and everything it holds
//! (backend connections, backend requests) is dropped. When the proxy runs out
//! of file descriptors, connections with no request in progress are
//! [reclaimed](Connections::reclaim_idle) first.
//!
//! [`ProxyOptions::header_timeout`]: crate::ProxyOptions::header_timeout
//! [`ProxyOptions::idle_timeout`]: crate::ProxyOptions::idle_timeout
//! [`ProxyOptions::send_timeout`]: crate::ProxyOptions::send_timeout

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::options::ProxyOptions;

/// What one client connection is doing, shared by its I/O, its requests and
/// their response bodies.
#[derive(Default)]
pub(crate) struct Activity {
    /// Requests in progress (until their response body is sent or dropped) and
    /// upgraded tunnels.
    active: AtomicUsize,
    /// Requests begun so far.
    started: AtomicU64,
    /// Set to close the connection at once if it has no request in progress.
    reclaim: AtomicBool,
    /// The task reading the connection, to wake for a reclaim.
    reader: Mutex<Option<Waker>>,
}

impl Activity {
    /// A request begins; it is in progress until the guard drops.
    pub(crate) fn begin(self: &Arc<Self>) -> ActiveGuard {
        self.started.fetch_add(1, Ordering::Relaxed);
        self.active.fetch_add(1, Ordering::AcqRel);
        ActiveGuard(self.clone())
    }

    fn idle(&self) -> bool {
        self.active.load(Ordering::Acquire) == 0
    }
}

/// A request (or tunnel) in progress on a connection.
pub(crate) struct ActiveGuard(Arc<Activity>);

impl ActiveGuard {
    pub(crate) fn activity(&self) -> &Arc<Activity> {
        &self.0
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The client connections of a proxy, so that idle ones can be reclaimed.
#[derive(Default)]
pub(crate) struct Connections {
    all: Mutex<Vec<Weak<Activity>>>,
    /// Client connections accepted so far.
    accepted: std::sync::atomic::AtomicU64,
}

impl Connections {
    /// A new connection's activity, registered.
    pub(crate) fn register(&self) -> Arc<Activity> {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        let activity = Arc::new(Activity::default());
        let mut all = self.all.lock().unwrap_or_else(|e| e.into_inner());
        if all.len() == all.capacity() && all.len() >= 64 {
            all.retain(|w| w.strong_count() > 0);
        }
        all.push(Arc::downgrade(&activity));
        activity
    }

    /// Client connections accepted so far, and open now.
    pub(crate) fn counts(&self) -> (u64, u64) {
        let all = self.all.lock().unwrap_or_else(|e| e.into_inner());
        let open = all.iter().filter(|w| w.strong_count() > 0).count();
        (self.accepted.load(Ordering::Relaxed), open as u64)
    }

    /// Closes every connection with no request in progress; returns how many.
    pub(crate) fn reclaim_idle(&self) -> usize {
        let mut all = self.all.lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|w| w.strong_count() > 0);
        let mut reclaimed = 0;
        for activity in all.iter().filter_map(Weak::upgrade) {
            if activity.idle() {
                activity.reclaim.store(true, Ordering::Release);
                if let Some(w) = activity
                    .reader
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take()
                {
                    w.wake();
                }
                reclaimed += 1;
            }
        }
        reclaimed
    }
}

/// The bounds a [`Guarded`] keeps.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    header: Duration,
    idle: Duration,
    send: Duration,
}

impl Limits {
    pub(crate) fn new(options: &ProxyOptions) -> Self {
        Limits {
            header: options.header_timeout,
            idle: options.idle_timeout,
            send: options.send_timeout,
        }
    }
}

/// What the read timer is armed for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Watch {
    /// Nothing yet.
    Unset,
    /// No request in progress since the `started`-th began.
    Idle { started: u64 },
}

/// A client connection's socket with the bounds of [`Limits`].
pub(crate) struct Guarded<I> {
    io: I,
    activity: Arc<Activity>,
    limits: Limits,
    watch: Watch,
    read_timer: Option<Pin<Box<Sleep>>>,
    write_timer: Option<Pin<Box<Sleep>>>,
    write_waiting: bool,
}

fn arm(timer: &mut Option<Pin<Box<Sleep>>>, deadline: Instant) {
    match timer {
        Some(t) => t.as_mut().reset(deadline),
        None => *timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
    }
}

fn fired(timer: &mut Option<Pin<Box<Sleep>>>, cx: &mut Context<'_>) -> bool {
    timer
        .as_mut()
        .is_some_and(|t| t.as_mut().poll(cx).is_ready())
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, what.to_owned())
}

impl<I> Guarded<I> {
    pub(crate) fn new(io: I, activity: Arc<Activity>, limits: Limits) -> Self {
        Guarded {
            io,
            activity,
            limits,
            watch: Watch::Unset,
            read_timer: None,
            write_timer: None,
            write_waiting: false,
        }
    }

    /// After a read that waits: whether a bound has passed.
    fn check_read(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        for _ in 0..4 {
            let activity = &self.activity;
            let now = Instant::now();
            if activity.idle() {
                if activity.reclaim.load(Ordering::Acquire) {
                    return Some(timed_out("reclaimed: out of file descriptors"));
                }
                let started = activity.started.load(Ordering::Acquire);
                if self.watch != (Watch::Idle { started }) {
                    let limit = if started == 0 {
                        self.limits.header
                    } else {
                        self.limits.idle
                    };
                    self.watch = Watch::Idle { started };
                    arm(&mut self.read_timer, now + limit);
                }
                let mut reader = activity.reader.lock().unwrap_or_else(|e| e.into_inner());
                if !reader.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *reader = Some(cx.waker().clone());
                }
            } else {
                // requests in progress: their own bounds apply
                return None;
            }
            if !fired(&mut self.read_timer, cx) {
                return None;
            }
            match self.watch {
                Watch::Idle { started } => {
                    if activity.idle() && activity.started.load(Ordering::Acquire) == started {
                        return Some(timed_out(if started == 0 {
                            "no request within the header timeout"
                        } else {
                            "idle past the idle timeout"
                        }));
                    }
                    self.watch = Watch::Unset;
                }
                Watch::Unset => {}
            }
        }
        None
    }

    /// After a write: `Ready(Err)` once writes have waited past the send timeout.
    fn check_write<T>(
        &mut self,
        polled: Poll<io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Ready(r) => {
                self.write_waiting = false;
                Poll::Ready(r)
            }
            Poll::Pending => {
                if !self.write_waiting {
                    self.write_waiting = true;
                    arm(&mut self.write_timer, Instant::now() + self.limits.send);
                }
                if fired(&mut self.write_timer, cx) {
                    return Poll::Ready(Err(timed_out(
                        "the client read nothing within the send timeout",
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Guarded<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(r) => Poll::Ready(r),
            Poll::Pending => match this.check_read(cx) {
                Some(e) => Poll::Ready(Err(e)),
                None => Poll::Pending,
            },
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Guarded<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        this.check_write(polled, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.check_write(polled, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_flush(cx);
        this.check_write(polled, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_shutdown(cx);
        this.check_write(polled, cx)
    }
}

/// Failed accepts: a back-off that grows while they last, one warning per
/// episode, and idle connections reclaimed when file descriptors run out.
#[derive(Default)]
pub(crate) struct AcceptErrors {
    failures: u64,
}

/// The first and the longest pause after a failed accept.
const BACKOFF_MIN: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Whether an accept failed for want of file descriptors (EMFILE, ENFILE).
fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(23 | 24))
}

impl AcceptErrors {
    /// Notes a failed accept on `listener`; returns how long to pause.
    pub(crate) fn failed(
        &mut self,
        e: &io::Error,
        connections: &Connections,
        listener: &str,
    ) -> Duration {
        self.failures += 1;
        let reclaimed = if out_of_descriptors(e) {
            connections.reclaim_idle()
        } else {
            0
        };
        if self.failures == 1 {
            tracing::warn!(error = %e, listener, reclaimed, "accept failed; backing off until it works again");
        } else {
            tracing::debug!(error = %e, listener, reclaimed, failures = self.failures, "accept failed");
        }
        Self::pause(self.failures)
    }

    /// Notes an accept that worked.
    pub(crate) fn succeeded(&mut self, listener: &str) {
        if self.failures > 0 {
            tracing::info!(listener, failures = self.failures, "accepting again");
            self.failures = 0;
        }
    }

    fn pause(failures: u64) -> Duration {
        let shift = failures.saturating_sub(1).min(16) as u32;
        BACKOFF_MIN.saturating_mul(1 << shift).min(BACKOFF_MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[test]
    fn accept_back_off_grows_to_a_bound() {
        assert_eq!(AcceptErrors::pause(1), BACKOFF_MIN);
        assert_eq!(AcceptErrors::pause(2), BACKOFF_MIN * 2);
        assert_eq!(AcceptErrors::pause(1000), BACKOFF_MAX);
        assert!(out_of_descriptors(&io::Error::from_raw_os_error(24)));
    }

    fn limits() -> Limits {
        let long = Duration::from_secs(3600);
        Limits {
            header: long,
            idle: long,
            send: long,
        }
    }

    #[tokio::test]
    async fn a_reclaim_closes_idle_connections_only() {
        let connections = Connections::default();
        let (idle_io, _idle_peer) = tokio::io::duplex(64);
        let (busy_io, _busy_peer) = tokio::io::duplex(64);
        let mut idle = Guarded::new(idle_io, connections.register(), limits());
        let busy_activity = connections.register();
        let _request = busy_activity.begin();
        let mut busy = Guarded::new(busy_io, busy_activity, limits());
        let mut buf = [0u8; 8];
        let reading = tokio::spawn(async move { idle.read(&mut buf).await });
        tokio::task::yield_now().await;
        assert_eq!(connections.reclaim_idle(), 1);
        let read = tokio::time::timeout(Duration::from_secs(10), reading)
            .await
            .expect("the idle connection was not woken")
            .unwrap();
        assert_eq!(read.unwrap_err().kind(), io::ErrorKind::TimedOut);
        let mut buf = [0u8; 8];
        let still = tokio::time::timeout(Duration::from_millis(50), busy.read(&mut buf)).await;
        assert!(still.is_err(), "a busy connection was reclaimed");
    }
}
