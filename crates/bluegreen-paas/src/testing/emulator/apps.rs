//! Apps: `GET /apps`, `POST /apps`, `GET`, `PATCH` (maintenance mode) and `DELETE
//! /apps/{app}`.

use std::collections::BTreeMap;

use hyper::StatusCode;
use serde_json::{json, Value};

use super::state::{error, now, stack, user, uuid, Answer, AppRec, Rel, Req, State};

/// A new app with its first release (no slug).
pub(super) fn new_app(name: &str) -> AppRec {
    let created_at = now();
    AppRec {
        id: uuid(),
        name: name.into(),
        host: format!("{name}-{:06x}", fastrand::u32(..0xff_ffff)),
        created_at: created_at.clone(),
        maintenance: false,
        config: BTreeMap::new(),
        releases: vec![Rel {
            id: uuid(),
            version: 1,
            slug: None,
            config: BTreeMap::new(),
            description: "Initial release".into(),
            created_at,
        }],
        formation: BTreeMap::new(),
        dynos: Vec::new(),
        runs: Vec::new(),
        logs: Default::default(),
        domains: Vec::new(),
        preboot: false,
    }
}

/// `/apps`.
pub(super) fn collection(s: &mut State, req: &Req) -> Option<Answer> {
    match req.method {
        "GET" => Some((
            StatusCode::OK,
            Value::Array(s.apps.values().map(app_json).collect()),
        )),
        "POST" => {
            let name = req
                .body
                .get("name")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| format!("app-{:08x}", fastrand::u32(..)));
            if s.apps.contains_key(&name) {
                return Some(error(422, "invalid_params", "Name is already taken"));
            }
            let app = new_app(&name);
            let out = app_json(&app);
            s.apps.insert(name, app);
            Some((StatusCode::CREATED, out))
        }
        _ => None,
    }
}

/// `/apps/{app}`.
pub(super) fn one(s: &mut State, name: &str, req: &Req) -> Option<Answer> {
    match req.method {
        "GET" => Some((StatusCode::OK, app_json(s.app(name)))),
        "PATCH" => {
            let app = s.app_mut(name);
            if let Some(m) = req.body.get("maintenance").and_then(Value::as_bool) {
                app.maintenance = m;
            }
            Some((StatusCode::OK, app_json(app)))
        }
        "DELETE" => {
            let app = s.apps.remove(name)?;
            // deleting an app stops its dynos, one-off ones too
            for run in &app.runs {
                super::dynos::stop_run(run);
            }
            Some((StatusCode::OK, app_json(&app)))
        }
        _ => None,
    }
}

pub(super) fn app_json(a: &AppRec) -> Value {
    let released = a
        .releases
        .iter()
        .rev()
        .find(|r| r.slug.is_some())
        .map(|r| r.created_at.clone());
    json!({
        "acm": false,
        "archived_at": null,
        "buildpack_provided_description": null,
        "build_stack": stack(),
        "created_at": a.created_at,
        "generation": { "id": "31234567-89ab-cdef-0123-456789abcdef", "name": "cedar" },
        "git_url": format!("https://git.heroku.com/{}.git", a.name),
        "id": a.id,
        "internal_routing": null,
        "maintenance": a.maintenance,
        "name": a.name,
        "owner": user(),
        "organization": null,
        "team": null,
        "region": { "id": "41234567-89ab-cdef-0123-456789abcdef", "name": "us" },
        "released_at": released,
        "repo_size": null,
        "slug_size": null,
        "space": null,
        "stack": stack(),
        "updated_at": a.created_at,
        "web_url": format!("https://{}.herokuapp.com/", a.host),
    })
}
