//! The binary runs under valgrind, as `scripts/profile-proxy` runs it to count
//! the instructions of a request: nothing on the request path may depend on
//! the vDSO being there (valgrind gives the program none).

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bluegreen_testkit::scratch::Scratch;
use support::TestBackend;

/// Kills the process when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Writes `request` on `stream` and reads one response with a
/// `Content-Length`; returns its status and body, or what went wrong.
fn exchange(stream: &mut TcpStream, request: &str) -> Result<(u16, String), String> {
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse::<usize>().unwrap());
            if let Some(length) = length {
                if got.len() >= end + 4 + length {
                    let status = head[9..12].parse().unwrap();
                    let body = String::from_utf8_lossy(&got[end + 4..end + 4 + length]);
                    return Ok((status, body.into_owned()));
                }
            }
        }
        match stream.read(&mut buf) {
            Ok(0) => {
                let got = String::from_utf8_lossy(&got);
                return Err(format!("connection closed after {got:?}"));
            }
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

fn admin_put(admin: u16, token: &str, path: &str, body: &str) -> u16 {
    let mut s = TcpStream::connect(("127.0.0.1", admin)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let request = format!(
        "PUT {path} HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    exchange(&mut s, &request).unwrap().0
}

/// Under valgrind the proxy serves plain requests (the own HTTP/1.1 server,
/// which accounts the serving thread's time before each) and requests with a
/// body (hyper's server) on keep-alive connections, and is still running after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_under_valgrind() {
    // valgrind, or a failure with `CI=true`
    let Some(valgrind) = bluegreen_testkit::binaries::installed(
        "BLUEGREEN_VALGRIND",
        "valgrind",
        "scripts/services installs Debian's valgrind",
    ) else {
        return;
    };
    let backend = TestBackend::start("a", "a-1").await;
    let dir = Scratch::new("proxy-valgrind");
    let port = || {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let (listen, admin) = (port(), port());
    let token = "valgrind-token-0123456789";
    let child = Command::new(valgrind)
        .arg("--tool=callgrind")
        .arg(format!(
            "--callgrind-out-file={}",
            dir.join("callgrind.out").display()
        ))
        .arg(env!("CARGO_BIN_EXE_bluegreen-proxy"))
        .args(["--threads", "1", "--listen"])
        .arg(format!("127.0.0.1:{listen}"))
        .arg("--admin")
        .arg(format!("127.0.0.1:{admin}"))
        .env("BLUEGREEN_PROXY_TOKEN", token)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Killed(child);
    let address = backend.address();
    let (status_out, mut child) = tokio::task::spawn_blocking(move || {
        // valgrind starts the program slowly: up to a minute
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", admin)).is_err() {
            assert!(
                child.0.try_wait().unwrap().is_none(),
                "the proxy ended while starting under valgrind"
            );
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "no admin listener"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let group = format!("{{\"backends\":[{{\"address\":\"{address}\"}}]}}");
        assert_eq!(
            admin_put(admin, token, "/v1/apps/a.test/groups/a", &group),
            200
        );
        assert_eq!(
            admin_put(
                admin,
                token,
                "/v1/apps/a.test/routes",
                "{\"routes\":{\"a\":100}}"
            ),
            200
        );
        let mut statuses = Vec::new();
        'connections: for connection in 0..3 {
            let mut s = TcpStream::connect(("127.0.0.1", listen)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
            let post = "POST /body HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\n\r\nhello";
            let requests = (0..20)
                .map(|i| format!("GET /plain/{connection}/{i} HTTP/1.1\r\nHost: a.test\r\n\r\n"))
                .chain([post.to_owned()]);
            for request in requests {
                match exchange(&mut s, &request) {
                    Ok((status, _)) => statuses.push(Ok(status)),
                    Err(e) => {
                        statuses.push(Err(e));
                        break 'connections;
                    }
                }
                // a pause longer than the accounting interval: the next request
                // reads the thread's clock again
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        if statuses.iter().any(Result::is_err) {
            // a crash takes valgrind a moment to report: give it that
            let start = Instant::now();
            while child.0.try_wait().unwrap().is_none() && start.elapsed() < Duration::from_secs(10)
            {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let running = child.0.try_wait().unwrap().is_none();
        ((statuses, running), child)
    })
    .await
    .unwrap();
    let (statuses, running) = status_out;
    let stderr = if running {
        String::new()
    } else {
        let mut e = String::new();
        let _ = child.0.stderr.take().unwrap().read_to_string(&mut e);
        e
    };
    assert!(
        running,
        "the proxy ended under valgrind after {statuses:?}: {stderr}"
    );
    assert_eq!(statuses.len(), 63, "{statuses:?}");
    assert!(statuses.iter().all(|s| s == &Ok(200)), "{statuses:?}");
    assert!(backend.proxied_connections() > 0);
    drop(dir);
}
