//! [`AmiImage`]: AMIs resolved by id, name or tags, or baked from a base AMI and a
//! provisioning script.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_sdk_ec2::types::{
    Filter, Image as Ami, ImageState, InstanceStateName, InstanceType, ResourceType,
    TagSpecification,
};
use base64::Engine as _;
use bluegreen_core::labels::{self, Labels};
use bluegreen_core::{App, Error, Event, EventSink, Image, ImageId, ImageRef, ImageSource, Result};

use sha2::{Digest, Sha256};

use crate::config::AwsClients;
use crate::error::map;
use crate::labels::{ec2_labels, ec2_not_terminated_filter, ec2_owner_filters, ec2_tags};

/// The tag of a baked AMI that names its base and script (a hash).
const SOURCE_TAG: &str = "bluegreen.source";
/// The tag of a builder instance.
const ROLE_TAG: &str = "bluegreen.role";

/// How [`AmiImage`] bakes.
#[non_exhaustive]
#[derive(Clone, Debug)]
pub struct AmiImageOptions {
    /// The builder's instance type. Default `t3.micro`.
    pub builder_instance_type: String,
    /// The builder's subnet.
    pub builder_subnet: Option<String>,
    /// How long the builder may run and the AMI take to become available. Default 30 min.
    pub bake_timeout: Duration,
    /// How often to poll while baking. Default 5 s.
    pub poll_interval: Duration,
    /// Whose AMIs a reference (name or tags) may resolve to: `self` (the default),
    /// account ids, or `amazon`. A reference never resolves to any public AMI.
    pub owners: Vec<String>,
}

impl Default for AmiImageOptions {
    fn default() -> Self {
        AmiImageOptions {
            builder_instance_type: "t3.micro".into(),
            builder_subnet: None,
            bake_timeout: Duration::from_secs(1800),
            poll_interval: Duration::from_secs(5),
            owners: vec!["self".into()],
        }
    }
}

impl AmiImageOptions {
    /// Sets the poll interval.
    pub fn with_poll_interval(mut self, every: Duration) -> Self {
        self.poll_interval = every;
        self
    }

