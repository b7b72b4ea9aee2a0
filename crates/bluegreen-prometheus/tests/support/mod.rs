//! What the test programs of this crate share.
#![allow(dead_code)]

use std::path::PathBuf;

/// The Prometheus binary: `BLUEGREEN_PROMETHEUS`, else `prometheus` on the
/// `PATH`. `None` (the test then passes, saying so) without one, except with
/// `CI=true`, where a missing Prometheus fails the test.
pub fn prometheus_binary() -> Option<PathBuf> {
    bluegreen_testkit::binaries::installed(
        "BLUEGREEN_PROMETHEUS",
        "prometheus",
        "scripts/services installs Debian's prometheus",
    )
}

/// A port on loopback that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
