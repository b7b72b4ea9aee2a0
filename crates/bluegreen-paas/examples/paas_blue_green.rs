//! Blue/green deployment on the Heroku Platform API (or a platform that speaks it).
//!
//! ```text
//! HEROKU_API_KEY=... cargo run -p bluegreen-paas --example paas_blue_green -- \
//!     --app web --env production --slug ./slug.tgz --size 2 \
//!     --mode app --domain www.example.com
//! ```
//!
//! Flags:
//! - `--base-url URL`: the API (default `https://api.heroku.com`)
//! - `--app NAME`, `--env NAME`: what is deployed
//! - `--slug PATH` or `--source-url URL` or `--slug-id ID`: the image
//! - `--size N`: dynos (default 1)
//! - `--mode app|release`: an app per group with domains moved (default), or a
//!   release per group in one app
//! - `--domain HOST` (app mode, repeatable): the custom domains to move
//! - `--heroku-app NAME` (release mode): the long-lived app (default `<app>-<env>`)
//! - `--dyno-size SIZE`: the formation's dyno size
//! - `--rollback`: go back one release instead of deploying

use std::process::ExitCode;

use bluegreen_core::{App, DeployRequest, Engine, Event, EventSink, ImageId, ImageSource};
use bluegreen_paas::{AppFleet, DomainRouter, PlatformClient, ReleaseFleet};

struct Args {
    base_url: Option<String>,
    app: String,
    env: String,
    source: Option<ImageSource>,
    size: u32,
    mode: String,
    domains: Vec<String>,
    heroku_app: Option<String>,
    dyno_size: Option<String>,
    rollback: bool,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        base_url: None,
        app: String::new(),
        env: String::new(),
        source: None,
        size: 1,
        mode: "app".into(),
        domains: Vec::new(),
        heroku_app: None,
        dyno_size: None,
        rollback: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--base-url" => a.base_url = Some(value()?),
            "--app" => a.app = value()?,
            "--env" => a.env = value()?,
            "--slug" => a.source = Some(ImageSource::Artifact(value()?.into())),
            "--source-url" => a.source = Some(ImageSource::SourceUrl(value()?)),
            "--slug-id" => a.source = Some(ImageSource::Id(ImageId::new(value()?))),
            "--size" => a.size = value()?.parse().map_err(|e| format!("--size: {e}"))?,
            "--mode" => a.mode = value()?,
            "--domain" => a.domains.push(value()?),
            "--heroku-app" => a.heroku_app = Some(value()?),
            "--dyno-size" => a.dyno_size = Some(value()?),
            "--rollback" => a.rollback = true,
            "--help" | "-h" => return Err(String::new()),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if a.app.is_empty() || a.env.is_empty() {
        return Err("--app and --env are required".into());
    }
    if !a.rollback && a.source.is_none() {
        return Err("one of --slug, --source-url or --slug-id is required".into());
    }
    if a.mode != "app" && a.mode != "release" {
        return Err(format!("--mode is app or release, not {}", a.mode));
    }
    Ok(a)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}\nusage: paas_blue_green --app NAME --env NAME (--slug PATH | --source-url URL | --slug-id ID) [--size N] [--mode app|release] [--domain HOST]... [--heroku-app NAME] [--dyno-size SIZE] [--base-url URL] [--rollback]");
            return ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), bluegreen_core::Error> {
    let client = PlatformClient::from_env(args.base_url.as_deref())?;
    let app = App::new(args.app, args.env)?;
    let events = EventSink::new(|e: &Event| match e {
        Event::BuildOutput { line } => println!("  | {line}"),
        Event::StepStarted { step } => println!("-> {step}"),
        Event::TrafficShifted { routes } => println!("   traffic: {routes}"),
        Event::Finished { group, elapsed } => println!("done: {group} is live ({elapsed:?})"),
        Event::Failed { error, .. } => println!("failed: {error}"),
        _ => {}
    });
    // each mode's parts carry the platform's lock: runs from several machines exclude
    // each other
    let parts = if args.mode == "app" {
        DomainRouter::new(AppFleet::new(client))
            .with_domains(&app, args.domains)
            .parts()
    } else {
        let mut fleet = ReleaseFleet::new(client);
        if let Some(name) = args.heroku_app {
            fleet = fleet.with_app_name(&app, name);
        }
        fleet.parts()
    };
    let engine = Engine::from_parts(parts).with_events(events);
    if args.rollback {
        let back = engine.rollback(&app).await?;
        println!("rolled back from {} to {}", back.from, back.to);
        return Ok(());
    }
    let mut request =
        DeployRequest::new(app, args.source.expect("checked in parse")).size(args.size);
    if let Some(size) = args.dyno_size {
        request.settings.insert("dyno_size".into(), size);
    }
    let report = engine.deploy(&request).await?;
    println!(
        "{} is live; kept warm: {:?}; destroyed: {:?}",
        report.live, report.kept_warm, report.destroyed
    );
    Ok(())
}
