//! The AWS bluegreen provider: bake an AMI, launch EC2 instances from it, move the
//! Application Load Balancer's listener, terminate the old instances.
//!
//! - [`AmiImage`]: AMIs by id, name or tags, or baked from a base AMI and a script.
//! - [`Ec2Fleet`]: groups of EC2 instances, tagged, spread across subnets, batched.
//! - [`AsgFleet`]: groups as EC2 Auto Scaling groups, one launch template each; with
//!   [`ElbRouter`] in [`TargetRegistration::AutoScalingGroup`] mode, the Auto Scaling
//!   group registers its own instances in its target group.
//! - [`ElbRouter`]: a target group per group; the listener's default action is the
//!   route table, weighted for canary steps.
//! - [`Ec2Lock`]: the app's deployment lock, shared by every machine that deploys it
//!   (a security group created atomically by name, with a lease and a fencing token
//!   in its tags).
//!
//! All of them share one [`AwsClients`], loaded from the standard AWS configuration
//! chain with an optional endpoint override (for emulators). The SDK's own retries are
//! off: the engine's retry layer retries throttling and transient errors, once.

#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod asg_fleet;
mod calls;
mod checks;
mod config;
mod error;
mod fleet;
mod image;
mod labels;
mod lock;
mod parts;
mod router;
mod settings;
mod user_data;

pub use asg_fleet::{AsgFleet, AsgFleetOptions};
pub use config::{AwsClients, AwsOptions};
pub use fleet::{Ec2Fleet, Ec2FleetOptions, BATCH};
pub use image::{AmiImage, AmiImageOptions};
pub use lock::{Ec2Lock, EXPIRES_TAG, HOLDER_TAG, TOKEN_TAG};
pub use parts::{asg_parts, ec2_parts};
pub use router::{target_group_name, ElbRouter, ElbRouterOptions, TargetRegistration};
pub use settings::{ASG_SETTINGS, SETTINGS};
