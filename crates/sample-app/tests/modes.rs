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
    let mut child = Command::new(env!("CARGO_BIN_EXE_sample-app"))
        .args(["--port", "0", "--app-version", "7", "--instance", "i-1"])
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
    let dir = std::env::temp_dir().join(format!("sample-app-boots-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let boots = dir.join("boots");
    let _ = std::fs::remove_file(&boots);
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
    std::fs::remove_dir_all(&dir).unwrap();
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
