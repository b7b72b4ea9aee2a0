//! The sample app's modes, on a real process and a real socket (loopback).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct App {
    child: Child,
    port: u16,
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(args: &[&str]) -> App {
    launch(&["--app-version", "7", "--instance", "i-1"], args)
}

/// An app of version `version`.
fn start_version(version: &str) -> App {
    launch(&["--app-version", version], &[])
}

fn launch(base: &[&str], args: &[&str]) -> App {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sample-app"))
        .args(["--port", "0"])
        .args(base)
        .args(args)
        .stderr(Stdio::piped())
        .spawn()
        .expect("sample-app starts");
    let mut line = String::new();
    BufReader::new(child.stderr.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    App { child, port }
}

/// One HTTP/1.1 request; the status and the body.
fn get(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn answers_health_version_and_root() {
    let app = start(&[]);
    assert_eq!(get(app.port, "/health"), (200, "ok\n".into()));
    let (status, body) = get(app.port, "/version");
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["version"], "7");
    assert_eq!(json["instance"], "i-1");
    assert_eq!(get(app.port, "/"), (200, "version 7 from i-1\n".into()));
}

#[test]
fn never_healthy_fails_its_health_check_only() {
    let app = start(&["--never-healthy"]);
    assert_eq!(get(app.port, "/health").0, 503);
    assert_eq!(get(app.port, "/").0, 200);
}

#[test]
fn an_error_rate_of_one_fails_every_request() {
    let app = start(&["--error-rate", "1"]);
    assert_eq!(get(app.port, "/").0, 500);
    assert_eq!(get(app.port, "/health").0, 200, "health stays up");
}

#[test]
fn crashes_when_told() {
    let mut app = start(&["--crash-after-ms", "200"]);
    let status = app.child.wait().unwrap();
    assert_eq!(status.code(), Some(101));
}

#[test]
fn only_the_first_boots_crash() {
    let dir = bluegreen_testkit::scratch::Scratch::new("sample-app-boots");
    let boots = dir.join("boots");
    let args = [
        "--crash-after-ms",
        "100",
        "--crash-boots",
        "2",
        "--boots-file",
        boots.to_str().unwrap(),
    ];
    for _ in 0..2 {
        let mut app = start(&args);
        assert_eq!(app.child.wait().unwrap().code(), Some(101));
    }
    let app = start(&args);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(get(app.port, "/health").0, 200, "the third start serves");
    assert_eq!(std::fs::read_to_string(&boots).unwrap().trim(), "3");
    drop(app);
    drop(dir);
}

#[test]
fn a_bad_error_rate_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_sample-app"))
        .args(["--error-rate", "2"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--error-rate 2 is not a fraction"));
}

#[test]
fn sigterm_lets_a_slow_request_finish() {
    let mut app = start(&["--latency-ms", "800"]);
    let port = app.port;
    let slow = std::thread::spawn(move || get(port, "/"));
    std::thread::sleep(Duration::from_millis(200));
    let pid = app.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    assert_eq!(slow.join().unwrap(), (200, "version 7 from i-1\n".into()));
    assert!(
        app.child.wait().unwrap().success(),
        "exits cleanly after the drain"
    );
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "no longer listening"
    );
}

/// A peer that answers `/version` with `version` once, and hands back the request
/// head it got.
fn fake_peer(version: &str) -> (u16, std::thread::JoinHandle<String>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let body = format!("{{\"version\": \"{version}\"}}");
    let handle = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if s.read(&mut byte).unwrap() == 0 {
                break;
            }
            head.push(byte[0]);
        }
        write!(
            s,
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        String::from_utf8(head).unwrap()
    });
    (port, handle)
}

/// One HTTP/1.1 request with extra header lines; the status and the body.
fn get_with(port: u16, path: &str, extra: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: x\r\n{extra}connection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn peer_mode_names_both_versions_and_forwards_the_route_header() {
    let api = start_version("v2");
    let url = format!("http://127.0.0.1:{}", api.port);
    let web = start(&[
        "--app-name",
        "web",
        "--peer-url",
        &url,
        "--peer-host",
        "api.test",
    ]);
    assert_eq!(get(web.port, "/peer"), (200, "web=7 api=v2\n".into()));
    assert_eq!(get(web.port, "/"), (200, "web=7 api=v2\n".into()));
    // other paths answer as without a peer
    assert_eq!(get(web.port, "/other").0, 200);
    assert!(get(web.port, "/other").1.starts_with("version 7"));

    // the route header it got goes on to the peer, with the peer's host
    let (port, head) = fake_peer("v9");
    let url = format!("http://127.0.0.1:{port}");
    let web = start(&[
        "--app-name",
        "web",
        "--peer-url",
        &url,
        "--peer-host",
        "api.test",
    ]);
    assert_eq!(
        get_with(web.port, "/peer", "bluegreen-route: 4.abc\r\n"),
        (200, "web=7 api=v9\n".into())
    );
    let head = head.join().unwrap().to_ascii_lowercase();
    assert!(head.starts_with("get /version http/1.1"), "{head}");
    assert!(head.contains("bluegreen-route: 4.abc"), "{head}");
    assert!(head.contains("host: api.test"), "{head}");
}

#[test]
fn a_required_peer_version_fails_with_another() {
    let api = start_version("v1");
    let url = format!("http://127.0.0.1:{}", api.port);
    let web = start(&[
        "--app-name",
        "web",
        "--peer-url",
        &url,
        "--peer-host",
        "api.test",
        "--require-peer-version",
        "v2",
    ]);
    let (status, body) = get(web.port, "/peer");
    assert_eq!(status, 500);
    assert!(body.starts_with("web=7 api=v1\n"), "{body}");
    assert!(body.contains("needs api=v2"), "{body}");
    let ok = start(&[
        "--peer-url",
        &url,
        "--peer-host",
        "api.test",
        "--require-peer-version",
        "v1",
    ]);
    assert_eq!(get(ok.port, "/peer"), (200, "app=7 api=v1\n".into()));
}

#[test]
fn an_unreachable_peer_is_a_502_and_a_bad_peer_url_is_refused() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let url = format!("http://127.0.0.1:{port}");
    let web = start(&["--peer-url", &url]);
    let (status, body) = get(web.port, "/peer");
    assert_eq!(status, 502);
    assert!(body.contains("unreachable"), "{body}");
    let out = Command::new(env!("CARGO_BIN_EXE_sample-app"))
        .args(["--peer-url", "https://x:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--peer-url"));
}
