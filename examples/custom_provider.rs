//! A provider of your own in one file: a toy platform whose instances are tokio
//! tasks serving HTTP on loopback, behind the real bluegreen proxy. It implements
//! the two provider traits a platform needs ([`Image`] and [`Fleet`]; the proxy is
//! the [`Router`](bluegreen::Router)), passes the testkit's conformance suite, and
//! deploys, rolls back and reverts a failing release.
//!
//! `cargo run --example custom_provider` (the same code runs in `cargo test` from
//! `tests/custom_provider.rs`). Walked through in `docs/providers.md`.
//!
//! The rules it keeps are the traits' `# Behavior` sections: launch and destroy are
//! idempotent, a missing group is `NotFound`, groups come back exactly as launched
//! (from the platform's own record, checked against its labels), and only what
//! carries bluegreen's labels for the app is listed or touched.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bluegreen::labels::{self, Labels};
use bluegreen::testkit::conformance::{self, Settings, Sources};
use bluegreen::{
    async_trait, App, DeployRequest, Engine, EngineOptions, Error, EventSink, Fleet, Group,
    GroupId, Health, Image, ImageId, ImageRef, ImageSource, Instance, Result,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The toy platform's images: a reference `toy:<version>` is the "artifact"; an
/// image id is a content hash of the app and the reference. `toy:broken-*` serves
/// 500 on its health path, as a release that never becomes healthy.
#[derive(Clone, Debug, Default)]
pub struct ToyImage {
    images: Arc<Mutex<BTreeMap<ImageId, (ImageRef, Labels)>>>,
}

fn content_id(text: &str) -> ImageId {
    // FNV-1a: stable across runs
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    ImageId::new(format!("toy-{h:016x}"))
}

#[async_trait]
impl Image for ToyImage {
    async fn prepare(&self, app: &App, source: &ImageSource, _: &EventSink) -> Result<ImageRef> {
        let ImageSource::Reference(reference) = source else {
            // bad input is refused before anything happens, naming the field
            return Err(Error::invalid(
                "source",
                "the toy platform takes `toy:<version>`",
            ));
        };
        if !reference.starts_with("toy:") {
            return Err(Error::invalid(
                "source",
                format!("`{reference}` is not `toy:<version>`"),
            ));
        }
        let id = content_id(&format!("{app}/{reference}"));
        let mut images = self.images.lock().unwrap();
        let entry = images.entry(id.clone()).or_insert_with(|| {
            let mut l = labels::app_labels(app);
            l.insert(labels::IMAGE.into(), id.to_string());
            let image = ImageRef::new(
                id.clone(),
                app.clone(),
                SystemTime::now(),
                reference.clone(),
            );
            (image, l)
        });
        Ok(entry.0.clone())
    }

    async fn images(&self, app: &App) -> Result<Vec<ImageRef>> {
        let images = self.images.lock().unwrap();
        Ok(images
            .values()
            .filter(|(_, l)| labels::is_owned_by(l, app))
            .map(|(i, _)| i.clone())
            .collect())
    }

    async fn remove(&self, app: &App, id: &ImageId) -> Result<()> {
        let mut images = self.images.lock().unwrap();
        // only this app's own image, and removing a missing one succeeds
        if images
            .get(id)
            .is_some_and(|(_, l)| labels::is_owned_by(l, app))
        {
            images.remove(id);
        }
        Ok(())
    }
}

/// One instance: a task serving HTTP on a loopback port.
#[derive(Debug)]
struct ToyInstance {
    id: String,
    address: String,
    task: JoinHandle<()>,
}

/// A group on the toy platform: its labels, its record and its instances.
#[derive(Debug)]
struct ToyGroup {
    labels: Labels,
    record: String,
    instances: Vec<ToyInstance>,
}

/// The toy platform's fleet. It keeps its groups in memory; a real provider keeps
/// them on its platform (labels, tags), which is what lets a deployment killed
/// anywhere converge when run again.
#[derive(Clone, Debug)]
pub struct ToyFleet {
    image: ToyImage,
    groups: Arc<Mutex<BTreeMap<GroupId, ToyGroup>>>,
}

impl ToyFleet {
    /// A fleet that runs the images of `image`.
    pub fn new(image: ToyImage) -> Self {
        ToyFleet {
            image,
            groups: Arc::default(),
        }
    }
}

/// Serves `GET /version` with the version and `GET /health` with 200 (500 for a
/// broken version), one request per connection.
async fn serve(listener: TcpListener, version: String) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            return;
        };
        let version = version.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut read = 0;
            while !buf[..read].windows(4).any(|w| w == b"\r\n\r\n") && read < buf.len() {
                match stream.read(&mut buf[read..]).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => read += n,
                }
            }
            let head = String::from_utf8_lossy(&buf[..read]);
            let broken = version.starts_with("broken");
            let (status, body) = if head.starts_with("GET /health") && broken {
                ("500 Internal Server Error", "unhealthy".to_owned())
            } else {
                ("200 OK", version)
            };
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        });
    }
}

