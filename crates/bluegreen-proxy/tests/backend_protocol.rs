//! What the proxy does with what a backend sends, and how it sends requests to a
//! backend, seen from outside: each test scripts a backend that records the
//! exact bytes the proxy sends it and answers exact bytes, and a client that
//! reads the exact bytes the proxy sends back.
//!
//! Response framing (lengths, chunks, close-delimited bodies, bodiless
//! statuses, malformed heads and bodies), requests as the backend sees them
//! (version, `Host`, hop-by-hop fields, body framing, `Expect`), reuse of
//! backend connections, upgrades, and response splitting.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

#[path = "support/scripted.rs"]
mod scripted;

use scripted::*;

#[tokio::test]
async fn a_content_length_body_arrives_exactly_and_the_connection_goes_on() {
    let backend = Scripted::always(
        b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nX-App: one\r\n\r\nhello world",
        After::KeepOpen,
    )
    .await;
    let proxy = proxy_to(&backend).await;
    let mut client = Client::connect(&proxy).await;
    for _ in 0..3 {
        let reply = client.get("/").await;
        assert_eq!(reply.status, 200, "{reply:?}");
        assert!(reply.complete, "{reply:?}");
        assert_eq!(reply.text(), "hello world");
        assert_eq!(field(&reply.head, "x-app").as_deref(), Some("one"));
    }
}

#[tokio::test]
async fn a_chunked_body_with_extensions_and_trailers_arrives_exactly() {
    let backend = Scripted::replying(|seen| {
        let reply: &[u8] = if seen.head.starts_with("GET /trailers ") {
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-sum\r\n\r\n\
              5;name=value\r\nhello\r\n6;a;b=\"c d\"\r\n world\r\n0\r\nx-sum: 42\r\n\r\n"
        } else {
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
              5;name=value\r\nhello\r\n6;a;b=\"c d\"\r\n world\r\n0\r\n\r\n"
        };
        (reply.to_vec(), After::KeepOpen)
    })
    .await;
    let proxy = proxy_to(&backend).await;
    let mut client = Client::connect(&proxy).await;
    for _ in 0..2 {
        let reply = client.get("/plain").await;
        assert_eq!(reply.status, 200, "{reply:?}");
        assert!(reply.complete, "{reply:?}");
        assert_eq!(reply.text(), "hello world");
    }
    // the connection of a chunked response goes on
    assert_eq!(backend.connections(), 1);
    let reply = client.get("/trailers").await;
    assert!(reply.complete, "{reply:?}");
    assert_eq!(reply.text(), "hello world");
    assert!(reply.trailers.is_empty(), "{reply:?}");
    // a client that accepts trailers
    client
        .send(format!("GET /trailers HTTP/1.1\r\nHost: {HOST}\r\nTE: trailers\r\n\r\n").as_bytes())
        .await;
    let reply = client.response(false).await;
    assert!(reply.complete, "{reply:?}");
    assert_eq!(reply.text(), "hello world");
    // trailers are dropped, even for a client that accepts them (today's
    // behaviour; a proxy may discard them)
    assert!(reply.trailers.is_empty(), "{reply:?}");
    assert!(
        !reply.head.to_ascii_lowercase().contains("x-sum"),
        "{reply:?}"
    );
    let reply = client.get("/plain").await;
    assert_eq!((reply.status, reply.text().as_str()), (200, "hello world"));
    assert!(reply.complete, "{reply:?}");
    assert_eq!(backend.seen().len(), 5);
}

#[tokio::test]
async fn a_close_delimited_body_arrives_whole_and_its_connection_is_not_reused() {
    let backend = Scripted::always(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end",
        After::HalfClose,
    )
    .await;
    let proxy = proxy_to(&backend).await;
    let mut client = Client::connect(&proxy).await;
    for _ in 0..2 {
        let reply = client.get("/").await;
        assert_eq!(reply.status, 200, "{reply:?}");
        assert!(reply.complete, "{reply:?}");
        assert!(!reply.close_delimited, "{reply:?}");
        assert_eq!(reply.text(), "until the end");
    }
    assert_eq!(backend.seen().len(), 2);
    backend.assert_one_request_per_connection();
}

#[tokio::test]
async fn http10_responses_are_reused_only_with_keep_alive() {
    // no keep-alive: the backend keeps its connection open, the proxy must not
    // send it another request
    let backend = Scripted::always(
        b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        After::KeepOpen,
    )
    .await;
    let proxy = proxy_to(&backend).await;
    let mut client = Client::connect(&proxy).await;
    for _ in 0..2 {
        let reply = client.get("/").await;
        assert_eq!((reply.status, reply.text().as_str()), (200, "hello"));
        assert!(reply.complete, "{reply:?}");
    }
    assert_eq!(backend.seen().len(), 2);
    backend.assert_one_request_per_connection();

    // HTTP/1.0 close-delimited: today the client gets it close-delimited too
    // (and its connection closes); framed, its connection may go on
    let backend = Scripted::always(b"HTTP/1.0 200 OK\r\n\r\nhello", After::HalfClose).await;
    let proxy = proxy_to(&backend).await;
    for _ in 0..2 {
        let mut client = Client::connect(&proxy).await;
        let reply = client.get("/").await;
        assert_eq!((reply.status, reply.text().as_str()), (200, "hello"));
        assert!(reply.complete, "{reply:?}");
        if !reply.close_delimited {
            assert_eq!(client.get("/").await.text(), "hello");
        }
    }
    backend.assert_one_request_per_connection();

    // keep-alive: the connection may serve the next request
    let backend = Scripted::always(
        b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 5\r\n\r\nhello",
        After::KeepOpen,
    )
    .await;
    let proxy = proxy_to(&backend).await;
    let mut client = Client::connect(&proxy).await;
    for _ in 0..3 {
        let reply = client.get("/").await;
        assert_eq!((reply.status, reply.text().as_str()), (200, "hello"));
        assert!(reply.complete, "{reply:?}");
    }
    assert_eq!(backend.seen().len(), 3);
    assert_eq!(backend.connections(), 1);
}