    /// Sets whose AMIs references resolve to.
    pub fn with_owners(mut self, owners: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.owners = owners.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the builder's subnet.
    pub fn with_builder_subnet(mut self, subnet: impl Into<String>) -> Self {
        self.builder_subnet = Some(subnet.into());
        self
    }
}

/// AMIs.
///
/// - [`ImageSource::Id`]: an AMI by id.
/// - [`ImageSource::Reference`]: an AMI by name, or by tags as `tag:Key=Value[,Key=Value]`;
///   the newest match wins.
/// - [`ImageSource::Bake`]: launch a builder instance from the base AMI with the script as
///   user data, wait until the script powers it off (`shutdown -h now` as its last line;
///   the builder stops rather than terminates), create the image from the stopped
///   builder, wait until it is available, tag it,
///   and terminate the builder whatever happens. An AMI already baked for the app from the
///   same base and script is reused, and builders left by an interrupted bake are
///   terminated first.
///
/// Baked AMIs carry bluegreen's tags; `images` and `remove` (deregister, then delete the
/// snapshots) see only those. `remove` refuses an AMI that an instance not yet
/// terminated was launched from ([`Error::Conflict`]); a missing AMI is removed
/// already (`Ok`).
#[derive(Clone, Debug)]
pub struct AmiImage {
    clients: AwsClients,
    options: AmiImageOptions,
}

fn created_at(ami: &Ami) -> SystemTime {
    ami.creation_date()
        .and_then(|d| {
            aws_smithy_types::DateTime::from_str(d, aws_smithy_types::date_time::Format::DateTime)
                .ok()
        })
        .and_then(|d| SystemTime::try_from(d).ok())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

impl AmiImage {
    /// AMIs through `clients`.
    pub fn new(clients: AwsClients, options: AmiImageOptions) -> Self {
        AmiImage { clients, options }
    }

    async fn describe(
        &self,
        ids: Vec<String>,
        filters: Vec<Filter>,
        owners: Vec<String>,
    ) -> Result<Vec<Ami>> {
        let out = self
            .clients
            .ec2
            .describe_images()
            .set_image_ids((!ids.is_empty()).then_some(ids))
            .set_filters((!filters.is_empty()).then_some(filters))
            .set_owners((!owners.is_empty()).then_some(owners))
            .send()
            .await
            .map_err(|e| map("DescribeImages", e))?;
        Ok(out.images().to_vec())
    }

    async fn resolve(&self, app: &App, reference: &str) -> Result<ImageRef> {
        let filters: Vec<Filter> = match reference.strip_prefix("tag:") {
            Some(pairs) => pairs
                .split(',')
                .map(|pair| {
                    let (k, v) = pair.split_once('=').ok_or_else(|| {
                        Error::invalid(
                            "source",
                            format!("`{pair}` is not Key=Value in `{reference}`"),
                        )
                    })?;
                    Ok(Filter::builder().name(format!("tag:{k}")).values(v).build())
                })
                .collect::<Result<_>>()?,
            None => vec![Filter::builder().name("name").values(reference).build()],
        };
        if self.options.owners.is_empty() {
            return Err(Error::invalid(
                "owners",
                "a reference needs the owners whose AMIs it may resolve to",
            ));
        }
        let images = self
            .describe(vec![], filters, self.options.owners.clone())
            .await?;
        let newest = images
            .iter()
            .max_by_key(|a| created_at(a))
            .ok_or_else(|| Error::not_found(format!("AMI {reference}")))?;
        Ok(ImageRef::new(
            ImageId::new(newest.image_id().unwrap_or_default()),
            app.clone(),
            created_at(newest),
            format!("reference {reference}"),
        ))
    }

    async fn bake(
        &self,
        app: &App,
        base: &str,
        script: &str,
        events: &EventSink,
    ) -> Result<ImageRef> {
        let source: String = Sha256::digest(format!("{base}\0{script}"))
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect();
        // the same bake done before (an interrupted deployment run again) is reused
        let mut filters = ec2_owner_filters(app);
        filters.push(
            Filter::builder()
                .name(format!("tag:{SOURCE_TAG}"))
                .values(&source)
                .build(),
        );
        let done = self.describe(vec![], filters, vec!["self".into()]).await?;
        if let Some(ami) = done
            .iter()
            .filter(|a| a.state() == Some(&ImageState::Available))
            .max_by_key(|a| created_at(a))
        {
            let id = ami.image_id().unwrap_or_default().to_owned();
            events.emit(Event::BuildOutput {
                line: format!("image {id} was baked from the same base and script: reused"),
            });
            return Ok(ImageRef::new(
                ImageId::new(id),
                app.clone(),
                created_at(ami),
                format!("bake {source}"),
            ));
        }
        self.terminate_stray_builders(app).await?;
        let mut tags: Labels = labels::app_labels(app);
        tags.insert(ROLE_TAG.into(), "builder".into());
        let launched = self
            .clients
            .ec2
            .run_instances()
            .image_id(base)
            .instance_type(InstanceType::from(
                self.options.builder_instance_type.as_str(),
            ))
            .min_count(1)
            .max_count(1)
            .set_subnet_id(self.options.builder_subnet.clone())
            .user_data(base64::engine::general_purpose::STANDARD.encode(script))
            .instance_initiated_shutdown_behavior(aws_sdk_ec2::types::ShutdownBehavior::Stop)
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Instance)
                    .set_tags(Some(ec2_tags(&tags)))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| map(&format!("RunInstances (builder from {base})"), e))?;
        let builder = launched
            .instances()
            .first()
            .and_then(|i| i.instance_id())
            .ok_or_else(|| {
                Error::provider("aws", "RunInstances returned no builder instance", false)
            })?
            .to_owned();
        events.emit(Event::BuildOutput {
            line: format!("builder {builder} launched from {base}"),
        });
        let baked = self.bake_on(app, &builder, &source, events).await;
        // the builder goes, whatever happened
        let terminated = self
            .clients
            .ec2
            .terminate_instances()
            .instance_ids(&builder)
            .send()
            .await
            .map_err(|e| map(&format!("TerminateInstances (builder {builder})"), e));
        events.emit(Event::BuildOutput {
            line: format!("builder {builder} terminated"),
        });
        let image = baked?;
        terminated?;
        Ok(image)
    }

