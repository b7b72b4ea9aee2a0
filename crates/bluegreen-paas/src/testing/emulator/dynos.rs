//! Dynos: `GET /apps/{app}/dynos`. A dyno is `starting` for the boot time, then `up`
//! (or `crashed`, for a slug that crashes). With preboot, the dynos of the previous
//! release keep running until every new one of their process type is up.

use std::time::{Duration, Instant};

use hyper::StatusCode;
use serde_json::{json, Value};

use super::state::{now, uuid, Answer, AppRec, DynoRec, Form, Rel, Req, State};

/// `/apps/{app}/dynos`.
pub(super) fn route(s: &mut State, name: &str, req: &Req, rest: &[&str]) -> Option<Answer> {
    let boot = s.knobs.boot_time;
    match (req.method, rest) {
        ("GET", []) => {
            let app = s.app(name);
            let list = app.dynos.iter().map(|d| dyno_json(app, d, boot)).collect();
            Some((StatusCode::OK, Value::Array(list)))
        }
        _ => None,
    }
}

/// A dyno of `release`, just started.
pub(super) fn new_dyno(kind: &str, n: u32, release: &Rel, form: &Form, crash: bool) -> DynoRec {
    DynoRec {
        id: uuid(),
        name: format!("{kind}.{n}"),
        kind: kind.to_owned(),
        release: release.id.clone(),
        version: release.version,
        born: Instant::now(),
        crash,
        retiring: false,
        size: form.size.clone(),
        command: form.command.clone(),
        created_at: now(),
    }
}

/// Stops the retiring dynos of each process type whose new dynos are all up.
pub(super) fn settle(app: &mut AppRec, boot: Duration) {
    let kinds: Vec<String> = app.dynos.iter().map(|d| d.kind.clone()).collect();
    for kind in kinds {
        let ready = app
            .dynos
            .iter()
            .filter(|d| d.kind == kind && !d.retiring)
            .all(|d| d.born.elapsed() >= boot);
        if ready {
            app.dynos.retain(|d| !(d.kind == kind && d.retiring));
        }
    }
}

fn dyno_json(app: &AppRec, d: &DynoRec, boot: Duration) -> Value {
    let state = if d.born.elapsed() < boot {
        "starting"
    } else if d.crash {
        "crashed"
    } else {
        "up"
    };
    json!({
        "attach_url": null,
        "command": d.command,
        "created_at": d.created_at,
        "id": d.id,
        "name": d.name,
        "release": { "id": d.release, "version": d.version },
        "app": { "name": app.name, "id": app.id },
        "size": d.size,
        "state": state,
        "type": d.kind,
        "updated_at": d.created_at,
    })
}