#[tokio::test]
async fn the_client_gets_the_proxys_http_version_from_an_http10_backend() {
    let backend = Scripted::always(
        b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        After::KeepOpen,
    )
    .await;
    let proxy = proxy_to(&backend).await;
    let reply = get_once(&proxy, "/").await;
    assert!(reply.head.starts_with("HTTP/1.1 200 "), "{reply:?}");
    assert_eq!(reply.text(), "hello");
}

#[tokio::test]
async fn a_head_response_has_no_body_and_the_connections_go_on() {
    let backend = Scripted::replying(|seen| {
        if seen.head.starts_with("HEAD ") {
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n".to_vec(),
                After::KeepOpen,
            )
        } else {
            (OK.to_vec(), After::KeepOpen)
        }
    })
    .await;
    let proxy = proxy_to(&backend).await;
    let mut client = Client::connect(&proxy).await;
    let reply = client.ask("HEAD", "/").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(
        field(&reply.head, "content-length").as_deref(),
        Some("1234"),
        "{reply:?}"
    );
    // nothing after the head: the next response is the next request's
    let reply = client.get("/").await;
    assert_eq!((reply.status, reply.text().as_str()), (200, "ok"));
    let reply = client.ask("HEAD", "/").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let reply = client.get("/").await;
    assert_eq!((reply.status, reply.text().as_str()), (200, "ok"));
    assert_eq!(backend.seen().len(), 4);
    assert_eq!(
        backend.connections(),
        1,
        "the backend connection was not reused"
    );
}

#[tokio::test]
async fn no_content_and_not_modified_have_no_body_and_the_connections_go_on() {
    let backend = Scripted::replying(|seen| {
        let reply: &[u8] = if seen.head.starts_with("GET /204 ") {
            b"HTTP/1.1 204 No Content\r\nX-Kind: none\r\n\r\n"
        } else if seen.head.starts_with("GET /304 ") {
            b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\n\r\n"
        } else {
            OK
        };
        (reply.to_vec(), After::KeepOpen)
    })
    .await;
    let proxy = proxy_to(&backend).await;
    let mut client = Client::connect(&proxy).await;
    let reply = client.get("/204").await;
    assert_eq!(reply.status, 204, "{reply:?}");
    assert!(
        field(&reply.head, "transfer-encoding").is_none(),
        "{reply:?}"
    );
    assert_eq!(client.get("/").await.text(), "ok");
    let reply = client.get("/304").await;
    assert_eq!(reply.status, 304, "{reply:?}");
    assert_eq!(field(&reply.head, "etag").as_deref(), Some("\"v1\""));
    assert!(
        field(&reply.head, "transfer-encoding").is_none(),
        "{reply:?}"
    );
    assert_eq!(client.get("/").await.text(), "ok");
    assert_eq!(
        backend.connections(),
        1,
        "the backend connection was not reused"
    );
}

#[tokio::test]
async fn bytes_after_a_response_never_answer_another_request() {
    // a response followed by a whole second one the proxy never asked for: a
    // desync attempt
    const SMUGGLED: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled";
    let backend = Scripted::replying(|seen| {
        let first: &[u8] = if seen.head.starts_with("GET /204 ") {
            b"HTTP/1.1 204 No Content\r\nContent-Length: 46\r\n\r\n"
        } else if seen.head.starts_with("GET /304 ") {
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 46\r\n\r\n"
        } else if seen.head.starts_with("HEAD ") {
            b"HTTP/1.1 200 OK\r\nContent-Length: 46\r\n\r\n"
        } else if seen.head.starts_with("GET /extra ") {
            OK
        } else {
            return (OK.to_vec(), After::KeepOpen);
        };
        let mut reply = first.to_vec();
        reply.extend_from_slice(SMUGGLED);
        (reply, After::KeepOpen)
    })
    .await;
    for (method, path, status) in [
        ("GET", "/204", 204),
        ("GET", "/304", 304),
        ("HEAD", "/", 200),
        ("GET", "/extra", 200),
    ] {
        let proxy = proxy_to(&backend).await;
        let mut client = Client::connect(&proxy).await;
        let reply = client.ask(method, path).await;
        assert_eq!(reply.status, status, "{method} {path}: {reply:?}");
        for _ in 0..3 {
            let mut other = Client::connect(&proxy).await;
            let reply = other.get("/").await;
            assert_eq!(
                (reply.status, reply.text().as_str()),
                (200, "ok"),
                "after {method} {path}: {reply:?}"
            );
            let reply = client.get("/").await;
            assert_eq!(
                (reply.status, reply.text().as_str()),
                (200, "ok"),
                "after {method} {path}: {reply:?}"
            );
        }
    }
}

#[tokio::test]
async fn content_length_with_transfer_encoding_is_502() {
    // RFC 9112 section 6.3: such a message "ought to be handled as an error";
    // forwarding it by either framing could split responses
    for response in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\n0\r\n\r\n"[..],
        &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 30\r\n\r\n\
          5\r\nhello\r\n0\r\n\r\n"[..],
        &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 5\r\n\r\nhello"[..],
    ] {
        let backend = Scripted::always(response, After::KeepOpen).await;
        let proxy = proxy_to(&backend).await;
        let mut client = Client::connect(&proxy).await;
        let reply = client.get("/").await;
        assert_eq!(reply.status, 502, "{reply:?}");
        assert!(!reply.head.contains("hello"), "{reply:?}");
        // the client's connection goes on, on a new backend connection (a GET
        // that failed is tried once more: two tries a request)
        let reply = client.get("/").await;
        assert_eq!(reply.status, 502, "{reply:?}");
        assert_eq!(backend.connections(), 4);
        backend.assert_one_request_per_connection();
    }
}

