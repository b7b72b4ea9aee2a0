//! Removing an app's old image removes that image and the steps that added
//! bluegreen's labels to it, nothing else: the untagged parent images beneath them
//! (the classic builder's cache of the Dockerfile's steps, which another app's
//! build may be building from at that moment, or an image that is not bluegreen's)
//! stay, also when a base image of bluegreen's gives those steps its labels.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bluegreen_core::{Event, EventSink, Image, ImageSource};
use bluegreen_docker::{Docker, DockerImage};
use support::{docker, Cleanup, Scratch};

fn build(context: &Path) -> ImageSource {
    ImageSource::Build {
        context: context.to_path_buf(),
        args: BTreeMap::new(),
    }
}

/// A context of three steps whose files are this test's own (random contents), so
/// that no step comes from another test's cache.
fn context(root: &Path) -> PathBuf {
    let dir = root.join("context");
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["a", "b"] {
        let bytes: Vec<u8> = (0..64).map(|_| fastrand::u8(..)).collect();
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM scratch\nCOPY a /a\nCOPY b /b\nENV STEP=three\n",
    )
    .unwrap();
    dir
}

/// The image's parents, nearest first, each with whether it carries a label of
/// bluegreen's.
async fn parents(docker: &Docker, id: &str) -> Vec<(String, bool)> {
    let mut chain = Vec::new();
    let mut next = docker.inspect_image(id).await.unwrap().parent;
    while let Some(parent) = next.filter(|p| !p.is_empty()) {
        let inspect = docker.inspect_image(&parent).await.unwrap();
        let labelled = inspect
            .config
            .and_then(|c| c.labels)
            .is_some_and(|l| l.keys().any(|k| k.starts_with("bluegreen.")));
        next = inspect.parent;
        chain.push((parent, labelled));
    }
    chain
}

/// Removes the images this test built beneath the app's (they carry no label).
struct RemoveIds(Vec<String>);

