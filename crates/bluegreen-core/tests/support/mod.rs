//! What the engine's tests on the in-memory platform share: the app, requests, and
//! a rig of a platform, an engine and the events it emitted.
#![allow(dead_code)] // each test file uses its own part

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bluegreen_core::{
    App, DeployRequest, Engine, EngineOptions, Event, EventSink, Fleet, GroupId, ImageSource,
    RouteTable, Router, Step,
};
use bluegreen_testkit::MemoryPlatform;

pub fn app() -> App {
    App::new("web", "production").unwrap()
}

pub fn request(tag: &str) -> DeployRequest {
    DeployRequest::new(app(), ImageSource::Reference(format!("web:{tag}"))).size(3)
}

pub fn gid(n: u32) -> GroupId {
    GroupId::new(format!("web-production-v{n:03}"))
}

/// A platform whose instances boot in 10 s, an engine on it, and its events.
pub struct Rig {
    pub platform: MemoryPlatform,
    pub engine: Engine,
    pub events: Arc<Mutex<Vec<Event>>>,
}

pub fn rig(options: EngineOptions) -> Rig {
    let platform = MemoryPlatform::new();
    platform.set_boot_time(Duration::from_secs(10));
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = EventSink::new({
        let events = events.clone();
        move |e: &Event| events.lock().unwrap().push(e.clone())
    });
    let engine = Engine::from_parts(platform.parts())
        .with_options(options)
        .with_events(sink);
    Rig {
        platform,
        engine,
        events,
    }
}

impl Rig {
    /// The steps started, in order, each once in a row.
    pub fn steps(&self) -> Vec<Step> {
        let mut steps: Vec<Step> = Vec::new();
        for e in self.events.lock().unwrap().iter() {
            if let Event::StepStarted { step } = e {
                if steps.last() != Some(step) {
                    steps.push(*step);
                }
            }
        }
        steps
    }

    pub async fn routes(&self) -> RouteTable {
        self.platform.router().routes(&app()).await.unwrap()
    }

    /// The app's groups, sorted by id.
    pub async fn groups(&self) -> Vec<GroupId> {
        let mut ids: Vec<GroupId> = self
            .platform
            .fleet()
            .groups(&app())
            .await
            .unwrap()
            .into_iter()
            .map(|g| g.id)
            .collect();
        ids.sort();
        ids
    }

    /// The image `group` runs, as the fleet reports it.
    pub async fn image_of(&self, group: &GroupId) -> bluegreen_core::ImageId {
        let groups = self.platform.fleet().groups(&app()).await.unwrap();
        groups
            .into_iter()
            .find(|g| &g.id == group)
            .unwrap()
            .release
            .image
    }

    /// The app's group ids, sorted.
    pub async fn group_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .platform
            .fleet()
            .groups(&app())
            .await
            .unwrap()
            .into_iter()
            .map(|g| g.id.to_string())
            .collect();
        ids.sort();
        ids
    }
}
