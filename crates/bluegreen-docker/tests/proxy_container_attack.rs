//! Attacks on the documented guarantees of `ProxyContainer::start`, `find` and
//! `remove`, as several programs sharing one daemon would make them: calls of the
//! same name at once, a removal racing a start or a lookup, names that look like
//! others, a stopped container, another owner's objects and bad options.
//!
//! The tests of this file run one at a time (`SERIAL`), so that the images they
//! count are their own; each builds its proxy image from a binary of its own.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bluegreen_core::{App, Error, ErrorKind, GroupId, Health, Instance, RouteTable, Router};
use bluegreen_docker::{Docker, ProxyContainer, ProxyContainerOptions};
use support::{
    docker, docker_cli, docker_words, free_port, image_exists, own_proxy_binary, Scratch,
};

/// The bound of every call into the library.
const CALL: Duration = Duration::from_secs(90);

fn serial() -> &'static tokio::sync::Mutex<()> {
    static SERIAL: std::sync::OnceLock<tokio::sync::Mutex<()>> = std::sync::OnceLock::new();
    SERIAL.get_or_init(|| tokio::sync::Mutex::new(()))
}

/// Removes, when dropped (also after a panic), the containers and their volumes,
/// then the images, through the `docker` command.
/// Also removes the proxy images that appeared since it was made and no container
/// uses (the tests run one at a time, so these are the test's own).
struct Guard {
    names: Vec<String>,
    images: Vec<String>,
    images_before: BTreeSet<String>,
}

