//! Body types of the proxy: what it sends to backends and to clients.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::backend::Epoch;
use crate::drain::DrainTimeout;
use crate::state::GroupState;

/// A request body on its way to a backend. A body not yet read can be taken back
/// after a failed connection, so that the request goes to another backend.
pub(crate) enum UpstreamBody {
    /// No body.
    Empty,
    /// The client's body, read as it streams.
    Streaming(Incoming),
    /// The client's body, left in a shared slot until its first read.
    Recoverable {
        slot: Arc<Mutex<Option<Incoming>>>,
        taken: Option<Incoming>,
    },
}

impl UpstreamBody {
    /// A body that [`take_back`] gives back while nothing read it.
    pub(crate) fn recoverable(body: Incoming) -> (UpstreamBody, Arc<Mutex<Option<Incoming>>>) {
        let slot = Arc::new(Mutex::new(Some(body)));
        (
            UpstreamBody::Recoverable {
                slot: slot.clone(),
                taken: None,
            },
            slot,
        )
    }
}

/// The body in `slot`, if nothing has read from it.
pub(crate) fn take_back(slot: &Arc<Mutex<Option<Incoming>>>) -> Option<Incoming> {
    slot.lock().ok()?.take()
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
            UpstreamBody::Streaming(b) => Pin::new(b).poll_frame(cx),
            UpstreamBody::Recoverable { slot, taken } => {
                if taken.is_none() {
                    *taken = slot.lock().ok().and_then(|mut s| s.take());
                }
                match taken {
                    Some(b) => Pin::new(b).poll_frame(cx),
                    None => Poll::Ready(None),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Empty => true,
            UpstreamBody::Streaming(b) => b.is_end_stream(),
            UpstreamBody::Recoverable { slot, taken } => match taken {
                Some(b) => b.is_end_stream(),
                None => slot
                    .lock()
                    .map(|s| s.as_ref().is_none_or(|b| b.is_end_stream()))
                    .unwrap_or(true),
            },
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Empty => SizeHint::with_exact(0),
            UpstreamBody::Streaming(b) => b.size_hint(),
            UpstreamBody::Recoverable { slot, taken } => match taken {
                Some(b) => b.size_hint(),
                None => slot
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
