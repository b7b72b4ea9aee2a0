//! `aws_asg_blue_green`: deploy an AMI as a new Auto Scaling group behind an
//! Application Load Balancer, switch the listener to it, keep the previous group
//! warm for a rollback; or roll back to that group.
//!
//! ```sh
//! cargo run -p bluegreen-aws --example aws_asg_blue_green -- \
//!     --region eu-west-1 --app web --env production \
//!     --ami ami-0123456789abcdef0 \
//!     --subnets subnet-aaa,subnet-bbb --vpc vpc-123 --security-groups sg-123 \
//!     --listener arn:aws:elasticloadbalancing:...:listener/app/web/... \
//!     --instance-types m7i.large,m6i.large --size 3
//! cargo run -p bluegreen-aws --example aws_asg_blue_green -- ... --rollback
//! ```
//!
//! `--endpoint http://127.0.0.1:5000` (or `AWS_ENDPOINT_URL`) points it at an emulator
//! such as `moto_server`.

use std::time::Duration;

use bluegreen_aws::{
    AmiImage, AmiImageOptions, AsgFleet, AsgFleetOptions, AwsClients, AwsOptions, ElbRouter,
    ElbRouterOptions, TargetRegistration,
};
use bluegreen_core::{
    App, DeployRequest, Engine, EngineOptions, Event, EventSink, ImageId, ImageSource, Strategy,
};
use clap::Parser;

#[derive(Parser)]
#[command(
    name = "aws_asg_blue_green",
    about = "Blue/green deployments of AMIs as Auto Scaling groups behind an Application Load Balancer"
)]
struct Cli {
    /// The region.
    #[arg(long, env = "AWS_REGION")]
    region: Option<String>,
    /// An endpoint override, for emulators.
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    endpoint: Option<String>,
    /// The app's name.
    #[arg(long)]
    app: String,
    /// The environment.
    #[arg(long = "env", default_value = "production")]
    environment: String,
    /// The AMI to deploy (an id).
    #[arg(long, required_unless_present = "rollback")]
    ami: Option<String>,
    /// Roll back to the previous (warm) group instead of deploying.
    #[arg(long)]
    rollback: bool,
    /// The subnets each group spans, comma-separated (one per availability zone).
    #[arg(long, value_delimiter = ',', required = true)]
    subnets: Vec<String>,
    /// Security groups, comma-separated.
    #[arg(long, value_delimiter = ',')]
    security_groups: Vec<String>,
    /// An instance profile (name).
    #[arg(long)]
    instance_profile: Option<String>,
    /// The VPC of the target groups.
    #[arg(long)]
    vpc: String,
    /// The listener whose default action carries the traffic.
    #[arg(long)]
    listener: String,
    /// Instance types, comma-separated, by preference (several: a mixed instances
    /// policy).
    #[arg(long, value_delimiter = ',', default_value = "t3.micro")]
    instance_types: Vec<String>,
    /// How many instances a group has.
    #[arg(long, default_value_t = 2)]
    size: u32,
    /// The port instances serve on (and the target groups' port).
    #[arg(long, default_value_t = 80)]
    port: u16,
    /// The health check grace period, in seconds.
    #[arg(long, default_value_t = 300)]
    grace_seconds: u64,
    /// Canary weights, e.g. `10,50` (default: one switch).
    #[arg(long, value_delimiter = ',')]
    canary: Vec<u8>,
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
    let app = App::new(&cli.app, &cli.environment)?;
    let mut options = AwsOptions::default();
    options.region = cli.region.clone();
    options.endpoint_url = cli.endpoint.clone();
    let clients = AwsClients::load(&options).await;
    let image = AmiImage::new(clients.clone(), AmiImageOptions::default());
    let mut fleet_options = AsgFleetOptions::new(cli.subnets.clone())
        .with_security_groups(cli.security_groups.clone())
        .with_port(cli.port)
        .with_health_check_grace_period(Duration::from_secs(cli.grace_seconds));
    if let Some(profile) = &cli.instance_profile {
        fleet_options = fleet_options.with_instance_profile(profile.clone());
    }
    let fleet = AsgFleet::new(clients.clone(), fleet_options)?;
    let router = ElbRouter::new(
        clients.clone(),
        ElbRouterOptions::new(cli.listener.clone(), cli.vpc.clone())
            .with_port(cli.port)
            .with_registration(TargetRegistration::AutoScalingGroup),
    );
    let engine = Engine::new(image, fleet, router)
        .with_options(
            EngineOptions::default()
                .with_health_timeout(Duration::from_secs(900))
                .with_drain(Duration::from_secs(30))
                .with_keep(1),
        )
        .with_events(EventSink::new(|e: &Event| match e {
            Event::StepStarted { step } => println!("- {step}"),
            Event::GroupLaunched { group, size } => {
                println!("  created Auto Scaling group {group} ({size} instances)")
            }
            Event::Health {
                group,
                healthy,
                wanted,
            } => println!("  {group}: {healthy}/{wanted} in service and passing checks"),
            Event::TrafficShifted { routes } => println!("  listener {routes}"),
            Event::GroupDestroyed { group } => println!("  deleted {group}"),
            Event::Reverting { reason, .. } => println!("  reverting: {reason}"),
            _ => {}
        }));
    if cli.rollback {
        let report = engine.rollback(&app).await?;
        println!("rolled back from {} to {}", report.from, report.to);
        return Ok(());
    }
    let ami = cli.ami.clone().ok_or("--ami is required to deploy")?;
    let mut request = DeployRequest::new(app, ImageSource::Id(ImageId::new(ami))).size(cli.size);
    if cli.instance_types.len() > 1 {
        request = request.setting("instance_types", cli.instance_types.join(","));
    } else if let Some(t) = cli.instance_types.first() {
        request = request.setting("instance_type", t.clone());
    }
    if !cli.canary.is_empty() {
        request = request.strategy(Strategy::canary(
            cli.canary.iter().copied(),
            Duration::from_secs(120),
        ));
    }
    let report = engine.deploy(&request).await?;
    println!(
        "{} is live, {:?} kept warm ({} calls to AWS)",
        report.live,
        report.kept_warm,
        clients.call_counts().values().sum::<u64>()
    );
    Ok(())
}
