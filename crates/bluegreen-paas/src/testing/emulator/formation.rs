//! Formation: `GET /apps/{app}/formation` and `PATCH /apps/{app}/formation/{type}`
//! (quantity and size; scaling starts or stops dynos of the current release).

use hyper::StatusCode;
use serde_json::{json, Value};

use super::dynos::new_dyno;
use super::state::{not_found, Answer, AppRec, Form, Req, State, SIZE_ID};

/// `/apps/{app}/formation`.
pub(super) fn route(s: &mut State, name: &str, req: &Req, rest: &[&str]) -> Option<Answer> {
    match (req.method, rest) {
        ("GET", []) => {
            let app = s.app(name);
            Some((
                StatusCode::OK,
                Value::Array(
                    app.formation
                        .iter()
                        .map(|(k, f)| formation_json(app, k, f))
                        .collect(),
                ),
            ))
        }
        ("PATCH", [kind]) => Some(scale(s, name, kind, &req.body)),
        _ => None,
    }
}

/// The number after the dot of a dyno's name (`web.2`).
fn ordinal(name: &str) -> Option<u32> {
    name.rsplit('.').next()?.parse().ok()
}

fn scale(s: &mut State, name: &str, kind: &str, body: &Value) -> Answer {
    let crash = s.current_crash(name);
    let app = s.app_mut(name);
    let Some(form) = app.formation.get_mut(kind) else {
        return not_found("formation");
    };
    if let Some(q) = body.get("quantity").and_then(Value::as_u64) {
        form.quantity = u32::try_from(q).unwrap_or(u32::MAX);
    }
    if let Some(size) = body
        .get("dyno_size")
        .and_then(|d| d.get("name"))
        .and_then(Value::as_str)
    {
        form.size = size.to_owned();
    }
    let form = form.clone();
    let current = app.releases.last().cloned();
    if let Some(current) = current.filter(|r| r.slug.is_some()) {
        let live: Vec<u32> = app
            .dynos
            .iter()
            .filter(|d| d.kind == kind && !d.retiring)
            .filter_map(|d| ordinal(&d.name))
            .collect();
        app.dynos.retain(|d| {
            d.kind != kind || d.retiring || ordinal(&d.name).unwrap_or(0) <= form.quantity
        });
        for n in 1..=form.quantity {
            if !live.contains(&n) {
                app.dynos.push(new_dyno(kind, n, &current, &form, crash));
            }
        }
    }
    (StatusCode::OK, formation_json(app, kind, &form))
}

fn formation_json(app: &AppRec, kind: &str, f: &Form) -> Value {
    json!({
        "app": { "name": app.name, "id": app.id },
        "command": f.command,
        "created_at": f.created_at,
        "dyno_size": { "id": SIZE_ID, "name": f.size },
        "id": f.id,
        "quantity": f.quantity,
        "size": f.size,
        "type": kind,
        "updated_at": f.created_at,
    })
}
