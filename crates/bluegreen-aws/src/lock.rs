//! [`Ec2Lock`]: the app's deployment lock, shared by every machine that deploys it
//! into one AWS account and region.
//!
//! The lock is an EC2 security group named `bluegreen-lock-<app>-<env>` (no rule, no
//! member): EC2 refuses a second group of that name in a VPC, which makes taking
//! the lock atomic. The holder and the lease's end are its tags. A lease that has
//! passed is taken over by deleting the group *by its id* and creating it again:
//! two takers cannot both win, and a holder whose group was taken over finds its id
//! gone when it renews. Releasing deletes the group.
//!
//! Leases are on the machines' wall clocks: keep them minutes long (the engine's
//! default is 60 s, renewed every 20 s), so that seconds of clock skew do not
//! matter.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::types::{Filter, ResourceType, Tag, TagSpecification};
use bluegreen_core::labels;
use bluegreen_core::{App, Error, Lock, LockHolder, Result};

use crate::config::AwsClients;
use crate::error::map;
use crate::tags::{ec2_labels, ec2_tags};

/// The tag that names the holder.
pub const HOLDER_TAG: &str = "bluegreen.lock-holder";
/// The tag that holds the lease's end, in seconds since the Unix epoch.
pub const EXPIRES_TAG: &str = "bluegreen.lock-expires";

/// The deployment lock of an app, as an EC2 security group.
///
/// ```no_run
/// # async fn example(clients: bluegreen_aws::AwsClients) {
/// use std::sync::Arc;
/// use bluegreen_aws::Ec2Lock;
/// // every machine that deploys the app uses the same lock
/// let lock = Arc::new(Ec2Lock::new(clients.clone()));
/// # let _ = lock;
/// # }
/// ```
///
/// Hand it to the engine with `Engine::with_lock`. IAM: `ec2:CreateSecurityGroup`,
/// `ec2:DeleteSecurityGroup`, `ec2:DescribeSecurityGroups` and `ec2:CreateTags`
/// (see `docs/aws.md`).
#[derive(Clone, Debug)]
pub struct Ec2Lock {
    clients: AwsClients,
    vpc_id: Option<String>,
}

/// The lock group found for an app.
struct Found {
    id: String,
    holder: Option<String>,
    expires: Option<u64>,
    ours: bool,
}

impl Ec2Lock {
    /// A lock in the account's default VPC.
    pub fn new(clients: AwsClients) -> Self {
        Ec2Lock {
            clients,
            vpc_id: None,
        }
    }

    /// Keeps the lock group in `vpc_id` instead of the default VPC.
    pub fn in_vpc(mut self, vpc_id: impl Into<String>) -> Self {
        self.vpc_id = Some(vpc_id.into());
        self
    }

    /// The lock group's name for `app`: `bluegreen-lock-<name>-<environment>`, which
    /// names one app (an environment has no `-`).
    pub fn group_name(app: &App) -> String {
        format!("bluegreen-lock-{}", app.slug())
    }

    async fn find(&self, app: &App) -> Result<Option<Found>> {
        let name = Self::group_name(app);
        let mut call = self
            .clients
            .ec2()
            .describe_security_groups()
            .filters(Filter::builder().name("group-name").values(&name).build());
        if let Some(vpc) = &self.vpc_id {
            call = call.filters(Filter::builder().name("vpc-id").values(vpc).build());
        }
        let out = call
            .send()
            .await
            .map_err(|e| map(&format!("DescribeSecurityGroups {name}"), e))?;
        Ok(out.security_groups().first().map(|g| {
            let labels = ec2_labels(g.tags());
            Found {
                id: g.group_id().unwrap_or_default().to_owned(),
                holder: labels.get(HOLDER_TAG).cloned(),
                expires: labels.get(EXPIRES_TAG).and_then(|v| v.parse().ok()),
                ours: labels::is_owned_by(&labels, app),
            }
        }))
    }

