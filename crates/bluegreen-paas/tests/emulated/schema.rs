//! The schema checks refuse what the schema refuses, so that a clean emulator means
//! something: on a small hyper-schema written here (always), on Heroku's own schema
//! (when `HEROKU_PLATFORM_API_SCHEMA` gives it), and through the emulator.

use bluegreen_core::ErrorKind;
use bluegreen_paas::testing::RawClient;
use serde_json::{json, Value};

use crate::support::{self, EmulatorOptions, Schema};

const APP_IDENTITY: &str = "{(%23%2Fdefinitions%2Fapp%2Fdefinitions%2Fidentity)}";

/// A hyper-schema in Heroku's style: an app with a name pattern (with a lookahead),
/// strict properties, links with request and answer schemas, `$ref`s across
/// definitions, formats.
fn small_schema() -> Value {
    json!({
        "$schema": "http://interagent.github.io/interagent-hyper-schema",
        "id": "http://example.invalid/schema#",
        "definitions": {
            "app": {
                "$schema": "http://json-schema.org/draft-04/hyper-schema",
                "type": ["object"],
                "strictProperties": true,
                "definitions": {
                    "id": { "type": ["string"], "format": "uuid" },
                    "name": { "type": ["string"], "pattern": "^[a-z](?:[a-z0-9]|-(?!-))+[a-z0-9]$" },
                    "maintenance": { "type": ["boolean"] },
                    "created_at": { "type": ["string"], "format": "date-time" },
                    "identity": { "anyOf": [
                        { "$ref": "#/definitions/app/definitions/id" },
                        { "$ref": "#/definitions/app/definitions/name" }
                    ] }
                },
                "properties": {
                    "id": { "$ref": "#/definitions/app/definitions/id" },
                    "name": { "$ref": "#/definitions/app/definitions/name" },
                    "maintenance": { "$ref": "#/definitions/app/definitions/maintenance" },
                    "created_at": { "$ref": "#/definitions/app/definitions/created_at" },
                    "owner": { "$ref": "#/definitions/account/definitions/ref" }
                },
                "links": [
                    {
                        "href": "/apps", "method": "POST", "title": "Create",
                        "schema": {
                            "type": ["object"],
                            "strictProperties": true,
                            "properties": {
                                "name": { "$ref": "#/definitions/app/definitions/name" },
                                "maintenance": { "$ref": "#/definitions/app/definitions/maintenance" }
                            },
                            "required": ["name"]
                        },
                        "targetSchema": { "$ref": "#/definitions/app" }
                    },
                    {
                        "href": format!("/apps/{APP_IDENTITY}"), "method": "GET", "title": "Info",
                        "targetSchema": { "$ref": "#/definitions/app" }
                    },
                    {
                        "href": "/apps", "method": "GET", "title": "List",
                        "targetSchema": { "type": ["array"], "items": { "$ref": "#/definitions/app" } }
                    }
                ]
            },
            "account": {
                "$schema": "http://json-schema.org/draft-04/hyper-schema",
                "definitions": {
                    "ref": {
                        "type": ["object"],
                        "strictProperties": true,
                        "properties": { "email": { "type": ["string"], "format": "email" } }
                    }
                }
            }
        }
    })
}

/// A change to an answer.
type Change = dyn Fn(&mut Value);

fn small() -> Schema {
    Schema::new(small_schema()).expect("the small schema compiles")
}

#[test]
fn a_request_with_a_wrong_type_is_rejected() {
    let e = small()
        .check_request(
            "POST",
            "/apps",
            Some(&json!({ "name": "web", "maintenance": "yes" })),
        )
        .unwrap_err();
    assert!(e.contains("/maintenance"), "{e}");
    let e = small()
        .check_request("POST", "/apps", Some(&json!(["web"])))
        .unwrap_err();
    assert!(e.contains("Create"), "{e}");
}

#[test]
fn a_request_missing_a_required_property_is_rejected() {
    let e = small()
        .check_request("POST", "/apps", Some(&json!({ "maintenance": true })))
        .unwrap_err();
    assert!(e.contains("name"), "{e}");
    let e = small().check_request("POST", "/apps", None).unwrap_err();
    assert!(e.contains("a body is required"), "{e}");
}

