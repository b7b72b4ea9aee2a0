//! In-memory bluegreen providers with fault injection and virtual time, and the
//! conformance suite that every provider, ours or a user's, runs from its own tests.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), bluegreen_core::Error> {
//! use std::time::Duration;
//! use bluegreen_core::{App, DeployRequest, Engine, ErrorKind, ImageSource};
//! use bluegreen_testkit::{Behaviour, MemoryPlatform};
//!
//! let platform = MemoryPlatform::new();
//! platform.set_boot_time(Duration::from_secs(20));
//! platform.set_behaviour("web:2", Behaviour::NeverHealthy);
//! let engine = Engine::new(platform.image(), platform.fleet(), platform.router());
//! let app = App::new("web", "production")?;
//!
//! engine.deploy(&DeployRequest::new(app.clone(), ImageSource::Reference("web:1".into()))).await?;
//! let failed = engine
//!     .deploy(&DeployRequest::new(app.clone(), ImageSource::Reference("web:2".into())))
//!     .await
//!     .unwrap_err();
//! assert_eq!(failed.kind(), ErrorKind::Timeout);
//! assert!(failed.rolled_back());
//! # Ok(())
//! # }
//! ```
//!
//! [`Faulty`] puts the same faults in front of any real provider.
//!
//! # Features
//!
//! - `http`: `http_load`, a bounded HTTP load, and
//!   `zero_downtime`, the zero-failed-requests check under
//!   deployments, rollbacks and failures (hyper).
//! - `scratch`: `scratch`, temporary directories removed even
//!   when they hold read-only files (tempfile).
//! - `crash`: `crash`, the killed-deployer harness (SIGKILL at
//!   every event, a rerun from a fresh process, convergence, leftovers and the lock
//!   checked); implies `scratch`.
//! - `binaries`: `binaries`, binaries of the workspace built once
//!   per test program, static ones too (escargot).
#![deny(missing_docs)]
#![warn(unreachable_pub)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "binaries")]
#[cfg_attr(docsrs, doc(cfg(feature = "binaries")))]
pub mod binaries;
pub mod conformance;
#[cfg(feature = "crash")]
#[cfg_attr(docsrs, doc(cfg(feature = "crash")))]
pub mod crash;
mod fault;
mod faulty;
mod fleet;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod http_load;
mod image;
mod look_alikes;
pub mod names;
mod platform;
mod router;
#[cfg(feature = "scratch")]
#[cfg_attr(docsrs, doc(cfg(feature = "scratch")))]
pub mod scratch;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod zero_downtime;

pub use fault::{Behaviour, Fault, Op, TaskBehaviour};
pub use faulty::Faulty;
pub use fleet::MemoryFleet;
pub use image::MemoryImage;
pub use look_alikes::MemoryLookAlikes;
pub use platform::MemoryPlatform;
pub use router::MemoryRouter;
