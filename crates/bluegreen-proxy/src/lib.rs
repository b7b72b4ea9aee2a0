#![doc = include_str!("../README.md")]
#![deny(missing_docs)]
#![warn(unreachable_pub)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod admin;
mod backend;
mod body;
mod conn;
mod drain;
mod embedded;
mod forward;
mod h1;
mod h1_server;
mod metrics;
mod options;
pub mod pin;
mod pool;
mod preview;
mod router;
mod server;
mod slice;
mod stall;
mod state;
mod stats;
mod upstream;

pub use admin::{AdminAddr, AdminListener, AdminToken};
pub use backend::{BackendHealth, BackendSpec};
pub use embedded::EmbeddedProxy;
pub use forward::{GROUP_COOKIE, GROUP_HEADER, PREVIEW_HEADER};
pub use options::{HealthCheckOptions, IpNetwork, ProxyOptions};
pub use pin::{KEPT_GENERATIONS, ROUTE_HEADER};
pub use router::{default_host, ProxyRouter};
pub use server::TlsConfig;
pub use state::{AppReport, BackendReport, GroupReport, Proxy};
pub use stats::StatsSnapshot;
