#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod client;
mod error;
mod fleet;
mod image;
mod probe;
mod registry;
mod registry_api;
mod settings;
mod swarm_fleet;
mod swarm_settings;

pub use bluegreen_proxy::EmbeddedProxy;
pub use bollard::{self, Docker};
pub use client::connect;
pub use fleet::{DockerFleet, DockerFleetOptions, INDEX_LABEL, RECORD_LABEL};
pub use image::{repository, DockerImage};
pub use registry::{registry_credentials, RegistryImage};
pub use settings::SETTINGS;
pub use swarm_fleet::SwarmFleet;
pub use swarm_settings::SWARM_SETTINGS;