impl Guard {
    fn new(names: &[String]) -> Guard {
        Guard {
            names: names.to_vec(),
            images: Vec::new(),
            images_before: top_proxy_images(),
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        for name in &self.names {
            if name.starts_with("bluegreen-proxy-attack-") {
                let _ = std::process::Command::new("docker")
                    .args(["rm", "-f", name])
                    .output();
                let _ = std::process::Command::new("docker")
                    .args(["volume", "rm", "-f", &format!("{name}-state")])
                    .output();
            }
        }
        for image in &self.images {
            let _ = std::process::Command::new("docker")
                .args(["rmi", "-f", image])
                .output();
        }
        for image in top_proxy_images().difference(&self.images_before) {
            let _ = std::process::Command::new("docker")
                .args(["rmi", image])
                .output();
        }
    }
}

/// The tagged and dangling (not intermediate) images with the proxy's role label.
fn top_proxy_images() -> BTreeSet<String> {
    docker_words(&[
        "images",
        "-q",
        "--no-trunc",
        "--filter",
        "label=bluegreen.role=proxy",
    ])
    .into_iter()
    .collect()
}

fn lines(args: &[&str]) -> BTreeSet<String> {
    docker_cli(args)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Every container's name, running or not.
fn container_names() -> BTreeSet<String> {
    lines(&["ps", "-a", "--format", "{{.Names}}"])
}

/// The containers this file's tests may have made: names with its prefix, and
/// `name` (which may lack it). Other programs' containers on the daemon are not
/// looked at.
fn containers_like(name: &str) -> BTreeSet<String> {
    container_names()
        .into_iter()
        .filter(|c| c.starts_with("bluegreen-proxy-attack-") || c == name)
        .collect()
}

/// The volumes this file's tests may have made (see [`containers_like`]).
fn volumes_like(name: &str) -> BTreeSet<String> {
    lines(&["volume", "ls", "--format", "{{.Name}}"])
        .into_iter()
        .filter(|v| v.starts_with("bluegreen-proxy-attack-") || *v == format!("{name}-state"))
        .collect()
}

fn container_exists(name: &str) -> bool {
    container_names().contains(name)
}

fn volume_exists(name: &str) -> bool {
    lines(&["volume", "ls", "--format", "{{.Name}}"]).contains(name)
}

/// Every image (intermediate ones too) with the proxy's role label.
fn proxy_images() -> BTreeSet<String> {
    lines(&[
        "images",
        "-a",
        "-q",
        "--no-trunc",
        "--filter",
        "label=bluegreen.role=proxy",
    ])
}

/// The containers whose admin directory label is `dir`.
fn containers_of_dir(dir: &Path) -> BTreeSet<String> {
    lines(&[
        "ps",
        "-a",
        "--format",
        "{{.Names}}",
        "--filter",
        &format!("label=bluegreen.proxy.dir={}", dir.display()),
    ])
}

fn inspect(name: &str, format: &str) -> String {
    docker_cli(&["inspect", "-f", format, name])
}

fn unique(tag: &str) -> String {
    format!(
        "bluegreen-proxy-attack-{tag}-{:06x}",
        fastrand::u32(..0x100_0000)
    )
}

fn opts(root: &Path, name: &str, binary: &Path) -> ProxyContainerOptions {
    ProxyContainerOptions::new(root.join(name), binary)
        .with_name(name)
        .with_listen(free_port())
        .with_args(["--health-interval", "200ms", "--drain-timeout", "2s"])
}

async fn start(
    docker: &Docker,
    o: &ProxyContainerOptions,
) -> bluegreen_core::Result<ProxyContainer> {
    tokio::time::timeout(CALL, ProxyContainer::start(docker, o))
        .await
        .unwrap_or_else(|_| panic!("start of {} did not return within {CALL:?}", o.name))
}

async fn remove(docker: &Docker, name: &str, dir: &Path) -> bluegreen_core::Result<()> {
    tokio::time::timeout(CALL, ProxyContainer::remove(docker, name, dir))
        .await
        .unwrap_or_else(|_| panic!("remove of {name} did not return within {CALL:?}"))
}

async fn find(
    docker: &Docker,
    name: &str,
    dir: &Path,
) -> bluegreen_core::Result<Option<ProxyContainer>> {
    tokio::time::timeout(CALL, ProxyContainer::find(docker, name, dir))
        .await
        .unwrap_or_else(|_| panic!("find of {name} did not return within {CALL:?}"))
}

/// The admin API answers through this router with the token of the directory.
async fn answers(proxy: &ProxyContainer) -> Result<(), String> {
    let app = App::new("probe", "attack").unwrap();
    match tokio::time::timeout(Duration::from_secs(20), proxy.router().routes(&app)).await {
        Err(_) => Err("the admin API did not answer within 20 s".into()),
        Ok(Err(e)) => Err(format!("the admin API refused: {e}")),
        Ok(Ok(t)) if t.is_empty() => Ok(()),
        Ok(Ok(t)) => Err(format!("an unknown app has routes: {t:?}")),
    }
}

/// Everything `remove` documents removing is gone: container, volume, token, socket.
fn assert_all_gone(name: &str, dir: &Path, why: &str) {
    assert!(
        !container_exists(name),
        "{why}: the container {name} is left"
    );
    assert!(
        !volume_exists(&format!("{name}-state")),
        "{why}: the volume {name}-state is left"
    );
    assert!(!dir.join("token").exists(), "{why}: the token is left");
    assert!(
        !dir.join("admin.sock").exists(),
        "{why}: the socket is left"
    );
    let others = containers_of_dir(dir);
    assert!(
        others.is_empty(),
        "{why}: containers of {dir:?} left: {others:?}"
    );
}

/// The proxy `name` either runs completely (container running, its volume, its
/// token, an answering admin API, one container of the directory) or is gone
/// completely.
async fn assert_whole_or_gone(docker: &Docker, o: &ProxyContainerOptions, why: &str) -> bool {
    if container_exists(&o.name) {
        assert_eq!(
            inspect(&o.name, "{{.State.Running}}"),
            "true",
            "{why}: the container is left but does not run"
        );
        assert!(
            volume_exists(&format!("{}-state", o.name)),
            "{why}: the container runs without its volume"
        );
        assert!(
            o.dir.join("token").exists(),
            "{why}: the container runs but its token is gone"
        );
        let found = find(docker, &o.name, &o.dir)
            .await
            .unwrap_or_else(|e| panic!("{why}: find of the running container failed: {e}"))
            .unwrap_or_else(|| panic!("{why}: find does not see the running container"));
        if let Err(e) = answers(&found).await {
            panic!("{why}: the container that runs does not answer with the token of its dir: {e}");
        }
        assert_eq!(
            containers_of_dir(&o.dir).len(),
            1,
            "{why}: {:?}",
            containers_of_dir(&o.dir)
        );
        true
    } else {
        assert_all_gone(&o.name, &o.dir, why);
        false
    }
}

/// Two (three) programs start the same proxy at once: every call returns the one
/// running container, whose admin API answers with the token every caller reads;
/// one image is built for the binary and nothing is orphaned.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn starts_of_one_name_at_once_give_one_working_proxy() {
    let Some(docker) = docker("attack: starts at once").await else {
        return;
    };
    let _serial = serial().lock().await;
    let tmp = Scratch::new("attack-starts");
    let binary = own_proxy_binary(tmp.path());
    let name = unique("same");
    let guard = Guard::new(std::slice::from_ref(&name));
    let o = opts(tmp.path(), &name, &binary);

    let calls: Vec<_> = (0..3)
        .map(|_| {
            let (docker, o) = (docker.clone(), o.clone());
            tokio::spawn(async move { start(&docker, &o).await })
        })
        .collect();
    let mut proxies = Vec::new();
    for c in calls {
        proxies.push(c.await.unwrap());
    }
    let mut failures = Vec::new();
    for (i, p) in proxies.iter().enumerate() {
        match p {
            Ok(p) => {
                assert_eq!(p.name(), name);
                assert_eq!(p.address(), o.listen);
                if let Err(e) = answers(p).await {
                    failures.push(format!("the proxy start {i} returned does not answer: {e}"));
                }
            }
            Err(e) => failures.push(format!("start {i} of three at once failed: {e}")),
        }
    }
    if !container_exists(&name) {
        failures.push(format!(
            "after three starts at once no container {name} exists (the starts: {:?})",
            proxies
                .iter()
                .map(|p| p.as_ref().map(|_| ()).map_err(|e| e.kind()))
                .collect::<Vec<_>>()
        ));
        failures.push(format!(
            "left behind: volume {}, token {}",
            volume_exists(&format!("{name}-state")),
            o.dir.join("token").exists()
        ));
        let _ = remove(&docker, &name, &o.dir).await;
        panic!("{failures:#?}");
    }
    if inspect(&name, "{{.State.Running}}") != "true" {
        failures.push("the container does not run after three starts at once".into());
    }
    if containers_of_dir(&o.dir) != BTreeSet::from([name.clone()]) {
        failures.push(format!(
            "one container for the directory, yet: {:?}",
            containers_of_dir(&o.dir)
        ));
    }
    // what a later program gets: the running proxy, with the token of the directory
    match find(&docker, &name, &o.dir).await {
        Ok(Some(p)) => {
            if let Err(e) = answers(&p).await {
                failures.push(format!(
                    "afterwards, the proxy that find returns does not answer: {e}"
                ));
            }
        }
        Ok(None) => failures.push("afterwards, find does not see the running proxy".into()),
        Err(e) => failures.push(format!("afterwards, find fails: {e}")),
    }
    let image = inspect(&name, "{{.Image}}");
    let new_top: BTreeSet<String> = top_proxy_images()
        .difference(&guard.images_before)
        .cloned()
        .collect();
    if new_top != BTreeSet::from([image.clone()]) {
        failures.push(format!(
            "one image is built for the binary, but these appeared: {new_top:?} (the container runs {image})"
        ));
    }

    remove(&docker, &name, &o.dir).await.unwrap();
    assert_all_gone(&name, &o.dir, "after the removal");
    if image_exists(&image) {
        failures.push("the image no container uses stays after the removal".into());
    }
    let left: BTreeSet<_> = top_proxy_images()
        .difference(&guard.images_before)
        .cloned()
        .collect();
    if !left.is_empty() {
        failures.push(format!(
            "proxy images left behind after the removal: {left:?}"
        ));
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// A start and a removal of the same proxy at once, both while it runs and while
/// it does not exist yet (the removal delayed into the middle of the start): the
/// removal succeeds and the proxy is afterwards either whole and working or gone
/// entirely, never half there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_start_and_a_removal_of_one_name_at_once_leave_it_whole_or_gone() {
    let Some(docker) = docker("attack: start and remove at once").await else {
        return;
    };
    let _serial = serial().lock().await;
    let tmp = Scratch::new("attack-start-remove");
    let binary = own_proxy_binary(tmp.path());
    let name = unique("race");
    let mut guard = Guard::new(std::slice::from_ref(&name));
    let o = opts(tmp.path(), &name, &binary);
    let mut outcomes = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(80);
    for round in 0..6 {
        if std::time::Instant::now() > deadline {
            break;
        }
        let running_before = round % 2 == 0;
        if running_before {
            start(&docker, &o).await.unwrap();
            if guard.images.is_empty() {
                guard.images.push(inspect(&name, "{{.Image}}"));
            }
        }
        let delay = Duration::from_millis(fastrand::u64(0..1500));
        let starting = tokio::spawn({
            let (docker, o) = (docker.clone(), o.clone());
            async move { start(&docker, &o).await }
        });
        let removing = tokio::spawn({
            let (docker, o) = (docker.clone(), o.clone());
            async move {
                tokio::time::sleep(delay).await;
                remove(&docker, &o.name, &o.dir).await
            }
        });
        let started = starting.await.unwrap();
        let removed = removing.await.unwrap();
        let why = format!(
            "round {round} (running before: {running_before}, removal after {delay:?}; start: {:?}, remove: {:?})",
            started.as_ref().map(|p| p.name().to_owned()).map_err(|e| e.to_string()),
            removed.as_ref().map_err(|e| e.to_string()),
        );
        println!("{why}");
        if let Err(e) = &removed {
            panic!("{why}: the removal failed: {e}");
        }
        let whole = assert_whole_or_gone(&docker, &o, &why).await;
        outcomes.push((round, started.is_ok(), whole));
        remove(&docker, &name, &o.dir).await.unwrap();
        assert_all_gone(&name, &o.dir, &why);
    }
    println!("outcomes (round, start ok, whole after): {outcomes:?}");
    for image in &guard.images {
        assert!(
            !image_exists(image),
            "the image no container uses is removed"
        );
    }
}

/// Two removals of one proxy at once both succeed ("missing ones are fine") and
/// leave nothing: container, volume, image, token, socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_removals_at_once_both_succeed_and_leave_nothing() {
    let Some(docker) = docker("attack: two removals").await else {
        return;
    };
    let _serial = serial().lock().await;
    let tmp = Scratch::new("attack-removes");
    let binary = own_proxy_binary(tmp.path());
    let name = unique("rm2");
    let mut guard = Guard::new(std::slice::from_ref(&name));
    let o = opts(tmp.path(), &name, &binary);
    start(&docker, &o).await.unwrap();
    let image = inspect(&name, "{{.Image}}");
    guard.images.push(image.clone());
    let calls: Vec<_> = (0..2)
        .map(|_| {
            let (docker, o) = (docker.clone(), o.clone());
            tokio::spawn(async move { remove(&docker, &o.name, &o.dir).await })
        })
        .collect();
    let mut errors = Vec::new();
    for (i, c) in calls.into_iter().enumerate() {
        if let Err(e) = c.await.unwrap() {
            errors.push(format!("removal {i} of two at once failed: {e}"));
        }
    }
    // whatever they answered, what is left
    assert_all_gone(&name, &o.dir, "after two removals at once");
    assert!(
        !image_exists(&image),
        "the image no container uses is removed"
    );
    assert!(errors.is_empty(), "{errors:#?}");
}

/// Two proxies of one binary started at once share the one image built for the
/// binary; removed at once afterwards, the last one's removal takes the image,
/// which no container uses any more.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_names_of_one_binary_at_once_share_one_image_that_goes_with_both() {
    let Some(docker) = docker("attack: two names at once").await else {
        return;
    };
    let _serial = serial().lock().await;
    let tmp = Scratch::new("attack-two-names");
    let binary = own_proxy_binary(tmp.path());
    let suffix = format!("{:06x}", fastrand::u32(..0x100_0000));
    let names = [
        format!("bluegreen-proxy-attack-pair-a-{suffix}"),
        format!("bluegreen-proxy-attack-pair-b-{suffix}"),
    ];
    let mut guard = Guard::new(&names);
    let images_before = proxy_images();
    let os = names.clone().map(|n| opts(tmp.path(), &n, &binary));
    let calls: Vec<_> = os
        .iter()
        .map(|o| {
            let (docker, o) = (docker.clone(), o.clone());
            tokio::spawn(async move { start(&docker, &o).await })
        })
        .collect();
    let mut results = Vec::new();
    for c in calls {
        results.push(c.await.unwrap());
    }
    for n in &names {
        if container_exists(n) {
            guard.images.push(inspect(n, "{{.Image}}"));
        }
    }
    for (o, r) in os.iter().zip(&results) {
        match r {
            Ok(p) => {
                if let Err(e) = answers(p).await {
                    panic!("{}: {e}", o.name);
                }
            }
            Err(e) => panic!("the start of {} (two names at once) failed: {e}", o.name),
        }
    }
    let images = names.clone().map(|n| inspect(&n, "{{.Image}}"));
    let mut failures = Vec::new();
    if images[0] != images[1] {
        failures.push(format!(
            "the image is built once per binary, yet the containers run two: {images:?} \
             (top-level proxy images new: {:?})",
            top_proxy_images()
                .difference(&guard.images_before)
                .collect::<Vec<_>>()
        ));
    }

