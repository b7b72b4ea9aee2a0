//! `Ec2Lock` against a real AWS API emulator (`moto` in server mode): exclusion,
//! leases, takeover, release, fencing tokens, look-alikes, the lock contract, and the
//! engine behind it.

mod support;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bluegreen_aws::{AwsClients, Ec2Lock, EXPIRES_TAG, HOLDER_TAG, TOKEN_TAG};
use bluegreen_core::{
    App, DeployRequest, Engine, ErrorKind, FencingToken, ImageSource, Lock, LockHolder,
};
use bluegreen_testkit::conformance;
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

/// A lock group as found in the account.
#[derive(Debug)]
struct Group {
    id: String,
    holder: Option<String>,
    token: Option<u64>,
}

/// The lock groups of `app` in `vpc`, with their holder and token tags.
async fn lock_groups(clients: &AwsClients, vpc: &str, app: &App) -> Vec<Group> {
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
            let tag = |key: &str| {
                g.tags()
                    .iter()
                    .find(|t| t.key() == Some(key))
                    .and_then(|t| t.value())
                    .map(str::to_owned)
            };
            Group {
                id: g.group_id().unwrap().to_owned(),
                holder: tag(HOLDER_TAG),
                token: tag(TOKEN_TAG).and_then(|t| t.parse().ok()),
            }
        })
        .collect()
}

