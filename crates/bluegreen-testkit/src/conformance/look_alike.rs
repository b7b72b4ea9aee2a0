use async_trait::async_trait;
use bluegreen_core::{
    App, ErrorKind, EventSink, Fleet, Generation, Group, GroupId, Image, ImageSource, Router,
};

use super::{clean, test_group, wait_healthy, Report, Settings};

const PART: &str = "look-alikes";

/// Makes resources on the provider's platform that look like a group's but that
/// bluegreen did not create: named as the provider names a group's resources, but
/// without bluegreen's labels (or with another owner's). The suite then checks that
/// `groups`, `instances`, `destroy` and its own clean-up leave them alone
/// ([`look_alikes_untouched`]). Give one with [`Settings::with_look_alikes`].
#[async_trait]
pub trait LookAlikes: Send + Sync {
    /// Creates look-alikes of `group` of `app` (a group that may or may not exist:
    /// choose names that do not collide with the group's own resources) and returns
    /// their names. It must create at least one.
    async fn create(&self, app: &App, group: &GroupId) -> Vec<String>;

    /// Which of the look-alikes of `group` still exist, by name.
    async fn existing(&self, app: &App, group: &GroupId) -> Vec<String>;

    /// Removes the look-alikes of `group`, if any.
    async fn remove(&self, app: &App, group: &GroupId);
}

/// Look-alikes survive: with look-alikes of a group the suite launches and of one it
/// never launches, `groups` lists the launched group alone, `instances` counts its
/// own instances alone and is `NotFound` for the other id, and `destroy` of either
/// id and the suite's clean-up leave every look-alike in place. Skipped without a
/// [`LookAlikes`] hook in `settings`.
pub async fn look_alikes_untouched(
    image: &dyn Image,
    fleet: &dyn Fleet,
    router: &dyn Router,
    app: &App,
    source: &ImageSource,
    settings: &Settings,
) -> Report {
    let mut report = Report::default();
    let rules = [
        "groups and instances leave look-alikes out",
        "destroy and the clean-up leave look-alikes in place",
    ];
    let Some(hook) = settings.look_alikes.clone() else {
        for rule in rules {
            report.skip(
                PART,
                rule,
                "no LookAlikes hook was given (Settings::with_look_alikes)",
            );
        }
        return report;
    };
    clean(fleet, router, app).await;
    let launched = Group::id_for(app, Generation(1));
    let never = Group::id_for(app, Generation(900));
    let made_never = hook.create(app, &never).await;
    assert!(!made_never.is_empty(), "the LookAlikes hook made nothing");
    let img = image
        .prepare(app, source, &EventSink::none())
        .await
        .expect("prepare must succeed");
    let group = test_group(app, Generation(1), img.id.clone(), settings);
    fleet.launch(&group).await.expect("launch must succeed");
    wait_healthy(fleet, app, &launched, settings.size, settings).await;
    let made_launched = hook.create(app, &launched).await;
    assert!(
        !made_launched.is_empty(),
        "the LookAlikes hook made nothing"
    );

    let listed: Vec<GroupId> = fleet
        .groups(app)
        .await
        .expect("groups must list")
        .into_iter()
        .map(|g| g.id)
        .collect();
    assert_eq!(
        listed,
        vec![launched.clone()],
        "groups must list bluegreen's groups alone, not look-alikes ({made_never:?})"
    );
    let instances = fleet
        .instances(app, &launched)
        .await
        .expect("instances must list");
    assert_eq!(
        instances.len(),
        settings.size as usize,
        "instances must list the group's own instances, not look-alikes ({made_launched:?}): {instances:?}"
    );
    let e = fleet.instances(app, &never).await.expect_err(
        "instances of an id that only look-alikes carry must fail: it is not a group of the app",
    );
    assert_eq!(
        e.kind(),
        ErrorKind::NotFound,
        "instances of an id that only look-alikes carry: {e}"
    );
    report.pass(PART, rules[0]);

    fleet
        .destroy(app, &never)
        .await
        .expect("destroying an id without a group must succeed");
    survived(&*hook, app, &never, &made_never, "destroy of their id").await;
    fleet
        .destroy(app, &launched)
        .await
        .expect("destroy must succeed");
    survived(
        &*hook,
        app,
        &launched,
        &made_launched,
        "destroy of the group",
    )
    .await;
    survived(&*hook, app, &never, &made_never, "destroy of another group").await;
    fleet.launch(&group).await.expect("launch must succeed");
    clean(fleet, router, app).await;
    survived(&*hook, app, &launched, &made_launched, "the clean-up").await;
    survived(&*hook, app, &never, &made_never, "the clean-up").await;
    report.pass(PART, rules[1]);

    hook.remove(app, &launched).await;
    hook.remove(app, &never).await;
    let _ = image.remove(app, &img.id).await;
    report
}

/// Asserts that the look-alikes `made` of `group` all still exist.
async fn survived(hook: &dyn LookAlikes, app: &App, group: &GroupId, made: &[String], after: &str) {
    let mut left = hook.existing(app, group).await;
    left.sort();
    let mut want = made.to_vec();
    want.sort();
    assert_eq!(left, want, "look-alikes of {group} must survive {after}");
}
