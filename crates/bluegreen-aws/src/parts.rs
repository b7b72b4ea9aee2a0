//! The provider's parts as one value, with the account's lock.

use bluegreen_core::{Parts, Result};

use crate::asg_fleet::{AsgFleet, AsgFleetOptions};
use crate::config::AwsClients;
use crate::fleet::{Ec2Fleet, Ec2FleetOptions};
use crate::image::{AmiImage, AmiImageOptions};
use crate::lock::Ec2Lock;
use crate::router::{ElbRouter, ElbRouterOptions};

/// The EC2 provider's parts: an [`AmiImage`], an [`Ec2Fleet`], an [`ElbRouter`], and
/// an [`Ec2Lock`] in the router's VPC, all through `clients`. Engines built from them,
/// on any machine that reaches the account and region, exclude each other. Invalid
/// fleet options are [`Error::Invalid`](bluegreen_core::Error::Invalid), as from
/// [`Ec2Fleet::new`].
///
/// ```no_run
/// # async fn run() -> bluegreen_core::Result<()> {
/// use bluegreen_aws::{ec2_parts, AwsClients, AwsOptions, ElbRouterOptions};
/// use bluegreen_core::Engine;
/// let clients = AwsClients::load(&AwsOptions::default()).await;
/// let engine = Engine::from_parts(ec2_parts(
///     &clients,
///     Default::default(),
///     Default::default(),
///     ElbRouterOptions::new("arn:aws:elasticloadbalancing:...:listener/app/web/1/2", "vpc-1"),
/// )?);
/// # Ok(()) }
/// ```
pub fn ec2_parts(
    clients: &AwsClients,
    image: AmiImageOptions,
    fleet: Ec2FleetOptions,
    router: ElbRouterOptions,
) -> Result<Parts> {
    let lock = Ec2Lock::new(clients.clone()).in_vpc(router.vpc_id.clone());
    Ok(Parts::new(
        AmiImage::new(clients.clone(), image),
        Ec2Fleet::new(clients.clone(), fleet)?,
        ElbRouter::new(clients.clone(), router),
        lock,
    ))
}

/// The Auto Scaling provider's parts: an [`AmiImage`], an [`AsgFleet`], an
/// [`ElbRouter`], and an [`Ec2Lock`] in the router's VPC, all through `clients`.
/// Engines built from them, on any machine that reaches the account and region,
/// exclude each other. Invalid fleet options are [`Error::Invalid`](bluegreen_core::Error::Invalid),
/// as from [`AsgFleet::new`].
pub fn asg_parts(
    clients: &AwsClients,
    image: AmiImageOptions,
    fleet: AsgFleetOptions,
    router: ElbRouterOptions,
) -> Result<Parts> {
    let lock = Ec2Lock::new(clients.clone()).in_vpc(router.vpc_id.clone());
    Ok(Parts::new(
        AmiImage::new(clients.clone(), image),
        AsgFleet::new(clients.clone(), fleet)?,
        ElbRouter::new(clients.clone(), router),
        lock,
    ))
}
