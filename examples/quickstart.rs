//! The quickstart: a real zero-downtime deployment on this machine.
//!
//! It deploys version 1 of the sample app (three processes) behind the bluegreen
//! proxy, then version 2 while a bounded load runs against the proxy, then version
//! 3, which never becomes healthy and is reverted on its own, then rolls back by
//! hand to version 1, and cleans everything up. Before any user reaches a new
//! version, a verify check asks it for its version through the proxy's preview
//! address, where the new group is served alone.
//!
//! Run it with `cargo run --example quickstart`. On a terminal a progress bar
//! follows each operation (step, instances healthy, traffic, bake time left); piped
//! or in CI, the same steps print as plain lines.

#[path = "support/progress.rs"]
mod progress;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bluegreen::local::{LocalFleet, LocalImage, LocalProxy, StateDir};
use bluegreen::proxy::{HealthCheckOptions, ProxyOptions};
use bluegreen::{
    check_fn, App, Check, DeployRequest, Engine, EngineOptions, Event, Fleet, Image, ImageSource,
    Router,
};
use bluegreen_testkit::http_load::HttpLoad;
use progress::Progress;

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("quickstart failed: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let work = std::env::temp_dir().join(format!("bluegreen-quickstart-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let sample_app = sample_app_binary()?;
    let state = StateDir::new(work.join("state"))?;
    let image = LocalImage::new(state.clone());
    let fleet = LocalFleet::new(state.clone(), image.clone());
    let mut proxy = LocalProxy::embedded(
        "127.0.0.1:0".parse()?,
        ProxyOptions::default()
            .with_health(HealthCheckOptions::default().with_interval(Duration::from_millis(250))),
    )
    .await?;
    println!(
        "bluegreen proxy listening on http://{} (Host: web.production)",
        proxy.address()
    );

    let started = Instant::now();
    let shown = Progress::stdout();
    // the image, the fleet, the proxy's router and the machine's FileLock
    let engine = Engine::from_parts(fleet.parts(proxy.router()))
        .with_events(shown.sink(move |event| line(started, event)))
        .with_options(
            EngineOptions::default()
                .with_poll_interval(Duration::from_millis(200))
                .with_health_timeout(Duration::from_secs(5))
                .with_drain(Duration::from_secs(1)),
        );
    let app = App::new("web", "production")?;
    let version = |v: &str, flags: &str| -> Result<DeployRequest, std::io::Error> {
        Ok(DeployRequest::new(
            app.clone(),
            ImageSource::Artifact(image_dir(&work, &sample_app, v, flags)?),
        )
        .size(3)
        .setting("command", "run")
        .setting("stop_timeout_ms", "5000")
        .verify(answers_version(v, shown.clone())))
    };

    // whatever happens on the way, everything is cleaned up at the end
    let toured: Result<Tour, Box<dyn std::error::Error>> = async {
        section(
            &shown,
            "1. Deploy version 1: three processes behind the proxy",
        );
        engine.deploy(&version("1", "")?).await?;

        section(&shown, "2. Deploy version 2 while 8 clients load the proxy");
        let load = HttpLoad::start(proxy.address(), "web.production", 8);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let v2 = engine.deploy(&version("2", "")?).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;

        section(&shown, "3. Deploy version 3, which never becomes healthy");
        let failed = engine
            .deploy(&version("3", "--never-healthy")?)
            .await
            .err()
            .ok_or("version 3 went live, though it is never healthy")?;
        shown.clear();
        println!("   -> {failed}");

        section(&shown, "4. Roll back by hand");
        let back = engine.rollback(&app).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let seen = load.stop().await;
        Ok(Tour {
            seen,
            v2,
            failed,
            back,
        })
    }
    .await;

    section(&shown, "5. Clean up");
    let router = proxy.router();
    router.set_routes(&app, &Default::default()).await?;
    for g in fleet.groups(&app).await? {
        router.detach(&app, &g.id).await?;
        fleet.destroy(&app, &g.id).await?;
        println!("   {} destroyed", g.id);
    }
    for i in image.images(&app).await? {
        image.remove(&app, &i.id).await?;
    }
    proxy.stop();
    let _ = std::process::Command::new("chmod")
        .args(["-R", "u+w"])
        .arg(&work)
        .status();
    std::fs::remove_dir_all(&work)?;

    let Tour {
        seen,
        v2,
        failed,
        back,
    } = toured?;
    section(&shown, "Summary");
    println!("   requests served:      {}", seen.ok);
    println!("   failed requests:      {}", seen.failed.len());
    println!("   time to switch to v2: {:?}", v2.switch_time);
    println!(
        "   version 3 reverted on its own:    {}",
        failed.rolled_back()
    );
    println!(
        "   manual rollback:      {} -> {} in {:?}",
        back.from, back.to, back.elapsed
    );
    println!("   answers by version:   {:?}", seen.by_version);
    println!(
        "   last answer from:     version {}",
        seen.last_version.as_deref().unwrap_or("-")
    );
    if !seen.failed.is_empty() {
        return Err(format!(
            "{} requests failed, first: {}",
            seen.failed.len(),
            seen.failed[0]
        )
        .into());
    }
    Ok(())
}

