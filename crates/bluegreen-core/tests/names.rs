//! Names derived from apps are unambiguous: for any two different valid apps, the
//! slug, the `name.environment` form, the labels and every group id differ, a group id
//! is never an app's slug, and the engine accepts a group id only from its own app.
//!
//! The generated names come from a small alphabet (`a`, `b`, `v`, `0`, `1`), so that
//! two apps often share parts, hyphens and digit or `v` endings. The seed is fixed
//! (set `PROPTEST_RNG_SEED` to try another); a failure is kept in
//! `tests/names.proptest-regressions` and replayed first.

use std::collections::BTreeSet;

use bluegreen_core::labels::app_labels;
use bluegreen_core::{App, Engine, Error, ErrorKind, Generation, Group, Strategy as Switch};
use bluegreen_testkit::MemoryPlatform;
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, RngSeed};

/// The highest generation whose group ids are compared.
const GENERATIONS: u32 = 1000;

fn config(cases: u32) -> Config {
    let default = Config::default();
    let rng_seed = match std::env::var_os("PROPTEST_RNG_SEED") {
        Some(_) => default.rng_seed,
        None => RngSeed::Fixed(0x6e61_6d65),
    };
    Config {
        cases,
        max_global_rejects: 100 * cases,
        rng_seed,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..default
    }
}

/// A valid app name: segments joined by single `-`, starting with a letter.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[abv][abv01]{0,2}(-[abv01]{1,3}){0,3}",
        1 => "[a-z][a-z0-9]{0,9}(-[a-z0-9]{1,9}){0,3}",
    ]
    .prop_filter("at most 30 characters", |n| n.len() <= 30)
}

/// An environment as a user might type it: mostly letters and digits, sometimes
/// with `-` or shaped like a generation. [`app`] keeps what [`App::new`] accepts, so
/// that a rule that lets a colliding app through fails the properties below.
fn environment() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "[abv][abv01]{0,3}",
        2 => "[a-z][a-z0-9]{0,29}",
        1 => "[abv][abv01]{0,2}-[abv01]{1,2}",
        1 => "v[0-9]{1,4}",
    ]
}

/// A valid app.
fn app() -> impl Strategy<Value = App> {
    (name(), environment()).prop_filter_map("a valid app", |(n, e)| App::new(n, e).ok())
}

/// `a`, and a second app close to it: the same app, another one, or `a` with a
/// segment moved across the `.`, a character added or taken away, or its slug as a
/// name. A change that gives no valid app gives `a` again.
fn pair() -> impl Strategy<Value = (App, App)> {
    (app(), app(), 0..10usize, "[abv01]{1,2}").prop_map(|(a, other, how, x)| {
        let (n, e) = (a.name(), a.environment());
        let near = match how {
            0 => return (a.clone(), a),
            1 => return (a, other),
            // a-b.c and a.b-c: the reported collision
            2 => n
                .rsplit_once('-')
                .and_then(|(head, last)| App::new(head, format!("{last}-{e}")).ok()),
            // a-b.c and a.bc
            3 => n
                .rsplit_once('-')
                .and_then(|(head, last)| App::new(head, format!("{last}{e}")).ok()),
            // a.bc and a-b.c
            4 => App::new(format!("{n}-{}", &e[..1]), &e[1..]).ok(),
            // web.prod and web-prod.v007 (its group 7's id) or web-prod.v1a
            5 => App::new(a.slug(), format!("v{:03}", x.len())).ok(),
            6 => App::new(a.slug(), format!("v{x}a")).ok(),
            7 => App::new(n, format!("{e}{x}")).ok(),
            8 => App::new(format!("{n}{x}"), e).ok(),
            _ => App::new(n, &e[..e.len() - 1]).ok(),
        };
        let b = near.unwrap_or_else(|| a.clone());
        (a, b)
    })
}

fn ids(app: &App) -> Vec<String> {
    (0..=GENERATIONS)
        .map(|g| Group::id_for(app, Generation(g)).to_string())
        .collect()
}

