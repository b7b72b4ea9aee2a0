//! A source that cannot become a slug is refused while the request is validated,
//! naming the field and why, before any request reaches the platform.

use bluegreen_core::{DeployRequest, Engine, ErrorKind, ImageId, ImageSource};
use bluegreen_testkit::conformance::{self, Refused};

use crate::support;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impossible_sources_are_refused_before_any_request() {
    let emu = support::emulator().await;
    let app = support::app("src");
    let (image, fleet, router) = support::app_mode(&emu, &app);
    let engine = Engine::new(image, fleet, router).with_options(support::engine_options());

    let dir = support::tarball("unused").with_file_name("a-directory");
    std::fs::create_dir_all(&dir).unwrap();
    let plain = support::tarball("unused").with_file_name("plain.tgz");
    std::fs::write(&plain, "not compressed at all").unwrap();
    let empty = support::tarball("unused").with_file_name("empty.tgz");
    std::fs::write(&empty, "").unwrap();
    let missing = dir.join("missing.tgz");

    let cases: Vec<Refused> = [
        (
            ImageSource::Artifact(dir.clone()),
            ErrorKind::Invalid,
            "a-directory is not a file",
        ),
        (
            ImageSource::Artifact(plain),
            ErrorKind::Invalid,
            "plain.tgz is not a gzip-compressed tar archive",
        ),
        (
            ImageSource::Artifact(empty),
            ErrorKind::Invalid,
            "empty.tgz is not a gzip",
        ),
        (
            ImageSource::Artifact(missing),
            ErrorKind::NotFound,
            "missing.tgz",
        ),
        (
            ImageSource::SourceUrl("not a url".into()),
            ErrorKind::Invalid,
            "`not a url` is not an http(s) URL",
        ),
        (
            ImageSource::SourceUrl("file:///etc/hostname".into()),
            ErrorKind::Invalid,
            "is not an http(s) URL",
        ),
        (
            ImageSource::Id(ImageId::new("slug-1")),
            ErrorKind::Invalid,
            "`slug-1` is not a slug id",
        ),
        (
            ImageSource::Reference("web:2".into()),
            ErrorKind::NotSupported,
            "slugs come from",
        ),
    ]
    .into_iter()
    .map(|(source, kind, why)| Refused::new(source, kind, why))
    .collect();
    let before = emu.requests();
    conformance::sources_refused(&engine, &app, &cases).await;
    assert_eq!(emu.requests(), before, "no request reached the platform");
    assert!(emu.app_names().is_empty(), "nothing was created");

    // a real gzip file passes the check and deploys
    let good = support::sources().good;
    engine
        .deploy(&DeployRequest::new(app.clone(), good))
        .await
        .expect("a gzip tarball deploys");
    assert!(emu.requests() > before);
}
