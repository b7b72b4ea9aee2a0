//! The planner: one pure function decides every next step of every operation.
//!
//! [`plan`] reads what the platform showed ([`Observed`]), what this run has
//! learned since ([`Progress`]) and what the caller wants ([`Intent`], [`Policy`]),
//! and names one idempotent step ([`Plan`]). The executor (`execute.rs`) takes it,
//! checks its lease, acts, records the outcome, and asks again. What a crash leaves
//! behind is decided here and only here, and tested as a table.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::app::App;
use crate::error::{Error, ErrorKind};
use crate::event::Step;
use crate::group::{DeploymentId, Generation, Group, GroupId};
use crate::hook::Stage;
use crate::image::ImageId;
use crate::instance::Instance;
use crate::release::{Release, ReleaseId};
use crate::route::RouteTable;
use crate::router::Attachment;
use crate::task::TaskPhase;

/// What the caller wants. The image of a deployment is prepared before planning:
/// the planner needs the release's id.
#[derive(Clone, Debug)]
pub(crate) enum Intent {
    /// Move the app to `release`; with `stop_before_traffic`, stop once the group
    /// is verified ([`Engine::prepare`](crate::Engine::prepare)).
    Deploy {
        release: Release,
        stop_before_traffic: bool,
    },
    /// Move all traffic to an existing group.
    Promote { group: GroupId },
    /// One release back through the live group's history; `force` goes behind a
    /// release whose task is irreversible.
    Rollback { force: bool },
    /// Back (or forward) to the release of an image.
    RollbackTo { image: ImageId, force: bool },
}

/// How traffic moves, already adapted to what the router can do.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Policy {
    /// Canary weights with their bakes, strictly growing, each below 100.
    pub(crate) steps: Vec<(u8, Duration)>,
    /// How long the new group is watched after the final switch, with the
    /// previous group kept attached.
    pub(crate) bake_after: Duration,
    /// The stages with hooks.
    pub(crate) hooks: BTreeSet<Stage>,
}

/// What the platform showed.
#[derive(Clone, Debug)]
pub(crate) struct Observed {
    pub(crate) app: App,
    pub(crate) deployment: DeploymentId,
    pub(crate) groups: Vec<Group>,
    pub(crate) routes: RouteTable,
    /// Instances of the groups the executor listed before planning (the candidates
    /// of a rollback), by group.
    pub(crate) instances: BTreeMap<GroupId, Vec<Instance>>,
    /// Groups the router had attached when the operation chose its target (the
    /// target only, where the executor asked).
    pub(crate) attached: BTreeSet<GroupId>,
    /// Warm groups may run scaled in
    /// ([`EngineOptions::warm_size`](crate::EngineOptions::warm_size)): a rollback
    /// brings one back to its size instead of passing it over.
    pub(crate) warm_scaled: bool,
}

impl Observed {
    pub(crate) fn group(&self, id: &GroupId) -> Option<&Group> {
        self.groups.iter().find(|g| &g.id == id)
    }

    /// The group with the most traffic.
    pub(crate) fn live(&self) -> Option<&Group> {
        self.routes.primary().and_then(|id| self.group(id))
    }

    pub(crate) fn next_generation(&self) -> Generation {
        self.groups
            .iter()
            .map(|g| g.generation)
            .max()
            .unwrap_or(Generation(0))
            .next()
    }

    /// The newest group, when it runs `release`: what an interrupted run of the same
    /// operation left behind.
    pub(crate) fn resumable(&self, release: &ReleaseId) -> Option<&Group> {
        self.groups
            .iter()
            .max_by_key(|g| g.generation)
            .filter(|g| &g.release.id() == release)
    }

    /// Healthy instances of `group`, where they were listed.
    fn healthy(&self, group: &GroupId) -> Option<usize> {
        self.instances
            .get(group)
            .map(|list| list.iter().filter(|i| i.health.is_healthy()).count())
    }

    /// Whether a warm group can take traffic back: all its instances healthy, or,
    /// where warm groups run scaled in, none of them failing (it is scaled back and
    /// waited for first).
    fn ready_to_return(&self, group: &Group) -> bool {
        let Some(list) = self.instances.get(&group.id) else {
            return false;
        };
        if self.healthy(&group.id).unwrap_or(0) >= group.release.size as usize {
            return true;
        }
        self.warm_scaled
            && list.len() <= group.release.size as usize
            && list.iter().all(|i| {
                matches!(
                    i.health,
                    crate::instance::Health::Healthy | crate::instance::Health::Starting
                )
            })
    }
}

/// Where an operation goes: chosen once, from the first observation.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Target {
    /// The group that ends with all traffic.
    pub(crate) group: Group,
    /// The table to return to when the operation fails.
    pub(crate) baseline: RouteTable,
    /// Whether a failure destroys the group: it was launched for this release by
    /// this run or an interrupted one (not a warm group brought back).
    pub(crate) disposable: bool,
    /// The group was left by an interrupted run and is finished, not relaunched.
    pub(crate) adopted: bool,
    /// The group already had all traffic when the operation began.
    pub(crate) already_live: bool,
}

