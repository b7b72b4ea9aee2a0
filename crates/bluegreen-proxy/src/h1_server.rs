//! The request path's own HTTP/1.1 server for the requests most clients send,
//! with hyper's server for everything else on the same connection.
//!
//! A client connection starts here. Each request head is parsed by `httparse`
//! (the fields' values are slices of the bytes read, not copies) and, when it
//! is a **plain request**, served here: `GET` or `HEAD`, HTTP/1.1, an
//! origin-form target, at most 100 fields, no `Content-Length`,
//! `Transfer-Encoding`, `Upgrade` or `Expect`, a head of at most [`MAX_HEAD`]
//! bytes. Its response head is written from the response's parts and sent with
//! the body's first bytes in one write; the body keeps its length when it has
//! one and is sent `chunked` otherwise, with none for `HEAD`, `204` and `304`
//! (RFC 9112 section 6). A `Date` is added when the response has none, and
//! `Connection: close` when the connection closes after it.
//!
//! Anything else (a body, an upgrade, HTTP/1.0, HTTP/2's preface, a head
//! `httparse` or `http` refuses) hands the connection, with the bytes read and
//! not yet served, to hyper's server, which serves it to its end exactly as it
//! serves a connection from its first byte: one code path for every request
//! that is not plain, among them every malformed one.
//!
//! While a request is forwarded the connection is still read: bytes of a next
//! request are kept for it, and a client that closes its connection cancels
//! the request (as hyper's server does). A graceful shutdown closes the
//! connection between requests, or after the response in progress.

use std::future::{poll_fn, Future};
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Body;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;
use tokio::time::Sleep;

use crate::body::{BoxError, ClientBody};
use crate::forward::{self, ClientConn};
use crate::stall::StreamExecutor;

/// The most fields a plain request may have (hyper's server's default).
const MAX_FIELDS: usize = 100;
/// The longest plain request head, in bytes; a longer one goes to hyper,
/// which refuses it past its own bound.
pub(crate) const MAX_HEAD: usize = 64 * 1024;
/// Bytes read from the client at once.
const READ_ROOM: usize = 8192;
/// A response's first part up to this size is copied after its head, so that
/// both go in one plain write.
const SMALL_BODY: usize = 4096;

/// The graceful shutdown of a listener's connections: [`Graceful::shutdown`]
/// tells every [`Watcher`] and waits for all of them to be dropped.
pub(crate) struct Graceful {
    tx: watch::Sender<()>,
}

/// A connection's side of a [`Graceful`].
pub(crate) struct Watcher {
    rx: watch::Receiver<()>,
}

impl Graceful {
    pub(crate) fn new() -> Self {
        Graceful {
            tx: watch::channel(()).0,
        }
    }

    pub(crate) fn watcher(&self) -> Watcher {
        Watcher {
            rx: self.tx.subscribe(),
        }
    }

    /// Connections still open.
    pub(crate) fn count(&self) -> usize {
        self.tx.receiver_count()
    }

    /// Tells every connection to close once its requests in progress are
    /// answered, and waits until all have closed.
    pub(crate) async fn shutdown(self) {
        let _ = self.tx.send(());
        self.tx.closed().await;
    }
}

impl Watcher {
    /// Whether the shutdown began (or its listener is gone, which is the same).
    fn stopping(&self) -> bool {
        self.rx.has_changed().unwrap_or(true)
    }
}

