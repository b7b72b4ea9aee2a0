//! [`SwarmLock`] against the real three-manager swarm of `scripts/swarm`: the lock
//! contract through one manager and across two managers (two machines deploying to
//! one swarm), many acquirers on all three managers at once, and a secret of another
//! owner that has a lock's name.

mod swarm_support;

use std::sync::Arc;
use std::time::Duration;

use bluegreen_core::{App, ErrorKind, Lock, LockHolder};
use bluegreen_docker::SwarmLock;
use bluegreen_testkit::conformance;
use swarm_support::{docker_on, manager_at, swarm, Harness};

const LEASE: Duration = Duration::from_secs(2);

/// The secrets of the app's lock, by name.
fn lock_secrets(h: &Harness, app: &App) -> Vec<String> {
    docker_on(
        h,
        0,
        &[
            "secret",
            "ls",
            "--format",
            "{{.Name}}",
            "--filter",
            &format!("label=bluegreen.lock={}", app.slug()),
        ],
    )
    .unwrap()
    .lines()
    .map(str::to_owned)
    .collect()
}

/// Removes the lock secrets of `apps` now and when dropped (also after a panic).
struct Forget(Harness, Vec<App>);

impl Forget {
    fn new(h: &Harness, apps: &[&App]) -> Forget {
        let f = Forget(h.clone(), apps.iter().map(|a| (*a).clone()).collect());
        f.run();
        f
    }

    fn run(&self) {
        for app in &self.1 {
            let names = lock_secrets(&self.0, app);
            if !names.is_empty() {
                let mut args = vec!["secret", "rm"];
                args.extend(names.iter().map(String::as_str));
                let _ = docker_on(&self.0, 0, &args);
            }
        }
    }
}

impl Drop for Forget {
    fn drop(&mut self) {
        self.run();
    }
}

/// Node `n`'s client, which must be a manager.
async fn manager(h: &Harness, n: usize) -> bluegreen_docker::Docker {
    let d = manager_at(h, n)
        .await
        .unwrap_or_else(|e| panic!("node {}: {e}", n + 1));
    let info = d.info().await.unwrap();
    assert_eq!(
        info.swarm.and_then(|s| s.control_available),
        Some(true),
        "node {} must be a manager (scripts/swarm joins nodes 2 and 3 as managers)",
        n + 1
    );
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_swarm_lock_keeps_the_contract_through_one_and_two_managers() {
    let Some((h, _)) = swarm("swarm lock contract").await else {
        return;
    };
    let app = swarm_support::app("lock", "swarm");
    let other = swarm_support::app("lockx", "swarm");
    let _forget = Forget::new(&h, &[&app, &other]);
    let here = SwarmLock::new(manager(&h, 0).await);
    let there = SwarmLock::new(manager(&h, 1).await);
    conformance::lock_contract(&here, &app, &other, LEASE).await;
    conformance::lock_contract_across(&here, &there, &app, &other, LEASE).await;
    // the last token is kept in one secret per app, the old versions are gone
    assert_eq!(
        lock_secrets(&h, &app).len(),
        1,
        "{:?}",
        lock_secrets(&h, &app)
    );
    there.forget(&app).await.unwrap();
    here.forget(&other).await.unwrap();
    assert!(lock_secrets(&h, &app).is_empty());
    assert!(lock_secrets(&h, &other).is_empty());
}

/// Two handles on each of the three managers (six machines), two acquirers each,
/// four rounds: the testkit's many-acquirers rules (every manager sees each winner),
/// and one token per round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_many_acquirers_on_three_managers_exactly_one_wins_and_tokens_grow() {
    let Some((h, _)) = swarm("swarm lock race").await else {
        return;
    };
    let app = swarm_support::app("race", "swarm");
    let _forget = Forget::new(&h, &[&app]);
    let mut handles: Vec<Arc<dyn Lock>> = Vec::new();
    for n in 0..3 {
        for _ in 0..2 {
            handles.push(Arc::new(SwarmLock::new(manager(&h, n).await)));
        }
    }
    let (report, tokens) =
        conformance::lock_many_acquirers(&handles, &app, 2, 4, Duration::from_secs(30)).await;
    assert_eq!(report.passed(), 3, "{report}");
    assert!(
        tokens.windows(2).all(|w| w[1] == w[0].next()),
        "one token per round: {tokens:?}"
    );
    assert_eq!(
        lock_secrets(&h, &app).len(),
        1,
        "{:?}",
        lock_secrets(&h, &app)
    );
    SwarmLock::new(manager(&h, 0).await)
        .forget(&app)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_of_another_owner_with_a_lock_name_is_left_alone() {
    let Some((h, _)) = swarm("swarm lock squatter").await else {
        return;
    };
    let app = swarm_support::app("squat", "swarm");
    let _forget = Forget::new(&h, &[&app]);
    let lock = SwarmLock::new(manager(&h, 0).await);
    let a = LockHolder::new("squat-a");
    let token = lock.acquire(&app, &a, LEASE).await.unwrap();
    // the next version's name, taken (through another manager) by a secret with
    // only some of bluegreen's labels
    let squatter = format!("bluegreen-lock-{}-2", app.slug());
    let file = swarm_support::Scratch::new("swarm-lock-squatter");
    let data = file.path().join("data");
    std::fs::write(&data, "not a lock\n").unwrap();
    docker_on(
        &h,
        1,
        &[
            "secret",
            "create",
            "--label",
            "bluegreen.owner=bluegreen",
            "--label",
            "bluegreen.role=lock",
            &squatter,
            data.to_str().unwrap(),
        ],
    )
    .unwrap();
    let e = lock.release(&app, &a, token).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    assert!(e.to_string().contains(&squatter), "{e}");
    // the lock is still held (release did not land) and the squatter stays
    assert_eq!(lock.holder(&app).await.unwrap(), Some(a.clone()));
    lock.forget(&app).await.unwrap();
    let still = docker_on(
        &h,
        2,
        &["secret", "inspect", "-f", "{{.Spec.Name}}", &squatter],
    );
    assert_eq!(
        still.as_deref(),
        Ok(squatter.as_str()),
        "the other owner's secret survives"
    );
    docker_on(&h, 0, &["secret", "rm", &squatter]).unwrap();
}
