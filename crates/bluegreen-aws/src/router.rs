//! [`ElbRouter`]: a target group per group behind one listener of an Application
//! Load Balancer; the listener's default action is the route table.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_elasticloadbalancingv2::types::{
    Action, ActionTypeEnum, FixedResponseActionConfig, ForwardActionConfig, ProtocolEnum,
    TargetDescription, TargetGroupAttribute, TargetGroupTuple, TargetHealthStateEnum,
    TargetTypeEnum,
};
use bluegreen_core::labels;
use bluegreen_core::{
    App, Attachment, Error, GroupId, Instance, Result, RouteTable, Router, RouterCapabilities,
    Serving,
};
use sha2::{Digest, Sha256};

use crate::config::AwsClients;
use crate::error::map;
use crate::labels::{elb_labels, elb_tags};

/// Who registers a group's instances in its target group.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TargetRegistration {
    /// The router registers the instances `attach` is given, and deregisters the
    /// others (for [`crate::Ec2Fleet`]). Default.
    #[default]
    Router,
    /// The group's Auto Scaling group registers its own instances, a replacement
    /// included (for [`crate::AsgFleet`]): `attach` attaches the target group to the
    /// Auto Scaling group named after the group (`AttachLoadBalancerTargetGroups`,
    /// once) and registers nothing itself; `detach` detaches it
    /// (`DetachLoadBalancerTargetGroups`) before it deletes the target group.
    AutoScalingGroup,
}

/// Where [`ElbRouter`] routes.
#[non_exhaustive]
#[derive(Clone, Debug)]
pub struct ElbRouterOptions {
    /// The listener whose default action carries the route table.
    pub listener_arn: String,
    /// The VPC of the target groups.
    pub vpc_id: String,
    /// The port targets serve on. Default 80.
    pub port: u16,
    /// The health check path. Default `/health`.
    pub health_check_path: String,
    /// How long a deregistered target drains. Default 30 s.
    pub deregistration_delay: Duration,
    /// Who registers a group's instances. Default [`TargetRegistration::Router`].
    pub registration: TargetRegistration,
}

impl ElbRouterOptions {
    /// Options for `listener_arn` in `vpc_id`.
    pub fn new(listener_arn: impl Into<String>, vpc_id: impl Into<String>) -> Self {
        ElbRouterOptions {
            listener_arn: listener_arn.into(),
            vpc_id: vpc_id.into(),
            port: 80,
            health_check_path: "/health".into(),
            deregistration_delay: Duration::from_secs(30),
            registration: TargetRegistration::Router,
        }
    }

    /// Sets the port.
    pub fn with_port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Sets who registers a group's instances.
    pub fn with_registration(mut self, registration: TargetRegistration) -> Self {
        self.registration = registration;
        self
    }

    /// Sets the deregistration delay (the drain).
    pub fn with_deregistration_delay(mut self, delay: Duration) -> Self {
        self.deregistration_delay = delay;
        self
    }
}

/// Routes through an Application Load Balancer.
///
/// Each group gets a target group (named after the group, at most 32 characters,
/// tagged with bluegreen's labels) with the app's health check and the
/// deregistration delay as its drain. `set_routes` replaces the listener's default
/// action in one `ModifyListener`: a weighted forward, or a fixed 503 response for
/// the empty table. `serving` reads target health. Creating a target group that
/// exists adopts it, when it carries our tags.
///
/// Who registers the targets is [`ElbRouterOptions::registration`]: the router (for
/// bare instances), or the group's Auto Scaling group, to which `attach` attaches the
/// target group (for [`crate::AsgFleet`]: then `attach` reads no instance it is given).
#[derive(Clone, Debug)]
pub struct ElbRouter {
    clients: AwsClients,
    options: ElbRouterOptions,
}

/// The target group name of a group: its id when it fits in 32 characters, else its
/// first 23 characters, `-` and 8 hex digits of the SHA-256 of the whole id. Group
/// ids name one group of one app; a cut name never ends like an id (`-v007`: `v` is
/// no hex digit), so it is never a whole id.
pub fn target_group_name(group: &GroupId) -> String {
    let id = group.as_str();
    if id.len() <= 32 {
        return id.to_owned();
    }
    let hash: String = Sha256::digest(id)
        .iter()
        .take(4)
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{}-{hash}", id[..23].trim_end_matches('-'))
}