#[async_trait]
impl Fleet for ToyFleet {
    async fn launch(&self, group: &Group) -> Result<()> {
        let record = group.to_record();
        if let Some(existing) = self.groups.lock().unwrap().get(&group.id) {
            // idempotent: the same group again changes nothing; another one is a conflict
            return if existing.record == record {
                Ok(())
            } else {
                Err(Error::conflict(format!(
                    "{} exists with another record",
                    group.id
                )))
            };
        }
        let reference = self
            .image
            .images(&group.app)
            .await?
            .into_iter()
            .find(|i| i.id == group.release.image)
            .ok_or_else(|| Error::not_found(format!("image {}", group.release.image)))?
            .origin;
        let version = reference.trim_start_matches("toy:").to_owned();
        let mut instances = Vec::new();
        for n in 0..group.release.size {
            let listener = TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|e| Error::provider_source("toy", true, e))?;
            let address = listener
                .local_addr()
                .map_err(|e| Error::provider_source("toy", true, e))?;
            instances.push(ToyInstance {
                id: format!("{}-{n}", group.id),
                address: address.to_string(),
                task: tokio::spawn(serve(listener, version.clone())),
            });
        }
        self.groups.lock().unwrap().insert(
            group.id.clone(),
            ToyGroup {
                labels: group.labels(),
                record,
                instances,
            },
        );
        Ok(())
    }

    async fn groups(&self, app: &App) -> Result<Vec<Group>> {
        let groups = self.groups.lock().unwrap();
        groups
            .values()
            .filter(|g| labels::is_owned_by(&g.labels, app))
            .map(|g| Group::from_record(&g.record, &g.labels))
            .collect()
    }

    async fn instances(&self, app: &App, group: &GroupId) -> Result<Vec<Instance>> {
        let addresses: Vec<(String, String, bool)> = {
            let groups = self.groups.lock().unwrap();
            let g = groups
                .get(group)
                .filter(|g| labels::is_owned_by(&g.labels, app))
                .ok_or_else(|| Error::not_found(format!("group {group}")))?;
            g.instances
                .iter()
                .map(|i| (i.id.clone(), i.address.clone(), i.task.is_finished()))
                .collect()
        };
        let mut out = Vec::new();
        for (id, address, finished) in addresses {
            let health = if finished {
                Health::Stopped {
                    reason: "its task ended".into(),
                }
            } else {
                probe(&address).await
            };
            out.push(Instance::new(id, Some(address), health));
        }
        Ok(out)
    }

    async fn destroy(&self, app: &App, group: &GroupId) -> Result<()> {
        let mut groups = self.groups.lock().unwrap();
        // idempotent, and only a group of this app
        if groups
            .get(group)
            .is_some_and(|g| labels::is_owned_by(&g.labels, app))
        {
            for i in groups.remove(group).into_iter().flat_map(|g| g.instances) {
                i.task.abort();
            }
        }
        Ok(())
    }
}

/// `GET /health` on an instance: 200 is healthy.
async fn probe(address: &str) -> Health {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(address).await?;
        stream
            .write_all(b"GET /health HTTP/1.1\r\nhost: toy\r\nconnection: close\r\n\r\n")
            .await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    match tokio::time::timeout(Duration::from_secs(2), attempt).await {
        Ok(Ok(answer)) if answer.starts_with(b"HTTP/1.1 200") => Health::Healthy,
        Ok(Ok(answer)) => Health::Unhealthy {
            reason: String::from_utf8_lossy(&answer[..answer.len().min(40)]).into_owned(),
        },
        Ok(Err(e)) => Health::Unhealthy {
            reason: e.to_string(),
        },
        Err(_) => Health::Unhealthy {
            reason: "no answer within 2 s".into(),
        },
    }
}

/// Runs the conformance suite on the toy provider, then a deployment, a revert of
/// a broken release and a rollback. Returns what it did, one line a step.
pub async fn run() -> std::result::Result<Vec<String>, Box<dyn std::error::Error>> {
    let mut said = Vec::new();
    let proxy = bluegreen::proxy::EmbeddedProxy::start(
        "127.0.0.1:0".parse()?,
        bluegreen::proxy::ProxyOptions::default().with_health(
            bluegreen::proxy::HealthCheckOptions::default()
                .with_interval(Duration::from_millis(100)),
        ),
    )
    .await?;
    let image = ToyImage::default();
    let fleet = ToyFleet::new(image.clone());

    // 1. the conformance suite: every rule of the traits, on this provider
    let sources = Sources {
        good: ImageSource::Reference("toy:1".into()),
        other: ImageSource::Reference("toy:2".into()),
        never_healthy: Some(ImageSource::Reference("toy:broken-1".into())),
    };
    let settings = Settings::default().with_health_timeout(Duration::from_secs(10));
    conformance::run_all(
        Arc::new(image.clone()),
        Arc::new(fleet.clone()),
        Arc::new(proxy.router()),
        &App::new("conformance", "toy")?,
        &sources,
        &settings,
    )
    .await;
    said.push("the toy provider passes the conformance suite".to_owned());

    // 2. the engine on it
    let engine = Engine::new(image, fleet, proxy.router()).with_options(
        EngineOptions::default()
            .with_poll_interval(Duration::from_millis(100))
            .with_health_timeout(Duration::from_secs(5))
            .with_confirm_timeout(Duration::from_secs(5))
            .with_drain(Duration::from_millis(100)),
    );
    let app = App::new("web", "toy")?;
    let deploy = |reference: &str| {
        DeployRequest::new(app.clone(), ImageSource::Reference(reference.into())).size(2)
    };
    let v1 = engine.deploy(&deploy("toy:1")).await?;
    let v2 = engine.deploy(&deploy("toy:2")).await?;
    said.push(format!("deployed {} then {}", v1.live, v2.live));
    let e = engine
        .deploy(&deploy("toy:broken-3"))
        .await
        .expect_err("a release that never becomes healthy is reverted");
    said.push(format!("a broken release: {e}"));
    let back = engine.rollback(&app).await?;
    said.push(format!("rolled back from {} to {}", back.from, back.to));
    Ok(said)
}

#[allow(dead_code)] // the test includes this file for `run`
#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    for line in run().await? {
        println!("{line}");
    }
    Ok(())
}
