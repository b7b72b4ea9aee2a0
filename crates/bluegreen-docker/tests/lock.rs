//! [`DockerLock`] against the real daemon: the lock contract through one handle
//! and through two (two machines on one daemon), many acquirers at once, and a
//! container of another owner that has a lock's name.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bluegreen_core::{App, ErrorKind, Lock, LockHolder};
use bluegreen_docker::DockerLock;
use bluegreen_testkit::conformance;
use support::docker;

const LEASE: Duration = Duration::from_secs(2);

/// The containers of the app's lock, by name.
fn lock_containers(app: &App) -> Vec<String> {
    let out = std::process::Command::new("docker")
        .args(["ps", "-a", "--format", "{{.Names}}"])
        .args(["--filter", &format!("label=bluegreen.lock={}", app.slug())])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Forgets the locks of `apps` now and when dropped (also after a panic).
struct Forget(Vec<App>);

impl Forget {
    fn run(&self) {
        for app in &self.0 {
            let names = lock_containers(app);
            if !names.is_empty() {
                let _ = std::process::Command::new("docker")
                    .args(["rm", "-f"])
                    .args(&names)
                    .output();
            }
        }
    }
}

impl Drop for Forget {
    fn drop(&mut self) {
        self.run();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docker_lock_keeps_the_contract_through_one_and_two_handles() {
    let Some(docker) = docker("lock contract").await else {
        return;
    };
    let app = support::app("lock", "docker");
    let other = support::app("lockx", "docker");
    let _forget = Forget(vec![app.clone(), other.clone()]);
    let here = DockerLock::new(docker);
    let there = DockerLock::new(bluegreen_docker::connect().await.unwrap());
    conformance::lock_contract(&here, &app, &other, LEASE).await;
    conformance::lock_contract_across(&here, &there, &app, &other, LEASE).await;
    // the last token is kept in one container per app, the old versions are gone
    assert_eq!(
        lock_containers(&app).len(),
        1,
        "{:?}",
        lock_containers(&app)
    );
    here.forget(&app).await.unwrap();
    here.forget(&other).await.unwrap();
    assert!(lock_containers(&app).is_empty());
    assert!(lock_containers(&other).is_empty());
}

/// Eight handles (eight machines on one daemon), two acquirers each, five rounds:
/// the testkit's many-acquirers rules, and one token per round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_many_acquirers_at_once_exactly_one_wins_and_tokens_grow() {
    let Some(docker) = docker("lock race").await else {
        return;
    };
    let app = support::app("race", "docker");
    let _forget = Forget(vec![app.clone()]);
    let mut handles: Vec<Arc<dyn Lock>> = vec![Arc::new(DockerLock::new(docker))];
    for _ in 1..8 {
        handles.push(Arc::new(DockerLock::new(
            bluegreen_docker::connect().await.unwrap(),
        )));
    }
    let (report, tokens) =
        conformance::lock_many_acquirers(&handles, &app, 2, 5, Duration::from_secs(30)).await;
    assert_eq!(report.passed(), 3, "{report}");
    assert!(
        tokens.windows(2).all(|w| w[1] == w[0].next()),
        "one token per round: {tokens:?}"
    );
    // the last token is kept in one container, the old versions are gone
    assert_eq!(
        lock_containers(&app).len(),
        1,
        "{:?}",
        lock_containers(&app)
    );
    DockerLock::new(bluegreen_docker::connect().await.unwrap())
        .forget(&app)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_of_another_owner_with_a_lock_name_is_left_alone() {
    let Some(docker) = docker("lock squatter").await else {
        return;
    };
    let app = support::app("squat", "docker");
    let _forget = Forget(vec![app.clone()]);
    let lock = DockerLock::new(docker);
    let a = LockHolder::new("squat-a");
    let token = lock.acquire(&app, &a, LEASE).await.unwrap();
    // the next version's name, taken by a container without bluegreen's labels
    let squatter = format!("bluegreen-lock-{}-2", app.slug());
    let out = std::process::Command::new("docker")
        .args(["create", "--name", &squatter, bluegreen_docker::LOCK_IMAGE])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let e = lock.release(&app, &a, token).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    assert!(e.to_string().contains(&squatter), "{e}");
    lock.forget(&app).await.unwrap();
    let still = std::process::Command::new("docker")
        .args(["inspect", "-f", "{{.Name}}", &squatter])
        .output()
        .unwrap();
    assert!(
        still.status.success(),
        "the other owner's container survives"
    );
    std::process::Command::new("docker")
        .args(["rm", "-f", &squatter])
        .output()
        .unwrap();
}
