#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod build;
mod client;
mod error;
mod fleet;
mod image;
mod lock;
mod probe;
mod proxy_container;
mod register;
mod registry;
mod registry_api;
mod settings;
mod swarm_fleet;
mod swarm_lock;
mod swarm_settings;
mod task;

pub use bluegreen_proxy::{EmbeddedProxy, ProxyRouter};
pub use bollard::{self, Docker};
pub use build::ROLE_LABEL;
pub use client::connect;
pub use fleet::{DockerFleet, DockerFleetOptions, INDEX_LABEL, RECORD_LABEL};
pub use image::{repository, DockerImage};
pub use lock::{DockerLock, LOCK_IMAGE};
pub use proxy_container::{
    ProxyContainer, ProxyContainerOptions, PROXY_DIR_LABEL, PROXY_LISTEN_LABEL,
};
pub use register::LOCK_LABEL;
pub use registry::{registry_credentials, RegistryImage};
pub use settings::SETTINGS;
pub use swarm_fleet::SwarmFleet;
pub use swarm_lock::SwarmLock;
pub use swarm_settings::SWARM_SETTINGS;
pub use task::{TASK_LABEL, TASK_OUTPUT_LINES};
