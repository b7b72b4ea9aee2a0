//! A source that cannot become an image is refused while the request is validated,
//! naming the field and why: nothing is built, tagged or started on the daemon.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bluegreen_core::{Engine, ErrorKind, Image, ImageId, ImageSource};
use bluegreen_docker::{DockerFleet, DockerFleetOptions, DockerImage, EmbeddedProxy};
use bluegreen_testkit::conformance::{self, Refused};
use support::{docker, labelled_containers, Cleanup, Scratch};

fn build(context: &Path) -> ImageSource {
    ImageSource::Build {
        context: context.to_path_buf(),
        args: BTreeMap::new(),
    }
}

/// A directory under `root` with a file `Dockerfile` holding `text` (none if `None`).
fn context(root: &Path, name: &str, dockerfile: Option<&str>) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    if let Some(text) = dockerfile {
        std::fs::write(dir.join("Dockerfile"), text).unwrap();
    }
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impossible_sources_are_refused_before_anything_reaches_the_daemon() {
    let Some(docker) = docker("sources").await else {
        return;
    };
    let tmp = Scratch::new("sources");
    let app = support::app("src", "docker");
    let _cleanup = Cleanup::new(&app);
    let image = DockerImage::new(docker.clone());
    let proxy = EmbeddedProxy::start("127.0.0.1:0".parse().unwrap(), Default::default())
        .await
        .unwrap();
    let engine = Engine::new(
        image.clone(),
        DockerFleet::new(docker, DockerFleetOptions::default()),
        proxy.router(),
    );

    let no_dockerfile = context(tmp.path(), "empty", None);
    let not_from = context(
        tmp.path(),
        "not-from",
        Some("COPY app /app\nFROM scratch\n"),
    );
    let outside = context(tmp.path(), "outside", None);
    std::fs::write(tmp.join("Dockerfile.elsewhere"), "FROM scratch\n").unwrap();
    std::os::unix::fs::symlink(tmp.join("Dockerfile.elsewhere"), outside.join("Dockerfile"))
        .unwrap();
    let a_file = tmp.join("Dockerfile.elsewhere");
    let mut bad_args = BTreeMap::new();
    bad_args.insert("A=B".to_owned(), "1".to_owned());
    let with_bad_args = ImageSource::Build {
        context: context(tmp.path(), "args", Some("FROM scratch\n")),
        args: bad_args,
    };

    let cases: Vec<Refused> = [
        (
            build(&no_dockerfile),
            ErrorKind::Invalid,
            "it has no Dockerfile at its root",
        ),
        (
            build(&not_from),
            ErrorKind::Invalid,
            "its Dockerfile starts with `COPY`, not `FROM`",
        ),
        (build(&outside), ErrorKind::Invalid, "outside the context"),
        (build(&a_file), ErrorKind::Invalid, "is not a directory"),
        (build(&tmp.join("missing")), ErrorKind::NotFound, "missing"),
        (
            with_bad_args,
            ErrorKind::Invalid,
            "invalid source.args: `A=B`",
        ),
        (
            ImageSource::Reference("Web:latest".into()),
            ErrorKind::Invalid,
            "`Web:latest` is not an image reference",
        ),
        (
            ImageSource::Reference("web:".into()),
            ErrorKind::Invalid,
            "is not an image reference",
        ),
        (
            ImageSource::Id(ImageId::new("sha256:abc")),
            ErrorKind::Invalid,
            "`sha256:abc` is not an image id",
        ),
        (
            ImageSource::Artifact("/etc/hostname".into()),
            ErrorKind::NotSupported,
            "on Docker",
        ),
    ]
    .into_iter()
    .map(|(source, kind, why)| Refused::new(source, kind, why))
    .collect();
    conformance::sources_refused(&engine, &app, &cases).await;
    assert!(
        image.images(&app).await.unwrap().is_empty(),
        "nothing was built"
    );
    assert!(labelled_containers(&app).is_empty(), "nothing was started");
    drop(proxy);
}
