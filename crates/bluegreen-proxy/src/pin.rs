//! Route generations and pinning: one user request that crosses several apps
//! through the proxy sees one version of each.
//!
//! Every change of any app's route table (one
//! [`Proxy::set_routes`](crate::Proxy::set_routes), or one
//! [`Proxy::set_routes_many`](crate::Proxy::set_routes_many) for several apps at
//! once) makes a new **route
//! generation**, numbered from 0 upwards, holding every app's table. The proxy keeps
//! the last [`KEPT_GENERATIONS`] generations; from each it drops an app's table as
//! soon as a group that table names is detached, so a generation only ever sends a
//! request to a group that is still attached (and draining at worst).
//!
//! Every request the proxy forwards carries the [route header](crate::ROUTE_HEADER)
//! (`bluegreen-route: <generation>.<mac>`, the name is
//! [`ProxyOptions::route_header`](crate::ProxyOptions::route_header)): the
//! generation whose table routed it, and an HMAC-SHA256 of that number under a
//! random key of this proxy (256 bits from the operating system's CSPRNG, drawn when
//! the proxy starts, never shown), cut to 128 bits. An app propagates the header
//! on its calls to sibling apps through the proxy, as it does trace headers. A
//! request that carries a valid header is routed by that generation's table of its
//! own app, as long as that generation still has one; otherwise by the current
//! table. So a request that reached the old `web` just before a switch of `web` and
//! `api` reaches the old `api`, even after the switch.
//!
//! A header the proxy did not make (forged, altered, from another proxy or from
//! before a restart), or naming a generation that is no longer kept, is ignored:
//! removed, and the request is routed and stamped as if it had none. The header is
//! removed from every response. A valid header copied from an old request keeps
//! routing to that generation's groups only while they are attached: pinning never
//! reaches a detached group, and never a group that had no traffic in that
//! generation.
//!
//! The cost on the request path: one more lock-free load, a comparison of tables
//! when a header is present, and one header inserted. The MAC is computed once per
//! generation, when it is made; a received header is checked by a constant-time
//! comparison with the generation's stamp.

use std::collections::HashMap;
use std::sync::Arc;

use bluegreen_core::{GroupId, RouteTable};
use hmac::{Hmac, Mac};
use http::HeaderValue;
use sha2::Sha256;

use crate::state::{GroupState, Snapshot};

/// The default name of the header that pins a request to a route generation.
pub const ROUTE_HEADER: &str = "bluegreen-route";

/// How many route generations the proxy keeps, the current one included. A
/// request pinned to an older one is routed by the current tables.
pub const KEPT_GENERATIONS: usize = 64;

/// The bytes of the MAC in a stamp (hex in the header: 32 digits).
const MAC_BYTES: usize = 16;

/// The proxy's key for the MACs of its stamps. Its `Debug` output never shows it.
pub(crate) struct PinKey([u8; 32]);

impl PinKey {
    /// A key from the operating system's CSPRNG.
    ///
    /// # Panics
    /// When the operating system gives no random bytes, rather than sign with a
    /// guessable key.
    pub(crate) fn random() -> Self {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).expect("the operating system's random source");
        PinKey(key)
    }

    /// `<number>.<mac>`: the header value that names generation `number`.
    fn stamp(&self, number: u64) -> HeaderValue {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(b"bluegreen-route\0");
        mac.update(&number.to_be_bytes());
        let tag = mac.finalize().into_bytes();
        let mut text = format!("{number}.");
        for b in &tag[..MAC_BYTES] {
            text.push_str(&format!("{b:02x}"));
        }
        HeaderValue::from_str(&text).expect("digits, a dot and hex digits are a header value")
    }
}

impl std::fmt::Debug for PinKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PinKey(<redacted>)")
    }
}

/// Every app's route table at one route generation.
pub(crate) struct Generation {
    /// Its number: grows by one with every change of a table.
    pub(crate) number: u64,
    /// The header value that names it.
    pub(crate) stamp: HeaderValue,
    /// The tables by host: only tables that are not empty and whose groups are
    /// all attached.
    pub(crate) tables: HashMap<String, RouteTable>,
}

/// The kept route generations, oldest first; the last one is the current one.
/// Replaced as a whole, after the apps' snapshots of a change are published.
pub(crate) struct Routes {
    generations: Vec<Arc<Generation>>,
}

impl Routes {
    /// Generation 0: no table.
    pub(crate) fn new(key: &PinKey) -> Self {
        Routes {
            generations: vec![Arc::new(Generation {
                number: 0,
                stamp: key.stamp(0),
                tables: HashMap::new(),
            })],
        }
    }

    /// The current generation.
    pub(crate) fn current(&self) -> &Arc<Generation> {
        self.generations.last().expect("at least one generation")
    }

