//! The request path's own HTTP/1.1 client: one request at a time on a backend
//! connection, its response head parsed as it arrives and its body read straight
//! from the connection's socket by the client connection's task.
//!
//! - **Requests** go out as HTTP/1.1 in origin form, their fields as given (the
//!   request path has already removed the hop-by-hop ones). The body keeps its
//!   framing when its length is known (`Content-Length`) and is sent `chunked`
//!   otherwise. The request is written while the response is read, so that a
//!   backend that answers before it has read the whole body (a 413, say) is
//!   heard; the connection then closes.
//! - **Responses** are parsed by `httparse` with the limits of hyper's own client
//!   (100 fields, a head of at most [`MAX_HEAD`] bytes); a bare LF in a head, a
//!   status outside 100–599 and an unknown version are errors. Informational responses
//!   (`1xx` but `101`) are skipped; a `101` answers no request of this path and
//!   is an error. The body's length follows RFC 9112 section 6.3: none for `HEAD`,
//!   `204` and `304`; `chunked` when it is the last transfer coding; read to the
//!   end of the connection for any other transfer coding or when no length is
//!   given; else `Content-Length`, whose copies must agree (they reach the
//!   client as one value). A response with both
//!   `Transfer-Encoding` and `Content-Length`, or with a transfer coding in
//!   HTTP/1.0, is refused (RFC 9112 section 6.3 asks an intermediary to treat it
//!   as an error or to drop the length; forwarding it could split responses).
//! - **Reuse.** Once the response's body was read to its end and the request was
//!   sent whole, the connection goes back to its backend's pool, at once and from
//!   the body itself: nothing else drives an idle connection. It does not when
//!   the response was HTTP/1.0, said `Connection: close`, ended with the
//!   connection, or was followed by bytes nobody asked for.
//! - **Errors** are I/O errors: `InvalidData` for a response that breaks the
//!   protocol, `UnexpectedEof` for a connection that ended too early. A body cut
//!   short ends with an error, never as if whole.

use std::future::{poll_fn, Future};
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::ops::Range;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::thread::ThreadId;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode, Version};
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;

use crate::backend::Backend;
use crate::body::{BoxError, UpstreamBody};
use crate::state::GroupState;

/// The most fields a response head may have (hyper's client's default).
const MAX_HEADERS: usize = 100;
/// The longest a response head may be, in bytes (hyper's client's default
/// buffer bound, 8 KiB + 100 × 4 KiB).
pub(crate) const MAX_HEAD: usize = 8192 + 4096 * 100;
/// The longest a chunk's extensions or a body's trailer section may be, in bytes.
const MAX_CHUNK_META: usize = 16 * 1024;
/// Room asked for before each read of the socket.
const READ_ROOM: usize = 8192;

/// One HTTP/1.1 connection to a backend, idle in its pool or carrying one request.
pub(crate) struct BackendConn {
    io: TcpStream,
    /// Bytes read from the backend and not yet consumed.
    read: BytesMut,
    /// The request head being written; kept for the connection's next request.
    head: Vec<u8>,
    /// The thread whose runtime registered the socket.
    home: ThreadId,
    /// That thread's shard of the pools.
    shard: usize,
}

impl BackendConn {
    /// A connection opened on the current thread.
    pub(crate) fn new(io: TcpStream) -> Self {
        BackendConn {
            io,
            read: BytesMut::new(),
            head: Vec::new(),
            home: std::thread::current().id(),
            shard: crate::pool::thread_shard(),
        }
    }

    /// The thread whose runtime drives the socket.
    pub(crate) fn home(&self) -> ThreadId {
        self.home
    }

    /// The socket's local port, which tells connections apart in tests.
    #[cfg(test)]
    pub(crate) fn local_port(&self) -> u16 {
        self.io.local_addr().map_or(0, |a| a.port())
    }

    /// The pools' shard of the thread that drives the socket.
    pub(crate) fn shard(&self) -> usize {
        self.shard
    }

    /// Whether an idle connection is still usable: the backend sent neither a
    /// byte nor the end of the connection. Makes no system call while the socket
    /// has not been seen readable.
    pub(crate) fn is_open_idle(&self) -> bool {
        if !self.read.is_empty() {
            return false;
        }
        let mut probe = [0u8; 1];
        match self.io.try_read(&mut probe) {
            // the end, or bytes no request asked for
            Ok(_) => false,
            Err(e) => e.kind() == io::ErrorKind::WouldBlock,
        }
    }

