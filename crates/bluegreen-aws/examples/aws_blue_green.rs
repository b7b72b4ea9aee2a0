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

mod cli;

use std::time::Duration;

use bluegreen_aws::{
    AmiImage, AmiImageOptions, Ec2Fleet, Ec2FleetOptions, ElbRouter, ElbRouterOptions,
};
use bluegreen_core::{DeployRequest, Engine, EngineOptions, ImageSource};
use clap::Parser;

#[derive(Parser)]
#[command(
    name = "aws_blue_green",
    about = "Blue/green deployments of AMIs behind an Application Load Balancer"
)]
struct Cli {
    #[command(flatten)]
    common: cli::Common,
    /// The base AMI to bake from.
    #[arg(long)]
    base_ami: String,
    /// The provisioning script (a file), run as user data on the builder; it must end
    /// with `shutdown -h now` (the image is taken from the stopped builder).
    #[arg(long)]
    script: std::path::PathBuf,
    /// The instance type.
    #[arg(long, default_value = "t3.micro")]
    instance_type: String,
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
    let script = std::fs::read_to_string(&cli.script)
        .map_err(|e| format!("--script {}: {e}", cli.script.display()))?;
    let clients = common.clients().await;
    let image = AmiImage::new(
        clients.clone(),
        AmiImageOptions::default().with_builder_subnet(common.subnets[0].clone()),
    );
    let fleet = Ec2Fleet::new(
        clients.clone(),
        Ec2FleetOptions::default()
            .with_subnets(common.subnets.clone())
            .with_security_groups(common.security_groups.clone())
            .with_instance_type(cli.instance_type.clone())
            .with_port(common.port),
    )?;
    let router = ElbRouter::new(
        clients.clone(),
        ElbRouterOptions::new(common.listener.clone(), common.vpc.clone()).with_port(common.port),
    );
    let engine = Engine::new(image, fleet, router)
        .with_lock(common.lock(&clients))
        .with_options(
            EngineOptions::default()
                .with_health_timeout(Duration::from_secs(900))
                .with_drain(Duration::from_secs(30)),
        )
        .with_events(cli::progress());
    let request = common.shape(DeployRequest::new(
        app,
        ImageSource::Bake {
            base: cli.base_ami.clone(),
            script,
        },
    ));
    let report = engine.deploy(&request).await?;
    println!(
        "{} is live ({} calls to AWS)",
        report.live,
        clients.call_counts().values().sum::<u64>()
    );
    Ok(())
}
