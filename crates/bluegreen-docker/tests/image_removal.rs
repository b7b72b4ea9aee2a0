//! The guarantee of `Image::remove` (DockerImage) and
//! `ProxyContainer::remove`: only bluegreen's images of the app go, only when no
//! container uses them; tags outside `bluegreen/` are never removed and keep the
//! image; untagged parents (the Dockerfile's steps, a user's base image) stay; only
//! the steps that added bluegreen's labels go with the image; a missing image is
//! fine; nothing bluegreen did not create is deleted: user tags, images built
//! `FROM` one of bluegreen's, Dockerfiles that set bluegreen's labels themselves,
//! id forms, containers, concurrent removals, and removals racing another build.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bluegreen_core::{App, ErrorKind, EventSink, Image, ImageId, ImageSource};
use bluegreen_docker::{Docker, DockerImage, ProxyContainer, ProxyContainerOptions};
use support::{docker, free_port, image_exists, own_proxy_binary, Cleanup, Scratch};

// ---------------------------------------------------------------- helpers

fn build(context: &Path) -> ImageSource {
    ImageSource::Build {
        context: context.to_path_buf(),
        args: BTreeMap::new(),
    }
}

fn rnd() -> String {
    format!("{:08x}", fastrand::u32(..))
}

/// `docker args`: success, stdout (trimmed), stderr.
fn cli(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new("docker")
        .env("DOCKER_BUILDKIT", "0")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    )
}

fn cli_ok(args: &[&str]) -> String {
    let (ok, out, err) = cli(args);
    assert!(ok, "docker {args:?}: {err}");
    out
}

fn tags_of(image: &str) -> Vec<String> {
    let (ok, out, _) = cli(&["image", "inspect", "-f", "{{json .RepoTags}}", image]);
    if !ok {
        return Vec::new();
    }
    serde_json::from_str::<Option<Vec<String>>>(&out)
        .unwrap()
        .unwrap_or_default()
}

/// The parents of `image`, nearest first.
fn parents(image: &str) -> Vec<String> {
    let mut chain = Vec::new();
    let mut next = cli_ok(&["image", "inspect", "-f", "{{.Parent}}", image]);
    while !next.is_empty() {
        chain.push(next.clone());
        next = cli_ok(&["image", "inspect", "-f", "{{.Parent}}", &next]);
    }
    chain
}

fn labels_json(image: &str) -> String {
    cli_ok(&["image", "inspect", "-f", "{{json .Config.Labels}}", image])
}

/// A directory with random files `a`, `b` (this test's own cache) and `dockerfile`.
fn context_with(root: &Path, name: &str, dockerfile: &str) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["a", "b"] {
        let bytes: Vec<u8> = (0..64).map(|_| fastrand::u8(..)).collect();
        std::fs::write(dir.join(f), bytes).unwrap();
    }
    std::fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
    dir
}

/// A plain context: `FROM scratch`, two COPY steps, an ENV step.
fn plain_context(root: &Path, name: &str) -> PathBuf {
    context_with(
        root,
        name,
        "FROM scratch\nCOPY a /a\nCOPY b /b\nENV STEP=three\n",
    )
}

/// Builds `dir` with the classic builder through the CLI (the user's own build),
/// tagged `tag` when given; its id.
fn user_build(dir: &Path, tag: Option<&str>) -> String {
    let d = dir.to_str().unwrap();
    let mut args = vec!["build", "-q"];
    if let Some(t) = tag {
        args.extend(["-t", t]);
    }
    args.push(d);
    cli_ok(&args)
}

fn bluegreen_tag(id: &str) -> Option<String> {
    tags_of(id)
        .into_iter()
        .find(|t| t.starts_with("bluegreen/"))
}

/// Removes, when dropped, these containers, then these images or tags (in order;
/// put children first), with `--no-prune`.
#[derive(Default)]
struct Rm {
    containers: Vec<String>,
    images: Vec<String>,
}

