//! `FileLock` keeps the lock contract, through one value and through two values on
//! one state directory (two programs on one machine).

mod support;

use std::sync::Arc;
use std::time::Duration;

use bluegreen_core::{App, ErrorKind, Lock, LockHolder};
use bluegreen_local::FileLock;
use bluegreen_testkit::conformance;
use support::{state, Scratch};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_lock_keeps_the_lock_contract() {
    let tmp = Scratch::new("lock-contract");
    let lock = FileLock::new(&state(tmp.path()));
    let (app, other) = (
        App::new("conformance", "lock").unwrap(),
        App::new("conformance", "other").unwrap(),
    );
    conformance::lock_contract(&lock, &app, &other, Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_file_locks_on_one_state_directory_keep_the_contract() {
    let tmp = Scratch::new("lock-across");
    let (here, there) = (
        FileLock::new(&state(tmp.path())),
        FileLock::new(&state(tmp.path())),
    );
    let (app, other) = (
        App::new("conformance", "lock").unwrap(),
        App::new("conformance", "other").unwrap(),
    );
    conformance::lock_contract_across(&here, &there, &app, &other, Duration::from_secs(1)).await;
}

/// Four values on one state directory (four programs on one machine), three
/// acquirers each, ten rounds: the testkit's many-acquirers rules.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_many_acquirers_at_once_exactly_one_wins_and_tokens_grow() {
    let tmp = Scratch::new("lock-many");
    let locks: Vec<Arc<dyn Lock>> = (0..4)
        .map(|_| Arc::new(FileLock::new(&state(tmp.path()))) as Arc<dyn Lock>)
        .collect();
    let app = App::new("conformance", "many").unwrap();
    let (report, tokens) =
        conformance::lock_many_acquirers(&locks, &app, 3, 10, Duration::from_secs(30)).await;
    assert_eq!(report.passed(), 3, "{report}");
    assert_eq!(tokens.len(), 10);
}

/// The defect found by trials: a holder whose lease passed, while another took the lock
/// and released it, got `Ok` from `renew` and held the lock again.
#[tokio::test]
async fn a_holder_that_lost_its_lease_cannot_renew_a_released_lock() {
    let tmp = Scratch::new("lock-defect");
    let lock = FileLock::new(&state(tmp.path()));
    let app = App::new("web", "prod").unwrap();
    let (a, b, c) = (
        LockHolder::new("d-a"),
        LockHolder::new("d-b"),
        LockHolder::new("d-c"),
    );
    let lease = Duration::from_millis(200);
    let ta = lock.acquire(&app, &a, lease).await.unwrap();
    tokio::time::sleep(lease * 2).await;
    let tb = lock.acquire(&app, &b, lease).await.unwrap();
    lock.release(&app, &b, tb).await.unwrap();

    let e = lock.renew(&app, &a, ta, lease).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Locked, "{e}");
    // the refused renewal took nothing, and the stale release frees nothing
    lock.release(&app, &a, ta).await.unwrap();
    let tc = lock
        .acquire(&app, &c, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(tc > tb, "{tc} > {tb}");
    lock.release(&app, &a, ta).await.unwrap();
    let e = lock
        .acquire(&app, &a, Duration::from_secs(60))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("d-c"), "{e}");
}
