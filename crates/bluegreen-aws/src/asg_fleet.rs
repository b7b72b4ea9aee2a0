//! [`AsgFleet`]: a group is an EC2 Auto Scaling group, launched from a launch
//! template made for its release, that keeps its own size.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_autoscaling::client::Waiters as _;
use aws_sdk_autoscaling::types::{
    AutoScalingGroup, Filter as AsgFilter, Instance as AsgInstance, InstancesDistribution,
    LaunchTemplate as AsgLaunchTemplate, LaunchTemplateOverrides,
    LaunchTemplateSpecification as AsgLaunchTemplateSpecification, LifecycleState,
    MixedInstancesPolicy, Tag as AsgTag, TagDescription,
};
use aws_sdk_ec2::error::ProvideErrorMetadata as _;
use aws_sdk_ec2::types::{
    Filter, Instance as Ec2Instance, InstanceStateName, InstanceType,
    LaunchTemplateIamInstanceProfileSpecificationRequest, LaunchTemplateTagSpecificationRequest,
    RequestLaunchTemplateData, ResourceType, SummaryStatus, TagSpecification,
};
use bluegreen_core::labels::{self, Labels};
use bluegreen_core::{
    App, Error, Fleet, FleetCapabilities, Group, GroupId, Health, Instance, Release, Result,
};
use sha2::{Digest, Sha256};

use crate::checks::{self, LaunchOptions};
use crate::config::AwsClients;
use crate::error::map;
use crate::labels::{ec2_labels, ec2_owner_filters, ec2_tags};
use crate::settings::{AsgFleetSettings, AsgSettings};

/// The tag that carries the port instances serve on.
const PORT_TAG: &str = "bluegreen.port";
/// The tag Auto Scaling puts on every instance it launches.
const ASG_NAME_TAG: &str = "aws:autoscaling:groupName";
/// The most instance ids one `DescribeInstanceStatus` call takes.
const STATUS_BATCH: usize = 100;
/// The most instances one `DescribeInstances` page holds.
const DESCRIBE_PAGE: i32 = 1000;
/// The most groups one `DescribeAutoScalingGroups` page holds.
const GROUPS_PAGE: i32 = 100;
/// The most launch templates one `DescribeLaunchTemplates` page holds.
const TEMPLATES_PAGE: i32 = 200;
/// The Auto Scaling group status while it is being deleted.
const DELETING: &str = "Delete in progress";

/// How [`AsgFleet`] launches its Auto Scaling groups.
#[non_exhaustive]
#[derive(Clone, Debug)]
pub struct AsgFleetOptions {
    /// The subnets the group spans (its `VPCZoneIdentifier`), one or more, ideally
    /// one per availability zone. Required.
    pub subnets: Vec<String>,
    /// Security groups (ids, `sg-...`) of the launch template.
    pub security_groups: Vec<String>,
    /// An instance profile (name) of the launch template.
    pub instance_profile: Option<String>,
    /// A key pair of the launch template.
    pub key_name: Option<String>,
    /// The instance type (settings `instance_type`/`instance_types` override it).
    /// Default `t3.micro`.
    pub instance_type: Option<String>,
    /// The port instances serve on, for their address (setting `port` overrides it).
    /// Default 80. It must be the target group's port ([`crate::ElbRouterOptions::port`]):
    /// the Auto Scaling group registers its instances on that port.
    pub port: Option<u16>,
    /// A script appended to the user data (setting `user_data` overrides it).
    pub user_data: Option<String>,
    /// How long a new instance may take before the load balancer's health checks
    /// count (the group's `HealthCheckGracePeriod`), in whole seconds. Default 300 s.
    pub health_check_grace_period: Duration,
    /// How long `destroy` waits for a deleted group to be gone before it deletes the
    /// group's launch template (polled with the SDK's `GroupNotExists` waiter).
    /// Default 240 s; past it, `destroy` fails retryably and a later call goes on.
    pub delete_wait: Duration,
    /// The most items a describe page asks for (default: each call's maximum), so
    /// that tests reach a second page with a few instances.
    #[doc(hidden)]
    pub page_size: Option<i32>,
}