impl Drop for Rm {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = cli(&["rm", "-f", "-v", c]);
        }
        for i in &self.images {
            let _ = cli(&["rmi", "-f", "--no-prune", i]);
        }
    }
}

/// Builds `dir` for `app` as the engine does: through the retry layer
/// ([`support::prepare`]).
async fn prepare(image: &DockerImage, app: &App, dir: &Path) -> String {
    support::prepare(image, app, &build(dir), &EventSink::none())
        .await
        .unwrap()
        .id
        .as_str()
        .to_owned()
}

// ---------------------------------------------------------------- tags

/// A user tag added to bluegreen's image keeps it: only bluegreen's tag goes. The
/// user's tags include one outside `bluegreen/` that merely looks like it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_tags_keep_the_image() {
    let Some(docker) = docker("removal user tag").await else {
        return;
    };
    let tmp = Scratch::new("removal-tag");
    let app = support::app("atag", "docker");
    let _c = Cleanup::new(&app);
    let image = DockerImage::new(docker.clone());
    let id = prepare(&image, &app, &plain_context(tmp.path(), "c")).await;
    let r = rnd();
    let user_tags = [
        format!("myorg/web-{r}:keep"),
        format!("bluegreenx/{}:keep", app.slug()),
        format!("localhost:5000/bluegreen/{}:keep", app.slug()),
    ];
    let mut rm = Rm::default();
    for t in &user_tags {
        cli_ok(&["tag", &id, t]);
        rm.images.push(t.clone());
    }
    let steps = parents(&id);

    let result = image.remove(&app, &ImageId::new(id.clone())).await;
    assert!(result.is_ok(), "remove: {result:?}");
    assert!(image_exists(&id), "the image with user tags was removed");
    let tags = tags_of(&id);
    for t in &user_tags {
        assert!(tags.contains(t), "user tag {t} removed: left {tags:?}");
    }
    assert!(
        !tags
            .iter()
            .any(|t| t.starts_with(&format!("bluegreen/{}:", app.slug()))),
        "bluegreen's own tag stays on the kept image: {tags:?}"
    );
    for s in &steps {
        assert!(image_exists(s), "{s} beneath a kept image was removed");
    }
}

// ---------------------------------------------------------------- user images on ours

/// The user's image built FROM a bluegreen image (tagged by the user), with and
/// without its own LABEL lines (one of them forging bluegreen's labels for the
/// app): removing the bluegreen image leaves the user's image; removing the
/// user's image through the app leaves it too (it has a user tag).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tagged_user_image_built_on_ours_stays() {
    let Some(docker) = docker("removal derived tagged").await else {
        return;
    };
    let tmp = Scratch::new("removal-derived");
    let app = support::app("ader", "docker");
    let _c = Cleanup::new(&app);
    let image = DockerImage::new(docker.clone());
    let variants = [
        "COPY a /a\n".to_owned(),
        "LABEL maintainer=me\n".to_owned(),
        format!(
            "LABEL bluegreen.owner=bluegreen bluegreen.app={} bluegreen.environment={}\n",
            app.name(),
            app.environment()
        ),
    ];
    for (n, tail) in variants.iter().enumerate() {
        let base = prepare(
            &image,
            &app,
            &plain_context(tmp.path(), &format!("base{n}")),
        )
        .await;
        let base_tag = bluegreen_tag(&base).unwrap();
        let user_tag = format!("myorg/derived-{}:{n}", rnd());
        let dir = context_with(
            tmp.path(),
            &format!("derived{n}"),
            &format!("FROM {base_tag}\n{tail}"),
        );
        let derived = user_build(&dir, Some(&user_tag));
        let _rm = Rm {
            containers: vec![],
            images: vec![user_tag.clone(), derived.clone()],
        };
        let result = image.remove(&app, &ImageId::new(base.clone())).await;
        assert!(
            result.is_ok() || result.as_ref().unwrap_err().kind() == ErrorKind::Conflict,
            "variant {tail:?}: remove base: {result:?}"
        );
        assert!(
            image_exists(&derived),
            "variant {tail:?}: the user's image is gone"
        );
        assert!(
            image_exists(&base),
            "variant {tail:?}: the base of the user's image is gone"
        );
        assert!(
            tags_of(&derived).contains(&user_tag),
            "variant {tail:?}: user tag gone"
        );
        let result = image.remove(&app, &ImageId::new(derived.clone())).await;
        assert!(
            result.is_ok(),
            "variant {tail:?}: remove derived: {result:?}"
        );
        assert!(
            image_exists(&derived) && tags_of(&derived).contains(&user_tag),
            "variant {tail:?}: the user's tagged image was removed through the app"
        );
    }
}

