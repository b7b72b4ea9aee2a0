//! The ready-made hooks against real commands and a real HTTP server on loopback.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bluegreen_core::{
    App, Decision, DeploymentId, GroupId, Hook, HookContext, ImageId, Release, Stage,
};
use bluegreen_local::{signature, CommandHook, WebhookBody, WebhookHook, SIGNATURE_HEADER};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn context() -> HookContext {
    HookContext::new(
        App::new("web", "production").unwrap(),
        DeploymentId::new("d-42"),
        Stage::AfterTrafficStep,
        GroupId::new("web-production-v007"),
        Release::new(ImageId::new("sha256:abc"), 2),
    )
    .with_previous(GroupId::new("web-production-v006"))
    .with_weight(25)
    .with_preview("http://127.0.0.1:9/preview")
}

fn sh(script: &str) -> CommandHook {
    CommandHook::new("check", ["sh", "-c", script]).unwrap()
}

#[tokio::test]
async fn a_command_sees_the_context_in_its_environment() {
    let dir = bluegreen_testkit::scratch::Scratch::new("hook-env");
    let file = dir.join("env");
    let dump = sh(&format!(
        "env | grep '^BLUEGREEN_' | sort > '{}'; [ \"$EXTRA\" = 1 ] && [ \"$PWD\" = / ]",
        file.display()
    ))
    .with_env("EXTRA", "1")
    .with_current_dir("/");
    assert_eq!(dump.call(&context()).await, Decision::Continue);
    let seen: BTreeMap<String, String> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let want = [
        ("BLUEGREEN_APP", "web"),
        ("BLUEGREEN_ENVIRONMENT", "production"),
        ("BLUEGREEN_STAGE", "after_traffic_step"),
        ("BLUEGREEN_GROUP", "web-production-v007"),
        ("BLUEGREEN_PREVIOUS_GROUP", "web-production-v006"),
        ("BLUEGREEN_WEIGHT", "25"),
        ("BLUEGREEN_DEPLOYMENT", "d-42"),
        ("BLUEGREEN_RESUMED", "false"),
        ("BLUEGREEN_PREVIEW_URL", "http://127.0.0.1:9/preview"),
    ];
    for (k, v) in want {
        assert_eq!(seen.get(k).map(String::as_str), Some(v), "{k} in {seen:?}");
    }
    assert_eq!(
        seen.get("BLUEGREEN_RELEASE"),
        Some(&context().release.id().to_string())
    );
    // resumed and no previous group
    let mut ctx = context().with_resumed(true);
    ctx.previous = None;
    assert_eq!(
        sh("[ \"$BLUEGREEN_RESUMED\" = true ] && [ -z \"$BLUEGREEN_PREVIOUS_GROUP\" ]")
            .call(&ctx)
            .await,
        Decision::Continue
    );
}

#[tokio::test]
async fn exit_statuses_decide() {
    assert_eq!(sh("exit 0").call(&context()).await, Decision::Continue);
    assert_eq!(
        sh("echo checking; echo 'waiting for a person to approve'; exit 75")
            .call(&context())
            .await,
        Decision::Pause("waiting for a person to approve".into())
    );
    match sh("for i in 1 2 3 4 5 6 7; do echo line$i; done; echo oops >&2; exit 3")
        .call(&context())
        .await
    {
        Decision::Fail(reason) => {
            assert!(reason.contains("exited with status 3"), "{reason}");
            assert!(reason.contains("oops"), "{reason}");
            assert!(reason.contains("line7"), "{reason}");
            assert!(!reason.contains("line1\n"), "only the last lines: {reason}");
        }
        other => panic!("{other:?}"),
    }
    match CommandHook::new("missing", ["/no/such/program"])
        .unwrap()
        .call(&context())
        .await
    {
        Decision::Fail(reason) => assert!(reason.contains("/no/such/program"), "{reason}"),
        other => panic!("{other:?}"),
    }
    match sh("kill -9 $$").call(&context()).await {
        Decision::Fail(reason) => assert!(reason.contains("signal 9"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_command_past_its_timeout_is_killed_with_its_children() {
    let dir = bluegreen_testkit::scratch::Scratch::new("hook-timeout");
    let pids = dir.join("pids");
    let hook = sh(&format!(
        "sleep 30 & echo $! > '{0}'; echo $$ >> '{0}'; wait",
        pids.display()
    ))
    .with_timeout(Duration::from_millis(500));
    assert!(hook.timeout() > Duration::from_millis(500));
    let start = Instant::now();
    let decision = hook.call(&context()).await;
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    match decision {
        Decision::Fail(reason) => assert!(reason.contains("killed"), "{reason}"),
        other => panic!("{other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    for pid in std::fs::read_to_string(&pids).unwrap().lines() {
        let pid: i32 = pid.trim().parse().unwrap();
        // a zombie waiting for its reaper has stopped running
        let alive = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            !matches!(
                s.rsplit(") ").next().and_then(|r| r.chars().next()),
                Some('Z' | 'X')
            )
        });
        assert!(!alive, "process {pid} outlived the timeout");
    }
}

/// One request as the server saw it.
struct Seen {
    head: String,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// A loopback HTTP server answering every request with `status` and `body`, and
/// handing over what it received.
async fn server(
    status: u16,
    body: &'static str,
) -> (String, tokio::sync::mpsc::UnboundedReceiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks/deploy", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let head_end = loop {
                    let n = stream.read(&mut chunk).await.unwrap();
                    assert!(n > 0, "the request ended early");
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
                let seen = Seen {
                    head,
                    body: Vec::new(),
                };
                let length: usize = seen
                    .header("content-length")
                    .map(|l| l.parse().unwrap())
                    .unwrap_or(0);
                while buf.len() < head_end + length {
                    let n = stream.read(&mut chunk).await.unwrap();
                    buf.extend_from_slice(&chunk[..n]);
                }
                let seen = Seen {
                    body: buf[head_end..head_end + length].to_vec(),
                    ..seen
                };
                let _ = tx.send(seen);
                let answer = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                stream.write_all(answer.as_bytes()).await.unwrap();
            });
        }
    });
    (url, rx)
}