#[tokio::test]
async fn two_different_content_lengths_are_502() {
    for response in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"[..],
        &b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello!"[..],
    ] {
        let backend = Scripted::always(response, After::KeepOpen).await;
        let proxy = proxy_to(&backend).await;
        let reply = get_once(&proxy, "/").await;
        assert_eq!(
            reply.status,
            502,
            "{}: {reply:?}",
            String::from_utf8_lossy(response)
        );
        assert!(!reply.text().contains("hello"), "{reply:?}");
    }
}

#[tokio::test]
async fn garbage_content_lengths_are_502() {
    for length in ["-1", "abc", "+5", "0x5", "5 5", "99999999999999999999999"] {
        let response = format!("HTTP/1.1 200 OK\r\nContent-Length: {length}\r\n\r\nhello");
        let backend = Scripted::always(response.as_bytes(), After::KeepOpen).await;
        let proxy = proxy_to(&backend).await;
        let reply = get_once(&proxy, "/").await;
        assert_eq!(reply.status, 502, "Content-Length: {length}: {reply:?}");
        assert!(!reply.text().contains("hello"), "{reply:?}");
    }
}

/// The response the client got for a body the backend framed wrongly: a 502,
/// a response visibly cut, or none at all (the connection closed), never a
/// complete one; and the backend's connection is not used again.
async fn assert_cut(response: &[u8]) {
    let backend = Scripted::always(response, After::KeepOpen).await;
    let proxy = proxy_to(&backend).await;
    let mut client = Client::connect(&proxy).await;
    let reply = client.get("/").await;
    let cut = match reply.status {
        502 => true,
        200 => !reply.complete,
        0 => reply.head.is_empty() && client.closed().await,
        _ => false,
    };
    assert!(cut, "{}: {reply:?}", String::from_utf8_lossy(response));
    // a new request gets a new backend connection
    let _ = get_once(&proxy, "/").await;
    backend.assert_one_request_per_connection();
}

