//! Releases: `GET /apps/{app}/releases`, `GET /apps/{app}/releases/{release}/config-vars`,
//! and `POST /apps/{app}/releases` with a slug (a deploy) or a release (the
//! platform's rollback: that release's slug and config vars in a new release). A new
//! release is current at once and replaces the dynos.

use hyper::StatusCode;
use serde_json::{json, Value};

use super::dynos::new_dyno;
use super::state::{error, not_found, now, user, uuid, Answer, AppRec, Form, Rel, Req, State};

/// `/apps/{app}/releases`.
pub(super) fn route(s: &mut State, name: &str, req: &Req, rest: &[&str]) -> Option<Answer> {
    match (req.method, rest) {
        ("GET", []) => {
            let app = s.app(name);
            Some((
                StatusCode::OK,
                Value::Array(app.releases.iter().map(|r| release_json(app, r)).collect()),
            ))
        }
        ("GET", [id, "config-vars"]) => {
            let app = s.app(name);
            Some(
                match app
                    .releases
                    .iter()
                    .find(|r| r.id == *id || r.version.to_string() == *id)
                {
                    Some(r) => (StatusCode::OK, json!(r.config)),
                    None => not_found("release"),
                },
            )
        }
        ("POST", []) => Some(match req.body.get("release").and_then(Value::as_str) {
            Some(target) => rollback(s, name, target),
            None => create(s, name, &req.body),
        }),
        _ => None,
    }
}

fn rollback(s: &mut State, name: &str, target: &str) -> Answer {
    let Some(old) = s
        .app(name)
        .releases
        .iter()
        .find(|r| r.id == target)
        .cloned()
    else {
        return not_found("release");
    };
    let crash = old
        .slug
        .as_ref()
        .and_then(|id| s.slugs.get(id))
        .is_some_and(|slug| slug.crash);
    let app = s.app_mut(name);
    app.config = old.config.clone();
    let rel = Rel {
        id: uuid(),
        version: app.releases.last().map(|r| r.version + 1).unwrap_or(1),
        slug: old.slug.clone(),
        config: old.config.clone(),
        description: format!("Rollback to v{}", old.version),
        created_at: now(),
    };
    app.releases.push(rel.clone());
    roll(app, crash);
    (StatusCode::CREATED, release_json(app, &rel))
}

fn create(s: &mut State, name: &str, body: &Value) -> Answer {
    let slug_id = body
        .get("slug")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    match s.slugs.get(&slug_id) {
        None => return not_found("slug"),
        Some(slug) if slug.blob.is_none() => {
            return error(422, "invalid_params", "the slug has no archive uploaded")
        }
        _ => {}
    }
    let description = body
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or("Deploy")
        .to_owned();
    let id = release_slug(s, name, &slug_id, description);
    let app = s.app(name);
    match app.releases.iter().find(|r| r.id == id) {
        Some(rel) => (StatusCode::CREATED, release_json(app, rel)),
        None => not_found("release"),
    }
}

/// Creates a release of a slug on an app (a formation for each of its process types
/// the app lacks: `web` at 1 on a first release, others at 0) and rolls the dynos;
/// gives the release's id.
pub(super) fn release_slug(s: &mut State, app: &str, slug_id: &str, description: String) -> String {
    let slug = &s.slugs[slug_id];
    let types = slug.process_types.clone();
    let crash = slug.crash;
    let app = s.app_mut(app);
    let first = app.formation.is_empty();
    for (kind, command) in &types {
        app.formation.entry(kind.clone()).or_insert_with(|| Form {
            id: uuid(),
            quantity: u32::from(first && kind == "web"),
            size: "standard-1X".into(),
            command: command.clone(),
            created_at: now(),
        });
    }
    let rel = Rel {
        id: uuid(),
        version: app.releases.last().map(|r| r.version + 1).unwrap_or(1),
        slug: Some(slug_id.to_owned()),
        config: app.config.clone(),
        description,
        created_at: now(),
    };
    let id = rel.id.clone();
    app.releases.push(rel);
    roll(app, crash);
    id
}

/// Replaces the dynos with dynos of the current release; with preboot the old ones
/// keep running until the new ones are up.
pub(super) fn roll(app: &mut AppRec, crash: bool) {
    let Some(current) = app.releases.last().cloned() else {
        return;
    };
    if current.slug.is_none() {
        return;
    }
    if app.preboot {
        for d in &mut app.dynos {
            d.retiring = true;
        }
    } else {
        app.dynos.clear();
    }
    let forms: Vec<(String, Form)> = app
        .formation
        .iter()
        .map(|(k, f)| (k.clone(), f.clone()))
        .collect();
    for (kind, form) in forms {
        for n in 1..=form.quantity {
            app.dynos.push(new_dyno(&kind, n, &current, &form, crash));
        }
    }
}

pub(super) fn release_json(app: &AppRec, r: &Rel) -> Value {
    let current = app.releases.last().is_some_and(|l| l.id == r.id);
    json!({
        "addon_plan_names": [],
        "artifacts": r.slug.as_ref().map(|id| vec![json!({ "type": "slug", "id": id })]).unwrap_or_default(),
        "app": { "name": app.name, "id": app.id },
        "created_at": r.created_at,
        "description": r.description,
        "id": r.id,
        "updated_at": r.created_at,
        "slug": r.slug.as_ref().map(|id| json!({ "id": id })),
        "status": "succeeded",
        "user": user(),
        "version": r.version,
        "current": current,
        "output_stream_url": null,
        "eligible_for_rollback": true,
    })
}
