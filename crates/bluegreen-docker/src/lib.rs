#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod client;
mod error;
mod fleet;
mod image;
mod probe;
mod settings;
mod task;

pub use bluegreen_proxy::EmbeddedProxy;
pub use bollard::{self, Docker};
pub use client::connect;
pub use fleet::{DockerFleet, DockerFleetOptions, INDEX_LABEL, RECORD_LABEL};
pub use image::{repository, DockerImage};
pub use settings::SETTINGS;
pub use task::{TASK_LABEL, TASK_OUTPUT_LINES};