impl ElbRouter {
    /// A router.
    pub fn new(clients: AwsClients, options: ElbRouterOptions) -> Self {
        ElbRouter { clients, options }
    }

    /// The target group of `group`, when it exists and is ours: its ARN.
    async fn find(&self, app: &App, group: &GroupId) -> Result<Option<String>> {
        let out = self
            .clients
            .elb
            .describe_target_groups()
            .names(target_group_name(group))
            .send()
            .await;
        let out = match out {
            Ok(o) => o,
            Err(e) => {
                let e = map("DescribeTargetGroups", e);
                return if e.kind() == bluegreen_core::ErrorKind::NotFound {
                    Ok(None)
                } else {
                    Err(e)
                };
            }
        };
        let Some(arn) = out
            .target_groups()
            .first()
            .and_then(|t| t.target_group_arn())
        else {
            return Ok(None);
        };
        let tags = self.tags_of(&[arn.to_owned()]).await?;
        let owned = tags.get(arn).is_some_and(|t| {
            labels::is_owned_by(t, app)
                && t.get(labels::GROUP).map(String::as_str) == Some(group.as_str())
        });
        if !owned {
            return Err(Error::conflict(format!(
                "target group {} exists without bluegreen's tags for {group}",
                target_group_name(group)
            )));
        }
        Ok(Some(arn.to_owned()))
    }

    async fn tags_of(&self, arns: &[String]) -> Result<BTreeMap<String, labels::Labels>> {
        let mut out = BTreeMap::new();
        for chunk in arns.chunks(20) {
            let tags = self
                .clients
                .elb
                .describe_tags()
                .set_resource_arns(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(|e| map("DescribeTags", e))?;
            for d in tags.tag_descriptions() {
                if let Some(arn) = d.resource_arn() {
                    out.insert(arn.to_owned(), elb_labels(d.tags()));
                }
            }
        }
        Ok(out)
    }

    /// The listener's default action as (target group ARN, weight).
    async fn forwards(&self) -> Result<Vec<(String, u8)>> {
        let out = self
            .clients
            .elb
            .describe_listeners()
            .listener_arns(&self.options.listener_arn)
            .send()
            .await
            .map_err(|e| map("DescribeListeners", e))?;
        let listener = out
            .listeners()
            .first()
            .ok_or_else(|| Error::not_found(format!("listener {}", self.options.listener_arn)))?;
        let mut forwards = Vec::new();
        for action in listener.default_actions() {
            if action.r#type() != Some(&ActionTypeEnum::Forward) {
                continue;
            }
            match action.forward_config().map(|f| f.target_groups()) {
                Some(groups) if !groups.is_empty() => {
                    let total: i32 = groups.iter().map(|g| g.weight().unwrap_or(1)).sum();
                    for g in groups {
                        let w = g.weight().unwrap_or(1);
                        if let (Some(arn), true) = (g.target_group_arn(), w > 0) {
                            let pct = if total == 0 {
                                0
                            } else {
                                (w * 100 + total / 2) / total
                            };
                            forwards.push((arn.to_owned(), pct as u8));
                        }
                    }
                }
                _ => {
                    if let Some(arn) = action.target_group_arn() {
                        forwards.push((arn.to_owned(), 100));
                    }
                }
            }
        }
        Ok(forwards)
    }
}

