//! Small images that bluegreen builds for itself (the lock's placeholder, the proxy
//! container), from files held in memory.

use std::collections::HashMap;

use bluegreen_core::{labels, Error, Result};
use bollard::query_parameters::BuildImageOptionsBuilder;
use bollard::Docker;
use futures_util::StreamExt;

use crate::error::{docker_error, has_status, PROVIDER};

/// The label that says what a bluegreen object is for (`lock`, `proxy`).
pub const ROLE_LABEL: &str = bluegreen_core::register::ROLE_LABEL;

/// How many times [`build`] tries a build that lost an image it was building on.
const BUILD_TRIES: u32 = 3;

/// Whether a build's error says that an image it was building on went away during
/// the build (removed or pruned meanwhile, say by another build's clean-up of
/// the label steps they share): the same build again does not meet it. The
/// daemon words it differently by the step it was at (reading the base, taking
/// a cached step, or committing the step on top of it), always naming the
/// vanished image by its id.
pub(crate) fn lost_its_base(error: &str) -> bool {
    [
        "failed to get digest sha256:",
        "unable to find image \"sha256:",
        "No such image: sha256:",
        "unknown parent image ID sha256:",
        "failed to set parent sha256:",
    ]
    .iter()
    .any(|sign| error.contains(sign))
}

/// One file of a build context.
pub(crate) struct ContextFile {
    pub(crate) path: String,
    pub(crate) bytes: Vec<u8>,
    pub(crate) mode: u32,
}

/// A tar archive of `files`.
fn archive(files: &[ContextFile]) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for f in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(f.bytes.len() as u64);
        header.set_mode(f.mode);
        header.set_mtime(0);
        header.set_cksum();
        builder.append_data(&mut header, &f.path, f.bytes.as_slice())?;
    }
    builder.into_inner()
}

/// The id of the image tagged `tag`, if there is one.
pub(crate) async fn image_id(docker: &Docker, tag: &str) -> Result<Option<String>> {
    match docker.inspect_image(tag).await {
        Ok(i) => Ok(i.id),
        Err(e) if has_status(&e, 404) => Ok(None),
        Err(e) => Err(docker_error(format!("image {tag}"), e)),
    }
}

/// Builds `files` (one of them the `Dockerfile`) with the classic builder, labels
/// the image `bluegreen.owner=bluegreen` and [`ROLE_LABEL`]`=role`, tags it `tag`,
/// and returns its id. A build that lost an image it was building on (see
/// [`lost_its_base`]) is tried again, up to [`BUILD_TRIES`] times in all; its
/// last such error is retryable.
pub(crate) async fn build(
    docker: &Docker,
    tag: &str,
    role: &str,
    files: &[ContextFile],
) -> Result<String> {
    // shared, not copied, by the tries
    let body = bytes::Bytes::from(archive(files).map_err(|e| {
        Error::provider_source(
            PROVIDER,
            false,
            format!("archiving the context of {tag}: {e}"),
        )
    })?);
    let mut tries = 0;
    loop {
        tries += 1;
        match build_once(docker, tag, role, body.clone()).await {
            Err(e) if tries < BUILD_TRIES && lost_its_base(&e.to_string()) => {
                tracing::debug!(tag, error = %e, "build lost an image it was building on; building again");
            }
            result => return result,
        }
    }
}

async fn build_once(docker: &Docker, tag: &str, role: &str, body: bytes::Bytes) -> Result<String> {
    let image_labels = HashMap::from([
        (labels::OWNER.to_owned(), labels::OWNER_VALUE.to_owned()),
        (ROLE_LABEL.to_owned(), role.to_owned()),
    ]);
    let options = BuildImageOptionsBuilder::new()
        .dockerfile("Dockerfile")
        .t(tag)
        .rm(true)
        .forcerm(true)
        .labels(&image_labels)
        .build();
    let mut stream = docker.build_image(options, None, Some(bollard::body_full(body)));
    let mut id = None;
    while let Some(item) = stream.next().await {
        let info = item.map_err(|e| match e {
            bollard::errors::Error::DockerStreamError { error } => Error::provider(
                PROVIDER,
                format!("build of {tag}: {error}"),
                lost_its_base(&error),
            ),
            e => docker_error(format!("build of {tag}"), e),
        })?;
        if let Some(error) = info.error {
            return Err(Error::provider(
                PROVIDER,
                format!("build of {tag}: {}", error.trim()),
                lost_its_base(&error),
            ));
        }
        if let Some(aux) = info.aux.and_then(|a| a.id) {
            id = Some(aux);
        }
    }
    match id {
        Some(id) => Ok(id),
        None => image_id(docker, tag)
            .await?
            .ok_or_else(|| Error::provider(PROVIDER, format!("build of {tag}: no image"), false)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_build_that_lost_its_base_can_be_tried_again() {
        for lost in [
            "failed to get digest sha256:ab12: open /var/lib/docker/image/x: no such file or directory",
            "unable to find image \"sha256:d90b5a98\"",
            "No such image: sha256:d90b5a98",
            "failed to export image: failed to set parent sha256:7c11b2af: unknown parent image ID sha256:7c11b2af",
        ] {
            assert!(lost_its_base(lost), "{lost}");
        }
        for other in [
            "COPY failed: file not found in build context",
            "pull access denied for nosuch, repository does not exist",
            "No such image: web:2",
            "failed to solve: no space left on device",
        ] {
            assert!(!lost_its_base(other), "{other}");
        }
    }
}