    let calls: Vec<_> = os
        .iter()
        .map(|o| {
            let (docker, o) = (docker.clone(), o.clone());
            tokio::spawn(async move { remove(&docker, &o.name, &o.dir).await })
        })
        .collect();
    for (o, c) in os.iter().zip(calls) {
        if let Err(e) = c.await.unwrap() {
            panic!("the removal of {} (two at once) failed: {e}", o.name);
        }
    }
    for o in &os {
        assert_all_gone(&o.name, &o.dir, "after both removals");
    }
    let left: BTreeSet<_> = proxy_images().difference(&images_before).cloned().collect();
    for image in &images {
        if image_exists(image) {
            failures.push(format!(
                "both containers are removed, yet the image {image} they ran stays (no container uses it)"
            ));
        }
    }
    if !left.is_empty() {
        failures.push(format!(
            "new proxy images left (intermediate ones too): {left:?}"
        ));
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// A removal of a name no container has succeeds, creates nothing (not even the
/// directory) and touches no other file of a directory that exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_missing_name_succeeds_and_touches_nothing() {
    let Some(docker) = docker("attack: remove missing").await else {
        return;
    };
    let _serial = serial().lock().await;
    let tmp = Scratch::new("attack-missing");
    let name = unique("missing");
    let _guard = Guard::new(std::slice::from_ref(&name));
    let volumes_before = volumes_like(&name);
    let containers_before = containers_like(&name);
    let images_before = proxy_images();

    let absent = tmp.path().join("absent");
    remove(&docker, &name, &absent).await.unwrap();
    assert!(!absent.exists(), "remove created the directory {absent:?}");
    // twice: still fine
    remove(&docker, &name, &absent).await.unwrap();

    let present = tmp.path().join("present");
    std::fs::create_dir(&present).unwrap();
    std::fs::write(present.join("mine.txt"), "a user's file").unwrap();
    remove(&docker, &name, &present).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(present.join("mine.txt")).unwrap(),
        "a user's file"
    );
    assert!(find(&docker, &name, &present).await.unwrap().is_none());