impl Default for AsgFleetOptions {
    fn default() -> Self {
        AsgFleetOptions {
            subnets: Vec::new(),
            security_groups: Vec::new(),
            instance_profile: None,
            key_name: None,
            instance_type: None,
            port: None,
            user_data: None,
            health_check_grace_period: Duration::from_secs(300),
            delete_wait: Duration::from_secs(240),
            page_size: None,
        }
    }
}

impl AsgFleetOptions {
    /// Options for groups spanning `subnets`.
    pub fn new(subnets: impl IntoIterator<Item = impl Into<String>>) -> Self {
        AsgFleetOptions {
            subnets: subnets.into_iter().map(Into::into).collect(),
            ..AsgFleetOptions::default()
        }
    }

    /// Sets the security groups.
    pub fn with_security_groups(
        mut self,
        groups: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        self.security_groups = groups.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the instance profile (name).
    pub fn with_instance_profile(mut self, name: impl Into<String>) -> Self {
        self.instance_profile = Some(name.into());
        self
    }

    /// Sets the instance type.
    pub fn with_instance_type(mut self, t: impl Into<String>) -> Self {
        self.instance_type = Some(t.into());
        self
    }

    /// Sets the port.
    pub fn with_port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Sets the health check grace period (whole seconds).
    pub fn with_health_check_grace_period(mut self, period: Duration) -> Self {
        self.health_check_grace_period = period;
        self
    }

    /// Sets how long `destroy` waits for a deleted group to be gone.
    pub fn with_delete_wait(mut self, wait: Duration) -> Self {
        self.delete_wait = wait;
        self
    }

    /// Sets [`AsgFleetOptions::page_size`] (for tests).
    #[doc(hidden)]
    pub fn with_page_size(mut self, size: i32) -> Self {
        self.page_size = Some(size);
        self
    }

    fn check(&self) -> Result<()> {
        LaunchOptions {
            subnets: &self.subnets,
            subnets_required: true,
            security_groups: &self.security_groups,
            instance_type: self.instance_type.as_deref(),
            port: self.port,
        }
        .check()?;
        checks::page_size(self.page_size)?;
        let grace = self.health_check_grace_period;
        if grace.subsec_nanos() != 0 || i32::try_from(grace.as_secs()).is_err() {
            return Err(Error::invalid(
                "health_check_grace_period",
                format!("{grace:?} is not a whole number of seconds up to 2^31-1"),
            ));
        }
        if self.delete_wait.is_zero() {
            return Err(Error::invalid(
                "delete_wait",
                "must be longer than zero: destroy waits for the group to be gone",
            ));
        }
        Ok(())
    }
}

/// Groups as EC2 Auto Scaling groups.
///
/// A group is an Auto Scaling group named after the group id, created once from a
/// launch template of the same name made for the release (AMI, instance type, user
/// data carrying the group's record and the release's environment, security
/// groups, instance profile), with minimum = maximum = desired = the release's size,
/// across the options' subnets, the group's labels as tags propagated to its
/// instances, and health check type `ELB` with the options' grace period. The group
/// is never changed after launch except to delete it, and, when the engine keeps
/// warm groups scaled in (`EngineOptions::warm_size`), to set its minimum and
/// desired capacity ([`Fleet::scale`]: `UpdateAutoScalingGroup`, the maximum stays
/// the release's size). Auto Scaling replaces an instance that fails its checks,
/// and the replacement is a new member.
///
/// `instances` of a group with neither an Auto Scaling group nor a launch template
/// of ours is [`Error::NotFound`]; `destroy` of such a group succeeds and changes
/// nothing.
///
/// Only resources with bluegreen's tags are read as groups or deleted: an Auto
/// Scaling group or launch template with the same name and without them makes
/// `launch` fail with [`Error::Conflict`] and is never touched.
///
/// With [`crate::ElbRouter`], set [`crate::TargetRegistration::AutoScalingGroup`]:
/// the router attaches each group's target group to its Auto Scaling group, which
/// registers its own instances (a replacement included).
#[derive(Clone, Debug)]
pub struct AsgFleet {
    clients: AwsClients,
    options: AsgFleetOptions,
}

/// An Auto Scaling group of ours, with its tags.
struct Found {
    group: AutoScalingGroup,
    tags: Labels,
}

/// A launch template of ours.
struct Template {
    id: String,
    version: String,
    tags: Labels,
}

impl AsgFleet {
    /// A fleet. Bad options are [`Error::Invalid`] naming the option (`subnets`,
    /// `security_groups`, `instance_type`, `port`, `health_check_grace_period`,
    /// `delete_wait`); no call is made.
    pub fn new(clients: AwsClients, options: AsgFleetOptions) -> Result<Self> {
        options.check()?;
        Ok(AsgFleet { clients, options })
    }

