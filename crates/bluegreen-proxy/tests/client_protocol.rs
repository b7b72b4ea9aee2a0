//! What clients get from the proxy's HTTP/1.1 server, seen from outside: plain
//! requests (served by the proxy's own HTTP/1.1) and every other kind (bodies,
//! HTTP/1.0, malformed heads, served by hyper's server from the same
//! connection on) mixed and pipelined on one connection, sent in random
//! pieces, against backends that frame their answers every way; each response
//! must be its own request's, in order, framed once.

mod support;

use std::time::Duration;

use support::*;
use tokio::io::AsyncWriteExt;

#[path = "support/scripted.rs"]
mod scripted;

use scripted::*;

/// The kinds of request a connection of the randomized test sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Get,
    Head,
    /// `GET` with `Connection: close`: the last of its connection.
    GetClose,
    PostLength,
    PostChunked,
    /// HTTP/1.0 `GET` without keep-alive: the last of its connection.
    Get10,
    /// A head with a field line without a colon: a 400, the last.
    Malformed,
}

impl Kind {
    fn last_only(self) -> bool {
        matches!(self, Kind::GetClose | Kind::Get10 | Kind::Malformed)
    }

    fn request(self, id: u64, rng: &mut fastrand::Rng) -> (Vec<u8>, Vec<u8>) {
        let posted: Vec<u8> = format!("posted-{id}-{}", "b".repeat(rng.usize(0..300))).into();
        let text = match self {
            Kind::Get => format!("GET /r/{id}?q=1 HTTP/1.1\r\nHost: {HOST}\r\nAccept: */*\r\n\r\n"),
            Kind::Head => format!("HEAD /r/{id} HTTP/1.1\r\nhost: {HOST}\r\n\r\n"),
            Kind::GetClose => {
                format!("GET /r/{id} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n")
            }
            Kind::Get10 => format!("GET /r/{id} HTTP/1.0\r\nHost: {HOST}\r\n\r\n"),
            Kind::Malformed => format!("GET /r/{id} HTTP/1.1\r\nHost: {HOST}\r\nno colon\r\n\r\n"),
            Kind::PostLength => {
                let mut r = format!(
                    "POST /r/{id} HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {}\r\n\r\n",
                    posted.len()
                )
                .into_bytes();
                r.extend_from_slice(&posted);
                return (r, posted);
            }
            Kind::PostChunked => {
                let mut r = format!(
                    "POST /r/{id} HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n"
                )
                .into_bytes();
                for piece in posted.chunks(rng.usize(1..64)) {
                    r.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                    r.extend_from_slice(piece);
                    r.extend_from_slice(b"\r\n");
                }
                r.extend_from_slice(b"0\r\n\r\n");
                return (r, posted);
            }
        };
        (text.into_bytes(), Vec::new())
    }
}

/// How the backend answers request `id` (drawn from the seed, so that the
/// client knows what to expect): 0 a length, 1 chunked, 2 a 204, 3 a 304 with
/// a length, 4 a 404 with a length.
fn answer_of(seed: u64, id: u64) -> u8 {
    fastrand::Rng::with_seed(seed ^ id.wrapping_mul(0x9e37_79b9_7f4a_7c15)).u8(0..5)
}

fn body_of(id: u64, posted: &[u8]) -> Vec<u8> {
    let mut body = format!("id={id};").into_bytes();
    body.extend_from_slice(posted);
    body
}