/// Every way to cut `s` at a `-` into a valid app.
fn valid_splits(s: &str) -> Vec<App> {
    s.match_indices('-')
        .filter_map(|(i, _)| App::new(&s[..i], &s[i + 1..]).ok())
        .collect()
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn names_of_two_apps_differ(pair in pair()) {
        let (a, b) = pair;
        let same = a == b;
        prop_assert_eq!(a.slug() == b.slug(), same, "slugs {} {}", a.slug(), b.slug());
        prop_assert_eq!(a.to_string() == b.to_string(), same);
        prop_assert_eq!(app_labels(&a) == app_labels(&b), same);
        let ours: BTreeSet<String> = ids(&a).into_iter().collect();
        prop_assert_eq!(ours.len(), GENERATIONS as usize + 1, "{:?}: ids repeat", a);
        let theirs = ids(&b);
        let shared = theirs.iter().filter(|id| ours.contains(*id)).count();
        prop_assert_eq!(shared, if same { theirs.len() } else { 0 }, "{:?} {:?}", a, b);
        prop_assert!(!ours.contains(&b.slug()), "a group id of {:?} is the slug of {:?}", a, b);
        prop_assert!(!theirs.contains(&a.slug()), "a group id of {:?} is the slug of {:?}", b, a);
    }

    #[test]
    fn names_parse_back_to_their_app(a in app(), g in 0..=GENERATIONS) {
        prop_assert_eq!(a.to_string().parse::<App>().unwrap(), a.clone());
        let json = serde_json::to_string(&a).unwrap();
        prop_assert_eq!(serde_json::from_str::<App>(&json).unwrap(), a.clone());
        // the slug has one valid cut, at its last `-`
        prop_assert_eq!(valid_splits(&a.slug()), vec![a.clone()]);
        // a group id is no app's slug, and splits at its last `-v`
        let id = Group::id_for(&a, Generation(g));
        prop_assert_eq!(valid_splits(id.as_str()), Vec::<App>::new(), "{}", id);
        let (slug, n) = id.as_str().rsplit_once("-v").unwrap();
        prop_assert_eq!(slug, a.slug());
        prop_assert_eq!(n.parse::<u32>().unwrap(), g);
    }

    #[test]
    fn an_environment_with_a_hyphen_is_refused(
        n in name(),
        e in "[a-z][a-z0-9]{0,5}(-[a-z0-9]{1,5}){1,3}",
    ) {
        let expected = format!("`{e}` contains `-`");
        for result in [App::new(&n, &e), format!("{n}.{e}").parse::<App>()] {
            match result {
                Err(Error::Invalid { field, reason }) => {
                    prop_assert_eq!(field, "app.environment");
                    prop_assert!(reason.contains(&expected), "{}", reason);
                }
                other => prop_assert!(false, "{}.{} must be refused: {:?}", n, e, other),
            }
        }
        let json = serde_json::json!({ "name": n, "environment": e }).to_string();
        let err = serde_json::from_str::<App>(&json).unwrap_err().to_string();
        prop_assert!(err.contains("invalid app.environment"), "{}", err);
    }

    #[test]
    fn an_environment_shaped_like_a_generation_is_refused(n in name(), d in "[0-9]{1,6}") {
        let e = format!("v{d}");
        match App::new(&n, &e) {
            Err(Error::Invalid { field, reason }) => {
                prop_assert_eq!(field, "app.environment");
                prop_assert!(reason.contains("shape of a generation"), "{}", reason);
            }
            other => prop_assert!(false, "{}.{} must be refused: {:?}", n, e, other),
        }
    }
}

proptest! {
    #![proptest_config(config(96))]

    /// `Engine::promote` takes a group id only from its own app, before any platform
    /// call: another app's id is `Invalid` naming `group`; the app's own id passes
    /// validation and is then not found on the empty platform.
    #[test]
    fn the_engine_takes_a_group_only_from_its_app(pair in pair(), g in 0..=GENERATIONS) {
        let (a, b) = pair;
        let id = Group::id_for(&b, Generation(g));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let platform = MemoryPlatform::new();
        let engine = Engine::from_parts(platform.parts());
        let result = runtime.block_on(engine.promote(&a, &id, &Switch::blue_green()));
        match result {
            Err(Error::Invalid { field, reason }) if a != b => {
                prop_assert_eq!(field, "group", "{}", reason);
            }
            Err(e) if a == b => prop_assert_eq!(e.kind(), ErrorKind::NotFound, "{}", e),
            other => prop_assert!(false, "promote({:?}, {}): {:?}", a, id, other),
        }
    }
}