    /// Reads what the socket has into the read buffer: `Ok(0)` at its end.
    ///
    /// Through tokio's own read, which forgets the socket's readiness after a
    /// read that did not fill the room it had: the next read, and the check of
    /// an idle connection, then wait for the runtime to see the socket readable
    /// rather than ask the kernel for bytes that are not there.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.read.capacity() - self.read.len() < READ_ROOM / 4 {
            self.read.reserve(READ_ROOM);
        }
        std::pin::pin!(self.io.read_buf(&mut self.read)).poll(cx)
    }
}

fn invalid(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

fn early_end(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, what.to_owned())
}

/// Why an exchange failed, and whether the backend had sent anything.
#[derive(Debug)]
pub(crate) struct ExchangeError {
    pub(crate) error: io::Error,
    /// Nothing came from the backend before the failure (no byte of a response):
    /// on a reused connection, the backend most likely closed it while idle.
    pub(crate) silent: bool,
}

/// Where a field's name and value lie in a response head.
#[derive(Debug)]
struct Span {
    name: Range<usize>,
    value: Range<usize>,
}

/// The fields of a backend's response to forward, as it sent them: its head's
/// bytes and where each field lies in them, written to the client from there
/// rather than through a header map. Hop-by-hop fields (and those `Connection`
/// names) are not among them, nor `Content-Length`, whose copies make the one
/// [`RawFields::length`]. `httparse` has checked every name and value by the
/// rules of `http`'s `HeaderName` and `HeaderValue`.
#[derive(Debug)]
pub(crate) struct RawFields {
    head: Bytes,
    spans: Vec<Span>,
    length: Option<u64>,
}

impl RawFields {
    /// The fields, names as the backend wrote them.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.spans
            .iter()
            .map(|s| (&self.head[s.name.clone()], &self.head[s.value.clone()]))
    }

    /// The response's `Content-Length`, if it gave one.
    pub(crate) fn length(&self) -> Option<u64> {
        self.length
    }

    /// Drops every field named `name`.
    pub(crate) fn remove(&mut self, name: &HeaderName) {
        let head = &self.head;
        let name = name.as_str().as_bytes();
        self.spans
            .retain(|s| !head[s.name.clone()].eq_ignore_ascii_case(name));
    }

    /// Appends the fields (and the length) to `headers`, sharing the head's bytes.
    pub(crate) fn append_to(self, headers: &mut HeaderMap) {
        headers.reserve(self.spans.len() + 1);
        for span in &self.spans {
            let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(&self.head[span.name.clone()]),
                HeaderValue::from_maybe_shared(self.head.slice(span.value.clone())),
            ) else {
                continue;
            };
            headers.append(name, value);
        }
        if let Some(n) = self.length {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        }
    }
}

/// How a message's body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    /// `Content-Length`: this many bytes left.
    Length(u64),
    /// `chunked`, at this point of the coding.
    Chunked(Chunk),
    /// Until the connection ends.
    Close,
    /// Read to its end.
    Done,
}

/// Where a `chunked` decoder is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunk {
    /// Reading the size's hex digits: the value so far and how many digits
    /// (leading zeros included).
    Size {
        value: u64,
        digits: usize,
    },
    /// Skipping extensions, this many bytes so far.
    Ext {
        value: u64,
        seen: usize,
    },
    /// After the size line's CR.
    SizeLf {
        value: u64,
    },
    /// This many bytes of data left in the chunk.
    Data(u64),
    /// After a chunk's data: its CR, then its LF.
    DataCr,
    DataLf,
    /// In the trailer section: this many bytes so far, whether at a line's start,
    /// whether after a CR.
    Trailer {
        seen: usize,
        line_start: bool,
        cr: bool,
    },
    /// After the trailer section's empty line: the body's end.
    End,
}

/// A request's head as the request path has it, borrowed: every attempt of a
/// request writes it again, and nothing of it is copied but into the bytes sent.
pub(crate) struct RequestHead<'a> {
    pub(crate) method: &'a Method,
    /// The origin-form target.
    pub(crate) target: &'a str,
    /// The fields to send; a `Transfer-Encoding` among them is not sent (the body
    /// is framed again).
    pub(crate) headers: &'a HeaderMap,
    /// The `Host` to send when `headers` has none.
    pub(crate) host: &'a str,
    /// More fields, sent after `headers`.
    pub(crate) extra: [Option<(&'a HeaderName, &'a HeaderValue)>; 4],
}

