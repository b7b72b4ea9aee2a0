//! Look-alikes of the Docker fleet's groups, for the conformance suite: containers
//! created by hand through the API, next to a group's own, that carry almost its
//! marks but are not bluegreen's: a group's labels without the owner label, a
//! group's labels with another owner, and a group's name pattern without any label.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use bluegreen_core::labels;
use bluegreen_core::{async_trait, App, GroupId};
use bluegreen_docker::bollard::models::ContainerCreateBody;
use bluegreen_docker::bollard::query_parameters::{
    CreateContainerOptionsBuilder, InspectContainerOptions, RemoveContainerOptionsBuilder,
    StartContainerOptions,
};
use bluegreen_docker::{Docker, INDEX_LABEL};
use bluegreen_testkit::conformance::LookAlikes;

/// Look-alike containers per group, on one daemon, from one image without
/// bluegreen's labels.
pub struct DockerLookAlikes {
    docker: Docker,
    image: String,
    made: Mutex<BTreeMap<GroupId, Vec<String>>>,
}

impl DockerLookAlikes {
    /// Look-alikes that run `image` (an image of the test's own, not bluegreen's).
    pub fn new(docker: Docker, image: &str) -> Self {
        DockerLookAlikes {
            docker,
            image: image.to_owned(),
            made: Mutex::default(),
        }
    }
}

/// A group's labels on a container, without the owner label.
fn group_labels(app: &App, group: &GroupId, index: u32) -> HashMap<String, String> {
    HashMap::from([
        (labels::APP.to_owned(), app.name().to_owned()),
        (labels::ENVIRONMENT.to_owned(), app.environment().to_owned()),
        (labels::GROUP.to_owned(), group.as_str().to_owned()),
        (INDEX_LABEL.to_owned(), index.to_string()),
    ])
}

#[async_trait]
impl LookAlikes for DockerLookAlikes {
    async fn create(&self, app: &App, group: &GroupId) -> Vec<String> {
        // instance names the fleet would give (`<group>-<index>`), beyond any size
        // the suite launches, and one with the group's name alone
        let no_owner = group_labels(app, group, 7);
        let mut other_owner = group_labels(app, group, 8);
        other_owner.insert(labels::OWNER.to_owned(), "someone-else".to_owned());
        let wanted = [
            (format!("{group}-7"), no_owner),
            (format!("{group}-8"), other_owner),
            (format!("{group}-alike"), HashMap::new()),
        ];
        let mut names = Vec::new();
        for (name, labels) in wanted {
            self.docker
                .create_container(
                    Some(CreateContainerOptionsBuilder::new().name(&name).build()),
                    ContainerCreateBody {
                        image: Some(self.image.clone()),
                        labels: Some(labels),
                        ..Default::default()
                    },
                )
                .await
                .unwrap_or_else(|e| panic!("creating look-alike {name}: {e}"));
            self.docker
                .start_container(&name, None::<StartContainerOptions>)
                .await
                .unwrap_or_else(|e| panic!("starting look-alike {name}: {e}"));
            names.push(name);
        }
        self.made
            .lock()
            .unwrap()
            .entry(group.clone())
            .or_default()
            .extend(names.iter().cloned());
        names
    }

    async fn existing(&self, _app: &App, group: &GroupId) -> Vec<String> {
        let made = self.made.lock().unwrap().get(group).cloned();
        let mut out = Vec::new();
        for name in made.unwrap_or_default() {
            if self
                .docker
                .inspect_container(&name, None::<InspectContainerOptions>)
                .await
                .is_ok()
            {
                out.push(name);
            }
        }
        out
    }

    async fn remove(&self, _app: &App, group: &GroupId) {
        let made = self.made.lock().unwrap().remove(group);
        for name in made.unwrap_or_default() {
            let _ = self
                .docker
                .remove_container(
                    &name,
                    Some(RemoveContainerOptionsBuilder::new().force(true).build()),
                )
                .await;
        }
    }
}

impl Drop for DockerLookAlikes {
    /// Removes what is left (a failed run) through the `docker` command.
    fn drop(&mut self) {
        let names: Vec<String> = self
            .made
            .get_mut()
            .map(|m| m.values().flatten().cloned().collect())
            .unwrap_or_default();
        if !names.is_empty() {
            let _ = std::process::Command::new("docker")
                .args(["rm", "-f"])
                .args(&names)
                .output();
        }
    }
}