    assert_eq!(
        containers_like(&name),
        containers_before,
        "containers changed"
    );
    assert_eq!(volumes_like(&name), volumes_before, "volumes changed");
    assert_eq!(proxy_images(), images_before, "proxy images changed");
}

/// Names that only look like a running proxy's (a prefix of its name, a prefix of
/// its container id, its whole id) are no such container for `find` and `remove`, and its name
/// with a leading slash is no container name (`Invalid`): the proxy keeps
/// running, its volume stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn look_alike_names_do_not_reach_another_proxy() {
    let Some(docker) = docker("attack: look-alike names").await else {
        return;
    };
    let _serial = serial().lock().await;
    let tmp = Scratch::new("attack-lookalike");
    let binary = own_proxy_binary(tmp.path());
    let name = unique("long");
    let mut guard = Guard::new(std::slice::from_ref(&name));
    let o = opts(tmp.path(), &name, &binary);
    start(&docker, &o).await.unwrap();
    guard.images.push(inspect(&name, "{{.Image}}"));
    let id = inspect(&name, "{{.Id}}");

    // `name` without its last characters (also what `docker ps --filter name=` matches)
    let prefix = name[..name.len() - 3].to_owned();
    let id_prefix = id[..12].to_owned();
    let slashed = format!("/{name}");
    let mut failures = Vec::new();
    for look_alike in [&slashed] {
        for (call, result) in [
            ("find", find(&docker, look_alike, &o.dir).await.map(|_| ())),
            ("remove", remove(&docker, look_alike, &o.dir).await),
        ] {
            match result {
                Err(e) if e.kind() == bluegreen_core::ErrorKind::Invalid => {
                    assert!(e.to_string().contains("proxy.name"), "{e}")
                }
                other => failures.push(format!(
                    "{call}({look_alike:?}): {other:?}, not Invalid naming proxy.name"
                )),
            }
        }
    }
    for look_alike in [&prefix, &id_prefix, &id] {
        // find with the proxy's own directory: a look-alike name is no such container
        match find(&docker, look_alike, &o.dir).await {
            Ok(None) => {}
            Ok(Some(p)) => failures.push(format!(
                "find({look_alike:?}) found a proxy named {:?}",
                p.name()
            )),
            Err(e) => failures.push(format!("find({look_alike:?}) failed: {e}")),
        }
        let elsewhere = tmp.path().join("elsewhere");
        if let Err(e) = remove(&docker, look_alike, &elsewhere).await {
            failures.push(format!("remove({look_alike:?}) failed: {e}"));
        }
        if !container_exists(&name) || inspect(&name, "{{.State.Running}}") != "true" {
            failures.push(format!(
                "remove({look_alike:?}) stopped or removed the proxy {name}; its volume {name}-state {}, its token {}",
                if volume_exists(&format!("{name}-state")) { "is left (orphaned)" } else { "is gone" },
                if o.dir.join("token").exists() { "is left" } else { "is gone" },
            ));
            break;
        }
        if !volume_exists(&format!("{name}-state")) {
            failures.push(format!(
                "remove({look_alike:?}) removed the volume {name}-state"
            ));
        }
    }
    if container_exists(&name) {
        assert_eq!(inspect(&name, "{{.Id}}"), id);
        remove(&docker, &name, &o.dir).await.unwrap();
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// `find` while another program removes the proxy: each lookup is `Some` (it
/// still runs) or `None` (it is gone or stopping), never an error; afterwards
/// `None`, and `find` created nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn find_during_a_removal_is_some_or_none_never_an_error() {
    let Some(docker) = docker("attack: find during remove").await else {
        return;
    };
    let _serial = serial().lock().await;
    let tmp = Scratch::new("attack-find");
    let binary = own_proxy_binary(tmp.path());
    let name = unique("find");
    let mut guard = Guard::new(std::slice::from_ref(&name));
    let o = opts(tmp.path(), &name, &binary);
    start(&docker, &o).await.unwrap();
    guard.images.push(inspect(&name, "{{.Image}}"));

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let finders: Vec<_> = (0..3)
        .map(|_| {
            let (docker, o, stop) = (docker.clone(), o.clone(), stop.clone());
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let until = std::time::Instant::now() + Duration::from_secs(60);
                while !stop.load(std::sync::atomic::Ordering::SeqCst)
                    && std::time::Instant::now() < until
                {
                    let r = find(&docker, &o.name, &o.dir).await;
                    seen.push(match r {
                        Ok(Some(p)) => {
                            assert_eq!(p.name(), o.name);
                            "some".to_owned()
                        }
                        Ok(None) => "none".to_owned(),
                        Err(e) => format!("error: {e}"),
                    });
                    tokio::time::sleep(Duration::from_millis(fastrand::u64(0..15))).await;
                }
                seen
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let removed = remove(&docker, &name, &o.dir).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut seen = Vec::new();
    for f in finders {
        seen.extend(f.await.unwrap());
    }
    removed.unwrap();
    let errors: Vec<_> = seen.iter().filter(|s| s.starts_with("error")).collect();
    println!(
        "{} lookups: {} some, {} none, {} errors",
        seen.len(),
        seen.iter().filter(|s| *s == "some").count(),
        seen.iter().filter(|s| *s == "none").count(),
        errors.len()
    );
    assert!(
        errors.is_empty(),
        "find failed during the removal: {errors:#?}"
    );
    assert_eq!(seen.last().map(String::as_str), Some("none"), "{seen:?}");
    assert!(find(&docker, &name, &o.dir).await.unwrap().is_none());
    assert_all_gone(&name, &o.dir, "after the removal and the lookups");
}

/// A stopped proxy is not started by `find` (`None`); `start` reuses it (the same
/// container, its routes restored from its volume, the token unchanged, so that
/// routers of other programs keep working).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_proxy_is_reused_with_its_routes_and_token() {
    let Some(docker) = docker("attack: stopped reuse").await else {
        return;
    };
    let _serial = serial().lock().await;
    let tmp = Scratch::new("attack-stopped");
    let binary = own_proxy_binary(tmp.path());
    let name = unique("stopped");
    let mut guard = Guard::new(std::slice::from_ref(&name));
    let o = opts(tmp.path(), &name, &binary);
    let proxy = start(&docker, &o).await.unwrap();
    guard.images.push(inspect(&name, "{{.Image}}"));
    let id = inspect(&name, "{{.Id}}");
    let app = App::new("stopped", "attack").unwrap();
    let group = GroupId::new("stopped-attack-v001");
    proxy
        .router()
        .attach(
            &app,
            &group,
            &[Instance::new(
                "i1",
                Some("127.0.0.1:9".into()),
                Health::Healthy,
            )],
        )
        .await
        .unwrap();
    let table = RouteTable::single(group.clone());
    proxy.router().set_routes(&app, &table).await.unwrap();
    let token = std::fs::read_to_string(o.dir.join("token")).unwrap();

    docker_cli(&["stop", "-t", "5", &name]);
    assert!(
        find(&docker, &name, &o.dir).await.unwrap().is_none(),
        "find of a stopped proxy is None"
    );
    assert_eq!(
        inspect(&name, "{{.State.Running}}"),
        "false",
        "find never starts anything"
    );

    let again = start(&docker, &o).await.unwrap();
    assert_eq!(
        inspect(&name, "{{.Id}}"),
        id,
        "the same container is reused"
    );
    assert_eq!(inspect(&name, "{{.State.Running}}"), "true");
    assert_eq!(
        again.router().routes(&app).await.unwrap(),
        table,
        "the routes are restored from the volume"
    );
    assert_eq!(
        std::fs::read_to_string(o.dir.join("token")).unwrap(),
        token,
        "reusing the container keeps its token"
    );
    assert_eq!(
        proxy.router().routes(&app).await.unwrap(),
        table,
        "the router of the first start still works"
    );
    remove(&docker, &name, &o.dir).await.unwrap();
    assert_all_gone(&name, &o.dir, "after the removal");
}

/// A stopped proxy whose directory went meanwhile (a temporary directory cleaned
/// at a reboot): `start` reuses it, the directory is created again ("created
/// (mode 0700) when missing") and the proxy answers with the token found there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_proxy_whose_directory_went_starts_again() {
    let Some(docker) = docker("attack: stopped, dir gone").await else {
        return;
    };
    let _serial = serial().lock().await;
    let tmp = Scratch::new("attack-dir-gone");
    let binary = own_proxy_binary(tmp.path());
    let name = unique("dirgone");
    let mut guard = Guard::new(std::slice::from_ref(&name));
    let o = opts(tmp.path(), &name, &binary);
    start(&docker, &o).await.unwrap();
    guard.images.push(inspect(&name, "{{.Image}}"));
    let id = inspect(&name, "{{.Id}}");
    docker_cli(&["stop", "-t", "5", &name]);
    std::fs::remove_dir_all(&o.dir).unwrap();

    let result = start(&docker, &o).await;
    let outcome = match &result {
        Ok(p) => answers(p).await,
        Err(e) => Err(format!("start failed: {e}")),
    };
    let mode = std::fs::metadata(&o.dir).map(|m| {
        use std::os::unix::fs::PermissionsExt;
        m.permissions().mode() & 0o777
    });
    let same = container_exists(&name) && inspect(&name, "{{.Id}}") == id;
    let _ = remove(&docker, &name, &o.dir).await;
    outcome.unwrap_or_else(|e| panic!("the stopped proxy whose dir went: {e}"));
    assert!(same, "the stopped container is reused");
    assert_eq!(
        mode.ok(),
        Some(0o700),
        "the directory is created again, mode 0700"
    );
}

