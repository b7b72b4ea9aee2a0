//! [`Ec2Fleet`]: a group is a set of EC2 instances launched with `RunInstances`,
//! tagged with bluegreen's labels, spread across subnets.

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_ec2::types::{
    Filter, IamInstanceProfileSpecification, Instance as Ec2Instance, InstanceAttributeName,
    InstanceStateName, InstanceType, LaunchTemplateSpecification, ResourceType, SummaryStatus,
    TagSpecification,
};
use bluegreen_core::labels::{self, Labels};
use bluegreen_core::{
    App, Error, Fleet, FleetCapabilities, Group, GroupId, Health, Instance, Release, Result,
};
use sha2::{Digest, Sha256};

use crate::checks::{self, LaunchOptions};
use crate::config::AwsClients;
use crate::error::map;
use crate::labels::{ec2_labels, ec2_not_terminated_filter, ec2_owner_filters, ec2_tags};
use crate::settings::{Ec2Settings, Settings};

/// The most instances one `DescribeInstances` page or `TerminateInstances` call takes.
pub const BATCH: usize = 1000;
/// The most instance ids one `DescribeInstanceStatus` call takes.
const STATUS_BATCH: usize = 100;
/// The tag that carries the port instances serve on.
const PORT_TAG: &str = "bluegreen.port";

/// How [`Ec2Fleet`] launches instances.
#[non_exhaustive]
#[derive(Clone, Debug, Default)]
pub struct Ec2FleetOptions {
    /// The instance type (setting `instance_type` overrides it). Default `t3.micro`.
    pub instance_type: Option<String>,
    /// Subnets to spread instances across (round robin, one `RunInstances` each).
    pub subnets: Vec<String>,
    /// Security groups.
    pub security_groups: Vec<String>,
    /// A key pair.
    pub key_name: Option<String>,
    /// An instance profile (name).
    pub instance_profile: Option<String>,
    /// A launch template id; its version is `$Default` unless given after a `:`.
    pub launch_template: Option<String>,
    /// The port instances serve on, for their address (setting `port` overrides it).
    /// Default 80.
    pub port: Option<u16>,
    /// A script appended to the user data (setting `user_data` overrides it).
    pub user_data: Option<String>,
    /// The most instances a `DescribeInstances` page asks for (default
    /// [`BATCH`]), so that tests reach a second page with a few instances.
    #[doc(hidden)]
    pub page_size: Option<i32>,
}