/// The user's image built FROM a bluegreen image without a tag (`docker build -q`)
/// inherits bluegreen's labels: it is listed as the app's and removing it through
/// the app deletes an image bluegreen did not create.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untagged_user_image_built_on_ours_stays() {
    let Some(docker) = docker("removal derived untagged").await else {
        return;
    };
    let tmp = Scratch::new("removal-derived-u");
    let app = support::app("aderu", "docker");
    let _c = Cleanup::new(&app);
    let image = DockerImage::new(docker.clone());
    let base = prepare(&image, &app, &plain_context(tmp.path(), "base")).await;
    let base_tag = bluegreen_tag(&base).unwrap();
    let dir = context_with(
        tmp.path(),
        "derived",
        &format!("FROM {base_tag}\nCOPY a /user-file\n"),
    );
    let derived = user_build(&dir, None);
    let _rm = Rm {
        containers: vec![],
        images: vec![derived.clone()],
    };
    let listed: Vec<String> = image
        .images(&app)
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.id.as_str().to_owned())
        .collect();
    let result = image.remove(&app, &ImageId::new(derived.clone())).await;
    assert!(result.is_ok(), "remove: {result:?}");
    assert!(
        image_exists(&derived),
        "the user's untagged image built FROM {base_tag} was deleted by Image::remove \
         (Image::images listed it as the app's: {})",
        listed.contains(&derived)
    );
}

// ---------------------------------------------------------------- LABEL steps not ours

/// A Dockerfile whose own last steps are `LABEL bluegreen.…=<ours>` lines: those
/// are the Dockerfile's steps (here first built by the user, untagged, with
/// `docker build -q`), not the steps bluegreen added; they stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dockerfile_label_steps_stay() {
    let Some(docker) = docker("removal dockerfile labels").await else {
        return;
    };
    let tmp = Scratch::new("removal-dflabel");
    let app = support::app("adfl", "docker");
    let _c = Cleanup::new(&app);
    let image = DockerImage::new(docker.clone());
    let dockerfile = format!(
        "FROM scratch\nCOPY a /a\nLABEL bluegreen.owner=bluegreen\nLABEL bluegreen.app={}\n",
        app.name()
    );
    let dir = context_with(tmp.path(), "c", &dockerfile);
    // the user's own build of the same Dockerfile: its image is the Dockerfile's
    // last step
    let users = user_build(&dir, None);
    let users_parents = parents(&users);
    let mut rm = Rm::default();
    rm.images.push(users.clone());
    rm.images.extend(users_parents.clone());
    let id = prepare(&image, &app, &dir).await;
    let chain = parents(&id);
    assert!(
        chain.contains(&users),
        "bluegreen's build used the user's image as cache: {chain:?} {users}"
    );
    let result = image.remove(&app, &ImageId::new(id.clone())).await;
    assert!(result.is_ok(), "remove: {result:?}");
    assert!(!image_exists(&id), "the image itself is gone");
    let gone: Vec<&String> = std::iter::once(&users)
        .chain(users_parents.iter())
        .filter(|s| !image_exists(s))
        .collect();
    assert!(
        gone.is_empty(),
        "the Dockerfile's own steps (the user's untagged image {users} and its parents) \
         were removed: {gone:?}; Dockerfile:\n{dockerfile}"
    );
}

