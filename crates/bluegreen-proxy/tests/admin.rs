//! The admin API: tokens, input errors that name the field, loopback by default.

mod support;

use bluegreen_proxy::{admin, AdminAddr, AdminListener, AdminToken};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use support::*;

const TOKEN: &str = "admin-test-token-42";

struct Admin {
    url: String,
    client: TestClient,
    _proxy: RunningProxy,
    backend: TestBackend,
}

impl Admin {
    async fn start() -> Admin {
        let proxy = RunningProxy::start(test_options()).await;
        let listener = AdminListener::bind(&"127.0.0.1:0".parse().unwrap(), false)
            .await
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(admin::serve(
            proxy.proxy.clone(),
            listener,
            AdminToken::new(TOKEN).unwrap(),
            std::future::pending(),
        ));
        Admin {
            url,
            client: http1_client(),
            _proxy: proxy,
            backend: TestBackend::start("blue", "i0").await,
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: &str,
    ) -> (StatusCode, serde_json::Value) {
        let mut builder = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.url));
        if let Some(t) = token {
            builder = builder.header("authorization", format!("Bearer {t}"));
        }
        let response = self
            .client
            .request(
                builder
                    .body(Full::new(Bytes::from(body.to_owned())))
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&bytes)));
        (status, value)
    }
}

#[tokio::test]
async fn no_or_wrong_token_is_401() {
    let admin = Admin::start().await;
    for token in [None, Some("nope-nope-nope"), Some("admin-test-token-43")] {
        let (status, body) = admin.call(Method::GET, "/v1/apps", token, "").await;
        assert_eq!(status, 401, "{token:?}: {body}");
        assert!(body["error"].as_str().unwrap().contains("Bearer"), "{body}");
    }
    let (status, _) = admin.call(Method::GET, "/v1/apps", Some(TOKEN), "").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn bad_input_is_400_naming_the_field() {
    let admin = Admin::start().await;
    let cases = [
        (
            "PUT",
            "/v1/apps/web.production/routes",
            "{not json",
            "body",
            "key must be a string",
        ),
        ("PUT", "/v1/apps/web.production/routes", "", "body", "empty"),
        (
            "PUT",
            "/v1/apps/web.production/routes",
            r#"{"routes": {"a": 60, "b": 60}}"#,
            "routes",
            "sum to 120",
        ),
        (
            "PUT",
            "/v1/apps/web.production/routes",
            r#"{"routes": {"a": "x"}}"#,
            "routes.a",
            "invalid type",
        ),
        (
            "PUT",
            "/v1/apps/web.production/routes",
            r#"{"route": {"a": 100}}"#,
            "route",
            "unknown field",
        ),
        (
            "PUT",
            "/v1/apps/web.production/groups/blue",
            r#"{"backends": [{"address": "nowhere"}]}"#,
            "groups.blue.backends[0].address",
            "no port",
        ),
        (
            "PUT",
            "/v1/apps/web.production/groups/blue",
            r#"{"backends": [{"adress": "x"}]}"#,
            "backends[0].adress",
            "unknown field",
        ),
        (
            "PUT",
            "/v1/apps/web_production!/routes",
            r#"{"routes": {}}"#,
            "host",
            "contains '!'",
        ),
    ];
    for (method, path, body, field, problem) in cases {
        let (status, reply) = admin
            .call(method.parse().unwrap(), path, Some(TOKEN), body)
            .await;
        assert_eq!(status, 400, "{path} {body}: {reply}");
        assert_eq!(reply["field"], field, "{body}: {reply}");
        let message = reply["error"].as_str().unwrap();
        assert!(message.contains(field), "{message} does not name {field}");
        assert!(
            message.contains(problem),
            "{message} does not say {problem}"
        );
    }
}

#[tokio::test]
async fn groups_routes_pause_and_errors() {
    let admin = Admin::start().await;
    let attach = format!(
        r#"{{"backends": [{{"address": "{}", "instance": "i0"}}]}}"#,
        admin.backend.address()
    );
    let (status, reply) = admin
        .call(
            Method::PUT,
            "/v1/apps/web.production/groups/blue",
            Some(TOKEN),
            &attach,
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        reply["healthy"], 1,
        "attach waits for the first check: {reply}"
    );

    let (status, reply) = admin
        .call(
            Method::PUT,
            "/v1/apps/web.production/routes",
            Some(TOKEN),
            r#"{"routes": {"green": 100}}"#,
        )
        .await;
    assert_eq!(status, 404, "{reply}");
    assert!(
        reply["error"].as_str().unwrap().contains("green"),
        "{reply}"
    );

    let (status, reply) = admin
        .call(
            Method::PUT,
            "/v1/apps/web.production/routes",
            Some(TOKEN),
            r#"{"routes": {"blue": 100}}"#,
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    let (_, reply) = admin
        .call(
            Method::GET,
            "/v1/apps/web.production/routes",
            Some(TOKEN),
            "",
        )
        .await;
    assert_eq!(reply, serde_json::json!({"routes": {"blue": 100}}));

    let (status, reply) = admin
        .call(
            Method::DELETE,
            "/v1/apps/web.production/groups/blue",
            Some(TOKEN),
            "",
        )
        .await;
    assert_eq!(status, 409, "{reply}");

    let (status, reply) = admin
        .call(
            Method::POST,
            "/v1/apps/web.production/pause",
            Some(TOKEN),
            "",
        )
        .await;
    assert_eq!(
        (status.as_u16(), &reply["paused"]),
        (200, &serde_json::json!(true))
    );
    let (_, reply) = admin
        .call(
            Method::POST,
            "/v1/apps/web.production/resume",
            Some(TOKEN),
            "",
        )
        .await;
    assert_eq!(reply["paused"], false);

    // one atomic change: attach green and route to it
    let apply = format!(
        r#"{{"routes": {{"green": 100}}, "groups": {{"green": [{{"address": "{}"}}]}}}}"#,
        admin.backend.address()
    );
    let (status, reply) = admin
        .call(Method::PUT, "/v1/apps/web.production", Some(TOKEN), &apply)
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["routes"], serde_json::json!({"green": 100}));
    let (status, _) = admin
        .call(
            Method::DELETE,
            "/v1/apps/web.production/groups/blue",
            Some(TOKEN),
            "",
        )
        .await;
    assert_eq!(status, 200);
    let (status, reply) = admin
        .call(
            Method::GET,
            "/v1/apps/web.production/groups/blue",
            Some(TOKEN),
            "",
        )
        .await;
    assert_eq!(status, 404, "{reply}");
    let (status, reply) = admin
        .call(Method::GET, "/v1/nothing", Some(TOKEN), "")
        .await;
    assert_eq!(status, 404, "{reply}");
}

#[tokio::test]
async fn admin_binds_loopback_only_unless_allowed() {
    let default: AdminAddr = admin::DEFAULT_ADMIN_ADDR.parse().unwrap();
    match default {
        AdminAddr::Tcp(a) => assert!(a.ip().is_loopback(), "{a}"),
        other => panic!("{other:?}"),
    }
    let wide: AdminAddr = "0.0.0.0:0".parse().unwrap();
    let e = AdminListener::bind(&wide, false).await.unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied);
    assert!(e.to_string().contains("not a loopback"), "{e}");
    // a unix socket is local by nature
    let dir = bluegreen_testkit::scratch::Scratch::new("proxy-admin");
    let path = dir.join("admin.sock");
    let listener = AdminListener::bind(&AdminAddr::Unix(path.clone()), false)
        .await
        .unwrap();
    assert!(listener.local_addr().is_none());
    drop(listener);
    drop(dir);
}

