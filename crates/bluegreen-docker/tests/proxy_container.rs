//! The proxy as a long-lived container against the real daemon: a deployment
//! through it, a real restart of the container that keeps the same tables, reuse
//! by a later program, a corrupt state file that stops it with the file named,
//! removal that keeps the image while another container uses it, and a start that
//! loses its image to another container's removal before it creates its own.

mod support;

use std::path::Path;
use std::time::Duration;

use bluegreen_core::{App, DeployRequest, Engine, EngineOptions, ImageSource, RouteTable, Router};
use bluegreen_docker::{
    DockerFleet, DockerFleetOptions, DockerImage, DockerLock, ProxyContainer, ProxyContainerOptions,
};
use support::{
    context, docker, docker_cli, free_port, image_exists, labelled_containers, own_proxy_binary,
    Cleanup, Scratch,
};

/// Removes the proxy container and its volume when dropped, through the `docker`
/// command (also after a panic).
struct ProxyGuard(String);

impl Drop for ProxyGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", &self.0])
            .output();
        let _ = std::process::Command::new("docker")
            .args(["volume", "rm", "-f", &format!("{}-state", self.0)])
            .output();
    }
}

/// `GET /` through the proxy with the app's host: the status and body, or why not.
async fn get(proxy: std::net::SocketAddr, app: &App) -> Result<(u16, String), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(proxy)
        .await
        .map_err(|e| e.to_string())?;
    let request = format!(
        "GET / HTTP/1.1\r\nhost: {}.{}\r\nconnection: close\r\n\r\n",
        app.name(),
        app.environment()
    );
    s.write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut text))
        .await
        .map_err(|_| "no answer".to_owned())?
        .map_err(|e| e.to_string())?;
    let status = text
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not HTTP: {text:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

fn options(dir: &Path, name: &str) -> ProxyContainerOptions {
    let binary = bluegreen_testkit::binaries::static_binary("bluegreen-proxy", "bluegreen-proxy");
    ProxyContainerOptions::new(dir.join("proxy"), binary)
        .with_name(name)
        .with_listen(free_port())
        .with_args(["--health-interval", "200ms", "--drain-timeout", "5s"])
}

fn options_in(options: &ProxyContainerOptions, dir: std::path::PathBuf) -> ProxyContainerOptions {
    let mut other = ProxyContainerOptions::new(dir, options.binary.clone())
        .with_name(options.name.clone())
        .with_listen(options.listen);
    other.args = options.args.clone();
    other
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_container_serves_the_same_tables_after_a_restart() {
    let Some(docker) = docker("proxy container").await else {
        return;
    };
    let tmp = Scratch::new("proxy-container");
    let app = support::app("pc", "docker");
    let _cleanup = Cleanup::new(&app);
    let name = format!("bluegreen-proxy-test-{}", app.name());
    let _guard = ProxyGuard(name.clone());
    let options = options(tmp.path(), &name);
    let proxy = ProxyContainer::start(&docker, &options).await.unwrap();
    let id = docker_cli(&["inspect", "-f", "{{.Id}}", &name]);
    let lock = DockerLock::new(docker.clone());
    let fleet = DockerFleet::new(docker.clone(), DockerFleetOptions::default());
    let engine = Engine::new(
        DockerImage::new(docker.clone()),
        fleet.clone(),
        proxy.router(),
    )
    .with_lock(std::sync::Arc::new(lock.clone()))
    .with_options(
        EngineOptions::default()
            .with_poll_interval(Duration::from_millis(200))
            .with_drain(Duration::from_millis(500))
            .with_keep(1),
    );
    let source = ImageSource::Build {
        context: context(tmp.path(), "1", &[]),
        args: Default::default(),
    };
    let report = engine
        .deploy(
            &DeployRequest::new(app.clone(), source)
                .size(2)
                .setting("stop_timeout_ms", "2000"),
        )
        .await
        .unwrap();
    let table = proxy.router().routes(&app).await.unwrap();
    assert_eq!(table, RouteTable::single(report.live.clone()));
    let (status, body) = get(proxy.address(), &app).await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("version 1"), "{body}");

    // a real restart of the container: the same tables, served at once
    docker_cli(&["restart", "-t", "5", &name]);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let after = loop {
        match get(proxy.address(), &app).await {
            Ok(answer) => break answer,
            Err(e) if std::time::Instant::now() < deadline => {
                println!("while the container restarts: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the restarted proxy never answered: {e}"),
        }
    };
    assert_eq!(
        after.0, 200,
        "the first answer after the restart: {after:?}"
    );
    assert!(after.1.starts_with("version 1"), "{after:?}");
    assert_eq!(proxy.router().routes(&app).await.unwrap(), table);
    let serving = proxy.router().serving(&app, &report.live).await.unwrap();
    assert_eq!(serving.total, 2, "{serving:?}");

    // a later program reuses the running container (same id, same routes)
    let again = ProxyContainer::start(&docker, &options).await.unwrap();
    assert_eq!(docker_cli(&["inspect", "-f", "{{.Id}}", &name]), id);
    assert_eq!(again.router().routes(&app).await.unwrap(), table);
    // and one that asks for another listener is refused, changing nothing
    let e = ProxyContainer::start(&docker, &options.clone().with_listen(free_port()))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("remove it first"), "{e}");
    let e = ProxyContainer::start(&docker, &options_in(&options, tmp.path().join("elsewhere")))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("admin socket"), "{e}");
    assert_eq!(
        docker_cli(&["inspect", "-f", "{{.Id}}", &name]),
        id,
        "nothing changed"
    );

    // the token and the state are the owner's only
    let mode = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(mode(&options.dir.join("token")), 0o600);
    assert_eq!(mode(&options.dir), 0o700);
    let state = docker_cli(&[
        "volume",
        "inspect",
        "-f",
        "{{.Mountpoint}}",
        &format!("{name}-state"),
    ]);
    assert_eq!(mode(&Path::new(&state).join("state.json")), 0o600);

    // clean up: groups, the proxy, its volume, the lock
    let router = proxy.router();
    router.set_routes(&app, &RouteTable::empty()).await.unwrap();
    for g in bluegreen_core::Fleet::groups(&fleet, &app).await.unwrap() {
        router.detach(&app, &g.id).await.unwrap();
        bluegreen_core::Fleet::destroy(&fleet, &app, &g.id)
            .await
            .unwrap();
    }
    assert!(labelled_containers(&app).is_empty());
    ProxyContainer::remove(&docker, &name, &options.dir)
        .await
        .unwrap();
    ProxyContainer::remove(&docker, &name, &options.dir)
        .await
        .unwrap();
    lock.forget(&app).await.unwrap();
    let left = docker_cli(&["ps", "-a", "-q", "--filter", &format!("name=^{name}$")]);
    assert!(left.is_empty(), "the proxy container is gone: {left}");
    let volumes = docker_cli(&[
        "volume",
        "ls",
        "-q",
        "--filter",
        &format!("name={name}-state"),
    ]);
    assert!(volumes.is_empty(), "its volume is gone: {volumes}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_state_file_stops_the_proxy_container_naming_it() {
    let Some(docker) = docker("proxy container state").await else {
        return;
    };
    let tmp = Scratch::new("proxy-corrupt");
    let name = format!(
        "bluegreen-proxy-test-corrupt-{:06x}",
        fastrand::u32(..0x100_0000)
    );
    let _guard = ProxyGuard(name.clone());
    let options = options(tmp.path(), &name);
    ProxyContainer::start(&docker, &options).await.unwrap();
    docker_cli(&["stop", "-t", "5", &name]);
    let state = docker_cli(&[
        "volume",
        "inspect",
        "-f",
        "{{.Mountpoint}}",
        &format!("{name}-state"),
    ]);
    std::fs::write(
        Path::new(&state).join("state.json"),
        "{\"version\": 1, \"apps\": [",
    )
    .unwrap();
    let e = ProxyContainer::start(&docker, &options).await.unwrap_err();
    println!("{e}");
    let text = e.to_string();
    assert!(
        text.contains("/var/lib/bluegreen-proxy/state.json") && text.contains("does not read"),
        "the error quotes the proxy naming its state file: {text}"
    );
    // the file is left for the operator to fix
    assert_eq!(
        std::fs::read_to_string(Path::new(&state).join("state.json")).unwrap(),
        "{\"version\": 1, \"apps\": ["
    );
    ProxyContainer::remove(&docker, &name, &options.dir)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_proxy_container_keeps_the_image_another_uses_then_removes_it() {
    let Some(docker) = docker("proxy container image").await else {
        return;
    };
    let tmp = Scratch::new("proxy-image");
    // a binary of its own, so that no other test's proxy container shares the image
    let binary = own_proxy_binary(tmp.path());
    let suffix = format!("{:06x}", fastrand::u32(..0x100_0000));
    let names = [
        format!("bluegreen-proxy-test-img-a-{suffix}"),
        format!("bluegreen-proxy-test-img-b-{suffix}"),
    ];
    let _guards = names.clone().map(ProxyGuard);
    let opts = names.clone().map(|name| {
        let mut o = ProxyContainerOptions::new(tmp.path().join(&name), binary.clone())
            .with_name(name)
            .with_listen(free_port());
        o.args = vec!["--health-interval".into(), "200ms".into()];
        o
    });
    for o in &opts {
        ProxyContainer::start(&docker, o).await.unwrap();
    }
    let image = docker_cli(&["inspect", "-f", "{{.Image}}", &names[0]]);
    assert_eq!(
        image,
        docker_cli(&["inspect", "-f", "{{.Image}}", &names[1]]),
        "both containers run the one image of the binary"
    );
    // the steps beneath it: those that added the labels, then the Dockerfile's
    let mut labelled = Vec::new();
    let mut dockerfile_steps = Vec::new();
    let mut next = docker_cli(&["image", "inspect", "-f", "{{.Parent}}", &image]);
    while !next.is_empty() {
        let labels = docker_cli(&["image", "inspect", "-f", "{{json .Config.Labels}}", &next]);
        if dockerfile_steps.is_empty() && labels.contains("\"bluegreen.") {
            labelled.push(next.clone());
        } else {
            dockerfile_steps.push(next.clone());
        }
        next = docker_cli(&["image", "inspect", "-f", "{{.Parent}}", &next]);
    }
    assert!(
        !labelled.is_empty(),
        "the classic builder added the labels in steps of their own"
    );
    assert!(
        !dockerfile_steps.is_empty(),
        "the Dockerfile's steps are beneath"
    );

    // the first goes: its image stays for the other, which still runs
    ProxyContainer::remove(&docker, &names[0], &opts[0].dir)
        .await
        .unwrap();
    assert!(
        image_exists(&image),
        "the image the other container uses stays"
    );
    for step in &labelled {
        assert!(image_exists(step), "{step} beneath an image in use stays");
    }
    assert_eq!(
        docker_cli(&["inspect", "-f", "{{.State.Running}}", &names[1]]),
        "true"
    );

    // the second goes: the image and its label steps with it, the build cache
    // of the Dockerfile's steps stays
    ProxyContainer::remove(&docker, &names[1], &opts[1].dir)
        .await
        .unwrap();
    assert!(
        !image_exists(&image),
        "the image no container uses is removed"
    );
    for step in &labelled {
        assert!(
            !image_exists(step),
            "{step}, a step that added the labels, is removed"
        );
    }
    for step in &dockerfile_steps {
        assert!(image_exists(step), "{step}, the Dockerfile's step, stays");
    }
    // this test's own cache: top down, each once nothing is built on it
    for step in &dockerfile_steps {
        let removed = std::process::Command::new("docker")
            .args(["rmi", "--no-prune", step])
            .output()
            .unwrap();
        if !removed.status.success() {
            break;
        }
    }
}

/// A path to the daemon's socket through which requests pass unchanged, except the
/// first that creates the container `name`: it is held until `release` is
/// notified, and `held` is notified when it arrives. (A request is one write on bollard's
/// side; the create is matched by its path and query.)
async fn holding_socket(
    dir: &Path,
    name: &str,
    held: std::sync::Arc<tokio::sync::Notify>,
    release: std::sync::Arc<tokio::sync::Notify>,
) -> std::path::PathBuf {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let daemon = std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(str::to_owned))
        .unwrap_or_else(|| "/var/run/docker.sock".to_owned());
    let path = dir.join("docker.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let wanted = format!("/containers/create?name={name}").into_bytes();
    let first = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            let upstream = tokio::net::UnixStream::connect(&daemon).await.unwrap();
            let (mut client_read, mut client_write) = client.into_split();
            let (mut up_read, mut up_write) = upstream.into_split();
            let (wanted, held, release, first) =
                (wanted.clone(), held.clone(), release.clone(), first.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match client_read.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    if buf[..n].windows(wanted.len()).any(|w| w == wanted)
                        && first.swap(false, std::sync::atomic::Ordering::SeqCst)
                    {
                        held.notify_one();
                        release.notified().await;
                    }
                    if up_write.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut up_read, &mut client_write).await;
            });
        }
    });
    path
}

