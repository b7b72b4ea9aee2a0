//! Deploys a directory with a Dockerfile to the local Docker daemon, blue/green
//! behind the bluegreen proxy running as a long-lived container, and shows the
//! engine's progress.
//!
//! ```text
//! cargo run -p bluegreen-docker --example docker_blue_green -- \
//!     --context ./web --app web --env production --size 3 --listen 127.0.0.1:8080
//! ```
//!
//! The first run starts the proxy container (`bluegreen-proxy`, serving on
//! `--listen` with the host's network, its admin API on a unix socket in
//! `--proxy-dir`, its routes on the volume `bluegreen-proxy-state`), deploys, and
//! exits: the containers and the proxy keep serving. Run it again after changing
//! the directory: it finds the same proxy, takes the app's lock on the daemon
//! (`DockerLock`, so that two runs never deploy the app at once), and the new
//! version replaces the old one with no failed request. `--down` removes the app's
//! containers and images, the proxy container and its volume, and the lock.
//!
//! The proxy image is built `FROM scratch` from a static `bluegreen-proxy`: give
//! one with `--proxy-binary`, or the example builds it (`cargo build --release
//! --target <this machine> -p bluegreen-proxy` with `+crt-static`) on first use.
//!
//! # Measured
//!
//! On a 2-core machine (Docker 20.10), with the sample app (`crates/sample-app`,
//! static, `FROM scratch`) as the directory, size 3: a first run deployed version
//! 1 and exited; then, while 4 `curl` loops in another shell (new connection per
//! request, `Host: web.production`) loaded `127.0.0.1:18080`, a second run deployed
//! version 2 and a third version 3, each after the previous run had exited:
//!
//! | | |
//! | --- | --- |
//! | requests during the 22.5 s of load | 34 027 (12 072 answered by version 1, 15 757 by 2, 6 198 by 3) |
//! | failed requests (status other than 200, or no answer) | **0** |
//! | second run, start to exit (image build included) | 5.1 s; switch 21 ms |
//! | third run | 8.5 s; switch 4.5 ms |
//!
//! Two runs started at once: one deployed, the other stopped at once with
//! `Locked` naming the first (the lock is on the daemon, shared by every program
//! that deploys through it). The load was a small Python client
//! (`http.client`, 4 threads, `Connection: close`), counting every status and
//! exception.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bluegreen_core::{
    App, DeployRequest, Engine, EngineOptions, Event, EventSink, Fleet, Image, ImageSource,
    RouteTable, Router,
};
use bluegreen_docker::{
    connect, DockerFleet, DockerFleetOptions, DockerImage, DockerLock, ProxyContainer,
    ProxyContainerOptions,
};
use clap::Parser;

/// Blue/green deployment of a Docker build context.
#[derive(Parser)]
struct Args {
    /// The build context: a directory with a Dockerfile.
    #[arg(long, required_unless_present = "down")]
    context: Option<PathBuf>,
    /// The app's name.
    #[arg(long, default_value = "web")]
    app: String,
    /// The environment.
    #[arg(long, default_value = "production")]
    env: String,
    /// How many containers.
    #[arg(long, default_value_t = 3)]
    size: u32,
    /// Where the proxy serves the app (a fixed port on this host).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The port the app listens on inside its container.
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Build arguments, `KEY=VALUE`.
    #[arg(long = "build-arg")]
    build_args: Vec<String>,
    /// Environment variables of the release, `KEY=VALUE`.
    #[arg(long = "set-env")]
    set_env: Vec<String>,
    /// The proxy container's name.
    #[arg(long, default_value = "bluegreen-proxy")]
    proxy_name: String,
    /// The directory of the proxy's admin socket and token (made absolute).
    #[arg(long, default_value = ".bluegreen/proxy")]
    proxy_dir: PathBuf,
    /// A static `bluegreen-proxy` binary (default: built on first use).
    #[arg(long)]
    proxy_binary: Option<PathBuf>,
    /// Remove the app's containers and images, the proxy container, its volume and
    /// the app's lock, then exit; deploy nothing.
    #[arg(long)]
    down: bool,
}

