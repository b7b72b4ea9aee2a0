//! bluegreen: immutable infrastructure deployments, embeddable in your own Rust tools.
//!
//! Never repair a running server: build a new image, launch a new group from it,
//! test it alone, move the traffic, retire the old one, and be able to go back in
//! seconds. One [`Engine`] runs the same algorithm on every platform; providers plug
//! the platform in through three small traits, [`Image`], [`Fleet`] and [`Router`].
//!
//! This crate re-exports the core and, behind features, the providers:
//!
//! | feature | what |
//! | --- | --- |
//! | `local` (default) | processes on this machine behind the bluegreen proxy (`bluegreen::local`, `bluegreen::proxy`) |
//! | `docker` | containers on a Docker host behind the proxy (`bluegreen::docker`) |
//! | `aws` | AMIs, EC2 instances and Elastic Load Balancing v2 (`bluegreen::aws`) |
//! | `paas` | the Heroku Platform API and platforms that speak it (`bluegreen::paas`) |
//! | `prometheus` | an analysis check that evaluates PromQL on a Prometheus server (`bluegreen::prometheus`) |
//! | `testkit` | in-memory providers with fault injection, and the conformance suite (`bluegreen::testkit`) |
//!
//! ```
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), bluegreen::Error> {
//! use bluegreen::{App, DeployRequest, Engine, ImageSource, Strategy};
//! use bluegreen_testkit::MemoryPlatform;
//! use std::time::Duration;
//!
//! let platform = MemoryPlatform::new();
//! let engine = Engine::new(platform.image(), platform.fleet(), platform.router());
//! let app = App::new("web", "production")?;
//! engine.deploy(&DeployRequest::new(app.clone(), ImageSource::Reference("web:1".into())).size(3)).await?;
//! let canary = DeployRequest::new(app.clone(), ImageSource::Reference("web:2".into()))
//!     .size(3)
//!     .strategy(Strategy::canary([10, 50], Duration::from_secs(60)));
//! let report = engine.deploy(&canary).await?;
//! assert_eq!(report.live.as_str(), "web-production-v002");
//!
//! // back to version 1's image, by name: running it again changes nothing
//! let status = engine.status(&app).await?;
//! let v1 = &status.groups.iter().find(|g| g.weight == 0).unwrap().group.release.image;
//! assert_eq!(engine.rollback_to(&app, v1).await?.to.as_str(), "web-production-v001");
//! assert_eq!(engine.rollback_to(&app, v1).await?.to.as_str(), "web-production-v001");
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]
#![warn(unreachable_pub)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub use bluegreen_core::*;

/// Processes on this machine behind the bluegreen proxy.
#[cfg(feature = "local")]
#[cfg_attr(docsrs, doc(cfg(feature = "local")))]
pub use bluegreen_local as local;

/// Ready-made lifecycle hooks: a local command with `BLUEGREEN_*` variables and a
/// signed HTTP POST.
#[cfg(feature = "local")]
#[cfg_attr(docsrs, doc(cfg(feature = "local")))]
pub use bluegreen_local::{CommandHook, WebhookHook};

/// The HTTP router data plane and its `Router`.
#[cfg(feature = "local")]
#[cfg_attr(docsrs, doc(cfg(feature = "local")))]
pub use bluegreen_proxy as proxy;

/// Containers on a Docker host.
#[cfg(feature = "docker")]
#[cfg_attr(docsrs, doc(cfg(feature = "docker")))]
pub use bluegreen_docker as docker;

/// AMIs, EC2 instances and Elastic Load Balancing v2.
#[cfg(feature = "aws")]
#[cfg_attr(docsrs, doc(cfg(feature = "aws")))]
pub use bluegreen_aws as aws;

/// The Heroku Platform API.
#[cfg(feature = "paas")]
#[cfg_attr(docsrs, doc(cfg(feature = "paas")))]
pub use bluegreen_paas as paas;

/// An analysis check that evaluates a PromQL expression on a Prometheus server.
#[cfg(feature = "prometheus")]
#[cfg_attr(docsrs, doc(cfg(feature = "prometheus")))]
pub use bluegreen_prometheus as prometheus;

/// In-memory providers and the conformance suite.
#[cfg(feature = "testkit")]
#[cfg_attr(docsrs, doc(cfg(feature = "testkit")))]
pub use bluegreen_testkit as testkit;
