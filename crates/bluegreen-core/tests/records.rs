//! Stored state is versioned: release ids and group records written by earlier
//! versions keep their meaning. These values are golden: a change here breaks every
//! group already running on users' platforms.

use std::collections::BTreeMap;

use bluegreen_core::labels::Labels;
use bluegreen_core::{App, DeploymentId, Generation, Group, ImageId, Release};

/// The ids are the first 16 hex digits of the SHA-256 of the canonical form, as any
/// tool computes it: `printf '%s' '{"image":"sha256:0123456789abcdef","env":{},"size":3,"settings":{}}' | sha256sum`.
#[test]
fn a_known_release_has_a_known_id_forever() {
    let bare = Release::new(ImageId::new("sha256:0123456789abcdef"), 3);
    assert_eq!(bare.id().as_str(), "32b063ced2825a4c");
    let full = Release::new(ImageId::new("ami-0abc1234"), 12)
        .with_env("DATABASE_URL", "postgres://db/app")
        .with_env("RUST_LOG", "info")
        .with_setting("instance_type", "t3.small")
        .with_setting("port", "8080");
    assert_eq!(full.id().as_str(), "896ef107788611de");
    // the order of insertion does not matter: maps are sorted
    let reordered = Release::new(ImageId::new("ami-0abc1234"), 12)
        .with_setting("port", "8080")
        .with_env("RUST_LOG", "info")
        .with_setting("instance_type", "t3.small")
        .with_env("DATABASE_URL", "postgres://db/app");
    assert_eq!(reordered.id(), full.id());
}

/// A group record as version 0.1 wrote it (a single `previous`, no `older`).
const RECORD_V0_1: &str = r#"{"id":"web-production-v007","app":{"name":"web","environment":"production"},"generation":7,"release":{"image":"img-7","env":{"A":"1"},"size":2,"settings":{}},"deployment":"d-000000000007","previous":{"image":"img-6","env":{},"size":2,"settings":{}}}"#;

fn labels_of_v0_1() -> Labels {
    BTreeMap::from(
        [
            ("bluegreen.owner", "bluegreen"),
            ("bluegreen.app", "web"),
            ("bluegreen.environment", "production"),
            ("bluegreen.group", "web-production-v007"),
            ("bluegreen.generation", "7"),
            ("bluegreen.image", "img-7"),
            ("bluegreen.deployment", "d-000000000007"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    )
}

#[test]
fn a_group_record_of_version_0_1_reads_with_its_labels() {
    let mut labels = labels_of_v0_1();
    let release = Release::new(ImageId::new("img-7"), 2).with_env("A", "1");
    labels.insert("bluegreen.release".into(), release.id().to_string());
    let group = Group::from_record(RECORD_V0_1, &labels).expect("an old record reads");
    assert_eq!(group.generation, Generation(7));
    assert_eq!(group.release, release);
    assert_eq!(
        group.previous.as_ref().map(|r| r.image.as_str()),
        Some("img-6")
    );
    assert!(group.older.is_empty(), "older than 0.1 knew: empty");
    assert_eq!(group.history().count(), 1);
    // and a group without `older` writes the same record as 0.1 did
    assert_eq!(group.to_record(), RECORD_V0_1);
}

#[test]
fn a_group_with_history_round_trips() {
    let app = App::new("web", "production").unwrap();
    let g = Group::with_history(
        app,
        Generation(9),
        Release::new(ImageId::new("img-9"), 2),
        DeploymentId::new("d-9"),
        ["img-8", "img-7", "img-6"].map(|i| Release::new(ImageId::new(i), 2)),
    );
    let back = Group::from_record(&g.to_record(), &g.labels()).unwrap();
    assert_eq!(back, g);
    let images: Vec<&str> = back.history().map(|r| r.image.as_str()).collect();
    assert_eq!(images, ["img-8", "img-7", "img-6"]);
}