#[test]
fn tokens_never_show_in_debug() {
    let token = AdminToken::new("super-secret-value").unwrap();
    assert!(!format!("{token:?}").contains("super-secret"));
    assert!(AdminToken::new("short").is_err());
}

#[tokio::test]
async fn every_id_and_address_is_checked_on_every_route() {
    let admin = Admin::start().await;
    let port = admin.backend.addr.port();
    let backend = format!(r#"[{{"address": "127.0.0.1:{port}"}}]"#);
    let cases = [
        (
            Method::PUT,
            "/v1/apps/web.production/groups/blue".to_owned(),
            format!(r#"{{"backends": [{{"address": "user:secret@127.0.0.1:{port}"}}]}}"#),
            "groups.blue.backends[0].address",
        ),
        (
            Method::PUT,
            "/v1/apps/web.production".to_owned(),
            format!(
                r#"{{"routes": {{}}, "groups": {{"g": [{{"address": "http://user:secret@127.0.0.1:{port}/"}}]}}}}"#
            ),
            "groups.g.backends[0].address",
        ),
        (
            Method::PUT,
            "/v1/apps/web.production".to_owned(),
            format!(r#"{{"routes": {{"": 100}}, "groups": {{"": {backend}}}}}"#),
            "routes",
        ),
        (
            Method::PUT,
            "/v1/apps/web.production".to_owned(),
            format!(r#"{{"routes": {{}}, "groups": {{"": {backend}}}}}"#),
            "groups",
        ),
        (
            Method::PUT,
            "/v1/apps/web.production".to_owned(),
            format!(r#"{{"routes": {{}}, "groups": {{"g\r\nSet-Cookie: x=y": {backend}}}}}"#),
            "groups",
        ),
        (
            Method::PUT,
            "/v1/apps/web.production".to_owned(),
            format!(
                r#"{{"routes": {{"g; Domain=x": 100}}, "groups": {{"g; Domain=x": {backend}}}}}"#
            ),
            "routes",
        ),
        (
            Method::PUT,
            "/v1/apps/web.production/routes".to_owned(),
            r#"{"routes": {"g; Domain=x": 100}}"#.to_owned(),
            "routes",
        ),
        (
            Method::PUT,
            "/v1/apps/web.production/groups/g%3B%20Domain%3Dx".to_owned(),
            format!(r#"{{"backends": {backend}}}"#),
            "group",
        ),
        (
            Method::DELETE,
            "/v1/apps/web.production/groups/%20".to_owned(),
            String::new(),
            "group",
        ),
        (
            Method::GET,
            "/v1/apps/web.production/groups/%0D%0A".to_owned(),
            String::new(),
            "group",
        ),
    ];
    for (method, path, body, field) in cases {
        let (status, reply) = admin.call(method.clone(), &path, Some(TOKEN), &body).await;
        assert_eq!(status, 400, "{method} {path} {body}: {reply}");
        assert_eq!(reply["field"], field, "{method} {path} {body}: {reply}");
        assert!(!reply.to_string().contains("secret"), "{reply}");
    }
    // nothing was attached by any of them
    let (status, _) = admin
        .call(Method::GET, "/v1/apps/web.production", Some(TOKEN), "")
        .await;
    assert_eq!(status, 404);
    // a well-formed id that is not attached: 200, and says so
    let (status, reply) = admin
        .call(
            Method::DELETE,
            "/v1/apps/web.production/groups/blue",
            Some(TOKEN),
            "",
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["was_attached"], false, "{reply}");
}