/// Sends the request `head` and `body` on `conn` and reads the response's head;
/// the response's body reads the rest from the connection and gives it back to
/// `backend`'s pool for `group`'s state once read to its end.
pub(crate) async fn exchange(
    mut conn: BackendConn,
    head: &RequestHead<'_>,
    mut body: UpstreamBody,
    group: &Arc<GroupState>,
    backend: &Arc<Backend>,
) -> Result<Response<Box<H1Body>>, ExchangeError> {
    let head_request = *head.method == Method::HEAD;
    let mut framing = encode_head(&mut conn.head, head, &body);
    let mut head_sent = 0usize;
    // a body frame being written: its chunk-size line, its data, its CRLF
    let mut out: [Bytes; 3] = Default::default();
    let mut body_done = framing == Framing::Done;
    let mut sent_whole = false;
    let mut received = false;
    let result = poll_fn(|cx| {
        // write as much of the request as the socket takes
        while !sent_whole {
            if head_sent < conn.head.len() {
                match poll_write_parts(&mut conn.io, cx, &conn.head[head_sent..], &out) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(early_end("the backend closed"))),
                    Poll::Ready(Ok(n)) => {
                        let in_head = n.min(conn.head.len() - head_sent);
                        head_sent += in_head;
                        advance(&mut out, n - in_head);
                        continue;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => break,
                }
            }
            if out.iter().any(|b| !b.is_empty()) {
                match poll_write_parts(&mut conn.io, cx, &[], &out) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(early_end("the backend closed"))),
                    Poll::Ready(Ok(n)) => {
                        advance(&mut out, n);
                        continue;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => break,
                }
            }
            if body_done {
                sent_whole = true;
                break;
            }
            match Pin::new(&mut body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        // trailers of the client's: not forwarded
                        continue;
                    };
                    if data.is_empty() {
                        continue;
                    }
                    match &mut framing {
                        Framing::Length(left) => {
                            let n = data.len() as u64;
                            if n > *left {
                                return Poll::Ready(Err(invalid(
                                    "the request body is longer than its length",
                                )));
                            }
                            *left -= n;
                            out[1] = data;
                        }
                        _ => {
                            out[0] = Bytes::from(format!("{:x}\r\n", data.len()));
                            out[1] = data;
                            out[2] = Bytes::from_static(b"\r\n");
                        }
                    }
                }
                Poll::Ready(None) => {
                    match framing {
                        Framing::Length(0) | Framing::Done => {}
                        Framing::Length(_) => {
                            return Poll::Ready(Err(invalid(
                                "the request body is shorter than its length",
                            )))
                        }
                        _ => out[2] = Bytes::from_static(b"0\r\n\r\n"),
                    }
                    framing = Framing::Done;
                    body_done = true;
                }
                Poll::Ready(Some(Err(e))) => {
                    return Poll::Ready(Err(io::Error::other(format!("request body: {e}"))));
                }
                Poll::Pending => break,
            }
        }
        // read the response's head
        loop {
            if !conn.read.is_empty() {
                received = true;
                match parse_head(&mut conn.read, head_request)? {
                    Some(head) => return Poll::Ready(Ok(head)),
                    None if conn.read.len() > MAX_HEAD => {
                        return Poll::Ready(Err(invalid("the response head is too large")))
                    }
                    None => {}
                }
            }
            match ready!(conn.poll_fill(cx)) {
                Ok(0) => {
                    return Poll::Ready(Err(early_end(if conn.read.is_empty() {
                        "the backend closed the connection before any response"
                    } else {
                        "the backend closed the connection within the response head"
                    })))
                }
                Ok(_) => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    })
    .await;
    match result {
        Ok((response, framing, keep_alive, fields)) => {
            // boxed: the response moves a few times on its way to the client
            let mut body = Box::new(H1Body {
                fields: Some(fields),
                conn: Some(conn),
                framing,
                reusable: keep_alive && sent_whole,
                group: group.clone(),
                backend: backend.clone(),
            });
            body.settle();
            Ok(response.map(|()| body))
        }
        Err(error) => Err(ExchangeError {
            error,
            silent: !received,
        }),
    }
}

/// Writes `first` then `rest` to `io`, as much as it takes at once: one plain
/// write when only one of them has bytes (the kernel then has no vector to
/// read), else one vectored write of those that have.
pub(crate) fn poll_write_parts<W: AsyncWrite + Unpin>(
    io: &mut W,
    cx: &mut Context<'_>,
    first: &[u8],
    rest: &[Bytes; 3],
) -> Poll<io::Result<usize>> {
    let mut slices = [IoSlice::new(&[]); 4];
    let mut count = 0;
    for part in std::iter::once(first).chain(rest.iter().map(|b| &b[..])) {
        if !part.is_empty() {
            slices[count] = IoSlice::new(part);
            count += 1;
        }
    }
    match count {
        0 => Poll::Ready(Ok(0)),
        1 => Pin::new(io).poll_write(cx, &slices[0]),
        _ => Pin::new(io).poll_write_vectored(cx, &slices[..count]),
    }
}