    /// Creates the lock group for `holder`; `false` when one exists already.
    async fn create(&self, app: &App, holder: &LockHolder, lease: Duration) -> Result<bool> {
        let name = Self::group_name(app);
        let mut tags = ec2_tags(&labels::app_labels(app));
        tags.extend(lease_tags(holder, lease));
        let mut call = self
            .clients
            .ec2()
            .create_security_group()
            .group_name(&name)
            .description(format!(
                "bluegreen deployment lock of {app}; no rule, no member"
            ))
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::SecurityGroup)
                    .set_tags(Some(tags))
                    .build(),
            );
        if let Some(vpc) = &self.vpc_id {
            call = call.vpc_id(vpc);
        }
        match call.send().await {
            Ok(_) => Ok(true),
            Err(e) if e.code() == Some("InvalidGroup.Duplicate") => Ok(false),
            Err(e) => Err(map(&format!("CreateSecurityGroup {name}"), e)),
        }
    }

    async fn delete(&self, id: &str) -> Result<()> {
        match self
            .clients
            .ec2()
            .delete_security_group()
            .group_id(id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match map(&format!("DeleteSecurityGroup {id}"), e) {
                Error::NotFound { .. } => Ok(()),
                other => Err(other),
            },
        }
    }

    async fn tag_lease(&self, id: &str, holder: &LockHolder, lease: Duration) -> Result<()> {
        self.clients
            .ec2()
            .create_tags()
            .resources(id)
            .set_tags(Some(lease_tags(holder, lease)))
            .send()
            .await
            .map_err(|e| map(&format!("CreateTags {id}"), e))?;
        Ok(())
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn lease_tags(holder: &LockHolder, lease: Duration) -> Vec<Tag> {
    let expires = now() + lease.as_secs().max(1);
    vec![
        Tag::builder()
            .key(HOLDER_TAG)
            .value(holder.to_string())
            .build(),
        Tag::builder()
            .key(EXPIRES_TAG)
            .value(expires.to_string())
            .build(),
    ]
}

fn locked(app: &App, holder: Option<String>) -> Error {
    Error::Locked {
        app: app.to_string(),
        holder: holder.unwrap_or_else(|| "an unknown holder".into()),
    }
}

fn not_ours(app: &App, found: &Found) -> Error {
    Error::conflict(format!(
        "security group {} ({}) is not bluegreen's lock of {app}; rename or remove it",
        Ec2Lock::group_name(app),
        found.id
    ))
}

#[async_trait]
impl Lock for Ec2Lock {
    async fn acquire(&self, app: &App, holder: &LockHolder, lease: Duration) -> Result<()> {
        // a second taker of a passed lease loses at the create, and is told who won
        for _ in 0..2 {
            if self.create(app, holder, lease).await? {
                return Ok(());
            }
            let Some(found) = self.find(app).await? else {
                // released between our create and our look: try again
                continue;
            };
            if !found.ours {
                return Err(not_ours(app, &found));
            }
            if found.holder.as_deref() == Some(holder.to_string().as_str()) {
                return self.tag_lease(&found.id, holder, lease).await;
            }
            if found.expires.is_some_and(|t| t > now()) {
                return Err(locked(app, found.holder));
            }
            tracing::warn!(%app, holder = ?found.holder, "taking over a lock whose lease has passed");
            self.delete(&found.id).await?;
        }
        match self.find(app).await? {
            Some(found) => Err(locked(app, found.holder)),
            None => Err(locked(app, None)),
        }
    }

    async fn renew(&self, app: &App, holder: &LockHolder, lease: Duration) -> Result<()> {
        let found = self.find(app).await?;
        match found {
            Some(found)
                if found.ours && found.holder.as_deref() == Some(holder.to_string().as_str()) =>
            {
                // taken over between the look and the tag: the id is gone
                self.tag_lease(&found.id, holder, lease)
                    .await
                    .map_err(|e| match e {
                        Error::NotFound { .. } => locked(app, None),
                        other => other,
                    })
            }
            Some(found) => Err(locked(app, found.holder)),
            None => Err(locked(app, None)),
        }
    }

    async fn release(&self, app: &App, holder: &LockHolder) -> Result<()> {
        match self.find(app).await? {
            Some(found)
                if found.ours && found.holder.as_deref() == Some(holder.to_string().as_str()) =>
            {
                self.delete(&found.id).await
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bluegreen_testkit::names::{assert_distinct, near_collisions};

    #[test]
    fn every_app_has_a_lock_group_of_its_own() {
        assert_distinct("lock group", &near_collisions(), Ec2Lock::group_name);
        let web = App::new("web", "production").unwrap();
        assert_eq!(Ec2Lock::group_name(&web), "bluegreen-lock-web-production");
    }
}
