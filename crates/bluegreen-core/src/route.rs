//! Route tables: the router's weights for an app, per group, summing to 100.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::group::GroupId;

/// The weights of an app's groups at the router: every weight is 1 to 100 and
/// together they make 100, or the table is empty (no traffic is routed).
///
/// ```
/// use bluegreen_core::{GroupId, RouteTable};
/// let blue = GroupId::from("web-production-v001");
/// let green = GroupId::from("web-production-v002");
/// let table = RouteTable::weighted([(blue.clone(), 90), (green.clone(), 10)]).unwrap();
/// assert_eq!(table.weight(&green), 10);
/// assert_eq!(table.primary(), Some(&blue));
/// assert!(RouteTable::weighted([(blue, 90), (green, 20)]).is_err());
/// ```
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "BTreeMap<GroupId, u8>", into = "BTreeMap<GroupId, u8>")]
pub struct RouteTable {
    weights: BTreeMap<GroupId, u8>,
}

impl RouteTable {
    /// The empty table: no group gets traffic.
    pub fn empty() -> Self {
        RouteTable::default()
    }

    /// All traffic to one group.
    pub fn single(group: GroupId) -> Self {
        RouteTable {
            weights: BTreeMap::from([(group, 100)]),
        }
    }

    /// A weighted table. Zero weights are dropped; the rest must be at most 100 each
    /// and sum to 100, or [`Error::Invalid`] names `routes`.
    pub fn weighted(weights: impl IntoIterator<Item = (GroupId, u8)>) -> Result<Self> {
        let mut table = BTreeMap::new();
        for (group, weight) in weights {
            if weight > 100 {
                return Err(Error::invalid(
                    format!("routes.{group}"),
                    format!("weight {weight} is more than 100"),
                ));
            }
            if table.insert(group.clone(), weight).is_some() {
                return Err(Error::invalid(
                    format!("routes.{group}"),
                    "the group is listed twice",
                ));
            }
        }
        table.retain(|_, w| *w > 0);
        let table = RouteTable { weights: table };
        table.validate()?;
        Ok(table)
    }

    /// Checks that the weights sum to 100 (or that the table is empty).
    pub fn validate(&self) -> Result<()> {
        let sum: u32 = self.weights.values().map(|w| u32::from(*w)).sum();
        if !self.weights.is_empty() && sum != 100 {
            return Err(Error::invalid(
                "routes",
                format!("weights sum to {sum}, they must sum to 100"),
            ));
        }
        if self.weights.values().any(|w| *w == 0) {
            return Err(Error::invalid("routes", "a weight of 0 is listed"));
        }
        Ok(())
    }

    /// Whether no group gets traffic.
    pub fn is_empty(&self) -> bool {
        self.weights.is_empty()
    }

    /// The weight of `group` (0 when absent).
    pub fn weight(&self, group: &GroupId) -> u8 {
        self.weights.get(group).copied().unwrap_or(0)
    }

    /// The groups with traffic and their weights.
    pub fn iter(&self) -> impl Iterator<Item = (&GroupId, u8)> {
        self.weights.iter().map(|(g, w)| (g, *w))
    }

    /// The groups with traffic.
    pub fn groups(&self) -> impl Iterator<Item = &GroupId> {
        self.weights.keys()
    }

    /// This table without `group`, the others scaled back up to 100. Empty when
    /// `group` had all the traffic.
    pub fn without(&self, group: &GroupId) -> RouteTable {
        let rest: Vec<(GroupId, u8)> = self
            .weights
            .iter()
            .filter(|(g, _)| *g != group)
            .map(|(g, w)| (g.clone(), *w))
            .collect();
        RouteTable {
            weights: apportion(&rest, 100),
        }
    }

    /// This table with `group` at `weight` percent and the other groups sharing the
    /// rest in their current proportions. On an empty table, `group` gets all of it.
    pub fn blend(&self, group: &GroupId, weight: u8) -> RouteTable {
        let weight = weight.min(100);
        let rest: Vec<(GroupId, u8)> = self
            .weights
            .iter()
            .filter(|(g, _)| *g != group)
            .map(|(g, w)| (g.clone(), *w))
            .collect();
        if rest.is_empty() {
            return RouteTable::single(group.clone());
        }
        let mut weights = apportion(&rest, 100 - weight);
        if weight > 0 {
            weights.insert(group.clone(), weight);
        }
        RouteTable { weights }
    }