/// Two proxy containers of one binary run one image. One is removed while the
/// other starts, at the worst moment: the start has looked the image up and its
/// create is on the way (held at the daemon's socket) when the removal takes the
/// image for unused and removes it. The start must still succeed (the image is
/// built again) and serve; the removal must succeed too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_proxy_container_starts_while_another_of_its_binary_is_removed() {
    let Some(docker) = docker("proxy container start during a removal").await else {
        return;
    };
    let tmp = Scratch::new("proxy-race");
    let binary = own_proxy_binary(tmp.path());
    let suffix = format!("{:06x}", fastrand::u32(..0x100_0000));
    let names = [
        format!("bluegreen-proxy-race-a-{suffix}"),
        format!("bluegreen-proxy-race-b-{suffix}"),
    ];
    let _guards = names.clone().map(ProxyGuard);
    let [a, b] = names.clone().map(|name| {
        let mut o = ProxyContainerOptions::new(tmp.path().join(&name), binary.clone())
            .with_name(name)
            .with_listen(free_port());
        o.args = vec!["--health-interval".into(), "200ms".into()];
        o
    });
    ProxyContainer::start(&docker, &a).await.unwrap();
    let image = docker_cli(&["inspect", "-f", "{{.Image}}", &names[0]]);

    let held = std::sync::Arc::new(tokio::sync::Notify::new());
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    let socket = holding_socket(tmp.path(), &names[1], held.clone(), release.clone()).await;
    let slow = bluegreen_docker::Docker::connect_with_unix(
        socket.to_str().unwrap(),
        120,
        bollard::API_DEFAULT_VERSION,
    )
    .unwrap();
    let starting = tokio::spawn({
        let b = b.clone();
        async move { ProxyContainer::start(&slow, &b).await }
    });
    tokio::time::timeout(Duration::from_secs(60), held.notified())
        .await
        .expect("the start never reached its container create");
    ProxyContainer::remove(&docker, &a.name, &a.dir)
        .await
        .unwrap();
    assert!(
        !image_exists(&image),
        "the removal kept the image: the moment under test did not happen"
    );
    release.notify_one();
    let started = tokio::time::timeout(Duration::from_secs(120), starting)
        .await
        .expect("the start did not return")
        .unwrap();
    let proxy = started.unwrap_or_else(|e| panic!("the start failed: {e}"));
    assert_eq!(
        docker_cli(&["inspect", "-f", "{{.State.Running}}", &names[1]]),
        "true"
    );
    // a start returns once the proxy's admin API answers
    assert_eq!(proxy.address(), b.listen);
    ProxyContainer::remove(&docker, &b.name, &b.dir)
        .await
        .unwrap();
}
