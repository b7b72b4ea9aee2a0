#![doc = include_str!("../README.md")]
#![deny(missing_docs)]
#![warn(unreachable_pub)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod api;
mod apps;
mod client;
mod config;
mod error;
mod fleet;
mod image;
mod labels;
mod lock;
mod naming;
mod parts;
mod release_fleet;
mod release_router;
mod router;
mod settings;
mod task;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;

pub use client::PlatformClient;
pub use config::{ClientOptions, Token, ACCEPT_V3, DEFAULT_BASE_URL};
pub use error::ApiError;
pub use fleet::AppFleet;
pub use image::SlugImage;
pub use labels::{var_for_label, RECORD_VAR};
pub use lock::{PlatformLock, WRITE_WINDOW};
pub use naming::Naming;
pub use release_fleet::ReleaseFleet;
pub use release_router::ReleaseRouter;
pub use router::{DnsHook, DomainRouter, NoDns};
pub use settings::SETTINGS;
pub use task::TASK_VAR;
