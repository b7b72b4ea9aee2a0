//! Body types of the proxy: what it sends to backends and to clients.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::backend::Epoch;
use crate::conn::ActiveGuard;
use crate::drain::DrainTimeout;
use crate::h1::{H1Body, RawFields};
use crate::stall::StreamProgress;
use crate::state::GroupState;

/// The client's request body, shared between the attempts of one request: left
/// here until its first read (so that a request whose body was never sent can go
/// to another backend), and noting whether reading it failed, which is the
/// client's fault and never the backend's.
pub(crate) struct BodySlot {
    body: Mutex<Option<Incoming>>,
    /// 0, or why the client's body failed: [`FAILED`] or [`STALLED`].
    client_failed: AtomicU8,
    /// The longest wait for the next part of the body.
    stall_limit: Duration,
}

/// The client's body failed to read.
const FAILED: u8 = 1;
/// The client's body stalled past the body timeout.
const STALLED: u8 = 2;

/// What went wrong with a client's request body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ClientFault {
    /// Malformed, cut short or reset.
    Failed,
    /// Nothing more came within the body timeout.
    Stalled,
}

/// The error a request body ends with when it stalls.
#[derive(Debug)]
struct BodyStalled(Duration);

impl std::fmt::Display for BodyStalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the request body stalled for {:?}", self.0)
    }
}

impl std::error::Error for BodyStalled {}

impl BodySlot {
    /// The body back, if nothing has read from it.
    pub(crate) fn take_back(&self) -> Option<Incoming> {
        self.body.lock().ok()?.take()
    }

    /// Whether reading the client's body failed (malformed, cut short, reset,
    /// stalled), and how.
    pub(crate) fn client_fault(&self) -> Option<ClientFault> {
        match self.client_failed.load(Ordering::Acquire) {
            0 => None,
            STALLED => Some(ClientFault::Stalled),
            _ => Some(ClientFault::Failed),
        }
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
        /// Armed while the body waits for the client.
        stall: Option<Pin<Box<Sleep>>>,
        waiting: bool,
    },
}

impl UpstreamBody {
    /// A body that [`BodySlot::take_back`] gives back while nothing read it, and
    /// that fails once the client sends nothing for `stall_limit`.
    pub(crate) fn recoverable(
        body: Incoming,
        stall_limit: Duration,
    ) -> (UpstreamBody, Arc<BodySlot>) {
        let slot = Arc::new(BodySlot {
            body: Mutex::new(Some(body)),
            client_failed: AtomicU8::new(0),
            stall_limit,
        });
        (Self::again_inner(&slot, None), slot)
    }

    /// `body`, taken back from `slot`, for another attempt.
    pub(crate) fn again(slot: &Arc<BodySlot>, body: Incoming) -> UpstreamBody {
        Self::again_inner(slot, Some(body))
    }