fn pairs(values: &[String], flag: &str) -> Result<Vec<(String, String)>, String> {
    values
        .iter()
        .map(|v| {
            v.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| format!("--{flag} {v}: expected KEY=VALUE"))
        })
        .collect()
}

fn show(event: &Event) {
    match event {
        Event::StepStarted { step } => println!("==> {step}"),
        Event::StepFinished { step, elapsed } => println!("    {step} done in {elapsed:.2?}"),
        Event::BuildOutput { line } => println!("    | {line}"),
        Event::ImageReady { image } => println!("    image {}", image.id),
        Event::GroupLaunched { group, size } => {
            println!("    launched {group} ({size} containers)")
        }
        Event::GroupAdopted { group } => println!("    adopted {group}"),
        Event::Health {
            group,
            healthy,
            wanted,
        } => println!("    {group}: {healthy}/{wanted} healthy"),
        Event::TrafficShifted { routes } => println!("    traffic: {routes:?}"),
        Event::GroupDestroyed { group } => println!("    destroyed {group}"),
        Event::GroupKeptWarm { group } => println!("    kept warm {group}"),
        Event::Reverting { step, reason } => println!("!!  reverting after {step}: {reason}"),
        Event::Finished { group, elapsed } => println!("==> {group} is live ({elapsed:.2?})"),
        Event::Failed { error, .. } => println!("!!  failed: {error}"),
        _ => {}
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let app = App::new(&args.app, &args.env)?;
    let build_args = pairs(&args.build_args, "build-arg")?;
    let set_env = pairs(&args.set_env, "set-env")?;
    let proxy_dir = std::path::absolute(&args.proxy_dir)?;
    let docker = connect().await?;
    let image = DockerImage::new(docker.clone());
    let fleet = DockerFleet::new(docker.clone(), DockerFleetOptions::default());
    let lock = DockerLock::new(docker.clone());
    if args.down {
        if let Some(proxy) = ProxyContainer::find(&docker, &args.proxy_name, &proxy_dir).await? {
            let router = proxy.router();
            router.set_routes(&app, &RouteTable::empty()).await?;
            for g in fleet.groups(&app).await? {
                router.detach(&app, &g.id).await?;
            }
        }
        for g in fleet.groups(&app).await? {
            fleet.destroy(&app, &g.id).await?;
            println!("    removed {}", g.id);
        }
        for i in image.images(&app).await? {
            image.remove(&app, &i.id).await?;
        }
        ProxyContainer::remove(&docker, &args.proxy_name, &proxy_dir).await?;
        lock.forget(&app).await?;
        println!(
            "    removed the proxy container {} and its volume",
            args.proxy_name
        );
        return Ok(());
    }
    let binary = match &args.proxy_binary {
        Some(b) => b.clone(),
        None => bluegreen_testkit::binaries::static_binary("bluegreen-proxy", "bluegreen-proxy"),
    };
    let proxy = ProxyContainer::start(
        &docker,
        &ProxyContainerOptions::new(&proxy_dir, binary)
            .with_name(&args.proxy_name)
            .with_listen(args.listen)
            .with_args(["--health-interval", "250ms"]),
    )
    .await?;
    println!(
        "    proxy container {} on {}",
        proxy.name(),
        proxy.address()
    );
    // a DockerImage, the fleet, the proxy container's router and the daemon's DockerLock
    let engine = Engine::from_parts(fleet.parts(proxy.router()))
        .with_events(EventSink::new(show))
        .with_options(
            EngineOptions::default()
                .with_poll_interval(Duration::from_millis(250))
                .with_drain(Duration::from_secs(2)),
        );
    let source = ImageSource::Build {
        context: args.context.clone().expect("clap requires --context"),
        args: build_args.into_iter().collect(),
    };
    let mut request = DeployRequest::new(app.clone(), source)
        .size(args.size)
        .setting("port", args.port.to_string());
    for (k, v) in set_env {
        request = request.env(k, v);
    }
    let report = engine.deploy(&request).await?;
    println!(
        "{app} serves on http://{} (Host: {}.{}), live {}, switch {:?}; the proxy container \
         keeps serving after this program exits",
        proxy.address(),
        app.name(),
        app.environment(),
        report.live,
        report.switch_time
    );
    Ok(())
}