    /// The kept generation `number`, if any.
    fn get(&self, number: u64) -> Option<&Arc<Generation>> {
        self.generations
            .binary_search_by_key(&number, |g| g.number)
            .ok()
            .map(|i| &self.generations[i])
    }

    /// The generation a route header names, when the header is one this proxy
    /// made for a generation it still keeps.
    pub(crate) fn verify(&self, value: &HeaderValue) -> Option<u64> {
        let bytes = value.as_bytes();
        let dot = bytes.iter().position(|&b| b == b'.')?;
        let digits = &bytes[..dot];
        if digits.is_empty() || digits.len() > 20 || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let number: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
        let generation = self.get(number)?;
        use subtle::ConstantTimeEq;
        let stamp = generation.stamp.as_bytes();
        // the lengths and the number are not secret; the MAC is
        (stamp.len() == bytes.len() && bool::from(stamp.ct_eq(bytes))).then_some(number)
    }

    /// The routes after a change: `changed` holds the new snapshot of every app
    /// the change touched, `table_changed` whether a table changed (a new
    /// generation), and every kept generation loses the tables of these apps that
    /// name a group they no longer have.
    pub(crate) fn next(
        &self,
        key: &PinKey,
        changed: &[(&str, &Snapshot)],
        table_changed: bool,
    ) -> Routes {
        let attached = |host: &str, table: &RouteTable| {
            changed
                .iter()
                .find(|(h, _)| *h == host)
                .is_none_or(|(_, snap)| table.groups().all(|g| snap.groups.contains_key(g)))
        };
        let mut generations: Vec<Arc<Generation>> = Vec::with_capacity(KEPT_GENERATIONS);
        let skip =
            (self.generations.len() + usize::from(table_changed)).saturating_sub(KEPT_GENERATIONS);
        for g in self.generations.iter().skip(skip) {
            let keeps_all = g.tables.iter().all(|(h, t)| attached(h, t));
            if keeps_all {
                generations.push(g.clone());
                continue;
            }
            generations.push(Arc::new(Generation {
                number: g.number,
                stamp: g.stamp.clone(),
                tables: g
                    .tables
                    .iter()
                    .filter(|(h, t)| attached(h, t))
                    .map(|(h, t)| (h.clone(), t.clone()))
                    .collect(),
            }));
        }
        if table_changed {
            let current = self.current();
            let number = current.number + 1;
            let mut tables = current.tables.clone();
            for (host, snap) in changed {
                if snap.table.is_empty() {
                    tables.remove(*host);
                } else {
                    tables.insert((*host).to_owned(), snap.table.clone());
                }
            }
            generations.push(Arc::new(Generation {
                number,
                stamp: key.stamp(number),
                tables,
            }));
        }
        Routes { generations }
    }
}

/// The groups and weights a request is routed by, when they are not its app's
/// current snapshot's.
pub(crate) type Routed = Vec<(Arc<GroupState>, u8)>;

/// How one request of the app at `host` is routed: `None` by `snap`'s own table,
/// or by the returned groups (another generation's table over `snap`'s groups);
/// and the stamp to forward. `pinned` is the generation of a verified header.
///
/// The routes are loaded before the snapshot, and published after it by a change:
/// a snapshot newer than the current generation belongs to a change still being
/// published, and the current generation's table is used instead, so that every
/// app switches at the one moment the routes are published.
pub(crate) fn resolve<'a>(
    routes: &'a Routes,
    snap: &Snapshot,
    host: &str,
    pinned: Option<u64>,
) -> (Option<Routed>, &'a HeaderValue) {
    if let Some(generation) = pinned.and_then(|n| routes.get(n)) {
        if let Some(table) = generation.tables.get(host) {
            if *table == snap.table {
                return (None, &generation.stamp);
            }
            if let Some(routed) = over(table, snap) {
                return (Some(routed), &generation.stamp);
            }
        }
    }
    let current = routes.current();
    if snap.route_generation <= current.number {
        return (None, &current.stamp);
    }
    let routed = match current.tables.get(host) {
        Some(table) if *table == snap.table => None,
        Some(table) => over(table, snap).or_else(|| Some(Vec::new())),
        None => Some(Vec::new()),
    };
    (routed, &current.stamp)
}