/// A verify check: the new group, reached alone at its preview address before it
/// has any traffic, must say it runs version `v`.
fn answers_version(v: &str, shown: Progress) -> Arc<dyn Check> {
    let want = format!("\"version\":\"{v}\"");
    check_fn(format!("preview answers version {v}"), move |target| {
        let want = want.clone();
        let shown = shown.clone();
        async move {
            let preview = target.preview.ok_or("the router gave no preview address")?;
            let body = get(&preview, "/version")
                .await
                .map_err(|e| format!("GET {preview}version: {e}"))?;
            shown.println(&format!(
                "            preview {preview}version: {}",
                body.trim()
            ));
            if body.contains(&want) {
                Ok(())
            } else {
                Err(format!("{preview}version answered {body}"))
            }
        }
    })
}

/// The body of `GET path` at `base` (`http://127.0.0.1:PORT/`).
async fn get(base: &str, path: &str) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let authority = base
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let mut stream = tokio::net::TcpStream::connect(&authority).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut reply = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut reply)).await??;
    match reply.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_owned()),
        _ => Err(std::io::Error::other(format!(
            "unexpected answer: {}",
            reply.lines().next().unwrap_or("(none)")
        ))),
    }
}

/// Ends the bar of the operation before, then prints a section's title.
fn section(shown: &Progress, title: &str) {
    shown.clear();
    println!("\n== {title}");
}

/// What the tour saw, for the summary.
struct Tour {
    seen: bluegreen_testkit::http_load::LoadReport,
    v2: bluegreen::DeployReport,
    failed: bluegreen::Error,
    back: bluegreen::RollbackReport,
}

/// The line each event prints: the steps, with the time since the start.
fn line(started: Instant, event: &Event) -> Option<String> {
    let t = started.elapsed().as_secs_f64();
    Some(match event {
        Event::StepStarted { step } => format!("   [{t:6.2}s] {step}"),
        Event::GroupLaunched { group, size } => {
            format!("            launched {group} ({size} processes)")
        }
        Event::Health {
            group,
            healthy,
            wanted,
        } => format!("            {group}: {healthy}/{wanted} healthy"),
        Event::Ready {
            group,
            healthy,
            total,
            ..
        } => format!("            router: {healthy}/{total} of {group} healthy"),
        Event::TrafficShifted { routes } => format!("            routes {routes}"),
        Event::GroupKeptWarm { group } => format!("            {group} kept warm"),
        Event::GroupDestroyed { group } => format!("            {group} destroyed"),
        Event::Reverting { step, reason } => {
            format!("            {step} failed, reverting: {reason}")
        }
        Event::Reverted { routes } => format!("            reverted to {routes}"),
        _ => return None,
    })
}

/// The sample app, built like this example (debug or release) when missing or out
/// of date, by the builder the tests use.
fn sample_app_binary() -> Result<PathBuf, Box<dyn std::error::Error>> {
    println!("building the sample app if needed ...");
    Ok(bluegreen_testkit::binaries::try_binary(
        "sample-app",
        "sample-app",
    )?)
}

/// An image directory: the sample app and a `run` script that starts it as
/// `version` with `flags`.
fn image_dir(
    work: &Path,
    sample_app: &Path,
    version: &str,
    flags: &str,
) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let dir = work.join(format!("image-v{version}"));
    std::fs::create_dir_all(&dir)?;
    std::fs::copy(sample_app, dir.join("sample-app"))?;
    let run = dir.join("run");
    std::fs::write(
        &run,
        format!(
            "#!/bin/sh\nexec \"$(dirname \"$0\")/sample-app\" --app-version {version} {flags}\n"
        ),
    )?;
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755))?;
    Ok(dir)
}