impl Ec2FleetOptions {
    /// Sets the subnets.
    pub fn with_subnets(mut self, subnets: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.subnets = subnets.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the instance type.
    pub fn with_instance_type(mut self, t: impl Into<String>) -> Self {
        self.instance_type = Some(t.into());
        self
    }

    /// Sets the security groups.
    pub fn with_security_groups(
        mut self,
        groups: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        self.security_groups = groups.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the port.
    pub fn with_port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Sets the launch template (`lt-...`, optionally `:version`).
    pub fn with_launch_template(mut self, template: impl Into<String>) -> Self {
        self.launch_template = Some(template.into());
        self
    }

    /// Sets [`Ec2FleetOptions::page_size`] (for tests).
    #[doc(hidden)]
    pub fn with_page_size(mut self, size: i32) -> Self {
        self.page_size = Some(size);
        self
    }

    fn check(&self) -> Result<()> {
        checks::page_size(self.page_size)?;
        LaunchOptions {
            subnets: &self.subnets,
            subnets_required: false,
            security_groups: &self.security_groups,
            instance_type: self.instance_type.as_deref(),
            port: self.port,
        }
        .check()?;
        if let Some(template) = &self.launch_template {
            let id = template
                .split_once(':')
                .map_or(template.as_str(), |(id, _)| id);
            if !id.starts_with("lt-") || id.len() == 3 {
                return Err(Error::invalid(
                    "launch_template",
                    format!("`{template}` is no launch template id (lt-...[:version])"),
                ));
            }
        }
        Ok(())
    }
}

/// Groups of EC2 instances.
///
/// Every instance and its volumes carry [`Group::labels`] as tags, plus `Name`. The
/// group's record (release included) travels in the user data, with the release's
/// environment written to `/etc/bluegreen/release.env` on boot. `groups` finds
/// instances by tag filters (paginated, 1,000 a page) and reads one user data per
/// group; `instances` reads status checks 100 at a time; `destroy` terminates 1,000 a
/// call. Only instances with bluegreen's tags are ever terminated.
#[derive(Clone, Debug)]
pub struct Ec2Fleet {
    clients: AwsClients,
    options: Ec2FleetOptions,
}

impl Ec2Fleet {
    /// A fleet. Bad options are [`Error::Invalid`] naming the option (`subnets`,
    /// `security_groups`, `instance_type`, `port`, `launch_template`); no call is
    /// made.
    pub fn new(clients: AwsClients, options: Ec2FleetOptions) -> Result<Self> {
        options.check()?;
        Ok(Ec2Fleet { clients, options })
    }

    fn settings(&self, release: &Release) -> Result<Settings> {
        let given: Ec2Settings = release.settings_as("the EC2 fleet")?;
        if let Some(t) = &given.instance_type {
            checks::instance_type("settings.instance_type", t)?;
        }
        checks::port("settings.port", given.port)?;
        Ok(Settings {
            instance_type: given
                .instance_type
                .or_else(|| self.options.instance_type.clone())
                .unwrap_or_else(|| "t3.micro".into()),
            port: given.port.or(self.options.port).unwrap_or(80),
            user_data: given.user_data.or_else(|| self.options.user_data.clone()),
        })
    }

    /// Every instance of `app` not terminated, optionally of one group, page by page.
    async fn describe(&self, app: &App, group: Option<&GroupId>) -> Result<Vec<Ec2Instance>> {
        let mut filters = ec2_owner_filters(app);
        if let Some(g) = group {
            filters.push(
                Filter::builder()
                    .name(format!("tag:{}", labels::GROUP))
                    .values(g.as_str())
                    .build(),
            );
        }
        filters.push(ec2_not_terminated_filter());
        // the SDK's paginator follows NextToken until it is absent or empty
        let reservations = self
            .clients
            .ec2
            .describe_instances()
            .set_filters(Some(filters))
            .into_paginator()
            .page_size(self.options.page_size.unwrap_or(BATCH as i32))
            .items()
            .send()
            .collect::<std::result::Result<Vec<_>, _>>()
            .await
            .map_err(|e| map("DescribeInstances", e))?;
        Ok(reservations
            .iter()
            .flat_map(|r| r.instances().iter().cloned())
            .collect())
    }

    async fn record_of(&self, instance_id: &str) -> Result<Option<String>> {
        let out = self
            .clients
            .ec2
            .describe_instance_attribute()
            .instance_id(instance_id)
            .attribute(InstanceAttributeName::UserData)
            .send()
            .await
            .map_err(|e| map("DescribeInstanceAttribute", e))?;
        Ok(out
            .user_data()
            .and_then(|u| u.value())
            .and_then(crate::user_data::record))
    }
}

fn health_of(instance: &Ec2Instance, status: Option<(&SummaryStatus, &SummaryStatus)>) -> Health {
    let state = instance.state().and_then(|s| s.name()).cloned();
    match state {
        Some(InstanceStateName::Pending) => Health::Starting,
        Some(InstanceStateName::Running) => match status {
            Some((SummaryStatus::Ok, SummaryStatus::Ok)) => Health::Healthy,
            Some((SummaryStatus::Impaired, _)) | Some((_, SummaryStatus::Impaired)) => {
                Health::Unhealthy {
                    reason: "status checks impaired".into(),
                }
            }
            _ => Health::Starting,
        },
        other => Health::Stopped {
            reason: format!(
                "instance {}",
                other
                    .map(|s| s.as_str().to_owned())
                    .unwrap_or_else(|| "state unknown".into())
            ),
        },
    }
}

#[async_trait]
impl Fleet for Ec2Fleet {
    fn check_release(&self, release: &Release) -> Result<()> {
        self.settings(release).map(|_| ())
    }

    fn capabilities(&self) -> FleetCapabilities {
        FleetCapabilities::default().with_batch_size(BATCH)
    }

    async fn launch(&self, group: &Group) -> Result<()> {
        let settings = self.settings(&group.release)?;
        let existing = self.describe(&group.app, Some(&group.id)).await?;
        if let Some(first) = existing.first() {
            let record = self
                .record_of(first.instance_id().unwrap_or_default())
                .await?;
            if record.as_deref() != Some(group.to_record().as_str()) {
                return Err(Error::conflict(format!(
                    "group {} exists with another record",
                    group.id
                )));
            }
        }
        let alive = existing
            .iter()
            .filter(|i| {
                !matches!(
                    i.state().and_then(|s| s.name()),
                    Some(InstanceStateName::ShuttingDown)
                )
            })
            .count();
        let missing = (group.release.size as usize).saturating_sub(alive);
        if missing == 0 {
            return Ok(());
        }
        let subnets: Vec<Option<&String>> = if self.options.subnets.is_empty() {
            vec![None]
        } else {
            self.options.subnets.iter().map(Some).collect()
        };
        let mut per_subnet = vec![0usize; subnets.len()];
        for i in 0..missing {
            per_subnet[(alive + i) % subnets.len()] += 1;
        }
        let mut tags: Labels = group.labels();
        tags.insert("Name".into(), group.id.to_string());
        tags.insert(PORT_TAG.into(), settings.port.to_string());
        let user_data = crate::user_data::encode(group, settings.user_data.as_deref());
        for (n, (subnet, count)) in subnets.iter().zip(per_subnet).enumerate() {
            if count == 0 {
                continue;
            }
            // the same token for the same attempt: a retried call launches nothing twice
            // (and another deployment of the same group id, after a failed one was
            // destroyed, gets another token)
            let token: String = Sha256::digest(format!(
                "{}|{}|{}|{n}|{alive}",
                group.id,
                group.release.id(),
                group.deployment
            ))
            .iter()
            .take(16)
            .map(|b| format!("{b:02x}"))
            .collect();
            let mut run = self
                .clients
                .ec2
                .run_instances()
                .min_count(count as i32)
                .max_count(count as i32)
                .client_token(token)
                .user_data(&user_data)
                .set_subnet_id(subnet.cloned())
                .set_key_name(self.options.key_name.clone())
                .tag_specifications(
                    TagSpecification::builder()
                        .resource_type(ResourceType::Instance)
                        .set_tags(Some(ec2_tags(&tags)))
                        .build(),
                )
                .tag_specifications(
                    TagSpecification::builder()
                        .resource_type(ResourceType::Volume)
                        .set_tags(Some(ec2_tags(&tags)))
                        .build(),
                );
            match &self.options.launch_template {
                Some(template) => {
                    let (id, version) = template.split_once(':').unwrap_or((template, "$Default"));
                    run = run.launch_template(
                        LaunchTemplateSpecification::builder()
                            .launch_template_id(id)
                            .version(version)
                            .build(),
                    );
                }
                None => {
                    run = run
                        .image_id(group.release.image.as_str())
                        .instance_type(InstanceType::from(settings.instance_type.as_str()));
                }
            }
            if !self.options.security_groups.is_empty() {
                run = run.set_security_group_ids(Some(self.options.security_groups.clone()));
            }
            if let Some(profile) = &self.options.instance_profile {
                run = run.iam_instance_profile(
                    IamInstanceProfileSpecification::builder()
                        .name(profile)
                        .build(),
                );
            }
            run.send()
                .await
                .map_err(|e| map(&format!("RunInstances {}", group.id), e))?;
        }
        Ok(())
    }

    async fn groups(&self, app: &App) -> Result<Vec<Group>> {
        let instances = self.describe(app, None).await?;
        let mut by_group: BTreeMap<String, (String, Labels)> = BTreeMap::new();
        for i in &instances {
            let tags = ec2_labels(i.tags());
            if !labels::is_owned_by(&tags, app) {
                continue;
            }
            if let Some(g) = tags.get(labels::GROUP).cloned() {
                by_group
                    .entry(g)
                    .or_insert_with(|| (i.instance_id().unwrap_or_default().to_owned(), tags));
            }
        }
        let mut out = Vec::new();
        for (id, (instance, tags)) in by_group {
            let record = self.record_of(&instance).await?.ok_or_else(|| {
                Error::conflict(format!(
                    "instance {instance} of {id} carries no group record"
                ))
            })?;
            out.push(Group::from_record(&record, &tags)?);
        }
        Ok(out)
    }

    async fn instances(&self, app: &App, group: &GroupId) -> Result<Vec<Instance>> {
        let found = self.describe(app, Some(group)).await?;
        if found.is_empty() {
            return Err(Error::not_found(format!("group {group}")));
        }
        let ids: Vec<String> = found
            .iter()
            .filter_map(|i| i.instance_id().map(str::to_owned))
            .collect();
        let mut statuses: BTreeMap<String, (SummaryStatus, SummaryStatus)> = BTreeMap::new();
        for chunk in ids.chunks(STATUS_BATCH) {
            let out = self
                .clients
                .ec2
                .describe_instance_status()
                .set_instance_ids(Some(chunk.to_vec()))
                .include_all_instances(true)
                .send()
                .await
                .map_err(|e| map("DescribeInstanceStatus", e))?;
            for s in out.instance_statuses() {
                let (Some(id), Some(inst), Some(sys)) = (
                    s.instance_id(),
                    s.instance_status().and_then(|x| x.status()),
                    s.system_status().and_then(|x| x.status()),
                ) else {
                    continue;
                };
                statuses.insert(id.to_owned(), (inst.clone(), sys.clone()));
            }
        }
        Ok(found
            .iter()
            .map(|i| {
                let id = i.instance_id().unwrap_or_default();
                let port = ec2_labels(i.tags())
                    .get(PORT_TAG)
                    .and_then(|p| p.parse::<u16>().ok())
                    .unwrap_or(self.options.port.unwrap_or(80));
                let status = statuses.get(id).map(|(a, b)| (a, b));
                Instance::new(
                    id,
                    i.private_ip_address().map(|ip| format!("{ip}:{port}")),
                    health_of(i, status),
                )
            })
            .collect())
    }

    async fn destroy(&self, app: &App, group: &GroupId) -> Result<()> {
        let found = self.describe(app, Some(group)).await?;
        let ids: Vec<String> = found
            .iter()
            .filter(|i| labels::is_owned_by(&ec2_labels(i.tags()), app))
            .filter(|i| {
                !matches!(
                    i.state().and_then(|s| s.name()),
                    Some(InstanceStateName::ShuttingDown)
                )
            })
            .filter_map(|i| i.instance_id().map(str::to_owned))
            .collect();
        for chunk in ids.chunks(BATCH) {
            self.clients
                .ec2
                .terminate_instances()
                .set_instance_ids(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(|e| map(&format!("TerminateInstances {group}"), e))?;
        }
        Ok(())
    }
}
