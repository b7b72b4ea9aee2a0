//! [`DomainRouter`]: custom domains moved between group apps.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use bluegreen_core::{
    App, Attachment, Error, ErrorKind, Fleet, GroupId, Instance, Result, RouteTable, Router,
    RouterCapabilities, Serving,
};
use serde_json::json;

use crate::api::{self, seg, Domain};
use crate::fleet::{AppFleet, GroupApp};

/// Where a custom domain's DNS must point after it moved: each app gives a domain
/// its own DNS target (`cname`), so moving a domain means changing its DNS record.
///
/// A closure `Fn(&App, &str, Option<&str>) -> Result<()>` is a hook.
#[async_trait]
pub trait DnsHook: Send + Sync {
    /// Points `hostname` at `target` (the platform's DNS target for the app that now
    /// holds it), or removes its record when `target` is `None` (no app holds it).
    ///
    /// # Behavior
    /// Idempotent: it may be called again with the same target.
    async fn point(&self, app: &App, hostname: &str, target: Option<&str>) -> Result<()>;
}

#[async_trait]
impl<F> DnsHook for F
where
    F: Fn(&App, &str, Option<&str>) -> Result<()> + Send + Sync,
{
    async fn point(&self, app: &App, hostname: &str, target: Option<&str>) -> Result<()> {
        self(app, hostname, target)
    }
}

/// A hook that changes nothing: for domains whose DNS points at a target that
/// follows the app (or for tests).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoDns;

#[async_trait]
impl DnsHook for NoDns {
    async fn point(&self, app: &App, hostname: &str, target: Option<&str>) -> Result<()> {
        tracing::info!(%app, hostname, ?target, "DNS target changed; no DNS hook is set");
        Ok(())
    }
}

/// Routes an app's custom domains to one group app of an [`AppFleet`].
///
/// The route table is which group app holds the app's domains (read back from
/// `GET /apps/{app}/domains`; the first domain decides when a move was
/// interrupted). A switch deletes each domain from the app that holds it and adds
/// it to the new group's app, then calls the [`DnsHook`] with the new DNS target.
/// There are no weights ([`RouterCapabilities::weighted_routing`] is false): the engine
/// switches in one step. A domain is without an app between its delete and its add,
/// so a switch is not free of errors for requests in that instant.
///
/// A group is attached when its app is out of maintenance mode: [`Router::attach`]
/// turns maintenance off (the app then serves at its own web URL, the preview
/// address), [`Router::detach`] turns it on. [`Router::serving`] counts the group's
/// dynos that are up.
#[derive(Clone)]
pub struct DomainRouter {
    pub(crate) fleet: AppFleet,
    domains: BTreeMap<App, Vec<String>>,
    dns: Arc<dyn DnsHook>,
}

impl std::fmt::Debug for DomainRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DomainRouter")
            .field("fleet", &self.fleet)
            .field("domains", &self.domains)
            .finish()
    }
}

impl DomainRouter {
    /// A router of `fleet`'s group apps, without domains yet and with [`NoDns`].
    pub fn new(fleet: AppFleet) -> Self {
        DomainRouter {
            fleet,
            domains: BTreeMap::new(),
            dns: Arc::new(NoDns),
        }
    }

    /// Routes `app` through `hostnames` (`www.example.com`); the first one decides
    /// the route table.
    pub fn with_domains<S: Into<String>>(
        mut self,
        app: &App,
        hostnames: impl IntoIterator<Item = S>,
    ) -> Self {
        self.domains
            .insert(app.clone(), hostnames.into_iter().map(Into::into).collect());
        self
    }

    /// Calls `hook` after each move.
    pub fn with_dns(mut self, hook: impl DnsHook + 'static) -> Self {
        self.dns = Arc::new(hook);
        self
    }

    fn hostnames(&self, app: &App) -> &[String] {
        self.domains.get(app).map(Vec::as_slice).unwrap_or(&[])
    }

    async fn attached(&self, app: &App, group: &GroupId) -> Result<GroupApp> {
        match self.fleet.group_app(app, group).await? {
            Some(found) if !found.info.maintenance => Ok(found),
            _ => Err(Error::not_found(format!("attached group {group}"))),
        }
    }