/// What this run has learned since it observed: facts the platform does not keep.
#[derive(Clone, Debug, Default)]
pub(crate) struct Progress {
    pub(crate) target: Option<Target>,
    /// The target was launched (or launched again: launch is idempotent) by this run.
    pub(crate) launched: bool,
    /// Every wanted instance was healthy, as the fleet reported them.
    pub(crate) healthy: Option<Vec<Instance>>,
    pub(crate) attachment: Option<Attachment>,
    pub(crate) verified: bool,
    /// The router reported every member of the target healthy before the move
    /// to this weight.
    pub(crate) ready_for: Option<u8>,
    /// The bake and analysis at this weight passed.
    pub(crate) baked: Option<u8>,
    /// This run made and confirmed the final switch.
    pub(crate) switched: bool,
    /// The bake after the final switch passed.
    pub(crate) watched: bool,
    pub(crate) retired: bool,
    /// The release task succeeded (this run started it or found it finished).
    pub(crate) task_done: bool,
    /// The warm target was scaled back to its size by this run.
    pub(crate) scaled_out: bool,
    /// Hook stages answered in this run, with the weight they were at.
    pub(crate) hooks_done: BTreeSet<(Stage, u8)>,
}

/// The next step.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Plan {
    /// Refuse, changing nothing.
    Refuse(Refusal),
    /// Go to this target (a decision; no platform call).
    Choose(Box<Target>),
    /// Run the release's task and wait for it (idempotent: a finished task is
    /// not run again).
    RunTask,
    /// Call the hooks of `stage`, the group at `weight`.
    Hook { stage: Stage, weight: u8 },
    /// Launch the target group (idempotent).
    Launch,
    /// Scale a warm target back to its release's size (idempotent).
    ScaleOut,
    /// Wait until every wanted instance is healthy.
    WaitHealthy,
    /// Attach the group to the router without traffic.
    Attach,
    /// Run the verify checks against the group alone.
    Verify,
    /// Ask the router whether every member of the group is healthy before the
    /// group gets `weight` percent; `step` is where the answer counts.
    Ready { weight: u8, step: Step },
    /// Set the table that gives the group `weight` percent, and confirm it.
    Shift { table: RouteTable, weight: u8 },
    /// Bake at `weight` for `bake`, then analyse.
    Bake { weight: u8, bake: Duration },
    /// Watch the group after the final switch for `duration`; a breach switches
    /// traffic back to `fallback`.
    Watch {
        duration: Duration,
        fallback: RouteTable,
    },
    /// Drain the groups that lost traffic and retire those beyond `keep`.
    Retire,
    /// Nothing left to do.
    Done,
}

/// Why an operation is refused before any change.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Refusal {
    pub(crate) kind: ErrorKind,
    pub(crate) message: String,
}

impl Refusal {
    fn not_found(message: String) -> Self {
        Refusal {
            kind: ErrorKind::NotFound,
            message,
        }
    }

    fn conflict(message: String) -> Self {
        Refusal {
            kind: ErrorKind::Conflict,
            message,
        }
    }

    /// The error the caller gets: at the observe step, nothing changed.
    pub(crate) fn error(&self) -> Error {
        let e = match self.kind {
            ErrorKind::NotFound => Error::not_found(self.message.clone()),
            _ => Error::conflict(self.message.clone()),
        };
        e.at(Step::Observe, true)
    }
}

/// Decides the next step. Pure: the same inputs give the same step.
pub(crate) fn plan(
    observed: &Observed,
    progress: &Progress,
    intent: &Intent,
    policy: &Policy,
) -> Plan {
    let Some(target) = &progress.target else {
        return match choose(observed, intent) {
            Ok(target) => Plan::Choose(Box::new(target)),
            Err(e) => Plan::Refuse(e),
        };
    };
    next(observed, progress, target, intent, policy)
}

/// What happens to the platform when an operation fails before it is done.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Undo {
    /// The table to restore, when the current one differs.
    pub(crate) restore: Option<RouteTable>,
    /// Destroy the target group (it was launched for this operation).
    pub(crate) destroy: bool,
}

/// Decides how a failed operation is undone. `keep_failed` keeps a launched group.
pub(crate) fn undo(observed: &Observed, target: &Target, keep_failed: bool) -> Undo {
    let restore = (observed.routes != target.baseline).then(|| target.baseline.clone());
    Undo {
        restore,
        destroy: target.disposable && !keep_failed && !target.already_live,
    }
}

fn choose(observed: &Observed, intent: &Intent) -> Result<Target, Refusal> {
    match intent {
        Intent::Deploy { release, .. } => Ok(choose_deploy(observed, release)),
        Intent::Promote { group } => {
            let g = observed
                .group(group)
                .ok_or_else(|| Refusal::not_found(format!("group {group}")))?;
            Ok(Target {
                group: g.clone(),
                baseline: observed.routes.without(group),
                // a prepared group that fails its promotion is removed, as before
                disposable: true,
                adopted: false,
                already_live: observed.routes == RouteTable::single(group.clone()),
            })
        }
        Intent::Rollback { force } => {
            let live = live_group(observed)?;
            if !force {
                irreversible(std::iter::once(&live.release))?;
            }
            let Some(previous) = live.previous.clone() else {
                return Err(Refusal::conflict(format!(
                    "{} has no older release to roll back to (a group remembers {} releases)",
                    live.id,
                    crate::group::HISTORY_LEN
                )));
            };
            let history: Vec<Release> = live.older.clone();
            Ok(choose_release(observed, live, previous, history, true))
        }
        Intent::RollbackTo { image, force } => {
            let live = live_group(observed)?;
            let Some(release) = release_of(observed, image).cloned() else {
                return Err(Refusal::not_found(format!(
                    "image {image}: no group of {} runs it and no earlier release uses it",
                    observed.app
                )));
            };
            // the releases gone behind: the live one and those between it and the
            // target in the live history (none when the target is newer)
            if let (false, Some(i)) = (force, live.history().position(|r| r == &release)) {
                if live.release != release {
                    irreversible(std::iter::once(&live.release).chain(live.history().take(i)))?;
                }
            }
            // the history the group of `release` gets: what came before it in the
            // live group's history, or the live history when it is newer
            let history: Vec<Release> = match live.history().position(|r| r == &release) {
                Some(i) => live.history().skip(i + 1).cloned().collect(),
                None => std::iter::once(live.release.clone())
                    .chain(live.history().cloned())
                    .collect(),
            };
            Ok(choose_release(observed, live, release, history, false))
        }
    }
}