    /// The group with the most traffic (the later id on a tie).
    pub fn primary(&self) -> Option<&GroupId> {
        self.weights
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then(a.0.cmp(b.0)))
            .map(|(g, _)| g)
    }
}

/// Shares `total` among `weights` in proportion, by largest remainder; groups whose
/// share rounds to zero are left out.
fn apportion(weights: &[(GroupId, u8)], total: u8) -> BTreeMap<GroupId, u8> {
    let sum: u32 = weights.iter().map(|(_, w)| u32::from(*w)).sum();
    if sum == 0 || total == 0 {
        return BTreeMap::new();
    }
    let mut shares: Vec<(GroupId, u32, u32)> = weights
        .iter()
        .map(|(g, w)| {
            let exact = u32::from(*w) * u32::from(total);
            (g.clone(), exact / sum, exact % sum)
        })
        .collect();
    let given: u32 = shares.iter().map(|s| s.1).sum();
    let mut left = u32::from(total) - given;
    let mut order: Vec<usize> = (0..shares.len()).collect();
    order.sort_by(|a, b| shares[*b].2.cmp(&shares[*a].2).then(a.cmp(b)));
    for i in order {
        if left == 0 {
            break;
        }
        shares[i].1 += 1;
        left -= 1;
    }
    shares
        .into_iter()
        .filter(|s| s.1 > 0)
        .map(|(g, share, _)| (g, share as u8))
        .collect()
}

impl TryFrom<BTreeMap<GroupId, u8>> for RouteTable {
    type Error = Error;
    fn try_from(weights: BTreeMap<GroupId, u8>) -> Result<Self> {
        RouteTable::weighted(weights)
    }
}

impl From<RouteTable> for BTreeMap<GroupId, u8> {
    fn from(t: RouteTable) -> Self {
        t.weights
    }
}

impl fmt::Debug for RouteTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for RouteTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.weights.is_empty() {
            return f.write_str("{no traffic}");
        }
        f.write_str("{")?;
        for (i, (g, w)) in self.weights.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{g}: {w}%")?;
        }
        f.write_str("}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_are_checked() {
        let a = GroupId::from("a");
        let b = GroupId::from("b");
        assert!(RouteTable::weighted([(a.clone(), 50), (b.clone(), 50)]).is_ok());
        assert!(RouteTable::weighted([(a.clone(), 100), (b.clone(), 0)])
            .unwrap()
            .groups()
            .eq([&a]));
        let e = RouteTable::weighted([(a.clone(), 101)]).unwrap_err();
        assert!(e.to_string().contains("more than 100"), "{e}");
        let e = RouteTable::weighted([(a.clone(), 60), (b, 60)]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid routes: weights sum to 120, they must sum to 100"
        );
        assert!(serde_json::from_str::<RouteTable>(r#"{"a":99}"#).is_err());
        assert!(RouteTable::weighted([]).unwrap().is_empty());
    }

    #[test]
    fn blend_and_without_keep_the_sum() {
        let a = GroupId::from("a");
        let b = GroupId::from("b");
        let c = GroupId::from("c");
        let old = RouteTable::weighted([(a.clone(), 67), (b.clone(), 33)]).unwrap();
        for w in [1, 10, 33, 50, 99, 100] {
            let t = old.blend(&c, w);
            t.validate().unwrap();
            assert_eq!(t.weight(&c), w);
        }
        assert_eq!(
            RouteTable::empty().blend(&c, 10),
            RouteTable::single(c.clone())
        );
        let mid = RouteTable::weighted([(a.clone(), 50), (c.clone(), 50)]).unwrap();
        assert_eq!(mid.without(&c), RouteTable::single(a.clone()));
        assert!(RouteTable::single(c.clone()).without(&c).is_empty());
    }
}
