//! `Ec2Lock` against a real AWS API emulator (`moto` in server mode): exclusion,
//! leases, takeover, release, look-alikes, and the engine behind it.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bluegreen_aws::{AwsClients, Ec2Lock, HOLDER_TAG};
use bluegreen_core::{App, DeployRequest, Engine, ErrorKind, ImageSource, Lock, LockHolder};
use bluegreen_testkit::MemoryPlatform;
use support::clients;

/// A fresh VPC (tests share one emulator) and an app of its own.
async fn vpc_and_app(clients: &AwsClients, name: &str) -> (String, App) {
    let vpc = clients
        .ec2()
        .create_vpc()
        .cidr_block("10.9.0.0/16")
        .send()
        .await
        .unwrap()
        .vpc()
        .and_then(|v| v.vpc_id())
        .unwrap()
        .to_owned();
    (vpc, App::new(name, "test").unwrap())
}

/// The lock groups of `app` in `vpc`, with their holder tag.
async fn lock_groups(clients: &AwsClients, vpc: &str, app: &App) -> Vec<(String, Option<String>)> {
    use aws_sdk_ec2::types::Filter;
    let out = clients
        .ec2()
        .describe_security_groups()
        .filters(
            Filter::builder()
                .name("group-name")
                .values(Ec2Lock::group_name(app))
                .build(),
        )
        .filters(Filter::builder().name("vpc-id").values(vpc).build())
        .send()
        .await
        .unwrap();
    out.security_groups()
        .iter()
        .map(|g| {
            let holder = g
                .tags()
                .iter()
                .find(|t| t.key() == Some(HOLDER_TAG))
                .and_then(|t| t.value())
                .map(str::to_owned);
            (g.group_id().unwrap().to_owned(), holder)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lock_excludes_others_until_released_or_its_lease_passes() {
    let clients = clients().await;
    let (vpc, app) = vpc_and_app(&clients, "locked").await;
    // two machines: two locks over the same account
    let here = Ec2Lock::new(clients.clone()).in_vpc(&vpc);
    let there = Ec2Lock::new(clients.clone()).in_vpc(&vpc);
    let (a, b) = (LockHolder::new("deploy-a"), LockHolder::new("deploy-b"));
    let minute = Duration::from_secs(60);

    here.acquire(&app, &a, minute).await.unwrap();
    let e = there.acquire(&app, &b, minute).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Locked, "{e}");
    assert!(e.to_string().contains("deploy-a"), "names the holder: {e}");
    // the holder takes it again and renews; the other can do neither
    here.acquire(&app, &a, minute).await.unwrap();
    here.renew(&app, &a, minute).await.unwrap();
    let e = there.renew(&app, &b, minute).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Locked, "{e}");
    // releasing a lock one does not hold changes nothing
    there.release(&app, &b).await.unwrap();
    let groups = lock_groups(&clients, &vpc, &app).await;
    assert_eq!(groups.len(), 1);
    assert!(groups[0].1.as_deref().unwrap().starts_with("deploy-a"));
    // released: the other takes it
    here.release(&app, &a).await.unwrap();
    assert!(lock_groups(&clients, &vpc, &app).await.is_empty());
    there.acquire(&app, &b, minute).await.unwrap();
    there.release(&app, &b).await.unwrap();
    there.release(&app, &b).await.unwrap();
    assert!(lock_groups(&clients, &vpc, &app).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passed_lease_is_taken_over_and_the_old_holder_loses_it() {
    let clients = clients().await;
    let (vpc, app) = vpc_and_app(&clients, "leased").await;
    let lock = Ec2Lock::new(clients.clone()).in_vpc(&vpc);
    let (a, b) = (LockHolder::new("deploy-a"), LockHolder::new("deploy-b"));
    lock.acquire(&app, &a, Duration::from_secs(1))
        .await
        .unwrap();
    let first = lock_groups(&clients, &vpc, &app).await;
    // a dead holder: its one-second lease passes (bounded: 2.1 s)
    tokio::time::sleep(Duration::from_millis(2100)).await;
    lock.acquire(&app, &b, Duration::from_secs(60))
        .await
        .unwrap();
    let now = lock_groups(&clients, &vpc, &app).await;
    assert_eq!(now.len(), 1, "{now:?}");
    assert_ne!(now[0].0, first[0].0, "the group was created anew");
    assert!(now[0].1.as_deref().unwrap().starts_with("deploy-b"));
    // the old holder comes back: it has lost the lock and cannot free it
    let e = lock
        .renew(&app, &a, Duration::from_secs(60))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Locked, "{e}");
    assert!(e.to_string().contains("deploy-b"), "{e}");
    lock.release(&app, &a).await.unwrap();
    assert_eq!(lock_groups(&clients, &vpc, &app).await.len(), 1);
    lock.release(&app, &b).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_look_alike_group_is_never_taken_or_deleted() {
    let clients = clients().await;
    let (vpc, app) = vpc_and_app(&clients, "lookalike").await;
    // somebody's group with the lock's name, without bluegreen's tags
    clients
        .ec2()
        .create_security_group()
        .group_name(Ec2Lock::group_name(&app))
        .description("not bluegreen's")
        .vpc_id(&vpc)
        .send()
        .await
        .unwrap();
    let lock = Ec2Lock::new(clients.clone()).in_vpc(&vpc);
    let holder = LockHolder::new("deploy-a");
    let e = lock
        .acquire(&app, &holder, Duration::from_secs(60))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    assert!(e.to_string().contains("is not bluegreen's lock"), "{e}");
    lock.release(&app, &holder).await.unwrap();
    assert_eq!(
        lock_groups(&clients, &vpc, &app).await.len(),
        1,
        "left alone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_behind_a_held_lock_is_refused_then_deploys() {
    let clients = clients().await;
    let (vpc, app) = vpc_and_app(&clients, "engined").await;
    let lock = Arc::new(Ec2Lock::new(clients.clone()).in_vpc(&vpc));
    // another machine's deployment holds the lock
    let other = LockHolder::new("deploy-elsewhere");
    lock.acquire(&app, &other, Duration::from_secs(60))
        .await
        .unwrap();
    let platform = MemoryPlatform::new();
    let engine =
        Engine::new(platform.image(), platform.fleet(), platform.router()).with_lock(lock.clone());
    let request = DeployRequest::new(app.clone(), ImageSource::Reference("web:1".into())).size(2);
    let e = engine.deploy(&request).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Locked, "{e}");
    assert!(e.to_string().contains("deploy-elsewhere"), "{e}");
    lock.release(&app, &other).await.unwrap();
    let report = engine.deploy(&request).await.unwrap();
    assert_eq!(report.live.as_str(), "engined-test-v001");
    // the engine released the lock when it finished
    assert!(lock_groups(&clients, &vpc, &app).await.is_empty());
}