/// Another owner's container of the name: `start`, `find` and `remove` are
/// `Conflict` and leave it alone, and `start` leaves nothing of its own behind
/// (no state volume, no token).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_owners_container_of_the_name_is_left_alone() {
    let Some(docker) = docker("attack: another owner").await else {
        return;
    };
    let _serial = serial().lock().await;
    let tmp = Scratch::new("attack-owner");
    let name = unique("foreign");
    let mut guard = Guard::new(std::slice::from_ref(&name));
    // a user's image and a created container of that name, without bluegreen's labels
    let context = tmp.path().join("context");
    std::fs::create_dir(&context).unwrap();
    std::fs::write(context.join("f"), "x").unwrap();
    std::fs::write(
        context.join("Dockerfile"),
        "FROM scratch\nCOPY f /f\nCMD [\"/f\"]\n",
    )
    .unwrap();
    let tag = format!("{name}:user");
    guard.images.push(tag.clone());
    docker_cli(&["build", "-q", "-t", &tag, context.to_str().unwrap()]);
    let id = docker_cli(&["create", "--name", &name, &tag]);
    let binary = own_proxy_binary(tmp.path());
    let o = opts(tmp.path(), &name, &binary);
    let images_before = proxy_images();

    let e = start(&docker, &o).await.map(|_| ()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    let e = find(&docker, &name, &o.dir).await.map(|_| ()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    let e = remove(&docker, &name, &o.dir).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    assert_eq!(
        inspect(&name, "{{.Id}}"),
        id,
        "the user's container is left alone"
    );
    assert_eq!(inspect(&name, "{{.State.Status}}"), "created");

    let mut orphans = Vec::new();
    if volume_exists(&format!("{name}-state")) {
        orphans.push(format!("the volume {name}-state"));
    }
    if o.dir.join("token").exists() {
        orphans.push("the token".to_owned());
    }
    let images: Vec<_> = proxy_images().difference(&images_before).cloned().collect();
    if !images.is_empty() {
        guard.images.extend(images.iter().cloned());
        orphans.push(format!("proxy images {images:?}"));
    }
    assert!(
        orphans.is_empty(),
        "the refused start left behind (and the refused remove kept): {orphans:?}"
    );
}

/// Another owner's volume `<name>-state` and no container: `remove` is `Conflict`
/// and leaves it; `start` does not take it over silently: either it refuses, and
/// leaves no container, or the volume is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_owners_state_volume_is_left_alone() {
    let Some(docker) = docker("attack: another owner's volume").await else {
        return;
    };
    let _serial = serial().lock().await;
    let tmp = Scratch::new("attack-volume");
    let name = unique("volume");
    let mut guard = Guard::new(std::slice::from_ref(&name));
    let volume = format!("{name}-state");
    docker_cli(&["volume", "create", &volume]);
    let binary = own_proxy_binary(tmp.path());
    let o = opts(tmp.path(), &name, &binary);

    let e = remove(&docker, &name, &o.dir).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    assert!(
        volume_exists(&volume),
        "remove left the user's volume alone"
    );

    let images_before = top_proxy_images();
    let started = start(&docker, &o).await;
    if container_exists(&name) {
        guard.images.push(inspect(&name, "{{.Image}}"));
    }
    println!(
        "start on another owner's volume: {:?}; new proxy images: {:?}; dir created: {}",
        started.as_ref().map(|_| ()).map_err(|e| e.to_string()),
        top_proxy_images()
            .difference(&images_before)
            .collect::<Vec<_>>(),
        o.dir.exists()
    );
    match &started {
        Ok(_) => panic!("start took over another owner's volume {volume} as its state"),
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
            assert!(
                !container_exists(&name),
                "the refused start left its container behind"
            );
        }
    }
    assert!(volume_exists(&volume));
    assert_eq!(
        docker_cli(&["volume", "inspect", "-f", "{{json .Labels}}", &volume]),
        "null",
        "the user's volume is unchanged"
    );
}

