use std::time::Instant;

use bluegreen_core::{ErrorKind, Fleet, Retry};
use bluegreen_paas::testing::RawClient;
use bluegreen_paas::AppFleet;
use serde_json::{json, Value};

use crate::support;

#[tokio::test]
async fn a_bad_token_is_permission_denied_and_never_shown() {
    let emu = support::emulator().await;
    let client = emu.client_with_token("wrong-token-xyz");
    assert!(!format!("{client:?}").contains("wrong-token-xyz"));
    let fleet = AppFleet::new(client);
    let e = fleet.groups(&support::app("web")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    assert!(e.to_string().contains("unauthorized"), "{e}");
    assert!(!e.to_string().contains("wrong-token-xyz"));
    assert!(!format!("{e:?}").contains("wrong-token-xyz"));
}

#[tokio::test]
async fn a_429_burst_is_rate_limited_and_retried_by_the_layer() {
    let emu = support::emulator().await;
    let app = support::app("web");
    let fleet = AppFleet::new(emu.client());
    emu.fail_next(1, 429, "rate_limit");
    let e = fleet.groups(&app).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::RateLimited, "{e}");
    assert!(e.is_retryable());

    emu.fail_next(4, 429, "rate_limit");
    let before = emu.requests();
    let retried = Retry::new(fleet, support::retry());
    assert!(retried.groups(&app).await.unwrap().is_empty());
    assert_eq!(emu.requests() - before, 5, "four refusals, then the answer");
}

#[tokio::test]
async fn a_5xx_is_retryable_and_retried_by_the_layer() {
    let emu = support::emulator().await;
    let app = support::app("web");
    let fleet = AppFleet::new(emu.client());
    emu.fail_next(1, 503, "unavailable");
    let e = fleet.groups(&app).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Provider, "{e}");
    assert!(e.is_retryable());
    assert!(e.to_string().contains("unavailable"), "{e}");

    emu.fail_next(2, 500, "internal_server_error");
    let retried = Retry::new(fleet, support::retry());
    assert!(retried.groups(&app).await.unwrap().is_empty());

    emu.fail_next(1, 400, "bad_request");
    let e = retried.groups(&app).await.unwrap_err();
    assert!(!e.is_retryable(), "a 4xx is not retried: {e}");
}

#[tokio::test]
async fn a_spent_budget_pauses_the_next_request() {
    let emu = support::emulator().await;
    let client = RawClient::new(emu.client());
    emu.spend_budget();
    client.list::<Value>("/apps").await.unwrap();
    let started = Instant::now();
    client.list::<Value>("/apps").await.unwrap();
    // a lower bound only: the client sleeps at least its pause
    assert!(
        started.elapsed() >= client.client().options().rate_limit_pause,
        "the client paused after RateLimit-Remaining: 0"
    );
}

#[tokio::test]
async fn lists_follow_next_range_across_pages() {
    let emu = support::emulator().await;
    emu.set_page_size(2);
    for n in 0..5 {
        emu.add_foreign_app(&format!("other-{n}"), &[("A", "1")], None);
    }
    let client = RawClient::new(emu.client());
    let before = emu.log().len();
    let apps: Vec<Value> = client.list("/apps").await.unwrap();
    assert_eq!(apps.len(), 5);
    let pages = emu.log()[before..]
        .iter()
        .filter(|l| *l == "GET /apps")
        .count();
    assert_eq!(pages, 3, "5 apps in pages of 2");

    // the fleet sees its groups across pages too
    let app = support::app("paged");
    let (image, fleet, _router) = support::app_mode(&emu, &app);
    let sources = support::sources();
    let img = bluegreen_core::Image::prepare(
        &image,
        &app,
        &sources.good,
        &bluegreen_core::EventSink::none(),
    )
    .await
    .unwrap();
    for n in 1..=3 {
        let g = bluegreen_core::Group::new(
            app.clone(),
            bluegreen_core::Generation(n),
            bluegreen_core::Release::new(img.id.clone(), 1),
            bluegreen_core::DeploymentId::new("d-pages"),
            None,
        );
        fleet.launch(&g).await.unwrap();
    }
    assert_eq!(fleet.groups(&app).await.unwrap().len(), 3);
}

#[tokio::test]
async fn api_errors_keep_their_kind_and_id() {
    let emu = support::emulator().await;
    let client = RawClient::new(emu.client());
    let e = client.get::<Value>("/apps/missing-app").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(e.to_string().contains("not_found"), "{e}");
    client
        .post::<Value>("/apps", &json!({ "name": "taken-app" }))
        .await
        .unwrap();
    let e = client
        .post::<Value>("/apps", &json!({ "name": "taken-app" }))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid, "{e}");
    assert!(e.to_string().contains("invalid_params"), "{e}");
    emu.fail_next(1, 409, "conflict");
    let e = client.get::<Value>("/apps/taken-app").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    emu.fail_next(1, 403, "forbidden");
    let e = client.get::<Value>("/apps/taken-app").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
}
