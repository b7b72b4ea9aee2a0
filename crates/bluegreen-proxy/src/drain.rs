//! The drain timeout: requests still in flight on a group some time after it lost
//! its traffic (or was detached) are cut.
//!
//! When a change takes a group's traffic away, the group's state is replaced and
//! the old one is retired: no new request goes to it, its requests in flight go
//! on. [`ProxyOptions::drain_timeout`](crate::ProxyOptions::drain_timeout) later,
//! unless the group has traffic again, the old state is *cut*: its backend
//! connections still in use are dropped (its idle ones closed when it was
//! retired), a request still
//! waiting for its response headers gets a 504, a response still streaming ends
//! with an error (so the client sees it incomplete, never cut short as if whole),
//! and upgraded connections close.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use crate::backend::{self, Epoch};
use crate::state::{AppState, GroupState};

/// The error a cut response body ends with.
#[derive(Debug)]
pub(crate) struct DrainTimeout {
    pub(crate) group: String,
}

impl std::fmt::Display for DrainTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "group {} lost its traffic and the drain timeout passed",
            self.group
        )
    }
}

impl std::error::Error for DrainTimeout {}

impl GroupState {
    /// Whether the drain timeout cut this state's requests.
    pub(crate) fn is_cut(&self) -> bool {
        self.cut.load(Ordering::Acquire)
    }

    /// Completes once this state is cut.
    pub(crate) async fn until_cut(&self, epoch: &Epoch) {
        let mut changes = epoch.subscribe();
        while !self.is_cut() {
            if changes.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Cuts `old` (a retired state of a group of `app`) once `timeout` has passed
/// with the group out of traffic. A state retired while its group still has
/// traffic (the group was attached again) waits until the group loses it; the
/// clock restarts whenever the group has traffic again when it runs out. The
/// watch ends once every request of `old` is done.
pub(crate) fn cut_after(
    timeout: std::time::Duration,
    app: &Arc<AppState>,
    old: Arc<GroupState>,
    epoch: Arc<Epoch>,
) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let app: Weak<AppState> = Arc::downgrade(app);
    // held weakly: a state whose requests are all done is gone, with its pool
    let id = old.id.clone();
    let old: Weak<GroupState> = Arc::downgrade(&old);
    // `None` once the app is gone
    let routed = {
        let app = app.clone();
        let id = id.clone();
        move || {
            app.upgrade()
                .map(|a| a.snapshot.load().table.weight(&id) > 0)
        }
    };
    runtime.spawn(async move {
        let mut changes = epoch.subscribe();
        loop {
            // while the group has traffic, its old requests go on
            loop {
                if old.strong_count() == 0 {
                    return;
                }
                match routed() {
                    None => return,
                    Some(false) => break,
                    Some(true) => {}
                }
                if changes.changed().await.is_err() {
                    return;
                }
            }
            tokio::time::sleep(timeout).await;
            match routed() {
                None => return,
                Some(false) => break,
                Some(true) => {}
            }
        }
        let Some(old) = old.upgrade() else { return };
        old.cut.store(true, Ordering::Release);
        let host = app.upgrade().map(|a| a.host.clone()).unwrap_or_default();
        tracing::info!(%host, group = %id, ?timeout, "drain timeout: requests still in flight are cut");
        backend::bump(&epoch);
    });
}
