//! What the EC2 and Auto Scaling fleets' options and settings have in common,
//! checked one way: subnet and security group ids, instance types, ports. Each
//! error is [`Error::Invalid`] naming the field, before any call.

use std::collections::BTreeSet;

use bluegreen_core::{Error, Result};

/// The launch options both fleets take.
pub(crate) struct LaunchOptions<'a> {
    /// Subnet ids (`subnet-...`), each once.
    pub subnets: &'a [String],
    /// Whether at least one subnet is needed (an Auto Scaling group spans subnets;
    /// `RunInstances` has a default subnet).
    pub subnets_required: bool,
    /// Security group ids (`sg-...`).
    pub security_groups: &'a [String],
    /// An instance type.
    pub instance_type: Option<&'a str>,
    /// The port instances serve on.
    pub port: Option<u16>,
}

impl LaunchOptions<'_> {
    /// Checks every field, naming the first bad one.
    pub(crate) fn check(&self) -> Result<()> {
        if self.subnets_required && self.subnets.is_empty() {
            return Err(Error::invalid("subnets", "at least one subnet is needed"));
        }
        ids("subnets", self.subnets, "subnet-", "subnet id")?;
        ids(
            "security_groups",
            self.security_groups,
            "sg-",
            "security group id",
        )?;
        if let Some(t) = self.instance_type {
            instance_type("instance_type", t)?;
        }
        port("port", self.port)
    }
}

/// Ids that start with `prefix`, each once.
fn ids(field: &str, ids: &[String], prefix: &str, what: &str) -> Result<()> {
    for id in ids {
        if !id.starts_with(prefix) || id.len() == prefix.len() {
            return Err(Error::invalid(
                field,
                format!("`{id}` is no {what} ({prefix}...)"),
            ));
        }
    }
    no_duplicate(field, ids)
}

/// Each item once.
pub(crate) fn no_duplicate(field: &str, items: &[String]) -> Result<()> {
    let mut seen = BTreeSet::new();
    match items.iter().find(|i| !seen.insert(i.as_str())) {
        Some(dup) => Err(Error::invalid(field, format!("`{dup}` is listed twice"))),
        None => Ok(()),
    }
}

/// A describe call's page size, where one is given, is 1 or more.
pub(crate) fn page_size(size: Option<i32>) -> Result<()> {
    match size {
        Some(n) if n < 1 => Err(Error::invalid("page_size", format!("{n} is below 1"))),
        _ => Ok(()),
    }
}

/// A port is 1 to 65535.
pub(crate) fn port(field: &str, port: Option<u16>) -> Result<()> {
    match port {
        Some(0) => Err(Error::invalid(field, "0 is not a port (1 to 65535)")),
        _ => Ok(()),
    }
}

/// An instance type is `family.size`: lower-case letters, digits and `-`.
pub(crate) fn instance_type(field: &str, t: &str) -> Result<()> {
    let part = |p: &str| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    let ok = t
        .split_once('.')
        .is_some_and(|(family, size)| part(family) && part(size));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            format!("`{t}` is no instance type (family.size, such as t3.micro)"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_types_are_family_dot_size() {
        for good in ["t3.micro", "m7i-flex.large", "c6gn.16xlarge"] {
            instance_type("instance_type", good).unwrap();
        }
        for bad in [
            "",
            "t3",
            ".micro",
            "t3.",
            "T3.micro",
            "t3.micro,m5.large",
            "t3 .micro",
        ] {
            let e = instance_type("settings.instance_type", bad).unwrap_err();
            assert!(
                e.to_string().contains("settings.instance_type"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn each_field_is_named() {
        let subnets = ["subnet-1".to_owned()];
        let good = LaunchOptions {
            subnets: &subnets,
            subnets_required: true,
            security_groups: &[],
            instance_type: Some("t3.micro"),
            port: Some(8080),
        };
        good.check().unwrap();
        let twice = ["subnet-1".to_owned(), "subnet-1".to_owned()];
        let bad_sg = ["default".to_owned()];
        let cases = [
            (
                LaunchOptions {
                    subnets: &[],
                    ..good
                },
                "subnets",
            ),
            (
                LaunchOptions {
                    subnets: &twice,
                    ..good
                },
                "subnets",
            ),
            (
                LaunchOptions {
                    security_groups: &bad_sg,
                    ..good
                },
                "security_groups",
            ),
            (
                LaunchOptions {
                    instance_type: Some("large"),
                    ..good
                },
                "instance_type",
            ),
            (
                LaunchOptions {
                    port: Some(0),
                    ..good
                },
                "port",
            ),
        ];
        for (options, field) in cases {
            let e = options.check().unwrap_err();
            assert!(e.to_string().contains(field), "{field}: {e}");
        }
        LaunchOptions {
            subnets: &[],
            subnets_required: false,
            ..good
        }
        .check()
        .unwrap();
    }
}
