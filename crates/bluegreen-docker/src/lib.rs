#![doc = include_str!("../README.md")]
#![deny(missing_docs)]
#![warn(unreachable_pub)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod build;
mod config;
mod error;
mod fleet;
mod image;
mod labels;
mod lock;
mod parts;
mod registry;
mod registry_api;
mod router;
mod settings;
mod swarm_fleet;
mod swarm_lock;
mod swarm_settings;
mod task;

pub use bluegreen_core::register::LOCK_LABEL;
pub use bluegreen_proxy::{EmbeddedProxy, ProxyRouter};
pub use bollard::{self, Docker};
pub use build::ROLE_LABEL;
pub use config::connect;
pub use fleet::{DockerFleet, DockerFleetOptions, INDEX_LABEL, RECORD_LABEL};
pub use image::{repository, DockerImage};
pub use lock::{DockerLock, LOCK_IMAGE};
pub use registry::{registry_credentials, RegistryImage};
pub use router::{ProxyContainer, ProxyContainerOptions, PROXY_DIR_LABEL, PROXY_LISTEN_LABEL};
pub use settings::SETTINGS;
pub use swarm_fleet::SwarmFleet;
pub use swarm_lock::SwarmLock;
pub use swarm_settings::SWARM_SETTINGS;
pub use task::{TASK_LABEL, TASK_OUTPUT_LINES};
