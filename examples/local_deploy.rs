//! `local_deploy`: deploy, promote, roll back and inspect any local executable behind
//! the bluegreen proxy, for people who use the local provider on a server.
//!
//! The proxy runs as its own `bluegreen-proxy` process and the instances as their
//! own processes: both outlive this program. State lives in `$BLUEGREEN_STATE_DIR`
//! (default `~/.local/state/bluegreen`).
//!
//! ```sh
//! cargo build --release -p bluegreen-proxy -p sample-app
//! cargo run --example local_deploy -- deploy --app web --env production \
//!     --artifact target/release/sample-app --size 3 --env-var APP_VERSION=2
//! cargo run --example local_deploy -- status --app web --env production
//! cargo run --example local_deploy -- rollback --app web --env production
//! cargo run --example local_deploy -- rollback --app web --env production --to sha256:...
//! cargo run --example local_deploy -- down --app web --env production
//! ```
//!
//! On a terminal a progress bar follows the operation (step, instances healthy,
//! traffic, bake time left); piped or in CI, the steps print as plain lines.

#[path = "support/progress.rs"]
mod progress;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bluegreen::local::{proxy_binary, LocalFleet, LocalImage, LocalProxy, StateDir};
use bluegreen::{
    App, DeployRequest, Engine, EngineOptions, Event, Fleet, GroupId, Image, ImageId, ImageSource,
    Router, Strategy,
};
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "local_deploy",
    about = "Blue/green deployments of local executables"
)]
struct Cli {
    /// Where the proxy listens for clients (used when it is first started).
    #[arg(
        long,
        global = true,
        env = "BLUEGREEN_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    listen: SocketAddr,
    /// The state directory.
    #[arg(long, global = true, env = "BLUEGREEN_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// The `bluegreen-proxy` binary (default: beside this program, or on the PATH).
    #[arg(long, global = true, env = "BLUEGREEN_PROXY_BIN")]
    proxy_bin: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct Target {
    /// The app's name.
    #[arg(long)]
    app: String,
    /// The environment.
    #[arg(long = "env", default_value = "production")]
    environment: String,
}

#[derive(Args)]
struct Release {
    #[command(flatten)]
    target: Target,
    /// The executable, or a directory (then give `--setting command=<path inside>`).
    #[arg(long)]
    artifact: PathBuf,
    /// How many processes.
    #[arg(long, default_value_t = 1)]
    size: u32,
    /// An environment variable of every process, `KEY=VALUE` (repeatable).
    #[arg(long = "env-var", value_parser = key_value)]
    env_vars: Vec<(String, String)>,
    /// A release setting, `key=value` (repeatable): command, args, health_path, stop_timeout_ms.
    #[arg(long = "setting", value_parser = key_value)]
    settings: Vec<(String, String)>,
    /// Canary weights, e.g. `10,50` (default: one blue/green switch).
    #[arg(long, value_delimiter = ',')]
    canary: Vec<u8>,
    /// How long to watch each canary step, in seconds.
    #[arg(long, default_value_t = 30)]
    bake_secs: u64,
    /// How long to watch the new version after the final switch, with the previous
    /// one kept warm, in seconds (0: no watch). A crash or a lost member switches
    /// the traffic back at once.
    #[arg(long, default_value_t = 0)]
    bake_after_secs: u64,
    /// Fail when the new version's share of 5xx responses passes this fraction.
    #[arg(long)]
    max_error_rate: Option<f64>,
    /// How long instances may take to become healthy, in seconds.
    #[arg(long, default_value_t = 60)]
    health_timeout_secs: u64,
}

#[derive(Subcommand)]
enum Command {
    /// Prepare a new group and move all traffic to it.
    Deploy(Release),
    /// Prepare a new group without traffic (promote it later).
    Prepare(Release),
    /// Move traffic to a prepared group.
    Promote {
        #[command(flatten)]
        target: Target,
        /// The group, e.g. `web-production-v004`.
        #[arg(long)]
        group: String,
    },
    /// Go back to the previous release, or to the release of an image (`--to`, as
    /// `status` shows it: safe to run again).
    Rollback {
        #[command(flatten)]
        target: Target,
        /// The image to go back to, e.g. `sha256:3f2a...`.
        #[arg(long)]
        to: Option<String>,
    },
    /// Show groups, routes and health.
    Status(Target),
    /// Remove every group of the app.
    Down(Target),
}

fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("`{s}` is not KEY=VALUE"))
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli).await {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    let state = match &cli.state_dir {
        Some(dir) => StateDir::new(dir)?,
        None => StateDir::default_location()?,
    };
    let binary = cli.proxy_bin.clone().unwrap_or_else(proxy_binary);
    let proxy = LocalProxy::process(&state, cli.listen, &binary).await?;
    let image = LocalImage::new(state.clone());
    let fleet = LocalFleet::new(state.clone(), image.clone());
    let shown = progress::Progress::stdout();
    let events = shown.sink(|e: &Event| {
        Some(match e {
            Event::StepStarted { step } => format!("- {step}"),
            Event::GroupLaunched { group, size } => format!("  launched {group} ({size})"),
            Event::Health {
                group,
                healthy,
                wanted,
            } => format!("  {group}: {healthy}/{wanted} healthy"),
            Event::TrafficShifted { routes } => format!("  routes {routes}"),
            Event::Baking { weight, duration } => {
                format!("  baking at {weight}% for {duration:?}")
            }
            Event::Ready {
                group,
                healthy,
                total,
                weight,
            } => format!("  router: {healthy}/{total} of {group} healthy before {weight}%"),
            Event::Watching { group, duration } => {
                format!("  watching {group} for {duration:?} after the switch")
            }
            Event::GroupDestroyed { group } => format!("  destroyed {group}"),
            Event::Reverting { reason, .. } => format!("  reverting: {reason}"),
            _ => return None,
        })
    });
    // the image, the fleet, the proxy's router and the machine's FileLock
    let mut engine = Engine::from_parts(fleet.parts(proxy.router())).with_events(events);
    let app_of = |t: &Target| App::new(&t.app, &t.environment);
    match cli.command {
        Command::Deploy(r) => {
            engine = engine.with_options(options(&r));
            let report = engine.deploy(&request(&r)?).await?;
            shown.clear();
            println!(
                "{} is live on http://{} (Host: {})",
                report.live,
                proxy.address(),
                host(&app_of(&r.target)?)
            );
        }
        Command::Prepare(r) => {
            engine = engine.with_options(options(&r));
            let prepared = engine.prepare(&request(&r)?).await?;
            shown.clear();
            println!(
                "{} is ready; promote it with `promote --group {}`",
                prepared.group.id, prepared.group.id
            );
        }
        Command::Promote { target, group } => {
            let report = engine
                .promote(
                    &app_of(&target)?,
                    &GroupId::new(group),
                    &Strategy::blue_green(),
                )
                .await?;
            shown.clear();
            println!("{} is live", report.live);
        }
        Command::Rollback { target, to } => {
            let app = app_of(&target)?;
            let report = match to {
                Some(image) => engine.rollback_to(&app, &ImageId::from(image)).await?,
                None => engine.rollback(&app).await?,
            };
            shown.clear();
            if report.from == report.to {
                println!("{} already serves that release", report.to);
            } else {
                println!("rolled back from {} to {}", report.from, report.to);
            }
        }
        Command::Status(target) => {
            let status = engine.status(&app_of(&target)?).await?;
            println!("routes {} on http://{}", status.routes, proxy.address());
            for g in &status.groups {
                println!(
                    "{} {:>3}% {}/{} healthy  image {}",
                    g.group.id,
                    g.weight,
                    g.healthy(),
                    g.instances.len(),
                    g.group.release.image
                );
                for i in &g.instances {
                    println!(
                        "    {} {:?} {:?}",
                        i.id,
                        i.address.as_deref().unwrap_or("-"),
                        i.health
                    );
                }
            }
        }
        Command::Down(target) => {
            let app = app_of(&target)?;
            let router = proxy.router();
            router.set_routes(&app, &Default::default()).await?;
            for g in fleet.groups(&app).await? {
                router.detach(&app, &g.id).await?;
                fleet.destroy(&app, &g.id).await?;
                println!("destroyed {}", g.id);
            }
            for i in image.images(&app).await? {
                image.remove(&app, &i.id).await?;
            }
        }
    }
    Ok(())
}

fn host(app: &App) -> String {
    bluegreen::proxy::default_host(app)
}

fn options(r: &Release) -> EngineOptions {
    EngineOptions::default().with_health_timeout(Duration::from_secs(r.health_timeout_secs))
}

fn request(r: &Release) -> Result<DeployRequest, bluegreen::Error> {
    let app = App::new(&r.target.app, &r.target.environment)?;
    let artifact = r.artifact.canonicalize().map_err(|e| {
        bluegreen::Error::invalid("artifact", format!("{}: {e}", r.artifact.display()))
    })?;
    let mut request = DeployRequest::new(app, ImageSource::Artifact(artifact)).size(r.size);
    for (k, v) in &r.env_vars {
        request = request.env(k, v);
    }
    for (k, v) in &r.settings {
        request = request.setting(k, v);
    }
    let mut strategy = if r.canary.is_empty() {
        Strategy::blue_green()
    } else {
        Strategy::canary(r.canary.iter().copied(), Duration::from_secs(r.bake_secs))
    };
    strategy = strategy.with_bake_after(Duration::from_secs(r.bake_after_secs));
    if let Some(rate) = r.max_error_rate {
        strategy = strategy.with_max_error_rate(rate);
    }
    Ok(request.strategy(strategy))
}
