//! The send bound of each HTTP/2 stream: a stream whose response data waits for
//! the client's flow-control window, with no data moving on that stream for
//! [`ProxyOptions::send_timeout`], is reset (RST_STREAM with CANCEL) and its
//! backend request released, while the other streams of the connection go on.
//!
//! hyper runs each HTTP/2 stream of a client connection as its own future,
//! handed to the connection's executor. [`StreamExecutor`] wraps each in a
//! [`Watched`] future that gives the stream's response body (through a task-local
//! [`StreamProgress`]) a place to note the frames it hands on and when it is asked
//! for more. While a stream waits for window, hyper does not poll its body, so
//! the bound is kept by the wrapper: once the stream's body handed a frame on and
//! was not asked for more for the send timeout, the wrapper ends, which drops the
//! stream (hyper's response handle and the body, with its backend response).
//!
//! [`ProxyOptions::send_timeout`]: crate::ProxyOptions::send_timeout

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

tokio::task_local! {
    /// The progress of the HTTP/2 stream being polled.
    static STREAM: Arc<StreamProgress>;
}

/// How far an HTTP/2 stream's response body got: frames handed on, and whether
/// the last one is still waiting to be sent (the body was not asked for more).
#[derive(Default)]
pub(crate) struct StreamProgress {
    sent: AtomicU64,
    waiting: AtomicBool,
}

impl StreamProgress {
    /// The progress of the HTTP/2 stream being polled; `None` outside one
    /// (HTTP/1 requests).
    pub(crate) fn current() -> Option<Arc<StreamProgress>> {
        STREAM.try_with(Arc::clone).ok()
    }

    /// The body handed a frame on.
    pub(crate) fn frame_sent(&self) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        self.waiting.store(true, Ordering::Release);
    }

    /// The body was asked for more, or dropped.
    pub(crate) fn frame_taken(&self) {
        self.waiting.store(false, Ordering::Release);
    }
}

/// The executor of client connections' HTTP/2 streams: each runs on the current
/// runtime as a [`Watched`] future bounded by `send`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StreamExecutor {
    send: Duration,
}

impl StreamExecutor {
    /// Streams whose response data waits for window longer than `send` are reset.
    pub(crate) fn new(send: Duration) -> Self {
        StreamExecutor { send }
    }
}

impl<F> hyper::rt::Executor<F> for StreamExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        tokio::spawn(Watched {
            inner: Box::pin(fut),
            progress: Arc::new(StreamProgress::default()),
            send: self.send,
            timer: None,
            armed_at: None,
        });
    }
}

/// One HTTP/2 stream, ended when its response data waits for window past the
/// send bound.
struct Watched<F> {
    inner: Pin<Box<F>>,
    progress: Arc<StreamProgress>,
    send: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    /// The count of frames sent when the timer was armed, while it is.
    armed_at: Option<u64>,
}

impl<F: Future> Future for Watched<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let inner = &mut this.inner;
        if STREAM
            .sync_scope(this.progress.clone(), || inner.as_mut().poll(cx))
            .is_ready()
        {
            return Poll::Ready(());
        }
        if !this.progress.waiting.load(Ordering::Acquire) {
            this.armed_at = None;
            return Poll::Pending;
        }
        let sent = this.progress.sent.load(Ordering::Relaxed);
        if this.armed_at != Some(sent) {
            this.armed_at = Some(sent);
            let deadline = Instant::now() + this.send;
            match &mut this.timer {
                Some(t) => t.as_mut().reset(deadline),
                None => this.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        let fired = this
            .timer
            .as_mut()
            .is_some_and(|t| t.as_mut().poll(cx).is_ready());
        if fired {
            tracing::debug!(
                send_timeout = ?this.send,
                "HTTP/2 stream reset: its response data waited for the client's window past the send timeout"
            );
            return Poll::Ready(());
        }
        Poll::Pending
    }
}
