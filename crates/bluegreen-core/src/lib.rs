//! The core of bluegreen: the model, the [`Image`], [`Fleet`] and [`Router`] traits
//! that providers implement, and the blue/green [`Engine`] that drives them.
//!
//! Immutable infrastructure: never repair a running server. Build a new image,
//! launch a new group from it, test it alone, move the traffic, retire the old one,
//! and be able to go back in seconds.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), bluegreen_core::Error> {
//! use bluegreen_core::{App, DeployRequest, Engine, ImageSource};
//! use bluegreen_testkit::MemoryPlatform;
//!
//! let platform = MemoryPlatform::new();
//! let engine = Engine::new(platform.image(), platform.fleet(), platform.router());
//! let app = App::new("web", "production")?;
//! let report = engine
//!     .deploy(&DeployRequest::new(app.clone(), ImageSource::Reference("web:1".into())).size(2))
//!     .await?;
//! assert_eq!(report.live.as_str(), "web-production-v001");
//! let status = engine.status(&app).await?;
//! assert_eq!(status.live().unwrap().healthy(), 2);
//! # Ok(())
//! # }
//! ```
//!
//! Providers implement the three traits and run the testkit's conformance suite
//! from their own tests.
#![deny(missing_docs)]
#![warn(unreachable_pub)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod app;
mod capabilities;
mod check;
mod checked_router;
mod engine;
mod error;
mod event;
mod fleet;
mod group;
mod hook;
mod id;
mod image;
mod instance;
pub mod labels;
mod lock;
mod parts;
pub mod probe;
pub mod redact;
pub mod register;
mod release;
mod retry;
mod route;
mod router;
pub mod settings;
mod task;

/// The attribute every implementation of [`Image`], [`Fleet`], [`Router`],
/// [`Check`] and [`Lock`] needs: `#[bluegreen_core::async_trait]` on the `impl`
/// block (without it, rustc reports E0195 about lifetime parameters on a line
/// that looks identical to the trait's).
pub use async_trait::async_trait;

pub use app::{App, MAX_NAME_LEN};
pub use capabilities::{FleetCapabilities, ImageCapabilities, RouterCapabilities};
pub use check::{check_fn, Check, CheckTarget};
pub use checked_router::CheckedRouter;
pub use engine::{
    CanaryStep, DeployReport, DeployRequest, Engine, EngineOptions, GroupStatus, Paused, Prepared,
    RollbackReport, RollbackRequest, Status, Strategy, SwitchAll, MAX_APPS_TOGETHER,
};
pub use error::{BoxError, Error, ErrorKind, Result};
pub use event::{Event, EventContext, EventSink, Operation, Step};
pub use fleet::Fleet;
pub use group::{DeploymentId, Generation, Group, GroupId, HISTORY_LEN};
pub use hook::{hook_fn, Decision, Hook, HookContext, Stage};
pub use image::{Image, ImageId, ImageRef, ImageSource};
pub use instance::{Health, Instance, InstanceId};
pub use lock::{FencingToken, Lock, LockHolder, MemoryLock};
pub use parts::Parts;
pub use release::{Release, ReleaseId, MAX_SIZE};
pub use retry::{Retry, RetryOptions};
pub use route::RouteTable;
pub use router::{Attachment, Router, Serving};
pub use task::{ReleaseTask, TaskPhase, TaskState, TaskStatus, MAX_TASK_TIMEOUT};
