//! `MemoryRouter` routes only to its own platform's instances, and says so at once
//! when given another fleet's.

use async_trait::async_trait;
use bluegreen_core::{
    App, DeployRequest, Engine, Error, ErrorKind, Fleet, Group, GroupId, Health, ImageSource,
    Instance, Result, Router, Step,
};
use bluegreen_testkit::{MemoryFleet, MemoryPlatform};

/// A fleet of another platform: the memory fleet's groups, with instances of its own.
struct Elsewhere(MemoryFleet);

#[async_trait]
impl Fleet for Elsewhere {
    async fn launch(&self, group: &Group) -> Result<()> {
        self.0.launch(group).await
    }
    async fn groups(&self, app: &App) -> Result<Vec<Group>> {
        self.0.groups(app).await
    }
    async fn instances(&self, app: &App, group: &GroupId) -> Result<Vec<Instance>> {
        let own = self.0.instances(app, group).await?;
        Ok(own
            .into_iter()
            .enumerate()
            .map(|(n, i)| Instance::new(format!("{group}-{n}"), i.address, i.health))
            .collect())
    }
    async fn destroy(&self, app: &App, group: &GroupId) -> Result<()> {
        self.0.destroy(app, group).await
    }
}

#[tokio::test(start_paused = true)]
async fn attaching_instances_of_another_platform_is_refused_naming_them() {
    let platform = MemoryPlatform::new();
    let app = App::new("web", "test").unwrap();
    let group = GroupId::new("web-test-v001");
    let stranger = Instance::new(
        "web-test-v001-0",
        Some("127.0.0.1:8080".into()),
        Health::Healthy,
    );
    let e = platform
        .router()
        .attach(&app, &group, &[stranger])
        .await
        .expect_err("a stranger is refused");
    match &e {
        Error::Invalid { field, reason } => {
            assert_eq!(field, "instances.web-test-v001-0");
            assert!(
                reason.contains("not an instance of this MemoryPlatform"),
                "{e}"
            );
        }
        other => panic!("expected Invalid, got {other}"),
    }
    assert!(
        platform.router().serving(&app, &group).await.is_err(),
        "a refused attach attaches nothing"
    );
    // another MemoryPlatform's instances are strangers too
    let other = MemoryPlatform::new();
    let engine = Engine::new(other.image(), other.fleet(), other.router());
    engine
        .deploy(&DeployRequest::new(
            app.clone(),
            ImageSource::Reference("web:1".into()),
        ))
        .await
        .unwrap();
    let live = other.fleet().groups(&app).await.unwrap().remove(0).id;
    let theirs = other.fleet().instances(&app, &live).await.unwrap();
    // ids are counters: a fresh platform has given none out yet
    assert_eq!(
        platform
            .router()
            .attach(&app, &live, &theirs)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::Invalid
    );
}

#[tokio::test(start_paused = true)]
async fn a_deployment_of_another_fleet_through_it_fails_at_attach_and_is_reverted() {
    let platform = MemoryPlatform::new();
    let app = App::new("web", "elsewhere").unwrap();
    let engine = Engine::new(
        platform.image(),
        Elsewhere(platform.fleet()),
        platform.router(),
    );
    let e = engine
        .deploy(&DeployRequest::new(
            app.clone(),
            ImageSource::Reference("web:1".into()),
        ))
        .await
        .expect_err("another fleet's deployment fails");
    assert_eq!(e.step(), Some(Step::Attach), "{e}");
    assert!(
        e.to_string()
            .contains("not an instance of this MemoryPlatform"),
        "{e}"
    );
    assert!(e.rolled_back(), "{e}");
    assert!(platform.fleet().groups(&app).await.unwrap().is_empty());
    assert!(platform.router().routes(&app).await.unwrap().is_empty());
}