/// One bad option: the error must be `Invalid` naming `field`, and nothing is
/// created: no container, no volume, no proxy image, not the directory.
async fn refused(
    docker: &Docker,
    o: &ProxyContainerOptions,
    field: &str,
    failures: &mut Vec<String>,
) {
    let volume = format!("{}-state", o.name);
    let volume_before = volume_exists(&volume);
    let containers_before = containers_like(&o.name);
    let images_before = proxy_images();
    let result = start(docker, o).await;
    let label = format!(
        "{} = {:?} / dir {:?} / binary {:?} / listen {}",
        field, o.name, o.dir, o.binary, o.listen
    );
    match &result {
        Ok(_) => failures.push(format!("{label}: started")),
        Err(Error::Invalid {
            field: f, reason, ..
        }) => {
            if !f.contains(field) {
                failures.push(format!(
                    "{label}: Invalid names {f:?} ({reason}), not {field}"
                ))
            }
        }
        Err(e) => failures.push(format!("{label}: not Invalid: {e}")),
    }
    let new_containers: Vec<_> = containers_like(&o.name)
        .difference(&containers_before)
        .cloned()
        .collect();
    if !new_containers.is_empty() {
        failures.push(format!("{label}: created containers {new_containers:?}"));
        for c in &new_containers {
            if c == &o.name {
                let _ = std::process::Command::new("docker")
                    .args(["rm", "-f", c])
                    .output();
            }
        }
    }
    if !volume_before && volume_exists(&volume) {
        failures.push(format!("{label}: created the volume {volume:?}"));
        let _ = std::process::Command::new("docker")
            .args(["volume", "rm", "-f", &volume])
            .output();
    }
    let new_images: Vec<_> = proxy_images().difference(&images_before).cloned().collect();
    if !new_images.is_empty() {
        failures.push(format!("{label}: built proxy images {new_images:?}"));
        for i in &new_images {
            let _ = std::process::Command::new("docker")
                .args(["rmi", "-f", i])
                .output();
        }
    }
    if !o.dir.as_os_str().is_empty() && o.dir.exists() {
        failures.push(format!("{label}: created the directory {:?}", o.dir));
    }
}