    /// Builders of `app` left by an interrupted bake.
    async fn terminate_stray_builders(&self, app: &App) -> Result<()> {
        let mut filters = ec2_owner_filters(app);
        filters.push(
            Filter::builder()
                .name(format!("tag:{ROLE_TAG}"))
                .values("builder")
                .build(),
        );
        filters.push(ec2_not_terminated_filter());
        // the SDK's paginator follows NextToken until it is absent or empty
        let reservations = self
            .clients
            .ec2
            .describe_instances()
            .set_filters(Some(filters))
            .into_paginator()
            .items()
            .send()
            .collect::<std::result::Result<Vec<_>, _>>()
            .await
            .map_err(|e| map("DescribeInstances (builders)", e))?;
        let stray: Vec<String> = reservations
            .iter()
            .flat_map(|r| r.instances())
            .filter(|i| labels::is_owned_by(&ec2_labels(i.tags()), app))
            .filter_map(|i| i.instance_id().map(str::to_owned))
            .collect();
        if !stray.is_empty() {
            tracing::warn!(%app, ?stray, "terminating builders left by an interrupted bake");
            self.clients
                .ec2
                .terminate_instances()
                .set_instance_ids(Some(stray))
                .send()
                .await
                .map_err(|e| map("TerminateInstances (stray builders)", e))?;
        }
        Ok(())
    }

    /// [`Error::Conflict`] when an instance that is not terminated (pending, running,
    /// stopping or stopped) was launched from `id`: deregistering the AMI would
    /// leave a fleet that cannot replace its instances.
    async fn refuse_if_in_use(&self, id: &ImageId) -> Result<()> {
        let filters = vec![
            Filter::builder()
                .name("image-id")
                .values(id.as_str())
                .build(),
            ec2_not_terminated_filter(),
        ];
        let out = self
            .clients
            .ec2
            .describe_instances()
            .set_filters(Some(filters))
            .max_results(5)
            .send()
            .await
            .map_err(|e| map(&format!("DescribeInstances (users of {id})"), e))?;
        let users: Vec<&str> = out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .filter_map(|i| i.instance_id())
            .collect();
        if users.is_empty() {
            return Ok(());
        }
        Err(Error::Conflict {
            message: format!(
                "image {id} is in use by instance {}: destroy its group first",
                users.join(", ")
            ),
        })
    }

    async fn bake_on(
        &self,
        app: &App,
        builder: &str,
        source: &str,
        events: &EventSink,
    ) -> Result<ImageRef> {
        let deadline = tokio::time::Instant::now() + self.options.bake_timeout;
        loop {
            let out = self
                .clients
                .ec2
                .describe_instances()
                .instance_ids(builder)
                .send()
                .await
                .map_err(|e| map("DescribeInstances (builder)", e))?;
            let state = out
                .reservations()
                .iter()
                .flat_map(|r| r.instances())
                .find_map(|i| i.state().and_then(|s| s.name()).cloned());
            // the script powers the builder off when it is done: the image is taken
            // from the stopped builder, with everything the script wrote
            match state {
                Some(InstanceStateName::Stopped) => break,
                Some(
                    InstanceStateName::Pending
                    | InstanceStateName::Running
                    | InstanceStateName::Stopping,
                )
                | None => {}
                Some(other) => {
                    return Err(Error::unhealthy(format!(
                        "builder {builder} is {}",
                        other.as_str()
                    )));
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!("builder {builder} to finish its script and stop"),
                    after: self.options.bake_timeout,
                });
            }
            tokio::time::sleep(self.options.poll_interval).await;
        }
        let name = ami_name(
            app,
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis(),
        );
        let mut tags: Labels = labels::app_labels(app);
        tags.insert("Name".into(), name.clone());
        tags.insert(SOURCE_TAG.into(), source.to_owned());
        let created = self
            .clients
            .ec2
            .create_image()
            .instance_id(builder)
            .name(&name)
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Image)
                    .set_tags(Some(ec2_tags(&tags)))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| map(&format!("CreateImage {name}"), e))?;
        let ami = created
            .image_id()
            .ok_or_else(|| Error::provider("aws", "CreateImage returned no image id", false))?
            .to_owned();
        events.emit(Event::BuildOutput {
            line: format!("image {ami} ({name}) created"),
        });
        loop {
            let found = self.describe(vec![ami.clone()], vec![], vec![]).await?;
            match found.first().and_then(|a| a.state()) {
                Some(ImageState::Available) => {
                    // the image id is known now: tag it with itself too
                    tags.insert(labels::IMAGE.into(), ami.clone());
                    // the AMI and its snapshots, so that retention may delete both
                    let snapshots = found
                        .first()
                        .map(|a| {
                            a.block_device_mappings()
                                .iter()
                                .filter_map(|m| m.ebs().and_then(|e| e.snapshot_id()))
                                .map(str::to_owned)
                                .collect::<Vec<_>>()
                        })
                        .unwrap_or_default();
                    self.clients
                        .ec2
                        .create_tags()
                        .resources(&ami)
                        .set_resources(Some(
                            std::iter::once(ami.clone()).chain(snapshots).collect(),
                        ))
                        .set_tags(Some(ec2_tags(&tags)))
                        .send()
                        .await
                        .map_err(|e| map("CreateTags", e))?;
                    events.emit(Event::BuildOutput {
                        line: format!("image {ami} available"),
                    });
                    return Ok(ImageRef::new(
                        ImageId::new(ami),
                        app.clone(),
                        found
                            .first()
                            .map(created_at)
                            .unwrap_or_else(SystemTime::now),
                        format!("bake of {name}"),
                    ));
                }
                Some(ImageState::Failed) | Some(ImageState::Error) | Some(ImageState::Invalid) => {
                    return Err(Error::unhealthy(format!("image {ami} failed to bake")));
                }
                _ => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!("image {ami} to become available"),
                    after: self.options.bake_timeout,
                });
            }
            tokio::time::sleep(self.options.poll_interval).await;
        }
    }
}

