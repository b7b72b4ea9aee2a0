//! Look-alikes of the swarm fleet's groups, for the conformance suite: services
//! created by hand next to a group's own, carrying almost its marks but not
//! bluegreen's: a group's labels without the owner label, a group's labels with
//! another owner, and, for a group that does not exist, the group's own name
//! without any label.

use std::collections::BTreeMap;
use std::sync::Mutex;

use bluegreen_core::{async_trait, App, GroupId};
use bluegreen_testkit::conformance::LookAlikes;

use super::{docker_on, Harness};

/// Look-alike services per group, in the harness's swarm, running one image without
/// bluegreen's labels.
pub struct SwarmLookAlikes {
    h: Harness,
    image: String,
    made: Mutex<BTreeMap<GroupId, Vec<String>>>,
}

impl SwarmLookAlikes {
    /// Look-alikes that run `image` (an image of the test's own in the swarm's
    /// registry, not bluegreen's).
    pub fn new(h: &Harness, image: &str) -> Self {
        SwarmLookAlikes {
            h: h.clone(),
            image: image.to_owned(),
            made: Mutex::default(),
        }
    }

    fn exists(&self, name: &str) -> bool {
        docker_on(&self.h, 0, &["service", "inspect", "-f", "{{.ID}}", name]).is_ok()
    }
}

#[async_trait]
impl LookAlikes for SwarmLookAlikes {
    async fn create(&self, app: &App, group: &GroupId) -> Vec<String> {
        let app_label = format!("bluegreen.app={}", app.name());
        let env_label = format!("bluegreen.environment={}", app.environment());
        let group_label = format!("bluegreen.group={group}");
        let group_labels = [
            "--label",
            app_label.as_str(),
            "--label",
            &env_label,
            "--label",
            &group_label,
        ];
        let mut wanted: Vec<(String, Vec<&str>)> = vec![
            (format!("{group}-alike"), group_labels.to_vec()),
            (
                format!("{group}-other"),
                [
                    &group_labels[..],
                    &["--label", "bluegreen.owner=someone-else"],
                ]
                .concat(),
            ),
        ];
        // the group's own service name, where the group has no service
        if !self.exists(group.as_str()) {
            wanted.push((group.to_string(), Vec::new()));
        }
        let mut names = Vec::new();
        for (name, labels) in wanted {
            let mut args = vec![
                "service",
                "create",
                "-d",
                "--name",
                &name,
                "--replicas",
                "1",
            ];
            args.extend(labels);
            args.push(&self.image);
            docker_on(&self.h, 0, &args)
                .unwrap_or_else(|e| panic!("creating look-alike service {name}: {e}"));
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
        made.unwrap_or_default()
            .into_iter()
            .filter(|n| self.exists(n))
            .collect()
    }

    async fn remove(&self, _app: &App, group: &GroupId) {
        let made = self.made.lock().unwrap().remove(group);
        let made = made.unwrap_or_default();
        if !made.is_empty() {
            let mut args = vec!["service", "rm"];
            args.extend(made.iter().map(String::as_str));
            let _ = docker_on(&self.h, 0, &args);
        }
    }
}

impl Drop for SwarmLookAlikes {
    /// Removes what is left (a failed run).
    fn drop(&mut self) {
        let names: Vec<String> = self
            .made
            .get_mut()
            .map(|m| m.values().flatten().cloned().collect())
            .unwrap_or_default();
        if !names.is_empty() {
            let mut args = vec!["service", "rm"];
            args.extend(names.iter().map(String::as_str));
            let _ = docker_on(&self.h, 0, &args);
        }
    }
}