impl ElbRouter {
    /// The Auto Scaling group named `group` and its target groups, when it exists;
    /// one without bluegreen's tags for `group` is [`Error::Conflict`].
    async fn asg_target_groups(&self, app: &App, group: &GroupId) -> Result<Option<Vec<String>>> {
        let out = self
            .clients
            .autoscaling
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(group.as_str())
            .send()
            .await
            .map_err(|e| map(&format!("DescribeAutoScalingGroups {group}"), e))?;
        let Some(asg) = out
            .auto_scaling_groups()
            .iter()
            .find(|g| g.auto_scaling_group_name() == Some(group.as_str()))
        else {
            return Ok(None);
        };
        let tags: labels::Labels = asg
            .tags()
            .iter()
            .filter_map(|t| Some((t.key()?.to_owned(), t.value()?.to_owned())))
            .collect();
        if !labels::is_owned_by(&tags, app)
            || tags.get(labels::GROUP).map(String::as_str) != Some(group.as_str())
        {
            return Err(Error::conflict(format!(
                "Auto Scaling group {group} exists without bluegreen's tags for {app}"
            )));
        }
        Ok(Some(asg.target_group_arns().to_vec()))
    }

    async fn attach_to_asg(&self, group: &GroupId, attached: &[String], arn: &str) -> Result<()> {
        if attached.iter().any(|a| a == arn) {
            return Ok(());
        }
        self.clients
            .autoscaling
            .attach_load_balancer_target_groups()
            .auto_scaling_group_name(group.as_str())
            .target_group_arns(arn)
            .send()
            .await
            .map_err(|e| map(&format!("AttachLoadBalancerTargetGroups {group}"), e))?;
        Ok(())
    }

    async fn detach_from_asg(&self, app: &App, group: &GroupId, arn: &str) -> Result<()> {
        let attached = match self.asg_target_groups(app, group).await {
            Ok(Some(a)) => a,
            // no Auto Scaling group (destroyed first), or not ours: nothing of ours
            // to detach from
            Ok(None) => return Ok(()),
            Err(e) if e.kind() == bluegreen_core::ErrorKind::Conflict => return Ok(()),
            Err(e) => return Err(e),
        };
        if !attached.iter().any(|a| a == arn) {
            return Ok(());
        }
        self.clients
            .autoscaling
            .detach_load_balancer_target_groups()
            .auto_scaling_group_name(group.as_str())
            .target_group_arns(arn)
            .send()
            .await
            .map_err(|e| map(&format!("DetachLoadBalancerTargetGroups {group}"), e))?;
        Ok(())
    }
}

#[async_trait]
impl Router for ElbRouter {
    fn capabilities(&self) -> RouterCapabilities {
        RouterCapabilities::default().with_weighted_routing(true)
    }