/// Consumes `n` written bytes from the front of `out`.
pub(crate) fn advance(out: &mut [Bytes; 3], mut n: usize) {
    for b in out.iter_mut() {
        let k = n.min(b.len());
        b.advance(k);
        n -= k;
    }
}

/// Writes the request line and fields of `request` into `head`; returns the
/// body's framing.
fn encode_head(head: &mut Vec<u8>, request: &RequestHead<'_>, body: &UpstreamBody) -> Framing {
    fn field(head: &mut Vec<u8>, name: &[u8], value: &[u8]) {
        head.extend_from_slice(name);
        head.extend_from_slice(b": ");
        head.extend_from_slice(value);
        head.extend_from_slice(b"\r\n");
    }
    head.clear();
    head.extend_from_slice(request.method.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(request.target.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    let mut length = None;
    let mut host = false;
    for (name, value) in request.headers {
        if name == header::TRANSFER_ENCODING {
            continue;
        }
        if name == header::HOST {
            host = true;
        } else if name == header::CONTENT_LENGTH {
            length = value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok());
        }
        field(head, name.as_str().as_bytes(), value.as_bytes());
    }
    if !host {
        field(head, b"host", request.host.as_bytes());
    }
    for (name, value) in request.extra.iter().flatten() {
        field(head, name.as_str().as_bytes(), value.as_bytes());
    }
    let framing = if body.is_end_stream() {
        Framing::Done
    } else if let Some(n) = length.or_else(|| body.size_hint().exact()) {
        if length.is_none() {
            field(head, b"content-length", n.to_string().as_bytes());
        }
        Framing::Length(n)
    } else {
        field(head, b"transfer-encoding", b"chunked");
        Framing::Chunked(Chunk::Size {
            value: 0,
            digits: 0,
        })
    };
    head.extend_from_slice(b"\r\n");
    framing
}

/// Whether a field's comma-separated tokens include `token` (any case).
pub(crate) fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// The length of a message's `Content-Length` copies, which must agree.
fn content_length(value: &[u8], length: &mut Option<u64>) -> io::Result<()> {
    let not_a_length = || invalid("the response's Content-Length is not a length");
    for part in value.split(|&b| b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() {
            return Err(not_a_length());
        }
        // any number of digits (leading zeros included), a value that fits
        let mut n: u64 = 0;
        for &b in part {
            if !b.is_ascii_digit() {
                return Err(not_a_length());
            }
            n = n
                .checked_mul(10)
                .and_then(|n| n.checked_add(u64::from(b - b'0')))
                .ok_or_else(not_a_length)?;
        }
        match *length {
            Some(m) if m != n => {
                return Err(invalid("the response's Content-Length copies disagree"))
            }
            _ => *length = Some(n),
        }
    }
    Ok(())
}

/// A final response head, parsed from `read` (and removed from it), with its
/// body's framing and whether the connection may carry another request; `None`
/// while the head is incomplete. Informational responses are skipped.
#[allow(clippy::type_complexity)]
fn parse_head(
    read: &mut BytesMut,
    head_request: bool,
) -> io::Result<Option<(Response<()>, Framing, bool, RawFields)>> {
    loop {
        let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut []);
        let parsing = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut parsed,
            read,
            &mut fields,
        );
        let len = match parsing {
            Ok(httparse::Status::Complete(len)) if len > MAX_HEAD => {
                return Err(invalid("the response head is too large"))
            }
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(invalid(format!("the response head: {e}"))),
        };
        let code = parsed.code.unwrap_or(0);
        let version = parsed.version.unwrap_or(1);
        if (100..200).contains(&code) {
            if code == 101 {
                return Err(invalid("a 101 response to a request that asked no upgrade"));
            }
            read.advance(len);
            continue;
        }
        // a bare LF ends a line for httparse: a value with one would reach the
        // client as two fields (RFC 9112 section 2.2 lets a recipient refuse it)
        if memchr::memchr_iter(b'\n', &read[..len]).any(|i| i == 0 || read[i - 1] != b'\r') {
            return Err(invalid("a bare LF in the response head"));
        }
        // RFC 9110 section 15: a status outside 100..=599 is invalid
        let status = StatusCode::from_u16(code)
            .ok()
            .filter(|_| code <= 599)
            .ok_or_else(|| invalid(format!("the response's status {code}")))?;
        // where each field lies in the head, to share the head's bytes
        let base = read.as_ptr() as usize;
        let mut spans = Vec::with_capacity(parsed.headers.len());
        let mut length = None;
        let mut transfer = None;
        let mut named_by_connection = false;
        // HTTP/1.0 keeps a connection only when asked to; HTTP/1.1 unless told not to
        let mut close = version == 0;
        for field in parsed.headers.iter() {
            let name = field.name.as_bytes();
            let hop_by_hop = crate::forward::HOP_BY_HOP
                .iter()
                .any(|h| name.eq_ignore_ascii_case(h.as_str().as_bytes()));
            let is_length = !hop_by_hop && name.eq_ignore_ascii_case(b"content-length");
            if !hop_by_hop && !is_length {
                let name_at = field.name.as_ptr() as usize - base;
                let value_at = field.value.as_ptr() as usize - base;
                spans.push(Span {
                    name: name_at..name_at + field.name.len(),
                    value: value_at..value_at + field.value.len(),
                });
            }
            if is_length {
                // its copies, a list or leading zeros reach the client as one
                // value (RFC 9110 section 8.6)
                content_length(field.value, &mut length)?;
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                // the last coding of the last field is the one that frames
                let last = field.value.rsplit(|&b| b == b',').next().unwrap_or(b"");
                transfer = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            } else if name.eq_ignore_ascii_case(b"connection") {
                // `close` and `keep-alive` name no other field
                named_by_connection |= field.value.split(|&b| b == b',').any(|t| {
                    let t = t.trim_ascii();
                    !t.is_empty()
                        && !t.eq_ignore_ascii_case(b"close")
                        && !t.eq_ignore_ascii_case(b"keep-alive")
                });
                if has_token(field.value, "close") {
                    close = true;
                } else if version == 0 && has_token(field.value, "keep-alive") {
                    close = false;
                }
            }
        }
        let no_body = head_request || code == 204 || code == 304;
        let framing = match (no_body, transfer, length) {
            (true, _, _) => Framing::Done,
            (false, Some(_), Some(_)) => {
                return Err(invalid(
                    "the response has both Transfer-Encoding and Content-Length",
                ))
            }
            (false, Some(_), None) if version == 0 => {
                return Err(invalid("an HTTP/1.0 response with a Transfer-Encoding"))
            }
            (false, Some(true), None) => Framing::Chunked(Chunk::Size {
                value: 0,
                digits: 0,
            }),
            (false, Some(false), None) => Framing::Close,
            (false, None, Some(0)) => Framing::Done,
            (false, None, Some(n)) => Framing::Length(n),
            (false, None, None) => Framing::Close,
        };
        if named_by_connection {
            // the fields `Connection` names are this hop's too
            let named: Vec<Vec<u8>> = parsed
                .headers
                .iter()
                .filter(|f| f.name.eq_ignore_ascii_case("connection"))
                .flat_map(|f| f.value.split(|&b| b == b','))
                .map(|t| t.trim_ascii().to_ascii_lowercase())
                .collect();
            spans.retain(|s| {
                let name = &read[s.name.clone()];
                !named.iter().any(|n| name.eq_ignore_ascii_case(n))
            });
        }
        let head = read.split_to(len).freeze();
        let mut response = Response::new(());
        *response.status_mut() = status;
        // the proxy answers with its own version (RFC 9110 section 2.5)
        *response.version_mut() = Version::HTTP_11;
        let keep_alive = !close && framing != Framing::Close;
        let fields = RawFields {
            head,
            spans,
            length,
        };
        return Ok(Some((response, framing, keep_alive, fields)));
    }
}

