//! The release settings the EC2 and Auto Scaling fleets read.

use serde::Deserialize;

/// The release settings [`Ec2Fleet`](crate::Ec2Fleet) reads; any other key is refused
/// with `Invalid` naming `settings.<key>`.
///
/// - `instance_type`: the instance type (`t3.micro`; default the fleet's option, else
///   `t3.micro`).
/// - `port`: the port instances serve on (default the fleet's option, else 80).
/// - `user_data`: a script appended to the user data.
pub const SETTINGS: [&str; 3] = ["instance_type", "port", "user_data"];

/// The release settings [`AsgFleet`](crate::AsgFleet) reads; any other key is refused.
///
/// - `instance_type`: one instance type (`t3.micro`).
/// - `instance_types`: several, comma-separated, in order of preference: the group
///   gets a mixed instances policy (all On-Demand, `prioritized`).
/// - `port`: the port instances serve on (1 to 65535).
/// - `user_data`: a script appended to the user data.
pub const ASG_SETTINGS: [&str; 4] = ["instance_type", "instance_types", "port", "user_data"];

/// A release's settings for the EC2 fleet, as given.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Ec2Settings {
    pub instance_type: Option<String>,
    pub port: Option<u16>,
    pub user_data: Option<String>,
}

/// A release's settings for the Auto Scaling fleet, as given.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AsgSettings {
    pub instance_type: Option<String>,
    pub instance_types: Option<String>,
    pub port: Option<u16>,
    pub user_data: Option<String>,
}

/// What a fleet makes of a release's settings and its own options.
pub(crate) struct Settings {
    /// The instance type (the EC2 fleet).
    pub instance_type: String,
    /// The port instances serve on.
    pub port: u16,
    /// A script appended to the user data.
    pub user_data: Option<String>,
}

/// What the Auto Scaling fleet makes of a release's settings and its options.
pub(crate) struct AsgFleetSettings {
    /// The instance types, in order of preference.
    pub instance_types: Vec<String>,
    /// The port instances serve on.
    pub port: u16,
    /// A script appended to the user data.
    pub user_data: Option<String>,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use bluegreen_core::settings::parse;
    use serde::de::DeserializeOwned;

    use super::*;

    /// `keys` are exactly the fields of `T`: each is read, and the error for an
    /// unknown key lists the fields, in their order, as `keys`.
    fn lists_the_fields<T: DeserializeOwned>(keys: &[&str]) {
        let mut given: BTreeMap<String, String> = keys
            .iter()
            .map(|k| (k.to_string(), if *k == "port" { "80" } else { "x" }.into()))
            .collect();
        parse::<T>("the fleet", &given).unwrap_or_else(|e| panic!("{keys:?}: {e}"));
        given.insert("unknown".into(), "x".into());
        let e = parse::<T>("the fleet", &given).err().unwrap();
        assert_eq!(
            e.to_string(),
            format!(
                "invalid settings.unknown: the fleet does not know it (it reads {})",
                keys.join(", ")
            )
        );
    }

    #[test]
    fn the_public_lists_are_the_settings_read() {
        lists_the_fields::<Ec2Settings>(&SETTINGS);
        lists_the_fields::<AsgSettings>(&ASG_SETTINGS);
    }
}
