//! [`Ec2Lock`]: the app's deployment lock, shared by every machine that deploys it
//! into one AWS account and region.
//!
//! The lock is an EC2 security group named `bluegreen-lock-<app>-<env>` (no rule, no
//! member): EC2 refuses a second group of that name in a VPC, which makes taking
//! the lock atomic. The holder, the lease's end and the fencing token are its tags.
//! Releasing keeps the group, with an empty holder and the last token, so that the
//! next holder's token is greater. A free group, or one whose lease has passed, is
//! taken by deleting it *by its id* and creating it again: two takers cannot both
//! win, and a holder whose group was taken over finds another id or another token
//! when it renews.
//!
//! A new token is the greater of the previous token plus one and the Unix time in
//! milliseconds: when no previous token can be read (the first lock of the app, a
//! group deleted by hand, or a taker that finds the name free while another one
//! replaces the group), the clock keeps tokens growing, as long as the machines'
//! clocks agree better than the time between two acquisitions (synchronised, far
//! closer than a lease lasts).
//!
//! Leases are on the machines' wall clocks: keep them minutes long (the engine's
//! default is 60 s, renewed every 20 s), so that seconds of clock skew do not
//! matter.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::types::{Filter, ResourceType, Tag, TagSpecification};
use bluegreen_core::labels;
use bluegreen_core::{App, Error, FencingToken, Lock, LockHolder, Result};

use crate::config::AwsClients;
use crate::error::map;
use crate::labels::{ec2_labels, ec2_tags};

/// The tag that names the holder; empty once the lock is released.
pub const HOLDER_TAG: &str = "bluegreen.lock-holder";
/// The tag that holds the lease's end, in seconds since the Unix epoch (rounded up).
pub const EXPIRES_TAG: &str = "bluegreen.lock-expires";
/// The tag that holds the last fencing token given for the app.
pub const TOKEN_TAG: &str = "bluegreen.lock-token";

/// How many times an acquisition looks and tries again when another machine changed
/// the lock group between its look and its change.
const ATTEMPTS: usize = 3;

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
/// Hand it to the engine with `Engine::with_lock`. It excludes every machine that
/// reaches the account and uses the same VPC. IAM: `ec2:CreateSecurityGroup`,
/// `ec2:DeleteSecurityGroup`, `ec2:DescribeSecurityGroups` and `ec2:CreateTags` (see
/// `docs/aws.md`).
///
/// Once a holder's lease has passed, its renewal is refused ([`Error::Locked`]) and
/// taking the lock again gives a new token, even when nobody took the lock since:
/// another machine may be taking it over at that moment.
#[derive(Clone, Debug)]
pub struct Ec2Lock {
    clients: AwsClients,
    vpc_id: Option<String>,
}

/// The lock group found for an app.
struct Found {
    id: String,
    /// The holder's name; empty or absent when the lock is free.
    holder: Option<String>,
    expires: Option<u64>,
    /// The last token given (0 for a group written before tokens).
    token: u64,
    ours: bool,
}

impl Found {
    fn held_by(&self, holder: &LockHolder) -> bool {
        self.holder.as_deref() == Some(holder.to_string().as_str())
    }

    fn free(&self) -> bool {
        self.holder.as_deref().is_none_or(str::is_empty)
    }

    /// Whether the holder's lease has not passed yet.
    fn live(&self) -> bool {
        !self.free()
            && self
                .expires
                .is_some_and(|t| u128::from(t) * 1000 > now_millis())
    }
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
                token: labels
                    .get(TOKEN_TAG)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
                ours: labels::is_owned_by(&labels, app),
            }
        }))
    }

    /// Creates the lock group for `holder` with `token`; `false` when one exists
    /// already.
    async fn create(
        &self,
        app: &App,
        holder: &LockHolder,
        token: FencingToken,
        lease: Duration,
    ) -> Result<bool> {
        let name = Self::group_name(app);
        let mut tags = ec2_tags(&labels::app_labels(app));
        tags.extend(lease_tags(holder, lease));
        tags.push(tag(TOKEN_TAG, token.to_string()));
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

    async fn tag(&self, id: &str, tags: Vec<Tag>) -> Result<()> {
        self.clients
            .ec2()
            .create_tags()
            .resources(id)
            .set_tags(Some(tags))
            .send()
            .await
            .map_err(|e| map(&format!("CreateTags {id}"), e))?;
        Ok(())
    }

    /// Extends the lease of `found`, held by `holder`, then checks that the group is
    /// still that one: [`Error::Locked`] when it was taken over meanwhile.
    async fn extend(
        &self,
        app: &App,
        found: &Found,
        holder: &LockHolder,
        lease: Duration,
    ) -> Result<()> {
        match self.tag(&found.id, lease_tags(holder, lease)).await {
            Ok(()) => {}
            Err(Error::NotFound { .. }) => return Err(lost(app, found.token)),
            Err(e) => return Err(e),
        }
        match self.find(app).await? {
            Some(now) if now.id == found.id && now.held_by(holder) && now.token == found.token => {
                Ok(())
            }
            Some(now) if !now.free() => Err(locked(app, now.holder)),
            _ => Err(lost(app, found.token)),
        }
    }
}

