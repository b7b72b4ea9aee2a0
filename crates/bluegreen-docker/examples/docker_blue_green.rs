//! Deploys a directory with a Dockerfile to the local Docker daemon, blue/green
//! behind the bluegreen proxy, and shows the engine's progress.
//!
//! ```text
//! cargo run -p bluegreen-docker --example docker_blue_green -- \
//!     --context ./web --app web --env production --size 3 --listen 127.0.0.1:8080
//! ```
//!
//! Run it again after changing the directory: the new version replaces the old one
//! with no failed request while the program keeps serving. Press Ctrl-C to stop
//! serving (the containers keep running; `--clean` removes them on exit).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bluegreen_core::{App, DeployRequest, Engine, EngineOptions, Event, EventSink, ImageSource};
use bluegreen_docker::{connect, DockerFleet, DockerFleetOptions, DockerImage, EmbeddedProxy};
use clap::Parser;

/// Blue/green deployment of a Docker build context.
#[derive(Parser)]
struct Args {
    /// The build context: a directory with a Dockerfile.
    #[arg(long)]
    context: PathBuf,
    /// The app's name.
    #[arg(long, default_value = "web")]
    app: String,
    /// The environment.
    #[arg(long, default_value = "production")]
    env: String,
    /// How many containers.
    #[arg(long, default_value_t = 3)]
    size: u32,
    /// Where the proxy serves the app.
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
    /// Deploy, then exit at once instead of serving until Ctrl-C.
    #[arg(long)]
    once: bool,
    /// On exit, remove the app's containers.
    #[arg(long)]
    clean: bool,
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
    let docker = connect().await?;
    let proxy = EmbeddedProxy::start(args.listen, Default::default()).await?;
    let image = DockerImage::new(docker.clone());
    let fleet = DockerFleet::new(docker, DockerFleetOptions::default());
    let engine = Engine::new(image, fleet.clone(), proxy.router())
        .with_events(EventSink::new(show))
        .with_options(
            EngineOptions::default()
                .with_poll_interval(Duration::from_millis(250))
                .with_drain(Duration::from_secs(2)),
        );
    let source = ImageSource::Build {
        context: args.context.clone(),
        args: pairs(&args.build_args, "build-arg")?.into_iter().collect(),
    };
    let mut request = DeployRequest::new(app.clone(), source)
        .size(args.size)
        .setting("port", args.port.to_string());
    for (k, v) in pairs(&args.set_env, "set-env")? {
        request = request.env(k, v);
    }
    // this program's proxy starts empty: put the groups that still run behind it
    let status = engine.status(&app).await?;
    for g in &status.groups {
        use bluegreen_core::Router;
        proxy
            .router()
            .attach(&app, &g.group.id, &g.instances)
            .await?;
    }
    let newest = status
        .groups
        .iter()
        .filter(|g| g.healthy() > 0)
        .max_by_key(|g| g.group.generation);
    if let Some(live) = newest {
        use bluegreen_core::Router;
        proxy
            .router()
            .set_routes(
                &app,
                &bluegreen_core::RouteTable::single(live.group.id.clone()),
            )
            .await?;
    }
    let report = engine.deploy(&request).await?;
    println!(
        "{app} serves on http://{} (Host: {}.{}), live {}, switch {:?}",
        proxy.address(),
        app.name(),
        app.environment(),
        report.live,
        report.switch_time
    );
    if !args.once {
        println!("serving; Ctrl-C to stop");
        tokio::signal::ctrl_c().await?;
    }
    if args.clean {
        use bluegreen_core::{Fleet, Router};
        let router = proxy.router();
        router.set_routes(&app, &Default::default()).await?;
        for g in fleet.groups(&app).await? {
            router.detach(&app, &g.id).await?;
            fleet.destroy(&app, &g.id).await?;
            println!("    removed {}", g.id);
        }
    }
    Ok(())
}
