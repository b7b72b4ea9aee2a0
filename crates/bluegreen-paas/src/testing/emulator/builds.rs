//! Builds: `POST /apps/{app}/builds`, `GET /apps/{app}/builds/{build}`, and their
//! output streams (`GET /streams/{build}`, outside the API). A build finishes after
//! the build time, when the app is next asked about: a source URL containing `fail`
//! fails, one containing `crash` gives a slug whose dynos crash.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Instant;

use hyper::StatusCode;
use serde_json::{json, Value};

use super::releases::release_slug;
use super::state::{not_found, now, user, uuid, Answer, AppRec, BuildRec, Req, SlugRec, State};

/// `/apps/{app}/builds`.
pub(super) fn route(s: &mut State, name: &str, req: &Req, rest: &[&str]) -> Option<Answer> {
    match (req.method, rest) {
        ("POST", []) => {
            let url = req.body["source_blob"]["url"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            let id = uuid();
            let build = BuildRec {
                id: id.clone(),
                app: name.to_owned(),
                url,
                born: Instant::now(),
                status: "pending".into(),
                slug: None,
                release: None,
                created_at: now(),
            };
            let out = build_json(&build, s.app(name), req.addr);
            s.builds.insert(id, build);
            Some((StatusCode::CREATED, out))
        }
        ("GET", [id]) => Some(match s.builds.get(*id) {
            Some(b) if b.app == name => (StatusCode::OK, build_json(b, s.app(name), req.addr)),
            _ => not_found("build"),
        }),
        _ => None,
    }
}

/// `GET /streams/{build}`: the build's output.
pub(super) fn stream(s: &State, id: &str) -> Option<String> {
    s.builds.get(id).map(|b| {
        format!(
            "-----> Building source from {}\n-----> Compressing slug\n-----> Done\n",
            b.url
        )
    })
}

/// Finishes the builds whose time has come, creating their slug and release.
pub(super) fn settle(s: &mut State) {
    let build_time = s.knobs.build_time;
    let due: Vec<String> = s
        .builds
        .values()
        .filter(|b| b.status == "pending" && b.born.elapsed() >= build_time)
        .map(|b| b.id.clone())
        .collect();
    for id in due {
        let (app, url) = {
            let b = &s.builds[&id];
            (b.app.clone(), b.url.clone())
        };
        let Some(app_id) = s.apps.get(&app).map(|a| a.id.clone()) else {
            if let Some(b) = s.builds.get_mut(&id) {
                b.status = "failed".into();
            }
            continue;
        };
        if url.contains("fail") {
            if let Some(b) = s.builds.get_mut(&id) {
                b.status = "failed".into();
            }
            continue;
        }
        let slug_id = uuid();
        s.slugs.insert(
            slug_id.clone(),
            SlugRec {
                id: slug_id.clone(),
                app: app_id,
                process_types: BTreeMap::from([("web".to_owned(), "./bin/web".to_owned())]),
                blob: Some(url.clone().into_bytes()),
                crash: url.contains("crash"),
                created_at: now(),
            },
        );
        let release = release_slug(s, &app, &slug_id, format!("Deploy {}", &id[..8]));
        if let Some(b) = s.builds.get_mut(&id) {
            b.status = "succeeded".into();
            b.slug = Some(slug_id);
            b.release = Some(release);
        }
    }
}

fn build_json(b: &BuildRec, app: &AppRec, addr: SocketAddr) -> Value {
    json!({
        "app": { "id": app.id },
        "buildpacks": null,
        "created_at": b.created_at,
        "id": b.id,
        "output_stream_url": format!("http://{addr}/streams/{}", b.id),
        "source_blob": { "checksum": null, "url": b.url, "version": null, "version_description": null },
        "release": b.release.as_ref().map(|id| json!({ "id": id })),
        "slug": b.slug.as_ref().map(|id| json!({ "id": id })),
        "stack": "heroku-22",
        "status": b.status,
        "updated_at": b.created_at,
        "user": user(),
    })
}
