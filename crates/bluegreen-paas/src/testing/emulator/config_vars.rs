//! Config vars: `GET` and `PATCH /apps/{app}/config-vars` (a change is a new release
//! that restarts the dynos).

use hyper::StatusCode;
use serde_json::{json, Value};

use super::releases::roll;
use super::state::{now, uuid, Answer, Rel, Req, State};

/// `/apps/{app}/config-vars`.
pub(super) fn route(s: &mut State, name: &str, req: &Req, rest: &[&str]) -> Option<Answer> {
    match (req.method, rest) {
        ("GET", []) => Some((StatusCode::OK, json!(s.app(name).config))),
        ("PATCH", []) => {
            let crash = s.current_crash(name);
            let app = s.app_mut(name);
            let mut names = Vec::new();
            for (k, v) in req.body.as_object().cloned().unwrap_or_default() {
                names.push(k.clone());
                match v {
                    Value::String(v) => app.config.insert(k, v),
                    _ => app.config.remove(&k),
                };
            }
            let current = app.releases.last().cloned();
            app.releases.push(Rel {
                id: uuid(),
                version: current.as_ref().map(|r| r.version + 1).unwrap_or(1),
                slug: current.and_then(|r| r.slug),
                config: app.config.clone(),
                description: format!("Set {} config vars", names.join(", ")),
                created_at: now(),
            });
            roll(app, crash);
            Some((StatusCode::OK, json!(app.config)))
        }
        _ => None,
    }
}
