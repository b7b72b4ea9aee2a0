//! `aws_asg_blue_green`: deploy an AMI as a new Auto Scaling group behind an
//! Application Load Balancer, switch the listener to it, keep the previous group
//! warm for a rollback (scaled in to `--warm-size` instances when given); or roll
//! back to that group. The deployment holds the app's `Ec2Lock` (a security group
//! in `--vpc`), so runs from several machines against one account and region
//! exclude each other.
//!
//! ```sh
//! cargo run -p bluegreen-aws --example aws_asg_blue_green -- \
//!     --region eu-west-1 --app web --env production \
//!     --ami ami-0123456789abcdef0 \
//!     --subnets subnet-aaa,subnet-bbb --vpc vpc-123 --security-groups sg-123 \
//!     --listener arn:aws:elasticloadbalancing:...:listener/app/web/... \
//!     --instance-types m7i.large,m6i.large --size 3 --warm-size 1
//! cargo run -p bluegreen-aws --example aws_asg_blue_green -- ... --rollback
//! ```
//!
//! `--endpoint http://127.0.0.1:5000` (or `AWS_ENDPOINT_URL`) points it at an emulator
//! such as `moto_server`.

mod cli;

use std::time::Duration;

use bluegreen_aws::{
    AmiImage, AmiImageOptions, AsgFleet, AsgFleetOptions, ElbRouter, ElbRouterOptions,
    TargetRegistration,
};
use bluegreen_core::{DeployRequest, Engine, EngineOptions, ImageId, ImageSource};
use clap::Parser;

#[derive(Parser)]
#[command(
    name = "aws_asg_blue_green",
    about = "Blue/green deployments of AMIs as Auto Scaling groups behind an Application Load Balancer"
)]
struct Cli {
    #[command(flatten)]
    common: cli::Common,
    /// The AMI to deploy (an id).
    #[arg(long, required_unless_present = "rollback")]
    ami: Option<String>,
    /// Roll back to the previous (warm) group instead of deploying.
    #[arg(long)]
    rollback: bool,
    /// An instance profile (name).
    #[arg(long)]
    instance_profile: Option<String>,
    /// Instance types, comma-separated, by preference (several: a mixed instances
    /// policy).
    #[arg(long, value_delimiter = ',', default_value = "t3.micro")]
    instance_types: Vec<String>,
    /// The health check grace period, in seconds.
    #[arg(long, default_value_t = 300)]
    grace_seconds: u64,
    /// Scale the warm group in to this many instances after the switch (a rollback
    /// scales it back and waits for health first). Default: kept at full size.
    #[arg(long)]
    warm_size: Option<u32>,
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
    let common = &cli.common;
    let app = common.app()?;
    let clients = common.clients().await;
    let image = AmiImage::new(clients.clone(), AmiImageOptions::default());
    let mut fleet_options = AsgFleetOptions::new(common.subnets.clone())
        .with_security_groups(common.security_groups.clone())
        .with_port(common.port)
        .with_health_check_grace_period(Duration::from_secs(cli.grace_seconds));
    if let Some(profile) = &cli.instance_profile {
        fleet_options = fleet_options.with_instance_profile(profile.clone());
    }
    let fleet = AsgFleet::new(clients.clone(), fleet_options)?;
    let router = ElbRouter::new(
        clients.clone(),
        ElbRouterOptions::new(common.listener.clone(), common.vpc.clone())
            .with_port(common.port)
            .with_registration(TargetRegistration::AutoScalingGroup),
    );
    let engine = Engine::new(image, fleet, router)
        .with_lock(common.lock(&clients))
        .with_options(
            EngineOptions::default()
                .with_health_timeout(Duration::from_secs(900))
                .with_drain(Duration::from_secs(30))
                .with_keep(1)
                .with_warm_size(cli.warm_size),
        )
        .with_events(cli::progress());
    if cli.rollback {
        let report = engine.rollback(&app).await?;
        println!("rolled back from {} to {}", report.from, report.to);
        return Ok(());
    }
    let ami = cli.ami.clone().ok_or("--ami is required to deploy")?;
    let mut request = common.shape(DeployRequest::new(app, ImageSource::Id(ImageId::new(ami))));
    if cli.instance_types.len() > 1 {
        request = request.setting("instance_types", cli.instance_types.join(","));
    } else if let Some(t) = cli.instance_types.first() {
        request = request.setting("instance_type", t.clone());
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