    /// Which group app holds each of the app's domains.
    async fn holders(&self, app: &App) -> Result<BTreeMap<String, (GroupId, String)>> {
        let wanted = self.hostnames(app);
        let mut out = BTreeMap::new();
        if wanted.is_empty() {
            return Ok(out);
        }
        for group in self.fleet.groups(app).await? {
            let Some(name) = self.fleet.naming().group_app(app, &group.id) else {
                continue;
            };
            let domains: Vec<Domain> = match self
                .fleet
                .client()
                .list(&format!("/apps/{}/domains", seg(&name)))
                .await
            {
                Ok(d) => d,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for d in domains {
                if wanted.contains(&d.hostname) {
                    out.insert(d.hostname, (group.id.clone(), name.clone()));
                }
            }
        }
        Ok(out)
    }

    async fn remove_domain(&self, holder: &str, hostname: &str) -> Result<()> {
        match self
            .fleet
            .client()
            .delete(&format!("/apps/{}/domains/{}", seg(holder), seg(hostname)))
            .await
        {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl Router for DomainRouter {
    fn capabilities(&self) -> RouterCapabilities {
        RouterCapabilities::default().with_preview(true)
    }

    async fn attach(
        &self,
        app: &App,
        group: &GroupId,
        _instances: &[Instance],
    ) -> Result<Attachment> {
        let found = self
            .fleet
            .group_app(app, group)
            .await?
            .ok_or_else(|| Error::not_found(format!("group {group}")))?;
        if found.info.maintenance {
            api::set_maintenance(self.fleet.client(), &found.name, false).await?;
        }
        Ok(match found.info.web_url {
            Some(url) => Attachment::with_preview(url),
            None => Attachment::default(),
        })
    }

    async fn detach(&self, app: &App, group: &GroupId) -> Result<()> {
        let Some(found) = self.fleet.group_app(app, group).await? else {
            return Ok(());
        };
        if let Some((hostname, _)) = self
            .holders(app)
            .await?
            .into_iter()
            .find(|(_, (g, _))| g == group)
        {
            return Err(Error::conflict(format!(
                "{group} still holds {hostname}: move the traffic first"
            )));
        }
        if !found.info.maintenance {
            api::set_maintenance(self.fleet.client(), &found.name, true).await?;
        }
        Ok(())
    }

    async fn routes(&self, app: &App) -> Result<RouteTable> {
        let Some(primary) = self.hostnames(app).first() else {
            return Ok(RouteTable::empty());
        };
        Ok(match self.holders(app).await?.remove(primary) {
            Some((group, _)) => RouteTable::single(group),
            None => RouteTable::empty(),
        })
    }

    async fn set_routes(&self, app: &App, table: &RouteTable) -> Result<()> {
        table.validate()?;
        let groups: Vec<&GroupId> = table.groups().collect();
        if groups.len() > 1 {
            return Err(Error::not_supported(
                "weighted routes: a domain is held by one app at a time",
            ));
        }
        let hostnames = self.hostnames(app).to_vec();
        if hostnames.is_empty() && !groups.is_empty() {
            return Err(Error::invalid(
                "domains",
                format!("no custom domain is set for {app}"),
            ));
        }
        let target = match groups.first() {
            Some(g) => Some(self.attached(app, g).await?),
            None => None,
        };
        let holders = self.holders(app).await?;
        for hostname in &hostnames {
            let holder = holders.get(hostname);
            match &target {
                Some(to) => {
                    if holder.map(|(_, name)| name) == Some(&to.name) {
                        continue;
                    }
                    if let Some((_, from)) = holder {
                        self.remove_domain(from, hostname).await?;
                    }
                    let added: Result<Domain> = self
                        .fleet
                        .client()
                        .post(
                            &format!("/apps/{}/domains", seg(&to.name)),
                            &json!({ "hostname": hostname, "sni_endpoint": null }),
                        )
                        .await;
                    let domain = match added {
                        Ok(d) => d,
                        Err(e) if e.kind() == ErrorKind::Invalid => {
                            return Err(Error::conflict(format!(
                                "{hostname} cannot move to {}: {e}",
                                to.name
                            )))
                        }
                        Err(e) => return Err(e),
                    };
                    self.dns
                        .point(app, hostname, domain.cname.as_deref())
                        .await?;
                }
                None => {
                    if let Some((_, from)) = holder {
                        self.remove_domain(from, hostname).await?;
                        self.dns.point(app, hostname, None).await?;
                    }
                }
            }
        }
        Ok(())
    }

    async fn serving(&self, app: &App, group: &GroupId) -> Result<Serving> {
        let found = self.attached(app, group).await?;
        let dynos = self.fleet.dynos_of(&found).await?;
        let healthy = dynos.iter().filter(|i| i.health.is_healthy()).count();
        Ok(Serving::new(healthy, dynos.len()))
    }
}