async fn answering_backend(seed: u64) -> Scripted {
    Scripted::custom(move |mut peer| async move {
        while let Some(seen) = peer.request().await {
            let id: u64 = seen
                .head
                .split(' ')
                .nth(1)
                .and_then(|p| p.strip_prefix("/r/"))
                .and_then(|p| p.split('?').next())
                .and_then(|p| p.parse().ok())
                .unwrap_or(u64::MAX);
            let head_request = seen.head.starts_with("HEAD ");
            let body = body_of(id, &seen.body);
            let mut reply = Vec::new();
            let length_head = |status: &str| {
                format!(
                    "HTTP/1.1 {status}\r\nX-Id: {id}\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                )
            };
            match answer_of(seed, id) {
                0 => reply.extend_from_slice(length_head("200 OK").as_bytes()),
                1 => {
                    reply.extend_from_slice(
                        format!(
                            "HTTP/1.1 200 OK\r\nX-Id: {id}\r\nTransfer-Encoding: chunked\r\n\r\n"
                        )
                        .as_bytes(),
                    );
                    if !head_request {
                        for piece in body.chunks(7) {
                            reply.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                            reply.extend_from_slice(piece);
                            reply.extend_from_slice(b"\r\n");
                        }
                        reply.extend_from_slice(b"0\r\n\r\n");
                    }
                }
                2 => reply.extend_from_slice(
                    format!("HTTP/1.1 204 No Content\r\nX-Id: {id}\r\n\r\n").as_bytes(),
                ),
                3 => reply.extend_from_slice(
                    format!(
                        "HTTP/1.1 304 Not Modified\r\nX-Id: {id}\r\nContent-Length: 99\r\n\r\n"
                    )
                    .as_bytes(),
                ),
                _ => reply.extend_from_slice(length_head("404 Not Found").as_bytes()),
            }
            if matches!(answer_of(seed, id), 0 | 4) && !head_request {
                reply.extend_from_slice(&body);
            }
            if !peer.send(&reply).await {
                return;
            }
        }
    })
    .await
}

/// Checks one response against what request `id` of `kind` should get.
fn check(seed: u64, id: u64, kind: Kind, posted: &[u8], reply: &Reply) {
    let context = format!("seed {seed}, request {id} ({kind:?}): {reply:?}");
    if kind == Kind::Malformed {
        assert_eq!(reply.status, 400, "{context}");
        return;
    }
    let answer = answer_of(seed, id);
    let status = [200, 200, 204, 304, 404][answer as usize];
    assert_eq!(reply.status, status, "{context}");
    assert!(reply.complete, "{context}");
    assert_eq!(
        field(&reply.head, "x-id"),
        Some(id.to_string()),
        "{context}"
    );
    assert!(
        field(&reply.head, "date").is_some(),
        "a response without a Date: {context}"
    );
    assert!(
        !(is_chunked(&reply.head) && field(&reply.head, "content-length").is_some()),
        "a response framed twice: {context}"
    );
    assert!(
        fields(&reply.head, "content-length").len() <= 1,
        "two lengths: {context}"
    );
    match (kind, answer) {
        (Kind::Head, _) | (_, 2 | 3) => assert!(reply.body.is_empty(), "{context}"),
        _ => assert_eq!(reply.body, body_of(id, posted), "{context}"),
    }
    if kind == Kind::Head && answer == 0 {
        // a HEAD keeps the length its GET would have
        assert_eq!(
            field(&reply.head, "content-length"),
            Some(body_of(id, posted).len().to_string()),
            "{context}"
        );
    }
    if answer == 2 {
        assert_eq!(field(&reply.head, "content-length"), None, "{context}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_of_every_kind_in_random_pieces_are_answered_in_order() {
    const CONNECTIONS: u64 = 40;
    let seed = std::env::var("BG_CLIENT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("seed {seed} (BG_CLIENT_SEED={seed} repeats this run)");
    let backend = answering_backend(seed).await;
    let proxy = std::sync::Arc::new(proxy_to(&backend).await);
    let mut tasks = Vec::new();
    for c in 0..CONNECTIONS {
        let proxy = proxy.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(seed.wrapping_add(c));
            // plain kinds most often, as clients send them; one draw in 16 ends
            // the connection
            let mut kinds = vec![Kind::Get; 8];
            kinds.extend([Kind::Head, Kind::Head, Kind::PostLength, Kind::PostLength]);
            kinds.extend([
                Kind::PostChunked,
                Kind::GetClose,
                Kind::Get10,
                Kind::Malformed,
            ]);
            let mut plan = Vec::new();
            for n in 0..rng.u64(1..24) {
                let kind = kinds[rng.usize(..kinds.len())];
                plan.push((c * 100 + n, kind));
                if kind.last_only() {
                    break;
                }
            }
            // every connection ends with a request after which the proxy closes
            if !plan.last().is_some_and(|(_, k)| k.last_only()) {
                plan.push((c * 100 + 99, Kind::GetClose));
            }
            let mut bytes = Vec::new();
            let mut posted = Vec::new();
            for &(id, kind) in &plan {
                let (request, body) = kind.request(id, &mut rng);
                bytes.extend_from_slice(&request);
                posted.push(body);
            }
            let mut client = Client::connect(&proxy).await;
            // everything at once, in random pieces with random pauses, while
            // responses may already come back
            let (mut read_half, mut write_half) = client.wire.stream.into_split();
            let writer = {
                let mut rng = fastrand::Rng::with_seed(seed ^ c);
                tokio::spawn(async move {
                    let mut rest = &bytes[..];
                    while !rest.is_empty() {
                        let n = rng.usize(1..=rest.len().min(200));
                        if write_half.write_all(&rest[..n]).await.is_err() {
                            return;
                        }
                        rest = &rest[n..];
                        if rng.u8(0..4) == 0 {
                            tokio::time::sleep(Duration::from_millis(rng.u64(0..3))).await;
                        }
                    }
                    // keep the sending side open: a half-close is not a close
                    tokio::time::sleep(BOUND).await;
                    drop(write_half);
                })
            };
            let stream = {
                // read with the strict client on the reading half
                let (tx, rx) = tokio::sync::oneshot::channel();
                tokio::spawn(async move {
                    let mut sink = Vec::new();
                    use tokio::io::AsyncReadExt;
                    let mut buf = [0u8; 4096];
                    loop {
                        match tokio::time::timeout(BOUND, read_half.read(&mut buf)).await {
                            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                            Ok(Ok(n)) => sink.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = tx.send(sink);
                });
                rx
            };
            let received = stream.await.unwrap();
            writer.abort();
            // parse what came, in order, with a strict client over a loopback
            // pair fed the exact bytes
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let feed = tokio::spawn(async move {
                let (mut s, _) = listener.accept().await.unwrap();
                s.write_all(&received).await.unwrap();
            });
            client = Client {
                wire: Wire::new(tokio::net::TcpStream::connect(addr).await.unwrap()),
            };
            feed.await.unwrap();
            for (i, &(id, kind)) in plan.iter().enumerate() {
                let reply = client.response(kind == Kind::Head).await;
                check(seed, id, kind, &posted[i], &reply);
            }
            // nothing more than the answers to what was asked
            assert!(
                client.closed().await,
                "seed {seed}: connection {c}: bytes after the last response: {:?}",
                String::from_utf8_lossy(&client.wire.buf)
            );
            plan.len()
        }));
    }
    let mut answered = 0;
    for task in tasks {
        answered += task.await.unwrap();
    }
    eprintln!("{answered} requests answered in order on {CONNECTIONS} connections");
}

#[tokio::test]
async fn a_plain_request_whose_client_leaves_is_cancelled_at_the_backend() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let backend = Scripted::custom(move |mut peer| {
        let tx = tx.clone();
        async move {
            if peer.request().await.is_none() {
                return;
            }
            // never answers; says when the proxy closed the connection
            while peer.wire.fill().await {}
            let _ = tx.send(());
        }
    })
    .await;
    let proxy = proxy_to(&backend).await;
    let mut client = Client::connect(&proxy).await;
    client
        .send(format!("GET /slow HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())
        .await;
    assert!(
        eventually(BOUND, || backend.seen().len() == 1).await,
        "the request never reached the backend"
    );
    drop(client);
    assert!(
        tokio::time::timeout(BOUND, rx.recv()).await.is_ok(),
        "the backend connection stayed open after the client left"
    );
}

#[tokio::test]
async fn a_streamed_response_reaches_the_client_before_its_body_ends() {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let backend = Scripted::custom(move |mut peer| {
        let mut rx = rx.clone();
        async move {
            if peer.request().await.is_none() {
                return;
            }
            peer.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
                .await;
            let _ = rx.wait_for(|go| *go).await;
            peer.send(b"4\r\nlast\r\n0\r\n\r\n").await;
        }
    })
    .await;
    let proxy = proxy_to(&backend).await;
    let mut client = Client::connect(&proxy).await;
    client
        .send(format!("GET /stream HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())
        .await;
    let head = tokio::time::timeout(BOUND, client.wire.until(b"\r\n\r\n"))
        .await
        .expect("the head waited for the whole body")
        .unwrap();
    assert!(is_chunked(&String::from_utf8_lossy(&head)));
    let first = tokio::time::timeout(BOUND, client.wire.until(b"first\r\n"))
        .await
        .expect("the first chunk waited for the rest");
    assert!(first.is_some());
    tx.send(true).unwrap();
    let rest = client.wire.chunked().await;
    assert!(rest.complete);
    assert_eq!(rest.data, b"last");
}

#[tokio::test]
async fn request_heads_over_the_plain_bound_are_served_and_over_hypers_refused() {
    let backend = Scripted::always(OK, After::KeepOpen).await;
    let proxy = proxy_to(&backend).await;
    let mut client = Client::connect(&proxy).await;
    // a plain request first, then one whose head is larger than the own
    // server's bound: served on the same connection
    assert_eq!(client.get("/first").await.status, 200);
    let big = "v".repeat(100 * 1024);
    client
        .send(format!("GET /big HTTP/1.1\r\nHost: {HOST}\r\nX-Big: {big}\r\n\r\n").as_bytes())
        .await;
    let reply = client.response(false).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(client.get("/after").await.status, 200);
    let seen = backend.seen();
    assert_eq!(seen.len(), 3);
    assert!(seen[1].head.contains(&big));
    // a head past every bound: 431, never forwarded
    let mut client = Client::connect(&proxy).await;
    assert_eq!(client.get("/first").await.status, 200);
    let huge = "v".repeat(600 * 1024);
    let _ = client
        .wire
        .send(format!("GET /huge HTTP/1.1\r\nHost: {HOST}\r\nX-Big: {huge}\r\n\r\n").as_bytes())
        .await;
    let reply = client.response(false).await;
    assert_eq!(reply.status, 431, "{reply:?}");
    assert_eq!(backend.seen().len(), 4);
}

#[tokio::test]
async fn connection_close_and_shutdown_close_after_the_response() {
    let backend = Scripted::always(OK, After::KeepOpen).await;
    let mut proxy = proxy_to(&backend).await;
    let mut client = Client::connect(&proxy).await;
    client
        .send(format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n").as_bytes())
        .await;
    let reply = client.response(false).await;
    assert_eq!(reply.status, 200);
    assert_eq!(field(&reply.head, "connection").as_deref(), Some("close"));
    assert!(client.closed().await, "open after Connection: close");

    // an idle keep-alive connection closes on a graceful shutdown
    let mut idle = Client::connect(&proxy).await;
    assert_eq!(idle.get("/").await.status, 200);
    proxy.stop();
    assert!(
        idle.closed().await,
        "an idle connection outlived the shutdown"
    );
}

#[tokio::test]
async fn hop_by_hop_fields_named_any_way_never_reach_the_client_on_either_path() {
    let backend = Scripted::always(
        b"HTTP/1.1 200 OK\r\nconnection: keep-alive, X-SECRET\r\nX-Secret: hidden-1\r\n\
          Connection: x-Other\r\nx-other: hidden-2\r\nKEEP-ALIVE: timeout=99\r\n\
          Trailer: x-sum\r\nUpgrade: h2c\r\nProxy-Connection: keep-alive\r\n\
          X-Kept: public\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 2\r\n\r\nok",
        After::KeepOpen,
    )
    .await;
    let proxy = proxy_to(&backend).await;
    let mut client = Client::connect(&proxy).await;
    // a plain GET (the proxy's own server), then a POST (hyper's, from then on)
    let plain = client.get("/").await;
    client
        .send(format!("POST / HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 1\r\n\r\nx").as_bytes())
        .await;
    let other = client.response(false).await;
    for reply in [&plain, &other] {
        assert_eq!(
            (reply.status, reply.text().as_str()),
            (200, "ok"),
            "{reply:?}"
        );
        for name in [
            "connection",
            "keep-alive",
            "x-secret",
            "x-other",
            "trailer",
            "upgrade",
            "proxy-connection",
        ] {
            assert!(field(&reply.head, name).is_none(), "{name}: {reply:?}");
        }
        assert!(!reply.head.contains("hidden"), "{reply:?}");
        assert_eq!(fields(&reply.head, "x-kept"), ["public"], "{reply:?}");
        assert_eq!(
            fields(&reply.head, "set-cookie"),
            ["a=1", "b=2"],
            "{reply:?}"
        );
        assert_eq!(fields(&reply.head, "content-length"), ["2"], "{reply:?}");
    }
}
