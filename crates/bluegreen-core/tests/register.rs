//! The register of versions (`bluegreen_core::register`) over an in-memory store
//! whose creates are atomic by name, in both kinds: data written with the create,
//! and data written by a second call after it (with writers that die in between and
//! writers that write too late). Checked against the lock contract, and with many
//! acquirers at once on a multi-threaded runtime: exactly one wins, tokens grow.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bluegreen_core::labels::Labels;
use bluegreen_core::register::{self, Data, Found, RegisterLock, Store, Stored};
use bluegreen_core::{async_trait, App, ErrorKind, Lock, LockHolder, Result};
use bluegreen_testkit::conformance;

/// A resource of the store.
#[derive(Clone)]
struct Resource {
    labels: Option<Labels>,
    created: SystemTime,
}

/// Named resources with an atomic create. With `later`, a create makes an empty
/// resource, yields, then writes its labels (a platform app and its config vars);
/// `die` makes the next such writer stop before writing.
#[derive(Clone, Default)]
struct MemoryStore {
    resources: Arc<Mutex<BTreeMap<String, Resource>>>,
    later: bool,
    window: Duration,
    die: Arc<Mutex<usize>>,
}

impl MemoryStore {
    fn names(&self) -> Vec<String> {
        self.resources.lock().unwrap().keys().cloned().collect()
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn kind(&self) -> &'static str {
        "resource"
    }

    fn provider(&self) -> &'static str {
        "memory"
    }

    fn name(&self, app: &App, version: u64) -> String {
        format!("lock-{}-{version}", app.slug())
    }

    async fn list(&self, slug: &str, _app: &App) -> Result<Vec<Stored>> {
        let prefix = format!("lock-{slug}-");
        let all = self.resources.lock().unwrap().clone();
        Ok(all
            .into_iter()
            .filter(|(n, _)| n.starts_with(&prefix))
            .map(|(name, r)| Stored {
                id: name.clone(),
                data: match r.labels {
                    Some(l) => Data::Labels(l),
                    None => Data::Pending {
                        version: name[prefix.len()..].parse().unwrap(),
                        until: r.created + self.window,
                    },
                },
                name,
            })
            .collect())
    }

    async fn create(&self, name: &str, labels: Labels) -> Result<bool> {
        {
            let mut all = self.resources.lock().unwrap();
            if all.contains_key(name) {
                return Ok(false);
            }
            all.insert(
                name.to_owned(),
                Resource {
                    labels: (!self.later).then(|| labels.clone()),
                    created: SystemTime::now(),
                },
            );
        }
        if !self.later {
            return Ok(true);
        }
        tokio::task::yield_now().await;
        {
            let mut die = self.die.lock().unwrap();
            if *die > 0 {
                *die -= 1;
                return Err(bluegreen_core::Error::provider(
                    "memory",
                    "the writer died",
                    false,
                ));
            }
        }
        let mut all = self.resources.lock().unwrap();
        match all.get_mut(name) {
            Some(r) => {
                r.labels = Some(labels);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn find(&self, name: &str) -> Result<Found> {
        Ok(match self.resources.lock().unwrap().get(name) {
            None => Found::Missing,
            Some(Resource { labels: None, .. }) => Found::Pending,
            Some(Resource {
                labels: Some(l), ..
            }) => Found::Labelled(l.clone()),
        })
    }

    async fn remove(&self, id: &str) {
        self.resources.lock().unwrap().remove(id);
    }
}

/// A lock on the store: a handle of its own, as another machine's.
fn lock(store: &MemoryStore) -> RegisterLock<MemoryStore> {
    RegisterLock::new(store.clone())
}

fn apps() -> (App, App) {
    (
        App::new("web", "test").unwrap(),
        App::new("api", "test").unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_kinds_of_store_keep_the_lock_contract() {
    for later in [false, true] {
        let store = MemoryStore {
            later,
            window: Duration::from_secs(5),
            ..Default::default()
        };
        let (app, other) = apps();
        let (here, there) = (lock(&store), lock(&store));
        // leases on the wall clock: a second
        conformance::lock_contract_across(&here, &there, &app, &other, Duration::from_secs(1))
            .await;
        // one version kept per app: the last token
        assert_eq!(store.names().len(), 2, "later {later}: {:?}", store.names());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_many_acquirers_at_once_exactly_one_wins_in_both_kinds() {
    for later in [false, true] {
        let store = MemoryStore {
            later,
            window: Duration::from_secs(5),
            ..Default::default()
        };
        let (app, _) = apps();
        let locks: Vec<Arc<dyn Lock>> = (0..4)
            .map(|_| Arc::new(lock(&store)) as Arc<dyn Lock>)
            .collect();
        let (report, tokens) =
            conformance::lock_many_acquirers(&locks, &app, 3, 20, Duration::from_secs(60)).await;
        assert_eq!(report.passed(), 3, "later {later}: {report}");
        // a register raises the token by one per new holder
        assert!(
            tokens.windows(2).all(|w| w[1] == w[0].next()),
            "later {later}: {tokens:?}"
        );
    }
}

/// A writer that dies between its create and its write leaves a version without
/// data: the next change waits for its window, then skips it, takes the version
/// after it with a greater token, and never removes it (nothing marks it as ours).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_whose_writer_died_is_waited_for_then_skipped() {
    let window = Duration::from_millis(300);
    let store = MemoryStore {
        later: true,
        window,
        ..Default::default()
    };
    let (app, _) = apps();
    let l = lock(&store);
    let (a, b) = (LockHolder::new("a"), LockHolder::new("b"));
    let ta = l.acquire(&app, &a, Duration::from_secs(60)).await.unwrap();
    *store.die.lock().unwrap() = 1;
    let e = l.release(&app, &a, ta).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Provider, "{e}");
    assert_eq!(store.names(), ["lock-web-test-1", "lock-web-test-2"]);
    // version 2 is pending: the holder is unknown
    let reg = RegisterLock::new(store.clone());
    assert_eq!(
        reg.holder(&app).await.unwrap_err().kind(),
        ErrorKind::Locked
    );
    // after its window, the state is version 1's: held by `a`, who can still release
    assert_eq!(
        l.acquire(&app, &b, Duration::from_secs(60))
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::Locked
    );
    assert_eq!(reg.holder(&app).await.unwrap(), Some(a.clone()));
    l.release(&app, &a, ta).await.unwrap();
    let tb = l.acquire(&app, &b, Duration::from_secs(60)).await.unwrap();
    assert!(tb > ta);
    let names = store.names();
    assert!(names.contains(&"lock-web-test-2".to_owned()), "{names:?}");
    assert!(names.contains(&"lock-web-test-4".to_owned()), "{names:?}");
    assert!(!names.contains(&"lock-web-test-1".to_owned()), "{names:?}");
    reg.forget(&app).await.unwrap();
    assert_eq!(store.names(), ["lock-web-test-2"]);
    assert!(register::ours(
        &Labels::from([
            ("bluegreen.owner".to_owned(), "bluegreen".to_owned()),
            (register::ROLE_LABEL.to_owned(), register::ROLE.to_owned()),
            (register::LOCK_LABEL.to_owned(), "web-test".to_owned()),
        ]),
        "web-test"
    ));
}
