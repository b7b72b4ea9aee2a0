//! Lifecycle hooks: callbacks at named stages of a deployment that continue it,
//! fail it (it reverts), or pause it until told to continue.
//!
//! A hook is added to a [`DeployRequest`](crate::DeployRequest) for a [`Stage`]
//! ([`DeployRequest::hook`](crate::DeployRequest::hook)). The engine calls it once
//! the deployment reaches that stage, bounded by [`Hook::timeout`]: a hook that
//! times out or fails fails the deployment closed (traffic back, the new group
//! removed, as for any failure).
//!
//! A hook that answers [`Decision::Pause`] stops the deployment where it is: the
//! engine releases the app's lock and returns a report with
//! [`DeployReport::paused`](crate::DeployReport::paused) set, leaving the platform
//! as it is (the new group running, traffic unchanged). Nothing about the pause is
//! kept in the deploying program: [`Engine::resume`](crate::Engine::resume) with the
//! same request, from this program or another one, finds the deployment from the
//! platform's state and goes on, taking the pause at the stage it stopped at as
//! answered (the hook is called again there with [`HookContext::resumed`] set, and
//! may still fail the deployment).
//!
//! Stages are known from the platform's state, so a deployment run again after a
//! crash may call a hook of the stage it was at a second time: a hook runs at
//! least once per stage a deployment passes.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::app::App;
use crate::group::{DeploymentId, GroupId};
use crate::release::Release;

/// Where a deployment calls hooks, in order.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    /// The image is prepared; nothing is launched yet (before a release task that
    /// runs before launch).
    BeforeLaunch,
    /// Every instance of the new group is healthy; it is not attached to the
    /// router yet.
    AfterHealthy,
    /// The new group is attached and verified, with no traffic; the next step gives
    /// it its first share.
    BeforeTraffic,
    /// The new group got a share of traffic ([`HookContext::weight`], 100 for the
    /// final switch) and the router confirmed it.
    AfterTrafficStep,
    /// The new group has all traffic and the bake after the switch passed (or there
    /// was none).
    AfterBake,
    /// Older groups are about to be drained and retired.
    BeforeRetire,
}

impl Stage {
    /// Every stage, in order.
    pub const ALL: [Stage; 6] = [
        Stage::BeforeLaunch,
        Stage::AfterHealthy,
        Stage::BeforeTraffic,
        Stage::AfterTrafficStep,
        Stage::AfterBake,
        Stage::BeforeRetire,
    ];

    /// The stage's name, `before_launch` style (the `BLUEGREEN_STAGE` of a command
    /// hook).
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::BeforeLaunch => "before_launch",
            Stage::AfterHealthy => "after_healthy",
            Stage::BeforeTraffic => "before_traffic",
            Stage::AfterTrafficStep => "after_traffic_step",
            Stage::AfterBake => "after_bake",
            Stage::BeforeRetire => "before_retire",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a hook is told.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookContext {
    /// The app.
    pub app: App,
    /// This run of the deployment.
    pub deployment: DeploymentId,
    /// The stage.
    pub stage: Stage,
    /// The new group.
    pub group: GroupId,
    /// What the new group runs.
    pub release: Release,
    /// The group with the most traffic before the deployment, if any.
    pub previous: Option<GroupId>,
    /// The new group's share of traffic now, 0 to 100.
    pub weight: u8,
    /// Where the new group can be reached alone, where the router gives one.
    pub preview: Option<String>,
    /// The call is made by [`Engine::resume`](crate::Engine::resume) before it has
    /// passed the pause it resumes: a [`Decision::Pause`] now counts as
    /// [`Decision::Continue`] (once). A resumed run goes through the stages the
    /// platform's state does not tell apart from the one it stopped at, so hooks of
    /// such stages before it may be called again with this set.
    pub resumed: bool,
}

impl HookContext {
    /// A context at `stage` for `group` running `release`, with no previous group,
    /// weight 0, no preview address and not resumed: for testing a hook outside a
    /// deployment (the engine builds its own).
    pub fn new(
        app: App,
        deployment: DeploymentId,
        stage: Stage,
        group: GroupId,
        release: Release,
    ) -> Self {
        HookContext {
            app,
            deployment,
            stage,
            group,
            release,
            previous: None,
            weight: 0,
            preview: None,
            resumed: false,
        }
    }

    /// Sets [`HookContext::previous`].
    pub fn with_previous(mut self, previous: GroupId) -> Self {
        self.previous = Some(previous);
        self
    }

    /// Sets [`HookContext::weight`] (0 to 100).
    pub fn with_weight(mut self, weight: u8) -> Self {
        self.weight = weight;
        self
    }

    /// Sets [`HookContext::preview`].
    pub fn with_preview(mut self, preview: impl Into<String>) -> Self {
        self.preview = Some(preview.into());
        self
    }

    /// Sets [`HookContext::resumed`].
    pub fn with_resumed(mut self, resumed: bool) -> Self {
        self.resumed = resumed;
        self
    }
}

/// What a hook decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Go on.
    Continue,
    /// Fail the deployment with this reason: it reverts.
    Fail(String),
    /// Stop here, leaving everything as it is, until
    /// [`Engine::resume`](crate::Engine::resume); the reason goes in the report.
    Pause(String),
}

/// A callback at a [`Stage`] of a deployment.
#[async_trait]
pub trait Hook: Send + Sync {
    /// A short name for events and errors (`notify-slack`).
    fn name(&self) -> &str;

    /// How long the engine waits for [`Hook::call`] (default 300 s). Past it, the
    /// deployment fails closed.
    fn timeout(&self) -> Duration {
        Duration::from_secs(300)
    }

    /// Decides what the deployment does at `context.stage`. A hook that panics
    /// counts as [`Decision::Fail`]: the deployment reverts.
    async fn call(&self, context: &HookContext) -> Decision;
}

type HookFuture = Pin<Box<dyn Future<Output = Decision> + Send>>;

struct FnHook<F> {
    name: String,
    f: F,
}

#[async_trait]
impl<F> Hook for FnHook<F>
where
    F: Fn(HookContext) -> HookFuture + Send + Sync,
{
    fn name(&self) -> &str {
        &self.name
    }

    async fn call(&self, context: &HookContext) -> Decision {
        (self.f)(context.clone()).await
    }
}

/// A hook from an async closure.
///
/// ```
/// use bluegreen_core::{hook_fn, Decision, Stage};
/// let approve = hook_fn("approve", |ctx| async move {
///     if ctx.resumed { Decision::Continue } else { Decision::Pause("waiting for a person".into()) }
/// });
/// assert_eq!(approve.name(), "approve");
/// # let _ = Stage::BeforeTraffic;
/// ```
pub fn hook_fn<F, Fut>(name: impl Into<String>, f: F) -> Arc<dyn Hook>
where
    F: Fn(HookContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Decision> + Send + 'static,
{
    Arc::new(FnHook {
        name: name.into(),
        f: move |ctx| -> HookFuture { Box::pin(f(ctx)) },
    })
}
