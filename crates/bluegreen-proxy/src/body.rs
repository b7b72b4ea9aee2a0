//! Body types of the proxy: what it sends to backends and to clients.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

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

/// A response body on its way to a client: a backend's, streamed, or the proxy's
/// own.
pub enum ProxyBody {
    /// A backend's body.
    Backend(Incoming),
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

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
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
