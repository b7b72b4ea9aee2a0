//! A deploying program killed (SIGKILL) at every event of a deployment whose
//! release has a migration-style task, then the deployment run again from a fresh
//! program: it converges, the file lock is free, only the live group's processes
//! run, and the task ran exactly once (it appends a line to a marker file).

mod support;

use bluegreen_testkit::crash::CrashHarness;
use support::killed::{Local, SIZE};

fn main() {
    CrashHarness::new(Local { task: true })
        .expect_leftovers(SIZE as usize)
        .run();
}