#[tokio::test]
async fn a_webhook_posts_a_signed_description_of_the_context() {
    let (url, mut rx) = server(204, "").await;
    let hook = WebhookHook::new("approve", &url, "s3cret").unwrap();
    assert_eq!(hook.call(&context()).await, Decision::Continue);
    let seen = rx.recv().await.unwrap();
    assert!(
        seen.head.starts_with("POST /hooks/deploy HTTP/1.1"),
        "{}",
        seen.head
    );
    assert_eq!(seen.header("content-type"), Some("application/json"));
    assert_eq!(seen.header("bluegreen-stage"), Some("after_traffic_step"));
    assert_eq!(seen.header("bluegreen-deployment"), Some("d-42"));
    // the receiver's check: HMAC-SHA256 of the raw body under the shared secret
    {
        use hmac::{Hmac, Mac};
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(b"s3cret").unwrap();
        mac.update(&seen.body);
        let sent = seen.header(SIGNATURE_HEADER).unwrap();
        let hex = sent.strip_prefix("sha256=").expect("sha256= prefix");
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        mac.verify_slice(&bytes).expect("the signature verifies");
        assert_ne!(sent, signature(b"another secret", &seen.body));
    }
    let body: WebhookBody = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(body, WebhookBody::of("approve", &context()));
    assert_eq!(body.app, "web");
    assert_eq!(body.weight, 25);
    assert_eq!(body.previous_group.as_deref(), Some("web-production-v006"));
}

#[tokio::test]
async fn a_webhook_answer_decides() {
    let cases: [(u16, &'static str, Decision); 7] = [
        (200, r#"{"decision":"continue"}"#, Decision::Continue),
        (200, "ok", Decision::Continue),
        (200, r#"{"status":"received"}"#, Decision::Continue),
        (
            200,
            r#"{"decision":"pause","reason":"approve in the console"}"#,
            Decision::Pause("approve in the console".into()),
        ),
        (
            202,
            r#"{"decision":"fail","reason":"error budget spent"}"#,
            Decision::Fail("hook approve: error budget spent".into()),
        ),
        (
            200,
            r#"{"decision":"maybe"}"#,
            Decision::Fail(String::new()),
        ),
        (500, "database is down", Decision::Fail(String::new())),
    ];
    for (status, body, want) in cases {
        let (url, _rx) = server(status, body).await;
        let got = WebhookHook::new("approve", &url, "s3cret")
            .unwrap()
            .call(&context())
            .await;
        match (&want, &got) {
            (Decision::Fail(w), Decision::Fail(g)) if w.is_empty() => {
                assert!(g.contains(&url), "{status} {body}: {g}");
                if status == 500 {
                    assert!(g.contains("500") && g.contains("database is down"), "{g}");
                }
            }
            _ => assert_eq!(got, want, "{status} {body}"),
        }
    }
}

#[tokio::test]
async fn an_unreachable_webhook_fails_naming_the_url() {
    // a port nothing listens on: bind, note it, close
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/hook");
    match WebhookHook::new("notify", &url, "k")
        .unwrap()
        .call(&context())
        .await
    {
        Decision::Fail(reason) => {
            assert!(reason.contains(&url), "{reason}");
            assert!(reason.contains("unreachable"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    // a server that never answers: the hook's timeout
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", silent.local_addr().unwrap());
    let start = Instant::now();
    match WebhookHook::new("notify", &url, "k")
        .unwrap()
        .with_timeout(Duration::from_millis(300))
        .call(&context())
        .await
    {
        Decision::Fail(reason) => assert!(reason.contains("no answer within"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert!(start.elapsed() < Duration::from_secs(3));
    drop(silent);
}

/// Credentials in a webhook's URL are sent, never shown: not in a failing
/// decision's reason (an error status, an unreachable server), not in the error
/// for a URL refused, not in `Debug`, which hides the signing secret too.
#[tokio::test]
async fn a_webhook_url_with_credentials_never_shows_them() {
    let (plain, _seen) = server(500, "nope").await;
    let with = plain.replacen("http://", "http://ci:pa55word@", 1);
    let hook = WebhookHook::new("approve", &with, "sh4red-secret").unwrap();
    let debug = format!("{hook:?}");
    // the secret as text, and as the list of bytes a derived Debug shows
    let bytes = format!("{:?}", b"sh4red-secret".to_vec());
    assert!(
        !debug.contains("pa55word")
            && !debug.contains("sh4red")
            && !debug.contains(bytes.trim_matches(['[', ']']))
            && debug.contains(&plain),
        "{debug}"
    );
    match hook.call(&context()).await {
        Decision::Fail(reason) => {
            assert!(!reason.contains("pa55word"), "{reason}");
            assert!(
                reason.contains(&plain) && reason.contains("500"),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let hook = WebhookHook::new(
        "notify",
        format!("http://ci:pa55word@127.0.0.1:{port}/h"),
        "k",
    )
    .unwrap();
    match hook.call(&context()).await {
        Decision::Fail(reason) => assert!(
            !reason.contains("pa55word") && reason.contains("unreachable"),
            "{reason}"
        ),
        other => panic!("{other:?}"),
    }
    let refused = WebhookHook::new("n", "ftp://ci:pa55word@example.com/h", "k").unwrap_err();
    assert!(!refused.to_string().contains("pa55word"), "{refused}");
}
