//! The quickstart: a blue/green deployment, a canary, an automatic rollback and a
//! manual rollback, on the in-memory platform with a virtual clock (minutes of
//! platform time pass in an instant).
//!
//! Run it with `cargo run --example memory_quickstart`.

use std::time::Duration;

use bluegreen::{
    App, DeployRequest, Engine, EngineOptions, Event, EventSink, ImageSource, Strategy,
};
use bluegreen_testkit::{Behaviour, MemoryPlatform};

fn progress() -> EventSink {
    EventSink::new(|event: &Event| match event {
        Event::Started {
            app,
            deployment,
            operation,
        } => println!("\n== {operation} {app}: {deployment}"),
        Event::StepStarted { step } => println!("   - {step}"),
        Event::ImageReady { image } => println!("     image {} ({})", image.id, image.origin),
        Event::GroupLaunched { group, size } => {
            println!("     launched {group} ({size} instances)")
        }
        Event::Health {
            group,
            healthy,
            wanted,
        } => println!("     {group}: {healthy}/{wanted} healthy"),
        Event::TrafficShifted { routes } => println!("     routes {routes}"),
        Event::Baking { weight, duration } => println!("     baking at {weight}% for {duration:?}"),
        Event::GroupKeptWarm { group } => println!("     {group} kept warm"),
        Event::GroupDestroyed { group } => println!("     {group} destroyed"),
        Event::Reverting { step, reason } => {
            println!("   ! {step} failed, reverting: {reason}")
        }
        Event::Reverted { routes } => println!("   ! reverted to {routes}"),
        Event::Finished { group, elapsed } => println!("   = {group} live after {elapsed:?}"),
        _ => {}
    })
}

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() -> Result<(), bluegreen::Error> {
    let platform = MemoryPlatform::new();
    platform
        .set_boot_time(Duration::from_secs(8))
        .set_latency(Duration::from_millis(50))
        .set_behaviour("web:3", Behaviour::NeverHealthy);
    let engine = Engine::from_parts(platform.parts())
        .with_options(EngineOptions::default().with_health_timeout(Duration::from_secs(60)))
        .with_events(progress());
    let app = App::new("web", "production")?;
    let version = |v: &str| {
        DeployRequest::new(app.clone(), ImageSource::Reference(format!("web:{v}"))).size(3)
    };

    println!("Deploying version 1 (blue/green)");
    engine.deploy(&version("1")).await?;

    println!("\nDeploying version 2 (canary 10% then 50%)");
    let v2 = engine
        .deploy(&version("2").strategy(Strategy::canary([10, 50], Duration::from_secs(30))))
        .await?;

    println!("\nDeploying version 3, which never becomes healthy");
    let failed = engine.deploy(&version("3")).await.unwrap_err();
    println!("   -> {failed}");

    println!("\nRolling back by hand");
    let back = engine.rollback(&app).await?;

    let status = engine.status(&app).await?;
    println!("\nSummary");
    println!(
        "   version 2 went live as {} with a switch of {:?}",
        v2.live, v2.switch_time
    );
    println!(
        "   version 3 was rolled back automatically: {}",
        failed.rolled_back()
    );
    println!(
        "   manual rollback: {} -> {} in {:?}",
        back.from, back.to, back.elapsed
    );
    for g in &status.groups {
        println!(
            "   {} {:>3}% {}/{} healthy ({})",
            g.group.id,
            g.weight,
            g.healthy(),
            g.instances.len(),
            g.group.release.image
        );
    }
    Ok(())
}