#[test]
fn an_unknown_property_is_rejected_where_properties_are_strict() {
    let e = small()
        .check_request(
            "POST",
            "/apps",
            Some(&json!({ "name": "web", "region": "eu" })),
        )
        .unwrap_err();
    assert!(
        e.contains("\"region\"") && e.contains("strictProperties"),
        "{e}"
    );
}

#[test]
fn a_valid_request_is_accepted_and_patterns_are_ecma_regexes() {
    let schema = small();
    schema
        .check_request("POST", "/apps", Some(&json!({ "name": "web-prod" })))
        .unwrap();
    schema
        .check_request(
            "POST",
            "/apps",
            Some(&json!({ "name": "web-prod", "maintenance": false })),
        )
        .unwrap();
    schema.check_request("GET", "/apps/web-prod", None).unwrap();
    // the pattern's lookahead is honoured: `--` is refused, not waved through
    assert!(schema
        .check_request("POST", "/apps", Some(&json!({ "name": "web--prod" })))
        .is_err());
    assert!(schema
        .check_request("POST", "/apps", Some(&json!({ "name": "Web" })))
        .is_err());
    // a link that takes no body
    assert!(schema
        .check_request("GET", "/apps/web", Some(&json!({ "x": 1 })))
        .is_err());
    // no link at all
    assert!(schema.check_request("DELETE", "/apps/web", None).is_err());
    assert!(schema
        .check_request("GET", "/apps/web/dynos", None)
        .is_err());
}

#[test]
fn an_answer_that_breaks_the_schema_is_caught() {
    let schema = small();
    let good = json!({
        "id": "01234567-89ab-cdef-0123-456789abcdef",
        "name": "web",
        "maintenance": false,
        "created_at": "2024-01-01T00:00:00Z",
        "owner": { "email": "owner@example.com" }
    });
    schema.check_response("GET", "/apps/web", &good).unwrap();
    schema
        .check_response("GET", "/apps", &json!([good.clone()]))
        .unwrap();
    let broken = |f: &dyn Fn(&mut Value)| {
        let mut v = good.clone();
        f(&mut v);
        schema.check_response("GET", "/apps/web", &v)
    };
    // a wrong type, a bad format, an unknown property at the top and deep in a $ref
    let cases: [(&str, &Change); 5] = [
        ("/maintenance", &|v| v["maintenance"] = json!("no")),
        ("/id", &|v| v["id"] = json!("not-a-uuid")),
        ("/created_at", &|v| v["created_at"] = json!("yesterday")),
        ("\"web_url\"", &|v| v["web_url"] = json!("https://x")),
        ("\"name\"", &|v| v["owner"]["name"] = json!("someone")),
    ];
    for (what, change) in cases {
        let e = broken(change).unwrap_err();
        assert!(e.contains(what), "{what}: {e}");
    }
    let e = schema
        .check_response("GET", "/apps", &json!([good, { "name": 7 }]))
        .unwrap_err();
    assert!(e.contains("/1/name"), "{e}");
}

/// The same checks on Heroku's schema, on links the provider uses.
#[test]
fn heroku_schema_refuses_mismatches() {
    let Some(schema) = support::schema() else {
        return;
    };
    assert!(schema.link_count() > 200, "{}", schema.link_count());
    let uuid = "01234567-89ab-cdef-0123-456789abcdef";
    // valid
    schema
        .check_request("POST", "/apps", Some(&json!({ "name": "ok-name" })))
        .unwrap();
    schema
        .check_request(
            "POST",
            "/apps/x/releases",
            Some(&json!({ "release": uuid })),
        )
        .unwrap();
    schema
        .check_request(
            "POST",
            "/apps/x/builds",
            Some(
                &json!({ "source_blob": { "url": "https://example.com/a.tgz", "version": null } }),
            ),
        )
        .unwrap();
    // a wrong type
    assert!(schema
        .check_request("PATCH", "/apps/x", Some(&json!({ "maintenance": "yes" })))
        .is_err());
    assert!(schema
        .check_request(
            "PATCH",
            "/apps/x/formation/web",
            Some(&json!({ "quantity": "2" }))
        )
        .is_err());
    // a pattern: capitals and `--` (a lookahead) are not app names
    assert!(schema
        .check_request("POST", "/apps", Some(&json!({ "name": "Bad_Name" })))
        .is_err());
    assert!(schema
        .check_request("PATCH", "/apps/x/config-vars", Some(&json!({ "A-B": "1" })))
        .is_err());
    // missing a required property
    assert!(schema
        .check_request(
            "POST",
            "/apps/x/releases",
            Some(&json!({ "description": "no slug" }))
        )
        .is_err());
    assert!(schema
        .check_request("POST", "/apps/x/builds", Some(&json!({})))
        .is_err());
    // an unknown property where the schema's properties are strict (source_blob)
    let e = schema
        .check_request(
            "POST",
            "/apps/x/builds",
            Some(
                &json!({ "source_blob": { "url": "https://example.com/a.tgz", "branch": "main" } }),
            ),
        )
        .unwrap_err();
    assert!(
        e.contains("branch") && e.contains("strictProperties"),
        "{e}"
    );
    // no such link
    assert!(schema.check_request("GET", "/nothing/here", None).is_err());
    // answers
    assert!(schema
        .check_response("GET", "/apps/x/dynos", &json!([{ "name": 5 }]))
        .is_err());
    assert!(schema
        .check_response(
            "GET",
            "/apps/x/dynos",
            &json!([{ "name": "web.1", "size_gb": 1 }])
        )
        .is_err());
    schema
        .check_response("GET", "/apps/x/config-vars", &json!({ "A": "1" }))
        .unwrap();
    assert!(schema
        .check_response("GET", "/apps/x/config-vars", &json!({ "A": 1 }))
        .is_err());
}

