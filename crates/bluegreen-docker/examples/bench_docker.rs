//! Replaces a 3-container service with a new image, through bluegreen and through
//! `docker-compose up -d`, each under the same bounded load through the same
//! front proxy (a `bluegreen-proxy` process). Run by `scripts/bench-docker`.
//!
//! Prints one `result` line per method and the raw container start figure.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bluegreen_core::{
    App, DeployRequest, Engine, EngineOptions, Fleet, GroupId, Health, Image, ImageSource,
    Instance, RouteTable, Router,
};
use bluegreen_docker::bollard;
use bluegreen_docker::{connect, DockerFleet, DockerFleetOptions, DockerImage};
use bluegreen_proxy::{AdminToken, ProxyRouter};
use bluegreen_testkit::http_load::HttpLoad;
use clap::Parser;

/// The benchmark's inputs.
#[derive(Parser)]
struct Args {
    /// The static sample-app binary.
    #[arg(long)]
    sample_app: PathBuf,
    /// The front proxy's client address.
    #[arg(long)]
    proxy: SocketAddr,
    /// The front proxy's admin URL.
    #[arg(long)]
    admin: String,
    /// The admin token.
    #[arg(long, env = "BENCH_ADMIN_TOKEN", hide_env_values = true)]
    token: String,
    /// A scratch directory.
    #[arg(long)]
    work: PathBuf,
    /// Concurrent clients of the load.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Containers in the service.
    #[arg(long, default_value_t = 3)]
    size: u32,
}

fn context(root: &Path, sample: &Path, version: &str) -> PathBuf {
    let dir = root.join(format!("v{version}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(sample, dir.join("sample-app")).unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        format!(
            "FROM scratch\nCOPY sample-app /sample-app\nENV HOST=0.0.0.0 APP_VERSION={version}\nENTRYPOINT [\"/sample-app\"]\n"
        ),
    )
    .unwrap();
    dir
}