/// A base image the user built locally (not bluegreen), whose last step happens to
/// be `LABEL bluegreen.owner=bluegreen`, whose tag has since moved on (untagged),
/// and an app Dockerfile that is only `FROM` it: removing the app's image leaves
/// the user's base.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untagged_local_base_with_owner_label_stays() {
    untagged_base(
        "removal base owner label",
        "LABEL bluegreen.owner=bluegreen\n",
    )
    .await;
}

/// The same with a base without any bluegreen label (control).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untagged_local_base_stays() {
    untagged_base("removal base plain", "ENV BASE=1\n").await;
}

async fn untagged_base(test: &str, last_step: &str) {
    let Some(docker) = docker(test).await else {
        return;
    };
    let tmp = Scratch::new("removal-base");
    let app = support::app("abase", "docker");
    let _c = Cleanup::new(&app);
    let image = DockerImage::new(docker.clone());
    let base_tag = format!("userbase-{}:1", rnd());
    let base_dir = context_with(
        tmp.path(),
        "base",
        &format!("FROM scratch\nCOPY a /a\n{last_step}"),
    );
    let base = user_build(&base_dir, Some(&base_tag));
    let mut rm = Rm::default();
    rm.images.push(base_tag.clone());
    rm.images.push(base.clone());
    rm.images.extend(parents(&base));
    let dir = context_with(tmp.path(), "app", &format!("FROM {base_tag}\n"));
    let id = prepare(&image, &app, &dir).await;
    // the tag moves on: the base stays, untagged, beneath the app's image
    cli_ok(&["rmi", "--no-prune", &base_tag]);
    assert!(image_exists(&base));
    let result = image.remove(&app, &ImageId::new(id.clone())).await;
    assert!(result.is_ok(), "remove: {result:?}");
    assert!(!image_exists(&id), "the app's image is gone");
    assert!(
        image_exists(&base),
        "the user's base image {base} (last step {last_step:?}, untagged) was removed \
         with the app's image"
    );
}

// ---------------------------------------------------------------- twice, concurrently

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn remove_twice_and_concurrently() {
    let Some(docker) = docker("removal twice").await else {
        return;
    };
    let tmp = Scratch::new("removal-twice");
    let app = support::app("atwice", "docker");
    let _c = Cleanup::new(&app);
    let image = DockerImage::new(docker.clone());
    let id = prepare(&image, &app, &plain_context(tmp.path(), "c0")).await;
    let iid = ImageId::new(id.clone());
    image.remove(&app, &iid).await.unwrap();
    let again = image.remove(&app, &iid).await;
    assert!(again.is_ok(), "second remove: {again:?}");
    for n in 1..=6 {
        let dir = plain_context(tmp.path(), &format!("c{n}"));
        let id = prepare(&image, &app, &dir).await;
        let steps = parents(&id);
        let iid = ImageId::new(id.clone());
        let (a, b) = (image.clone(), image.clone());
        let (app_a, app_b) = (app.clone(), app.clone());
        let (ia, ib) = (iid.clone(), iid.clone());
        let ta = tokio::spawn(async move { a.remove(&app_a, &ia).await });
        let tb = tokio::spawn(async move { b.remove(&app_b, &ib).await });
        let (ra, rb) = (ta.await.unwrap(), tb.await.unwrap());
        let dockerfile_steps = &steps[steps.len() - 3..];
        let _rm = Rm {
            containers: vec![],
            images: dockerfile_steps.to_vec(),
        };
        assert!(
            ra.is_ok() && rb.is_ok(),
            "round {n}: concurrent removes: {ra:?} {rb:?}"
        );
        assert!(!image_exists(&id), "round {n}: the image stays");
        // the three Dockerfile steps stay, the label steps above them go
        for s in dockerfile_steps {
            assert!(image_exists(s), "round {n}: Dockerfile step {s} removed");
        }
        for s in &steps[..steps.len() - 3] {
            assert!(!image_exists(s), "round {n}: label step {s} left behind");
        }
    }
}

