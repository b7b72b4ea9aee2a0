//! The three-node swarm of `scripts/swarm`: its manager, its registry, images built
//! `FROM scratch` around the static sample app, and a cleanup guard.
#![allow(dead_code)]

pub mod look_alikes;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bluegreen_core::{App, Engine, EngineOptions, ImageSource};
use bluegreen_docker::{bollard, Docker, EmbeddedProxy, RegistryImage, SwarmFleet};
#[allow(unused_imports)]
pub use bluegreen_testkit::scratch::Scratch;

/// What `scripts/swarm` prints.
#[derive(Clone, Debug)]
pub struct Harness {
    /// The node sockets, the manager first (`/run/bgs/n1.sock`).
    pub nodes: Vec<String>,
    /// The nodes' addresses, in the same order.
    pub addresses: Vec<String>,
    /// The registry (`10.213.0.1:5000`).
    pub registry: String,
    /// `scripts/swarm` itself (to lose a node and bring it back).
    pub script: PathBuf,
}

/// The harness's swarm, or `None` (after a line saying why) when it is not there.
/// Under `CI=true` a missing swarm fails the test.
pub async fn swarm(test: &str) -> Option<(Harness, Docker)> {
    let found = (|| {
        let var =
            |k: &str| std::env::var(k).map_err(|_| format!("{k} is not set (run scripts/swarm)"));
        let split = |v: String| {
            v.split(',')
                .map(|s| s.trim_start_matches("unix://").to_owned())
                .collect::<Vec<_>>()
        };
        Ok::<_, String>(Harness {
            nodes: split(var("BLUEGREEN_SWARM_NODES")?),
            addresses: split(var("BLUEGREEN_SWARM_ADDRESSES")?),
            registry: var("BLUEGREEN_SWARM_REGISTRY")?,
            script: var("BLUEGREEN_SWARM_SCRIPT")?.into(),
        })
    })();
    let connected = match found {
        Ok(h) => match manager(&h).await {
            Ok(d) => Ok((h, d)),
            Err(e) => Err(format!("the swarm's manager does not answer: {e}")),
        },
        Err(e) => Err(e),
    };
    match connected {
        Ok(c) => Some(c),
        Err(e) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{test}: no swarm under CI=true: {e}");
            }
            println!("{test}: swarm not available: skipped ({e})");
            None
        }
    }
}

async fn manager(h: &Harness) -> Result<Docker, String> {
    manager_at(h, 0).await
}

/// A client of node `n` (0 is node 1), checked to be an active member of the swarm.
pub async fn manager_at(h: &Harness, n: usize) -> Result<Docker, String> {
    let d = Docker::connect_with_unix(&h.nodes[n], 600, bollard::API_DEFAULT_VERSION)
        .map_err(|e| e.to_string())?
        .negotiate_version()
        .await
        .map_err(|e| e.to_string())?;
    let info = d.info().await.map_err(|e| e.to_string())?;
    let state = info
        .swarm
        .and_then(|s| s.local_node_state)
        .map(|s| s.to_string());
    if state.as_deref() != Some("active") {
        return Err(format!("node {} is not in a swarm ({state:?})", n + 1));
    }
    Ok(d)
}