    /// A describe call's page size: `max`, or the options' smaller one.
    fn page(&self, max: i32) -> i32 {
        self.options.page_size.map_or(max, |p| p.min(max))
    }

    fn settings(&self, release: &Release) -> Result<AsgFleetSettings> {
        let given: AsgSettings = release.settings_as("the Auto Scaling fleet")?;
        checks::port("settings.port", given.port)?;
        let port = given.port.or(self.options.port).unwrap_or(80);
        let instance_types = match (&given.instance_type, &given.instance_types) {
            (Some(_), Some(_)) => {
                return Err(Error::invalid(
                    "settings.instance_types",
                    "give instance_type or instance_types, not both",
                ))
            }
            (Some(t), None) => {
                checks::instance_type("settings.instance_type", t)?;
                vec![t.clone()]
            }
            (None, Some(list)) => {
                let types: Vec<String> = list.split(',').map(|t| t.trim().to_owned()).collect();
                for t in &types {
                    checks::instance_type("settings.instance_types", t)?;
                }
                checks::no_duplicate("settings.instance_types", &types)?;
                types
            }
            (None, None) => vec![self
                .options
                .instance_type
                .clone()
                .unwrap_or_else(|| "t3.micro".into())],
        };
        Ok(AsgFleetSettings {
            instance_types,
            port,
            user_data: given.user_data.or_else(|| self.options.user_data.clone()),
        })
    }

    /// The Auto Scaling group named `group`, when it exists. One not ours is
    /// returned too (its tags say so).
    async fn asg(&self, group: &GroupId) -> Result<Option<Found>> {
        let out = self
            .clients
            .autoscaling
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(group.as_str())
            .send()
            .await
            .map_err(|e| map(&format!("DescribeAutoScalingGroups {group}"), e))?;
        Ok(out
            .auto_scaling_groups()
            .iter()
            .find(|g| g.auto_scaling_group_name() == Some(group.as_str()))
            .map(|g| Found {
                tags: asg_labels(g.tags()),
                group: g.clone(),
            }))
    }

    /// The launch templates with `app`'s tags (optionally the one named `group`),
    /// page by page.
    async fn templates(&self, app: &App, group: Option<&GroupId>) -> Result<Vec<Template>> {
        let mut filters = ec2_owner_filters(app);
        if let Some(g) = group {
            filters.push(
                Filter::builder()
                    .name("launch-template-name")
                    .values(g.as_str())
                    .build(),
            );
        }
        let found = self
            .clients
            .ec2
            .describe_launch_templates()
            .set_filters(Some(filters))
            .into_paginator()
            .page_size(self.page(TEMPLATES_PAGE))
            .items()
            .send()
            .collect::<std::result::Result<Vec<_>, _>>()
            .await
            .map_err(|e| map("DescribeLaunchTemplates", e))?;
        Ok(found
            .into_iter()
            .filter_map(|t| {
                let tags = ec2_labels(t.tags());
                if !labels::is_owned_by(&tags, app) {
                    return None;
                }
                Some(Template {
                    id: t.launch_template_id()?.to_owned(),
                    version: t.latest_version_number()?.to_string(),
                    tags,
                })
            })
            .collect())
    }