// ---------------------------------------------------------------- other apps

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_through_another_app() {
    let Some(docker) = docker("removal other app").await else {
        return;
    };
    let tmp = Scratch::new("removal-other");
    let app = support::app("aoth", "docker");
    let _c = Cleanup::new(&app);
    let image = DockerImage::new(docker.clone());
    let id = prepare(&image, &app, &plain_context(tmp.path(), "c")).await;
    let tag = bluegreen_tag(&id).unwrap();
    let others = [
        App::new(format!("{}x", app.name()), app.environment()).unwrap(),
        App::new(app.name(), "staging").unwrap(),
        // a name that is a prefix of the app's
        App::new(&app.name()[..app.name().len() - 1], app.environment()).unwrap(),
    ];
    for other in &others {
        let r = image.remove(other, &ImageId::new(id.clone())).await;
        assert!(r.is_ok(), "remove through {other}: {r:?}");
        assert!(image_exists(&id), "removed through {other}");
        assert!(tags_of(&id).contains(&tag), "tag removed through {other}");
    }
    image.remove(&app, &ImageId::new(id.clone())).await.unwrap();
    assert!(!image_exists(&id));
}

// ---------------------------------------------------------------- id forms

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn id_forms_and_missing_ids() {
    let Some(docker) = docker("removal id forms").await else {
        return;
    };
    let tmp = Scratch::new("removal-ids");
    let app = support::app("aids", "docker");
    let _c = Cleanup::new(&app);
    let image = DockerImage::new(docker.clone());
    for (n, form) in ["short", "hex", "sha256", "upper"].iter().enumerate() {
        let id = prepare(&image, &app, &plain_context(tmp.path(), &format!("c{n}"))).await;
        let hex = id.strip_prefix("sha256:").unwrap();
        let given = match *form {
            "short" => hex[..12].to_owned(),
            "hex" => hex.to_owned(),
            "sha256" => id.clone(),
            _ => format!("sha256:{}", hex.to_uppercase()),
        };
        let steps = parents(&id);
        let dockerfile_steps = steps[steps.len() - 3..].to_vec();
        let _rm = Rm {
            containers: vec![],
            images: dockerfile_steps.clone(),
        };
        let r = image.remove(&app, &ImageId::new(given.clone())).await;
        if *form == "upper" {
            // not an id Docker knows: a missing image, so fine, and nothing goes
            assert!(r.is_ok(), "{form} {given}: {r:?}");
            assert!(image_exists(&id), "{form} {given}: the image went");
            for s in &steps {
                assert!(image_exists(s), "{form} {given}: {s} beneath it went");
            }
            image.remove(&app, &ImageId::new(id.clone())).await.unwrap();
            assert!(
                !image_exists(&id),
                "{form}: removed by its own id afterwards"
            );
            continue;
        }
        assert!(r.is_ok(), "{form} {given}: {r:?}");
        assert!(!image_exists(&id), "{form} {given}: the image stays");
        for s in &steps[..steps.len() - 3] {
            assert!(!image_exists(s), "{form}: label step {s} left behind");
        }
        for s in &dockerfile_steps {
            assert!(image_exists(s), "{form}: Dockerfile step {s} removed");
        }
    }
    for missing in [
        format!("sha256:{}", "0".repeat(64)),
        "0".repeat(64),
        "000000000000".to_owned(),
    ] {
        let r = image.remove(&app, &ImageId::new(missing.clone())).await;
        assert!(r.is_ok(), "missing {missing}: {r:?}");
    }
}

// ---------------------------------------------------------------- containers