/// What AMIs come from, for errors.
const KINDS: &str = "AMIs come by id, reference or bake";

/// The most user data EC2 takes: 16 KiB before base64.
const USER_DATA_MAX: usize = 16 * 1024;

/// Whether `id` is an AMI id: `ami-` and 8 or 17 lowercase hex digits.
fn is_ami_id(id: &str) -> bool {
    id.strip_prefix("ami-").is_some_and(|hex| {
        matches!(hex.len(), 8 | 17)
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Checks an instance type's shape, `family.size` (`t3.micro`, `m7i-flex.large`,
/// `u-6tb1.metal`): lowercase letters, digits and `-` on both sides of one `.`.
fn check_instance_type(field: &str, value: &str) -> Result<()> {
    let part = |p: &str| {
        !p.is_empty()
            && !p.starts_with('-')
            && !p.ends_with('-')
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    match value.split_once('.') {
        Some((family, size))
            if part(family) && part(size) && family.as_bytes()[0].is_ascii_lowercase() =>
        {
            Ok(())
        }
        _ => Err(Error::invalid(
            field,
            format!("`{value}` is not an instance type (family.size, like t3.micro)"),
        )),
    }
}

/// Checks a source, and the builder's instance type for a bake, without a call to
/// AWS. (The release's own instance types are the fleet's to check.)
fn check(source: &ImageSource, builder: &str) -> Result<()> {
    match source {
        ImageSource::Id(id) if !is_ami_id(id.as_str()) => Err(Error::invalid(
            "source",
            format!("`{id}` is not an AMI id (ami- and 8 or 17 hex digits)"),
        )),
        ImageSource::Id(_) => Ok(()),
        ImageSource::Reference(r) => {
            if r.trim().is_empty() {
                return Err(Error::invalid(
                    "source",
                    "an AMI reference needs a name or tags",
                ));
            }
            if let Some(pairs) = r.strip_prefix("tag:") {
                if let Some(pair) = pairs
                    .split(',')
                    .find(|p| p.split_once('=').is_none_or(|(k, _)| k.is_empty()))
                {
                    return Err(Error::invalid(
                        "source",
                        format!("`{pair}` is not Key=Value in `{r}`"),
                    ));
                }
            }
            Ok(())
        }
        ImageSource::Bake { base, script } => {
            if !is_ami_id(base) {
                return Err(Error::invalid(
                    "source.base",
                    format!("`{base}` is not an AMI id (ami- and 8 or 17 hex digits)"),
                ));
            }
            if script.trim().is_empty() {
                return Err(Error::invalid(
                    "source.script",
                    "the provisioning script is empty (it must power the builder off when done)",
                ));
            }
            if script.len() > USER_DATA_MAX {
                return Err(Error::invalid(
                    "source.script",
                    format!(
                        "the provisioning script is {} bytes; user data holds {USER_DATA_MAX} at most",
                        script.len()
                    ),
                ));
            }
            check_instance_type("builder_instance_type", builder)
        }
        other => Err(Error::not_supported(format!("{other} ({KINDS})"))),
    }
}

#[async_trait]
impl Image for AmiImage {
    /// Refuses, without a call to AWS: an id or a bake's base that is not `ami-`
    /// and 8 or 17 hex digits, a tag reference with a pair that is not `Key=Value`,
    /// an empty or oversized (16 KiB) provisioning script, a builder instance type
    /// that is not `family.size` for a bake, all `Invalid` naming the field; and
    /// kinds of source AMIs do not come from (`NotSupported`).
    fn check_source(&self, source: &ImageSource, _release: &bluegreen_core::Release) -> Result<()> {
        check(source, &self.options.builder_instance_type)
    }

    async fn prepare(
        &self,
        app: &App,
        source: &ImageSource,
        events: &EventSink,
    ) -> Result<ImageRef> {
        match source {
            ImageSource::Id(id) => {
                let found = self.describe(vec![id.to_string()], vec![], vec![]).await?;
                let ami = found
                    .first()
                    .ok_or_else(|| Error::not_found(format!("AMI {id}")))?;
                Ok(ImageRef::new(
                    id.clone(),
                    app.clone(),
                    created_at(ami),
                    format!("image {id}"),
                ))
            }
            ImageSource::Reference(r) => self.resolve(app, r).await,
            ImageSource::Bake { base, script } => self.bake(app, base, script, events).await,
            other => Err(Error::not_supported(format!("{other} ({KINDS})"))),
        }
    }

    async fn images(&self, app: &App) -> Result<Vec<ImageRef>> {
        let images = self
            .describe(vec![], ec2_owner_filters(app), vec!["self".into()])
            .await?;
        Ok(images
            .iter()
            .filter(|a| labels::is_owned_by(&ec2_labels(a.tags()), app))
            .filter_map(|a| {
                Some(ImageRef::new(
                    ImageId::new(a.image_id()?),
                    app.clone(),
                    created_at(a),
                    a.name().unwrap_or_default(),
                ))
            })
            .collect())
    }

    async fn remove(&self, app: &App, id: &ImageId) -> Result<()> {
        let found = match self.describe(vec![id.to_string()], vec![], vec![]).await {
            Ok(f) => f,
            Err(e) if e.kind() == bluegreen_core::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let Some(ami) = found.first() else {
            return Ok(());
        };
        if !labels::is_owned_by(&ec2_labels(ami.tags()), app) {
            return Ok(());
        }
        self.refuse_if_in_use(id).await?;
        let snapshots: Vec<String> = ami
            .block_device_mappings()
            .iter()
            .filter_map(|m| m.ebs().and_then(|e| e.snapshot_id()).map(str::to_owned))
            .collect();
        self.clients
            .ec2
            .deregister_image()
            .image_id(id.as_str())
            .send()
            .await
            .map_err(|e| map(&format!("DeregisterImage {id}"), e))?;
        for snapshot in snapshots {
            self.clients
                .ec2
                .delete_snapshot()
                .snapshot_id(&snapshot)
                .send()
                .await
                .map_err(|e| map(&format!("DeleteSnapshot {snapshot}"), e))?;
        }
        Ok(())
    }
}

/// The name of an AMI baked for `app` at `millis` since the epoch:
/// `web-production-1712345678901`. AMI names are unique in a region; the slug names
/// one app and the time follows its last `-`.
fn ami_name(app: &App, millis: u128) -> String {
    format!("{}-{millis}", app.slug())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bluegreen_testkit::names::{assert_distinct, near_collisions};

    #[test]
    fn ami_ids_and_instance_types_are_checked_by_shape() {
        assert!(is_ami_id("ami-0123abcd"));
        assert!(is_ami_id("ami-0123456789abcdef0"));
        for bad in [
            "ami-123",
            "ami-0123ABCD",
            "ami-0123abcg",
            "0123abcd",
            "ami-",
            "web:2",
        ] {
            assert!(!is_ami_id(bad), "{bad}");
        }
        for good in [
            "t3.micro",
            "m7i-flex.large",
            "u-6tb1.metal",
            "c6i.32xlarge",
            "i7ie.metal-24xl",
        ] {
            check_instance_type("f", good).unwrap();
        }
        for bad in [
            "t3",
            "T3.micro",
            "t3.",
            ".micro",
            "t3 micro",
            "t3.micro.x",
            "-t3.micro",
            "3t.micro",
        ] {
            let e = check_instance_type("settings.instance_type", bad).unwrap_err();
            assert!(e.to_string().contains("settings.instance_type"), "{e}");
            assert!(e.to_string().contains(bad), "{e}");
        }
    }

    #[test]
    fn every_app_has_ami_names_of_its_own() {
        let apps = near_collisions();
        for millis in [0, 1, 1_712_345_678_901] {
            assert_distinct("AMI name", &apps, |a| ami_name(a, millis));
        }
        let web = App::new("web", "production").unwrap();
        assert_eq!(ami_name(&web, 17), "web-production-17");
    }
}
