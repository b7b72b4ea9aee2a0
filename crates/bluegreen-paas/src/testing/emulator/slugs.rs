//! Slugs: `POST /apps/{app}/slugs`, `GET /apps/{app}/slugs/{slug}`, and the upload of
//! their archive (`PUT /blobs/{slug}`, outside the API: no token).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use hyper::StatusCode;
use serde_json::{json, Value};

use super::state::{not_found, now, stack, uuid, Answer, Req, SlugRec, State};

/// `/apps/{app}/slugs`.
pub(super) fn route(s: &mut State, name: &str, req: &Req, rest: &[&str]) -> Option<Answer> {
    let app_id = s.app(name).id.clone();
    match (req.method, rest) {
        ("POST", []) => {
            let id = uuid();
            let process_types: BTreeMap<String, String> = req
                .body
                .get("process_types")
                .cloned()
                .and_then(|p| serde_json::from_value(p).ok())
                .unwrap_or_default();
            let slug = SlugRec {
                id: id.clone(),
                app: app_id,
                process_types,
                blob: None,
                crash: false,
                created_at: now(),
            };
            let out = slug_json(&slug, req.addr, "PUT");
            s.slugs.insert(id, slug);
            Some((StatusCode::CREATED, out))
        }
        ("GET", [id]) => Some(match s.slugs.get(*id) {
            Some(slug) if slug.app == app_id => (StatusCode::OK, slug_json(slug, req.addr, "GET")),
            _ => not_found("slug"),
        }),
        _ => None,
    }
}

/// `PUT /blobs/{slug}`: the archive; one containing `crash` makes dynos that crash.
pub(super) fn upload(s: &mut State, id: &str, method: &str, body: &[u8]) -> StatusCode {
    match s.slugs.get_mut(id) {
        Some(slug) if method == "PUT" => {
            slug.crash = body.windows(5).any(|w| w.eq_ignore_ascii_case(b"crash"));
            slug.blob = Some(body.to_vec());
            StatusCode::OK
        }
        _ => StatusCode::NOT_FOUND,
    }
}

pub(super) fn slug_json(s: &SlugRec, addr: SocketAddr, method: &str) -> Value {
    let checksum = s.blob.as_ref().map(|b| {
        use sha2::Digest;
        let d = sha2::Sha256::digest(b);
        format!(
            "SHA256:{}",
            d.iter().map(|b| format!("{b:02x}")).collect::<String>()
        )
    });
    json!({
        "blob": { "method": method, "url": format!("http://{addr}/blobs/{}", s.id) },
        "buildpack_provided_description": null,
        "checksum": checksum,
        "commit": null,
        "commit_description": null,
        "created_at": s.created_at,
        "id": s.id,
        "process_types": s.process_types,
        "size": s.blob.as_ref().map(|b| b.len()),
        "stack": stack(),
        "updated_at": s.created_at,
    })
}
