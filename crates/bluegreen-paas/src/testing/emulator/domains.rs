//! Domains: `GET`, `POST /apps/{app}/domains` and `DELETE
//! /apps/{app}/domains/{hostname or id}`. A hostname is on one app at most; every
//! app also lists its `<app>.herokuapp.com` domain.

use hyper::StatusCode;
use serde_json::{json, Value};

use super::state::{error, not_found, now, uuid, Answer, AppRec, DomainRec, Req, State};

/// `/apps/{app}/domains`.
pub(super) fn route(s: &mut State, name: &str, req: &Req, rest: &[&str]) -> Option<Answer> {
    match (req.method, rest) {
        ("GET", []) => Some((StatusCode::OK, list(s.app(name)))),
        ("POST", []) => Some(add(s, name, &req.body)),
        ("DELETE", [key]) => {
            let app = s.app_mut(name);
            let Some(i) = app
                .domains
                .iter()
                .position(|d| d.hostname == *key || d.id == *key)
            else {
                return Some(not_found("domain"));
            };
            let d = app.domains.remove(i);
            Some((StatusCode::OK, domain_json(app, &d, "custom")))
        }
        _ => None,
    }
}

/// A custom domain for an app that is not bluegreen's.
pub(super) fn custom(hostname: &str) -> DomainRec {
    DomainRec {
        id: uuid(),
        hostname: hostname.into(),
        cname: format!("{}.herokudns.com", uuid()),
        created_at: now(),
    }
}

fn list(app: &AppRec) -> Value {
    let mut list: Vec<Value> = app
        .domains
        .iter()
        .map(|d| domain_json(app, d, "custom"))
        .collect();
    list.push(domain_json(
        app,
        &DomainRec {
            id: app.id.clone(),
            hostname: format!("{}.herokuapp.com", app.host),
            cname: String::new(),
            created_at: app.created_at.clone(),
        },
        "heroku",
    ));
    Value::Array(list)
}

fn add(s: &mut State, name: &str, body: &Value) -> Answer {
    let hostname = body
        .get("hostname")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    if s.apps
        .values()
        .any(|a| a.domains.iter().any(|d| d.hostname == hostname))
    {
        return error(422, "invalid_params", "Domain already added to an app.");
    }
    let app = s.app_mut(name);
    let d = DomainRec {
        id: uuid(),
        hostname,
        cname: format!(
            "{}-{:06x}.herokudns.com",
            app.name,
            fastrand::u32(..0xff_ffff)
        ),
        created_at: now(),
    };
    app.domains.push(d.clone());
    (StatusCode::CREATED, domain_json(app, &d, "custom"))
}

fn domain_json(app: &AppRec, d: &DomainRec, kind: &str) -> Value {
    json!({
        "acm_status": null,
        "acm_status_reason": null,
        "app": { "name": app.name, "id": app.id },
        "cname": if kind == "heroku" { Value::Null } else { json!(d.cname) },
        "created_at": d.created_at,
        "hostname": d.hostname,
        "id": d.id,
        "kind": kind,
        "updated_at": d.created_at,
        "status": "succeeded",
        "sni_endpoint": null,
    })
}
