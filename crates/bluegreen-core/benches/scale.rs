//! Scale: replace fleets of 10 to 100,000 instances on the in-memory platform under
//! tokio's paused clock, with a per-call latency and an instance boot time.
//!
//! For each size it prints the simulated duration against the critical path (one
//! boot, one health check, the switch and the drain) as a ratio, the platform calls
//! per deployment, and the real CPU time the engine spent.
//!
//! `cargo bench -p bluegreen-core --bench scale`

use std::time::Duration;

use bluegreen_core::{App, DeployRequest, Engine, EngineOptions, ImageSource};
use bluegreen_testkit::{MemoryPlatform, Op};

const LATENCY: Duration = Duration::from_millis(50);
const BOOT: Duration = Duration::from_millis(30_370);
const DRAIN: Duration = Duration::from_secs(10);
const BATCH: usize = 1000;

fn cpu_time() -> Duration {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

struct Figures {
    simulated: Duration,
    critical: Duration,
    calls: u64,
    launch_calls: u64,
    list_calls: u64,
    destroy_calls: u64,
    cpu: Duration,
}

async fn replace(size: u32) -> Figures {
    let platform = MemoryPlatform::new();
    platform
        .set_latency(LATENCY)
        .set_boot_time(BOOT)
        .set_batch_size(BATCH);
    let engine = Engine::from_parts(platform.parts()).with_options(
        EngineOptions::default()
            .with_keep(0)
            .with_drain(DRAIN)
            .with_health_timeout(Duration::from_secs(600)),
    );
    let app = App::new("web", "production").unwrap();
    let request = |tag: &str| {
        DeployRequest::new(app.clone(), ImageSource::Reference(format!("web:{tag}"))).size(size)
    };
    engine.deploy(&request("1")).await.unwrap();

    let calls_before = platform.call_counts();
    let cpu_before = cpu_time();
    let started = tokio::time::Instant::now();
    engine.deploy(&request("2")).await.unwrap();
    let simulated = started.elapsed();
    let cpu = cpu_time() - cpu_before;
    let calls_after = platform.call_counts();
    let delta = |op: Op| calls_after.get(&op).unwrap_or(&0) - calls_before.get(&op).unwrap_or(&0);

    // the least any deployment must wait: one boot, one health check (every page of
    // the instance list), the switch (set the routes, read them back) and the drain
    let pages = (size as usize).div_ceil(BATCH) as u32;
    let critical = BOOT + LATENCY * pages + LATENCY * 2 + DRAIN;
    Figures {
        simulated,
        critical,
        calls: calls_after.values().sum::<u64>() - calls_before.values().sum::<u64>(),
        launch_calls: delta(Op::Launch),
        list_calls: delta(Op::Instances),
        destroy_calls: delta(Op::Destroy),
        cpu,
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    println!(
        "latency {LATENCY:?} per call, boot {BOOT:?}, drain {DRAIN:?}, batch {BATCH}, poll 1s"
    );
    println!(
        "{:>7} {:>10} {:>10} {:>6} {:>6} {:>7} {:>6} {:>8} {:>9}",
        "size", "simulated", "critical", "ratio", "calls", "launch", "list", "destroy", "cpu"
    );
    for size in [10, 100, 1_000, 10_000, 100_000] {
        let f = runtime.block_on(replace(size));
        println!(
            "{:>7} {:>9.2}s {:>9.2}s {:>6.3} {:>6} {:>7} {:>6} {:>8} {:>7.1}ms",
            size,
            f.simulated.as_secs_f64(),
            f.critical.as_secs_f64(),
            f.simulated.as_secs_f64() / f.critical.as_secs_f64(),
            f.calls,
            f.launch_calls,
            f.list_calls,
            f.destroy_calls,
            f.cpu.as_secs_f64() * 1000.0
        );
    }
}
