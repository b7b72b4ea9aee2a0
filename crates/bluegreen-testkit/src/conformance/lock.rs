use std::fmt::Debug;
use std::time::Duration;

use bluegreen_core::{App, ErrorKind, FencingToken, Lock, LockHolder, Result};

/// [`Lock`]'s contract, with every holder going through `lock`: see
/// [`lock_contract_across`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// use std::time::Duration;
/// use bluegreen_core::{App, MemoryLock};
/// use bluegreen_testkit::conformance;
///
/// let (app, other) = (App::new("web", "test").unwrap(), App::new("api", "test").unwrap());
/// // MemoryLock runs on tokio's clock: paused, the contract's waits take no time
/// conformance::lock_contract(&MemoryLock::new(), &app, &other, Duration::from_secs(30)).await;
/// # }
/// ```
pub async fn lock_contract(lock: &dyn Lock, app: &App, other: &App, lease: Duration) {
    lock_contract_across(lock, lock, app, other, lease).await;
}

/// [`Lock`]'s contract through two handles on one store (two processes or machines
/// sharing the lock): holder A goes through `here`, the others through `there`.
///
/// Checks: a held lock excludes other holders and names its holder; taking it again
/// gives the same token; every new holder gets a greater token; a lease that passed
/// is taken over; a holder whose lease passed, while the lock was taken over and
/// released, cannot renew it and its release changes nothing; a renewal or release
/// with a wrong token or by another holder is refused or changes nothing; a renewal
/// never takes a free lock; release is idempotent; two apps' locks are independent.
///
/// `lease` is the lease the holders take. A lease counts as passed once twice its
/// length has passed (a store may round a lease up, to whole seconds, say), and it
/// must be long enough for a dozen calls to the store while it lasts. The waits run on
/// tokio's clock: under a paused clock they take no time, which suits a lock on
/// tokio's clock ([`MemoryLock`](bluegreen_core::MemoryLock)); a lock on the wall
/// clock needs a real one and a short lease (a second or two).
///
/// `app` and `other` must be two different apps whose locks nobody else uses; a
/// lease left by an earlier, interrupted run is waited out first.
pub async fn lock_contract_across(
    here: &dyn Lock,
    there: &dyn Lock,
    app: &App,
    other: &App,
    lease: Duration,
) {
    assert_ne!(app, other, "the lock contract needs two different apps");
    let a = LockHolder::new("conformance-lock-a");
    let b = LockHolder::new("conformance-lock-b");
    let c = LockHolder::new("conformance-lock-c");
    let d = LockHolder::new("conformance-lock-d");
    let t0 = clean(here, app, lease).await;
    clean(there, other, lease).await;

    // exclusion and re-entry
    let ta = here
        .acquire(app, &a, lease)
        .await
        .expect("acquiring a free lock must succeed");
    assert!(
        ta > t0,
        "a new holder's token ({ta}) must be greater than every token given before ({t0})"
    );
    let e = locked(
        there.acquire(app, &b, lease).await,
        "acquiring a lock that another holder holds with a live lease",
    );
    assert!(
        e.to_string().contains(&a.deployment),
        "Locked must name the holder ({a}): {e}"
    );
    assert_eq!(
        here.acquire(app, &a, lease)
            .await
            .expect("the holder must be able to take its lock again"),
        ta,
        "taking one's own lock again must give the same token"
    );
    here.renew(app, &a, ta, lease)
        .await
        .expect("the holder must renew its lock");
    locked(
        there.renew(app, &b, ta, lease).await,
        "renewing a lock that another holder holds",
    );
    locked(
        here.renew(app, &a, ta.next(), lease).await,
        "renewing with a token that is not the lock's",
    );
    there
        .release(app, &b, ta)
        .await
        .expect("releasing a lock one does not hold must succeed");
    here.release(app, &a, ta.next())
        .await
        .expect("releasing with a wrong token must succeed");
    locked(
        there.acquire(app, &b, lease).await,
        "acquiring after a release by another holder, and one with a wrong token (they \
         must change nothing)",
    );
    here.renew(app, &a, ta, lease)
        .await
        .expect("the holder must still hold its lock after others' releases");

    // release
    here.release(app, &a, ta)
        .await
        .expect("the holder must release its lock");
    here.release(app, &a, ta)
        .await
        .expect("releasing again must succeed (idempotent)");
    locked(
        here.renew(app, &a, ta, lease).await,
        "renewing a released lock (a renewal never takes the lock)",
    );
    let tb = there
        .acquire(app, &b, lease)
        .await
        .expect("a released lock must be free, also after a refused renewal");
    assert!(tb > ta, "the next holder's token ({tb}) must exceed {ta}");
    there.release(app, &b, tb).await.expect("release");

    // tokens grow with every new holder
    let mut last = tb;
    for (lock, holder) in [(here, &a), (there, &b), (there, &c), (here, &a)] {
        let t = lock
            .acquire(app, holder, lease)
            .await
            .expect("acquiring a free lock must succeed");
        assert!(
            t > last,
            "every new holder's token must grow: {holder} got {t} after {last}"
        );
        lock.release(app, holder, t).await.expect("release");
        last = t;
    }

    // two apps are independent
    let ta = here
        .acquire(app, &a, lease)
        .await
        .expect("acquiring a free lock must succeed");
    let ub = there
        .acquire(other, &b, lease)
        .await
        .expect("another app's lock must be free while this app's is held");
    there
        .renew(other, &b, ub, lease)
        .await
        .expect("renewing another app's lock");
    there
        .release(other, &b, ub)
        .await
        .expect("releasing another app's lock");
    here.renew(app, &a, ta, lease)
        .await
        .expect("releasing another app's lock must leave this app's held");
    locked(
        there.acquire(app, &b, lease).await,
        "acquiring a lock held while another app's was released",
    );
    here.release(app, &a, ta).await.expect("release");
    last = ta;

    // a passed lease is taken over, and the old holder has lost the lock
    let ta = here
        .acquire(app, &a, lease)
        .await
        .expect("acquiring a free lock must succeed");
    assert!(ta > last, "token {ta} must exceed {last}");
    tokio::time::sleep(lease * 2).await;
    let tb = there
        .acquire(app, &b, lease)
        .await
        .expect("a lock whose lease passed must be taken over");
    assert!(
        tb > ta,
        "the taker's token ({tb}) must exceed the old one ({ta})"
    );
    locked(
        here.renew(app, &a, ta, lease).await,
        "renewing a lock that was taken over",
    );
    let e = locked(
        here.acquire(app, &a, lease).await,
        "acquiring a lock that was taken over, as its old holder",
    );
    assert!(
        e.to_string().contains(&b.deployment),
        "Locked must name the new holder ({b}): {e}"
    );
    there.release(app, &b, tb).await.expect("release");
    // the defect this contract was written for: the lock is free now, and the old
    // holder must not get it back by renewing
    locked(
        here.renew(app, &a, ta, lease).await,
        "renewing, as a holder whose lease passed, a lock taken over and released since",
    );
    here.release(app, &a, ta)
        .await
        .expect("a stale holder's release must succeed");
    let tc = there
        .acquire(app, &c, lease)
        .await
        .expect("a stale holder's renewal and release must leave the lock free");
    assert!(
        tc > tb,
        "a stale holder must not disturb the tokens: {tc} after {tb}"
    );
    here.release(app, &a, ta)
        .await
        .expect("a stale holder's release must succeed");
    there
        .renew(app, &c, tc, lease)
        .await
        .expect("a stale holder's release must leave the current holder's lock held");
    let e = locked(
        here.acquire(app, &d, lease).await,
        "acquiring a lock held after a stale holder's release",
    );
    assert!(
        e.to_string().contains(&c.deployment),
        "Locked must name the holder ({c}): {e}"
    );
    there.release(app, &c, tc).await.expect("release");
    // the old holder takes the lock anew: its old token stays stale
    let ta2 = here
        .acquire(app, &a, lease)
        .await
        .expect("acquiring a free lock must succeed");
    assert!(ta2 > tc, "token {ta2} must exceed {tc}");
    locked(
        here.renew(app, &a, ta, lease).await,
        "renewing with an old token of the current holder",
    );
    here.release(app, &a, ta)
        .await
        .expect("releasing with an old token must succeed");
    locked(
        there.acquire(app, &b, lease).await,
        "acquiring after a release with an old token (it must change nothing)",
    );
    here.release(app, &a, ta2).await.expect("release");
}

/// Waits out a lease left by an interrupted run, then takes and releases the lock:
/// the token given then.
async fn clean(lock: &dyn Lock, app: &App, lease: Duration) -> FencingToken {
    let probe = LockHolder::new("conformance-lock-probe");
    let token = match lock.acquire(app, &probe, lease).await {
        Ok(t) => t,
        Err(e) if e.kind() == ErrorKind::Locked => {
            tokio::time::sleep(lease * 2).await;
            lock.acquire(app, &probe, lease).await.unwrap_or_else(|e| {
                panic!("the lock of {app} must be free for the contract, or its lease pass: {e}")
            })
        }
        Err(e) => panic!("acquiring the lock of {app}: {e}"),
    };
    lock.release(app, &probe, token)
        .await
        .expect("releasing the lock must succeed");
    token
}

/// The [`ErrorKind::Locked`] error of `out`, or a panic naming `what`.
fn locked<T: Debug>(out: Result<T>, what: &str) -> bluegreen_core::Error {
    match out {
        Ok(v) => panic!("{what} must fail with Locked, got Ok({v:?})"),
        Err(e) => {
            assert_eq!(
                e.kind(),
                ErrorKind::Locked,
                "{what} must fail with Locked: {e}"
            );
            e
        }
    }
}
