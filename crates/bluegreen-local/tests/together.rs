//! Two services deployed as one (`Engine::deploy_all`) under constant load: web
//! calls api through the proxy, and the new web only works with the new api. No
//! request may fail, and no answer may pair one version of web with the other
//! version of api. Real processes behind a real proxy process.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bluegreen_core::{
    App, DeployRequest, Engine, EngineOptions, Fleet, ImageSource, RouteTable, Router, SwitchAll,
};
use bluegreen_local::{FileLock, LocalFleet, LocalImage, LocalProxy};
use support::{image_dir, proxy_bin, state, Scratch};

fn web() -> App {
    App::new("web", "together").unwrap()
}

fn api() -> App {
    App::new("api", "together").unwrap()
}

/// web `version` calls api through the proxy at `listen`; from version 2 on it
/// answers 500 unless api has the same version.
fn requests(root: &Path, listen: SocketAddr, version: &str) -> Vec<DeployRequest> {
    let require = if version == "1" {
        String::new()
    } else {
        format!("--require-peer-version {version}")
    };
    let web_image = image_dir(
        &root.join("web"),
        version,
        &format!(
            "--app-name web --peer-url http://{listen} --peer-host api.together \
             --latency-ms 15 {require}"
        ),
    );
    let api_image = image_dir(&root.join("api"), version, "--app-name api");
    [(web(), web_image), (api(), api_image)]
        .into_iter()
        .map(|(app, image)| {
            DeployRequest::new(app, ImageSource::Artifact(image))
                .size(2)
                .setting("command", "run")
                .setting("stop_timeout_ms", "3000")
        })
        .collect()
}

#[derive(Default)]
struct Tally {
    ok: u64,
    failed: Vec<String>,
    mixed: Vec<String>,
}

/// One request to web through the proxy.
fn ask(listen: SocketAddr) -> Result<(u16, String), String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(listen).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: web.together\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    let status = out
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status in {out:?}"))?;
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok((status, body))
}

/// The data of a chunked body.
fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

fn load(listen: SocketAddr, stop: Arc<AtomicBool>, tally: Arc<Mutex<Tally>>) {
    while !stop.load(Ordering::Relaxed) {
        let answer = ask(listen);
        let mut t = tally.lock().unwrap();
        match answer {
            Ok((200, body)) => {
                let first = body.lines().next().unwrap_or_default().to_owned();
                let versions: Vec<&str> = first
                    .split(' ')
                    .filter_map(|part| part.split_once('=').map(|(_, v)| v))
                    .collect();
                if versions.len() != 2 {
                    t.failed.push(format!("unexpected answer {first:?}"));
                } else if versions[0] != versions[1] {
                    t.mixed.push(first);
                } else {
                    t.ok += 1;
                }
            }
            Ok((status, body)) => t.failed.push(format!("{status}: {}", body.trim())),
            Err(e) => t.failed.push(e),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_and_api_switch_together_with_no_mixed_answer_and_no_failure() {
    let scratch = Scratch::new("together");
    let root = scratch.path().to_path_buf();
    let listen: SocketAddr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let state = state(&root);
    let mut proxy = LocalProxy::process(&state, listen, &proxy_bin())
        .await
        .unwrap();
    let image = LocalImage::new(state.clone());
    let fleet = LocalFleet::new(state.clone(), image.clone());
    let engine = Engine::new(image, fleet.clone(), proxy.router())
        .with_lock(Arc::new(FileLock::new(&state)))
        .with_options(
            EngineOptions::default()
                .with_poll_interval(Duration::from_millis(100))
                .with_drain(Duration::from_millis(500))
                .with_keep(1),
        );
    engine
        .deploy_all(&requests(&root, listen, "1"), SwitchAll::Atomic)
        .await
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let clients: Vec<_> = (0..6)
        .map(|_| {
            let (stop, tally) = (stop.clone(), tally.clone());
            std::thread::spawn(move || load(listen, stop, tally))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    // to 2, back to 1 (new groups of the first release), to 3: three atomic switches
    let mut switches = Vec::new();
    for version in ["2", "1", "3"] {
        let reports = engine
            .deploy_all(&requests(&root, listen, version), SwitchAll::Atomic)
            .await
            .unwrap_or_else(|e| panic!("to {version}: {e}"));
        switches.push(reports[0].switch_time);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let t = std::mem::take(&mut *tally.lock().unwrap());
    println!(
        "deploy_all under load: {} answers in {:?}, {} mixed, {} failed, switches {switches:?}",
        t.ok,
        started.elapsed(),
        t.mixed.len(),
        t.failed.len()
    );
    assert!(t.ok > 100, "the load ran: {} answers", t.ok);
    assert!(
        t.mixed.is_empty(),
        "mixed answers: {:?}",
        &t.mixed[..t.mixed.len().min(5)]
    );
    assert!(
        t.failed.is_empty(),
        "failed: {:?}",
        &t.failed[..t.failed.len().min(5)]
    );

    // both apps serve version 3
    let router = proxy.router();
    for app in [web(), api()] {
        let routes = router.routes(&app).await.unwrap();
        assert_eq!(routes.groups().count(), 1, "{app}: {routes}");
    }
    let (status, body) = ask(listen).unwrap();
    assert_eq!((status, body.trim()), (200, "web=3 api=3"));
    for app in [web(), api()] {
        let _ = router.set_routes(&app, &RouteTable::empty()).await;
        for g in fleet.groups(&app).await.unwrap() {
            let _ = router.detach(&app, &g.id).await;
            fleet.destroy(&app, &g.id).await.unwrap();
        }
    }
    proxy.stop();
}