    async fn attach(
        &self,
        app: &App,
        group: &GroupId,
        instances: &[Instance],
    ) -> Result<Attachment> {
        // the Auto Scaling group first: a missing or foreign one gets no target group
        let asg_attached = match self.options.registration {
            TargetRegistration::AutoScalingGroup => Some(
                self.asg_target_groups(app, group)
                    .await?
                    .ok_or_else(|| Error::not_found(format!("Auto Scaling group {group}")))?,
            ),
            TargetRegistration::Router => None,
        };
        let arn = match self.find(app, group).await? {
            Some(arn) => arn,
            None => {
                let mut tags = labels::app_labels(app);
                tags.insert(labels::GROUP.into(), group.to_string());
                let created = self
                    .clients
                    .elb
                    .create_target_group()
                    .name(target_group_name(group))
                    .protocol(ProtocolEnum::Http)
                    .port(i32::from(self.options.port))
                    .vpc_id(&self.options.vpc_id)
                    .target_type(TargetTypeEnum::Instance)
                    .health_check_path(&self.options.health_check_path)
                    .set_tags(Some(elb_tags(&tags)))
                    .send()
                    .await;
                match created {
                    Ok(out) => out
                        .target_groups()
                        .first()
                        .and_then(|t| t.target_group_arn())
                        .map(str::to_owned)
                        .ok_or_else(|| {
                            Error::provider(
                                "aws",
                                "CreateTargetGroup returned no target group",
                                true,
                            )
                        })?,
                    // created meanwhile (or an emulator that is not idempotent): adopt it
                    Err(e) => {
                        let e = map("CreateTargetGroup", e);
                        if e.kind() != bluegreen_core::ErrorKind::Conflict {
                            return Err(e);
                        }
                        self.find(app, group).await?.ok_or(e)?
                    }
                }
            }
        };
        self.clients
            .elb
            .modify_target_group_attributes()
            .target_group_arn(&arn)
            .attributes(
                TargetGroupAttribute::builder()
                    .key("deregistration_delay.timeout_seconds")
                    .value(self.options.deregistration_delay.as_secs().to_string())
                    .build(),
            )
            .send()
            .await
            .map_err(|e| map("ModifyTargetGroupAttributes", e))?;
        if let Some(attached) = asg_attached {
            self.attach_to_asg(group, &attached, &arn).await?;
            return Ok(Attachment::default());
        }
        // each target on the port its instance serves on (its address), else the router's
        let ports: BTreeMap<String, i32> = instances
            .iter()
            .map(|i| {
                let port = i
                    .address
                    .as_deref()
                    .and_then(|a| a.rsplit_once(':'))
                    .and_then(|(_, p)| p.parse::<u16>().ok())
                    .unwrap_or(self.options.port);
                (i.id.to_string(), i32::from(port))
            })
            .collect();
        let wanted: Vec<String> = instances.iter().map(|i| i.id.to_string()).collect();
        let health = self
            .clients
            .elb
            .describe_target_health()
            .target_group_arn(&arn)
            .send()
            .await
            .map_err(|e| map("DescribeTargetHealth", e))?;
        let present: Vec<String> = health
            .target_health_descriptions()
            .iter()
            .filter_map(|d| d.target().and_then(|t| t.id()).map(str::to_owned))
            .collect();
        let target = |id: &String| {
            let port = ports
                .get(id)
                .copied()
                .unwrap_or(i32::from(self.options.port));
            TargetDescription::builder().id(id).port(port).build()
        };
        let stale: Vec<String> = present
            .iter()
            .filter(|p| !wanted.contains(p))
            .cloned()
            .collect();
        for chunk in stale.chunks(crate::fleet::BATCH) {
            let targets: Vec<TargetDescription> = chunk.iter().map(target).collect();
            self.clients
                .elb
                .deregister_targets()
                .target_group_arn(&arn)
                .set_targets(Some(targets))
                .send()
                .await
                .map_err(|e| map("DeregisterTargets", e))?;
        }
        let missing: Vec<String> = wanted
            .iter()
            .filter(|w| !present.contains(w))
            .cloned()
            .collect();
        for chunk in missing.chunks(crate::fleet::BATCH) {
            let targets: Vec<TargetDescription> = chunk.iter().map(target).collect();
            self.clients
                .elb
                .register_targets()
                .target_group_arn(&arn)
                .set_targets(Some(targets))
                .send()
                .await
                .map_err(|e| map("RegisterTargets", e))?;
        }
        Ok(Attachment::default())
    }

    async fn detach(&self, app: &App, group: &GroupId) -> Result<()> {
        let Some(arn) = self.find(app, group).await? else {
            return Ok(());
        };
        if let Some((_, w)) = self.forwards().await?.into_iter().find(|(a, _)| *a == arn) {
            return Err(Error::conflict(format!(
                "{group} still has {w}% of {app}'s traffic"
            )));
        }
        if self.options.registration == TargetRegistration::AutoScalingGroup {
            self.detach_from_asg(app, group, &arn).await?;
        }
        self.clients
            .elb
            .delete_target_group()
            .target_group_arn(arn)
            .send()
            .await
            .map_err(|e| map("DeleteTargetGroup", e))?;
        Ok(())
    }

    async fn routes(&self, app: &App) -> Result<RouteTable> {
        let forwards = self.forwards().await?;
        if forwards.is_empty() {
            return Ok(RouteTable::empty());
        }
        let arns: Vec<String> = forwards.iter().map(|(a, _)| a.clone()).collect();
        let tags = self.tags_of(&arns).await?;
        let mut ours = Vec::new();
        for (arn, weight) in forwards {
            match tags
                .get(&arn)
                .filter(|t| labels::is_owned_by(t, app))
                .and_then(|t| t.get(labels::GROUP))
            {
                Some(g) => ours.push((GroupId::new(g.as_str()), weight)),
                None => {
                    return Err(Error::conflict(format!(
                        "the listener forwards to {arn}, which is not a target group of {app}"
                    )))
                }
            }
        }
        RouteTable::weighted(ours)
    }

