//! The local bluegreen provider: processes on this machine behind the bluegreen
//! proxy. It needs nothing installed, and it serves for real on a single server
//! without Docker.
//!
//! - [`LocalImage`]: an executable or a directory, copied into a content-addressed,
//!   read-only store (`sha256:<hex>`).
//! - [`LocalFleet`]: each instance a process with its own port and the release's
//!   environment; processes outlive the deploying program and are found again from
//!   the [`StateDir`].
//! - [`LocalProxy`]: the bluegreen proxy, embedded or as its own process, and its
//!   `ProxyRouter`.
//! - [`FileLock`]: the deployment lock shared by every program on this machine.
//! - [`LocalFleet::parts`]: the image, the fleet, a router and the [`FileLock`] as
//!   one value for [`Engine::from_parts`](bluegreen_core::Engine::from_parts).
//! - [`CommandHook`] and [`WebhookHook`]: ready-made lifecycle hooks, a local
//!   command with `BLUEGREEN_*` variables and a signed HTTP POST.
//!
//! ```no_run
//! # async fn run() -> Result<(), bluegreen_core::Error> {
//! use bluegreen_core::{App, DeployRequest, Engine, ImageSource};
//! use bluegreen_local::{LocalFleet, LocalImage, LocalProxy, StateDir};
//!
//! let state = StateDir::default_location()?;
//! let fleet = LocalFleet::new(state.clone(), LocalImage::new(state));
//! let proxy = LocalProxy::embedded("127.0.0.1:8080".parse().unwrap(), Default::default()).await?;
//! // the image, the fleet, the proxy's router and the machine's FileLock
//! let engine = Engine::from_parts(fleet.parts(proxy.router()));
//! let app = App::new("web", "production")?;
//! engine
//!     .deploy(&DeployRequest::new(app, ImageSource::Artifact("target/release/web".into())).size(3))
//!     .await?;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]
#![warn(unreachable_pub)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod config;
mod error;
mod fleet;
mod hooks;
mod image;
mod labels;
mod lock;
mod parts;
mod process;
mod program;
mod router;
mod settings;
mod task;

pub use config::StateDir;
pub use fleet::LocalFleet;
pub use hooks::{
    hook_env, signature, CommandHook, WebhookBody, WebhookHook, PAUSE_EXIT_CODE, SIGNATURE_HEADER,
};
pub use image::LocalImage;
pub use lock::FileLock;
pub use router::{proxy_binary, LocalProxy};
pub use settings::SETTINGS;
pub use task::TASK_OUTPUT_LINES;