impl Drop for RemoveIds {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            let _ = std::process::Command::new("docker")
                .args(["rmi", "-f", "--no-prune"])
                .args(&self.0)
                .output();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_an_image_leaves_the_images_beneath_it_and_the_build_cache() {
    let Some(docker) = docker("images").await else {
        return;
    };
    let tmp = Scratch::new("images");
    let app = support::app("img", "docker");
    let other = support::app("img", "docker");
    let _cleanup = (Cleanup::new(&app), Cleanup::new(&other));
    let dir = context(tmp.path());
    let image = DockerImage::new(docker.clone());

    let first = support::prepare(&image, &app, &build(&dir), &EventSink::none())
        .await
        .unwrap();
    let chain = parents(&docker, first.id.as_str()).await;
    let _beneath = RemoveIds(chain.iter().map(|(id, _)| id.clone()).collect());
    // the Dockerfile's three steps, and above them the steps that added
    // bluegreen's labels (the classic builder adds a label a step)
    let (labelled, steps): (Vec<_>, Vec<_>) = chain.iter().partition(|(_, labelled)| *labelled);
    assert_eq!(
        steps.len(),
        3,
        "an image per step beneath the app's: {chain:?}"
    );
    assert!(
        !labelled.is_empty() && chain[..labelled.len()].iter().all(|(_, l)| *l),
        "the label steps lie above the Dockerfile's: {chain:?}"
    );

    image.remove(&app, &first.id).await.unwrap();
    assert!(
        image.images(&app).await.unwrap().is_empty(),
        "the app's image is gone"
    );
    for (id, _) in &steps {
        assert!(
            docker.inspect_image(id).await.is_ok(),
            "{id} beneath the removed image was removed with it"
        );
    }
    for (id, _) in &labelled {
        assert!(
            docker.inspect_image(id).await.is_err(),
            "{id}, a step that added bluegreen's labels, was left behind"
        );
    }
    let left = support::labelled_images(&app);
    assert!(
        left.is_empty(),
        "nothing with the app's labels is left: {:?}",
        left
    );

    // another app building the same steps builds from that cache
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = EventSink::new({
        let lines = lines.clone();
        move |e: &Event| {
            if let Event::BuildOutput { line } = e {
                lines.lock().unwrap().push(line.clone());
            }
        }
    });
    let second = support::prepare(&image, &other, &build(&dir), &sink)
        .await
        .unwrap();
    let lines = lines.lock().unwrap().clone();
    let cached = lines.iter().filter(|l| l.contains("Using cache")).count();
    assert!(
        cached >= 3,
        "the other app's build used the cache for each step: {lines:?}"
    );
    let second_chain = parents(&docker, second.id.as_str()).await;
    assert!(
        steps.iter().all(|step| second_chain.contains(step)),
        "the other app's image is built on the same steps: {chain:?} {second_chain:?}"
    );
    image.remove(&other, &second.id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_built_on_one_of_bluegreens_keeps_its_dockerfile_steps() {
    let Some(docker) = docker("images on a base").await else {
        return;
    };
    let tmp = Scratch::new("images-base");
    let base_app = support::app("base", "docker");
    let app = support::app("onbase", "docker");
    let _cleanup = (Cleanup::new(&base_app), Cleanup::new(&app));
    let image = DockerImage::new(docker.clone());
    // a base image that bluegreen built for another app: it carries bluegreen's
    // labels (owner, environment), and so do the steps of a Dockerfile built on it
    let base = support::prepare(
        &image,
        &base_app,
        &build(&context(&tmp.path().join("base"))),
        &EventSink::none(),
    )
    .await
    .unwrap();
    let base_tag = docker
        .inspect_image(base.id.as_str())
        .await
        .unwrap()
        .repo_tags
        .unwrap()
        .into_iter()
        .find(|t| t.starts_with("bluegreen/"))
        .unwrap();
    let dir = tmp.path().join("app");
    std::fs::create_dir_all(&dir).unwrap();
    let bytes: Vec<u8> = (0..64).map(|_| fastrand::u8(..)).collect();
    std::fs::write(dir.join("c"), bytes).unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        format!("FROM {base_tag}\nCOPY c /c\nENV STEP=two\n"),
    )
    .unwrap();
    let built = support::prepare(&image, &app, &build(&dir), &EventSink::none())
        .await
        .unwrap();
    let chain = parents(&docker, built.id.as_str()).await;
    let at_base = chain
        .iter()
        .position(|(id, _)| id == base.id.as_str())
        .unwrap_or_else(|| panic!("the app's image is built on the base: {chain:?}"));
    // beneath the app's image: its label steps, then its Dockerfile's two steps
    // (labelled too, from the base), then the base
    assert!(at_base >= 3, "{chain:?}");
    let steps: Vec<String> = chain[at_base - 2..at_base]
        .iter()
        .map(|(id, _)| id.clone())
        .collect();
    let label_steps: Vec<String> = chain[..at_base - 2]
        .iter()
        .map(|(id, _)| id.clone())
        .collect();
    assert!(
        chain[at_base - 2].1,
        "the Dockerfile's steps carry the base's labels: {chain:?}"
    );
    let _beneath = RemoveIds(steps.clone());

    image.remove(&app, &built.id).await.unwrap();
    for id in &steps {
        assert!(
            docker.inspect_image(id).await.is_ok(),
            "{id}, a step of the app's Dockerfile, was removed with its image"
        );
    }
    for id in &label_steps {
        assert!(
            docker.inspect_image(id).await.is_err(),
            "{id}, a step that added the app's labels, was left behind"
        );
    }
    assert!(
        docker.inspect_image(base.id.as_str()).await.is_ok(),
        "the base stays"
    );
    // the base goes once nothing is built on it
    drop(_beneath);
    image.remove(&base_app, &base.id).await.unwrap();
    assert!(image.images(&base_app).await.unwrap().is_empty());
}
