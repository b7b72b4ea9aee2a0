//! Deploys a directory with a Dockerfile to a Docker Swarm, blue/green behind the
//! bluegreen proxy: the image is built on the manager, pushed to a registry, and run
//! by digest as one Swarm service per version, its tasks spread over the nodes with
//! host-mode published ports, which the proxy reaches directly. The deployment holds
//! the app's `SwarmLock`, kept in the swarm itself: another program deploying the
//! app through any manager waits its turn (it gets `Locked`).
//!
//! Against the test harness's swarm (`eval "$(scripts/swarm)"` as root):
//!
//! ```text
//! cargo run -p bluegreen-docker --example swarm_blue_green -- \
//!     --manager unix:///run/bgs/n1.sock --registry 10.213.0.1:5000 \
//!     --context ./web --app web --env production --size 3 --once --clean
//! ```
//!
//! `--manager` and `--registry` default to `BLUEGREEN_SWARM_NODES` (its first
//! socket) and `BLUEGREEN_SWARM_REGISTRY`. Without `--context`, it deploys the
//! workspace's sample app, built static `FROM scratch`, in a temporary directory
//! (`--version` says which version it reports).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bluegreen_core::{App, DeployRequest, Engine, EngineOptions, Event, EventSink, ImageSource};
use bluegreen_docker::bollard::{Docker, API_DEFAULT_VERSION};
use bluegreen_docker::{EmbeddedProxy, RegistryImage, SwarmFleet};
use clap::Parser;

/// Blue/green deployment of a Docker build context on a swarm.
#[derive(Parser)]
struct Args {
    /// A manager's Docker socket (`unix:///run/bgs/n1.sock`); default the first of
    /// BLUEGREEN_SWARM_NODES.
    #[arg(long)]
    manager: Option<String>,
    /// The registry every node pulls from (`host:port`); default
    /// BLUEGREEN_SWARM_REGISTRY.
    #[arg(long, env = "BLUEGREEN_SWARM_REGISTRY")]
    registry: String,
    /// The build context: a directory with a Dockerfile; default the sample app.
    #[arg(long)]
    context: Option<PathBuf>,
    /// The version the sample app reports (without --context).
    #[arg(long, default_value = "1")]
    version: String,
    /// The app's name.
    #[arg(long, default_value = "web")]
    app: String,
    /// The environment.
    #[arg(long, default_value = "production")]
    env: String,
    /// How many tasks.
    #[arg(long, default_value_t = 3)]
    size: u32,
    /// Where the proxy serves the app.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Deploy, check one request through the proxy, then exit instead of serving
    /// until Ctrl-C.
    #[arg(long)]
    once: bool,
    /// On exit, remove the app's services and images.
    #[arg(long)]
    clean: bool,
}

fn show(event: &Event) {
    match event {
        Event::StepStarted { step } => println!("==> {step}"),
        Event::ImageReady { image } => println!("    image {}", image.id),
        Event::GroupLaunched { group, size } => {
            println!("    launched service {group} ({size} tasks)")
        }
        Event::Health {
            group,
            healthy,
            wanted,
        } => println!("    {group}: {healthy}/{wanted} healthy"),
        Event::TrafficShifted { routes } => println!("    traffic: {routes:?}"),
        Event::GroupDestroyed { group } => println!("    destroyed service {group}"),
        Event::Reverting { step, reason } => println!("!!  reverting after {step}: {reason}"),
        Event::Finished { group, elapsed } => println!("==> {group} is live ({elapsed:.2?})"),
        Event::Failed { error, .. } => println!("!!  failed: {error}"),
        _ => {}
    }
}

/// The sample app, static, `FROM scratch`, in a temporary build context.
fn sample_context(version: &str) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let binary = static_sample_app()?;
    let dir = std::env::temp_dir().join(format!("bluegreen-swarm-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::copy(binary, dir.join("sample-app"))?;
    std::fs::write(
        dir.join("Dockerfile"),
        format!(
            "FROM scratch\nCOPY sample-app /sample-app\nENV HOST=0.0.0.0 APP_VERSION={version}\nENTRYPOINT [\"/sample-app\"]\n"
        ),
    )?;
    Ok(dir)
}

/// The static sample app (for a `FROM scratch` image), built by the builder the
/// tests use.
fn static_sample_app() -> Result<PathBuf, Box<dyn std::error::Error>> {
    Ok(bluegreen_testkit::binaries::try_static_binary(
        "sample-app",
        "sample-app",
    )?)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let app = App::new(&args.app, &args.env)?;
    let manager = match args.manager {
        Some(m) => m,
        None => std::env::var("BLUEGREEN_SWARM_NODES")
            .ok()
            .and_then(|n| n.split(',').next().map(str::to_owned))
            .ok_or("--manager or BLUEGREEN_SWARM_NODES is needed")?,
    };
    let docker = Docker::connect_with_unix(
        manager.trim_start_matches("unix://"),
        600,
        API_DEFAULT_VERSION,
    )?
    .negotiate_version()
    .await?;
    let image = RegistryImage::new(docker.clone(), args.registry.clone())?;
    let fleet = SwarmFleet::new(docker.clone()).with_registry_auth(image.credentials().cloned());
    let proxy = EmbeddedProxy::start(args.listen, Default::default()).await?;
    // the registry image, the fleet, the proxy's router and the swarm's SwarmLock
    let engine = Engine::from_parts(fleet.parts(image.clone(), proxy.router()))
        .with_events(EventSink::new(show))
        .with_options(
            EngineOptions::default()
                .with_poll_interval(Duration::from_millis(250))
                .with_drain(Duration::from_secs(2)),
        );
    let context = match args.context {
        Some(c) => c,
        None => sample_context(&args.version)?,
    };
    let request = DeployRequest::new(
        app.clone(),
        ImageSource::Build {
            context,
            args: Default::default(),
        },
    )
    .size(args.size)
    .setting("spread", "node.id")
    .setting("memory", "64m");
    // this program's proxy starts empty: put the groups that still run behind it
    let status = engine.status(&app).await?;
    for g in &status.groups {
        use bluegreen_core::Router;
        proxy
            .router()
            .attach(&app, &g.group.id, &g.instances)
            .await?;
    }
    let report = engine.deploy(&request).await?;
    println!(
        "{} is live at http://{} (Host: {}.{})",
        report.live,
        proxy.address(),
        app.name(),
        app.environment()
    );
    if args.once {
        let answer = get(
            proxy.address(),
            &format!("{}.{}", app.name(), app.environment()),
        )
        .await?;
        println!("GET / through the proxy: {answer}");
    } else {
        println!("serving; Ctrl-C to stop (the services keep running)");
        tokio::signal::ctrl_c().await?;
    }
    if args.clean {
        use bluegreen_core::{Fleet, Image};
        for g in fleet.groups(&app).await? {
            fleet.destroy(&app, &g.id).await?;
        }
        for i in image.images(&app).await? {
            image.remove(&app, &i.id).await?;
        }
        println!("removed the services and images of {app}");
    }
    Ok(())
}

/// One `GET /` with `Host: host`: the first line of the body.
async fn get(address: SocketAddr, host: &str) -> Result<String, Box<dyn std::error::Error>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(address).await?;
    s.write_all(format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).await?;
    Ok(raw
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .trim()
        .to_owned())
}