fn choose_deploy(observed: &Observed, release: &Release) -> Target {
    let id = release.id();
    if let Some(g) = observed.resumable(&id) {
        let already_live = observed.routes == RouteTable::single(g.id.clone());
        return Target {
            group: g.clone(),
            baseline: observed.routes.without(&g.id),
            disposable: true,
            adopted: !already_live,
            already_live,
        };
    }
    let history: Vec<Release> = observed
        .live()
        .map(|live| {
            std::iter::once(live.release.clone())
                .chain(live.history().cloned())
                .collect()
        })
        .unwrap_or_default();
    let group = Group::with_history(
        observed.app.clone(),
        observed.next_generation(),
        release.clone(),
        observed.deployment.clone(),
        history,
    );
    Target {
        baseline: observed.routes.clone(),
        group,
        disposable: true,
        adopted: false,
        already_live: false,
    }
}

/// The target of a rollback to `release` from `live`: the live group itself when it
/// runs `release` with all traffic (a rerun: only the retirement is left), a warm
/// group of that release with that history when it is healthy, the group an
/// interrupted rollback launched, or a new group.
fn choose_release(
    observed: &Observed,
    live: &Group,
    release: Release,
    history: Vec<Release>,
    strict_history: bool,
) -> Target {
    let routes = &observed.routes;
    if live.release == release && *routes == RouteTable::single(live.id.clone()) {
        return Target {
            group: live.clone(),
            baseline: routes.clone(),
            disposable: false,
            adopted: false,
            already_live: true,
        };
    }
    if live.release == release {
        // a rerun that finds the live group of `release` with part of the traffic
        return Target {
            group: live.clone(),
            baseline: routes.without(&live.id),
            disposable: false,
            adopted: false,
            already_live: false,
        };
    }
    let same_history = |g: &Group| {
        let theirs: Vec<&Release> = g.history().collect();
        let ours: Vec<&Release> = history.iter().collect();
        theirs == ours
    };
    // a warm group of the release, ready, whose history continues the walk back
    // (a group with another history would make the next rollback go elsewhere)
    let warm = observed
        .groups
        .iter()
        .filter(|g| g.id != live.id && g.release == release)
        .filter(|g| !strict_history || same_history(g))
        .filter(|g| observed.ready_to_return(g))
        .max_by_key(|g| g.generation);
    if let Some(g) = warm {
        return Target {
            group: g.clone(),
            baseline: routes.without(&g.id),
            disposable: false,
            adopted: false,
            already_live: false,
        };
    }
    // the newest group, not live, of that release and history: what an interrupted
    // rollback launched; it is finished rather than launched again
    let interrupted = observed
        .resumable(&release.id())
        .filter(|g| g.id != live.id && same_history(g));
    if let Some(g) = interrupted {
        return Target {
            group: g.clone(),
            baseline: routes.without(&g.id),
            disposable: true,
            adopted: true,
            already_live: false,
        };
    }
    let group = Group::with_history(
        observed.app.clone(),
        observed.next_generation(),
        release,
        observed.deployment.clone(),
        history,
    );
    Target {
        group,
        baseline: routes.clone(),
        disposable: true,
        adopted: false,
        already_live: false,
    }
}

/// Refuses going behind a release whose task is marked irreversible.
fn irreversible<'a>(passed: impl Iterator<Item = &'a Release>) -> Result<(), Refusal> {
    for release in passed {
        if let Some(task) = release.task.as_ref().filter(|t| t.irreversible) {
            return Err(Refusal::conflict(format!(
                "going back behind the release of image {} is refused: its task `{}` is \
                 irreversible (force the rollback to go anyway)",
                release.image,
                task.command.join(" ")
            )));
        }
    }
    Ok(())
}

fn live_group(observed: &Observed) -> Result<&Group, Refusal> {
    observed.live().ok_or_else(|| {
        Refusal::conflict(format!(
            "no group of {} has traffic: nothing to roll back",
            observed.app
        ))
    })
}

/// The release of `image`: the newest group's that runs it, or the newest
/// earlier release in any group's history that used it.
fn release_of<'a>(observed: &'a Observed, image: &ImageId) -> Option<&'a Release> {
    let mut groups: Vec<&Group> = observed.groups.iter().collect();
    groups.sort_by_key(|g| std::cmp::Reverse(g.generation));
    groups
        .iter()
        .map(|g| &g.release)
        .find(|r| &r.image == image)
        .or_else(|| {
            groups
                .iter()
                .flat_map(|g| g.history())
                .find(|r| &r.image == image)
        })
}