    /// The group record in a launch template version's user data.
    async fn record_of(&self, template_id: &str, version: &str) -> Result<Option<String>> {
        let out = self
            .clients
            .ec2
            .describe_launch_template_versions()
            .launch_template_id(template_id)
            .versions(version)
            .send()
            .await
            .map_err(|e| map(&format!("DescribeLaunchTemplateVersions {template_id}"), e))?;
        Ok(out
            .launch_template_versions()
            .first()
            .and_then(|v| v.launch_template_data())
            .and_then(|d| d.user_data())
            .and_then(crate::user_data::record))
    }

    /// The record of an Auto Scaling group of ours, through its launch template.
    async fn record_of_asg(&self, found: &Found) -> Result<Option<String>> {
        let spec = found.group.launch_template().or_else(|| {
            found
                .group
                .mixed_instances_policy()
                .and_then(|p| p.launch_template())
                .and_then(|l| l.launch_template_specification())
        });
        let Some((id, version)) = spec.and_then(|s| Some((s.launch_template_id()?, s.version()?)))
        else {
            return Ok(None);
        };
        self.record_of(id, version).await
    }

    /// Creates the launch template of `group`, or adopts it when it exists with our
    /// tags and the same record. Returns its id and version.
    async fn ensure_template(
        &self,
        group: &Group,
        settings: &AsgFleetSettings,
        tags: &Labels,
    ) -> Result<(String, String)> {
        if let Some(t) = self.templates(&group.app, Some(&group.id)).await?.pop() {
            return self.adopt_template(group, t).await;
        }
        let mut instance_tags = tags.clone();
        instance_tags.remove(PORT_TAG);
        let mut data = RequestLaunchTemplateData::builder()
            .image_id(group.release.image.as_str())
            .instance_type(InstanceType::from(settings.instance_types[0].as_str()))
            .user_data(crate::user_data::encode(
                group,
                settings.user_data.as_deref(),
            ))
            .set_key_name(self.options.key_name.clone())
            // volumes carry the group's tags too (Auto Scaling propagates to instances)
            .tag_specifications(
                LaunchTemplateTagSpecificationRequest::builder()
                    .resource_type(ResourceType::Volume)
                    .set_tags(Some(ec2_tags(&instance_tags)))
                    .build(),
            );
        if !self.options.security_groups.is_empty() {
            data = data.set_security_group_ids(Some(self.options.security_groups.clone()));
        }
        if let Some(profile) = &self.options.instance_profile {
            data = data.iam_instance_profile(
                LaunchTemplateIamInstanceProfileSpecificationRequest::builder()
                    .name(profile)
                    .build(),
            );
        }
        // the same token for the same group of the same deployment: a retried call
        // creates nothing twice
        let token: String = Sha256::digest(format!(
            "{}|{}|{}",
            group.id,
            group.release.id(),
            group.deployment
        ))
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect();
        let created = self
            .clients
            .ec2
            .create_launch_template()
            .launch_template_name(group.id.as_str())
            .version_description(format!("{} {}", group.id, group.release.id()))
            .client_token(token)
            .launch_template_data(data.build())
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::LaunchTemplate)
                    .set_tags(Some(ec2_tags(&group.labels())))
                    .build(),
            )
            .send()
            .await;
        match created {
            Ok(out) => {
                let t = out.launch_template().ok_or_else(|| {
                    Error::provider("aws", "CreateLaunchTemplate returned no template", true)
                })?;
                Ok((
                    t.launch_template_id().unwrap_or_default().to_owned(),
                    t.latest_version_number().unwrap_or(1).to_string(),
                ))
            }
            Err(e) if e.code() == Some("InvalidLaunchTemplateName.AlreadyExistsException") => {
                // created meanwhile, or a template of that name without our tags
                match self.templates(&group.app, Some(&group.id)).await?.pop() {
                    Some(t) => self.adopt_template(group, t).await,
                    None => Err(Error::conflict(format!(
                        "launch template {} exists without bluegreen's tags for {}",
                        group.id, group.app
                    ))),
                }
            }
            Err(e) => Err(map(&format!("CreateLaunchTemplate {}", group.id), e)),
        }
    }

    async fn adopt_template(&self, group: &Group, t: Template) -> Result<(String, String)> {
        if t.tags.get(labels::GROUP).map(String::as_str) != Some(group.id.as_str()) {
            return Err(Error::conflict(format!(
                "launch template {} is tagged for another group",
                group.id
            )));
        }
        let record = self.record_of(&t.id, &t.version).await?;
        if record.as_deref() != Some(group.to_record().as_str()) {
            return Err(Error::conflict(format!(
                "launch template {} exists with another record",
                group.id
            )));
        }
        Ok((t.id, t.version))
    }

    /// Checks that an existing Auto Scaling group is `group`'s: our tags and the same
    /// record.
    async fn adopt(&self, group: &Group, found: &Found) -> Result<()> {
        if !labels::is_owned_by(&found.tags, &group.app)
            || found.tags.get(labels::GROUP).map(String::as_str) != Some(group.id.as_str())
        {
            return Err(Error::conflict(format!(
                "Auto Scaling group {} exists without bluegreen's tags for {}",
                group.id, group.app
            )));
        }
        if found.group.status() == Some(DELETING) {
            return Err(Error::conflict(format!(
                "Auto Scaling group {} is being deleted",
                group.id
            )));
        }
        let record = self.record_of_asg(found).await?;
        if record.as_deref() != Some(group.to_record().as_str()) {
            return Err(Error::conflict(format!(
                "group {} exists with another record",
                group.id
            )));
        }
        Ok(())
    }

    /// The EC2 instances Auto Scaling launched for `group`, not terminated.
    async fn ec2_instances(&self, group: &GroupId) -> Result<BTreeMap<String, Ec2Instance>> {
        let pages = self
            .clients
            .ec2
            .describe_instances()
            .filters(
                Filter::builder()
                    .name(format!("tag:{ASG_NAME_TAG}"))
                    .values(group.as_str())
                    .build(),
            )
            .filters(
                Filter::builder()
                    .name("instance-state-name")
                    .set_values(Some(
                        ["pending", "running", "shutting-down", "stopping", "stopped"]
                            .map(String::from)
                            .to_vec(),
                    ))
                    .build(),
            )
            .into_paginator()
            .page_size(self.page(DESCRIBE_PAGE))
            .send()
            .collect::<std::result::Result<Vec<_>, _>>()
            .await
            .map_err(|e| map("DescribeInstances", e))?;
        Ok(pages
            .iter()
            .flat_map(|p| p.reservations())
            .flat_map(|r| r.instances())
            .filter_map(|i| Some((i.instance_id()?.to_owned(), i.clone())))
            .collect())
    }

    /// EC2 status checks (instance, system), 100 instances a call.
    async fn statuses(
        &self,
        ids: &[String],
    ) -> Result<BTreeMap<String, (SummaryStatus, SummaryStatus)>> {
        let mut statuses = BTreeMap::new();
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
        Ok(statuses)
    }
}