/// A stopped container of the user's keeps the image (Conflict); a container on a
/// label step keeps that step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_keep_images() {
    let Some(docker) = docker("removal containers").await else {
        return;
    };
    let tmp = Scratch::new("removal-ctr");
    let app = support::app("actr", "docker");
    let _c = Cleanup::new(&app);
    let image = DockerImage::new(docker.clone());
    let id = prepare(&image, &app, &plain_context(tmp.path(), "c")).await;
    let tag = bluegreen_tag(&id).unwrap();
    let name = format!("removal-ctr-{}", rnd());
    cli_ok(&["create", "--name", &name, &id, "/nothing"]);
    let mut rm = Rm {
        containers: vec![name.clone()],
        images: vec![],
    };
    let r = image.remove(&app, &ImageId::new(id.clone())).await;
    assert!(
        matches!(&r, Err(e) if e.kind() == ErrorKind::Conflict),
        "remove while a stopped container uses it: {r:?}"
    );
    assert!(image_exists(&id), "the image a container uses was removed");
    assert!(
        tags_of(&id).contains(&tag),
        "its tag was removed: {:?}",
        tags_of(&id)
    );
    cli_ok(&["rm", &name]);

    // a container on the nearest label step
    let steps = parents(&id);
    let step = steps[0].clone();
    let name2 = format!("removal-ctr-step-{}", rnd());
    cli_ok(&["create", "--name", &name2, &step, "/nothing"]);
    rm.containers.push(name2.clone());
    rm.images.extend(steps.clone());
    let r = image.remove(&app, &ImageId::new(id.clone())).await;
    assert!(r.is_ok(), "remove: {r:?}");
    assert!(!image_exists(&id));
    for s in &steps {
        assert!(
            image_exists(s),
            "{s} beneath a step a container uses was removed"
        );
    }
}

// ---------------------------------------------------------------- races

/// Two environments of one app built from one plain context share their first
/// label step (`LABEL bluegreen.app=<name>`, the classic builder's cache):
/// removing one environment's image while the other builds must not break that
/// build.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn remove_one_environment_while_another_builds() {
    let Some(docker) = docker("removal race envs").await else {
        return;
    };
    let a = support::app("arace", "one");
    let b = App::new(a.name(), "two").unwrap();
    // the label step is shared: shown once, deterministically
    {
        let tmp = Scratch::new("removal-share");
        let _c = (Cleanup::new(&a), Cleanup::new(&b));
        let image = DockerImage::new(docker.clone());
        let dir = plain_context(tmp.path(), "c");
        let one = prepare(&image, &a, &dir).await;
        let two = prepare(&image, &b, &dir).await;
        let (p1, p2) = (parents(&one), parents(&two));
        let _rm = Rm {
            containers: vec![],
            images: p1[2..].to_vec(),
        };
        // nearest first: LABEL bluegreen.environment=…, LABEL bluegreen.app=…
        // (the image itself is the LABEL bluegreen.owner step)
        println!(
            "labels of the shared step {}: {}",
            p1[1],
            labels_json(&p1[1])
        );
        assert_eq!(
            p1[1], p2[1],
            "the app-label step is one image for both environments"
        );
        assert_ne!(p1[0], p2[0]);
        image.remove(&a, &ImageId::new(one)).await.unwrap();
        image.remove(&b, &ImageId::new(two)).await.unwrap();
    }
    race(
        "removal-race-envs",
        &docker,
        &a,
        &b,
        "FROM scratch\nCOPY a /a\nENV X=1\n",
    )
    .await;
}

/// Two apps built from a Dockerfile that ends in `LABEL bluegreen.owner=bluegreen`
/// (a step of the Dockerfile that every app's build shares).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn remove_one_app_while_another_builds_owner_label_dockerfile() {
    let Some(docker) = docker("removal race apps").await else {
        return;
    };
    let a = support::app("arace", "one");
    let c = support::app("arace", "one");
    race(
        "removal-race-apps",
        &docker,
        &a,
        &c,
        "FROM scratch\nCOPY a /a\nLABEL bluegreen.owner=bluegreen\n",
    )
    .await;
}

