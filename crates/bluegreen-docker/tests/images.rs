//! Removing an app's old image removes that image alone: the untagged parent images
//! beneath it (the classic builder's cache of its steps, which another app's build
//! may be building from at that moment, or an image that is not bluegreen's) stay.

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

/// The image's parents, nearest first.
async fn parents(docker: &Docker, id: &str) -> Vec<String> {
    let mut chain = Vec::new();
    let mut next = docker.inspect_image(id).await.unwrap().parent;
    while let Some(parent) = next.filter(|p| !p.is_empty()) {
        next = docker.inspect_image(&parent).await.unwrap().parent;
        chain.push(parent);
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

    let first = image
        .prepare(&app, &build(&dir), &EventSink::none())
        .await
        .unwrap();
    let chain = parents(&docker, first.id.as_str()).await;
    let _beneath = RemoveIds(chain.clone());
    assert!(
        chain.len() >= 3,
        "the classic builder keeps an image per step beneath the app's: {chain:?}"
    );

    image.remove(&app, &first.id).await.unwrap();
    assert!(
        image.images(&app).await.unwrap().is_empty(),
        "the app's image is gone"
    );
    for parent in &chain {
        assert!(
            docker.inspect_image(parent).await.is_ok(),
            "{parent} beneath the removed image was removed with it"
        );
    }

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
    let second = image.prepare(&other, &build(&dir), &sink).await.unwrap();
    let lines = lines.lock().unwrap().clone();
    let cached = lines.iter().filter(|l| l.contains("Using cache")).count();
    assert!(
        cached >= 3,
        "the other app's build used the cache for each step: {lines:?}"
    );
    let second_chain = parents(&docker, second.id.as_str()).await;
    // the steps of the Dockerfile (the labels of each app come after them)
    let shared = chain.iter().filter(|p| second_chain.contains(p)).count();
    assert!(
        shared >= 3,
        "the other app's image is built on the same steps: {chain:?} {second_chain:?}"
    );
    image.remove(&other, &second.id).await.unwrap();
}