/// A backend's response body, read from its connection; the connection goes back
/// to its pool once the body was read to its end (see the module's docs).
pub(crate) struct H1Body {
    /// The response's fields, until the response's head is written.
    fields: Option<RawFields>,
    /// Until the body ends or fails.
    conn: Option<BackendConn>,
    framing: Framing,
    /// Whether the connection may carry another request after this body.
    reusable: bool,
    group: Arc<GroupState>,
    backend: Arc<Backend>,
}

impl std::fmt::Debug for H1Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H1Body")
            .field("framing", &self.framing)
            .finish_non_exhaustive()
    }
}

impl H1Body {
    /// The response's fields, for the response's head (once).
    pub(crate) fn take_fields(&mut self) -> Option<RawFields> {
        self.fields.take()
    }

    /// Once the body is read to its end: the connection back to its pool, when it
    /// may be reused and its group state still serves; else it closes.
    fn settle(&mut self) {
        if self.framing != Framing::Done {
            return;
        }
        let Some(conn) = self.conn.take() else {
            return;
        };
        if !self.reusable || !conn.read.is_empty() || self.group.retired.load(Ordering::Acquire) {
            return;
        }
        self.backend.pool.put(self.group.serial, conn);
        // a retirement between the check and the put has purged the pool before
        // the put: purge again
        if self.group.retired.load(Ordering::Acquire) {
            self.backend.pool.purge(self.group.serial);
        }
    }
}