/// Rounds of: `a` builds a fresh context; then `a`'s image is removed (after a
/// random delay) while `other` builds the same context.
async fn race(tag: &str, docker: &Docker, a: &App, other: &App, dockerfile: &str) {
    let tmp = Scratch::new(tag);
    let _ca = (Cleanup::new(a), Cleanup::new(other));
    let image = DockerImage::new(docker.clone());
    let mut failures = Vec::new();
    let mut leftovers = Vec::new();
    for round in 0..20 {
        let dir = context_with(tmp.path(), &format!("r{round}"), dockerfile);
        let first = prepare(&image, a, &dir).await;
        leftovers.extend(parents(&first));
        let delay = std::time::Duration::from_millis(fastrand::u64(20..150));
        let (im, aa, fid) = (image.clone(), a.clone(), ImageId::new(first.clone()));
        let remover = tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            im.remove(&aa, &fid).await
        });
        // as the engine prepares: through the retry layer
        let retried =
            bluegreen_core::Retry::new(image.clone(), bluegreen_core::RetryOptions::default());
        let built = retried
            .prepare(other, &build(&dir), &EventSink::none())
            .await;
        let removed = remover.await.unwrap();
        if let Err(e) = &removed {
            failures.push(format!("round {round}: remove: {e}"));
        }
        match built {
            Ok(r) => {
                let _ = image.remove(other, &r.id).await;
            }
            Err(e) => failures.push(format!(
                "round {round} ({other}, delay {delay:?}): build failed: {e}"
            )),
        }
    }
    let _rm = Rm {
        containers: vec![],
        images: leftovers,
    };
    assert!(failures.is_empty(), "{failures:#?}");
}

// ---------------------------------------------------------------- proxy container

async fn start_proxy(
    docker: &Docker,
    tmp: &Scratch,
    name: &str,
) -> (ProxyContainerOptions, String) {
    let binary = own_proxy_binary(tmp.path());
    let mut o = ProxyContainerOptions::new(tmp.path().join(name), binary)
        .with_name(name)
        .with_listen(free_port());
    o.args = vec!["--health-interval".into(), "200ms".into()];
    ProxyContainer::start(docker, &o).await.unwrap();
    let image = cli_ok(&["inspect", "-f", "{{.Image}}", name]);
    (o, image)
}

/// A user tag on the proxy's image keeps the image and the tag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_image_with_user_tag_stays() {
    let Some(docker) = docker("removal proxy tag").await else {
        return;
    };
    let tmp = Scratch::new("removal-proxy-tag");
    let name = format!("bluegreen-removal-proxy-{}", rnd());
    let mut rm = Rm {
        containers: vec![name.clone()],
        images: vec![],
    };
    let (o, img) = start_proxy(&docker, &tmp, &name).await;
    let steps = parents(&img);
    let user_tag = format!("myorg/proxy-{}:keep", rnd());
    cli_ok(&["tag", &img, &user_tag]);
    rm.images.push(user_tag.clone());
    rm.images.push(img.clone());
    rm.images.extend(steps.clone());
    let r = ProxyContainer::remove(&docker, &name, &o.dir).await;
    let _ = cli(&["volume", "rm", "-f", &format!("{name}-state")]);
    assert!(r.is_ok(), "remove: {r:?}");
    assert!(
        image_exists(&img) && tags_of(&img).contains(&user_tag),
        "the proxy image {img} with the user's tag {user_tag} was removed (tags left: {:?})",
        tags_of(&img)
    );
}

/// A container of the user's (not bluegreen's) on the proxy's image keeps it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_image_used_by_user_container_stays() {
    let Some(docker) = docker("removal proxy ctr").await else {
        return;
    };
    let tmp = Scratch::new("removal-proxy-ctr");
    let name = format!("bluegreen-removal-proxyc-{}", rnd());
    let users = format!("removal-user-ctr-{}", rnd());
    let mut rm = Rm {
        containers: vec![name.clone(), users.clone()],
        images: vec![],
    };
    let (o, img) = start_proxy(&docker, &tmp, &name).await;
    rm.images.push(img.clone());
    rm.images.extend(parents(&img));
    cli_ok(&["create", "--name", &users, &img, "/nothing"]);
    let r = ProxyContainer::remove(&docker, &name, &o.dir).await;
    let _ = cli(&["volume", "rm", "-f", &format!("{name}-state")]);
    assert!(r.is_ok(), "remove: {r:?}");
    assert!(
        image_exists(&img),
        "the image the user's container uses was removed"
    );
}
