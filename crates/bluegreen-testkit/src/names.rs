//! Apps whose names come close to each other, for a provider's tests that the names
//! it derives from apps (resource names, paths, hosts, hashed or cut names) never
//! collide.
//!
//! ```
//! use bluegreen_testkit::names::{assert_distinct, near_collisions};
//!
//! assert_distinct("slug", &near_collisions(), |app| app.slug());
//! ```

use std::collections::BTreeMap;
use std::fmt::Debug;

use bluegreen_core::{App, MAX_NAME_LEN};

/// Valid apps whose names come close: a `-` on either side of the `.` (`a-b`.`c`,
/// `a`.`bc`, `ab`.`c`), digit and `v` endings, an app's slug as another's name
/// (`web`.`prod`, `web-prod`.`vx`), environments that are words a provider may use
/// as a suffix (`slugs`, `lock`), and long names that share their first 16, 17 or 23
/// characters, up to [`MAX_NAME_LEN`] on both sides, where providers cut or hash.
pub fn near_collisions() -> Vec<App> {
    let long = |c: char| c.to_string().repeat(MAX_NAME_LEN);
    let mut pairs: Vec<(String, String)> = [
        ("a", "b"),
        ("a", "bc"),
        ("ab", "c"),
        ("a-b", "c"),
        ("a-b", "c1"),
        ("a-b-c", "d"),
        ("a", "bcd"),
        ("a1", "b"),
        ("a-1", "b"),
        ("a", "b1"),
        ("web", "prod"),
        ("web", "prodv"),
        ("web", "prodv001"),
        ("web-prod", "v"),
        ("web-prod", "vx"),
        ("web-prod", "v1a"),
        ("web-prod-v001", "x"),
        ("web-prod-v", "x"),
        ("web", "production"),
        ("web", "slugs"),
        ("web-production", "slugs"),
        ("web-production", "lock"),
        ("web-production", "x"),
        ("inventory-service", "staging"),
        ("inventory-service", "stagingeurope"),
        ("inventory-service", "stagingeurope2"),
        ("inventory-service-staging", "europe"),
        ("inventory-servic", "estagingeurope"),
        ("inventory-service-stagingeurop", "e"),
        ("checkout-service-eu", "production"),
        ("checkout-service-eu", "productionb"),
        ("checkout-service-eu-productio", "n"),
    ]
    .iter()
    .map(|(n, e)| (n.to_string(), e.to_string()))
    .collect();
    pairs.extend([
        (long('a'), long('b')),
        (long('a'), long('c')),
        (long('a'), format!("{}c", &long('b')[1..])),
        (format!("{}-a", &long('a')[2..]), long('b')),
        (long('a'), "b".into()),
        ("a".into(), long('b')),
    ]);
    pairs
        .into_iter()
        .map(|(n, e)| {
            App::new(&n, &e).unwrap_or_else(|err| panic!("{n}.{e} must be a valid app: {err}"))
        })
        .collect()
}

/// Panics, naming both apps, unless `name` gives every app in `apps` a value of its
/// own.
pub fn assert_distinct<T: Ord + Debug>(what: &str, apps: &[App], name: impl Fn(&App) -> T) {
    let mut seen: BTreeMap<T, &App> = BTreeMap::new();
    for app in apps {
        let value = name(app);
        if let Some(first) = seen.get(&value) {
            panic!("{what}: {first} and {app} both give {value:?}");
        }
        seen.insert(value, app);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_apps_are_distinct_and_their_slugs_too() {
        let apps = near_collisions();
        assert_distinct("app", &apps, |a| a.clone());
        assert_distinct("slug", &apps, |a| a.slug());
    }

    #[test]
    #[should_panic(expected = "a.b and a.c both give 1")]
    fn a_shared_value_names_both_apps() {
        let apps = [App::new("a", "b").unwrap(), App::new("a", "c").unwrap()];
        assert_distinct("length", &apps, |a| a.environment().len());
    }
}
