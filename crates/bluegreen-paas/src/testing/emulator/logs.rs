//! Log sessions: `POST /apps/{app}/log-sessions`, and their `logplex_url`
//! (`GET /logs/{session}`, outside the API), which gives the app's log lines as
//! text, as Logplex does: filtered by `dyno_name` and `source`, the last `lines`
//! (default 100, at most 1500, the most the emulator keeps per app). `tail` is
//! accepted and ignored: a session gives what the log holds when it is read.

use hyper::StatusCode;
use serde_json::{json, Value};

use super::state::{now, uuid, Answer, LogSession, Req, State, LOG_LINES};

/// `/apps/{app}/log-sessions`.
pub(super) fn route(s: &mut State, name: &str, req: &Req, rest: &[&str]) -> Option<Answer> {
    match (req.method, rest) {
        ("POST", []) => {
            let text = |k: &str| req.body.get(k).and_then(Value::as_str).map(str::to_owned);
            let lines = req
                .body
                .get("lines")
                .and_then(Value::as_u64)
                .map(|n| (n as usize).min(LOG_LINES))
                .unwrap_or(100);
            let id = uuid();
            let log = s.app(name).logs.clone();
            s.log_sessions.insert(
                id.clone(),
                LogSession {
                    log,
                    dyno: text("dyno_name"),
                    source: text("source"),
                    lines,
                },
            );
            let at = now();
            Some((
                StatusCode::CREATED,
                json!({
                    "created_at": at,
                    "id": id,
                    "logplex_url": format!("http://{}/logs/{id}", req.addr),
                    "updated_at": at,
                }),
            ))
        }
        _ => None,
    }
}

/// `GET /logs/{session}`: the session's lines, one a line.
pub(super) fn read(s: &State, id: &str) -> Option<String> {
    let session = s.log_sessions.get(id)?;
    let log = session.log.lock().expect("not poisoned");
    let matching: Vec<&String> = log
        .iter()
        .filter(|line| {
            // `<time> <source>[<dyno>]: <text>`
            let Some(tag) = line.split(' ').nth(1) else {
                return false;
            };
            let (source, dyno) = tag
                .trim_end_matches(':')
                .trim_end_matches(']')
                .split_once('[')
                .unwrap_or((tag, ""));
            session.source.as_deref().is_none_or(|s| s == source)
                && session.dyno.as_deref().is_none_or(|d| d == dyno)
        })
        .collect();
    let start = matching.len().saturating_sub(session.lines);
    Some(matching[start..].iter().map(|l| format!("{l}\n")).collect())
}