/// Bad options are `Invalid` naming the field, before anything is created: names
/// the daemon refuses for a container or a volume, an empty or missing directory
/// or binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_options_are_invalid_naming_the_field_before_anything_is_created() {
    let Some(docker) = docker("attack: bad options").await else {
        return;
    };
    let _serial = serial().lock().await;
    let tmp = Scratch::new("attack-invalid");
    let binary = own_proxy_binary(tmp.path());
    let suffix = format!("{:06x}", fastrand::u32(..0x100_0000));
    let good = format!("bluegreen-proxy-attack-ok-{suffix}");
    let _guard = Guard::new(std::slice::from_ref(&good));
    let mut failures = Vec::new();
    let dir = |tag: &str| tmp.path().join(format!("dir-{tag}"));

    let bad_names = [
        String::new(),
        format!("bluegreen-proxy-attack-has space-{suffix}"),
        format!("bluegreen-proxy-attack-a/b-{suffix}"),
        format!("-bluegreen-proxy-attack-dash-{suffix}"),
        format!(".bluegreen-proxy-attack-dot-{suffix}"),
        format!("bluegreen-proxy-attack-é-{suffix}"),
        format!("bluegreen-proxy-attack-colon:{suffix}"),
        format!("bluegreen-proxy-attack-{}-{suffix}", "x".repeat(300)),
        // a single character: the daemon's name pattern wants two at least
        "q".to_owned(),
    ];
    for (i, name) in bad_names.iter().enumerate() {
        if name == "q" && volume_exists("q-state") {
            continue;
        }
        let o = ProxyContainerOptions::new(dir(&format!("name{i}")), &binary)
            .with_name(name.clone())
            .with_listen(free_port());
        refused(&docker, &o, "name", &mut failures).await;
    }

    let base = ProxyContainerOptions::new(dir("x"), &binary)
        .with_name(good.clone())
        .with_listen(free_port());
    let mut o = base.clone();
    o.dir = PathBuf::new();
    refused(&docker, &o, "dir", &mut failures).await;

    for (tag, b) in [
        ("missing", tmp.path().join("no-such-binary")),
        ("directory", tmp.path().to_path_buf()),
        ("empty", PathBuf::new()),
    ] {
        let mut o = base.clone();
        o.dir = dir(&format!("binary-{tag}"));
        o.binary = b;
        refused(&docker, &o, "binary", &mut failures).await;
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Port 0 is no address where clients reach a long-lived proxy (`address()` would
/// say `:0`): `Invalid` naming `listen`, before anything is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_on_port_zero_is_invalid() {
    let Some(docker) = docker("attack: port 0").await else {
        return;
    };
    let _serial = serial().lock().await;
    let tmp = Scratch::new("attack-port0");
    let binary = own_proxy_binary(tmp.path());
    let name = unique("port0");
    let mut guard = Guard::new(std::slice::from_ref(&name));
    let o = ProxyContainerOptions::new(tmp.path().join("dir"), &binary)
        .with_name(name.clone())
        .with_listen("127.0.0.1:0".parse().unwrap());
    let mut failures = Vec::new();
    refused(&docker, &o, "listen", &mut failures).await;
    if container_exists(&name) {
        guard.images.push(inspect(&name, "{{.Image}}"));
    }
    let _ = remove(&docker, &name, &o.dir).await;
    assert!(failures.is_empty(), "{failures:#?}");
}

/// `args` cannot move what the container sets ("the listener, the admin API, the
/// token and the state file are set by the container"): a `--listen` among them is
/// either `Invalid` naming `args`, or ignored, and the proxy serves on `listen`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn args_do_not_move_the_listener() {
    let Some(docker) = docker("attack: args --listen").await else {
        return;
    };
    let _serial = serial().lock().await;
    let tmp = Scratch::new("attack-args");
    let binary = own_proxy_binary(tmp.path());
    let name = unique("args");
    let mut guard = Guard::new(std::slice::from_ref(&name));
    let other = free_port();
    let o = opts(tmp.path(), &name, &binary).with_args(["--listen".to_owned(), other.to_string()]);
    let images_before = proxy_images();
    let result = start(&docker, &o).await;
    if container_exists(&name) {
        guard.images.push(inspect(&name, "{{.Image}}"));
    }
    let verdict = match &result {
        Err(Error::Invalid { field, .. }) if field.contains("args") => {
            let created = container_exists(&name)
                || volume_exists(&format!("{name}-state"))
                || o.dir.exists()
                || proxy_images() != images_before;
            if created {
                Err("Invalid args, but something was created".to_owned())
            } else {
                Ok(())
            }
        }
        Err(e) => Err(format!(
            "start failed with {:?}, not Invalid naming args: {e}; left behind: container {}, volume {}, dir {}, new proxy images {:?}",
            e.kind(),
            container_exists(&name),
            volume_exists(&format!("{name}-state")),
            o.dir.exists(),
            proxy_images().difference(&images_before).collect::<Vec<_>>()
        )),
        Ok(p) => {
            let on_listen = tokio::time::timeout(
                Duration::from_secs(5),
                tokio::net::TcpStream::connect(o.listen),
            )
            .await;
            let on_other = tokio::time::timeout(
                Duration::from_secs(5),
                tokio::net::TcpStream::connect(other),
            )
            .await;
            match (on_listen, on_other) {
                (Ok(Ok(_)), Ok(Err(_))) if p.address() == o.listen => Ok(()),
                (l, r) => Err(format!(
                    "started, but the listener moved: connect {}: {l:?}, connect {other}: {r:?}",
                    o.listen
                )),
            }
        }
    };
    let _ = remove(&docker, &name, &o.dir).await;
    verdict.unwrap();
}