fn now_millis() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default()
}

/// The token of a new holder after `previous`: greater than it, and at least the
/// Unix time in milliseconds.
fn next_token(previous: u64) -> FencingToken {
    let clock = u64::try_from(now_millis()).unwrap_or(u64::MAX);
    FencingToken(previous.saturating_add(1).max(clock))
}

fn tag(key: &str, value: String) -> Tag {
    Tag::builder().key(key).value(value).build()
}

fn lease_tags(holder: &LockHolder, lease: Duration) -> Vec<Tag> {
    // rounded up to whole seconds: a lease never ends before it was asked to
    let expires = (now_millis() + lease.as_millis().max(1)).div_ceil(1000);
    vec![
        tag(HOLDER_TAG, holder.to_string()),
        tag(EXPIRES_TAG, expires.to_string()),
    ]
}

fn free_tags() -> Vec<Tag> {
    vec![tag(HOLDER_TAG, String::new()), tag(EXPIRES_TAG, "0".into())]
}

fn locked(app: &App, holder: Option<String>) -> Error {
    Error::Locked {
        app: app.to_string(),
        holder: holder
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "an unknown holder".into()),
    }
}

/// [`Error::Locked`] for a holder whose lock is gone, or free now.
fn lost(app: &App, token: u64) -> Error {
    Error::Locked {
        app: app.to_string(),
        holder: format!("none now (the lock was lost: token {token} is stale)"),
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
    async fn acquire(
        &self,
        app: &App,
        holder: &LockHolder,
        lease: Duration,
    ) -> Result<FencingToken> {
        // of two takers, one loses at the create; it looks again and is told who won
        for _ in 0..ATTEMPTS {
            let previous = match self.find(app).await? {
                None => 0,
                Some(found) if !found.ours => return Err(not_ours(app, &found)),
                Some(found) if found.held_by(holder) && found.live() => {
                    // re-entry
                    return self
                        .extend(app, &found, holder, lease)
                        .await
                        .map(|()| FencingToken(found.token));
                }
                Some(found) if found.live() => return Err(locked(app, found.holder)),
                Some(found) => {
                    if !found.free() {
                        tracing::warn!(%app, holder = ?found.holder, "taking over a lock whose lease has passed");
                    }
                    self.delete(&found.id).await?;
                    found.token
                }
            };
            let token = next_token(previous);
            if self.create(app, holder, token, lease).await? {
                return Ok(token);
            }
        }
        match self.find(app).await? {
            Some(found) => Err(locked(app, found.holder)),
            None => Err(locked(app, None)),
        }
    }

    async fn renew(
        &self,
        app: &App,
        holder: &LockHolder,
        token: FencingToken,
        lease: Duration,
    ) -> Result<()> {
        let Some(found) = self.find(app).await?.filter(|f| f.ours && !f.free()) else {
            // a renewal never takes a free lock
            return Err(lost(app, token.0));
        };
        if !found.held_by(holder) {
            return Err(locked(app, found.holder));
        }
        if found.token != token.0 {
            return Err(lost(app, token.0));
        }
        if !found.live() {
            return Err(Error::Locked {
                app: app.to_string(),
                holder: format!(
                    "none known (the lease of token {token} passed before its renewal)"
                ),
            });
        }
        self.extend(app, &found, holder, lease).await
    }

    async fn release(&self, app: &App, holder: &LockHolder, token: FencingToken) -> Result<()> {
        match self.find(app).await? {
            Some(found) if found.ours && found.held_by(holder) && found.token == token.0 => {
                // the group stays, free, with its token; taken over meanwhile, it is gone
                match self.tag(&found.id, free_tags()).await {
                    Ok(()) | Err(Error::NotFound { .. }) => Ok(()),
                    Err(e) => Err(e),
                }
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