/// The docker command on node `n` (0 is the manager).
pub fn docker_on(h: &Harness, n: usize, args: &[&str]) -> Result<String, String> {
    let out = std::process::Command::new("docker")
        .arg("-H")
        .arg(format!("unix://{}", h.nodes[n]))
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// The static sample app (runs `FROM scratch`), built once per test program.
pub fn sample_app() -> PathBuf {
    bluegreen_testkit::binaries::static_binary("sample-app", "sample-app")
}

/// A build context: the static sample app `FROM scratch`, reporting `version`,
/// with extra `ENV` lines.
pub fn context(root: &Path, version: &str, env: &[(&str, &str)]) -> PathBuf {
    let dir = root.join(format!("context-{version}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(sample_app(), dir.join("sample-app")).unwrap();
    let mut dockerfile = format!(
        "FROM scratch\nCOPY sample-app /sample-app\nENV HOST=0.0.0.0 APP_VERSION={version}\n"
    );
    for (k, v) in env {
        dockerfile.push_str(&format!("ENV {k}={v}\n"));
    }
    dockerfile.push_str("ENTRYPOINT [\"/sample-app\"]\n");
    std::fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
    dir
}

pub fn build(dir: PathBuf) -> ImageSource {
    ImageSource::Build {
        context: dir,
        args: Default::default(),
    }
}

/// A unique app name for this test (`prefix` and random hex).
pub fn app(prefix: &str, env: &str) -> App {
    App::new(format!("{prefix}-{:06x}", fastrand::u32(..0x100_0000)), env).unwrap()
}

pub fn fast_proxy() -> bluegreen_proxy::ProxyOptions {
    bluegreen_proxy::ProxyOptions::default().with_health(
        bluegreen_proxy::HealthCheckOptions::default().with_interval(Duration::from_millis(200)),
    )
}

pub struct Setup {
    pub image: RegistryImage,
    pub fleet: SwarmFleet,
    pub proxy: EmbeddedProxy,
    pub engine: Engine,
}

pub async fn setup(h: &Harness, docker: Docker, options: EngineOptions) -> Setup {
    let image = RegistryImage::new(docker.clone(), h.registry.clone()).unwrap();
    let fleet = SwarmFleet::new(docker).with_registry_auth(image.credentials().cloned());
    let proxy = EmbeddedProxy::start("127.0.0.1:0".parse().unwrap(), fast_proxy())
        .await
        .unwrap();
    let engine = Engine::new(image.clone(), fleet.clone(), proxy.router()).with_options(options);
    Setup {
        image,
        fleet,
        proxy,
        engine,
    }
}

pub fn deploy_options() -> EngineOptions {
    EngineOptions::default()
        .with_poll_interval(Duration::from_millis(200))
        .with_drain(Duration::from_secs(1))
        .with_keep(0)
        .with_health_timeout(Duration::from_secs(90))
}

/// Services (of every app) with the app's labels, by name.
pub fn labelled_services(h: &Harness, app: &App) -> Vec<String> {
    docker_on(
        h,
        0,
        &[
            "service",
            "ls",
            "--format",
            "{{.Name}}",
            "--filter",
            &format!("label=bluegreen.app={}", app.name()),
            "--filter",
            &format!("label=bluegreen.environment={}", app.environment()),
        ],
    )
    .unwrap_or_default()
    .lines()
    .map(str::to_owned)
    .collect()
}

/// Removes, when dropped, every service with the app's labels (and those of `app` +
/// `x`, which the conformance suite uses) and the app's images on the manager,
/// through the `docker` command so that it runs even after a panic.
pub struct Cleanup(pub Harness, pub Vec<App>);

impl Cleanup {
    pub fn new(h: &Harness, app: &App) -> Cleanup {
        let other = App::new(format!("{}x", app.name()), app.environment()).unwrap();
        let c = Cleanup(h.clone(), vec![app.clone(), other]);
        c.run();
        c
    }

    pub fn run(&self) {
        for app in &self.1 {
            let services = labelled_services(&self.0, app);
            if !services.is_empty() {
                let mut args = vec!["service", "rm"];
                args.extend(services.iter().map(String::as_str));
                let _ = docker_on(&self.0, 0, &args);
            }
            let images = docker_on(
                &self.0,
                0,
                &[
                    "images",
                    "-q",
                    "--filter",
                    &format!("label=bluegreen.app={}", app.name()),
                    "--filter",
                    &format!("label=bluegreen.environment={}", app.environment()),
                ],
            )
            .unwrap_or_default();
            let ids: Vec<&str> = images.split_whitespace().collect();
            if !ids.is_empty() {
                let mut args = vec!["rmi", "-f", "--no-prune"];
                args.extend(ids);
                let _ = docker_on(&self.0, 0, &args);
            }
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.run();
    }
}

pub fn arc<T>(t: T) -> Arc<T> {
    Arc::new(t)
}
