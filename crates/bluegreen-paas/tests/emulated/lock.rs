//! [`PlatformLock`] against the emulator: the lock contract through one handle and
//! through two (two machines on one account), many acquirers at once, a version whose
//! writer died before writing it, and apps at a lock's names that are not the lock's.

use std::sync::Arc;
use std::time::Duration;

use bluegreen_core::{App, ErrorKind, Lock, LockHolder};
use bluegreen_paas::{Naming, PlatformLock};
use bluegreen_testkit::conformance;

use crate::support::{self, Emulator};

const LEASE: Duration = Duration::from_secs(2);

/// The lock apps of `app` on the emulator, by name.
fn lock_apps(emu: &Emulator, app: &App) -> Vec<String> {
    let prefix = Naming::new().lock_app(app, 1).unwrap();
    let prefix = prefix.trim_end_matches('1');
    emu.app_names()
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_platform_lock_keeps_the_contract_through_one_and_two_handles() {
    let emu = support::emulator().await;
    let app = support::app("lock");
    let other = support::app("lockx");
    let here = PlatformLock::new(emu.client());
    let there = PlatformLock::new(emu.client());
    conformance::lock_contract(&here, &app, &other, LEASE).await;
    conformance::lock_contract_across(&here, &there, &app, &other, LEASE).await;
    // the last token is kept in one app per lock, the old versions are gone
    assert_eq!(
        lock_apps(&emu, &app).len(),
        1,
        "{:?}",
        lock_apps(&emu, &app)
    );
    assert_eq!(lock_apps(&emu, &other).len(), 1);
    let current = &lock_apps(&emu, &app)[0];
    let vars = emu.config(current).unwrap();
    assert_eq!(vars["BLUEGREEN_OWNER"], "bluegreen");
    assert_eq!(vars["BLUEGREEN_ROLE"], "lock");
    assert_eq!(vars["BLUEGREEN_LOCK"], "lock-test");
    assert!(
        !vars.contains_key("BLUEGREEN_LOCK_DEPLOYMENT"),
        "released: {vars:?}"
    );
    here.forget(&app).await.unwrap();
    there.forget(&other).await.unwrap();
    assert!(lock_apps(&emu, &app).is_empty());
    assert!(lock_apps(&emu, &other).is_empty());
}

/// Eight handles (eight machines on one account), two acquirers each, five rounds:
/// the testkit's many-acquirers rules, and one token per round.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_many_acquirers_at_once_exactly_one_wins_and_tokens_grow() {
    let emu = support::emulator().await;
    let app = support::app("race");
    let handles: Vec<Arc<dyn Lock>> = (0..8)
        .map(|_| Arc::new(PlatformLock::new(emu.client())) as Arc<dyn Lock>)
        .collect();
    let (report, tokens) =
        conformance::lock_many_acquirers(&handles, &app, 2, 5, Duration::from_secs(30)).await;
    assert_eq!(report.passed(), 3, "{report}");
    assert!(
        tokens.windows(2).all(|w| w[1] == w[0].next()),
        "one token per round: {tokens:?}"
    );
    assert_eq!(
        lock_apps(&emu, &app).len(),
        1,
        "{:?}",
        lock_apps(&emu, &app)
    );
}

/// An app created at the next version's name with no config vars is what a writer
/// killed between its create and its write leaves: held until its window passes,
/// then skipped, and never deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_never_written_is_waited_for_then_skipped_and_left_alone() {
    let emu = support::emulator().await;
    let app = support::app("pending");
    let window = Duration::from_secs(2);
    let lock = PlatformLock::new(emu.client())
        .with_write_window(window)
        .unwrap();
    let (a, b) = (LockHolder::new("pending-a"), LockHolder::new("pending-b"));
    let ta = lock.acquire(&app, &a, LEASE).await.unwrap();
    lock.release(&app, &a, ta).await.unwrap();
    let abandoned = Naming::new().lock_app(&app, 3).unwrap();
    emu.add_foreign_app(&abandoned, &[], None);
    // while its writer may still write it, nobody is known to hold the lock
    let e = lock.holder(&app).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Locked, "{e}");
    // a change waits for the window, then decides on the last written version
    let tb = lock.acquire(&app, &b, LEASE).await.unwrap();
    assert!(tb > ta, "{tb} > {ta}");
    assert_eq!(lock.holder(&app).await.unwrap(), Some(b.clone()));
    let names = lock_apps(&emu, &app);
    assert!(names.contains(&abandoned), "left in place: {names:?}");
    assert!(
        names.contains(&Naming::new().lock_app(&app, 4).unwrap()),
        "the next version follows the abandoned one: {names:?}"
    );
    assert_eq!(emu.config(&abandoned).unwrap().len(), 0, "never written to");
    lock.release(&app, &b, tb).await.unwrap();
    lock.forget(&app).await.unwrap();
    assert_eq!(lock_apps(&emu, &app), [abandoned]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_at_lock_names_without_our_marks_are_left_alone() {
    let emu = support::emulator().await;
    let app = support::app("squat");
    let naming = Naming::new();
    let lock = PlatformLock::new(emu.client());
    let a = LockHolder::new("squat-a");
    let token = lock.acquire(&app, &a, LEASE).await.unwrap();
    // the next version's name, and a later one, taken by apps without the marks; an
    // app with the marks of another app's lock
    let next = naming.lock_app(&app, 2).unwrap();
    let later = naming.lock_app(&app, 9).unwrap();
    let marked_other = naming.lock_app(&app, 5).unwrap();
    emu.add_foreign_app(&next, &[("DATABASE_URL", "postgres://x")], None);
    emu.add_foreign_app(&later, &[("A", "1")], None);
    emu.add_foreign_app(
        &marked_other,
        &[
            ("BLUEGREEN_OWNER", "bluegreen"),
            ("BLUEGREEN_ROLE", "lock"),
            ("BLUEGREEN_LOCK", "other-test"),
            ("BLUEGREEN_LOCK_VERSION", "5"),
            ("BLUEGREEN_LOCK_TOKEN", "99"),
        ],
        None,
    );
    let before: Vec<_> = [&next, &later, &marked_other]
        .iter()
        .map(|n| (n.to_string(), emu.config(n)))
        .collect();
    // the look-alikes are not versions: the lock still reads as held by `a`
    assert_eq!(lock.holder(&app).await.unwrap(), Some(a.clone()));
    let e = lock.release(&app, &a, token).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    assert!(e.to_string().contains(&next), "{e}");
    lock.forget(&app).await.unwrap();
    let after: Vec<_> = [&next, &later, &marked_other]
        .iter()
        .map(|n| (n.to_string(), emu.config(n)))
        .collect();
    assert_eq!(before, after, "the look-alikes survive unchanged");
    assert!(
        !emu.app_names().contains(&naming.lock_app(&app, 1).unwrap()),
        "forget deleted the lock's own version"
    );
}

#[tokio::test]
async fn a_write_window_under_two_seconds_is_refused() {
    let client =
        bluegreen_paas::PlatformClient::new("http://127.0.0.1:9", bluegreen_paas::Token::new("t"))
            .unwrap();
    let e = PlatformLock::new(client)
        .with_write_window(Duration::from_millis(1999))
        .unwrap_err();
    assert!(e.to_string().contains("lock.write_window"), "{e}");
}
