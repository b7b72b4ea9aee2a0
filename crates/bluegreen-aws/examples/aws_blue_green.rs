//! `aws_blue_green`: bake an AMI from a base AMI and a script, launch instances from
//! it, move the load balancer's listener, terminate the old instances. The deployment
//! holds the app's `Ec2Lock` (a security group in `--vpc`), so runs from several
//! machines against one account and region exclude each other.
//!
//! ```sh
//! cargo run -p bluegreen-aws --example aws_blue_green -- \
//!     --region eu-west-1 --app web --env production \
//!     --base-ami ami-0123456789abcdef0 --script provision.sh \
//!     --subnets subnet-aaa,subnet-bbb --vpc vpc-123 \
//!     --listener arn:aws:elasticloadbalancing:...:listener/app/web/... \
//!     --instance-type t3.small --size 3
//! ```
//!
//! `--endpoint http://127.0.0.1:5000` (or `AWS_ENDPOINT_URL`) points it at an emulator.

use std::sync::Arc;
use std::time::Duration;

use bluegreen_aws::{
    AmiImage, AmiImageOptions, AwsClients, AwsOptions, Ec2Fleet, Ec2FleetOptions, Ec2Lock,
    ElbRouter, ElbRouterOptions,
};
use bluegreen_core::{
    App, DeployRequest, Engine, EngineOptions, Event, EventSink, ImageSource, Strategy,
};
use clap::Parser;

#[derive(Parser)]
#[command(
    name = "aws_blue_green",
    about = "Blue/green deployments of AMIs behind an Application Load Balancer"
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
    /// The base AMI to bake from.
    #[arg(long)]
    base_ami: String,
    /// The provisioning script (a file), run as user data on the builder; it must end
    /// with `shutdown -h now` (the image is taken from the stopped builder).
    #[arg(long)]
    script: std::path::PathBuf,
    /// Subnets to spread instances across, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    subnets: Vec<String>,
    /// Security groups, comma-separated.
    #[arg(long, value_delimiter = ',')]
    security_groups: Vec<String>,
    /// The VPC of the target groups, which also holds the deployment lock's group.
    #[arg(long)]
    vpc: String,
    /// The listener whose default action carries the traffic.
    #[arg(long)]
    listener: String,
    /// The instance type.
    #[arg(long, default_value = "t3.micro")]
    instance_type: String,
    /// How many instances.
    #[arg(long, default_value_t = 2)]
    size: u32,
    /// The port instances serve on.
    #[arg(long, default_value_t = 80)]
    port: u16,
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
    let script = std::fs::read_to_string(&cli.script)
        .map_err(|e| format!("--script {}: {e}", cli.script.display()))?;
    let mut options = AwsOptions::default();
    options.region = cli.region.clone();
    options.endpoint_url = cli.endpoint.clone();
    let clients = AwsClients::load(&options).await;
    let image = AmiImage::new(
        clients.clone(),
        AmiImageOptions::default().with_builder_subnet(cli.subnets[0].clone()),
    );
    let fleet = Ec2Fleet::new(
        clients.clone(),
        Ec2FleetOptions::default()
            .with_subnets(cli.subnets.clone())
            .with_security_groups(cli.security_groups.clone())
            .with_instance_type(cli.instance_type.clone())
            .with_port(cli.port),
    );
    let router = ElbRouter::new(
        clients.clone(),
        ElbRouterOptions::new(cli.listener.clone(), cli.vpc.clone()).with_port(cli.port),
    );
    // the cross-machine lock: every machine deploying this app into the account and
    // region takes the same one (the default lock only excludes this process)
    let lock = Arc::new(Ec2Lock::new(clients.clone()).in_vpc(cli.vpc.clone()));
    let engine = Engine::new(image, fleet, router)
        .with_lock(lock)
        .with_options(
            EngineOptions::default()
                .with_health_timeout(Duration::from_secs(900))
                .with_drain(Duration::from_secs(30)),
        )
        .with_events(EventSink::new(|e: &Event| match e {
            Event::StepStarted { step } => println!("- {step}"),
            Event::BuildOutput { line } => println!("  {line}"),
            Event::GroupLaunched { group, size } => {
                println!("  launched {group} ({size} instances)")
            }
            Event::Health {
                group,
                healthy,
                wanted,
            } => println!("  {group}: {healthy}/{wanted} passing status checks"),
            Event::TrafficShifted { routes } => println!("  listener {routes}"),
            Event::GroupDestroyed { group } => println!("  terminated {group}"),
            Event::Reverting { reason, .. } => println!("  reverting: {reason}"),
            _ => {}
        }));
    let mut request = DeployRequest::new(
        app,
        ImageSource::Bake {
            base: cli.base_ami.clone(),
            script,
        },
    )
    .size(cli.size);
    if !cli.canary.is_empty() {
        request = request.strategy(Strategy::canary(
            cli.canary.iter().copied(),
            Duration::from_secs(120),
        ));
    }
    let report = engine.deploy(&request).await?;
    println!(
        "{} is live ({} calls to AWS)",
        report.live,
        clients.call_counts().values().sum::<u64>()
    );
    Ok(())
}
