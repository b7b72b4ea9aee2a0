//! App features: `GET /apps/{app}/features`, `GET` and `PATCH
//! /apps/{app}/features/preboot` (the only feature there is).

use hyper::StatusCode;
use serde_json::{json, Value};

use super::state::{not_found, Answer, AppRec, Req, State};

/// `/apps/{app}/features`.
pub(super) fn route(s: &mut State, name: &str, req: &Req, rest: &[&str]) -> Option<Answer> {
    match (req.method, rest) {
        ("GET", []) => Some((StatusCode::OK, json!([feature_json(s.app(name))]))),
        ("GET", ["preboot"]) => Some((StatusCode::OK, feature_json(s.app(name)))),
        ("PATCH", ["preboot"]) => {
            let app = s.app_mut(name);
            app.preboot = req
                .body
                .get("enabled")
                .and_then(Value::as_bool)
                .unwrap_or(app.preboot);
            Some((StatusCode::OK, feature_json(app)))
        }
        ("GET" | "PATCH", [_]) => Some(not_found("feature")),
        _ => None,
    }
}

fn feature_json(app: &AppRec) -> Value {
    json!({
        "created_at": app.created_at,
        "description": "Provide seamless web dyno deploys",
        "doc_url": "http://devcenter.heroku.com/articles/preboot",
        "enabled": app.preboot,
        "id": "51234567-89ab-cdef-0123-456789abcdef",
        "name": "preboot",
        "state": "general",
        "updated_at": app.created_at,
        "display_name": "Preboot",
        "feedback_email": "feedback@example.com",
    })
}
