//! The zero-failed-requests check: constant HTTP load through a router's address
//! while a test deploys, rolls back and fails deployments, and not one failed
//! request.
//!
//! The load ([`HttpLoad`]) runs from [`ZeroDowntime::start`] to
//! [`UnderLoad::finish`], without a pause; each operation the test runs through
//! [`UnderLoad::phase`] gets the requests and versions seen while it ran (and for
//! a settling time after it). `finish` asserts that no request failed at any time,
//! that the load ran, and that every phase was answered; the report tells the test
//! which versions answered, phase by phase.
//!
//! ```no_run
//! # async fn run(engine: bluegreen_core::Engine, address: std::net::SocketAddr,
//! #     v2: bluegreen_core::DeployRequest, bad: bluegreen_core::DeployRequest,
//! #     app: bluegreen_core::App) {
//! use bluegreen_testkit::zero_downtime::ZeroDowntime;
//!
//! let mut load = ZeroDowntime::new(address, "web.production").start().await;
//! load.phase("deploy v2", engine.deploy(&v2)).await.unwrap();
//! load.phase("rollback", engine.rollback(&app)).await.unwrap();
//! let failed = load.phase("a failing deployment", engine.deploy(&bad)).await;
//! assert!(failed.unwrap_err().rolled_back());
//! let report = load.finish().await; // panics on any failed request
//! assert_eq!(report.phase("deploy v2").versions, ["1", "2"]);
//! assert_eq!(report.phase("a failing deployment").versions, ["1"]);
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use crate::http_load::{HttpLoad, LoadReport};

/// How to load the router: see the [module](self) docs.
#[derive(Clone, Debug)]
pub struct ZeroDowntime {
    address: SocketAddr,
    host: String,
    clients: usize,
    settle: Duration,
    min_requests: u64,
}

impl ZeroDowntime {
    /// A load of `GET /` with `Host: host` on the router's `address`: 8 clients, a
    /// settling time of 500 ms, at least 50 requests answered.
    pub fn new(address: SocketAddr, host: impl Into<String>) -> Self {
        ZeroDowntime {
            address,
            host: host.into(),
            clients: 8,
            settle: Duration::from_millis(500),
            min_requests: 50,
        }
    }

    /// Keep-alive clients looping in parallel.
    pub fn with_clients(mut self, clients: usize) -> Self {
        self.clients = clients.max(1);
        self
    }

    /// How long the load runs before the first phase, and after each one before it
    /// is counted (requests in flight end, the load meets the new routes).
    pub fn with_settle(mut self, settle: Duration) -> Self {
        self.settle = settle;
        self
    }

    /// The fewest successful requests the whole load must see.
    pub fn with_min_requests(mut self, min: u64) -> Self {
        self.min_requests = min;
        self
    }

    /// Starts the load and lets it settle.
    pub async fn start(&self) -> UnderLoad {
        let load = HttpLoad::start(self.address, &self.host, self.clients);
        tokio::time::sleep(self.settle).await;
        UnderLoad {
            options: self.clone(),
            warmup: load.take(),
            load,
            phases: Vec::new(),
        }
    }
}

/// A load running: see the [module](self) docs.
pub struct UnderLoad {
    options: ZeroDowntime,
    load: HttpLoad,
    warmup: LoadReport,
    phases: Vec<Phase>,
}

impl std::fmt::Debug for UnderLoad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnderLoad").finish_non_exhaustive()
    }
}

impl UnderLoad {
    /// Runs `operation` under the load, lets the load settle, and records what the
    /// load saw meanwhile as the phase `name`. Returns what `operation` returned.
    pub async fn phase<T>(&mut self, name: &str, operation: impl Future<Output = T>) -> T {
        let before = self.load.take();
        let out = operation.await;
        tokio::time::sleep(self.options.settle).await;
        let seen = self.load.take();
        self.phases.push(Phase {
            name: name.to_owned(),
            between: before,
            seen,
        });
        out
    }

    /// Stops the load and checks it.
    ///
    /// # Panics
    ///
    /// When a request failed at any time (the first few failures are shown), the
    /// whole load saw fewer successful requests than its minimum, or a phase had no
    /// successful request.
    pub async fn finish(self) -> ZeroDowntimeReport {
        let total = self.load.stop().await;
        let report = ZeroDowntimeReport {
            warmup: self.warmup,
            phases: self.phases,
            total,
        };
        println!("{report}");
        assert!(
            report.total.failed.is_empty(),
            "{} requests failed, first: {:?}",
            report.total.failed.len(),
            report.total.first_failures()
        );
        assert!(
            report.total.ok >= self.options.min_requests,
            "the load ran: {} requests answered, {} expected at least",
            report.total.ok,
            self.options.min_requests
        );
        for p in &report.phases {
            assert!(p.seen.ok > 0, "no request was answered during {}", p.name);
        }
        report
    }
}

/// What the load saw during one operation.
#[non_exhaustive]
#[derive(Clone, Debug)]
pub struct Phase {
    /// Its name.
    pub name: String,
    /// From the operation's start to the end of the settling time after it.
    pub seen: LoadReport,
    /// Between the previous phase (or the start) and this one.
    pub between: LoadReport,
}

/// What a [`ZeroDowntime`] load saw.
#[non_exhaustive]
#[derive(Clone, Debug)]
pub struct ZeroDowntimeReport {
    /// Before the first phase.
    pub warmup: LoadReport,
    /// Each phase, in order.
    pub phases: Vec<Phase>,
    /// Everything.
    pub total: LoadReport,
}

impl ZeroDowntimeReport {
    /// What the load saw during the phase `name`.
    ///
    /// # Panics
    ///
    /// When there is no such phase.
    pub fn phase(&self, name: &str) -> &LoadReport {
        &self
            .phases
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no phase {name}"))
            .seen
    }
}

impl fmt::Display for ZeroDowntimeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "zero downtime: {} requests, {} failed, versions {:?}",
            self.total.ok,
            self.total.failed.len(),
            self.total.versions
        )?;
        for p in &self.phases {
            write!(
                f,
                "\n  {}: {} requests, {} failed, versions {:?}",
                p.name,
                p.seen.ok,
                p.seen.failed.len(),
                p.seen.by_version
            )?;
        }
        Ok(())
    }
}