fn run(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().expect("the command runs");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

async fn healthy(address: &str) -> bool {
    let Ok(mut s) = tokio::net::TcpStream::connect(address).await else {
        return false;
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).await.is_ok() && &head[9..10] == b"2"
}

/// Raw: create and start `size` containers of `image` in parallel through the
/// Docker API (as the fleet does), until the first passing `GET /health` of each.
async fn raw_start(docker: &bluegreen_docker::Docker, image: &str, size: u32) -> Duration {
    use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
    use bollard::query_parameters::{
        CreateContainerOptionsBuilder, InspectContainerOptions, RemoveContainerOptionsBuilder,
        StartContainerOptions,
    };
    use std::collections::HashMap;
    let start = Instant::now();
    let names: Vec<String> = (0..size)
        .map(|i| format!("bench-raw-{}-{i}", std::process::id()))
        .collect();
    let addresses = futures_util::future::join_all(names.iter().map(|n| async move {
        let body = ContainerCreateBody {
            image: Some(image.to_owned()),
            env: Some(vec!["PORT=8080".into()]),
            exposed_ports: Some(HashMap::from([("8080/tcp".to_owned(), HashMap::new())])),
            host_config: Some(HostConfig {
                port_bindings: Some(HashMap::from([(
                    "8080/tcp".to_owned(),
                    Some(vec![PortBinding {
                        host_ip: Some("127.0.0.1".into()),
                        host_port: Some(String::new()),
                    }]),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        };
        let id = docker
            .create_container(
                Some(CreateContainerOptionsBuilder::new().name(n).build()),
                body,
            )
            .await
            .unwrap()
            .id;
        docker
            .start_container(&id, None::<StartContainerOptions>)
            .await
            .unwrap();
        let inspect = docker
            .inspect_container(&id, None::<InspectContainerOptions>)
            .await
            .unwrap();
        let port = inspect
            .network_settings
            .and_then(|n| n.ports)
            .and_then(|p| p.get("8080/tcp").cloned().flatten())
            .and_then(|b| b.first().and_then(|b| b.host_port.clone()))
            .unwrap();
        format!("127.0.0.1:{port}")
    }))
    .await;
    for a in &addresses {
        while !healthy(a).await {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let elapsed = start.elapsed();
    for n in &names {
        let _ = docker
            .remove_container(
                n,
                Some(RemoveContainerOptionsBuilder::new().force(true).build()),
            )
            .await;
    }
    elapsed
}

fn compose_file(dir: &Path, image: &str, size: u32, base_port: u16) {
    let mut yaml = String::from("version: \"2.4\"\nservices:\n");
    for i in 0..size {
        yaml.push_str(&format!(
            "  web{i}:\n    image: \"{image}\"\n    environment:\n      PORT: \"8080\"\n    ports:\n      - \"127.0.0.1:{}:8080\"\n    stop_grace_period: 10s\n",
            base_port + i as u16
        ));
    }
    std::fs::write(dir.join("docker-compose.yml"), yaml).unwrap();
}

fn free_port_block(n: u16) -> u16 {
    'outer: for base in (20000..60000).step_by(97) {
        for p in base..base + n {
            if std::net::TcpListener::bind(("127.0.0.1", p)).is_err() {
                continue 'outer;
            }
        }
        return base;
    }
    panic!("no free ports");
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let docker = connect().await.expect("a Docker daemon");
    let router = ProxyRouter::remote(&args.admin, AdminToken::new(&args.token).unwrap()).unwrap();
    let image = DockerImage::new(docker.clone());
    let fleet = DockerFleet::new(docker.clone(), DockerFleetOptions::default());

    // --- bluegreen
    let app = App::new(format!("bench-{}", std::process::id()), "docker").unwrap();
    let events = bluegreen_core::EventSink::none();
    let build = |version: &'static str| {
        let source = ImageSource::Build {
            context: context(&args.work, &args.sample_app, version),
            args: Default::default(),
        };
        let (image, app, events) = (image.clone(), app.clone(), events.clone());
        async move { image.prepare(&app, &source, &events).await.unwrap() }
    };
    let v1 = build("1").await;
    let v2 = build("2").await;
    let raw = raw_start(&docker, v2.id.as_str(), args.size).await;
    let engine = Engine::new(image.clone(), fleet.clone(), router.clone()).with_options(
        EngineOptions::default()
            .with_poll_interval(Duration::from_millis(50))
            .with_drain(Duration::ZERO)
            .with_keep(0),
    );
    let request = |id: &bluegreen_core::ImageId| {
        DeployRequest::new(app.clone(), ImageSource::Id(id.clone()))
            .size(args.size)
            .setting("stop_timeout_ms", "10000")
    };
    engine.deploy(&request(&v1.id)).await.unwrap();
    let host = format!("{}.{}", app.name(), app.environment());
    let load = HttpLoad::start(args.proxy, &host, args.clients);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = Instant::now();
    let report = engine.deploy(&request(&v2.id)).await.unwrap();
    let bg_wall = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let seen = load.stop().await;
    let (bg_ok, bg_failed) = (seen.ok, seen.failed.len() as u64);
    // the engine's own critical path without the retirement of the old group
    let bg_keep = {
        let engine = Engine::new(image.clone(), fleet.clone(), router.clone()).with_options(
            EngineOptions::default()
                .with_poll_interval(Duration::from_millis(50))
                .with_drain(Duration::ZERO)
                .with_keep(1),
        );
        let started = Instant::now();
        engine.deploy(&request(&v1.id)).await.unwrap();
        started.elapsed()
    };
    router.set_routes(&app, &RouteTable::empty()).await.unwrap();
    for g in fleet.groups(&app).await.unwrap() {
        router.detach(&app, &g.id).await.unwrap();
        fleet.destroy(&app, &g.id).await.unwrap();
    }
    for i in image.images(&app).await.unwrap() {
        let _ = image.remove(&app, &i.id).await;
    }

    // --- docker-compose, the same images under plain tags
    let capp = App::new(format!("compose-{}", std::process::id()), "docker").unwrap();
    let tag1 = format!("bench-compose-{}:1", std::process::id());
    let tag2 = format!("bench-compose-{}:2", std::process::id());
    for (tag, v) in [(&tag1, "1"), (&tag2, "2")] {
        run(std::process::Command::new("docker")
            .args(["build", "-q", "-t", tag])
            .arg(context(&args.work, &args.sample_app, v)));
    }
    let cdir = args.work.join("compose");
    std::fs::create_dir_all(&cdir).unwrap();
    let base = free_port_block(args.size as u16);
    let project = format!("bench{}", std::process::id());
    let compose = |image: &str| {
        compose_file(&cdir, image, args.size, base);
        let started = Instant::now();
        run(std::process::Command::new("docker-compose")
            .args(["-p", &project, "up", "-d"])
            .current_dir(&cdir));
        started.elapsed()
    };
    compose(&tag1);
    let instances: Vec<Instance> = (0..args.size)
        .map(|i| {
            Instance::new(
                format!("web{i}"),
                Some(format!("127.0.0.1:{}", base + i as u16)),
                Health::Healthy,
            )
        })
        .collect();
    let group = GroupId::new("compose");
    router.attach(&capp, &group, &instances).await.unwrap();
    router
        .set_routes(&capp, &RouteTable::single(group.clone()))
        .await
        .unwrap();
    let chost = format!("{}.{}", capp.name(), capp.environment());
    let load = HttpLoad::start(args.proxy, &chost, args.clients);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let compose_up = compose(&tag2);
    // compose returns once the containers are started: the service is back when
    // every new container answers its health check
    let started_wait = Instant::now();
    for i in 0..args.size {
        while !healthy(&format!("127.0.0.1:{}", base + i as u16)).await {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let compose_wall = compose_up + started_wait.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let seen = load.stop().await;
    let (c_ok, c_failed) = (seen.ok, seen.failed.len() as u64);
    router
        .set_routes(&capp, &RouteTable::empty())
        .await
        .unwrap();
    router.detach(&capp, &group).await.unwrap();
    run(std::process::Command::new("docker-compose")
        .args(["-p", &project, "down", "-t", "10"])
        .current_dir(&cdir));
    run(std::process::Command::new("docker").args(["rmi", "--no-prune", &tag1, &tag2]));

    println!(
        "raw start+health of {} containers: {:.3} s",
        args.size,
        raw.as_secs_f64()
    );
    println!(
        "result bluegreen wall={:.3} failed={} ok={} switch_ms={:.3} keep1_wall={:.3} overhead_keep1={:.3}",
        bg_wall.as_secs_f64(),
        bg_failed,
        bg_ok,
        report.switch_time.as_secs_f64() * 1000.0,
        bg_keep.as_secs_f64(),
        bg_keep.as_secs_f64() - raw.as_secs_f64()
    );
    println!(
        "result compose wall={:.3} failed={} ok={} up_d={:.3}",
        compose_wall.as_secs_f64(),
        c_failed,
        c_ok,
        compose_up.as_secs_f64()
    );
}