/// The one lock group of `app`, free: no holder, and `token` kept.
async fn assert_free(clients: &AwsClients, vpc: &str, app: &App, token: FencingToken) {
    let groups = lock_groups(clients, vpc, app).await;
    assert_eq!(groups.len(), 1, "{groups:?}");
    assert_eq!(groups[0].holder.as_deref(), Some(""), "{groups:?}");
    assert_eq!(groups[0].token, Some(token.0), "the last token is kept");
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ec2_lock_keeps_the_lock_contract_across_machines() {
    let clients = clients().await;
    let (vpc, app) = vpc_and_app(&clients, "contract").await;
    let other = App::new("contract", "other").unwrap();
    // two machines: two locks over the same account
    let here = Ec2Lock::new(clients.clone()).in_vpc(&vpc);
    let there = Ec2Lock::new(clients.clone()).in_vpc(&vpc);
    // leases are whole seconds on the wall clock: 3 s leave room for the calls
    conformance::lock_contract_across(&here, &there, &app, &other, Duration::from_secs(3)).await;
    let shared: Arc<dyn Lock> = Arc::new(here);
    conformance::lock_contract(&*shared, &app, &other, Duration::from_secs(3)).await;
}

/// Four machines (four `Ec2Lock` values over one account), two acquirers each, five
/// rounds: the testkit's many-acquirers rules (exactly one wins a round, the
/// others are `Locked` naming it, tokens strictly grow).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_many_acquirers_at_once_exactly_one_wins_and_tokens_grow() {
    let clients = clients().await;
    let (vpc, app) = vpc_and_app(&clients, "many").await;
    let locks: Vec<Arc<dyn Lock>> = (0..4)
        .map(|_| Arc::new(Ec2Lock::new(clients.clone()).in_vpc(&vpc)) as Arc<dyn Lock>)
        .collect();
    // a lease far beyond the test: every round's winner releases
    let (report, tokens) =
        conformance::lock_many_acquirers(&locks, &app, 2, 5, Duration::from_secs(60)).await;
    assert_eq!(report.passed(), 3, "{report}");
    assert_eq!(tokens.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lock_excludes_others_until_released_or_its_lease_passes() {
    let clients = clients().await;
    let (vpc, app) = vpc_and_app(&clients, "locked").await;
    let here = Ec2Lock::new(clients.clone()).in_vpc(&vpc);
    let there = Ec2Lock::new(clients.clone()).in_vpc(&vpc);
    let (a, b) = (LockHolder::new("deploy-a"), LockHolder::new("deploy-b"));
    let minute = Duration::from_secs(60);

    let before = unix_millis();
    let ta = here.acquire(&app, &a, minute).await.unwrap();
    assert!(ta.0 >= before, "the first token is the clock's: {ta}");
    let e = there.acquire(&app, &b, minute).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Locked, "{e}");
    assert!(e.to_string().contains("deploy-a"), "names the holder: {e}");
    // the holder takes it again and renews; the other can do neither
    assert_eq!(here.acquire(&app, &a, minute).await.unwrap(), ta);
    here.renew(&app, &a, ta, minute).await.unwrap();
    let e = there.renew(&app, &b, ta, minute).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Locked, "{e}");
    // releasing a lock one does not hold changes nothing
    there.release(&app, &b, ta).await.unwrap();
    let groups = lock_groups(&clients, &vpc, &app).await;
    assert_eq!(groups.len(), 1);
    assert!(groups[0].holder.as_deref().unwrap().starts_with("deploy-a"));
    assert_eq!(groups[0].token, Some(ta.0));
    // released: the group stays, free, with its token; the other takes it
    here.release(&app, &a, ta).await.unwrap();
    assert_free(&clients, &vpc, &app, ta).await;
    let tb = there.acquire(&app, &b, minute).await.unwrap();
    assert!(tb > ta, "{tb} > {ta}");
    there.release(&app, &b, tb).await.unwrap();
    there.release(&app, &b, tb).await.unwrap();
    assert_free(&clients, &vpc, &app, tb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passed_lease_is_taken_over_and_the_old_holder_loses_it() {
    let clients = clients().await;
    let (vpc, app) = vpc_and_app(&clients, "leased").await;
    let lock = Ec2Lock::new(clients.clone()).in_vpc(&vpc);
    let (a, b) = (LockHolder::new("deploy-a"), LockHolder::new("deploy-b"));
    let ta = lock
        .acquire(&app, &a, Duration::from_secs(1))
        .await
        .unwrap();
    let first = lock_groups(&clients, &vpc, &app).await;
    // a dead holder: its one-second lease passes (rounded up to whole seconds: 2.1 s)
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let tb = lock
        .acquire(&app, &b, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(tb > ta, "{tb} > {ta}");
    let now = lock_groups(&clients, &vpc, &app).await;
    assert_eq!(now.len(), 1, "{now:?}");
    assert_ne!(now[0].id, first[0].id, "the group was created anew");
    assert!(now[0].holder.as_deref().unwrap().starts_with("deploy-b"));
    // the old holder comes back: it has lost the lock and cannot free it
    let e = lock
        .renew(&app, &a, ta, Duration::from_secs(60))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Locked, "{e}");
    assert!(e.to_string().contains("deploy-b"), "{e}");
    lock.release(&app, &a, ta).await.unwrap();
    assert!(lock_groups(&clients, &vpc, &app).await[0]
        .holder
        .as_deref()
        .unwrap()
        .starts_with("deploy-b"));
    lock.release(&app, &b, tb).await.unwrap();
}

/// The defect found by trials in the other locks: a holder whose lease passed, while
/// another took the lock and released it, must not hold it again by renewing; nor may
/// a stale token of a holder that took the lock anew renew it (the lease-only
/// `Ec2Lock` renewed by the holder's name alone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_that_lost_its_lease_cannot_renew_a_released_lock() {
    let clients = clients().await;
    let (vpc, app) = vpc_and_app(&clients, "stale").await;
    let lock = Ec2Lock::new(clients.clone()).in_vpc(&vpc);
    let (a, b) = (LockHolder::new("deploy-a"), LockHolder::new("deploy-b"));
    let minute = Duration::from_secs(60);
    let ta = lock
        .acquire(&app, &a, Duration::from_secs(1))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let tb = lock.acquire(&app, &b, minute).await.unwrap();
    lock.release(&app, &b, tb).await.unwrap();

    let e = lock.renew(&app, &a, ta, minute).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Locked, "{e}");
    assert_free(&clients, &vpc, &app, tb).await;
    lock.release(&app, &a, ta).await.unwrap();
    assert_free(&clients, &vpc, &app, tb).await;

    // the same holder takes the lock anew: its old token stays stale
    let ta2 = lock.acquire(&app, &a, minute).await.unwrap();
    assert!(ta2 > tb, "{ta2} > {tb}");
    let e = lock.renew(&app, &a, ta, minute).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Locked, "{e}");
    lock.release(&app, &a, ta).await.unwrap();
    let e = lock.acquire(&app, &b, minute).await.unwrap_err();
    assert!(e.to_string().contains("deploy-a"), "still held: {e}");
    lock.release(&app, &a, ta2).await.unwrap();
    assert_free(&clients, &vpc, &app, ta2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_grow_when_the_group_is_gone_or_has_none() {
    let clients = clients().await;
    let (vpc, app) = vpc_and_app(&clients, "tokens").await;
    let lock = Ec2Lock::new(clients.clone()).in_vpc(&vpc);
    let (a, b) = (LockHolder::new("deploy-a"), LockHolder::new("deploy-b"));
    let minute = Duration::from_secs(60);
    let ta = lock.acquire(&app, &a, minute).await.unwrap();
    lock.release(&app, &a, ta).await.unwrap();
    // somebody deletes the free group: the clock keeps the tokens growing
    let id = lock_groups(&clients, &vpc, &app).await.remove(0).id;
    clients
        .ec2()
        .delete_security_group()
        .group_id(&id)
        .send()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let tb = lock.acquire(&app, &b, minute).await.unwrap();
    assert!(tb > ta, "{tb} > {ta}");
    lock.release(&app, &b, tb).await.unwrap();

    // a lock group written before tokens: a passed lease without a token tag
    let old = App::new("tokens", "old").unwrap();
    let mut tags = vec![
        aws_sdk_ec2::types::Tag::builder()
            .key(HOLDER_TAG)
            .value("deploy-old (pid 1)")
            .build(),
        aws_sdk_ec2::types::Tag::builder()
            .key(EXPIRES_TAG)
            .value("1")
            .build(),
    ];
    for (k, v) in bluegreen_core::labels::app_labels(&old) {
        tags.push(aws_sdk_ec2::types::Tag::builder().key(k).value(v).build());
    }
    clients
        .ec2()
        .create_security_group()
        .group_name(Ec2Lock::group_name(&old))
        .description("an older bluegreen's lock")
        .vpc_id(&vpc)
        .tag_specifications(
            aws_sdk_ec2::types::TagSpecification::builder()
                .resource_type(aws_sdk_ec2::types::ResourceType::SecurityGroup)
                .set_tags(Some(tags))
                .build(),
        )
        .send()
        .await
        .unwrap();
    let before = unix_millis();
    let t = lock.acquire(&old, &a, minute).await.unwrap();
    assert!(t.0 >= before, "taken over with the clock's token: {t}");
    lock.release(&old, &a, t).await.unwrap();
    assert_free(&clients, &vpc, &old, t).await;
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
    let e = lock
        .renew(&app, &holder, FencingToken(0), Duration::from_secs(60))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Locked, "{e}");
    lock.release(&app, &holder, FencingToken(0)).await.unwrap();
    let groups = lock_groups(&clients, &vpc, &app).await;
    assert_eq!(groups.len(), 1, "left alone");
    assert_eq!(groups[0].holder, None, "untagged: {groups:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_behind_a_held_lock_is_refused_then_deploys() {
    let clients = clients().await;
    let (vpc, app) = vpc_and_app(&clients, "engined").await;
    let lock = Arc::new(Ec2Lock::new(clients.clone()).in_vpc(&vpc));
    // another machine's deployment holds the lock
    let other = LockHolder::new("deploy-elsewhere");
    let token = lock
        .acquire(&app, &other, Duration::from_secs(60))
        .await
        .unwrap();
    let platform = MemoryPlatform::new();
    let engine =
        Engine::new(platform.image(), platform.fleet(), platform.router()).with_lock(lock.clone());
    let request = DeployRequest::new(app.clone(), ImageSource::Reference("web:1".into())).size(2);
    let e = engine.deploy(&request).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Locked, "{e}");
    assert!(e.to_string().contains("deploy-elsewhere"), "{e}");
    lock.release(&app, &other, token).await.unwrap();
    let report = engine.deploy(&request).await.unwrap();
    assert_eq!(report.live.as_str(), "engined-test-v001");
    // the engine released the lock when it finished, with a greater token
    let groups = lock_groups(&clients, &vpc, &app).await;
    assert_eq!(groups.len(), 1, "{groups:?}");
    assert_eq!(
        groups[0].holder.as_deref(),
        Some(""),
        "released: {groups:?}"
    );
    assert!(groups[0].token.unwrap() > token.0, "{groups:?}");
}