/// Serves HTTP/1.1 (and, through hyper, HTTP/2) on `io` for `client` until the
/// connection ends or shuts down gracefully.
pub(crate) async fn serve<I>(
    mut io: I,
    builder: &auto::Builder<StreamExecutor>,
    client: &Arc<ClientConn>,
    mut watcher: Watcher,
) -> Result<(), BoxError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut read = BytesMut::new();
    let mut scratch = Scratch::default();
    let mut head = Vec::new();
    // the header timeout of a head that did not come whole at once, from its
    // first bytes (the connection's I/O bounds the wait for them)
    let mut head_timer: Option<Pin<Box<Sleep>>> = None;
    loop {
        // a whole plain head, or the connection goes to hyper
        let request = loop {
            if !read.is_empty() {
                match parse(&mut read, &mut scratch) {
                    Parsed::Plain(request) => {
                        head_timer = None;
                        break request;
                    }
                    Parsed::Partial if read.len() <= MAX_HEAD => {}
                    Parsed::Partial | Parsed::Other => {
                        return Box::pin(hand_over(io, read, builder, client, watcher)).await
                    }
                }
            }
            if read.is_empty() && watcher.stopping() {
                return Ok(());
            }
            let wait_stop = read.is_empty();
            if !wait_stop && head_timer.is_none() {
                let limit = client.proxy.inner.options.header_timeout;
                head_timer = Some(Box::pin(tokio::time::sleep(limit)));
            }
            let got = {
                let mut stop = pin!(watcher.rx.changed());
                poll_fn(|cx| {
                    if let Poll::Ready(r) = poll_read_into(&mut io, &mut read, cx) {
                        return Poll::Ready(Some(r));
                    }
                    if wait_stop && stop.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(None);
                    }
                    if let Some(timer) = head_timer.as_mut() {
                        if timer.as_mut().poll(cx).is_ready() {
                            tracing::debug!(
                                "a request head did not come within the header timeout"
                            );
                            return Poll::Ready(None);
                        }
                    }
                    Poll::Pending
                })
                .await
            };
            match got {
                None => return Ok(()),
                Some(Ok(0)) => {
                    if read.is_empty() {
                        return Ok(());
                    }
                    // a head cut short: hyper answers it as it would
                    return Box::pin(hand_over(io, read, builder, client, watcher)).await;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
            }
        };
        let head_request = request.method() == Method::HEAD;
        let close = scratch.close;
        // forward it, reading on: a next request's bytes are kept, and a client
        // that leaves cancels the request
        let response = {
            // boxed: an idle connection's task keeps no room for a request's state
            let mut forwarding = Box::pin(forward::handle_plain(client, request));
            let mut eof = false;
            poll_fn(|cx| {
                if let Poll::Ready(r) = forwarding.as_mut().poll(cx) {
                    return Poll::Ready(Some(r));
                }
                while !eof && read.len() <= MAX_HEAD {
                    match poll_read_into(&mut io, &mut read, cx) {
                        Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                            eof = true;
                            return Poll::Ready(None);
                        }
                        Poll::Ready(Ok(_)) => {}
                        Poll::Pending => break,
                    }
                }
                Poll::Pending
            })
            .await
        };
        let Some(response) = response else {
            tracing::debug!("client connection closed while its request was forwarded");
            return Ok(());
        };
        let close = close || watcher.stopping();
        let whole = respond(&mut io, &mut head, response, head_request, close).await?;
        if close || !whole {
            let _ = io.shutdown().await;
            return Ok(());
        }
        // an idle connection keeps no buffer
        if read.is_empty() {
            read = BytesMut::new();
        }
        if head.capacity() > 4096 {
            head = Vec::new();
        }
    }
}

/// Reads what the client sent into `read`.
fn poll_read_into<I: AsyncRead + Unpin>(
    io: &mut I,
    read: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    if read.is_empty() {
        // an idle connection keeps no buffer: bytes land here first, and only
        // as many as came are kept
        let mut room = [MaybeUninit::<u8>::uninit(); READ_ROOM];
        let mut buf = ReadBuf::uninit(&mut room);
        ready!(Pin::new(io).poll_read(cx, &mut buf))?;
        let filled = buf.filled();
        read.extend_from_slice(filled);
        return Poll::Ready(Ok(filled.len()));
    }
    if read.capacity() - read.len() < READ_ROOM / 8 {
        read.reserve(READ_ROOM);
    }
    // tokio's `read_buf` holds no state between polls
    pin!(io.read_buf(read)).poll(cx)
}

/// The rest of the connection, served by hyper from the bytes in `read` on.
async fn hand_over<I>(
    io: I,
    read: BytesMut,
    builder: &auto::Builder<StreamExecutor>,
    client: &Arc<ClientConn>,
    mut watcher: Watcher,
) -> Result<(), BoxError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(Prefixed {
        prefix: read.freeze(),
        io,
    });
    let shared = client.clone();
    let service = service_fn(move |req| forward::handle(shared.clone(), req));
    let mut conn = pin!(builder.serve_connection_with_upgrades(io, service));
    let stopping = watcher.stopping();
    if stopping {
        conn.as_mut().graceful_shutdown();
    }
    tokio::select! {
        r = conn.as_mut() => return r,
        _ = watcher.rx.changed(), if !stopping => conn.as_mut().graceful_shutdown(),
    }
    conn.await
}

