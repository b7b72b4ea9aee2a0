//! Replaces a 3-replica service spread over the 3 nodes of a swarm with a new image,
//! through bluegreen (`Engine::deploy`, a new service per group) and through Swarm's
//! own rolling update (`docker service update --image ... --update-order
//! start-first`, then `stop-first`), each under the same bounded load through the
//! same front proxy (a `bluegreen-proxy` process). Run by `scripts/bench-swarm`.
//!
//! Prints one `result` line per method, and the raw service start that bluegreen's
//! time is compared with: a service of the same spec created through the API until
//! its first task, and then every task, first passes `GET /health`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bluegreen_core::{
    App, DeployRequest, Engine, EngineOptions, Event, EventSink, Fleet, GroupId, Health, Image,
    ImageSource, Instance, RouteTable, Router,
};
use bluegreen_docker::bollard::{self, Docker, API_DEFAULT_VERSION};
use bluegreen_docker::{RegistryImage, SwarmFleet};
use bluegreen_proxy::{AdminToken, ProxyRouter};
use bluegreen_testkit::http_load::HttpLoad;
use clap::Parser;

/// The benchmark's inputs.
#[derive(Parser)]
struct Args {
    /// A manager's Docker socket (a path).
    #[arg(long)]
    manager: String,
    /// The registry every node pulls from (`host:port`).
    #[arg(long)]
    registry: String,
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
    /// Replicas of the service.
    #[arg(long, default_value_t = 3)]
    size: u32,
    /// The host-mode port the natively updated service publishes on every node.
    #[arg(long, default_value_t = 18080)]
    port: u16,
    /// Rounds of the raw create and bluegreen's deployment (`keep = 1`), whose
    /// medians are reported.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// How long a native update may take before it is reported as stalled
    /// (seconds).
    #[arg(long, default_value_t = 60)]
    stall: u64,
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

/// `docker -H <manager> args...`: its standard output, or its error output.
fn docker_cli(manager: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker")
        .arg("-H")
        .arg(format!("unix://{manager}"))
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

async fn healthy(address: &str) -> bool {
    let Ok(Ok(mut s)) = tokio::time::timeout(
        Duration::from_secs(1),
        tokio::net::TcpStream::connect(address),
    )
    .await
    else {
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
    matches!(
        tokio::time::timeout(Duration::from_secs(1), s.read_exact(&mut head)).await,
        Ok(Ok(_))
    ) && &head[9..10] == b"2"
}

/// The node addresses of the swarm, by node id.
async fn node_addresses(docker: &Docker) -> HashMap<String, String> {
    docker
        .list_nodes(None::<bollard::query_parameters::ListNodesOptions>)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|n| {
            let mut addr = n.status.as_ref().and_then(|s| s.addr.clone());
            if addr
                .as_deref()
                .is_none_or(|a| a.is_empty() || a == "0.0.0.0")
            {
                addr = n
                    .manager_status
                    .as_ref()
                    .and_then(|m| m.addr.as_deref())
                    .and_then(|a| a.rsplit_once(':').map(|(h, _)| h.to_owned()));
            }
            Some((n.id?, addr?))
        })
        .collect()
}

/// Raw: one service of `size` replicas of `image`, spread over the nodes, its port
/// published in host mode (the spec the fleet creates), created through the API;
/// the time until its first task, and until every task, first passes
/// `GET /health`.
async fn raw_start(docker: &Docker, image: &str, size: u32) -> (Duration, Duration) {
    use bollard::models::{
        EndpointPortConfig, EndpointPortConfigPublishModeEnum, EndpointSpec, ServiceSpec,
        ServiceSpecMode, ServiceSpecModeReplicated, TaskSpec, TaskSpecContainerSpec,
        TaskSpecPlacement, TaskSpecPlacementPreferences, TaskSpecPlacementSpread, TaskState,
    };
    let nodes = node_addresses(docker).await;
    let name = format!("bench-raw-{}", std::process::id());
    let spec = ServiceSpec {
        name: Some(name.clone()),
        task_template: Some(TaskSpec {
            container_spec: Some(TaskSpecContainerSpec {
                image: Some(image.to_owned()),
                env: Some(vec!["PORT=8080".into(), "HOST=0.0.0.0".into()]),
                ..Default::default()
            }),
            placement: Some(TaskSpecPlacement {
                preferences: Some(vec![TaskSpecPlacementPreferences {
                    spread: Some(TaskSpecPlacementSpread {
                        spread_descriptor: Some("node.labels.bluegreen.node".into()),
                    }),
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        mode: Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated {
                replicas: Some(i64::from(size)),
            }),
            ..Default::default()
        }),
        endpoint_spec: Some(EndpointSpec {
            mode: None,
            ports: Some(vec![EndpointPortConfig {
                target_port: Some(8080),
                publish_mode: Some(EndpointPortConfigPublishModeEnum::HOST),
                ..Default::default()
            }]),
        }),
        ..Default::default()
    };
    let start = Instant::now();
    let id = docker.create_service(spec, None).await.unwrap().id.unwrap();
    let mut first = None;
    let mut healthy_tasks = std::collections::BTreeSet::new();
    while healthy_tasks.len() < size as usize {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the raw service did not become healthy"
        );
        let tasks = docker
            .list_tasks(Some(
                bollard::query_parameters::ListTasksOptionsBuilder::new()
                    .filters(&HashMap::from([("service", vec![id.clone()])]))
                    .build(),
            ))
            .await
            .unwrap();
        for t in tasks {
            let status = t.status.as_ref();
            if status.and_then(|s| s.state) != Some(TaskState::RUNNING) {
                continue;
            }
            let port = status
                .and_then(|s| s.port_status.as_ref())
                .and_then(|p| p.ports.as_ref())
                .and_then(|p| p.first())
                .and_then(|p| p.published_port);
            let node = t.node_id.as_ref().and_then(|n| nodes.get(n));
            if let (Some(node), Some(port)) = (node, port) {
                let tid = t.id.clone().unwrap_or_default();
                if !healthy_tasks.contains(&tid) && healthy(&format!("{node}:{port}")).await {
                    healthy_tasks.insert(tid);
                    first.get_or_insert(start.elapsed());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let all = start.elapsed();
    docker.delete_service(&id).await.unwrap();
    (first.unwrap_or(all), all)
}

/// One round: the raw create until the first and every task is healthy, and
/// bluegreen's deployment (`keep = 1`) until its end and until the traffic moved.
type Round = (Duration, Duration, Duration, Duration);

/// One native rolling update under load: a service of `size` replicas of `v1`
/// publishing `port` in host mode on its nodes, behind the proxy at the nodes'
/// addresses, updated to `v2` with `order`. Prints one `result` line.
#[allow(clippy::too_many_arguments)]
async fn native(
    args: &Args,
    router: &ProxyRouter,
    nodes: &[String],
    v1: &str,
    v2: &str,
    order: &str,
) {
    let name = format!("bench-native-{order}-{}", std::process::id());
    let port = format!("mode=host,target=8080,published={}", args.port);
    let replicas = args.size.to_string();
    docker_cli(
        &args.manager,
        &[
            "service",
            "create",
            "--quiet",
            "--name",
            &name,
            "--replicas",
            &replicas,
            "--publish",
            &port,
            "--placement-pref",
            "spread=node.labels.bluegreen.node",
            "--env",
            "PORT=8080",
            "--env",
            "HOST=0.0.0.0",
            "--update-order",
            order,
            v1,
        ],
    )
    .unwrap();
    let addresses: Vec<String> = nodes.iter().map(|n| format!("{n}:{}", args.port)).collect();
    for a in &addresses {
        let start = Instant::now();
        while !healthy(a).await {
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "{a} never answered"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let app = App::new(format!("native-{order}"), "swarm").unwrap();
    let group = GroupId::new(name.clone());
    let instances: Vec<Instance> = addresses
        .iter()
        .enumerate()
        .map(|(i, a)| Instance::new(format!("{name}.{i}"), Some(a.clone()), Health::Healthy))
        .collect();
    router.attach(&app, &group, &instances).await.unwrap();
    router
        .set_routes(&app, &RouteTable::single(group.clone()))
        .await
        .unwrap();
    let host = format!("{}.{}", app.name(), app.environment());
    let load = HttpLoad::start(args.proxy, &host, args.clients);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = Instant::now();
    docker_cli(
        &args.manager,
        &[
            "service",
            "update",
            "--detach",
            "--quiet",
            "--image",
            v2,
            "--update-order",
            order,
            &name,
        ],
    )
    .unwrap();
    // done when the update says so and every node answers with the new version
    let mut state = String::new();
    let mut outcome = "stalled";
    while started.elapsed() < Duration::from_secs(args.stall) {
        state = docker_cli(
            &args.manager,
            &[
                "service",
                "inspect",
                "-f",
                "{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}",
                &name,
            ],
        )
        .unwrap_or_default();
        if state == "completed" {
            let mut all = true;
            for a in &addresses {
                all &= healthy(a).await;
            }
            if all {
                outcome = "completed";
                break;
            }
        }
        if state.starts_with("paused") || state.starts_with("rollback") {
            outcome = "paused";
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let wall = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let seen = load.stop().await;
    // what the tasks say (a new task that cannot start says why)
    let tasks = docker_cli(
        &args.manager,
        &[
            "service",
            "ps",
            "--no-trunc",
            "--format",
            "{{.Name}} {{.Image}} {{.DesiredState}} {{.CurrentState}} {{.Error}}",
            &name,
        ],
    )
    .unwrap_or_default();
    let pending = tasks
        .lines()
        .filter(|l| l.contains(" Pending ") || l.contains("Running Pending"))
        .count();
    let why = tasks
        .lines()
        .find_map(|l| l.split_once("no suitable node").map(|(_, w)| w.trim()))
        .unwrap_or("")
        .replace(' ', "_");
    for line in tasks.lines() {
        println!("native {order} task: {line}");
    }
    println!(
        "result native-{order} wall={:.3} outcome={outcome} state={} failed={} ok={} versions={} pending={pending} why={why}",
        wall.as_secs_f64(),
        if state.is_empty() { "none" } else { &state },
        seen.failed.len(),
        seen.ok,
        seen.versions.join(","),
    );
    for f in seen.first_failures() {
        println!("native {order} failure: {f}");
    }
    router.set_routes(&app, &RouteTable::empty()).await.unwrap();
    router.detach(&app, &group).await.unwrap();
    let _ = docker_cli(&args.manager, &["service", "rm", &name]);
    // the host ports are free once the tasks are gone
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        let mut any = false;
        for a in &addresses {
            any |= tokio::net::TcpStream::connect(a).await.is_ok();
        }
        if !any {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let docker = Docker::connect_with_unix(&args.manager, 600, API_DEFAULT_VERSION)
        .unwrap()
        .negotiate_version()
        .await
        .unwrap();
    let router = ProxyRouter::remote(&args.admin, AdminToken::new(&args.token).unwrap()).unwrap();
    let image = RegistryImage::new(docker.clone(), args.registry.clone()).unwrap();
    let fleet = SwarmFleet::new(docker.clone()).with_registry_auth(image.credentials().cloned());

    let app = App::new(format!("bench-{}", std::process::id()), "swarm").unwrap();
    let events = EventSink::none();
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
    // every node pulls both images once, outside the measured times
    let (_, warm) = raw_start(&docker, v1.id.as_str(), args.size).await;
    let _ = raw_start(&docker, v2.id.as_str(), args.size).await;
    println!("warm-up: {:.3} s", warm.as_secs_f64());

    // --- bluegreen
    let options = |keep: usize| {
        EngineOptions::default()
            .with_poll_interval(Duration::from_millis(50))
            .with_drain(Duration::ZERO)
            .with_keep(keep)
    };
    let request = |id: &bluegreen_core::ImageId| {
        DeployRequest::new(app.clone(), ImageSource::Id(id.clone()))
            .size(args.size)
            .setting("spread", "node.labels.bluegreen.node")
            .setting("stop_timeout_ms", "10000")
    };
    let engine = Engine::new(image.clone(), fleet.clone(), router.clone()).with_options(options(0));
    engine.deploy(&request(&v1.id)).await.unwrap();
    let host = format!("{}.{}", app.name(), app.environment());
    let load = HttpLoad::start(args.proxy, &host, args.clients);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = Instant::now();
    let report = engine.deploy(&request(&v2.id)).await.unwrap();
    let bg_wall = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let seen = load.stop().await;
    for f in seen.first_failures() {
        println!("bluegreen failure: {f}");
    }
    let (bg_ok, bg_failed) = (seen.ok, seen.failed.len() as u64);
    let bg_versions = seen.versions.join(",");
    // the critical path without the retirement of the old group, and when the
    // traffic moved, against the raw create, in interleaved rounds (the machine's
    // load drifts): medians
    let mut rounds = Vec::new();
    for round in 0..args.rounds {
        // the groups that are not live go first, outside the measured time
        let live = router.routes(&app).await.unwrap().primary().cloned();
        for g in fleet.groups(&app).await.unwrap() {
            if Some(&g.id) != live.as_ref() {
                router.detach(&app, &g.id).await.unwrap();
                fleet.destroy(&app, &g.id).await.unwrap();
            }
        }
        let next = if round % 2 == 0 { &v1.id } else { &v2.id };
        let (raw_first, raw_all) = raw_start(&docker, next.as_str(), args.size).await;
        let shifted = std::sync::Arc::new(std::sync::Mutex::new(None));
        let started = Instant::now();
        let engine = Engine::new(image.clone(), fleet.clone(), router.clone())
            .with_options(options(1))
            .with_events(EventSink::new({
                let shifted = shifted.clone();
                move |e: &Event| {
                    if matches!(e, Event::TrafficShifted { .. }) {
                        shifted.lock().unwrap().get_or_insert(started.elapsed());
                    }
                }
            }));
        engine.deploy(&request(next)).await.unwrap();
        let wall = started.elapsed();
        let shift = shifted.lock().unwrap().unwrap_or(wall);
        println!(
            "round {round}: raw first {:.3} s, raw all {:.3} s, bluegreen keep=1 {:.3} s (traffic moved at {:.3} s): overhead {:.3} s",
            raw_first.as_secs_f64(),
            raw_all.as_secs_f64(),
            wall.as_secs_f64(),
            shift.as_secs_f64(),
            wall.as_secs_f64() - raw_all.as_secs_f64()
        );
        rounds.push((raw_first, raw_all, wall, shift));
    }
    let median = |f: &dyn Fn(&Round) -> f64| {
        let mut v: Vec<f64> = rounds.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let raw_first = median(&|r| r.0.as_secs_f64());
    let raw_all = median(&|r| r.1.as_secs_f64());
    let bg_keep = median(&|r| r.2.as_secs_f64());
    let bg_shift = median(&|r| r.3.as_secs_f64());
    let overhead = median(&|r| r.2.as_secs_f64() - r.1.as_secs_f64());
    router.set_routes(&app, &RouteTable::empty()).await.unwrap();
    for g in fleet.groups(&app).await.unwrap() {
        router.detach(&app, &g.id).await.unwrap();
        fleet.destroy(&app, &g.id).await.unwrap();
    }

    // --- Swarm's rolling update, the same images
    let nodes: Vec<String> = {
        let mut n: Vec<String> = node_addresses(&docker).await.into_values().collect();
        n.sort();
        n
    };
    for order in ["start-first", "stop-first"] {
        native(
            &args,
            &router,
            &nodes,
            v1.id.as_str(),
            v2.id.as_str(),
            order,
        )
        .await;
    }
    // the images go once no task uses them
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        let left = image.images(&app).await.unwrap();
        if left.is_empty() {
            break;
        }
        for i in left {
            let _ = image.remove(&app, &i.id).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    println!(
        "raw service create (median of {}): first task healthy {raw_first:.3} s, all {} healthy {raw_all:.3} s",
        args.rounds, args.size,
    );
    println!(
        "result bluegreen wall={:.3} failed={} ok={} switch_ms={:.3} keep1_wall={bg_keep:.3} keep1_shift={bg_shift:.3} overhead_keep1={overhead:.3} raw_first={raw_first:.3} raw_all={raw_all:.3} rounds={} versions={bg_versions}",
        bg_wall.as_secs_f64(),
        bg_failed,
        bg_ok,
        report.switch_time.as_secs_f64() * 1000.0,
        args.rounds,
    );
}