/// Labels from Auto Scaling tags.
fn asg_labels(tags: &[TagDescription]) -> Labels {
    tags.iter()
        .filter_map(|t| Some((t.key()?.to_owned(), t.value()?.to_owned())))
        .collect()
}

/// Auto Scaling filters that select groups tagged as `app`'s.
fn asg_owner_filters(app: &App) -> Vec<AsgFilter> {
    labels::app_labels(app)
        .into_iter()
        .map(|(k, v)| {
            AsgFilter::builder()
                .name(format!("tag:{k}"))
                .values(v)
                .build()
        })
        .collect()
}

/// An instance's health from its Auto Scaling lifecycle and health status, its EC2
/// state and its EC2 status checks.
fn health_of(
    member: &AsgInstance,
    ec2: Option<&Ec2Instance>,
    status: Option<&(SummaryStatus, SummaryStatus)>,
) -> Health {
    let lifecycle = member.lifecycle_state();
    match lifecycle {
        Some(LifecycleState::InService) => {}
        Some(
            LifecycleState::Pending | LifecycleState::PendingWait | LifecycleState::PendingProceed,
        )
        | None => return Health::Starting,
        Some(other) => {
            return Health::Stopped {
                reason: format!("lifecycle state {}", other.as_str()),
            }
        }
    }
    if member.health_status() == Some("Unhealthy") {
        return Health::Unhealthy {
            reason: "Auto Scaling health status Unhealthy".into(),
        };
    }
    match ec2.and_then(|i| i.state()).and_then(|s| s.name()) {
        Some(InstanceStateName::Running) => {}
        Some(InstanceStateName::Pending) | None => return Health::Starting,
        Some(other) => {
            return Health::Stopped {
                reason: format!("instance {}", other.as_str()),
            }
        }
    }
    match status {
        Some((SummaryStatus::Ok, SummaryStatus::Ok)) => Health::Healthy,
        Some((SummaryStatus::Impaired, _)) | Some((_, SummaryStatus::Impaired)) => {
            Health::Unhealthy {
                reason: "status checks impaired".into(),
            }
        }
        _ => Health::Starting,
    }
}