/// An I/O whose reads give `prefix` first.
struct Prefixed<I> {
    prefix: Bytes,
    io: I,
}

impl<I: AsyncRead + Unpin> AsyncRead for Prefixed<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.prefix.is_empty() {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        let n = this.prefix.len().min(buf.remaining());
        buf.put_slice(&this.prefix[..n]);
        this.prefix.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Prefixed<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// A field of a parsed head: its name and where its value lies in the head.
struct Field {
    name: HeaderName,
    start: usize,
    end: usize,
}

/// Room reused from one request head to the next.
#[derive(Default)]
struct Scratch {
    fields: Vec<Field>,
    /// Whether the last plain request asked to close the connection.
    close: bool,
}

// returned once per request and matched at once: boxing the request would
// cost an allocation per request for nothing
#[allow(clippy::large_enum_variant)]
enum Parsed {
    Plain(Request<()>),
    Partial,
    /// Not a plain request: hyper's.
    Other,
}

/// Takes a plain request's head from the front of `read`.
fn parse(read: &mut BytesMut, scratch: &mut Scratch) -> Parsed {
    let mut raw: [MaybeUninit<httparse::Header<'_>>; MAX_FIELDS] =
        [const { MaybeUninit::uninit() }; MAX_FIELDS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(read, &mut raw) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Other,
    };
    let method = match req.method {
        Some("GET") => Method::GET,
        Some("HEAD") => Method::HEAD,
        _ => return Parsed::Other,
    };
    let (Some(1), Some(path)) = (req.version, req.path) else {
        return Parsed::Other;
    };
    if !path.starts_with('/') {
        return Parsed::Other;
    }
    let base = read.as_ptr() as usize;
    let path_range = (path.as_ptr() as usize - base, path.len());
    scratch.fields.clear();
    scratch.close = false;
    for field in req.headers.iter() {
        let name = field.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length")
            || name.eq_ignore_ascii_case(b"transfer-encoding")
            || name.eq_ignore_ascii_case(b"upgrade")
            || name.eq_ignore_ascii_case(b"expect")
        {
            return Parsed::Other;
        }
        let Ok(name) = HeaderName::from_bytes(name) else {
            return Parsed::Other;
        };
        if name == header::CONNECTION && crate::h1::has_token(field.value, "close") {
            scratch.close = true;
        }
        let start = field.value.as_ptr() as usize - base;
        scratch.fields.push(Field {
            name,
            start,
            end: start + field.value.len(),
        });
    }
    let head = read.split_to(len).freeze();
    // a head `http` refuses is hyper's, from its first byte: put it back
    let give_back = |read: &mut BytesMut| {
        let mut whole = BytesMut::with_capacity(head.len() + read.len());
        whole.extend_from_slice(&head);
        whole.extend_from_slice(read);
        *read = whole;
        Parsed::Other
    };
    let Ok(uri) = Uri::from_maybe_shared(head.slice(path_range.0..path_range.0 + path_range.1))
    else {
        return give_back(read);
    };
    let mut headers = HeaderMap::with_capacity(scratch.fields.len());
    for field in scratch.fields.drain(..) {
        let Ok(value) = HeaderValue::from_maybe_shared(head.slice(field.start..field.end)) else {
            return give_back(read);
        };
        headers.append(field.name, value);
    }
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    Parsed::Plain(request)
}

/// How a response's body is framed on the wire.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// Exactly this many bytes more.
    Length(u64),
    Chunked,
}

/// Writes `response` to the client; returns whether it went whole and framed,
/// so that the connection can carry another.
async fn respond<I: AsyncWrite + Unpin>(
    io: &mut I,
    head: &mut Vec<u8>,
    response: Response<ClientBody>,
    head_request: bool,
    close: bool,
) -> io::Result<bool> {
    let (parts, mut body) = response.into_parts();
    let fields = body.take_fields();
    let status = parts.status;
    // no length for a 1xx or 204 (RFC 9110 section 8.6); a 304's is the
    // representation's, kept, and like HEAD's frames nothing
    let no_length = status.is_informational() || status == StatusCode::NO_CONTENT;
    let no_body = no_length || head_request || status == StatusCode::NOT_MODIFIED;
    head.clear();
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(status.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes());
    head.extend_from_slice(b"\r\n");
    let mut length = None;
    let mut dated = false;
    for (name, value) in &parts.headers {
        if *name == header::CONTENT_LENGTH {
            if no_length {
                continue;
            }
            length = std::str::from_utf8(value.as_bytes())
                .ok()
                .and_then(|v| v.parse::<u64>().ok());
            if length.is_none() {
                // not a length the response can be framed by
                return Err(io::Error::other("a response with a broken Content-Length"));
            }
        } else if *name == header::DATE {
            dated = true;
        } else if *name == header::CONNECTION || *name == header::TRANSFER_ENCODING {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    if let Some(fields) = &fields {
        // a backend's fields as it sent them, names in lower case as hyper
        // writes them
        for (name, value) in fields.iter() {
            dated |= name.eq_ignore_ascii_case(b"date");
            head.extend(name.iter().map(u8::to_ascii_lowercase));
            head.extend_from_slice(b": ");
            head.extend_from_slice(value);
            head.extend_from_slice(b"\r\n");
        }
        if let (None, Some(n)) = (length, fields.length()) {
            length = Some(n);
            if !no_length {
                head.extend_from_slice(b"content-length: ");
                head.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
                head.extend_from_slice(b"\r\n");
            }
        }
    }
    let mut framing = match length {
        Some(n) => Framing::Length(n),
        None => match body.size_hint().exact() {
            Some(n) => {
                if !(no_length || no_body && n == 0) {
                    head.extend_from_slice(b"content-length: ");
                    head.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
                    head.extend_from_slice(b"\r\n");
                }
                Framing::Length(n)
            }
            None if no_body => Framing::Length(0),
            None => {
                head.extend_from_slice(b"transfer-encoding: chunked\r\n");
                Framing::Chunked
            }
        },
    };
    if no_body {
        framing = Framing::Length(0);
    }
    if !dated {
        head.extend_from_slice(b"date: ");
        extend_date(head);
        head.extend_from_slice(b"\r\n");
    }
    if close {
        head.extend_from_slice(b"connection: close\r\n");
    }
    head.extend_from_slice(b"\r\n");

    let mut head_sent = 0usize;
    // a body frame being written: its chunk-size line, its data, its CRLF
    let mut out: [Bytes; 3] = Default::default();
    let mut body_done = no_body;
    let mut whole = true;
    poll_fn(|cx| loop {
        // the next part of the body first, so that it goes with what waits
        // (the head with the first part, the last part with the end)
        let mut waiting = false;
        if !body_done && out.iter().all(Bytes::is_empty) {
            match Pin::new(&mut body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        // trailers: not forwarded
                        continue;
                    };
                    if data.is_empty() {
                        continue;
                    }
                    match &mut framing {
                        Framing::Length(left) => {
                            let n = data.len() as u64;
                            if n > *left {
                                // more than its length: only the length goes
                                out[1] = data.slice(..*left as usize);
                                *left = 0;
                                whole = false;
                            } else {
                                *left -= n;
                                out[1] = data;
                            }
                            body_done = *left == 0;
                        }
                        Framing::Chunked => {
                            out[0] = Bytes::from(format!("{:x}\r\n", data.len()));
                            out[1] = data;
                            if body.is_end_stream() {
                                out[2] = Bytes::from_static(b"\r\n0\r\n\r\n");
                                body_done = true;
                            } else {
                                out[2] = Bytes::from_static(b"\r\n");
                            }
                        }
                    }
                }
                Poll::Ready(None) => {
                    match framing {
                        Framing::Length(0) => {}
                        // shorter than its length: the client must see it cut
                        Framing::Length(_) => whole = false,
                        Framing::Chunked => out[2] = Bytes::from_static(b"0\r\n\r\n"),
                    }
                    body_done = true;
                }
                Poll::Ready(Some(Err(e))) => {
                    tracing::debug!(error = %e, "response body failed; closing the client connection");
                    whole = false;
                    body_done = true;
                }
                Poll::Pending => waiting = true,
            }
        }
        if head_sent < head.len() || out.iter().any(|b| !b.is_empty()) {
            if head_sent == 0 && out.iter().map(Bytes::len).sum::<usize>() <= SMALL_BODY {
                // a small part goes in the head's buffer: one plain write
                for part in &mut out {
                    head.extend_from_slice(part);
                    *part = Bytes::new();
                }
            }
            let from = head_sent.min(head.len());
            match crate::h1::poll_write_parts(&mut *io, cx, &head[from..], &out) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(io::Error::from(io::ErrorKind::WriteZero)))
                }
                Poll::Ready(Ok(n)) => {
                    let in_head = n.min(head.len() - from);
                    head_sent += in_head;
                    crate::h1::advance(&mut out, n - in_head);
                    continue;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        if body_done {
            return Pin::new(&mut *io).poll_flush(cx);
        }
        if waiting {
            // what is written so far reaches the client while the rest waits
            // (a TLS stream holds it until flushed)
            let _ = Pin::new(&mut *io).poll_flush(cx)?;
            return Poll::Pending;
        }
    })
    .await?;
    Ok(whole)
}

/// Appends the current time as an HTTP date (RFC 9110 section 5.6.7), formatted
/// once a second per thread.
fn extend_date(head: &mut Vec<u8>) {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};
    thread_local! {
        static CACHED: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHED.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != second {
            *cached = (second, httpdate::fmt_http_date(now));
        }
        head.extend_from_slice(cached.1.as_bytes());
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Any byte but CR and LF, which end a line (a lone LF too, for `httparse`).
    fn any_but_line_ends(rng: &mut fastrand::Rng) -> u8 {
        loop {
            let b = rng.u8(..);
            if b != b'\r' && b != b'\n' {
                return b;
            }
        }
    }

    /// A head the own server does not serve is handed to hyper from its first
    /// byte: whatever the bytes, `parse` either takes exactly one head off the
    /// front of what was read, or takes nothing.
    #[test]
    fn a_head_is_taken_whole_or_not_at_all() {
        let seed = fastrand::u64(..);
        let mut rng = fastrand::Rng::with_seed(seed);
        // what a target may hold, and may not (no line end: any parser ends the
        // head there)
        let pieces: [&[u8]; 12] = [
            b"GET ",
            b"HEAD ",
            b"/",
            b"a",
            b"<",
            b"\"",
            b"`",
            b"%",
            b"?",
            b" HTTP/1.1",
            b"#",
            b": ",
        ];
        let mut served = 0;
        for _ in 0..20_000 {
            let mut head = Vec::new();
            head.extend_from_slice(if rng.bool() { b"GET /" } else { b"HEAD /" });
            for _ in 0..rng.usize(0..12) {
                if rng.u8(..4) == 0 {
                    head.push(any_but_line_ends(&mut rng));
                } else {
                    head.extend_from_slice(pieces[rng.usize(..pieces.len())]);
                }
            }
            head.extend_from_slice(b" HTTP/1.1\r\nHost: a\r\n");
            for _ in 0..rng.usize(0..3) {
                head.extend_from_slice(b"x-f: ");
                for _ in 0..rng.usize(0..6) {
                    head.push(any_but_line_ends(&mut rng));
                }
                head.extend_from_slice(b"\r\n");
            }
            head.extend_from_slice(b"\r\n");
            let next = b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n";
            let mut wire = head.clone();
            wire.extend_from_slice(next);
            let mut read = BytesMut::from(&wire[..]);
            match parse(&mut read, &mut Scratch::default()) {
                Parsed::Plain(_) => {
                    served += 1;
                    assert_eq!(
                        &read[..],
                        &next[..],
                        "seed {seed}: {:?}",
                        String::from_utf8_lossy(&head)
                    );
                }
                Parsed::Partial | Parsed::Other => {
                    assert_eq!(
                        &read[..],
                        &wire[..],
                        "seed {seed}: {:?}",
                        String::from_utf8_lossy(&head)
                    )
                }
            }
        }
        assert!(served > 1000, "seed {seed}: only {served} heads were plain");
    }
}