/// The next part of a body framed by `framing` out of `read`, if it holds one;
/// `framing` becomes [`Framing::Done`] at the body's end (the bytes after it stay
/// in `read`).
fn decode(framing: &mut Framing, read: &mut BytesMut) -> io::Result<Option<Bytes>> {
    loop {
        if read.is_empty() {
            return Ok(None);
        }
        match framing {
            Framing::Done => return Ok(None),
            Framing::Close => return Ok(Some(read.split().freeze())),
            Framing::Length(left) => {
                let n = (*left).min(read.len() as u64) as usize;
                *left -= n as u64;
                if *left == 0 {
                    *framing = Framing::Done;
                }
                return Ok(Some(read.split_to(n).freeze()));
            }
            Framing::Chunked(chunk) => {
                if let Chunk::Data(left) = chunk {
                    let n = (*left).min(read.len() as u64) as usize;
                    *left -= n as u64;
                    if *left == 0 {
                        *chunk = Chunk::DataCr;
                    }
                    return Ok(Some(read.split_to(n).freeze()));
                }
                let b = read[0];
                read.advance(1);
                *chunk = chunk_step(*chunk, b)?;
                if *chunk == Chunk::End {
                    *framing = Framing::Done;
                }
            }
        }
    }
}

/// One byte of a `chunked` body's framing.
fn chunk_step(chunk: Chunk, b: u8) -> io::Result<Chunk> {
    let bad = |what: &str| Err(invalid(format!("the response's chunked body: {what}")));
    Ok(match chunk {
        Chunk::Size { value, digits } => match b {
            b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                // leading zeros are allowed, up to the bound on the line
                if value > u64::MAX >> 4 {
                    return bad("a chunk size too large");
                }
                if digits >= MAX_CHUNK_META {
                    return bad("a chunk size line too long");
                }
                let d = (b as char).to_digit(16).unwrap_or(0) as u64;
                Chunk::Size {
                    value: (value << 4) | d,
                    digits: digits + 1,
                }
            }
            _ if digits == 0 => return bad("a chunk size expected"),
            b'\r' => Chunk::SizeLf { value },
            b';' | b' ' | b'\t' => Chunk::Ext { value, seen: 0 },
            _ => return bad("a chunk size expected"),
        },
        Chunk::Ext { value, seen } => match b {
            b'\r' => Chunk::SizeLf { value },
            b'\n' => return bad("a bare LF in a chunk's extensions"),
            _ if seen >= MAX_CHUNK_META => return bad("chunk extensions too long"),
            _ => Chunk::Ext {
                value,
                seen: seen + 1,
            },
        },
        Chunk::SizeLf { value } => match b {
            b'\n' if value == 0 => Chunk::Trailer {
                seen: 0,
                line_start: true,
                cr: false,
            },
            b'\n' => Chunk::Data(value),
            _ => return bad("LF expected after a chunk size"),
        },
        Chunk::Data(_) | Chunk::End => unreachable!("data is taken whole, the end is no byte"),
        Chunk::DataCr => match b {
            b'\r' => Chunk::DataLf,
            _ => return bad("CRLF expected after a chunk's data"),
        },
        Chunk::DataLf => match b {
            b'\n' => Chunk::Size {
                value: 0,
                digits: 0,
            },
            _ => return bad("CRLF expected after a chunk's data"),
        },
        Chunk::Trailer {
            seen,
            line_start,
            cr,
        } => {
            if seen >= MAX_CHUNK_META {
                return bad("trailer section too long");
            }
            match (b, cr) {
                (b'\n', true) if line_start => Chunk::End,
                (b'\n', true) => Chunk::Trailer {
                    seen: seen + 1,
                    line_start: true,
                    cr: false,
                },
                (_, true) => return bad("a bare CR in the trailer section"),
                (b'\r', false) => Chunk::Trailer {
                    seen: seen + 1,
                    line_start,
                    cr: true,
                },
                (b'\n', false) => return bad("a bare LF in the trailer section"),
                _ => Chunk::Trailer {
                    seen: seen + 1,
                    line_start: false,
                    cr: false,
                },
            }
        }
    })
}

