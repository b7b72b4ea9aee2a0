//! Body types of the proxy: what it sends to backends and to clients.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::backend::Epoch;
use crate::drain::DrainTimeout;
use crate::state::GroupState;

/// The client's request body, shared between the attempts of one request: left
/// here until its first read (so that a request whose body was never sent can go
/// to another backend), and noting whether reading it failed, which is the
/// client's fault and never the backend's.
pub(crate) struct BodySlot {
    body: Mutex<Option<Incoming>>,
    client_failed: AtomicBool,
}

impl BodySlot {
    /// The body back, if nothing has read from it.
    pub(crate) fn take_back(&self) -> Option<Incoming> {
        self.body.lock().ok()?.take()
    }

    /// Whether reading the client's body failed (malformed, cut short, reset).
    pub(crate) fn client_failed(&self) -> bool {
        self.client_failed.load(Ordering::Acquire)
    }
}

/// A request body on its way to a backend. A body not yet read can be taken back
/// after a failed connection, so that the request goes to another backend.
pub(crate) enum UpstreamBody {
    /// No body.
    Empty,
    /// The client's body, left in a shared slot until its first read.
    Recoverable {
        slot: Arc<BodySlot>,
        taken: Option<Incoming>,
    },
}

impl UpstreamBody {
    /// A body that [`BodySlot::take_back`] gives back while nothing read it.
    pub(crate) fn recoverable(body: Incoming) -> (UpstreamBody, Arc<BodySlot>) {
        let slot = Arc::new(BodySlot {
            body: Mutex::new(Some(body)),
            client_failed: AtomicBool::new(false),
        });
        (
            UpstreamBody::Recoverable {
                slot: slot.clone(),
                taken: None,
            },
            slot,
        )
    }

    /// `body`, taken back from `slot`, for another attempt.
    pub(crate) fn again(slot: &Arc<BodySlot>, body: Incoming) -> UpstreamBody {
        UpstreamBody::Recoverable {
            slot: slot.clone(),
            taken: Some(body),
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            UpstreamBody::Empty => Poll::Ready(None),
            UpstreamBody::Recoverable { slot, taken } => {
                if taken.is_none() {
                    *taken = slot.body.lock().ok().and_then(|mut s| s.take());
                }
                match taken {
                    Some(b) => {
                        let polled = Pin::new(b).poll_frame(cx);
                        if let Poll::Ready(Some(Err(_))) = &polled {
                            slot.client_failed.store(true, Ordering::Release);
                        }
                        polled
                    }
                    None => Poll::Ready(None),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Empty => true,
            UpstreamBody::Recoverable { slot, taken } => match taken {
                Some(b) => b.is_end_stream(),
                None => slot
                    .body
                    .lock()
                    .map(|s| s.as_ref().is_none_or(|b| b.is_end_stream()))
                    .unwrap_or(true),
            },
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Empty => SizeHint::with_exact(0),
            UpstreamBody::Recoverable { slot, taken } => match taken {
                Some(b) => b.size_hint(),
                None => slot
                    .body
                    .lock()
                    .ok()
                    .and_then(|s| s.as_ref().map(|b| b.size_hint()))
                    .unwrap_or_else(|| SizeHint::with_exact(0)),
            },
        }
    }
}

/// The error type of the bodies the proxy sends to clients.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

type CutWait = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A backend's response body on its way to a client. Once the drain timeout cuts
/// the group state that answered, it ends with an error, so that the client sees
/// the response incomplete and never cut short as if whole.
pub(crate) struct BackendBody {
    body: Incoming,
    group: Arc<GroupState>,
    /// For a response of the shared pool, whose connection no client-connection
    /// driver drops on a cut: what to wait on, and the wait once armed.
    epoch: Option<Arc<Epoch>>,
    waiting: Option<CutWait>,
}

impl BackendBody {
    /// `body` from `group`; `epoch` when the body's connection is the shared pool's.
    pub(crate) fn new(body: Incoming, group: Arc<GroupState>, epoch: Option<Arc<Epoch>>) -> Self {
        BackendBody {
            body,
            group,
            epoch,
            waiting: None,
        }
    }

    fn cut(&self) -> BoxError {
        Box::new(DrainTimeout {
            group: self.group.id.to_string(),
        })
    }
}

/// A response body on its way to a client: a backend's, streamed, or the proxy's
/// own.
pub(crate) enum ProxyBody {
    /// A backend's body.
    Backend(BackendBody),
    /// The proxy's own body.
    Full(Option<Bytes>),
}

impl ProxyBody {
    /// A body of the proxy's own.
    pub(crate) fn full(bytes: impl Into<Bytes>) -> Self {
        ProxyBody::Full(Some(bytes.into()))
    }

    pub(crate) fn empty() -> Self {
        ProxyBody::Full(None)
    }
}

impl std::fmt::Debug for ProxyBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProxyBody::Backend(_) => f.write_str("ProxyBody::Backend"),
            ProxyBody::Full(b) => write!(
                f,
                "ProxyBody::Full({} bytes)",
                b.as_ref().map_or(0, |b| b.len())
            ),
        }
    }
}

impl Body for BackendBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.group.is_cut() {
            return Poll::Ready(Some(Err(this.cut())));
        }
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(Some(frame)) => Poll::Ready(Some(frame.map_err(Into::into))),
            // a connection dropped by the cut ends its body as if whole
            Poll::Ready(None) if this.group.is_cut() => Poll::Ready(Some(Err(this.cut()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                if let Some(epoch) = &this.epoch {
                    let wait = this.waiting.get_or_insert_with(|| {
                        let (group, epoch) = (this.group.clone(), epoch.clone());
                        Box::pin(async move { group.until_cut(&epoch).await })
                    });
                    if wait.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Some(Err(this.cut())));
                    }
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ProxyBody::Backend(b) => Pin::new(b).poll_frame(cx),
            ProxyBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Backend(b) => b.is_end_stream(),
            ProxyBody::Full(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Backend(b) => b.size_hint(),
            ProxyBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}