fn next(
    observed: &Observed,
    progress: &Progress,
    target: &Target,
    intent: &Intent,
    policy: &Policy,
) -> Plan {
    let group = &target.group.id;
    let all = RouteTable::single(group.clone());
    let hook = |stage: Stage, weight: u8| -> Option<Plan> {
        (policy.hooks.contains(&stage) && !progress.hooks_done.contains(&(stage, weight)))
            .then_some(Plan::Hook { stage, weight })
    };
    if target.already_live && observed.routes == all {
        // a rerun after the final switch: the earlier run's bake after the switch
        // may not have ended, so a deployment watches again while the previous
        // release is still warm
        let fallback = watch_fallback(observed, target);
        let watch = matches!(intent, Intent::Deploy { .. })
            && !progress.watched
            && !policy.bake_after.is_zero()
            && fallback.is_some();
        return after_switch(progress, policy, watch, fallback, &hook);
    }
    let exists = observed.group(group).is_some();
    let task = match intent {
        Intent::Deploy { .. } => target.group.release.task.as_ref().map(|t| t.phase),
        _ => None,
    };
    if !exists && progress.healthy.is_none() {
        if let Some(p) = hook(Stage::BeforeLaunch, 0) {
            return p;
        }
        if task == Some(TaskPhase::BeforeLaunch) && !progress.task_done {
            return Plan::RunTask;
        }
    }
    // launch is idempotent: a group this operation owns is launched again to
    // finish a launch an interrupted run left half done
    if !exists || (target.disposable && !progress.launched) {
        return Plan::Launch;
    }
    // a warm group brought back may run scaled in: it gets its size back before it
    // is waited for, and it gets no traffic before every instance is healthy
    if observed.warm_scaled
        && !target.disposable
        && !progress.scaled_out
        && progress.healthy.is_none()
    {
        return Plan::ScaleOut;
    }
    if progress.healthy.is_none() {
        return Plan::WaitHealthy;
    }
    let weight = observed.routes.weight(group);
    if progress.attachment.is_none() && weight == 0 && !observed.attached.contains(group) {
        if let Some(p) = hook(Stage::AfterHealthy, 0) {
            return p;
        }
    }
    if task == Some(TaskPhase::AfterHealthy) && !progress.task_done && weight == 0 {
        return Plan::RunTask;
    }
    if progress.attachment.is_none() {
        return Plan::Attach;
    }
    if !progress.verified {
        return Plan::Verify;
    }
    if matches!(
        intent,
        Intent::Deploy {
            stop_before_traffic: true,
            ..
        }
    ) {
        return Plan::Done;
    }
    if observed.routes == all {
        let fallback = watch_fallback(observed, target);
        let watch = progress.switched
            && !progress.watched
            && !policy.bake_after.is_zero()
            && fallback.is_some();
        return after_switch(progress, policy, watch, fallback, &hook);
    }
    if weight == 0 {
        if let Some(p) = hook(Stage::BeforeTraffic, 0) {
            return p;
        }
    }
    if weight > 0 {
        if let Some(p) = hook(Stage::AfterTrafficStep, weight) {
            return p;
        }
    }
    // a canary weight reached (by this run or an interrupted one) is baked before
    // the next move
    if weight > 0 && progress.baked != Some(weight) {
        if let Some((_, bake)) = policy.steps.iter().find(|(w, _)| *w == weight) {
            return Plan::Bake {
                weight,
                bake: *bake,
            };
        }
    }
    let to = policy
        .steps
        .iter()
        .map(|(w, _)| *w)
        .find(|w| *w > weight)
        .unwrap_or(100);
    if progress.ready_for != Some(to) {
        let step = if weight == 0 {
            Step::Verify
        } else {
            Step::Promote
        };
        return Plan::Ready { weight: to, step };
    }
    let table = if to == 100 {
        all
    } else {
        target.baseline.blend(group, to)
    };
    Plan::Shift { table, weight: to }
}

/// The steps once the group has all traffic: the hook after the final step, the
/// bake after the switch, the hooks after the bake and before retiring, retiring.
fn after_switch(
    progress: &Progress,
    policy: &Policy,
    watch: bool,
    fallback: Option<RouteTable>,
    hook: &dyn Fn(Stage, u8) -> Option<Plan>,
) -> Plan {
    if let Some(p) = hook(Stage::AfterTrafficStep, 100) {
        return p;
    }
    if watch {
        if let Some(fallback) = fallback {
            return Plan::Watch {
                duration: policy.bake_after,
                fallback,
            };
        }
    }
    if progress.retired {
        return Plan::Done;
    }
    if let Some(p) = hook(Stage::AfterBake, 100) {
        return p;
    }
    if let Some(p) = hook(Stage::BeforeRetire, 100) {
        return p;
    }
    Plan::Retire
}