#[async_trait]
impl Fleet for AsgFleet {
    fn check_release(&self, release: &Release) -> Result<()> {
        self.settings(release).map(|_| ())
    }

    fn capabilities(&self) -> FleetCapabilities {
        // one CreateAutoScalingGroup and one DeleteAutoScalingGroup per group; a
        // warm group is scaled with UpdateAutoScalingGroup
        FleetCapabilities::default().with_scaling(true)
    }

    async fn launch(&self, group: &Group) -> Result<()> {
        let settings = self.settings(&group.release)?;
        let size = i32::try_from(group.release.size)
            .map_err(|_| Error::invalid("size", "too large for an Auto Scaling group"))?;
        if let Some(found) = self.asg(&group.id).await? {
            return self.adopt(group, &found).await;
        }
        let mut tags: Labels = group.labels();
        tags.insert("Name".into(), group.id.to_string());
        tags.insert(PORT_TAG.into(), settings.port.to_string());
        let (template_id, version) = self.ensure_template(group, &settings, &tags).await?;
        let spec = AsgLaunchTemplateSpecification::builder()
            .launch_template_id(&template_id)
            .version(&version)
            .build();
        let asg_tags: Vec<AsgTag> = tags
            .iter()
            .map(|(k, v)| {
                AsgTag::builder()
                    .resource_id(group.id.as_str())
                    .resource_type("auto-scaling-group")
                    .key(k)
                    .value(v)
                    .propagate_at_launch(true)
                    .build()
            })
            .collect();
        let mut create = self
            .clients
            .autoscaling
            .create_auto_scaling_group()
            .auto_scaling_group_name(group.id.as_str())
            .min_size(size)
            .max_size(size)
            .desired_capacity(size)
            .vpc_zone_identifier(self.options.subnets.join(","))
            .health_check_type("ELB")
            .health_check_grace_period(self.options.health_check_grace_period.as_secs() as i32)
            .set_tags(Some(asg_tags));
        if settings.instance_types.len() > 1 {
            let overrides = settings
                .instance_types
                .iter()
                .map(|t| LaunchTemplateOverrides::builder().instance_type(t).build())
                .collect();
            create = create.mixed_instances_policy(
                MixedInstancesPolicy::builder()
                    .launch_template(
                        AsgLaunchTemplate::builder()
                            .launch_template_specification(spec)
                            .set_overrides(Some(overrides))
                            .build(),
                    )
                    .instances_distribution(
                        InstancesDistribution::builder()
                            .on_demand_allocation_strategy("prioritized")
                            .on_demand_base_capacity(0)
                            .on_demand_percentage_above_base_capacity(100)
                            .build(),
                    )
                    .build(),
            );
        } else {
            create = create.launch_template(spec);
        }
        match create.send().await {
            Ok(_) => Ok(()),
            // created meanwhile by a retried call: adopt it when it is this group
            Err(e) if e.code() == Some("AlreadyExists") => match self.asg(&group.id).await? {
                Some(found) => self.adopt(group, &found).await,
                None => Err(map(&format!("CreateAutoScalingGroup {}", group.id), e)),
            },
            Err(e) => Err(map(&format!("CreateAutoScalingGroup {}", group.id), e)),
        }
    }