    fn again_inner(slot: &Arc<BodySlot>, taken: Option<Incoming>) -> UpstreamBody {
        UpstreamBody::Recoverable {
            slot: slot.clone(),
            taken,
            stall: None,
            waiting: false,
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            UpstreamBody::Empty => Poll::Ready(None),
            UpstreamBody::Recoverable {
                slot,
                taken,
                stall,
                waiting,
            } => {
                if taken.is_none() {
                    *taken = slot.body.lock().ok().and_then(|mut s| s.take());
                }
                let Some(b) = taken else {
                    return Poll::Ready(None);
                };
                match Pin::new(b).poll_frame(cx) {
                    Poll::Ready(Some(Err(e))) => {
                        slot.client_failed.store(FAILED, Ordering::Release);
                        Poll::Ready(Some(Err(e.into())))
                    }
                    Poll::Ready(other) => {
                        *waiting = false;
                        Poll::Ready(other.map(|f| f.map_err(Into::into)))
                    }
                    Poll::Pending => {
                        let deadline = Instant::now() + slot.stall_limit;
                        if !*waiting {
                            *waiting = true;
                            match stall {
                                Some(t) => t.as_mut().reset(deadline),
                                None => *stall = Some(Box::pin(tokio::time::sleep_until(deadline))),
                            }
                        }
                        if stall
                            .as_mut()
                            .is_some_and(|t| t.as_mut().poll(cx).is_ready())
                        {
                            slot.client_failed.store(STALLED, Ordering::Release);
                            return Poll::Ready(Some(Err(Box::new(BodyStalled(slot.stall_limit)))));
                        }
                        Poll::Pending
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Empty => true,
            UpstreamBody::Recoverable { slot, taken, .. } => match taken {
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
            UpstreamBody::Recoverable { slot, taken, .. } => match taken {
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

/// A backend's response body as it comes: from the shared pool's client (HTTP/2
/// streams, upgrades) or from the request path's own HTTP/1.1 client.
pub(crate) enum FromBackend {
    /// Read by a connection of the shared pool.
    Shared(Incoming),
    /// Read from its connection by the body itself ([`crate::h1`]).
    Own(Box<H1Body>),
}

impl Body for FromBackend {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            FromBackend::Shared(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            FromBackend::Own(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            FromBackend::Shared(b) => b.is_end_stream(),
            FromBackend::Own(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            FromBackend::Shared(b) => b.size_hint(),
            FromBackend::Own(b) => b.size_hint(),
        }
    }
}

/// A backend's response body on its way to a client. Once the drain timeout cuts
/// the group state that answered, it ends with an error, so that the client sees
/// the response incomplete and never cut short as if whole.
pub(crate) struct BackendBody {
    body: FromBackend,
    group: Arc<GroupState>,
    /// For a response of the shared pool, whose connection no client-connection
    /// driver drops on a cut: what to wait on, and the wait once armed.
    epoch: Option<Arc<Epoch>>,
    waiting: Option<CutWait>,
    /// For an HTTP/2 response: its stream's progress, told when a frame is
    /// handed on and when more is asked for, so that a stream stuck on the
    /// client's flow-control window is seen (see [`crate::stall`]).
    sending: Option<Arc<StreamProgress>>,
    handed: bool,
}

impl BackendBody {
    /// `body` from `group`; `epoch` when the body's connection is the shared pool's.
    pub(crate) fn new(
        body: FromBackend,
        group: Arc<GroupState>,
        epoch: Option<Arc<Epoch>>,
    ) -> Self {
        BackendBody {
            body,
            group,
            epoch,
            waiting: None,
            sending: None,
            handed: false,
        }
    }

    /// Reports the frames it hands on to `progress` (HTTP/2 responses).
    pub(crate) fn reporting_to(mut self, progress: Arc<StreamProgress>) -> Self {
        self.sending = Some(progress);
        self
    }

    fn taken(&mut self) {
        if self.handed {
            self.handed = false;
            if let Some(a) = &self.sending {
                a.frame_taken();
            }
        }
    }
}

impl BackendBody {
    fn cut(&self) -> BoxError {
        Box::new(DrainTimeout {
            group: self.group.id.to_string(),
        })
    }
}

impl Drop for BackendBody {
    fn drop(&mut self) {
        self.taken();
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
        this.taken();
        if this.group.is_cut() {
            return Poll::Ready(Some(Err(this.cut())));
        }
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(Some(frame)) => {
                if let (Some(a), Ok(_)) = (&this.sending, &frame) {
                    a.frame_sent();
                    this.handed = true;
                }
                Poll::Ready(Some(frame))
            }
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

/// A response on its way to a client, with the request kept in progress on its
/// connection until the body is sent or dropped.
pub(crate) struct ClientBody {
    body: ProxyBody,
    _active: ActiveGuard,
    /// A backend's response fields, when the response's head is to be written
    /// from them rather than from its header map.
    fields: Option<RawFields>,
}

impl ClientBody {
    pub(crate) fn new(body: ProxyBody, active: ActiveGuard) -> Self {
        ClientBody {
            body,
            _active: active,
            fields: None,
        }
    }

    /// With a backend's response fields, for the response's head.
    pub(crate) fn with_fields(mut self, fields: Option<RawFields>) -> Self {
        self.fields = fields;
        self
    }

    /// The backend's response fields, once.
    pub(crate) fn take_fields(&mut self) -> Option<RawFields> {
        self.fields.take()
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
