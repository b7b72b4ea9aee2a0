//! Dynos: `GET /apps/{app}/dynos`, `GET /apps/{app}/dynos/{dyno}` and, for one-off
//! dynos, `POST /apps/{app}/dynos` (Dyno Create). A formation dyno is `starting`
//! for the boot time, then `up` (or `crashed`, for a slug that crashes). With
//! preboot, the dynos of the previous release keep running until every new one of
//! their process type is up.
//!
//! A one-off dyno runs its `command` for real, with `sh -c` on this host, in its own
//! process group, with the current release's config vars, the request's `env`,
//! `DYNO` and `PORT`. Its output goes to the app's log (read through a log
//! session) as `app[run.N]: <line>`, framed by Heroku's own lines,
//! `heroku[run.N]: Starting process with command `…``, `State changed from starting
//! to up`, and at the end `Process exited with status N` and `State changed from up
//! to complete`. Like Heroku, the API lists it only while it runs: a finished one-off
//! dyno is gone from `GET /dynos` (404 by name), its exit status only in the log.
//! `time_to_live` kills it after that many seconds; deleting the app kills it.

use std::time::{Duration, Instant};

use hyper::StatusCode;
use serde_json::{json, Value};

use super::state::{
    error, log_line, not_found, now, uuid, Answer, AppLog, AppRec, DynoRec, Form, Rel, Req, RunRec,
    State,
};

/// `/apps/{app}/dynos`.
pub(super) fn route(s: &mut State, name: &str, req: &Req, rest: &[&str]) -> Option<Answer> {
    let boot = s.knobs.boot_time;
    match (req.method, rest) {
        ("GET", []) => {
            let app = s.app_mut(name);
            app.runs.retain(running);
            let app = s.app(name);
            let list = app
                .dynos
                .iter()
                .map(|d| dyno_json(app, d, boot))
                .chain(app.runs.iter().map(|r| run_json(app, r)))
                .collect();
            Some((StatusCode::OK, Value::Array(list)))
        }
        ("GET", [key]) => {
            let app = s.app_mut(name);
            app.runs.retain(running);
            let app = s.app(name);
            if let Some(d) = app.dynos.iter().find(|d| d.name == *key || d.id == *key) {
                return Some((StatusCode::OK, dyno_json(app, d, boot)));
            }
            match app.runs.iter().find(|r| r.name == *key || r.id == *key) {
                Some(r) => Some((StatusCode::OK, run_json(app, r))),
                None => Some(not_found("dyno")),
            }
        }
        ("POST", []) => Some(create(s, name, req)),
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

fn running(r: &RunRec) -> bool {
    r.exit.lock().expect("not poisoned").is_none()
}

/// Stops a one-off dyno's process group (SIGKILL), if it still runs.
pub(super) fn stop_run(r: &RunRec) {
    if running(r) {
        // the process group the emulator started; its leader is reaped only by the
        // waiting thread, which marks the run ended first
        if let Some(pgid) = i32::try_from(r.pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
        }
    }
}

/// `POST /apps/{app}/dynos`: a one-off dyno running `command`.
fn create(s: &mut State, name: &str, req: &Req) -> Answer {
    let Some(command) = req
        .body
        .get("command")
        .and_then(Value::as_str)
        .filter(|c| !c.trim().is_empty())
        .map(str::to_owned)
    else {
        return error(422, "invalid_params", "command is required");
    };
    let kind = req
        .body
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("run")
        .to_owned();
    let env: Vec<(String, String)> = req
        .body
        .get("env")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    let ttl = req
        .body
        .get("time_to_live")
        .and_then(Value::as_u64)
        .map(Duration::from_secs);
    let app = s.app_mut(name);
    let Some(release) = app.releases.last().cloned() else {
        return error(422, "invalid_params", "the app has no release");
    };
    let size = req
        .body
        .get("size")
        .and_then(Value::as_str)
        .unwrap_or("standard-1X")
        .to_owned();
    let dyno = format!("{kind}.{}", fastrand::u32(1000..10000));
    let log = app.logs.clone();
    log_line(
        &log,
        "heroku",
        &dyno,
        &format!("Starting process with command `{command}`"),
    );
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c")
        .arg(&command)
        .env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
        )
        .envs(&release.config)
        .envs(env)
        .env("DYNO", &dyno)
        .env("PORT", "5000")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return error(500, "internal_server_error", &format!("sh: {e}")),
    };
    log_line(&log, "heroku", &dyno, "State changed from starting to up");
    let exit = std::sync::Arc::new(std::sync::Mutex::new(None));
    let pid = child.id();
    let readers: Vec<_> = [
        child
            .stdout
            .take()
            .map(|o| Box::new(o) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|o| Box::new(o) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|out| {
        let (log, dyno) = (log.clone(), dyno.clone());
        std::thread::spawn(move || copy_lines(out, &log, &dyno))
    })
    .collect();
    {
        let (log, dyno, exit) = (log.clone(), dyno.clone(), exit.clone());
        std::thread::spawn(move || {
            let status = child.wait();
            for r in readers {
                let _ = r.join();
            }
            let code = match status {
                Ok(st) => st.code().unwrap_or_else(|| {
                    128 + std::os::unix::process::ExitStatusExt::signal(&st).unwrap_or(0)
                }),
                Err(_) => 1,
            };
            log_line(
                &log,
                "heroku",
                &dyno,
                &format!("Process exited with status {code}"),
            );
            log_line(&log, "heroku", &dyno, "State changed from up to complete");
            *exit.lock().expect("not poisoned") = Some(code);
        });
    }
    let run = RunRec {
        id: uuid(),
        name: dyno,
        kind,
        release: release.id.clone(),
        version: release.version,
        size,
        command,
        created_at: now(),
        pid,
        exit,
    };
    if let Some(ttl) = ttl {
        let r = run.clone();
        std::thread::spawn(move || {
            std::thread::sleep(ttl);
            stop_run(&r);
        });
    }
    let answer = run_json(app, &run);
    app.runs.push(run);
    (StatusCode::CREATED, answer)
}

fn copy_lines(out: Box<dyn std::io::Read + Send>, log: &AppLog, dyno: &str) {
    use std::io::BufRead;
    for line in std::io::BufReader::new(out)
        .split(b'\n')
        .map_while(Result::ok)
    {
        log_line(log, "app", dyno, String::from_utf8_lossy(&line).trim_end());
    }
}

fn run_json(app: &AppRec, r: &RunRec) -> Value {
    json!({
        "attach_url": null,
        "command": r.command,
        "created_at": r.created_at,
        "id": r.id,
        "name": r.name,
        "release": { "id": r.release, "version": r.version },
        "app": { "name": app.name, "id": app.id },
        "size": r.size,
        "state": "up",
        "type": r.kind,
        "updated_at": r.created_at,
    })
}