/// The table a breach after the final switch goes back to: the baseline, when
/// its groups are still there; on a rerun that found the switch done, the newest
/// other group of the previous release.
fn watch_fallback(observed: &Observed, target: &Target) -> Option<RouteTable> {
    let baseline = &target.baseline;
    if !baseline.is_empty() {
        let present = baseline.groups().all(|g| observed.group(g).is_some());
        return present.then(|| baseline.clone());
    }
    let previous = target.group.previous.as_ref()?;
    observed
        .groups
        .iter()
        .filter(|g| g.id != target.group.id && &g.release == previous)
        .max_by_key(|g| g.generation)
        .map(|g| RouteTable::single(g.id.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instance::Health;

    fn app() -> App {
        App::new("web", "production").unwrap()
    }

    fn release(tag: &str) -> Release {
        Release::new(ImageId::new(tag), 2)
    }

    fn group(n: u32, tag: &str, history: &[&str]) -> Group {
        Group::with_history(
            app(),
            Generation(n),
            release(tag),
            DeploymentId::new(format!("d-{n}")),
            history.iter().map(|t| release(t)),
        )
    }

    fn gid(n: u32) -> GroupId {
        Group::id_for(&app(), Generation(n))
    }

    fn observed(groups: Vec<Group>, routes: RouteTable) -> Observed {
        Observed {
            app: app(),
            deployment: DeploymentId::new("d-now"),
            groups,
            routes,
            instances: BTreeMap::new(),
            attached: BTreeSet::new(),
            warm_scaled: false,
        }
    }

    fn healthy(n: usize) -> Vec<Instance> {
        (0..n)
            .map(|i| Instance::new(format!("i-{i}"), None, Health::Healthy))
            .collect()
    }

    fn deploy(tag: &str) -> Intent {
        Intent::Deploy {
            release: release(tag),
            stop_before_traffic: false,
        }
    }

    fn canary() -> Policy {
        Policy {
            steps: vec![(10, Duration::from_secs(60)), (50, Duration::from_secs(60))],
            bake_after: Duration::ZERO,
            ..Policy::default()
        }
    }

    fn chosen(o: &Observed, intent: &Intent) -> Target {
        match plan(o, &Progress::default(), intent, &Policy::default()) {
            Plan::Choose(t) => *t,
            other => panic!("{other:?}"),
        }
    }

    /// Progress of a run that has brought `target` up and verified it.
    fn verified(target: Target) -> Progress {
        Progress {
            target: Some(target),
            launched: true,
            healthy: Some(healthy(2)),
            attachment: Some(Attachment::default()),
            verified: true,
            ..Progress::default()
        }
    }

    #[test]
    fn a_first_deployment_launches_generation_one() {
        let o = observed(vec![], RouteTable::empty());
        let t = chosen(&o, &deploy("a"));
        assert_eq!(t.group.id, gid(1));
        assert!(t.disposable && !t.adopted && !t.already_live);
        assert_eq!(t.group.previous, None);
        let p = Progress {
            target: Some(t),
            ..Progress::default()
        };
        assert_eq!(plan(&o, &p, &deploy("a"), &Policy::default()), Plan::Launch);
    }

    #[test]
    fn a_deployment_records_the_history_it_replaces() {
        let o = observed(vec![group(2, "b", &["a"])], RouteTable::single(gid(2)));
        let t = chosen(&o, &deploy("c"));
        assert_eq!(t.group.id, gid(3));
        let history: Vec<_> = t.group.history().map(|r| r.image.to_string()).collect();
        assert_eq!(history, ["b", "a"]);
    }

    #[test]
    fn history_is_capped() {
        let old: Vec<String> = (0..20).map(|i| format!("r{i}")).collect();
        let refs: Vec<&str> = old.iter().map(String::as_str).collect();
        let o = observed(vec![group(30, "x", &refs)], RouteTable::single(gid(30)));
        let t = chosen(&o, &deploy("y"));
        assert_eq!(t.group.history().count(), crate::group::HISTORY_LEN);
    }

    /// A situation, the groups and routes a crash left, the progress so far, and
    /// the step expected.
    type Case = (
        &'static str,
        Vec<Group>,
        RouteTable,
        fn(Target) -> Progress,
        Plan,
    );

    /// Every situation a crash can leave a deployment in, and the step it takes.
    #[test]
    fn a_rerun_deployment_resumes_where_the_platform_stands() {
        let v1 = group(1, "a", &[]);
        let v2 = group(2, "b", &["a"]);
        let b = deploy("b");
        // (situation, routes, progress so far, expected next step)
        let cases: Vec<Case> = vec![
            (
                "crashed before the launch",
                vec![v1.clone()],
                RouteTable::single(gid(1)),
                |t| Progress {
                    target: Some(t),
                    ..Progress::default()
                },
                Plan::Launch,
            ),
            (
                "crashed while launching: adopted, launched again (launch is idempotent)",
                vec![v1.clone(), v2.clone()],
                RouteTable::single(gid(1)),
                |t| Progress {
                    target: Some(t),
                    ..Progress::default()
                },
                Plan::Launch,
            ),
            (
                "adopted and launched again: waited for",
                vec![v1.clone(), v2.clone()],
                RouteTable::single(gid(1)),
                |t| Progress {
                    target: Some(t),
                    launched: true,
                    ..Progress::default()
                },
                Plan::WaitHealthy,
            ),
            (
                "verified: the router must say ready first",
                vec![v1.clone(), v2.clone()],
                RouteTable::single(gid(1)),
                verified,
                Plan::Ready {
                    weight: 100,
                    step: Step::Verify,
                },
            ),
            (
                "crashed after the switch: only the retirement is left",
                vec![v1.clone(), v2.clone()],
                RouteTable::single(gid(2)),
                |t| Progress {
                    target: Some(t),
                    ..Progress::default()
                },
                Plan::Retire,
            ),
        ];
        for (case, groups, routes, progress, expected) in cases {
            let o = observed(groups, routes);
            let t = chosen(&o, &b);
            assert_eq!(t.group.id, gid(2), "{case}");
            let got = plan(&o, &progress(t), &b, &Policy::default());
            assert_eq!(got, expected, "{case}");
        }
    }

    #[test]
    fn a_canary_is_gated_baked_and_moved_step_by_step() {
        let v1 = group(1, "a", &[]);
        let v2 = group(2, "b", &["a"]);
        let b = deploy("b");
        let policy = canary();
        let mut o = observed(vec![v1, v2], RouteTable::single(gid(1)));
        let t = chosen(&o, &b);
        let mut p = verified(t.clone());
        assert_eq!(
            plan(&o, &p, &b, &policy),
            Plan::Ready {
                weight: 10,
                step: Step::Verify
            }
        );
        p.ready_for = Some(10);
        let Plan::Shift { table, weight: 10 } = plan(&o, &p, &b, &policy) else {
            panic!()
        };
        assert_eq!(table.weight(&gid(2)), 10);
        o.routes = table;
        assert!(matches!(
            plan(&o, &p, &b, &policy),
            Plan::Bake { weight: 10, .. }
        ));
        p.baked = Some(10);
        // never a weight increase without the router's word that all are healthy
        assert_eq!(
            plan(&o, &p, &b, &policy),
            Plan::Ready {
                weight: 50,
                step: Step::Promote
            }
        );
        p.ready_for = Some(50);
        let Plan::Shift { table, .. } = plan(&o, &p, &b, &policy) else {
            panic!()
        };
        assert_eq!(table.weight(&gid(2)), 50);
        o.routes = table;
        p.baked = Some(50);
        assert_eq!(
            plan(&o, &p, &b, &policy),
            Plan::Ready {
                weight: 100,
                step: Step::Promote
            }
        );
    }

    #[test]
    fn a_rerun_canary_bakes_its_current_weight_again() {
        let v1 = group(1, "a", &[]);
        let v2 = group(2, "b", &["a"]);
        let routes = RouteTable::single(gid(1)).blend(&gid(2), 50);
        let o = observed(vec![v1, v2], routes.clone());
        let b = deploy("b");
        let t = chosen(&o, &b);
        // the baseline is the old group alone, whatever share the canary had
        assert_eq!(t.baseline, RouteTable::single(gid(1)));
        assert!(t.adopted);
        let p = verified(t);
        assert!(matches!(
            plan(&o, &p, &b, &canary()),
            Plan::Bake { weight: 50, .. }
        ));
    }

    #[test]
    fn the_bake_after_the_switch_watches_with_the_previous_group_as_fallback() {
        let v1 = group(1, "a", &[]);
        let v2 = group(2, "b", &["a"]);
        let b = deploy("b");
        let policy = Policy {
            steps: vec![],
            bake_after: Duration::from_secs(30),
            ..Policy::default()
        };
        let mut o = observed(vec![v1, v2], RouteTable::single(gid(1)));
        let t = chosen(&o, &b);
        let mut p = verified(t);
        p.ready_for = Some(100);
        o.routes = RouteTable::single(gid(2));
        p.switched = true;
        assert_eq!(
            plan(&o, &p, &b, &policy),
            Plan::Watch {
                duration: Duration::from_secs(30),
                fallback: RouteTable::single(gid(1))
            }
        );
        p.watched = true;
        assert_eq!(plan(&o, &p, &b, &policy), Plan::Retire);
        p.retired = true;
        assert_eq!(plan(&o, &p, &b, &policy), Plan::Done);
    }

    #[test]
    fn prepare_stops_before_traffic() {
        let o = observed(
            vec![group(1, "a", &[]), group(2, "b", &["a"])],
            RouteTable::single(gid(1)),
        );
        let intent = Intent::Deploy {
            release: release("b"),
            stop_before_traffic: true,
        };
        let t = chosen(&o, &intent);
        assert_eq!(
            plan(&o, &verified(t), &intent, &Policy::default()),
            Plan::Done
        );
    }

    #[test]
    fn the_live_release_again_only_retires() {
        let o = observed(vec![group(1, "a", &[])], RouteTable::single(gid(1)));
        let t = chosen(&o, &deploy("a"));
        assert!(t.already_live && !t.adopted);
        let p = Progress {
            target: Some(t.clone()),
            ..Progress::default()
        };
        assert_eq!(plan(&o, &p, &deploy("a"), &Policy::default()), Plan::Retire);
        assert!(!undo(&o, &t, false).destroy);
    }

    #[test]
    fn repeated_rollbacks_walk_history_backwards_whatever_keep_is() {
        // r1, r2, r3 deployed with keep = 1: v1 is gone
        let v2 = group(2, "r2", &["r1"]);
        let v3 = group(3, "r3", &["r2", "r1"]);
        let mut o = observed(vec![v2.clone(), v3.clone()], RouteTable::single(gid(3)));
        o.instances.insert(gid(2), healthy(2));
        let t = chosen(&o, &Intent::Rollback { force: false });
        assert_eq!(t.group.id, gid(2), "the warm group of r2");
        assert!(!t.disposable);

        // back on v2 (r2; history r1): the next rollback relaunches r1 with no history
        let o = observed(vec![v2.clone(), v3.clone()], RouteTable::single(gid(2)));
        let t = chosen(&o, &Intent::Rollback { force: false });
        assert_eq!(t.group.release, release("r1"));
        assert_eq!(t.group.id, gid(4));
        assert_eq!(t.group.previous, None);

        // on v4 (r1): nothing older, said clearly
        let v4 = t.group;
        let o = observed(vec![v2, v4], RouteTable::single(gid(4)));
        match plan(
            &o,
            &Progress::default(),
            &Intent::Rollback { force: false },
            &Policy::default(),
        ) {
            Plan::Refuse(r) => {
                let e = r.error();
                assert_eq!(e.kind(), ErrorKind::Conflict);
                assert!(e.to_string().contains("no older release"), "{e}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_warm_group_with_another_history_is_not_reused_by_rollback() {
        // v2 runs r1 but remembers r5: going there would make the next rollback
        // go to r5, forward
        let v2 = group(2, "r1", &["r5"]);
        let v3 = group(3, "r2", &["r1"]);
        let mut o = observed(vec![v2, v3], RouteTable::single(gid(3)));
        o.instances.insert(gid(2), healthy(2));
        let t = chosen(&o, &Intent::Rollback { force: false });
        assert_eq!(t.group.id, gid(4));
        assert_eq!(t.group.previous, None);
    }

    #[test]
    fn a_warm_group_that_is_not_ready_is_not_used() {
        let v2 = group(2, "r1", &[]);
        let v3 = group(3, "r2", &["r1"]);
        let mut o = observed(vec![v2, v3], RouteTable::single(gid(3)));
        o.instances.insert(gid(2), healthy(1));
        let t = chosen(&o, &Intent::Rollback { force: false });
        assert_eq!(t.group.id, gid(4));
    }

    #[test]
    fn a_scaled_in_warm_group_is_scaled_back_and_waited_for_before_traffic() {
        let v2 = group(2, "r1", &[]);
        let v3 = group(3, "r2", &["r1"]);
        let starting = |n: usize| -> Vec<Instance> {
            (0..n)
                .map(|i| Instance::new(format!("s-{i}"), None, Health::Starting))
                .collect()
        };
        let rollback = Intent::Rollback { force: false };
        // scaled in to 0, to 1, or scaled back and still booting after a crash
        for listed in [
            vec![],
            healthy(1),
            starting(2),
            [healthy(1), starting(1)].concat(),
        ] {
            let mut o = observed(vec![v2.clone(), v3.clone()], RouteTable::single(gid(3)));
            o.warm_scaled = true;
            o.instances.insert(gid(2), listed.clone());
            let t = chosen(&o, &rollback);
            assert_eq!(t.group.id, gid(2), "{listed:?}");
            assert!(!t.disposable);
            let mut p = Progress {
                target: Some(t.clone()),
                ..Progress::default()
            };
            assert_eq!(plan(&o, &p, &rollback, &Policy::default()), Plan::ScaleOut);
            p.scaled_out = true;
            assert_eq!(
                plan(&o, &p, &rollback, &Policy::default()),
                Plan::WaitHealthy
            );
            // healthy: then attached again (with every member), verified, and asked
            // at the router before the switch
            p.healthy = Some(healthy(2));
            assert_eq!(plan(&o, &p, &rollback, &Policy::default()), Plan::Attach);
            let p = Progress {
                scaled_out: true,
                ..verified(t)
            };
            assert!(matches!(
                plan(&o, &p, &rollback, &Policy::default()),
                Plan::Ready { weight: 100, .. }
            ));
        }
        // a failing instance: the group is passed over, a new one launched
        for listed in [
            vec![Instance::new(
                "x",
                None,
                Health::Unhealthy {
                    reason: "500".into(),
                },
            )],
            vec![Instance::new(
                "x",
                None,
                Health::Stopped {
                    reason: "terminated".into(),
                },
            )],
            healthy(3),
        ] {
            let mut o = observed(vec![v2.clone(), v3.clone()], RouteTable::single(gid(3)));
            o.warm_scaled = true;
            o.instances.insert(gid(2), listed.clone());
            let t = chosen(&o, &rollback);
            if listed.len() == 3 {
                // more than its size, all healthy: ready as it is, scaled to its size
                assert_eq!(t.group.id, gid(2));
            } else {
                assert_eq!(t.group.id, gid(4), "{listed:?}");
            }
        }
        // without scaled warm groups, a group short of instances is not used
        let mut o = observed(vec![v2, v3], RouteTable::single(gid(3)));
        o.instances.insert(gid(2), healthy(1));
        assert_eq!(chosen(&o, &rollback).group.id, gid(4));
    }

    #[test]
    fn a_deployment_never_scales_its_own_group() {
        let mut o = observed(vec![group(1, "r1", &[])], RouteTable::single(gid(1)));
        o.warm_scaled = true;
        let intent = deploy("r2");
        let t = chosen(&o, &intent);
        let p = Progress {
            target: Some(t),
            ..Progress::default()
        };
        assert_eq!(plan(&o, &p, &intent, &Policy::default()), Plan::Launch);
        let p = Progress {
            launched: true,
            ..p
        };
        o.groups.push(p.target.clone().unwrap().group);
        assert_eq!(plan(&o, &p, &intent, &Policy::default()), Plan::WaitHealthy);
    }

    #[test]
    fn an_interrupted_rollback_is_finished_not_launched_again() {
        let v3 = group(3, "r2", &["r1"]);
        let v4 = group(4, "r1", &[]);
        let o = observed(vec![v3, v4], RouteTable::single(gid(3)));
        let t = chosen(&o, &Intent::Rollback { force: false });
        assert_eq!(t.group.id, gid(4));
        assert!(t.adopted && t.disposable);
    }

    #[test]
    fn rollback_to_takes_the_history_before_that_release() {
        let v3 = group(3, "r3", &["r2", "r1"]);
        let o = observed(vec![v3], RouteTable::single(gid(3)));
        let t = chosen(
            &o,
            &Intent::RollbackTo {
                force: false,
                image: ImageId::new("r2"),
            },
        );
        let history: Vec<_> = t.group.history().map(|r| r.image.to_string()).collect();
        assert_eq!(history, ["r1"]);
        match plan(
            &o,
            &Progress::default(),
            &Intent::RollbackTo {
                force: false,
                image: ImageId::new("nope"),
            },
            &Policy::default(),
        ) {
            Plan::Refuse(r) => assert_eq!(r.kind, ErrorKind::NotFound),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn nothing_live_is_nothing_to_roll_back() {
        let o = observed(vec![group(1, "a", &[])], RouteTable::empty());
        for intent in [
            Intent::Rollback { force: false },
            Intent::RollbackTo {
                force: false,
                image: ImageId::new("a"),
            },
        ] {
            assert!(matches!(
                plan(&o, &Progress::default(), &intent, &Policy::default()),
                Plan::Refuse(r) if r.kind == ErrorKind::Conflict
            ));
        }
    }

    #[test]
    fn undo_restores_the_baseline_and_removes_only_launched_groups() {
        let v1 = group(1, "a", &[]);
        let v2 = group(2, "b", &["a"]);
        let o = observed(vec![v1, v2], RouteTable::single(gid(1)).blend(&gid(2), 10));
        let t = chosen(&o, &deploy("b"));
        let u = undo(&o, &t, false);
        assert_eq!(u.restore, Some(RouteTable::single(gid(1))));
        assert!(u.destroy);
        assert!(!undo(&o, &t, true).destroy, "keep_failed keeps it");
        let warm = Target {
            disposable: false,
            ..t
        };
        assert!(!undo(&o, &warm, false).destroy);
    }

    #[test]
    fn promoting_an_unknown_group_is_refused() {
        let o = observed(vec![group(1, "a", &[])], RouteTable::single(gid(1)));
        let intent = Intent::Promote { group: gid(9) };
        assert!(matches!(
            plan(&o, &Progress::default(), &intent, &Policy::default()),
            Plan::Refuse(r) if r.kind == ErrorKind::NotFound
        ));
    }

    fn with_task(tag: &str, phase: TaskPhase, irreversible: bool) -> Release {
        let mut task = crate::task::ReleaseTask::new(["migrate"]).with_phase(phase);
        task.irreversible = irreversible;
        release(tag).with_task(task)
    }

    fn deploy_release(r: Release) -> Intent {
        Intent::Deploy {
            release: r,
            stop_before_traffic: false,
        }
    }

    fn hooks(stages: &[Stage]) -> Policy {
        Policy {
            hooks: stages.iter().copied().collect(),
            ..Policy::default()
        }
    }

    #[test]
    fn a_task_before_launch_runs_first_and_once() {
        let o = observed(vec![], RouteTable::empty());
        let intent = deploy_release(with_task("a", TaskPhase::BeforeLaunch, false));
        let t = chosen(&o, &intent);
        let mut p = Progress {
            target: Some(t),
            ..Progress::default()
        };
        let policy = hooks(&[Stage::BeforeLaunch]);
        assert_eq!(
            plan(&o, &p, &intent, &policy),
            Plan::Hook {
                stage: Stage::BeforeLaunch,
                weight: 0
            }
        );
        p.hooks_done.insert((Stage::BeforeLaunch, 0));
        assert_eq!(plan(&o, &p, &intent, &policy), Plan::RunTask);
        p.task_done = true;
        assert_eq!(plan(&o, &p, &intent, &policy), Plan::Launch);
    }

    #[test]
    fn a_rerun_that_finds_the_group_launched_neither_runs_the_task_nor_calls_before_launch() {
        let r = with_task("a", TaskPhase::BeforeLaunch, false);
        let g = Group::with_history(
            app(),
            Generation(1),
            r.clone(),
            DeploymentId::new("d-old"),
            [],
        );
        let o = observed(vec![g], RouteTable::empty());
        let intent = deploy_release(r);
        let t = chosen(&o, &intent);
        assert!(t.adopted);
        let p = Progress {
            target: Some(t),
            ..Progress::default()
        };
        let policy = hooks(&[Stage::BeforeLaunch]);
        assert_eq!(plan(&o, &p, &intent, &policy), Plan::Launch);
    }

    #[test]
    fn a_task_after_healthy_runs_before_attach_and_only_without_traffic() {
        let r = with_task("b", TaskPhase::AfterHealthy, false);
        let v1 = group(1, "a", &[]);
        let mut o = observed(vec![v1], RouteTable::single(gid(1)));
        let intent = deploy_release(r);
        let t = chosen(&o, &intent);
        o.groups.push(t.group.clone());
        let mut p = Progress {
            target: Some(t),
            launched: true,
            healthy: Some(healthy(2)),
            ..Progress::default()
        };
        let policy = hooks(&[Stage::AfterHealthy]);
        assert_eq!(
            plan(&o, &p, &intent, &policy),
            Plan::Hook {
                stage: Stage::AfterHealthy,
                weight: 0
            }
        );
        // attached already when observed: its hook after healthy ran in an earlier run
        o.attached.insert(gid(2));
        assert_eq!(plan(&o, &p, &intent, &policy), Plan::RunTask);
        p.task_done = true;
        assert_eq!(plan(&o, &p, &intent, &policy), Plan::Attach);
        // with traffic (a rerun mid-canary) the task had finished before: not again
        p.task_done = false;
        o.routes = RouteTable::single(gid(1)).blend(&gid(2), 10);
        assert_eq!(plan(&o, &p, &intent, &policy), Plan::Attach);
    }

    #[test]
    fn rollbacks_never_run_tasks() {
        let r2 = with_task("b", TaskPhase::BeforeLaunch, false);
        let v2 = Group::with_history(
            app(),
            Generation(2),
            r2,
            DeploymentId::new("d-2"),
            [release("a")],
        );
        let o = observed(vec![v2], RouteTable::single(gid(2)));
        let intent = Intent::Rollback { force: false };
        let t = chosen(&o, &intent);
        let p = Progress {
            target: Some(t),
            ..Progress::default()
        };
        assert_eq!(plan(&o, &p, &intent, &Policy::default()), Plan::Launch);
    }

    #[test]
    fn going_behind_an_irreversible_task_is_refused_unless_forced() {
        let r2 = with_task("b", TaskPhase::BeforeLaunch, true);
        let v2 = Group::with_history(
            app(),
            Generation(2),
            r2,
            DeploymentId::new("d-2"),
            [release("a")],
        );
        let o = observed(vec![v2], RouteTable::single(gid(2)));
        for intent in [
            Intent::Rollback { force: false },
            Intent::RollbackTo {
                image: ImageId::new("a"),
                force: false,
            },
        ] {
            match plan(&o, &Progress::default(), &intent, &Policy::default()) {
                Plan::Refuse(r) => {
                    assert_eq!(r.kind, ErrorKind::Conflict);
                    assert!(r.message.contains("irreversible"), "{}", r.message);
                }
                other => panic!("{intent:?}: {other:?}"),
            }
        }
        for intent in [
            Intent::Rollback { force: true },
            Intent::RollbackTo {
                image: ImageId::new("a"),
                force: true,
            },
        ] {
            assert!(matches!(
                plan(&o, &Progress::default(), &intent, &Policy::default()),
                Plan::Choose(_)
            ));
        }
    }
}