#[tokio::test]
async fn an_invalid_chunk_size_cuts_the_response() {
    assert_cut(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\nworld\r\n0\r\n\r\n")
        .await;
    assert_cut(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n")
        .await;
    // chunk data longer than its size
    assert_cut(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n")
        .await;
}

#[tokio::test]
async fn a_chunk_size_overflowing_u64_cuts_the_response() {
    // 2^64 + 5: wrapping would read it as 5
    assert_cut(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000005\r\nhello\r\n0\r\n\r\n")
        .await;
    assert_cut(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\nhello\r\n0\r\n\r\n")
        .await;
}

#[tokio::test]
async fn a_response_head_of_70_kib_passes_whole() {
    let value = "v".repeat(70 * 1024);
    let response = format!("HTTP/1.1 200 OK\r\nX-Large: {value}\r\nContent-Length: 2\r\n\r\nok");
    let backend = Scripted::always(response.as_bytes(), After::KeepOpen).await;
    let proxy = proxy_to(&backend).await;
    let reply = get_once(&proxy, "/").await;
    assert_eq!(reply.status, 200, "{:?}", &reply.head.get(..200));
    assert_eq!(
        field(&reply.head, "x-large").as_deref(),
        Some(value.as_str())
    );
    assert_eq!(reply.text(), "ok");
}

#[tokio::test]
async fn an_endless_response_head_is_502() {
    // 1 MiB of fields, and no end of the head
    let backend = Scripted::custom(|mut peer| async move {
        if peer.request().await.is_none() {
            return;
        }
        let _ = peer.send(b"HTTP/1.1 200 OK\r\n").await;
        let line = format!("X-Filler: {}\r\n", "f".repeat(1000));
        for _ in 0..1024 {
            if !peer.send(line.as_bytes()).await {
                return;
            }
        }
        let _ = peer.request().await;
    })
    .await;
    let proxy = proxy_to(&backend).await;
    let reply = get_once(&proxy, "/").await;
    assert_eq!(reply.status, 502, "{:?}", &reply.head.get(..200));
    assert!(!reply.head.to_ascii_lowercase().contains("x-filler"));
}

/// A backend that sends `response` and closes (or stops sending only), and
/// the client whose response it cuts: the client sees it cut, its connection
/// closes, and the backend connection carries no other request.
async fn assert_cut_then_closed(response: &[u8]) {
    for after in [After::Close, After::HalfClose] {
        let backend = Scripted::always(response, after).await;
        let proxy = proxy_to(&backend).await;
        let mut client = Client::connect(&proxy).await;
        let reply = client.get("/").await;
        // a 502, a response visibly cut, or no response at all (the proxy closed
        // the connection before its head left): never a body that looks whole
        assert!(
            reply.status == 502 || reply.status == 0 || (reply.status == 200 && !reply.complete),
            "{after:?}: a cut body looked complete: {reply:?}"
        );
        assert!(client.closed().await, "the client connection went on");
        // the next request gets a new backend connection, and its own response
        let reply = get_once(&proxy, "/").await;
        assert!(reply.status == 502 || !reply.complete, "{reply:?}");
        assert_eq!(backend.connections(), 2);
        backend.assert_one_request_per_connection();
    }
}

#[tokio::test]
async fn a_body_shorter_than_its_content_length_is_cut_for_the_client() {
    // ten bytes of a hundred, then the backend's end
    assert_cut_then_closed(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten..").await;
}

#[tokio::test]
async fn a_chunked_body_without_its_last_chunk_is_cut_for_the_client() {
    assert_cut_then_closed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        .await;
    // in the middle of a chunk
    assert_cut_then_closed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\nhello")
        .await;
}

#[tokio::test]
async fn an_empty_reply_is_502() {
    for after in [After::Close, After::HalfClose] {
        let backend = Scripted::always(b"", after).await;
        let proxy = proxy_to(&backend).await;
        let mut client = Client::connect(&proxy).await;
        let reply = client.get("/").await;
        assert_eq!(reply.status, 502, "{after:?}: {reply:?}");
        assert!(reply.complete, "{reply:?}");
        backend.assert_one_request_per_connection();
    }
}

#[tokio::test]
async fn garbage_instead_of_a_status_line_is_502() {
    for response in [
        &b"garbage\r\n\r\n"[..],
        &b"HTTP/1.1 abc OK\r\nContent-Length: 2\r\n\r\nok"[..],
        &b"HTTP/1.1 20 OK\r\nContent-Length: 2\r\n\r\nok"[..],
        &b"HTTP/2.0 200 OK\r\nContent-Length: 2\r\n\r\nok"[..],
        &b"ICY 200 OK\r\nContent-Length: 2\r\n\r\nok"[..],
        &b"\x00\x01\x02\x03\xff\xfe\r\n\r\n"[..],
    ] {
        let backend = Scripted::always(response, After::KeepOpen).await;
        let proxy = proxy_to(&backend).await;
        let reply = get_once(&proxy, "/").await;
        assert_eq!(
            reply.status,
            502,
            "{}: {reply:?}",
            String::from_utf8_lossy(response)
        );
    }
}

#[tokio::test]
async fn informational_responses_before_the_final_one_are_not_forwarded() {
    let backend = Scripted::replying(|seen| {
        let reply: &[u8] = if seen.head.starts_with("GET /100 ") {
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal"
        } else if seen.head.starts_with("GET /103 ") {
            b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n\
              HTTP/1.1 102 Processing\r\n\r\n\
              HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal"
        } else {
            OK
        };
        (reply.to_vec(), After::KeepOpen)
    })
    .await;
    let proxy = proxy_to(&backend).await;
    let mut client = Client::connect(&proxy).await;
    for path in ["/100", "/103"] {
        let reply = client.get(path).await;
        assert_eq!(
            (reply.status, reply.text().as_str()),
            (200, "final"),
            "{reply:?}"
        );
        assert!(reply.interim.is_empty(), "{reply:?}");
        assert!(field(&reply.head, "link").is_none(), "{reply:?}");
        let reply = client.get("/").await;
        assert_eq!(
            (reply.status, reply.text().as_str()),
            (200, "ok"),
            "{reply:?}"
        );
    }
    assert_eq!(backend.connections(), 1);
}

#[tokio::test]
async fn obs_fold_and_a_space_in_a_field_name_are_502() {
    for response in [
        &b"HTTP/1.1 200 OK\r\nX-Folded: first\r\n second\r\nContent-Length: 2\r\n\r\nok"[..],
        &b"HTTP/1.1 200 OK\r\nX-Folded: first\r\n\tsecond\r\nContent-Length: 2\r\n\r\nok"[..],
        &b"HTTP/1.1 200 OK\r\nX Bad: 1\r\nContent-Length: 2\r\n\r\nok"[..],
        &b"HTTP/1.1 200 OK\r\nX-Bad : 1\r\nContent-Length: 2\r\n\r\nok"[..],
        &b"HTTP/1.1 200 OK\r\n X-Lead: 1\r\nContent-Length: 2\r\n\r\nok"[..],
    ] {
        let backend = Scripted::always(response, After::KeepOpen).await;
        let proxy = proxy_to(&backend).await;
        let reply = get_once(&proxy, "/").await;
        assert_eq!(
            reply.status,
            502,
            "{}: {reply:?}",
            String::from_utf8_lossy(response)
        );
        assert!(
            !reply.head.to_ascii_lowercase().contains("x bad"),
            "{reply:?}"
        );
        assert!(
            !reply.head.to_ascii_lowercase().contains("x-bad"),
            "{reply:?}"
        );
        assert!(!reply.head.contains("second"), "{reply:?}");
    }
}

// ---------------------------------------------------------------------------
// requests as the backend sees them

#[tokio::test]
async fn requests_reach_the_backend_as_http11_with_the_apps_host() {
    let backend = Scripted::always(OK, After::KeepOpen).await;
    let proxy = proxy_to(&backend).await;
    for request in [
        format!("GET /a/b?c=d&e HTTP/1.1\r\nHost: {HOST}\r\nX-One: 1\r\n\r\n"),
        format!("GET /a/b?c=d&e HTTP/1.0\r\nHost: {HOST}\r\nX-One: 1\r\n\r\n"),
        format!("GET http://{HOST}/a/b?c=d&e HTTP/1.1\r\nHost: other.example\r\nX-One: 1\r\n\r\n"),
    ] {
        let mut client = Client::connect(&proxy).await;
        client.send(request.as_bytes()).await;
        let reply = client.response(false).await;
        assert_eq!(
            (reply.status, reply.text().as_str()),
            (200, "ok"),
            "{request}"
        );
        let seen = backend.seen().pop().unwrap();
        assert!(
            seen.head.starts_with("GET /a/b?c=d&e HTTP/1.1\r\n"),
            "{request:?} arrived as {:?}",
            seen.head
        );
        assert_eq!(fields(&seen.head, "host"), [HOST], "{:?}", seen.head);
        assert_eq!(fields(&seen.head, "x-one"), ["1"], "{:?}", seen.head);
        assert!(seen.body.is_empty());
        assert!(
            field(&seen.head, "content-length").is_none() && !is_chunked(&seen.head),
            "a GET without a body got a framing: {:?}",
            seen.head
        );
    }
}

#[tokio::test]
async fn hop_by_hop_fields_are_not_forwarded() {
    let backend = Scripted::always(OK, After::KeepOpen).await;
    let proxy = proxy_to(&backend).await;
    let mut client = Client::connect(&proxy).await;
    client
        .send(
            format!(
                "GET / HTTP/1.1\r\nHost: {HOST}\r\n\
                 Connection: keep-alive, X-Private, x-other\r\nKeep-Alive: timeout=5\r\n\
                 TE: trailers, gzip\r\nUpgrade: websocket\r\nProxy-Connection: keep-alive\r\n\
                 X-Private: secret\r\nX-Other: secret\r\nX-Kept: public\r\n\r\n"
            )
            .as_bytes(),
        )
        .await;
    let reply = client.response(false).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let seen = backend.seen().pop().unwrap();
    for name in [
        "connection",
        "keep-alive",
        "te",
        "upgrade",
        "proxy-connection",
        "x-private",
        "x-other",
    ] {
        assert!(field(&seen.head, name).is_none(), "{name}: {:?}", seen.head);
    }
    assert!(!seen.head.contains("secret"), "{:?}", seen.head);
    assert_eq!(fields(&seen.head, "x-kept"), ["public"], "{:?}", seen.head);
}

#[tokio::test]
async fn hop_by_hop_fields_of_the_backend_are_not_forwarded() {
    let backend = Scripted::always(
        b"HTTP/1.1 200 OK\r\nConnection: X-Secret\r\nKeep-Alive: timeout=99\r\n\
          Proxy-Connection: keep-alive\r\nX-Secret: hidden\r\nX-Kept: public\r\n\
          Content-Length: 2\r\n\r\nok",
        After::KeepOpen,
    )
    .await;
    let proxy = proxy_to(&backend).await;
    let reply = get_once(&proxy, "/").await;
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (200, "ok"),
        "{reply:?}"
    );
    for name in ["keep-alive", "proxy-connection", "x-secret"] {
        assert!(field(&reply.head, name).is_none(), "{name}: {reply:?}");
    }
    assert!(
        !reply.head.contains("hidden") && !reply.head.contains("99"),
        "{reply:?}"
    );
    assert_eq!(fields(&reply.head, "x-kept"), ["public"]);
}

#[tokio::test]
async fn request_bodies_arrive_with_their_exact_bytes() {
    let backend = Scripted::replying(|seen| {
        let body = format!("{}", seen.body.len());
        (
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
            After::KeepOpen,
        )
    })
    .await;
    let proxy = proxy_to(&backend).await;
    let mut client = Client::connect(&proxy).await;
    // a length
    client
        .send(
            format!("POST /up HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 11\r\n\r\nhello world")
                .as_bytes(),
        )
        .await;
    assert_eq!(client.response(false).await.text(), "11");
    let seen = backend.seen().pop().unwrap();
    assert_eq!(seen.body, b"hello world");
    assert_eq!(
        fields(&seen.head, "content-length"),
        ["11"],
        "{:?}",
        seen.head
    );
    assert!(!is_chunked(&seen.head), "{:?}", seen.head);
    assert!(seen.raw.ends_with(b"\r\n\r\nhello world"));
    // chunks, with extensions and trailers
    client
        .send(
            format!(
                "POST /up HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n\
                 5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: t\r\n\r\n"
            )
            .as_bytes(),
        )
        .await;
    assert_eq!(client.response(false).await.text(), "11");
    let seen = backend.seen().pop().unwrap();
    assert_eq!(
        seen.body,
        b"hello world",
        "{:?}",
        String::from_utf8_lossy(&seen.raw)
    );
    assert!(
        field(&seen.head, "content-length").is_none() && is_chunked(&seen.head),
        "{:?}",
        seen.head
    );
    // an empty body with a length
    client
        .send(format!("POST /up HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 0\r\n\r\n").as_bytes())
        .await;
    assert_eq!(client.response(false).await.text(), "0");
    let seen = backend.seen().pop().unwrap();
    assert!(seen.body.is_empty());
    // and the next request after all of them is framed right
    assert_eq!(client.get("/").await.text(), "0");
    assert_eq!(backend.connections(), 1);
    assert_eq!(backend.seen().len(), 4);
}

#[tokio::test]
async fn a_request_with_two_framings_never_smuggles_a_request_to_the_backend() {
    let backend = Scripted::always(OK, After::KeepOpen).await;
    let proxy = proxy_to(&backend).await;
    // by its length the body is `5\r\nh`; by its chunks `hello`, and what
    // follows would be a second request
    let request = format!(
        "POST /up HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n\
         5\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: {HOST}\r\n\r\n"
    );
    let reply = raw_exchange(proxy.addr, request.as_bytes(), BOUND).await;
    assert!(!reply.timed_out, "{reply:?}");
    assert!(reply.status().is_some(), "{reply:?}");
    let _ = get_once(&proxy, "/after").await;
    for seen in backend.seen() {
        assert!(
            !seen.head.starts_with("GET /smuggled"),
            "a smuggled request reached the backend: {:?}",
            backend.seen()
        );
        if seen.head.starts_with("POST /up ") {
            assert_eq!(seen.body, b"hello", "{seen:?}");
            assert!(
                field(&seen.head, "content-length").is_none() || !is_chunked(&seen.head),
                "{seen:?}"
            );
        }
    }
    // one response (the proxy's framing wins and the connection ends), never a
    // second one for the bytes after the chunks
    assert_eq!(reply.text.matches("HTTP/1.1 ").count(), 1, "{reply:?}");
    assert_eq!(backend.seen().len(), 2, "{:?}", backend.seen());
}

#[tokio::test]
async fn expect_100_continue_is_answered_once_and_the_body_follows() {
    // the backend sends its own 100 when asked for one, then reads the body
    let backend = Scripted::custom(|mut peer| async move {
        loop {
            let Some(head) = peer.head().await else {
                return;
            };
            if field(&head, "expect").is_some()
                && !peer.send(b"HTTP/1.1 100 Continue\r\n\r\n").await
            {
                return;
            }
            let length: usize = field(&head, "content-length").unwrap().parse().unwrap();
            let Ok(body) = peer.wire.exact(length).await else {
                return;
            };
            peer.log.lock().unwrap().push(Seen {
                connection: peer.connection,
                head,
                body: body.clone(),
                raw: Vec::new(),
            });
            let mut reply =
                format!("HTTP/1.1 200 OK\r\nContent-Length: {length}\r\n\r\n").into_bytes();
            reply.extend_from_slice(&body);
            if !peer.send(&reply).await {
                return;
            }
        }
    })
    .await;
    let proxy = proxy_to(&backend).await;
    let mut client = Client::connect(&proxy).await;
    for payload in ["payload", "another"] {
        client
            .send(
                format!(
                    "POST /up HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 7\r\nExpect: 100-continue\r\n\r\n"
                )
                .as_bytes(),
            )
            .await;
        // the client waits for its 100 before it sends the body
        let interim = tokio::time::timeout(BOUND, client.wire.until(b"\r\n\r\n"))
            .await
            .expect("no 100 Continue came")
            .expect("the proxy closed the connection");
        assert!(
            interim.starts_with(b"HTTP/1.1 100 Continue\r\n"),
            "{:?}",
            String::from_utf8_lossy(&interim)
        );
        client.send(payload.as_bytes()).await;
        let reply = client.response(false).await;
        assert_eq!(
            (reply.status, reply.text().as_str()),
            (200, payload),
            "{reply:?}"
        );
        // one 100 only: the backend's is not passed on after the proxy's
        assert!(reply.interim.is_empty(), "{reply:?}");
        let seen = backend.seen().pop().unwrap();
        assert_eq!(seen.body, payload.as_bytes());
        // the expectation reaches the backend
        assert_eq!(
            fields(&seen.head, "expect"),
            ["100-continue"],
            "{:?}",
            seen.head
        );
    }
    assert_eq!(backend.connections(), 1);
}

#[tokio::test]
async fn an_answer_before_the_whole_request_body_reaches_the_client() {
    // the backend reads the head only, answers 413, stops sending and drains
    let backend = Scripted::custom(|mut peer| async move {
        if peer.head().await.is_none() {
            return;
        }
        let _ = peer
            .send(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 8\r\nConnection: close\r\n\r\ntoo much")
            .await;
        let _ = peer.wire.stream.shutdown().await;
        let _ = tokio::time::timeout(BOUND, peer.wire.rest()).await;
    })
    .await;
    let proxy = proxy_to(&backend).await;
    let mut client = Client::connect(&proxy).await;
    client
        .send(
            format!("POST /up HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 4000000\r\n\r\n")
                .as_bytes(),
        )
        .await;
    // the client sends part of its body and waits
    client.send(&[b'x'; 100_000]).await;
    let reply = client.response(false).await;
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (413, "too much"),
        "{reply:?}"
    );
    assert!(reply.complete, "{reply:?}");
}

#[tokio::test]
async fn an_answer_and_close_before_any_request_body_reaches_the_client() {
    // the backend answers 401 as soon as the head comes, and closes at once
    let backend = Scripted::custom(|mut peer| async move {
        if peer.head().await.is_none() {
            return;
        }
        let _ = peer
            .send(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 6\r\nConnection: close\r\n\r\nwho?!!")
            .await;
    })
    .await;
    let proxy = proxy_to(&backend).await;
    let mut client = Client::connect(&proxy).await;
    client
        .send(format!("POST /up HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 10\r\n\r\n").as_bytes())
        .await;
    let reply = client.response(false).await;
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (401, "who?!!"),
        "{reply:?}"
    );
}

#[tokio::test]
async fn a_request_body_of_8_mib_streams_to_the_backend() {
    const TOTAL: usize = 8 * 1024 * 1024;
    let received = Arc::new(AtomicUsize::new(0));
    let counter = received.clone();
    let backend = Scripted::custom(move |mut peer| {
        let counter = counter.clone();
        async move {
            let Some(head) = peer.head().await else {
                return;
            };
            let length: usize = field(&head, "content-length").unwrap().parse().unwrap();
            let mut sum = 0u64;
            let mut got = 0usize;
            while got < length {
                if peer.wire.buf.is_empty() && !peer.wire.fill().await {
                    return;
                }
                let n = peer.wire.buf.len().min(length - got);
                sum += peer.wire.buf.drain(..n).map(u64::from).sum::<u64>();
                got += n;
                counter.store(got, Ordering::SeqCst);
            }
            let body = format!("{got} {sum}");
            let _ = peer
                .send(
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                )
                .await;
        }
    })
    .await;
    let proxy = proxy_to(&backend).await;
    let mut client = Client::connect(&proxy).await;
    client
        .send(
            format!("POST /up HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {TOTAL}\r\n\r\n")
                .as_bytes(),
        )
        .await;
    let chunk: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
    let mut sent = 0;
    // the first MiB reaches the backend before the rest is sent
    while sent < 1024 * 1024 {
        client.send(&chunk).await;
        sent += chunk.len();
    }
    assert!(
        eventually(BOUND, || received.load(Ordering::SeqCst) >= 512 * 1024).await,
        "the body was held back: {} bytes reached the backend",
        received.load(Ordering::SeqCst)
    );
    while sent < TOTAL {
        client.send(&chunk).await;
        sent += chunk.len();
    }
    let reply = client.response(false).await;
    let sum: u64 = chunk.iter().map(|b| u64::from(*b)).sum::<u64>() * (TOTAL / chunk.len()) as u64;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.text(), format!("{TOTAL} {sum}"));
}

// ---------------------------------------------------------------------------
// reuse of backend connections

#[tokio::test]
async fn a_complete_response_leaves_its_connection_to_the_next_request() {
    let backend = Scripted::always(OK, After::KeepOpen).await;
    let proxy = proxy_to(&backend).await;
    let mut first = Client::connect(&proxy).await;
    assert_eq!(first.get("/").await.text(), "ok");
    assert_eq!(first.get("/").await.text(), "ok");
    let mut second = Client::connect(&proxy).await;
    assert_eq!(second.get("/").await.text(), "ok");
    assert_eq!(first.get("/").await.text(), "ok");
    assert_eq!(backend.seen().len(), 4);
    assert_eq!(backend.connections(), 1);
}

#[tokio::test]
async fn connection_close_from_the_backend_is_honoured() {
    // the backend says close but keeps the connection open and reading
    let backend = Scripted::always(
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
        After::KeepOpen,
    )
    .await;
    let proxy = proxy_to(&backend).await;
    let mut client = Client::connect(&proxy).await;
    for _ in 0..3 {
        let reply = client.get("/").await;
        assert_eq!(
            (reply.status, reply.text().as_str()),
            (200, "ok"),
            "{reply:?}"
        );
    }
    assert_eq!(backend.seen().len(), 3);
    backend.assert_one_request_per_connection();
}

#[tokio::test]
async fn a_backend_that_closes_after_each_response_costs_no_request() {
    let backend = Scripted::always(OK, After::Close).await;
    let proxy = proxy_to(&backend).await;
    let mut client = Client::connect(&proxy).await;
    for _ in 0..5 {
        let reply = client.get("/").await;
        assert_eq!(
            (reply.status, reply.text().as_str()),
            (200, "ok"),
            "{reply:?}"
        );
        // the close reaches the proxy before the next request
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(backend.seen().len(), 5);
}

// ---------------------------------------------------------------------------
// upgrades

#[tokio::test]
async fn a_websocket_upgrade_tunnels_bytes_both_ways() {
    let backend = Scripted::custom(|mut peer| async move {
        let Some(seen) = peer.request().await else {
            return;
        };
        if !seen.head.starts_with("GET /ws ") {
            return;
        }
        // the 101 and the first tunnelled bytes in one write
        let _ = peer
            .send(
                b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                  Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\nfirst",
            )
            .await;
        // then an echo, upper-cased
        loop {
            if peer.wire.buf.is_empty() && !peer.wire.fill().await {
                return;
            }
            let all = peer.wire.buf.len();
            let bytes = peer.wire.take(all).to_ascii_uppercase();
            if !peer.send(&bytes).await {
                return;
            }
        }
    })
    .await;
    let proxy = proxy_to(&backend).await;
    let mut client = Client::connect(&proxy).await;
    client
        .send(
            format!(
                "GET /ws HTTP/1.1\r\nHost: {HOST}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            .as_bytes(),
        )
        .await;
    let reply = client.response(false).await;
    assert_eq!(reply.status, 101, "{reply:?}");
    assert_eq!(
        field(&reply.head, "upgrade").map(|v| v.to_ascii_lowercase()),
        Some("websocket".into())
    );
    assert_eq!(
        field(&reply.head, "sec-websocket-accept").as_deref(),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    let seen = backend.seen().pop().unwrap();
    assert_eq!(
        field(&seen.head, "upgrade").map(|v| v.to_ascii_lowercase()),
        Some("websocket".into()),
        "{:?}",
        seen.head
    );
    assert!(
        field(&seen.head, "connection").is_some_and(|v| v.to_ascii_lowercase().contains("upgrade")),
        "{:?}",
        seen.head
    );
    assert_eq!(
        field(&seen.head, "sec-websocket-key").as_deref(),
        Some("dGhlIHNhbXBsZSBub25jZQ==")
    );
    let first = tokio::time::timeout(BOUND, client.wire.exact(5)).await;
    assert_eq!(
        first.expect("no tunnelled bytes").as_deref(),
        Ok(&b"first"[..])
    );
    for word in ["ping", "binary\0\r\n\r\nHTTP/1.1 200 OK\r\n\r\n"] {
        client.send(word.as_bytes()).await;
        let back = tokio::time::timeout(BOUND, client.wire.exact(word.len())).await;
        assert_eq!(
            back.expect("no echo"),
            Ok(word.to_ascii_uppercase().into_bytes())
        );
    }
}

#[tokio::test]
async fn a_101_to_a_request_without_upgrade_is_not_tunnelled() {
    // today: the 101 head reaches the client, and the connection closes
    let after = Arc::new(Mutex::new(Vec::new()));
    let record = after.clone();
    let backend = Scripted::custom(move |mut peer| {
        let record = record.clone();
        async move {
            if peer.request().await.is_none() {
                return;
            }
            let _ = peer
                .send(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\ntunnel?")
                .await;
            // whatever comes next is recorded
            while peer.wire.fill().await {
                let all = peer.wire.buf.len();
                let bytes = peer.wire.take(all);
                record.lock().unwrap().extend_from_slice(&bytes);
            }
        }
    })
    .await;
    let proxy = proxy_to(&backend).await;
    let mut client = Client::connect(&proxy).await;
    let reply = client.get("/").await;
    assert!(matches!(reply.status, 101 | 502), "{reply:?}");
    // no tunnelled byte reaches the client, and its bytes no backend; after a
    // 101 the client connection closes, after a 502 it may go on
    let _ = client.wire.send(b"client bytes").await;
    if reply.status == 101 {
        assert!(client.closed().await, "the client connection went on");
    }
    assert!(!client.wire.taken.windows(7).any(|w| w == b"tunnel?"));
    let _ = get_once(&proxy, "/").await;
    let after = after.lock().unwrap().clone();
    assert!(
        !after.windows(12).any(|w| w == b"client bytes"),
        "{:?}",
        String::from_utf8_lossy(&after)
    );
    // each GET is tried at most twice (a failed idempotent request goes again,
    // once), each try on a connection of its own
    let seen = backend.seen().len();
    assert!((2..=4).contains(&seen), "{seen} requests seen");
    backend.assert_one_request_per_connection();
}

// ---------------------------------------------------------------------------
// response splitting

/// Neither a `set-cookie` field nor a bare CR or LF reaches the client.
async fn assert_not_split(response: &[u8]) {
    let backend = Scripted::always(response, After::KeepOpen).await;
    let proxy = proxy_to(&backend).await;
    let reply = get_once(&proxy, "/").await;
    assert!(
        field(&reply.head, "set-cookie").is_none(),
        "{:?}: {reply:?}",
        String::from_utf8_lossy(response)
    );
    let head = reply.head.as_bytes();
    let bare = (0..head.len()).any(|i| {
        (head[i] == b'\r' && head.get(i + 1) != Some(&b'\n'))
            || (head[i] == b'\n' && (i == 0 || head[i - 1] != b'\r'))
    });
    assert!(!bare, "a bare CR or LF reached the client: {reply:?}");
}

#[tokio::test]
async fn a_bare_cr_in_a_field_value_never_splits_it() {
    assert_not_split(
        b"HTTP/1.1 200 OK\r\nX-A: one\rSet-Cookie: evil=1\r\nContent-Length: 2\r\n\r\nok",
    )
    .await;
    assert_not_split(
        b"HTTP/1.1 200 OK\r\nX-A: one\r\rSet-Cookie: evil=1\r\nContent-Length: 2\r\n\r\nok",
    )
    .await;
    assert_not_split(
        b"HTTP/1.1 200 OK\r\nX-A: one\r\n\rSet-Cookie: evil=1\r\nContent-Length: 2\r\n\r\nok",
    )
    .await;
}

#[tokio::test]
async fn a_bare_lf_in_a_field_value_never_splits_it() {
    assert_not_split(
        b"HTTP/1.1 200 OK\r\nX-A: one\nSet-Cookie: evil=1\r\nContent-Length: 2\r\n\r\nok",
    )
    .await;
}

// ---------------------------------------------------------------------------
// HTTP/2 clients (their requests take the proxy's other path to backends)

/// An HTTP/2 (h2c) connection to the proxy.
async fn h2_connect(
    proxy: &RunningProxy,
) -> hyper::client::conn::http2::SendRequest<http_body_util::Full<bytes::Bytes>> {
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let (send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    send
}

/// Sends `method path` with `body` over HTTP/2; the status and the body, or
/// the error that ended the response.
async fn h2_exchange(
    send: &mut hyper::client::conn::http2::SendRequest<http_body_util::Full<bytes::Bytes>>,
    method: &str,
    path: &str,
    body: &[u8],
) -> (u16, Result<Vec<u8>, String>) {
    use http_body_util::BodyExt;
    let request = http::Request::builder()
        .method(method)
        .uri(format!("http://{HOST}{path}"))
        .version(http::Version::HTTP_2)
        .body(http_body_util::Full::new(bytes::Bytes::copy_from_slice(
            body,
        )))
        .unwrap();
    let response = tokio::time::timeout(BOUND, send.send_request(request))
        .await
        .expect("no response")
        .unwrap();
    let status = response.status().as_u16();
    let body = tokio::time::timeout(BOUND, response.into_body().collect())
        .await
        .expect("the body did not end");
    (
        status,
        body.map(|b| b.to_bytes().to_vec())
            .map_err(|e| format!("{e:?}")),
    )
}

#[tokio::test]
async fn http2_requests_reach_the_backend_as_http11_and_get_whole_bodies() {
    let backend = Scripted::replying(|seen| {
        let reply: Vec<u8> = if seen.head.starts_with("GET /chunked ") {
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\n\r\n"
                .to_vec()
        } else if seen.head.starts_with("POST ") {
            let n = seen.body.len().to_string();
            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{n}", n.len()).into_bytes()
        } else {
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello".to_vec()
        };
        (reply, After::KeepOpen)
    })
    .await;
    let proxy = proxy_to(&backend).await;
    let mut send = h2_connect(&proxy).await;
    assert_eq!(
        h2_exchange(&mut send, "GET", "/a?b=c", b"").await,
        (200, Ok(b"hello".to_vec()))
    );
    let seen = backend.seen().pop().unwrap();
    assert!(
        seen.head.starts_with("GET /a?b=c HTTP/1.1\r\n"),
        "{:?}",
        seen.head
    );
    assert_eq!(fields(&seen.head, "host"), [HOST], "{:?}", seen.head);
    assert_eq!(
        h2_exchange(&mut send, "GET", "/chunked", b"").await,
        (200, Ok(b"hello".to_vec()))
    );
    let body = vec![b'z'; 300_000];
    assert_eq!(
        h2_exchange(&mut send, "POST", "/up", &body).await,
        (200, Ok(b"300000".to_vec()))
    );
    let seen = backend.seen().pop().unwrap();
    assert!(
        seen.head.starts_with("POST /up HTTP/1.1\r\n"),
        "{:?}",
        seen.head
    );
    assert_eq!(seen.body, body);
    assert!(
        field(&seen.head, "content-length").is_some() != is_chunked(&seen.head),
        "{:?}",
        seen.head
    );
    assert_eq!(backend.seen().len(), 3);
}

#[tokio::test]
async fn http2_a_body_shorter_than_its_content_length_is_an_error_not_an_end() {
    let backend = Scripted::replying(|seen| {
        let reply: &[u8] = if seen.head.starts_with("GET /short ") {
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten.."
        } else {
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
        };
        (reply.to_vec(), After::Close)
    })
    .await;
    let proxy = proxy_to(&backend).await;
    let mut send = h2_connect(&proxy).await;
    for path in ["/short", "/unended"] {
        let (status, body) = h2_exchange(&mut send, "GET", path, b"").await;
        assert!(
            status == 502 || (status == 200 && body.is_err()),
            "{path}: a cut body looked complete: {status} {body:?}"
        );
    }
    // the HTTP/2 connection goes on
    let (status, _) = h2_exchange(&mut send, "GET", "/short", b"").await;
    assert!(status == 200 || status == 502);
}
