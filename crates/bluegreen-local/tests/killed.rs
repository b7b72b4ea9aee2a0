//! A deploying program killed (SIGKILL) at every event of a deployment, then the
//! deployment run again from a fresh program: it converges, the file lock is free,
//! and only the live group's processes run.
//!
//! The testkit's crash harness re-executes this test binary as the deployer and as
//! the rerun; every program of a case drives one `bluegreen-proxy` process and one
//! state directory.

mod support;

use bluegreen_testkit::crash::CrashHarness;
use support::killed::{Local, SIZE};

fn main() {
    CrashHarness::new(Local { task: false })
        .expect_leftovers(SIZE as usize)
        .run();
}
