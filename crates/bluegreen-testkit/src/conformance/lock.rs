use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use bluegreen_core::{App, ErrorKind, FencingToken, Lock, LockHolder, Result};

use super::Report;

const PART: &str = "lock";

/// The rules [`lock_many_acquirers`] checks, as its [`Report`] names them.
pub const MANY_ACQUIRERS_RULES: [&str; 3] = [
    "of many acquirers at once exactly one wins, the others are Locked naming it",
    "every handle sees the winner",
    "tokens strictly grow from round to round",
];

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

/// Many acquirers at once, through `locks` (handles on one store: one per simulated
/// machine, or per manager of a cluster): for each of `rounds` rounds, `per_handle`
/// acquirers per handle, each a holder of its own, call [`Lock::acquire`] on `app`
/// at the same time, each on a task of its own.
///
/// Checks the rules of [`MANY_ACQUIRERS_RULES`]:
/// - exactly one acquirer wins each round, and every other gets [`ErrorKind::Locked`]
///   naming the winner;
/// - every handle sees the winner: a new holder acquiring through it is `Locked`
///   naming the winner;
/// - the winner's token is greater than every token before it: the last given
///   before the first round (read by taking and releasing the lock first), and the
///   previous rounds'.
///
/// Each round's winner then releases the lock through another handle than the one
/// it took it through, in turn. Returns the [`Report`] of the three rules and the
/// winners' tokens, one per round, for the caller's own checks (a register's
/// tokens, say, grow by one per round).
///
/// Call it on a multi-threaded tokio runtime, so that the acquirers truly run at
/// once. The lease the winners take is `lease`: it must outlast a round (many calls
/// to the store). `app` must be an app whose lock nobody else uses and that is free
/// (a lock left held fails the first round). Panics, naming the rule, when one is
/// broken, and when `locks` is empty or `per_handle` is 0.
pub async fn lock_many_acquirers(
    locks: &[Arc<dyn Lock>],
    app: &App,
    per_handle: usize,
    rounds: usize,
    lease: Duration,
) -> (Report, Vec<FencingToken>) {
    assert!(
        !locks.is_empty() && per_handle > 0,
        "many acquirers need at least one handle and one acquirer per handle"
    );
    let [one_wins, all_see, tokens_grow] = MANY_ACQUIRERS_RULES;
    // the last token given before: taking the lock gives a greater one
    let probe = LockHolder::new("conformance-many-before");
    let before = locks[0]
        .acquire(app, &probe, lease)
        .await
        .expect("acquiring a free lock must succeed");
    locks[0]
        .release(app, &probe, before)
        .await
        .expect("releasing its own lock must succeed");
    let mut last = before;
    let mut tokens = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let mut set = tokio::task::JoinSet::new();
        for (h, lock) in locks.iter().enumerate() {
            for k in 0..per_handle {
                let holder = LockHolder::new(format!("conformance-many-{round}-{h}-{k}"));
                let (lock, app) = (lock.clone(), app.clone());
                set.spawn(async move {
                    let out = lock.acquire(&app, &holder, lease).await;
                    (holder, out)
                });
            }
        }
        let mut winners = Vec::new();
        let mut losers = Vec::new();
        while let Some(done) = set.join_next().await {
            let (holder, out) = done.expect("an acquirer panicked");
            match out {
                Ok(token) => winners.push((holder, token)),
                Err(e) => {
                    assert_eq!(
                        e.kind(),
                        ErrorKind::Locked,
                        "{one_wins}: round {round}: {holder} failed otherwise: {e}"
                    );
                    losers.push((holder, e));
                }
            }
        }
        assert_eq!(
            winners.len(),
            1,
            "{one_wins}: round {round}: winners {winners:?}"
        );
        let (winner, token) = winners.pop().expect("one winner");
        for (holder, e) in &losers {
            assert!(
                e.to_string().contains(&winner.deployment),
                "{one_wins}: round {round}: Locked for {holder} must name the winner ({winner}): {e}"
            );
        }
        for (h, lock) in locks.iter().enumerate() {
            let late = LockHolder::new(format!("conformance-many-{round}-{h}-late"));
            let e = locked(
                lock.acquire(app, &late, lease).await,
                &format!(
                    "{all_see}: round {round}: acquiring through handle {h} after {winner} won"
                ),
            );
            assert!(
                e.to_string().contains(&winner.deployment),
                "{all_see}: round {round}: handle {h} must see the winner ({winner}): {e}"
            );
        }
        assert!(
            token > last,
            "{tokens_grow}: round {round}: the winner's token ({token}) must exceed {last}"
        );
        locks[(round + 1) % locks.len()]
            .release(app, &winner, token)
            .await
            .unwrap_or_else(|e| panic!("round {round}: the winner's release must succeed: {e}"));
        last = token;
        tokens.push(token);
    }
    let mut report = Report::default();
    for rule in MANY_ACQUIRERS_RULES {
        report.pass(PART, rule);
    }
    (report, tokens)
}
