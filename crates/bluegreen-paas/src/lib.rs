#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod api;
mod app_fleet;
mod apps;
mod client;
mod domain_router;
mod error;
mod image;
mod marks;
mod release_mode;
mod task;
#[cfg(feature = "testing")]
pub mod testing;

pub use app_fleet::AppFleet;
pub use client::{ClientOptions, PlatformClient, Token, ACCEPT_V3, DEFAULT_BASE_URL};
pub use domain_router::{DnsHook, DomainRouter, NoDns};
pub use error::ApiError;
pub use image::SlugImage;
pub use marks::{var_for_label, Naming, RECORD_VAR, SETTINGS};
pub use release_mode::{ReleaseFleet, ReleaseRouter};
pub use task::TASK_VAR;