/// Through the emulator, with the small schema in a file: a request that breaks it
/// is answered 422 and kept as a violation, and so is an answer.
#[tokio::test]
async fn the_emulator_refuses_requests_and_keeps_answers_that_break_its_schema() {
    let dir = bluegreen_testkit::scratch::Scratch::new("paas-schema");
    let path = dir.join("schema.json");
    std::fs::write(&path, small_schema().to_string()).unwrap();
    let emu = support::emulator_with(EmulatorOptions::new().with_schema(&path)).await;
    assert!(emu.schema_checks());
    let client = RawClient::new(emu.client());

    let e = client
        .post::<Value>("/apps", &json!({ "name": "web", "stack": "heroku-22" }))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid, "{e}");
    let v = emu.take_violations();
    assert!(v.len() == 1 && v[0].contains("stack"), "{v:?}");
    assert!(
        emu.app_names().is_empty(),
        "a refused request changes nothing"
    );

    // the emulator's own answer to `POST /apps` has more than the small schema
    // lists: a violation, though the request was fine
    client
        .post::<Value>("/apps", &json!({ "name": "web" }))
        .await
        .unwrap();
    let v = emu.take_violations();
    assert!(
        v.len() == 1 && v[0].starts_with("answer to POST /apps"),
        "{v:?}"
    );

    emu.tamper_next_answer(|v| v["maintenance"] = json!("no"));
    let _ = client.get::<Value>("/apps/web").await;
    let v = emu.take_violations();
    assert!(v.iter().any(|v| v.contains("/maintenance")), "{v:?}");
    emu.assert_schema_clean();
}

/// Heroku's schema through the emulator: a tampered answer is caught, and dropping
/// an emulator with a violation fails the test.
#[tokio::test]
async fn heroku_schema_catches_a_broken_answer_of_the_emulator() {
    let Some(path) = support::schema_path() else {
        return;
    };
    let emu = support::emulator_with(EmulatorOptions::new().with_schema(&path)).await;
    let client = RawClient::new(emu.client());
    client
        .post::<Value>("/apps", &json!({ "name": "web-test" }))
        .await
        .unwrap();
    client.get::<Value>("/apps/web-test").await.unwrap();
    emu.assert_schema_clean();
    emu.tamper_next_answer(|v| v["maintenance"] = json!("no"));
    let _ = client.get::<Value>("/apps/web-test").await;
    let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(emu)));
    let message = dropped.expect_err("dropping an emulator with a violation panics");
    let message = message
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(message.contains("/maintenance"), "{message}");
}

/// Without a schema the checks are off, and say so.
#[tokio::test]
async fn without_a_schema_nothing_is_checked() {
    let emu = support::emulator_with(EmulatorOptions::new().without_schema()).await;
    assert!(!emu.schema_checks());
    emu.tamper_next_answer(|v| v["maintenance"] = json!("no"));
    RawClient::new(emu.client())
        .post::<Value>("/apps", &json!({ "name": "web-test" }))
        .await
        .unwrap();
    assert!(emu.violations().is_empty());
}