impl Body for H1Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            let decoded = match this.conn.as_mut() {
                Some(conn) => decode(&mut this.framing, &mut conn.read),
                None => Ok(None),
            };
            match decoded {
                Ok(Some(data)) => {
                    this.settle();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(None) => {}
                Err(e) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
            if this.framing == Framing::Done {
                this.settle();
                return Poll::Ready(None);
            }
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match ready!(conn.poll_fill(cx)) {
                Ok(0) if this.framing == Framing::Close => {
                    this.framing = Framing::Done;
                    this.conn = None;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(early_end(
                        "the backend closed the connection before the body's end",
                    )
                    .into())));
                }
                Ok(_) => {}
                Err(e) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.framing == Framing::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(n) => SizeHint::with_exact(n),
            Framing::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

impl Drop for H1Body {
    fn drop(&mut self) {
        // a client that stops asking once the length it was told is reached
        self.settle();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `wire` to the decoder in pieces of the sizes `rng` draws; returns the
    /// body, what was left after its end, and whether the decoder reached the end.
    fn feed(
        framing: &mut Framing,
        wire: &[u8],
        rng: &mut fastrand::Rng,
    ) -> io::Result<(Vec<u8>, Vec<u8>)> {
        let mut read = BytesMut::new();
        let mut body = Vec::new();
        let mut at = 0;
        while at < wire.len() {
            let n = rng.usize(1..=(wire.len() - at).min(64));
            read.extend_from_slice(&wire[at..at + n]);
            at += n;
            while let Some(part) = decode(framing, &mut read)? {
                assert!(!part.is_empty(), "an empty part");
                body.extend_from_slice(&part);
            }
        }
        Ok((body, read.to_vec()))
    }

    fn chunked(body: &[u8], rng: &mut fastrand::Rng) -> Vec<u8> {
        let mut wire = Vec::new();
        let mut at = 0;
        while at < body.len() {
            let n = rng.usize(1..=(body.len() - at).min(300));
            let size = match rng.u8(0..3) {
                0 => format!("{n:x}"),
                1 => format!("{n:X}"),
                _ => format!("{n:08x}"),
            };
            wire.extend_from_slice(size.as_bytes());
            if rng.u8(0..4) == 0 {
                wire.extend_from_slice(b";name=\"va;lue\"");
            }
            wire.extend_from_slice(b"\r\n");
            wire.extend_from_slice(&body[at..at + n]);
            wire.extend_from_slice(b"\r\n");
            at += n;
        }
        wire.extend_from_slice(b"0\r\n");
        if rng.bool() {
            wire.extend_from_slice(b"x-checksum: 1\r\nx-more: two\r\n");
        }
        wire.extend_from_slice(b"\r\n");
        wire
    }

    /// Any body, however it is chunked and however its bytes arrive, decodes to
    /// itself and stops at its end, leaving what follows.
    #[test]
    fn bodies_decode_whole_in_any_pieces() {
        for seed in 0..400 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let body: Vec<u8> = (0..rng.usize(0..3000)).map(|_| rng.u8(..)).collect();
            let after: &[u8] = if rng.bool() {
                b"HTTP/1.1 200 OK\r\n"
            } else {
                b""
            };
            let (mut framing, mut wire) = if rng.bool() {
                (
                    Framing::Chunked(Chunk::Size {
                        value: 0,
                        digits: 0,
                    }),
                    chunked(&body, &mut rng),
                )
            } else if body.is_empty() {
                continue;
            } else {
                (Framing::Length(body.len() as u64), body.clone())
            };
            wire.extend_from_slice(after);
            let (got, left) = feed(&mut framing, &wire, &mut rng).unwrap();
            assert_eq!(got, body, "seed {seed}");
            assert_eq!(framing, Framing::Done, "seed {seed}");
            assert_eq!(left, after, "seed {seed}");
        }
    }

    /// A body cut anywhere before its end is not at its end.
    #[test]
    fn a_body_cut_short_is_not_done() {
        for seed in 0..200 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let body: Vec<u8> = (0..rng.usize(1..2000)).map(|_| rng.u8(..)).collect();
            let (mut framing, wire) = if rng.bool() {
                let f = Framing::Chunked(Chunk::Size {
                    value: 0,
                    digits: 0,
                });
                (f, chunked(&body, &mut rng))
            } else {
                (Framing::Length(body.len() as u64), body.clone())
            };
            let cut = rng.usize(0..wire.len());
            let result = feed(&mut framing, &wire[..cut], &mut rng);
            assert!(result.is_ok(), "seed {seed}: {result:?}");
            assert_ne!(framing, Framing::Done, "seed {seed}: cut at {cut}");
        }
    }

    #[test]
    fn malformed_chunked_bodies_are_errors() {
        let cases: &[&[u8]] = &[
            b"zz\r\n",
            b"\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloXY0\r\n\r\n",
            b"11111111111111111\r\n",
            b"5;ext\nhello",
            b"0\r\nx: 1\n\r\n",
            b"0\r\n\rX",
            b"-5\r\nhello\r\n",
            b"+5\r\nhello\r\n",
        ];
        let mut rng = fastrand::Rng::with_seed(7);
        for wire in cases {
            let mut framing = Framing::Chunked(Chunk::Size {
                value: 0,
                digits: 0,
            });
            let result = feed(&mut framing, wire, &mut rng);
            assert!(
                result.is_err(),
                "{:?} was accepted: {result:?}",
                String::from_utf8_lossy(wire)
            );
        }
    }

    /// The head's response with its fields in its header map, as hyper's
    /// server gets them.
    fn head(text: &str, head_request: bool) -> io::Result<Option<(Response<()>, Framing, bool)>> {
        let mut read = BytesMut::from(text.as_bytes());
        Ok(
            parse_head(&mut read, head_request)?.map(|(mut response, framing, keep, fields)| {
                fields.append_to(response.headers_mut());
                (response, framing, keep)
            }),
        )
    }

    fn framing_of(text: &str) -> (Framing, bool) {
        let (_, framing, keep) = head(text, false).unwrap().unwrap();
        (framing, keep)
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        let chunked = Framing::Chunked(Chunk::Size {
            value: 0,
            digits: 0,
        });
        assert_eq!(
            framing_of("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"),
            (Framing::Length(5), true)
        );
        assert_eq!(
            framing_of("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n"),
            (Framing::Length(5), true)
        );
        assert_eq!(
            framing_of("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            (chunked, true)
        );
        assert_eq!(
            framing_of("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
            (Framing::Close, false)
        );
        assert_eq!(
            framing_of("HTTP/1.1 200 OK\r\n\r\n"),
            (Framing::Close, false)
        );
        assert_eq!(
            framing_of("HTTP/1.1 204 No Content\r\ncontent-length: 9\r\n\r\n"),
            (Framing::Done, true)
        );
        assert_eq!(
            framing_of("HTTP/1.1 304 Not Modified\r\ntransfer-encoding: chunked\r\n\r\n"),
            (Framing::Done, true)
        );
        assert_eq!(
            framing_of(
                "HTTP/1.1 200 OK\r\nconnection: keep-alive, Close\r\ncontent-length: 1\r\n\r\n"
            ),
            (Framing::Length(1), false)
        );
        assert_eq!(
            framing_of("HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n"),
            (Framing::Length(1), false)
        );
        assert_eq!(
            framing_of("HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 1\r\n\r\n"),
            (Framing::Length(1), true)
        );
        let (response, framing, _) = head("HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\n", true)
            .unwrap()
            .unwrap();
        assert_eq!(framing, Framing::Done, "a response to HEAD has no body");
        assert_eq!(response.headers()["content-length"], "7");
        // informational responses are skipped
        let (response, framing, _) = head(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(response.status(), 201);
        assert_eq!(framing, Framing::Done);
        assert!(response.headers().get("link").is_none());
        // incomplete
        assert!(head("HTTP/1.1 200 OK\r\ncontent-len", false)
            .unwrap()
            .is_none());
    }

    #[test]
    fn ambiguous_or_broken_response_heads_are_errors() {
        for text in [
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 5, 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: -5\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: \r\n\r\n",
            "HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\n",
            "HTTP/1.1 200 OK\r\nbad name: 1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nfolded: a\r\n b\r\n\r\n",
            "HTTP/1.1 200 OK\r\nx: a\rb\r\n\r\n",
            "HTTP/1.1 200 OK\r\nx: a\nset-cookie: b=1\r\n\r\n",
            "HTTP/1.1 200 OK\nx: a\r\n\r\n",
            "HTTP/1.1 200 OK\r\nx: a\r\n\n",
            "garbage\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "HTTP/1.1 600 Beyond\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 18446744073709551616\r\n\r\n",
        ] {
            assert!(head(text, false).is_err(), "{text:?} was accepted");
        }
    }
}