    async fn groups(&self, app: &App) -> Result<Vec<Group>> {
        let asgs = self
            .clients
            .autoscaling
            .describe_auto_scaling_groups()
            .set_filters(Some(asg_owner_filters(app)))
            .into_paginator()
            .page_size(self.page(GROUPS_PAGE))
            .items()
            .send()
            .collect::<std::result::Result<Vec<_>, _>>()
            .await
            .map_err(|e| map("DescribeAutoScalingGroups", e))?;
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        for g in asgs {
            let found = Found {
                tags: asg_labels(g.tags()),
                group: g,
            };
            let Some(id) = found.tags.get(labels::GROUP).cloned() else {
                continue;
            };
            if !labels::is_owned_by(&found.tags, app)
                || found.group.auto_scaling_group_name() != Some(id.as_str())
            {
                continue;
            }
            if found.group.status() == Some(DELETING) {
                // going: listed below through its launch template (with no instance),
                // so that a destroy that stopped waiting is finished
                continue;
            }
            seen.insert(id.clone());
            let record = self.record_of_asg(&found).await?.ok_or_else(|| {
                Error::conflict(format!(
                    "Auto Scaling group {id} has no launch template with a group record"
                ))
            })?;
            out.push(Group::from_record(&record, &found.tags)?);
        }
        // a launch template without its Auto Scaling group (a launch that stopped
        // between the two, or a destroy between the two) is a group too, with no
        // instance, so that the engine destroys it
        for t in self.templates(app, None).await? {
            let Some(id) = t.tags.get(labels::GROUP).cloned() else {
                continue;
            };
            if seen.contains(&id) {
                continue;
            }
            if let Some(record) = self.record_of(&t.id, &t.version).await? {
                out.push(Group::from_record(&record, &t.tags)?);
            }
        }
        Ok(out)
    }

    async fn instances(&self, app: &App, group: &GroupId) -> Result<Vec<Instance>> {
        let found = self
            .asg(group)
            .await?
            .filter(|f| labels::is_owned_by(&f.tags, app) && f.group.status() != Some(DELETING));
        let Some(found) = found else {
            return if self.templates(app, Some(group)).await?.is_empty() {
                Err(Error::not_found(format!("group {group}")))
            } else {
                Ok(Vec::new())
            };
        };
        let members = found.group.instances();
        if members.is_empty() {
            return Ok(Vec::new());
        }
        let port = found
            .tags
            .get(PORT_TAG)
            .and_then(|p| p.parse::<u16>().ok())
            .unwrap_or(self.options.port.unwrap_or(80));
        let ec2 = self.ec2_instances(group).await?;
        let running: Vec<String> = members
            .iter()
            .filter_map(|m| m.instance_id())
            .filter(|id| ec2.contains_key(*id))
            .map(str::to_owned)
            .collect();
        let statuses = self.statuses(&running).await?;
        Ok(members
            .iter()
            .filter_map(|m| {
                let id = m.instance_id()?;
                let instance = ec2.get(id);
                Some(Instance::new(
                    id,
                    instance
                        .and_then(|i| i.private_ip_address())
                        .map(|ip| format!("{ip}:{port}")),
                    health_of(m, instance, statuses.get(id)),
                ))
            })
            .collect())
    }