    async fn set_routes(&self, app: &App, table: &RouteTable) -> Result<()> {
        table.validate()?;
        let mut tuples = Vec::new();
        for (group, weight) in table.iter() {
            let arn = self
                .find(app, group)
                .await?
                .ok_or_else(|| Error::not_found(format!("group {group} at the load balancer")))?;
            tuples.push(
                TargetGroupTuple::builder()
                    .target_group_arn(arn)
                    .weight(i32::from(weight))
                    .build(),
            );
        }
        let action = if tuples.is_empty() {
            Action::builder()
                .r#type(ActionTypeEnum::FixedResponse)
                .fixed_response_config(
                    FixedResponseActionConfig::builder()
                        .status_code("503")
                        .content_type("text/plain")
                        .message_body(format!("{app} has no group with traffic"))
                        .build(),
                )
                .build()
        } else {
            Action::builder()
                .r#type(ActionTypeEnum::Forward)
                .forward_config(
                    ForwardActionConfig::builder()
                        .set_target_groups(Some(tuples))
                        .build(),
                )
                .build()
        };
        self.clients
            .elb
            .modify_listener()
            .listener_arn(&self.options.listener_arn)
            .default_actions(action)
            .send()
            .await
            .map_err(|e| map("ModifyListener", e))?;
        Ok(())
    }

    async fn serving(&self, app: &App, group: &GroupId) -> Result<Serving> {
        let arn = self
            .find(app, group)
            .await?
            .ok_or_else(|| Error::not_found(format!("group {group} at the load balancer")))?;
        let health = self
            .clients
            .elb
            .describe_target_health()
            .target_group_arn(arn)
            .send()
            .await
            .map_err(|e| map("DescribeTargetHealth", e))?;
        // a draining target is leaving (deregistered: Auto Scaling scaled the group
        // in or replaced it) and gets no new request: not a member any more
        let members: Vec<_> = health
            .target_health_descriptions()
            .iter()
            .map(|d| d.target_health().and_then(|h| h.state()))
            .filter(|s| *s != Some(&TargetHealthStateEnum::Draining))
            .collect();
        let healthy = members
            .iter()
            .filter(|s| **s == Some(&TargetHealthStateEnum::Healthy))
            .count();
        Ok(Serving::new(healthy, members.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bluegreen_core::{Generation, Group};
    use bluegreen_testkit::names::near_collisions;

    fn check(name: &str) {
        assert!(name.len() <= 32, "{name} is longer than 32");
        assert!(
            name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !name.starts_with('-')
                && !name.ends_with('-'),
            "{name} is no target group name"
        );
    }

    #[test]
    fn every_group_has_a_target_group_of_its_own() {
        let mut seen = BTreeMap::new();
        for app in near_collisions() {
            for g in [0, 1, 7, 999, 1000, 99_999, u32::MAX] {
                let id = Group::id_for(&app, Generation(g));
                let name = target_group_name(&id);
                check(&name);
                if let Some(first) = seen.insert(name.clone(), id.clone()) {
                    panic!("{first} and {id} are both {name}");
                }
            }
        }
        let web = App::new("web", "production").unwrap();
        let id = Group::id_for(&web, Generation(7));
        assert_eq!(target_group_name(&id), "web-production-v007");
    }

    /// Many ids past 32 characters with the same first 23: distinct hashes, and a
    /// cut name never takes the shape of an id.
    #[test]
    fn a_cut_name_is_never_a_whole_id() {
        let mut seen = BTreeMap::new();
        for i in 0..3000 {
            let app = App::new("inventory-service", format!("stagingeurope{i}")).unwrap();
            let id = Group::id_for(&app, Generation(1));
            let name = target_group_name(&id);
            check(&name);
            let (head, hash) = name.rsplit_once('-').unwrap();
            assert_eq!(head, "inventory-service-stagi", "{name}");
            assert_eq!(hash.len(), 8);
            assert!(!hash.starts_with('v'), "{name} ends like a group id");
            if let Some(first) = seen.insert(name.clone(), id.clone()) {
                panic!("{first} and {id} are both {name}");
            }
        }
    }
}
