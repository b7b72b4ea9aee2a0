//! What the AWS examples share: the arguments every one takes (where AWS is, the
//! app, the network, the listener, the size and the strategy), the clients, the
//! app's `Ec2Lock`, and a progress printer.

use std::sync::Arc;
use std::time::Duration;

use bluegreen_aws::{AwsClients, AwsOptions, Ec2Lock};
use bluegreen_core::{App, DeployRequest, Event, EventSink, Strategy};

/// The arguments both examples take.
#[derive(clap::Args)]
pub struct Common {
    /// The region.
    #[arg(long, env = "AWS_REGION")]
    pub region: Option<String>,
    /// An endpoint override, for emulators such as `moto_server`.
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub endpoint: Option<String>,
    /// The app's name.
    #[arg(long)]
    pub app: String,
    /// The environment.
    #[arg(long = "env", default_value = "production")]
    pub environment: String,
    /// Subnets, comma-separated (one per availability zone).
    #[arg(long, value_delimiter = ',', required = true)]
    pub subnets: Vec<String>,
    /// Security groups, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub security_groups: Vec<String>,
    /// The VPC of the target groups, which also holds the deployment lock's group.
    #[arg(long)]
    pub vpc: String,
    /// The listener whose default action carries the traffic.
    #[arg(long)]
    pub listener: String,
    /// How many instances a group has.
    #[arg(long, default_value_t = 2)]
    pub size: u32,
    /// The port instances serve on (and the target groups' port).
    #[arg(long, default_value_t = 80)]
    pub port: u16,
    /// Canary weights, e.g. `10,50` (default: one switch).
    #[arg(long, value_delimiter = ',')]
    pub canary: Vec<u8>,
}

impl Common {
    /// The app, checked.
    pub fn app(&self) -> Result<App, bluegreen_core::Error> {
        App::new(&self.app, &self.environment)
    }

    /// The clients, from the standard configuration chain and these arguments.
    pub async fn clients(&self) -> AwsClients {
        let mut options = AwsOptions::default();
        options.region = self.region.clone();
        options.endpoint_url = self.endpoint.clone();
        AwsClients::load(&options).await
    }

    /// The cross-machine lock: every machine deploying this app into the account
    /// and region takes the same one (the engine's default excludes one process).
    pub fn lock(&self, clients: &AwsClients) -> Arc<Ec2Lock> {
        Arc::new(Ec2Lock::new(clients.clone()).in_vpc(self.vpc.clone()))
    }

    /// The request's size and strategy.
    pub fn shape(&self, request: DeployRequest) -> DeployRequest {
        let request = request.size(self.size);
        if self.canary.is_empty() {
            return request;
        }
        request.strategy(Strategy::canary(
            self.canary.iter().copied(),
            Duration::from_secs(120),
        ))
    }
}

/// Prints the engine's progress, one line an event.
pub fn progress() -> EventSink {
    EventSink::new(|e: &Event| match e {
        Event::StepStarted { .. }
        | Event::BuildOutput { .. }
        | Event::GroupLaunched { .. }
        | Event::Health { .. }
        | Event::TrafficShifted { .. }
        | Event::GroupScaledIn { .. }
        | Event::GroupScaledOut { .. }
        | Event::GroupDestroyed { .. }
        | Event::Reverting { .. } => println!("  {e}"),
        _ => {}
    })
}