    /// Sets the group's minimum and desired capacity to `size`, its maximum (the
    /// release's size) unchanged: the one change made to a group after launch.
    async fn scale(&self, app: &App, group: &GroupId, size: u32) -> Result<()> {
        let found = self
            .asg(group)
            .await?
            .filter(|f| labels::is_owned_by(&f.tags, app) && f.group.status() != Some(DELETING))
            .ok_or_else(|| Error::not_found(format!("Auto Scaling group {group}")))?;
        let max = found.group.max_size().unwrap_or(0);
        let wanted = i32::try_from(size)
            .ok()
            .filter(|s| *s <= max)
            .ok_or_else(|| {
                Error::invalid(
                    "size",
                    format!("{size} is above the maximum of Auto Scaling group {group} ({max})"),
                )
            })?;
        let g = &found.group;
        if g.min_size() == Some(wanted) && g.desired_capacity() == Some(wanted) {
            return Ok(());
        }
        self.clients
            .autoscaling
            .update_auto_scaling_group()
            .auto_scaling_group_name(group.as_str())
            .min_size(wanted)
            .desired_capacity(wanted)
            .send()
            .await
            .map_err(|e| map(&format!("UpdateAutoScalingGroup {group}"), e))?;
        Ok(())
    }

    async fn destroy(&self, app: &App, group: &GroupId) -> Result<()> {
        if let Some(found) = self.asg(group).await? {
            if !labels::is_owned_by(&found.tags, app)
                || found.tags.get(labels::GROUP).map(String::as_str) != Some(group.as_str())
            {
                // not ours: never touched; its launch template (if ours) is not
                // deleted under it either
                return Ok(());
            }
            if found.group.status() != Some(DELETING) {
                let deleted = self
                    .clients
                    .autoscaling
                    .delete_auto_scaling_group()
                    .auto_scaling_group_name(group.as_str())
                    .force_delete(true)
                    .send()
                    .await;
                if let Err(e) = deleted {
                    let gone = e.code() == Some("ValidationError")
                        && e.message().is_some_and(|m| m.contains("not found"));
                    if !gone {
                        return Err(map(&format!("DeleteAutoScalingGroup {group}"), e));
                    }
                }
            }
            self.clients
                .autoscaling
                .wait_until_group_not_exists()
                .auto_scaling_group_names(group.as_str())
                .wait(self.options.delete_wait)
                .await
                .map_err(|e| {
                    Error::provider(
                        "aws",
                        format!(
                            "Auto Scaling group {group} was not gone within {:?}: {}",
                            self.options.delete_wait,
                            aws_smithy_types::error::display::DisplayErrorContext(&e)
                        ),
                        true,
                    )
                })?;
        }
        for t in self.templates(app, Some(group)).await? {
            if t.tags.get(labels::GROUP).map(String::as_str) != Some(group.as_str()) {
                continue;
            }
            let deleted = self
                .clients
                .ec2
                .delete_launch_template()
                .launch_template_id(&t.id)
                .send()
                .await;
            match deleted {
                Ok(_) => {}
                Err(e) if e.code() == Some("InvalidLaunchTemplateId.NotFound") => {}
                Err(e) if e.code() == Some("InvalidLaunchTemplateName.NotFoundException") => {}
                Err(e) => return Err(map(&format!("DeleteLaunchTemplate {group}"), e)),
            }
        }
        Ok(())
    }
}