/// `table`'s weights over `snap`'s groups, or `None` when one is not attached.
fn over(table: &RouteTable, snap: &Snapshot) -> Option<Routed> {
    table
        .iter()
        .map(|(id, w): (&GroupId, u8)| snap.groups.get(id).map(|g| (g.clone(), w)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes_with(n: u64) -> (PinKey, Routes) {
        let key = PinKey::random();
        let mut routes = Routes::new(&key);
        for _ in 0..n {
            routes = routes.next(&key, &[], true);
        }
        (key, routes)
    }

    #[test]
    fn a_stamp_is_verified_and_names_its_generation() {
        let (_, routes) = routes_with(3);
        for n in 0..=3 {
            let stamp = routes.get(n).unwrap().stamp.clone();
            assert_eq!(routes.verify(&stamp), Some(n));
            let text = stamp.to_str().unwrap();
            let (number, mac) = text.split_once('.').unwrap();
            assert_eq!(number, n.to_string());
            assert_eq!(mac.len(), 2 * MAC_BYTES);
            assert!(mac.bytes().all(|b| b.is_ascii_hexdigit()));
        }
    }

    #[test]
    fn forged_altered_and_foreign_stamps_are_refused() {
        let (_, routes) = routes_with(3);
        let (_, other) = routes_with(3);
        let good = routes.get(1).unwrap().stamp.to_str().unwrap().to_owned();
        let (_, mac) = good.split_once('.').unwrap();
        let mut flipped = good.clone().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
        let bad = [
            format!("2.{mac}"),                  // another generation's number
            String::from_utf8(flipped).unwrap(), // one digit changed
            good[..good.len() - 1].to_owned(),   // cut short
            format!("{good}0"),                  // too long
            format!("01.{mac}"),                 // the number spelt otherwise
            "1.".to_owned(),                     // no MAC
            "1".to_owned(),                      // no dot
            format!("99.{mac}"),                 // a generation never made
            other.get(1).unwrap().stamp.to_str().unwrap().to_owned(), // another proxy's
            format!("18446744073709551616.{mac}"), // past u64
        ];
        for value in bad {
            let header = HeaderValue::from_str(&value).unwrap();
            assert_eq!(routes.verify(&header), None, "{value}");
        }
    }

    /// A request that loaded the routes before a change of several apps and their
    /// snapshots after it (the change published in between) is routed by the old
    /// tables of every app, as one that loaded both before: the switch is the
    /// moment the routes are published, for all the apps at once.
    #[tokio::test]
    async fn the_routes_published_last_decide_for_every_app() {
        use crate::{BackendSpec, Proxy, ProxyOptions};
        let proxy = Proxy::new(ProxyOptions::default().with_preview_bind(None));
        let spec = [BackendSpec::new("127.0.0.1:9")];
        for (host, group) in [
            ("web.t", "w1"),
            ("web.t", "w2"),
            ("api.t", "a1"),
            ("api.t", "a2"),
        ] {
            proxy
                .attach(host, &GroupId::from(group), &spec)
                .await
                .unwrap();
        }
        let table = |g: &str| RouteTable::single(GroupId::from(g));
        let many = |w: &str, a: &str| {
            [
                ("web.t".to_owned(), table(w)),
                ("api.t".to_owned(), table(a)),
            ]
        };
        proxy.set_routes_many(&many("w1", "a1")).unwrap();
        let before = proxy.inner.routes.load_full();
        proxy.set_routes_many(&many("w2", "a2")).unwrap();
        let after = proxy.inner.routes.load_full();
        assert_eq!(after.current().number, before.current().number + 1);
        for (host, old, new) in [("web.t", "w1", "w2"), ("api.t", "a1", "a2")] {
            let snap = proxy.app_exact(host).unwrap().snapshot.load_full();
            assert_eq!(snap.table, table(new));
            let names = |r: Option<Routed>| {
                r.map(|r| {
                    r.iter()
                        .map(|(g, w)| format!("{}:{w}", g.id))
                        .collect::<Vec<_>>()
                })
            };
            let (routed, stamp) = resolve(&before, &snap, host, None);
            assert_eq!(names(routed), Some(vec![format!("{old}:100")]), "{host}");
            assert_eq!(stamp, &before.current().stamp);
            let (routed, stamp) = resolve(&after, &snap, host, None);
            assert_eq!(names(routed), None, "{host}: its own table");
            assert_eq!(stamp, &after.current().stamp);
            // pinned to the generation before, after the switch: the old table
            let (routed, _) = resolve(&after, &snap, host, Some(before.current().number));
            assert_eq!(names(routed), Some(vec![format!("{old}:100")]), "{host}");
        }
    }

    #[test]
    fn only_the_last_generations_are_kept() {
        let (_, routes) = routes_with(KEPT_GENERATIONS as u64 + 10);
        assert_eq!(routes.generations.len(), KEPT_GENERATIONS);
        assert_eq!(routes.current().number, KEPT_GENERATIONS as u64 + 10);
        let oldest = routes.generations[0].clone();
        assert_eq!(oldest.number, 11);
        let (_, fresh) = routes_with(1);
        assert!(routes.get(10).is_none());
        assert!(fresh.get(1).is_some());
    }
}
