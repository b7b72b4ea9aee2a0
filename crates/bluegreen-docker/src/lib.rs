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
mod settings;

pub use bluegreen_proxy::{EmbeddedProxy, ProxyRouter};
pub use bollard::{self, Docker};
pub use build::ROLE_LABEL;
pub use client::connect;
pub use fleet::{DockerFleet, DockerFleetOptions, INDEX_LABEL, RECORD_LABEL};
pub use image::{repository, DockerImage};
pub use lock::{DockerLock, LOCK_IMAGE, LOCK_LABEL};
pub use proxy_container::{
    ProxyContainer, ProxyContainerOptions, PROXY_DIR_LABEL, PROXY_LISTEN_LABEL,
};
pub use settings::SETTINGS;
