//! The client-facing HTTP/1.1 server attacked with exact bytes, as a hostile or
//! strict client would: odd heads, odd framing, pipelining at the edges, slow and
//! half-closing clients, and backends whose answers test the framing the proxy
//! writes itself. Each request must get exactly one response, in order, framed
//! once; malformed requests get a 4xx and are never forwarded; the backend never
//! sees a request the client did not send as one.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[path = "support/scripted.rs"]
mod scripted;

use scripted::*;

// ---------------------------------------------------------------------------
// helpers

/// `GET <target> HTTP/1.1` with Host and `extra` field lines (each ending in CRLF).
fn get(target: &str, extra: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: {HOST}\r\n{extra}\r\n").into_bytes()
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// A backend that answers every request 200 with its request line as the body
/// (none for a HEAD), keeping the connection open.
async fn echo_backend() -> Scripted {
    Scripted::replying(|seen| {
        let line = request_line(seen);
        (
            line_reply(&line, seen.head.starts_with("HEAD ")),
            After::KeepOpen,
        )
    })
    .await
}

/// A proxy to an [`echo_backend`].
async fn echo_proxy() -> (Scripted, RunningProxy) {
    let backend = echo_backend().await;
    let proxy = proxy_to(&backend).await;
    (backend, proxy)
}

/// A 200 with `line` as its body, the body left out when `head`.
fn line_reply(line: &str, head: bool) -> Vec<u8> {
    let mut r = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", line.len()).into_bytes();
    if !head {
        r.extend_from_slice(line.as_bytes());
    }
    r
}

/// A backend that answers every request 200 with its request line as the body
/// (a HEAD's too), one at a time, after sleeping `ms` for a request line that
/// starts with `slow`.
async fn line_echo_backend(slow: &'static str, ms: u64) -> Scripted {
    Scripted::custom(move |mut peer| async move {
        while let Some(seen) = peer.request().await {
            let line = request_line(&seen);
            if line.starts_with(slow) {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            if !peer.send(&line_reply(&line, false)).await {
                return;
            }
        }
    })
    .await
}

/// A proxy to `backend` with header and idle timeouts of 300 ms.
async fn proxy_with_short_timeouts(backend: &Scripted) -> RunningProxy {
    proxy_with(
        backend,
        test_options()
            .with_header_timeout(Duration::from_millis(300))
            .with_idle_timeout(Duration::from_millis(300)),
    )
    .await
}

fn request_line(seen: &Seen) -> String {
    seen.head.split("\r\n").next().unwrap_or("").to_owned()
}

/// What the backend saw, after a moment for anything in flight to arrive.
async fn settled(backend: &Scripted) -> Vec<Seen> {
    tokio::time::sleep(Duration::from_millis(200)).await;
    backend.seen()
}

/// Every response the proxy writes is framed once and carries a Date.
fn assert_framed(reply: &Reply, what: &str) {
    assert!(reply.complete, "{what}: incomplete: {reply:?}");
    assert!(
        field(&reply.head, "date").is_some(),
        "{what}: no Date: {reply:?}"
    );
    assert!(
        !(is_chunked(&reply.head) && field(&reply.head, "content-length").is_some()),
        "{what}: framed twice: {reply:?}"
    );
    assert!(
        fields(&reply.head, "content-length").len() <= 1,
        "{what}: two lengths: {reply:?}"
    );
}

/// A head as forwarded: CRLF lines only, no obs-fold, no NUL.
fn assert_clean(seen: &Seen, what: &str) {
    let raw = &seen.head;
    let bytes = raw.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        match b {
            b'\n' => assert!(
                i > 0 && bytes[i - 1] == b'\r',
                "{what}: bare LF forwarded: {raw:?}"
            ),
            b'\r' => assert!(
                bytes.get(i + 1) == Some(&b'\n'),
                "{what}: bare CR forwarded: {raw:?}"
            ),
            0 => panic!("{what}: NUL forwarded: {raw:?}"),
            _ => {}
        }
    }
    assert!(
        !raw.contains("\r\n ") && !raw.contains("\r\n\t"),
        "{what}: obs-fold forwarded: {raw:?}"
    );
}

/// Sends `bytes` on a new connection; the first response.
async fn one(proxy: &RunningProxy, bytes: &[u8]) -> (Reply, Client) {
    let mut client = Client::connect(proxy).await;
    let _ = client.wire.send(bytes).await;
    let reply = client.response(false).await;
    (reply, client)
}

/// `bytes` must get a 4xx (or `also`) and reach no backend.
async fn assert_rejected(proxy: &RunningProxy, backend: &Scripted, bytes: &[u8], also: &[u16]) {
    if let Err(e) = check_rejected(proxy, backend, bytes, also).await {
        panic!("{e}");
    }
}

/// Like [`assert_rejected`], the failure returned.
async fn check_rejected(
    proxy: &RunningProxy,
    backend: &Scripted,
    bytes: &[u8],
    also: &[u16],
) -> Result<(), String> {
    let before = backend.seen().len();
    let (reply, _c) = one(proxy, bytes).await;
    let what = String::from_utf8_lossy(bytes);
    let seen = settled(backend).await;
    if !((400..500).contains(&reply.status) || also.contains(&reply.status)) {
        return Err(format!(
            "{what:?}: expected a 4xx, got {:?}; forwarded: {:?}",
            reply.head,
            seen[before..].iter().map(|s| &s.head).collect::<Vec<_>>()
        ));
    }
    if seen.len() != before {
        return Err(format!(
            "{what:?}: a 4xx, and forwarded: {:?}",
            &seen[before..]
        ));
    }
    Ok(())
}

/// Each of `requests` must be rejected; every failure is reported at once.
async fn all_rejected(
    proxy: &RunningProxy,
    backend: &Scripted,
    requests: &[Vec<u8>],
    also: &[u16],
) {
    let mut failures = Vec::new();
    for bytes in requests {
        if let Err(e) = check_rejected(proxy, backend, bytes, also).await {
            failures.push(e);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} accepted:\n{}",
        failures.len(),
        requests.len(),
        failures.join("\n")
    );
}

/// `bytes` (one request) is either rejected with a 4xx and never forwarded, or
/// forwarded once with a clean head and answered with the backend's answer;
/// returns the forwarded request if any.
async fn rejected_or_forwarded(
    proxy: &RunningProxy,
    backend: &Scripted,
    bytes: &[u8],
) -> Option<Seen> {
    let before = backend.seen().len();
    let (reply, _c) = one(proxy, bytes).await;
    let what = format!("{:?}", String::from_utf8_lossy(bytes));
    let seen = settled(backend).await;
    if (400..500).contains(&reply.status) {
        assert_eq!(
            seen.len(),
            before,
            "{what}: a 4xx, and forwarded: {:?}",
            &seen[before..]
        );
        return None;
    }
    assert_eq!(reply.status, 200, "{what}: {reply:?}");
    assert_framed(&reply, &what);
    assert_eq!(seen.len(), before + 1, "{what}: {seen:?}");
    let s = seen[before].clone();
    assert_clean(&s, &what);
    assert_eq!(reply.text(), request_line(&s), "{what}: not its answer");
    Some(s)
}

fn never_smuggled(seen: &[Seen], what: &str) {
    for s in seen {
        assert!(
            !s.head.contains("/smuggled"),
            "{what}: the backend saw a smuggled request: {:?}",
            s.head
        );
    }
}

const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: web.production\r\n\r\n";

// ---------------------------------------------------------------------------
// field syntax

#[tokio::test]
async fn obs_fold_is_rejected_or_replaced_by_spaces() {
    let (backend, proxy) = echo_proxy().await;
    for fold in ["\r\n ", "\r\n\t", "\r\n  \t "] {
        let bytes = get("/fold", &format!("X-A: a{fold}b\r\nX-C: c\r\n"));
        if let Some(s) = rejected_or_forwarded(&proxy, &backend, &bytes).await {
            let v = fields(&s.head, "x-a");
            assert_eq!(v.len(), 1, "{s:?}");
            assert!(
                v[0].starts_with('a')
                    && v[0].ends_with('b')
                    && v[0][1..v[0].len() - 1].trim().is_empty(),
                "{s:?}"
            );
            assert_eq!(fields(&s.head, "x-c"), ["c"], "{s:?}");
        }
    }
}

#[tokio::test]
async fn whitespace_before_the_first_field_line_is_rejected_or_that_line_ignored() {
    let (backend, proxy) = echo_proxy().await;
    let bytes = format!("GET /ws HTTP/1.1\r\n X-Hidden: 1\r\nHost: {HOST}\r\n\r\n");
    if let Some(s) = rejected_or_forwarded(&proxy, &backend, bytes.as_bytes()).await {
        assert!(!s.head.to_ascii_lowercase().contains("x-hidden"), "{s:?}");
    }
}

#[tokio::test]
async fn whitespace_before_a_colon_is_400() {
    let (backend, proxy) = echo_proxy().await;
    for extra in ["X-A : v\r\n", "X-A\t: v\r\n", "Connection : close\r\n"] {
        assert_rejected(&proxy, &backend, &get("/sp", extra), &[]).await;
    }
    assert_rejected(
        &proxy,
        &backend,
        format!("GET /sp HTTP/1.1\r\nHost : {HOST}\r\n\r\n").as_bytes(),
        &[],
    )
    .await;
}

#[tokio::test]
async fn field_names_that_are_not_tokens_are_400() {
    let (backend, proxy) = echo_proxy().await;
    for name in [
        &b"X@A"[..],
        b"X A",
        b"X\x7fA",
        b"X\x00A",
        b"\x80X",
        b"X(A)",
        b"X\"A",
        b"",
        b"X/A",
        b"X{A}",
    ] {
        let bytes = cat(&[
            format!("GET /name HTTP/1.1\r\nHost: {HOST}\r\n").as_bytes(),
            name,
            b": v\r\n\r\n",
        ]);
        assert_rejected(&proxy, &backend, &bytes, &[]).await;
    }
}

#[tokio::test]
async fn lf_only_line_ends_are_rejected_or_forwarded_as_crlf() {
    let (backend, proxy) = echo_proxy().await;
    for bytes in [
        format!("GET /lf HTTP/1.1\nHost: {HOST}\n\n"),
        format!("GET /lf HTTP/1.1\r\nHost: {HOST}\nX-A: 1\r\n\r\n"),
        format!("GET /lf HTTP/1.1\r\nHost: {HOST}\r\nX-A: 1\n\r\n"),
        format!("GET /lf HTTP/1.1\r\nHost: {HOST}\r\nX-A: 1\r\n\n"),
    ] {
        rejected_or_forwarded(&proxy, &backend, bytes.as_bytes()).await;
    }
}

#[tokio::test]
async fn a_bare_lf_inside_a_value_never_hides_a_length_from_the_proxy() {
    // either the LF ends the line (then a Content-Length frames the smuggled
    // text as the body) or the head is invalid: never a second request
    let (backend, proxy) = echo_proxy().await;
    for sep in ["\n", "\r"] {
        let bytes = format!(
            "GET /a HTTP/1.1\r\nHost: {HOST}\r\nX-A: y{sep}Content-Length: {}\r\n\r\n{SMUGGLED}",
            SMUGGLED.len()
        );
        let mut client = Client::connect(&proxy).await;
        let _ = client.wire.send(bytes.as_bytes()).await;
        let first = client.response(false).await;
        let second = client.response(false).await;
        let seen = settled(&backend).await;
        let what = format!("{bytes:?}: {first:?} {second:?}");
        never_smuggled(&seen, &what);
        for s in &seen {
            assert_clean(s, &what);
        }
    }
}

#[tokio::test]
async fn nul_and_bare_cr_in_values_are_rejected_or_replaced() {
    let (backend, proxy) = echo_proxy().await;
    for bad in [&b"a\x00b"[..], b"a\rb", b"a\r b"] {
        let bytes = cat(&[
            format!("GET /nul HTTP/1.1\r\nHost: {HOST}\r\nX-A: ").as_bytes(),
            bad,
            b"\r\n\r\n",
        ]);
        if let Some(s) = rejected_or_forwarded(&proxy, &backend, &bytes).await {
            let v = fields(&s.head, "x-a");
            assert_eq!(v.len(), 1, "{s:?}");
            assert!(!v[0].contains(['\0', '\r']), "{s:?}");
        }
    }
    // in the target: never valid
    assert_rejected(&proxy, &backend, &get("/a\x00b", ""), &[]).await;
}

#[tokio::test]
async fn obs_text_in_a_value_is_forwarded_exactly() {
    let (backend, proxy) = echo_proxy().await;
    let bytes = cat(&[&get("/text", "")[..], b""]);
    let bytes = cat(&[&bytes[..bytes.len() - 2], b"X-A: caf\xc3\xa9 \xff\r\n\r\n"]);
    let (reply, _c) = one(&proxy, &bytes).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let seen = settled(&backend).await;
    assert_eq!(seen.len(), 1);
    assert!(
        find(&seen[0].raw, b"\r\nx-a: caf\xc3\xa9 \xff\r\n").is_some()
            || find(&seen[0].raw, b"\r\nX-A: caf\xc3\xa9 \xff\r\n").is_some(),
        "{:?}",
        seen[0].head
    );
}

#[tokio::test]
async fn many_fields_are_forwarded_whole_or_refused_whole() {
    let (backend, proxy) = echo_proxy().await;
    for n in [99, 100, 101, 1000] {
        let extra: String = (0..n).map(|i| format!("X-F{i}: v{i}\r\n")).collect();
        let before = backend.seen().len();
        let mut client = Client::connect(&proxy).await;
        let _ = client.wire.send(&get("/many", &extra)).await;
        let reply = client.response(false).await;
        let seen = settled(&backend).await;
        if reply.status == 200 {
            assert_framed(&reply, "many");
            assert_eq!(seen.len(), before + 1);
            let s = &seen[before];
            for i in 0..n {
                assert_eq!(
                    fields(&s.head, &format!("x-f{i}")),
                    [format!("v{i}")],
                    "{n} fields: x-f{i} lost"
                );
            }
            // and the connection goes on
            assert_eq!(client.get("/next").await.status, 200, "{n} fields");
        } else {
            assert!(matches!(reply.status, 400 | 431), "{n} fields: {reply:?}");
            assert_eq!(seen.len(), before, "{n} fields refused, and forwarded");
        }
    }
}

// ---------------------------------------------------------------------------
// Connection and hop-by-hop fields

#[tokio::test]
async fn connection_naming_host_or_forwarded_fields_cannot_remove_the_proxys() {
    let (backend, proxy) = echo_proxy().await;
    let mut failures = Vec::new();
    for named in [
        "Host",
        "host",
        "X-Forwarded-For",
        "X-Forwarded-Proto, X-Forwarded-Host",
        "Host, X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host",
    ] {
        for version in ["1.1", "1.0"] {
            let bytes = format!(
                "GET /conn HTTP/{version}\r\nHost: {HOST}\r\nConnection: {named}\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n"
            );
            let before = backend.seen().len();
            let (reply, _c) = one(&proxy, bytes.as_bytes()).await;
            let seen = settled(&backend).await;
            let what = format!("HTTP/{version} Connection: {named}: {:?}", reply.head);
            if reply.status != 200 {
                // refusing it is fine; forwarding it is not
                if !(400..500).contains(&reply.status) || seen.len() != before {
                    failures.push(what);
                }
                continue;
            }
            let s = &seen[before];
            for (name, want) in [
                ("host", HOST),
                ("x-forwarded-for", "127.0.0.1"),
                ("x-forwarded-proto", "http"),
                ("x-forwarded-host", HOST),
            ] {
                if fields(&s.head, name) != [want] {
                    failures.push(format!(
                        "{what}: {name} {:?}, not [{want}]: {:?}",
                        fields(&s.head, name),
                        s.head
                    ));
                }
            }
            if !fields(&s.head, "connection").is_empty() {
                failures.push(format!("{what}: Connection forwarded"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn connection_close_in_every_spelling_closes_after_one_response() {
    let (backend, proxy) = echo_proxy().await;
    for extra in [
        "Connection: keep-alive, close\r\n",
        "Connection: close, keep-alive\r\n",
        "Connection: CLOSE\r\n",
        "Connection: Close\r\n",
        "Connection:close\r\n",
        "Connection: \t close \t\r\n",
        "Connection: keep-alive,close\r\n",
        "Connection: foo,close\r\n",
        "Connection: ,close,\r\n",
        "Connection: keep-alive\r\nConnection: close\r\n",
        "connection: close\r\nConnection: keep-alive\r\n",
        "CONNECTION: close\r\n",
    ] {
        let before = backend.seen().len();
        let bytes = cat(&[&get("/first", extra), &get("/second", "")]);
        let mut client = Client::connect(&proxy).await;
        client.send(&bytes).await;
        let reply = client.response(false).await;
        assert_eq!(reply.status, 200, "{extra:?}: {reply:?}");
        assert_eq!(reply.text(), "GET /first HTTP/1.1", "{extra:?}");
        assert_framed(&reply, extra);
        assert!(
            client.closed().await,
            "{extra:?}: open after close, or a second response: {:?}",
            String::from_utf8_lossy(&client.wire.buf)
        );
        let seen = settled(&backend).await;
        assert_eq!(seen.len(), before + 1, "{extra:?}: {:?}", &seen[before..]);
        let s = &seen[before];
        assert!(
            fields(&s.head, "connection").is_empty(),
            "{extra:?}: {:?}",
            s.head
        );
        assert!(fields(&s.head, "foo").is_empty(), "{extra:?}");
    }
}

#[tokio::test]
async fn hop_by_hop_fields_never_reach_the_backend() {
    let (backend, proxy) = echo_proxy().await;
    let hop = "Connection: X-Secret, Keep-Alive\r\nX-Secret: s\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nTrailer: X-T\r\nProxy-Connection: keep-alive\r\nX-Kept: yes\r\n";
    let variants = [
        // plain
        get("/hop", hop),
        // two Connection fields, odd spacing and case
        get("/hop", "Connection: x-one\r\nConnection: X-TWO ,\tx-three\r\nX-ONE: 1\r\nx-two: 2\r\nX-Three: 3\r\nX-Kept: yes\r\n"),
        // an Upgrade field without the upgrade option (hyper's side)
        get("/hop", "Upgrade: h2c\r\nX-Kept: yes\r\n"),
        // the same over hyper's side: HTTP/1.0
        format!("GET /hop HTTP/1.0\r\nHost: {HOST}\r\n{hop}\r\n").into_bytes(),
        // and with a body
        format!("POST /hop HTTP/1.1\r\nHost: {HOST}\r\n{hop}Content-Length: 2\r\n\r\nhi").into_bytes(),
    ];
    for bytes in variants {
        let what = String::from_utf8_lossy(&bytes).into_owned();
        let before = backend.seen().len();
        let (reply, _c) = one(&proxy, &bytes).await;
        assert_eq!(reply.status, 200, "{what:?}: {reply:?}");
        let seen = settled(&backend).await;
        assert_eq!(seen.len(), before + 1, "{what:?}");
        let s = &seen[before];
        for name in [
            "connection",
            "keep-alive",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "proxy-connection",
            "x-secret",
            "x-one",
            "x-two",
            "x-three",
        ] {
            assert!(
                fields(&s.head, name).is_empty(),
                "{what:?}: {name} forwarded: {:?}",
                s.head
            );
        }
        assert_eq!(fields(&s.head, "x-kept"), ["yes"], "{what:?}: {:?}", s.head);
    }
}

#[tokio::test]
async fn forwarded_fields_are_the_proxys_and_preview_is_stripped_in_any_spelling() {
    let (backend, proxy) = echo_proxy().await;
    let spoof = "x-forwarded-for: 1.1.1.1\r\nX-Forwarded-For: 2.2.2.2\r\nX-FORWARDED-PROTO: https\r\nx-forwarded-host: evil.example\r\nX-Forwarded-Host: evil2.example\r\nForwarded: for=1.1.1.1\r\nX-Bluegreen-Preview: green\r\nx-bluegreen-PREVIEW: blue\r\n";
    for bytes in [
        get("/fwd", spoof),
        format!("GET /fwd HTTP/1.0\r\nHost: {HOST}\r\n{spoof}\r\n").into_bytes(),
        format!("GET http://{HOST}/fwd HTTP/1.1\r\nHost: other.example\r\n{spoof}\r\n")
            .into_bytes(),
    ] {
        let what = String::from_utf8_lossy(&bytes).into_owned();
        let before = backend.seen().len();
        let (reply, _c) = one(&proxy, &bytes).await;
        assert_eq!(reply.status, 200, "{what:?}: {reply:?}");
        let seen = settled(&backend).await;
        let s = &seen[before];
        assert_eq!(
            fields(&s.head, "x-forwarded-for"),
            ["127.0.0.1"],
            "{what:?}: {:?}",
            s.head
        );
        assert_eq!(
            fields(&s.head, "x-forwarded-proto"),
            ["http"],
            "{what:?}: {:?}",
            s.head
        );
        assert_eq!(
            fields(&s.head, "x-forwarded-host"),
            [HOST],
            "{what:?}: {:?}",
            s.head
        );
        assert_eq!(fields(&s.head, "host"), [HOST], "{what:?}: {:?}", s.head);
        assert!(
            fields(&s.head, "forwarded").is_empty(),
            "{what:?}: {:?}",
            s.head
        );
        assert!(
            fields(&s.head, "x-bluegreen-preview").is_empty(),
            "{what:?}: {:?}",
            s.head
        );
    }
}

// ---------------------------------------------------------------------------
// Host and targets

#[tokio::test]
async fn a_missing_duplicate_or_invalid_host_is_400() {
    // RFC 9112 3.2: a 400 for no Host, more than one Host line, or an invalid
    // Host value (the first app also serves unknown hosts: no 404 to hide behind)
    let (backend, proxy) = echo_proxy().await;
    let mut requests = Vec::new();
    for fields_ in [
        format!("Host: {HOST}\r\nHost: {HOST}\r\n"),
        format!("Host: {HOST}\r\nhost: other.example\r\n"),
        format!("HOST: {HOST}\r\nX-A: 1\r\nhost: {HOST}\r\n"),
        String::new(),
        format!("Host: {HOST}, other.example\r\n"),
        "Host: web production\r\n".to_owned(),
        format!("Host: {HOST}/x\r\n"),
        format!("Host: user@{HOST}\r\n"),
    ] {
        requests.push(format!("GET /host HTTP/1.1\r\n{fields_}\r\n").into_bytes());
    }
    all_rejected(&proxy, &backend, &requests, &[]).await;
}

/// Two apps: `HOST` (the first, which also serves unknown hosts) on `a`,
/// `other.example` on `b`.
async fn two_apps() -> (RunningProxy, Scripted, Scripted) {
    let a = echo_backend().await;
    let b = echo_backend().await;
    let proxy = proxy_to(&a).await;
    proxy
        .serve_from("other.example", "other", b.address())
        .await;
    (proxy, a, b)
}

#[tokio::test]
async fn an_invalid_host_is_400_on_hypers_side_too() {
    let (backend, proxy) = echo_proxy().await;
    let mut requests = Vec::new();
    for host in [
        format!("{HOST}, other.example"),
        "web production".into(),
        format!("{HOST}/x"),
        format!("user@{HOST}"),
    ] {
        requests.push(
            format!("POST /host HTTP/1.1\r\nHost: {host}\r\nContent-Length: 1\r\n\r\nx")
                .into_bytes(),
        );
    }
    all_rejected(&proxy, &backend, &requests, &[]).await;
}

#[tokio::test]
async fn the_absolute_form_authority_wins_over_host() {
    let (proxy, a, b) = two_apps().await;
    let mut failures = Vec::new();
    for (bytes, to_b) in [
        (
            format!("GET http://other.example/x HTTP/1.1\r\nHost: {HOST}\r\n\r\n"),
            true,
        ),
        (
            format!("GET http://OTHER.example:80/x HTTP/1.1\r\nHost: {HOST}\r\n\r\n"),
            true,
        ),
        (
            format!("GET http://{HOST}/x?q=1 HTTP/1.1\r\nHost: other.example\r\n\r\n"),
            false,
        ),
        (
            format!("GET http://{HOST}@other.example/x HTTP/1.1\r\nHost: {HOST}\r\n\r\n"),
            true,
        ),
    ] {
        let (na, nb) = (a.seen().len(), b.seen().len());
        let (reply, _c) = one(&proxy, bytes.as_bytes()).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (sa, sb) = (a.seen(), b.seen());
        let (got, wrong) = if to_b {
            (&sb[nb..], &sa[na..])
        } else {
            (&sa[na..], &sb[nb..])
        };
        let what = format!("{bytes:?}: {:?}", reply.head);
        if !wrong.is_empty() {
            failures.push(format!("{what}: routed by Host: {:?}", wrong[0].head));
            continue;
        }
        if bytes.contains('@') && (400..500).contains(&reply.status) {
            continue; // userinfo refused: fine (RFC 9110 4.2.4)
        }
        if reply.status != 200 || got.len() != 1 {
            failures.push(format!("{what}: not served by its app"));
            continue;
        }
        let want = if to_b { "other.example" } else { HOST };
        let hosts = fields(&got[0].head, "host");
        if hosts.len() != 1
            || !hosts[0].eq_ignore_ascii_case(want)
                && !hosts[0].eq_ignore_ascii_case(&format!("{want}:80"))
        {
            failures.push(format!(
                "{what}: forwarded Host {hosts:?}: {:?}",
                got[0].head
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn an_asterisk_target_on_get_is_400() {
    // RFC 9112 3.2.4: the asterisk form is for OPTIONS only
    let (backend, proxy) = echo_proxy().await;
    all_rejected(
        &proxy,
        &backend,
        &[
            get("*", ""),
            get("*", "Connection: close\r\n"),
            format!("HEAD * HTTP/1.1\r\nHost: {HOST}\r\n\r\n").into_bytes(),
        ],
        &[],
    )
    .await;
}

#[tokio::test]
async fn an_asterisk_target_on_get_is_400_on_hypers_side_too() {
    let (backend, proxy) = echo_proxy().await;
    all_rejected(
        &proxy,
        &backend,
        &[
            format!("GET * HTTP/1.0\r\nHost: {HOST}\r\n\r\n").into_bytes(),
            format!("POST * HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 1\r\n\r\nx").into_bytes(),
        ],
        &[],
    )
    .await;
}

#[tokio::test]
async fn a_target_starting_with_two_slashes_is_a_path() {
    let (backend, proxy) = echo_proxy().await;
    for target in ["//x", "//other.example/x", "//", "///x?y=//z"] {
        let before = backend.seen().len();
        let (reply, _c) = one(&proxy, &get(target, "")).await;
        assert_eq!(reply.status, 200, "{target}: {reply:?}");
        let seen = settled(&backend).await;
        assert_eq!(seen.len(), before + 1, "{target}");
        assert_eq!(
            request_line(&seen[before]),
            format!("GET {target} HTTP/1.1")
        );
        assert_eq!(fields(&seen[before].head, "host"), [HOST]);
    }
}

#[tokio::test]
async fn percent_encoded_targets_are_forwarded_exactly() {
    let (backend, proxy) = echo_proxy().await;
    for target in [
        "/a%2Fb%2e%2E/%00?x=%20&y=%zz",
        "/../../etc/passwd",
        "/a/./b/../c",
        "/%2e%2e/x",
        "/a;b=c?d=e;f",
        "/?",
        "/a?b?c",
        "/~user/$&'()*+,;=:@!",
    ] {
        let before = backend.seen().len();
        let (reply, _c) = one(&proxy, &get(target, "")).await;
        assert_eq!(reply.status, 200, "{target}: {reply:?}");
        let seen = settled(&backend).await;
        assert_eq!(
            request_line(&seen[before]),
            format!("GET {target} HTTP/1.1"),
            "{target}"
        );
    }
}

#[tokio::test]
async fn non_ascii_and_fragment_targets_are_rejected_or_forwarded_sanely() {
    let (backend, proxy) = echo_proxy().await;
    let raw = cat(&[
        b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: ",
        HOST.as_bytes(),
        b"\r\n\r\n",
    ]);
    if let Some(s) = rejected_or_forwarded(&proxy, &backend, &raw).await {
        assert!(
            find(&s.raw, b"GET /caf\xc3\xa9 HTTP/1.1\r\n").is_some()
                || request_line(&s) == "GET /caf%C3%A9 HTTP/1.1",
            "{:?}",
            s.head
        );
    }
    for (target, forwarded) in [("/p?a=1#frag", "/p?a=1"), ("/p#frag?x", "/p")] {
        if let Some(s) = rejected_or_forwarded(&proxy, &backend, &get(target, "")).await {
            let line = request_line(&s);
            assert!(
                line == format!("GET {target} HTTP/1.1")
                    || line == format!("GET {forwarded} HTTP/1.1"),
                "{line}"
            );
        }
    }
}

#[tokio::test]
async fn request_lines_with_odd_whitespace_are_rejected_or_normalised() {
    let (backend, proxy) = echo_proxy().await;
    for line in [
        "GET  /ws HTTP/1.1",
        "GET\t/ws HTTP/1.1",
        "GET /ws  HTTP/1.1",
        "GET /ws\tHTTP/1.1",
        "GET /ws HTTP/1.1 ",
        " GET /ws HTTP/1.1",
    ] {
        let bytes = format!("{line}\r\nHost: {HOST}\r\n\r\n");
        if let Some(s) = rejected_or_forwarded(&proxy, &backend, bytes.as_bytes()).await {
            assert_eq!(request_line(&s), "GET /ws HTTP/1.1", "{line:?}");
        }
    }
    for line in [
        "GET /w s HTTP/1.1",
        "GET /w\ts HTTP/1.1",
        "GET /ws HTTP/1.1 x",
        "GET /ws",
        "GET",
    ] {
        let bytes = format!("{line}\r\nHost: {HOST}\r\n\r\n");
        assert_rejected(&proxy, &backend, bytes.as_bytes(), &[]).await;
    }
}

#[tokio::test]
async fn other_versions_are_refused_and_never_forwarded() {
    let (backend, proxy) = echo_proxy().await;
    for version in [
        "HTTP/2.0",
        "http/1.1",
        "HTTP/1.1x",
        "HTTP/01.1",
        "HTTP/1",
        "HTTP/3.0",
        "HTCPCP/1.0",
    ] {
        let bytes = format!("GET /v {version}\r\nHost: {HOST}\r\n\r\n");
        assert_rejected(&proxy, &backend, bytes.as_bytes(), &[505]).await;
    }
}

#[tokio::test]
async fn huge_targets_are_served_whole_or_refused_unforwarded() {
    let (backend, proxy) = echo_proxy().await;
    let fixed = get("/", "").len();
    let sizes = [
        8 * 1024,
        64 * 1024 - 1,
        64 * 1024,
        64 * 1024 + 1,
        200 * 1024,
        1024 * 1024,
    ];
    for size in sizes {
        // the whole head is `size` bytes
        let target = format!("/{}", "u".repeat(size - fixed));
        let bytes = get(&target, "");
        assert_eq!(bytes.len(), size);
        let before = backend.seen().len();
        let mut client = Client::connect(&proxy).await;
        let _ = client.wire.send(&bytes).await;
        let reply = client.response(false).await;
        let seen = settled(&backend).await;
        if reply.status == 200 {
            assert_eq!(seen.len(), before + 1, "{size}");
            assert_eq!(
                request_line(&seen[before]),
                format!("GET {target} HTTP/1.1"),
                "{size}"
            );
            assert_framed(&reply, "huge");
            assert_eq!(reply.text().len(), target.len() + 13, "{size}");
            assert_eq!(
                client.get("/after").await.text(),
                "GET /after HTTP/1.1",
                "{size}"
            );
        } else {
            assert!(
                matches!(reply.status, 400 | 414 | 431),
                "{size}: {}",
                reply.head
            );
            assert_eq!(seen.len(), before, "{size}: refused, and forwarded");
        }
        if size == 1024 * 1024 {
            assert_ne!(reply.status, 200, "a 1 MiB head accepted");
        }
    }
}

// ---------------------------------------------------------------------------
// pipelining

async fn by_path_backend() -> Scripted {
    Scripted::replying(|seen| {
        let line = request_line(seen);
        let path = line.split(' ').nth(1).unwrap_or("").to_owned();
        let head = seen.head.starts_with("HEAD ");
        let bytes: Vec<u8> = match path.as_str() {
            "/head-len" => b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n".to_vec(),
            "/head-chunked" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
            "/204" => b"HTTP/1.1 204 No Content\r\nX-P: 204\r\n\r\n".to_vec(),
            "/304" => {
                b"HTTP/1.1 304 Not Modified\r\nETag: \"e\"\r\nContent-Length: 10\r\n\r\n".to_vec()
            }
            "/304-chunked" => {
                b"HTTP/1.1 304 Not Modified\r\nETag: \"e\"\r\nTransfer-Encoding: chunked\r\n\r\n"
                    .to_vec()
            }
            _ => line_reply(&line, head),
        };
        (bytes, After::KeepOpen)
    })
    .await
}

#[tokio::test]
async fn requests_pipelined_after_head_204_and_304_get_their_own_responses() {
    let backend = by_path_backend().await;
    let proxy = proxy_to(&backend).await;
    let plan: [(&str, &str, u16); 10] = [
        ("HEAD", "/head-len", 200),
        ("GET", "/a", 200),
        ("HEAD", "/head-chunked", 200),
        ("GET", "/b", 200),
        ("GET", "/204", 204),
        ("GET", "/c", 200),
        ("GET", "/304", 304),
        ("GET", "/d", 200),
        ("GET", "/304-chunked", 304),
        ("GET", "/e", 200),
    ];
    let mut bytes = Vec::new();
    for (m, p, _) in plan {
        bytes.extend_from_slice(format!("{m} {p} HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes());
    }
    let mut client = Client::connect(&proxy).await;
    client.send(&bytes).await;
    for (m, p, status) in plan {
        let reply = client.response(m == "HEAD").await;
        let what = format!("{m} {p}: {reply:?}");
        assert_eq!(reply.status, status, "{what}");
        assert_framed(&reply, &what);
        match p {
            "/head-len" => assert_eq!(
                field(&reply.head, "content-length").as_deref(),
                Some("10"),
                "{what}"
            ),
            "/204" => {
                assert!(
                    field(&reply.head, "content-length").is_none() && !is_chunked(&reply.head),
                    "{what}"
                );
                assert_eq!(field(&reply.head, "x-p").as_deref(), Some("204"), "{what}");
            }
            "/304" | "/304-chunked" => assert!(!is_chunked(&reply.head), "{what}"),
            _ if m == "GET" => assert_eq!(reply.text(), format!("GET {p} HTTP/1.1"), "{what}"),
            _ => {}
        }
    }
    // nothing more
    let more = tokio::time::timeout(Duration::from_millis(500), client.wire.fill()).await;
    assert!(
        more.is_err() && client.wire.buf.is_empty(),
        "bytes after the last response: {:?}",
        String::from_utf8_lossy(&client.wire.buf)
    );
}

#[tokio::test]
async fn a_get_followed_by_garbage_is_answered_then_400_and_closed() {
    let (backend, proxy) = echo_proxy().await;
    for garbage in [
        &b"GARBAGE\r\n\r\n"[..],
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
        b"GET /b HTTP/1.1\r\nHost: web.production\r\nno colon\r\n\r\nGET /c HTTP/1.1\r\nHost: web.production\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"GET /b HTTP/1.1\r\nHost: web.production\r\n\x00\r\n\r\n",
    ] {
        let before = backend.seen().len();
        let mut client = Client::connect(&proxy).await;
        client.send(&cat(&[&get("/a", ""), garbage])).await;
        let first = client.response(false).await;
        assert_eq!(first.text(), "GET /a HTTP/1.1", "{first:?}");
        let second = client.response(false).await;
        let what = format!("{:?}: {second:?}", String::from_utf8_lossy(garbage));
        assert!((400..500).contains(&second.status) || second.head.is_empty(), "{what}");
        assert!(client.closed().await || second.head.is_empty(), "{what}: open after garbage");
        let seen = settled(&backend).await;
        assert_eq!(seen.len(), before + 1, "{what}: {:?}", &seen[before..]);
    }
}

#[tokio::test]
async fn an_empty_line_before_a_request_line_is_ignored() {
    // RFC 9112 2.2: a server SHOULD ignore at least one empty line before the
    // request line
    let (_backend, proxy) = echo_proxy().await;
    let mut client = Client::connect(&proxy).await;
    client
        .send(&cat(&[
            b"\r\n",
            &get("/a", ""),
            b"\r\n",
            &get("/b", ""),
            b"\r\n",
            &get("/c", "Connection: close\r\n"),
        ]))
        .await;
    for p in ["/a", "/b", "/c"] {
        let reply = client.response(false).await;
        assert_eq!(reply.status, 200, "{p}: {reply:?}");
        assert_eq!(reply.text(), format!("GET {p} HTTP/1.1"));
    }
    assert!(client.closed().await);
}

#[tokio::test]
async fn a_stream_of_empty_lines_does_not_hold_a_connection_open() {
    let backend = echo_backend().await;
    let proxy = proxy_with_short_timeouts(&backend).await;
    let client = Client::connect(&proxy).await;
    let (mut read, mut write) = client.wire.stream.into_split();
    let feeder = tokio::spawn(async move {
        for _ in 0..200 {
            if write.write_all(b"\r\n").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 1024];
        while let Ok(n) = read.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
    feeder.abort();
    assert!(
        closed.is_ok(),
        "blank lines kept the connection open past the bounds"
    );
}

// ---------------------------------------------------------------------------
// smuggling through framing the own server must notice

#[tokio::test]
async fn a_request_hidden_in_a_body_never_reaches_the_backend_as_a_request() {
    let (backend, proxy) = echo_proxy().await;
    let n = SMUGGLED.len();
    let chunked_body = format!("{n:x}\r\n{SMUGGLED}\r\n0\r\n\r\n");
    let variants: Vec<String> = vec![
        format!("content-length: {n}\r\n\r\n{SMUGGLED}"),
        format!("CONTENT-LENGTH: {n}\r\n\r\n{SMUGGLED}"),
        format!("Content-Length:{n}\r\n\r\n{SMUGGLED}"),
        format!("Content-Length:\t{n}\t\r\n\r\n{SMUGGLED}"),
        format!("Content-Length: 0{n}\r\n\r\n{SMUGGLED}"),
        format!("Content-Length: {n}, {n}\r\n\r\n{SMUGGLED}"),
        format!("Connection: Content-Length\r\nContent-Length: {n}\r\n\r\n{SMUGGLED}"),
        format!("transfer-encoding: CHUNKED\r\n\r\n{chunked_body}"),
        format!("Transfer-Encoding:chunked\r\n\r\n{chunked_body}"),
        format!("Transfer-Encoding: gzip, chunked\r\n\r\n{chunked_body}"),
        format!(
            "Connection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n{chunked_body}"
        ),
        format!("Transfer-Encoding: chunked\r\nContent-Length: {n}\r\n\r\n{chunked_body}"),
        format!("Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}"),
        format!("Transfer-Encoding: chunked, identity\r\n\r\n{chunked_body}"),
        format!("Transfer-Encoding: identity\r\nContent-Length: 0\r\n\r\n{SMUGGLED}"),
        format!("Transfer-Encoding: xchunked\r\n\r\n{chunked_body}"),
        format!("Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n{chunked_body}"),
        format!("Transfer-Encoding : chunked\r\n\r\n{chunked_body}"),
        format!("Content-Length : {n}\r\n\r\n{SMUGGLED}"),
        format!("Content-Length: {n}\r\nContent-Length: 0\r\n\r\n{SMUGGLED}"),
        format!("Content-Length: +{n}\r\n\r\n{SMUGGLED}"),
        format!("Content-Length: 0x{n:x}\r\n\r\n{SMUGGLED}"),
        format!("Content-Length: {n}.0\r\n\r\n{SMUGGLED}"),
        format!("X-A: a\r\n Content-Length: {n}\r\n\r\n{SMUGGLED}"),
        format!("Expect: 100-continue\r\nContent-Length: {n}\r\n\r\n{SMUGGLED}"),
        format!("Transfer-Encoding:\r\n\r\n{SMUGGLED}"),
        format!("Transfer-Encoding: \r\n\r\n{chunked_body}"),
        format!("Content-Length:\r\n\r\n{SMUGGLED}"),
        format!("Content-Length:\r\n {n}\r\n\r\n{SMUGGLED}"),
        format!("Transfer-Encoding: ,chunked\r\n\r\n{chunked_body}"),
        format!("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n{chunked_body}"),
        format!("Content-Length: 00000000000000000000{n}\r\n\r\n{SMUGGLED}"),
        format!("Content-Length: {n}\r\nContent-Length: {n}\r\n\r\n{SMUGGLED}"),
        format!("Content-Length: 18446744073709551616{n}\r\n\r\n{SMUGGLED}"),
        format!("Transfer-Encoding: \"chunked\"\r\n\r\n{chunked_body}"),
        format!("Transfer-Encoding: chunked;q=1\r\n\r\n{chunked_body}"),
        format!("Transfer-\x00Encoding: chunked\r\n\r\n{chunked_body}"),
    ];
    for (i, v) in variants.iter().enumerate() {
        let bytes = format!("GET /carrier HTTP/1.1\r\nHost: {HOST}\r\n{v}");
        let before = backend.seen().len();
        let mut client = Client::connect(&proxy).await;
        let _ = client.wire.send(bytes.as_bytes()).await;
        let mut replies = Vec::new();
        for _ in 0..2 {
            let r = tokio::time::timeout(Duration::from_secs(2), client.response(false)).await;
            match r {
                Ok(r) if !r.head.is_empty() => replies.push(r),
                _ => break,
            }
        }
        let seen = settled(&backend).await;
        let what = format!("variant {i} {v:?}: replies {replies:?}");
        never_smuggled(&seen[before..], &what);
        for s in &seen[before..] {
            assert_clean(s, &what);
            assert!(s.head.starts_with("GET /carrier "), "{what}");
            // the body came whole, as a body
            assert!(
                s.body.is_empty() || s.body == SMUGGLED.as_bytes(),
                "{what}: body {:?}",
                s.body
            );
        }
        assert!(replies.len() <= 1, "{what}: two responses to one request");
    }
}

#[tokio::test]
async fn both_framings_close_the_connection_after_the_response() {
    // RFC 9112 6.1: with Transfer-Encoding and Content-Length, the server MUST
    // close after responding
    let (backend, proxy) = echo_proxy().await;
    let bytes = format!(
        "POST /both HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}"
    );
    let mut client = Client::connect(&proxy).await;
    let _ = client.wire.send(bytes.as_bytes()).await;
    let reply = client.response(false).await;
    assert!(
        reply.status == 200 || (400..500).contains(&reply.status),
        "{reply:?}"
    );
    assert!(
        client.closed().await,
        "open after both framings: {:?}",
        String::from_utf8_lossy(&client.wire.buf)
    );
    never_smuggled(&settled(&backend).await, "both framings");
}

// ---------------------------------------------------------------------------
// slow, odd and half-closing clients

#[tokio::test]
async fn a_client_writing_one_byte_at_a_time_is_served_in_order() {
    let (backend, proxy) = echo_proxy().await;
    let client = Client::connect(&proxy).await;
    client.wire.stream.set_nodelay(true).unwrap();
    let bytes = cat(&[
        &get("/one", "")[..],
        format!("HEAD /two HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes(),
        format!("POST /three HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 3\r\n\r\nabc").as_bytes(),
        &get("/four", "Connection: close\r\n"),
    ]);
    let (read, mut write) = client.wire.stream.into_split();
    let writer = tokio::spawn(async move {
        for b in bytes {
            write.write_all(&[b]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        write
    });
    let mut client = Client {
        wire: Wire::new(read.reunite(writer.await.unwrap()).unwrap()),
    };
    for (p, head) in [
        ("GET /one", false),
        ("HEAD /two", true),
        ("POST /three", false),
        ("GET /four", false),
    ] {
        let reply = client.response(head).await;
        assert_eq!(reply.status, 200, "{p}: {reply:?}");
        assert_framed(&reply, p);
        if !head {
            assert_eq!(reply.text(), format!("{p} HTTP/1.1"));
        }
    }
    assert!(client.closed().await);
    let seen = settled(&backend).await;
    assert_eq!(seen.len(), 4);
    assert_eq!(seen[2].body, b"abc");
}

fn short_heads() -> bluegreen_proxy::ProxyOptions {
    test_options()
        .with_header_timeout(Duration::from_millis(300))
        .with_idle_timeout(Duration::from_millis(2000))
}

/// Sends `first` (whole), then drips `bytes` one per `pause`; how long until the
/// proxy closed, and what it sent after the first response.
async fn drip(
    proxy: &RunningProxy,
    first: Option<&[u8]>,
    bytes: Vec<u8>,
    pause: Duration,
) -> (Duration, Vec<u8>) {
    let mut client = Client::connect(proxy).await;
    client.wire.stream.set_nodelay(true).unwrap();
    if let Some(first) = first {
        client.send(first).await;
        let reply = client.response(false).await;
        assert_eq!(reply.status, 200, "{reply:?}");
    }
    let rest = std::mem::take(&mut client.wire.buf);
    let (mut read, mut write) = client.wire.stream.into_split();
    let start = tokio::time::Instant::now();
    let dripper = tokio::spawn(async move {
        for b in bytes {
            if write.write_all(&[b]).await.is_err() {
                return;
            }
            tokio::time::sleep(pause).await;
        }
        tokio::time::sleep(BOUND).await;
    });
    let mut got = rest;
    let _ = tokio::time::timeout(BOUND, read.read_to_end(&mut got)).await;
    dripper.abort();
    (start.elapsed(), got)
}

#[tokio::test]
async fn a_dripped_first_head_is_cut_at_the_header_timeout() {
    let backend = echo_backend().await;
    let proxy = proxy_with(&backend, short_heads()).await;
    let (took, got) = drip(
        &proxy,
        None,
        get(
            "/dripped",
            "X-Pad: 0123456789012345678901234567890123456789\r\n",
        ),
        Duration::from_millis(50),
    )
    .await;
    assert!(took < Duration::from_millis(1500), "cut after {took:?}");
    assert!(
        got.is_empty(),
        "documented: closed with no response; got {:?}",
        String::from_utf8_lossy(&got)
    );
    assert!(settled(&backend).await.is_empty());
}

#[tokio::test]
async fn a_dripped_second_head_is_cut_by_a_bound() {
    // after a plain request, and after one served by hyper's side
    let backend = echo_backend().await;
    let proxy = proxy_with(&backend, short_heads()).await;
    let post =
        format!("POST /p HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 1\r\n\r\nx").into_bytes();
    for first in [get("/first", ""), post] {
        let (took, got) = drip(
            &proxy,
            Some(&first),
            get("/dripped", &"X-Pad: 0123456789\r\n".repeat(20)),
            Duration::from_millis(50),
        )
        .await;
        assert!(
            took < Duration::from_millis(4000),
            "{:?}: cut after {took:?}",
            String::from_utf8_lossy(&first)
        );
        assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    }
    assert_eq!(settled(&backend).await.len(), 2);
}

#[tokio::test]
async fn a_stalled_second_head_is_cut_at_the_header_timeout() {
    // README: the header timeout bounds "every HTTP/1.1 request head"; the idle
    // timeout (2 s here) is for connections with no request in progress
    let backend = echo_backend().await;
    let proxy = proxy_with(&backend, short_heads()).await;
    let post =
        format!("POST /p HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 1\r\n\r\nx").into_bytes();
    let mut failures = Vec::new();
    for (name, first) in [
        ("after a plain GET", get("/first", "")),
        ("after a POST (hyper's side)", post),
    ] {
        let (took, got) = drip(
            &proxy,
            Some(&first),
            b"GET /second HTTP/1.1\r\nHo".to_vec(),
            Duration::ZERO,
        )
        .await;
        if took > Duration::from_millis(1200) || !got.is_empty() {
            failures.push(format!(
                "{name}: closed after {took:?}, sent {:?}",
                String::from_utf8_lossy(&got)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(settled(&backend).await.len(), 2);
}

#[tokio::test]
async fn a_client_that_half_closes_gets_whole_responses_or_none() {
    let backend = Scripted::replying(|seen| {
        let line = request_line(seen);
        let body = line.repeat(2000);
        let mut r =
            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        r.extend_from_slice(body.as_bytes());
        (r, After::KeepOpen)
    })
    .await;
    let proxy = proxy_to(&backend).await;
    for count in [1, 3] {
        let mut client = Client::connect(&proxy).await;
        let mut bytes = Vec::new();
        for i in 0..count {
            bytes.extend_from_slice(&get(&format!("/h{i}"), ""));
        }
        client.send(&bytes).await;
        client.wire.stream.shutdown().await.unwrap();
        let mut got = 0;
        for i in 0..count {
            let reply = client.response(false).await;
            if reply.head.is_empty() {
                break;
            }
            assert_eq!(reply.status, 200, "{reply:?}");
            assert!(
                reply.complete,
                "a response cut short after a half-close: {}",
                reply.head
            );
            assert_eq!(reply.text(), format!("GET /h{i} HTTP/1.1").repeat(2000));
            got += 1;
        }
        assert!(client.closed().await || got == count);
        eprintln!("half-close: {got} of {count} answered");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reads_nothing_holds_back_the_backend_and_later_gets_it_all() {
    const TOTAL: usize = 64 * 1024 * 1024;
    let sent = Arc::new(AtomicUsize::new(0));
    let s = sent.clone();
    let backend = Scripted::custom(move |mut peer| {
        let sent = s.clone();
        async move {
            let Some(seen) = peer.request().await else {
                return;
            };
            if !seen.head.starts_with("GET /big ") {
                let _ = peer.send(OK).await;
                return;
            }
            if !peer
                .send(format!("HTTP/1.1 200 OK\r\nContent-Length: {TOTAL}\r\n\r\n").as_bytes())
                .await
            {
                return;
            }
            let piece = vec![b'x'; 64 * 1024];
            while sent.load(Ordering::SeqCst) < TOTAL {
                if !peer.send(&piece).await {
                    return;
                }
                sent.fetch_add(piece.len(), Ordering::SeqCst);
            }
        }
    })
    .await;
    let proxy = proxy_to(&backend).await;
    let mut client = Client::connect(&proxy).await;
    client.send(&get("/big", "")).await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let held = sent.load(Ordering::SeqCst);
    assert!(
        held < TOTAL / 2,
        "the proxy buffered {held} bytes for a client that reads nothing"
    );
    // another client is served meanwhile
    assert_eq!(get_once(&proxy, "/other").await.status, 200);
    // and the sleeper gets every byte
    let head = client.wire.until(b"\r\n\r\n").await.unwrap();
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut got = client.wire.buf.len();
    assert!(client.wire.buf.iter().all(|&b| b == b'x'));
    client.wire.buf.clear();
    let read = tokio::time::timeout(Duration::from_secs(30), async {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match client.wire.stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    assert!(buf[..n]
                        .iter()
                        .all(|&b| b == b'x' || b == b'\r' || b == b'\n' || b.is_ascii_hexdigit()));
                    got += n;
                    if field(&head, "content-length").is_some() && got >= TOTAL {
                        break;
                    }
                }
            }
        }
    })
    .await;
    assert!(read.is_ok(), "stalled after {got} bytes");
    if field(&head, "content-length").is_some() {
        assert_eq!(got, TOTAL, "{head}");
    } else {
        assert!(got > TOTAL, "{head}");
    }
}

// ---------------------------------------------------------------------------
// framing what backends send

#[tokio::test]
async fn a_close_delimited_backend_response_reaches_the_client_whole() {
    let backend = Scripted::custom(|mut peer| async move {
        let Some(seen) = peer.request().await else {
            return;
        };
        let _ = peer.send(b"HTTP/1.1 200 OK\r\nX-Id: cd\r\n\r\n").await;
        let body = format!("close-delimited body for {}", request_line(&seen));
        let body = body.repeat(5000);
        let _ = trickle(
            &mut peer,
            body.as_bytes(),
            16 * 1024,
            Duration::from_millis(5),
        )
        .await;
        // the end of the body is the end of the connection
    })
    .await;
    let proxy = proxy_to(&backend).await;
    let mut client = Client::connect(&proxy).await;
    let reply = client.get("/cd").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_framed(&reply, "close-delimited");
    assert_eq!(
        reply.text(),
        "close-delimited body for GET /cd HTTP/1.1".repeat(5000)
    );
    assert!(
        field(&reply.head, "content-length").is_none(),
        "a length before the end was known: {}",
        reply.head
    );
    if !reply.close_delimited {
        // chunked: the connection goes on
        assert!(is_chunked(&reply.head));
        let again = client.get("/cd2").await;
        assert_eq!(
            again.text(),
            "close-delimited body for GET /cd2 HTTP/1.1".repeat(5000)
        );
    }
    // a HEAD of a close-delimited resource, then a GET on the same connection
    let mut client = Client::connect(&proxy).await;
    client
        .send(format!("HEAD /cd HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())
        .await;
    let head = client.response(true).await;
    assert_eq!(head.status, 200, "{head:?}");
    let reply = client.response(false).await;
    assert!(
        reply.head.is_empty() || reply.status == 0,
        "bytes after a HEAD's response: {reply:?}"
    );
}

#[tokio::test]
async fn interim_backend_responses_never_shift_the_next_response() {
    let backend = Scripted::replying(|seen| {
        let line = request_line(seen);
        if line.starts_with("GET /early ") {
            (
                b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal".to_vec(),
                After::KeepOpen,
            )
        } else {
            (line_reply(&line, false), After::KeepOpen)
        }
    })
    .await;
    let proxy = proxy_to(&backend).await;
    let mut client = Client::connect(&proxy).await;
    client
        .send(&cat(&[
            &get("/early", ""),
            &get("/after", ""),
            &get("/early", ""),
            &get("/last", ""),
        ]))
        .await;
    for p in ["/early", "/after", "/early", "/last"] {
        let reply = client.response(false).await;
        assert_eq!(reply.status, 200, "{p}: {reply:?}");
        assert_framed(&reply, p);
        let want = if p == "/early" {
            "final".to_owned()
        } else {
            format!("GET {p} HTTP/1.1")
        };
        assert_eq!(reply.text(), want, "{p}: {reply:?}");
        for interim in &reply.interim {
            assert!(interim.starts_with("HTTP/1.1 1"), "{interim:?}");
            assert!(
                field(interim, "content-length").is_none() && !is_chunked(interim),
                "{interim:?}"
            );
        }
    }
}

#[tokio::test]
async fn bytes_past_a_backend_length_never_become_a_response() {
    // only the very first response carries extra bytes that look like another
    let first = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let backend = Scripted::custom(move |mut peer| {
        let first = first.clone();
        async move {
            while let Some(seen) = peer.request().await {
                let line = request_line(&seen);
                let bytes = if first.swap(false, Ordering::SeqCst) {
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil".to_vec()
                } else {
                    line_reply(&line, false)
                };
                if !peer.send(&bytes).await {
                    return;
                }
            }
        }
    })
    .await;
    let proxy = proxy_to(&backend).await;
    let mut client = Client::connect(&proxy).await;
    client
        .send(&cat(&[&get("/1", ""), &get("/2", ""), &get("/3", "")]))
        .await;
    let replies = [
        client.response(false).await,
        client.response(false).await,
        client.response(false).await,
    ];
    assert_eq!(replies[0].text(), "ok", "{replies:?}");
    for (i, r) in replies.iter().enumerate().skip(1) {
        assert_eq!(r.status, 200, "{i}: {r:?}");
        assert_eq!(r.text(), format!("GET /{} HTTP/1.1", i + 1), "{i}: {r:?}");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(client.get("/4").await.text(), "GET /4 HTTP/1.1");
}

#[tokio::test]
async fn bodies_sent_after_head_204_and_304_never_reach_the_client() {
    let backend = Scripted::replying(|seen| {
        let line = request_line(seen);
        let path = line.split(' ').nth(1).unwrap_or("").to_owned();
        let bytes: Vec<u8> = match path.as_str() {
            "/head" => b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nHELLO".to_vec(),
            "/204" => b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nHELLO".to_vec(),
            "/304" => b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\nHELLO".to_vec(),
            _ => line_reply(&line, false),
        };
        (bytes, After::KeepOpen)
    })
    .await;
    let proxy = proxy_to(&backend).await;
    for (method, path, status) in [
        ("HEAD", "/head", 200),
        ("GET", "/204", 204),
        ("GET", "/304", 304),
    ] {
        let mut client = Client::connect(&proxy).await;
        client
            .send(&cat(&[
                format!("{method} {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes(),
                &get("/next", ""),
                &get("/last", "Connection: close\r\n"),
            ]))
            .await;
        let first = client.response(method == "HEAD").await;
        assert_eq!(first.status, status, "{path}: {first:?}");
        assert_framed(&first, path);
        for p in ["/next", "/last"] {
            let reply = client.response(false).await;
            let what = format!("{path} then {p}: {reply:?}");
            assert!(
                !reply.head.contains("HELLO") && !reply.text().contains("HELLO"),
                "{what}"
            );
            // the backend's stray bytes may cost the next request a 502, never a wrong answer
            assert!(reply.status == 200 || reply.status == 502, "{what}");
            if reply.status == 200 {
                assert_eq!(reply.text(), format!("GET {p} HTTP/1.1"), "{what}");
            }
        }
        let rest = client.wire.rest().await;
        assert!(
            rest.is_empty(),
            "{path}: after the last response: {:?}",
            String::from_utf8_lossy(&rest)
        );
    }
}

#[tokio::test]
async fn a_client_that_leaves_during_a_streamed_response_releases_the_backend() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let backend = Scripted::custom(move |mut peer| {
        let tx = tx.clone();
        async move {
            if peer.request().await.is_none() {
                return;
            }
            let _ = peer
                .send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                .await;
            // a chunk every 50 ms until the proxy lets go
            for _ in 0..400 {
                if !peer.send(b"5\r\nhello\r\n").await {
                    let _ = tx.send(());
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    })
    .await;
    let proxy = proxy_to(&backend).await;
    let mut client = Client::connect(&proxy).await;
    client.send(&get("/stream", "")).await;
    let head = tokio::time::timeout(BOUND, client.wire.until(b"hello"))
        .await
        .unwrap();
    assert!(head.is_some());
    drop(client);
    assert!(
        tokio::time::timeout(BOUND, rx.recv()).await.is_ok(),
        "the backend still streams to a client that left"
    );
}

#[tokio::test]
async fn pipelined_responses_keep_request_order_whatever_the_backend_timing() {
    let backend = Scripted::custom(|mut peer| async move {
        while let Some(seen) = peer.request().await {
            let line = request_line(&seen);
            if let Some(ms) = line
                .split(' ')
                .nth(1)
                .and_then(|p| p.strip_prefix("/wait/"))
            {
                tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
            }
            if !peer.send(&line_reply(&line, false)).await {
                return;
            }
        }
    })
    .await;
    let proxy = proxy_to(&backend).await;
    let paths = ["/wait/300", "/wait/0", "/wait/150", "/wait/0", "/wait/50"];
    let mut client = Client::connect(&proxy).await;
    let bytes: Vec<u8> = paths.iter().flat_map(|p| get(p, "")).collect();
    client.send(&bytes).await;
    for p in paths {
        let reply = client.response(false).await;
        assert_eq!(reply.text(), format!("GET {p} HTTP/1.1"), "{reply:?}");
    }
}

#[tokio::test]
async fn hop_by_hop_fields_of_a_response_never_reach_the_client() {
    let backend = Scripted::always(
        b"HTTP/1.1 200 OK\r\nConnection: X-Internal, keep-alive\r\nX-Internal: secret\r\nKeep-Alive: timeout=1\r\nProxy-Connection: keep-alive\r\nUpgrade: h2c\r\nDate: Mon, 01 Jan 2001 00:00:00 GMT\r\nX-Kept: yes\r\nContent-Length: 2\r\n\r\nok",
        After::KeepOpen,
    )
    .await;
    let proxy = proxy_to(&backend).await;
    let mut client = Client::connect(&proxy).await;
    for _ in 0..2 {
        let reply = client.get("/r").await;
        assert_eq!(reply.text(), "ok", "{reply:?}");
        assert_framed(&reply, "response hop-by-hop");
        for name in ["x-internal", "keep-alive", "proxy-connection", "upgrade"] {
            assert!(
                fields(&reply.head, name).is_empty(),
                "{name} reached the client: {}",
                reply.head
            );
        }
        assert!(
            fields(&reply.head, "connection")
                .iter()
                .all(|v| !v.to_ascii_lowercase().contains("x-internal")),
            "{}",
            reply.head
        );
        assert_eq!(fields(&reply.head, "date").len(), 1, "{}", reply.head);
        assert_eq!(fields(&reply.head, "x-kept"), ["yes"]);
    }
}

#[tokio::test]
async fn five_hundred_pipelined_gets_in_one_write_are_answered_in_order() {
    let (_backend, proxy) = echo_proxy().await;
    let mut client = Client::connect(&proxy).await;
    let bytes: Vec<u8> = (0..500).flat_map(|i| get(&format!("/p{i}"), "")).collect();
    let (read, mut write) = client.wire.stream.into_split();
    let writer = tokio::spawn(async move {
        write.write_all(&bytes).await.unwrap();
        write
    });
    client = Client {
        wire: Wire::new(read.reunite(writer.await.unwrap()).unwrap()),
    };
    for i in 0..500 {
        let reply = client.response(false).await;
        assert_eq!(
            reply.text(),
            format!("GET /p{i} HTTP/1.1"),
            "{i}: {reply:?}"
        );
    }
}

#[tokio::test]
async fn methods_that_only_look_like_get_or_head_are_not_served_as_them() {
    let (backend, proxy) = echo_proxy().await;
    for method in ["HEADX", "GETS", "get", "Head", "GET\x0b", "G\x00T", "GET:"] {
        let bytes = format!("{method} /m HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
        let before = backend.seen().len();
        let (reply, _c) = one(&proxy, bytes.as_bytes()).await;
        let seen = settled(&backend).await;
        let what = format!("{method:?}: {reply:?}");
        if (400..500).contains(&reply.status) || reply.status == 501 {
            assert_eq!(seen.len(), before, "{what}: refused and forwarded");
            continue;
        }
        assert_eq!(seen.len(), before + 1, "{what}");
        assert_eq!(
            request_line(&seen[before]),
            format!("{method} /m HTTP/1.1"),
            "{what}"
        );
    }
}

#[tokio::test]
async fn a_close_delimited_http10_backend_response_is_reframed_whole() {
    let backend = Scripted::custom(|mut peer| async move {
        if peer.request().await.is_none() {
            return;
        }
        let _ = peer
            .send(b"HTTP/1.0 200 OK\r\nX-Old: yes\r\n\r\nold-style body")
            .await;
    })
    .await;
    let proxy = proxy_to(&backend).await;
    let mut client = Client::connect(&proxy).await;
    let reply = client.get("/old").await;
    assert!(reply.head.starts_with("HTTP/1.1 200"), "{reply:?}");
    assert_framed(&reply, "HTTP/1.0 backend");
    assert_eq!(reply.text(), "old-style body");
    if !reply.close_delimited {
        assert_eq!(client.get("/old").await.text(), "old-style body");
    }
}

#[tokio::test]
async fn an_unsolicited_backend_101_never_switches_the_client() {
    let backend = Scripted::replying(|seen| {
        if request_line(seen).starts_with("GET /switch ") {
            (
                b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: evil\r\n\r\nGET /inner HTTP/1.1\r\n\r\n".to_vec(),
                After::KeepOpen,
            )
        } else {
            let line = request_line(seen);
            (line_reply(&line, false), After::KeepOpen)
        }
    })
    .await;
    let proxy = proxy_to(&backend).await;
    let mut client = Client::connect(&proxy).await;
    client
        .send(&cat(&[&get("/switch", ""), &get("/after", "")]))
        .await;
    let first = client.response(false).await;
    assert_ne!(
        first.status, 101,
        "switched a client that asked for no upgrade: {first:?}"
    );
    assert!(first.status >= 500 || first.status == 0, "{first:?}");
    let second = client.response(false).await;
    assert!(
        second.head.is_empty() || second.text() == "GET /after HTTP/1.1",
        "{second:?}"
    );
}

#[tokio::test]
async fn chunk_framing_tricks_never_split_a_body_into_a_request() {
    let (backend, proxy) = echo_proxy().await;
    let n = SMUGGLED.len();
    let bodies = [
        format!("{n:x}\n{SMUGGLED}\r\n0\r\n\r\n"),
        format!("{n:x};ext=\"a\r\n{SMUGGLED}\r\n0\r\n\r\n"),
        format!("0x{n:x}\r\n{SMUGGLED}\r\n0\r\n\r\n"),
        format!("-{n:x}\r\n{SMUGGLED}\r\n0\r\n\r\n"),
        format!("1{}\r\n{SMUGGLED}\r\n0\r\n\r\n", "0".repeat(16)),
        format!("{n:x} \r\n{SMUGGLED}\r\n0\r\n\r\n"),
        format!("{:x}\r\n{SMUGGLED}\r\n0\r\n\r\n", n - 2),
        format!("0\r\n\r\n{SMUGGLED}"),
        format!("0\r\nX-T: 1\r\n{SMUGGLED}"),
    ];
    for (i, body) in bodies.iter().enumerate() {
        let bytes = format!(
            "POST /carrier HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n{body}"
        );
        let before = backend.seen().len();
        let mut client = Client::connect(&proxy).await;
        let _ = client.wire.send(bytes.as_bytes()).await;
        let mut replies = Vec::new();
        for _ in 0..3 {
            match tokio::time::timeout(Duration::from_secs(2), client.response(false)).await {
                Ok(r) if !r.head.is_empty() => replies.push(r),
                _ => break,
            }
        }
        let seen = settled(&backend).await;
        let what = format!("body {i} {body:?}: {replies:?}");
        if i == 7 {
            // a whole chunked body and then a real pipelined request: both served
            assert_eq!(replies.len(), 2, "{what}");
            continue;
        }
        never_smuggled(&seen[before..], &what);
    }
}

#[tokio::test]
async fn a_backend_body_cut_short_is_never_completed_by_the_next_response() {
    let backend = Scripted::custom(|mut peer| async move {
        while let Some(seen) = peer.request().await {
            let line = request_line(&seen);
            if line.starts_with("GET /short-length ") {
                let _ = peer
                    .send(b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\nhello")
                    .await;
                return;
            }
            if line.starts_with("GET /short-chunked ") {
                let _ = peer
                    .send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
                    .await;
                return;
            }
            if !peer.send(&line_reply(&line, false)).await {
                return;
            }
        }
    })
    .await;
    let proxy = proxy_to(&backend).await;
    for path in ["/short-length", "/short-chunked"] {
        let mut client = Client::connect(&proxy).await;
        client
            .send(&cat(&[
                &get(path, ""),
                &get("/next-one", ""),
                &get("/next-two", ""),
            ]))
            .await;
        let reply = client.response(false).await;
        let what = format!("{path}: {reply:?}");
        assert!(!reply.complete, "a cut body arrived as if whole: {what}");
        assert!(
            !reply.text().contains("HTTP/1.1"),
            "the next response became body: {what}"
        );
        assert!(client.closed().await, "{what}: the connection went on");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reads_nothing_is_dropped_at_the_send_timeout() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let backend = Scripted::custom(move |mut peer| {
        let tx = tx.clone();
        async move {
            if peer.request().await.is_none() {
                return;
            }
            let total = 256 * 1024 * 1024;
            let _ = peer
                .send(format!("HTTP/1.1 200 OK\r\nContent-Length: {total}\r\n\r\n").as_bytes())
                .await;
            let piece = vec![b'x'; 64 * 1024];
            for _ in 0..total / piece.len() {
                if !peer.send(&piece).await {
                    let _ = tx.send(());
                    return;
                }
            }
        }
    })
    .await;
    let proxy = proxy_with(
        &backend,
        test_options().with_send_timeout(Duration::from_millis(500)),
    )
    .await;
    let mut client = Client::connect(&proxy).await;
    client.send(&get("/big", "")).await;
    // reads nothing
    assert!(
        tokio::time::timeout(BOUND, rx.recv()).await.is_ok(),
        "the backend connection outlived the send timeout of a client that reads nothing"
    );
    drop(client);
}

#[tokio::test]
async fn the_proxys_own_error_responses_are_framed_once_with_a_date() {
    let (backend, proxy) = echo_proxy().await;
    // 400 (a malformed head), 431 (a head past every bound)
    for (bytes, status) in [
        (get("/bad", "no colon\r\n"), 400),
        (get("/bad", "X-A : 1\r\n"), 400),
        (cat(&[b"\x00", &get("/nul-first", "")]), 400),
        (
            get("/huge", &format!("X-Big: {}\r\n", "v".repeat(600 * 1024))),
            431,
        ),
    ] {
        let (reply, mut client) = one(&proxy, &bytes).await;
        let what = format!(
            "{:?}: {reply:?}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(60)])
        );
        assert_eq!(reply.status, status, "{what}");
        assert_framed(&reply, &what);
        assert!(client.closed().await, "{what}: open after a malformed head");
    }
    assert!(settled(&backend).await.is_empty());
    // a 502 (a backend that answers garbage) in the middle of a pipeline
    let garbage = Scripted::always(b"NOT HTTP AT ALL\r\n\r\n", After::Close).await;
    let proxy = proxy_to(&garbage).await;
    let mut client = Client::connect(&proxy).await;
    client.send(&cat(&[&get("/a", ""), &get("/b", "")])).await;
    for p in ["/a", "/b"] {
        let reply = client.response(false).await;
        assert!(reply.status >= 500, "{p}: {reply:?}");
        assert_framed(&reply, p);
    }
}

/// A client that shuts its sending side after a whole request: the proxy reads
/// the end of the connection, which it cannot tell from a client that left,
/// and cancels the request (as nginx's `proxy_ignore_client_abort off` and
/// hyper's server do) unless the response came first. Either way the client
/// gets the whole response or none, and the connection ends.
#[tokio::test]
async fn a_client_that_half_closes_after_a_whole_request_gets_its_response_whole_or_none() {
    let (_backend, proxy) = echo_proxy().await;
    let post =
        format!("POST /hc HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 1\r\n\r\nx").into_bytes();
    for (name, bytes) in [("plain GET", get("/hc", "")), ("POST (hyper side)", post)] {
        let mut client = Client::connect(&proxy).await;
        client.send(&bytes).await;
        client.wire.stream.shutdown().await.unwrap();
        let reply = client.response(false).await;
        assert!(
            reply.head.is_empty() || (reply.status == 200 && reply.complete),
            "{name}: {reply:?}"
        );
        assert!(client.closed().await, "{name}: the connection stayed open");
    }
}

#[tokio::test]
async fn a_client_gone_with_requests_queued_has_none_of_the_rest_forwarded() {
    let backend = line_echo_backend("GET /wait ", 500).await;
    let proxy = proxy_to(&backend).await;
    let mut client = Client::connect(&proxy).await;
    client
        .send(&cat(&[
            &get("/wait", ""),
            &get("/queued-1", ""),
            &get("/queued-2", ""),
        ]))
        .await;
    assert!(eventually(BOUND, || !backend.seen().is_empty()).await);
    // a reset, not a half-close
    #[allow(deprecated)]
    client.wire.stream.set_linger(Some(Duration::ZERO)).unwrap();
    drop(client);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let seen: Vec<String> = backend.seen().iter().map(request_line).collect();
    assert_eq!(
        seen,
        ["GET /wait HTTP/1.1"],
        "requests forwarded for a client that is gone"
    );
}

#[tokio::test]
async fn an_upgrade_the_backend_declines_leaves_the_connection_usable() {
    let (_backend, proxy) = echo_proxy().await;
    let mut client = Client::connect(&proxy).await;
    client
        .send(&cat(&[
            &get("/noup", "Connection: Upgrade\r\nUpgrade: websocket\r\n"),
            &get("/after", ""),
        ]))
        .await;
    let first = client.response(false).await;
    assert_eq!(first.text(), "GET /noup HTTP/1.1", "{first:?}");
    let second = client.response(false).await;
    assert_eq!(second.text(), "GET /after HTTP/1.1", "{second:?}");
}

#[tokio::test]
async fn targets_with_characters_outside_the_uri_grammar_are_rejected_or_forwarded_exactly() {
    let (backend, proxy) = echo_proxy().await;
    for target in ["/a\"b", "/a{b}", "/a|b", "/a^b", "/a\\b", "/a%", "/a%g1"] {
        if let Some(s) = rejected_or_forwarded(&proxy, &backend, &get(target, "")).await {
            let line = request_line(&s);
            assert_eq!(line, format!("GET {target} HTTP/1.1"), "{target:?}");
        }
    }
    for target in ["/a\x7fb", "/a\x01b", "/a\x0bb", "/a\x0cb"] {
        assert_rejected(&proxy, &backend, &get(target, ""), &[]).await;
    }
}

#[tokio::test]
async fn a_backend_closing_after_each_response_does_not_garble_a_pipeline() {
    let backend = Scripted::replying(|seen| {
        let line = request_line(seen);
        let mut r = format!(
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
            line.len()
        )
        .into_bytes();
        r.extend_from_slice(line.as_bytes());
        (r, After::Close)
    })
    .await;
    let proxy = proxy_to(&backend).await;
    let mut client = Client::connect(&proxy).await;
    client
        .send(&cat(&[&get("/1", ""), &get("/2", ""), &get("/3", "")]))
        .await;
    for i in 1..=3 {
        let reply = client.response(false).await;
        assert_eq!(reply.text(), format!("GET /{i} HTTP/1.1"), "{reply:?}");
        assert_framed(&reply, "backend close");
        if field(&reply.head, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close")) {
            assert!(client.closed().await, "said close, stayed open");
            return;
        }
    }
}

#[tokio::test]
async fn a_target_with_angle_brackets_or_a_backquote_gets_its_own_response() {
    let (backend, proxy) = echo_proxy().await;
    let mut failures = Vec::new();
    for target in ["/a<b>", "/a>b", "/a`b", "/q?x=<script>", "/q?x=\"y\""] {
        for method in ["GET", "HEAD"] {
            // alone: an answer (a 400, or its own 200) well within the bounds
            let bytes = format!("{method} {target} HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
            let mut client = Client::connect(&proxy).await;
            client.send(bytes.as_bytes()).await;
            match tokio::time::timeout(Duration::from_secs(3), client.response(method == "HEAD"))
                .await
            {
                Ok(r) if r.status == 200 || (400..500).contains(&r.status) => {}
                Ok(r) => failures.push(format!("{bytes:?}: {r:?}")),
                Err(_) => failures.push(format!(
                    "{bytes:?}: no response, connection still open after 3 s"
                )),
            }
            // pipelined: the next request's response must not come first
            let mut client = Client::connect(&proxy).await;
            client
                .send(&cat(&[bytes.as_bytes(), &get("/next", "")]))
                .await;
            let first = client.response(method == "HEAD").await;
            if first.text() == "GET /next HTTP/1.1" || first.status == 0 {
                failures.push(format!(
                    "{bytes:?} + GET /next: the first response is {:?} {:?}",
                    first.head,
                    first.text()
                ));
            }
        }
    }
    let seen = settled(&backend).await;
    assert!(
        failures.is_empty(),
        "{}\nthe backend saw: {:?}",
        failures.join("\n"),
        seen.iter().map(request_line).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn odd_backend_response_heads_are_cleaned_or_refused_never_passed_raw() {
    let many: String = (0..200).map(|i| format!("X-R{i}: v{i}\r\n")).collect();
    let heads: Vec<Vec<u8>> = vec![
        b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\nok".to_vec(),
        b"HTTP/1.1 200 OK\r\nX-A: a\rb\r\nContent-Length: 2\r\n\r\nok".to_vec(),
        b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 2\r\n\r\nok".to_vec(),
        b"HTTP/1.1 200 OK\r\nX-A : a\r\nContent-Length: 2\r\n\r\nok".to_vec(),
        b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok".to_vec(),
        b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok".to_vec(),
        format!("HTTP/1.1 200 OK\r\n{many}Content-Length: 2\r\n\r\nok").into_bytes(),
    ];
    for (i, head) in heads.iter().enumerate() {
        let backend = Scripted::always(head, After::KeepOpen).await;
        let proxy = proxy_to(&backend).await;
        let mut client = Client::connect(&proxy).await;
        client.send(&cat(&[&get("/1", ""), &get("/2", "")])).await;
        let what = format!(
            "response {i} {:?}",
            String::from_utf8_lossy(&head[..head.len().min(80)])
        );
        for _ in 0..2 {
            let reply = client.response(false).await;
            assert!(
                reply.status == 200 || reply.status == 502,
                "{what}: {reply:?}"
            );
            assert_framed(&reply, &what);
            let raw = reply.head.as_bytes();
            for (j, b) in raw.iter().enumerate() {
                match b {
                    b'\n' => assert!(
                        raw[j - 1] == b'\r',
                        "{what}: bare LF to the client: {:?}",
                        reply.head
                    ),
                    b'\r' => assert!(
                        raw.get(j + 1) == Some(&b'\n'),
                        "{what}: bare CR to the client: {:?}",
                        reply.head
                    ),
                    0 => panic!("{what}: NUL to the client: {:?}", reply.head),
                    _ => {}
                }
            }
            assert!(
                !reply.head.contains("\r\n ") && !reply.head.contains("\r\n\t"),
                "{what}: obs-fold to the client"
            );
            if reply.status == 200 {
                assert_eq!(reply.text(), "ok", "{what}");
                if i == 6 {
                    assert_eq!(
                        fields(&reply.head, "x-r199"),
                        ["v199"],
                        "{what}: fields lost"
                    );
                }
            }
        }
    }
}

#[tokio::test]
async fn targets_in_no_form_a_get_may_use_are_400_not_rewritten() {
    let (backend, proxy) = echo_proxy().await;
    let requests: Vec<Vec<u8>> = ["a", "web.production:80", "mailto:x", "web.production"]
        .iter()
        .map(|t| get(t, ""))
        .collect();
    all_rejected(&proxy, &backend, &requests, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framing_fields_straddling_the_plain_head_bound_are_still_seen() {
    // the own server reads at most 64 KiB of head before handing the bytes to
    // hyper's: a Content-Length (or the head's end) across that line must
    // count as it does anywhere else
    let (backend, proxy) = echo_proxy().await;
    let n = SMUGGLED.len();
    let start = format!("GET /straddle HTTP/1.1\r\nHost: {HOST}\r\nX-Pad: ");
    let mut failures = Vec::new();
    for offset in (-24i64..=6).chain([-1000, 1000]) {
        // Content-Length's first byte lands at 64 KiB + offset
        let framing = format!("\r\nContent-Length: {n}\r\n\r\n");
        let pad = (65536 + offset) as usize - start.len() - 2;
        let mut bytes = format!("{start}{}{framing}{SMUGGLED}", "p".repeat(pad)).into_bytes();
        bytes.extend_from_slice(&get("/after", ""));
        let before = backend.seen().len();
        let mut client = Client::connect(&proxy).await;
        let _ = client.wire.send(&bytes).await;
        let first = client.response(false).await;
        let second = client.response(false).await;
        let seen = settled(&backend).await;
        let lines: Vec<String> = seen[before..].iter().map(request_line).collect();
        let ok = first.text() == "GET /straddle HTTP/1.1"
            && second.text() == "GET /after HTTP/1.1"
            && lines == ["GET /straddle HTTP/1.1", "GET /after HTTP/1.1"]
            && seen[before].body == SMUGGLED.as_bytes();
        if !ok {
            failures.push(format!(
                "offset {offset}: replies {:?} / {:?}, backend saw {lines:?}",
                first.head, second.head
            ));
        }
    }
    // a plain head ending right at the bound, a plain request after it
    for end in [65534usize, 65535, 65536, 65537, 65538] {
        let pad = end - start.len() - 4;
        let mut bytes = format!("{start}{}\r\n\r\n", "p".repeat(pad)).into_bytes();
        assert_eq!(bytes.len(), end);
        bytes.extend_from_slice(&get("/after", ""));
        let before = backend.seen().len();
        let mut client = Client::connect(&proxy).await;
        let _ = client.wire.send(&bytes).await;
        let first = client.response(false).await;
        let second = client.response(false).await;
        let seen = settled(&backend).await;
        let lines: Vec<String> = seen[before..].iter().map(request_line).collect();
        if first.text() != "GET /straddle HTTP/1.1"
            || second.text() != "GET /after HTTP/1.1"
            || lines.len() != 2
        {
            failures.push(format!(
                "head of {end}: replies {:?} / {:?}, backend saw {lines:?}",
                first.head, second.head
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn pipelined_heads_waiting_behind_a_slow_response_are_not_cut_by_the_bounds() {
    let backend = line_echo_backend("GET /slow ", 1200).await;
    let proxy = proxy_with_short_timeouts(&backend).await;
    let mut client = Client::connect(&proxy).await;
    client
        .send(&cat(&[
            &get("/slow", ""),
            &get("/b", ""),
            format!("HEAD /c HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes(),
            &get("/d", "Connection: close\r\n"),
        ]))
        .await;
    for (p, head) in [
        ("GET /slow", false),
        ("GET /b", false),
        ("HEAD /c", true),
        ("GET /d", false),
    ] {
        let reply = client.response(head).await;
        assert_eq!(reply.status, 200, "{p}: {reply:?}");
        if !head {
            assert_eq!(reply.text(), format!("{p} HTTP/1.1"));
        }
    }
    assert!(client.closed().await);
}

#[tokio::test]
async fn connection_close_on_head_204_and_304_closes_after_the_response() {
    let backend = by_path_backend().await;
    let proxy = proxy_to(&backend).await;
    for (method, path, status) in [
        ("HEAD", "/head-len", 200),
        ("GET", "/204", 204),
        ("GET", "/304", 304),
    ] {
        let mut client = Client::connect(&proxy).await;
        client
            .send(&cat(&[
                format!("{method} {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
                &get("/never", ""),
            ]))
            .await;
        let reply = client.response(method == "HEAD").await;
        assert_eq!(reply.status, status, "{reply:?}");
        assert_framed(&reply, path);
        assert!(
            client.closed().await,
            "{path}: {:?}",
            String::from_utf8_lossy(&client.wire.buf)
        );
    }
    let seen = settled(&backend).await;
    assert!(seen.iter().all(|s| !s.head.contains("/never")), "{seen:?}");
}

#[tokio::test]
async fn a_close_delimited_backend_body_is_streamed_as_it_comes() {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let backend = Scripted::custom(move |mut peer| {
        let mut rx = rx.clone();
        async move {
            if peer.request().await.is_none() {
                return;
            }
            peer.send(b"HTTP/1.1 200 OK\r\n\r\nfirst-part|").await;
            let _ = rx.wait_for(|go| *go).await;
            peer.send(b"last-part").await;
        }
    })
    .await;
    let proxy = proxy_to(&backend).await;
    let mut client = Client::connect(&proxy).await;
    client.send(&get("/stream", "")).await;
    let got = tokio::time::timeout(Duration::from_secs(3), client.wire.until(b"first-part|")).await;
    assert!(
        matches!(got, Ok(Some(_))),
        "the first part waited for the end of the body: {:?}",
        String::from_utf8_lossy(&client.wire.buf)
    );
    tx.send(true).unwrap();
    let rest = tokio::time::timeout(Duration::from_secs(3), client.wire.until(b"last-part")).await;
    assert!(
        matches!(rest, Ok(Some(_))),
        "{:?}",
        String::from_utf8_lossy(&client.wire.buf)
    );
}

#[tokio::test]
async fn a_shutdown_during_a_pipeline_answers_or_closes_cleanly() {
    let backend = line_echo_backend("GET /slow ", 500).await;
    let mut proxy = proxy_to(&backend).await;
    let mut client = Client::connect(&proxy).await;
    client
        .send(&cat(&[&get("/slow", ""), &get("/b", "")]))
        .await;
    assert!(eventually(BOUND, || !backend.seen().is_empty()).await);
    proxy.stop();
    let first = client.response(false).await;
    assert_eq!(first.text(), "GET /slow HTTP/1.1", "{first:?}");
    assert!(first.complete);
    let second = client.response(false).await;
    assert!(
        second.head.is_empty() || second.text() == "GET /b HTTP/1.1",
        "{second:?}"
    );
    if second.head.is_empty() {
        assert_eq!(
            field(&first.head, "connection")
                .map(|v| v.to_ascii_lowercase())
                .as_deref(),
            Some("close"),
            "closed after a response that did not say so (RFC 9112 9.6 SHOULD): {}",
            first.head
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelining_client_that_reads_nothing_is_not_buffered_without_bound() {
    let answered = Arc::new(AtomicUsize::new(0));
    let a = answered.clone();
    let backend = Scripted::custom(move |mut peer| {
        let answered = a.clone();
        async move {
            let body = vec![b'r'; 16 * 1024];
            while peer.request().await.is_some() {
                let mut r = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len())
                    .into_bytes();
                r.extend_from_slice(&body);
                if !peer.send(&r).await {
                    return;
                }
                answered.fetch_add(1, Ordering::SeqCst);
            }
        }
    })
    .await;
    let proxy = proxy_to(&backend).await;
    let client = Client::connect(&proxy).await;
    let (_read, mut write) = client.wire.stream.into_split();
    // 20000 requests (320 MB of answers), and nothing read
    let writer = tokio::spawn(async move {
        let bytes: Vec<u8> = (0..20000)
            .flat_map(|i| get(&format!("/p{i}"), ""))
            .collect();
        let _ = write.write_all(&bytes).await;
        tokio::time::sleep(BOUND).await;
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    let n = answered.load(Ordering::SeqCst);
    writer.abort();
    assert!(
        n < 5000,
        "{n} responses of 16 KiB answered for a client that reads nothing"
    );
}

/// Every response the own server writes, its own 502 too, has one `Date`.
/// (It once failed for a whole run: that run was linked against a build of
/// the library with the `Date` deliberately removed, to check that this file's
/// tests can fail.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_plain_response_carries_a_date() {
    let backend = echo_backend().await;
    let proxy = Arc::new(proxy_to(&backend).await);
    let mut tasks = Vec::new();
    for c in 0..4 {
        let proxy = proxy.clone();
        tasks.push(tokio::spawn(async move {
            let mut missing = Vec::new();
            let start = std::time::SystemTime::now();
            let mut client = Client::connect(&proxy).await;
            let mut i = 0;
            while start.elapsed().unwrap() < Duration::from_millis(2500) {
                let reply = client.get(&format!("/d{c}-{i}")).await;
                if field(&reply.head, "date").is_none() {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap();
                    missing.push(format!(
                        "{c}/{i} at {}.{:03}",
                        now.as_secs(),
                        now.subsec_millis()
                    ));
                }
                i += 1;
                if i % 50 == 0 {
                    client = Client::connect(&proxy).await;
                }
            }
            (i, missing)
        }));
    }
    let mut total = 0;
    let mut missing = Vec::new();
    for t in tasks {
        let (n, m) = t.await.unwrap();
        total += n;
        missing.extend(m);
    }
    assert!(
        missing.is_empty(),
        "{} of {total} plain responses without a Date: {:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
}

#[tokio::test]
async fn a_partial_next_head_never_cuts_a_slow_response_in_progress() {
    let backend = Scripted::custom(|mut peer| async move {
        while let Some(seen) = peer.request().await {
            let line = request_line(&seen);
            if line.starts_with("GET /drip ") {
                peer.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
                    .await;
                tokio::time::sleep(Duration::from_millis(1200)).await;
                peer.send(b"4\r\nlast\r\n0\r\n\r\n").await;
                continue;
            }
            if !peer.send(&line_reply(&line, false)).await {
                return;
            }
        }
    })
    .await;
    let proxy = proxy_with_short_timeouts(&backend).await;
    let mut client = Client::connect(&proxy).await;
    client
        .send(&cat(&[&get("/drip", ""), b"GET /b HTTP/1.1\r\nHo"]))
        .await;
    let first = client.response(false).await;
    assert_eq!(first.status, 200, "{first:?}");
    assert!(first.complete, "the slow response was cut: {first:?}");
    assert_eq!(first.text(), "firstlast");
    // the rest of the second head, at once: served, or the connection closed
    // cleanly
    if client
        .wire
        .send(format!("st: {HOST}\r\n\r\n").as_bytes())
        .await
    {
        let second = client.response(false).await;
        assert!(
            second.head.is_empty() || second.text() == "GET /b HTTP/1.1",
            "{second:?}"
        );
    }
}
