//! Look-alikes of the local provider's groups, for the conformance suite: processes
//! that carry a group's marks (its state directory and group id) but not bluegreen's
//! owner mark, and a group directory whose file has no bluegreen labels.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

use bluegreen_core::{async_trait, App, GroupId};
use bluegreen_local::StateDir;
use bluegreen_testkit::conformance::LookAlikes;

/// What it made for one group: the processes, and the directory when it made one.
type Made = (Vec<Child>, Option<PathBuf>);

/// Look-alikes per group, in one state directory.
pub struct LocalLookAlikes {
    state: StateDir,
    made: Mutex<BTreeMap<GroupId, Made>>,
}

impl LocalLookAlikes {
    pub fn new(state: &StateDir) -> Self {
        LocalLookAlikes {
            state: state.clone(),
            made: Mutex::default(),
        }
    }
}

#[async_trait]
impl LookAlikes for LocalLookAlikes {
    async fn create(&self, app: &App, group: &GroupId) -> Vec<String> {
        let child = Command::new("sleep")
            .arg("600")
            .env("BLUEGREEN_STATE_DIR", self.state.root())
            .env("BLUEGREEN_GROUP", group.as_str())
            .stdin(Stdio::null())
            .spawn()
            .expect("sleep starts");
        let dir = self
            .state
            .root()
            .join("groups")
            .join(app.slug())
            .join(group.as_str());
        // a directory only where the group does not exist: never over a real one
        let dir = (!dir.exists()).then(|| {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(
                dir.join("group.json"),
                r#"{"labels": {"team": "other"}, "record": "{}"}"#,
            )
            .unwrap();
            dir
        });
        let mut made = self.made.lock().unwrap();
        let entry = made.entry(group.clone()).or_default();
        entry.0.push(child);
        if dir.is_some() {
            entry.1 = dir;
        }
        names(entry)
    }

    async fn existing(&self, _app: &App, group: &GroupId) -> Vec<String> {
        let mut made = self.made.lock().unwrap();
        let Some(entry) = made.get_mut(group) else {
            return Vec::new();
        };
        entry.0.retain_mut(|c| matches!(c.try_wait(), Ok(None)));
        entry.1 = entry.1.take().filter(|d| d.join("group.json").is_file());
        names(entry)
    }

    async fn remove(&self, _app: &App, group: &GroupId) {
        if let Some((children, dir)) = self.made.lock().unwrap().remove(group) {
            for mut c in children {
                let _ = c.kill();
                let _ = c.wait();
            }
            if let Some(dir) = dir {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

fn names(entry: &Made) -> Vec<String> {
    let mut out: Vec<String> = entry
        .0
        .iter()
        .map(|c| format!("process {}", c.id()))
        .collect();
    out.extend(entry.1.iter().map(|d| d.display().to_string()));
    out
}
