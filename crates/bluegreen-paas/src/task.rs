//! Release tasks in app mode ([`AppFleet`](crate::AppFleet)): a one-off dyno of the
//! group's app, created with the Platform API's Dyno Create.
//!
//! The platform keeps no record of a finished one-off dyno: the API lists a dyno only
//! while it runs, and its exit status exists only in the app's log (`heroku[run.N]:
//! Process exited with status N`). So:
//!
//! - the record that a task was started is a config var of the group's app,
//!   [`TASK_VAR`], holding the release id, set before the dyno is created (a second
//!   start finds it and creates nothing);
//! - the state is read from the API and the log: a `run` dyno of the app running
//!   the task's command is [`TaskState::Running`]; otherwise the last `Starting
//!   process with command` line of that command in a log session (the last 1500
//!   lines, all Logplex keeps) names the dyno, and its `Process exited with status`
//!   line the result;
//! - a task whose dyno is gone and whose exit line is no longer in the log (pushed
//!   out by 1500 newer lines, or a start that stopped between the record and the
//!   dyno) is [`TaskState::Failed`] with a reason that says so: it is never started
//!   again for the same group.

use bluegreen_core::{Error, Group, GroupId, ReleaseId, Result, TaskState, TaskStatus};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::api::{self, seg};
use crate::apps::{self, Found};
use crate::fleet::AppFleet;
use crate::labels;
use crate::settings;

/// The config var of a group's app recording that its task was started: the
/// release id.
pub const TASK_VAR: &str = "BLUEGREEN_TASK";

/// The most log lines a log session asks for (Logplex keeps 1500 per app).
const LOG_LINES: u32 = 1500;

/// The command line of a task, each word quoted for the dyno's shell.
pub(crate) fn command_line(command: &[String]) -> String {
    command
        .iter()
        .map(|w| {
            if !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c))
            {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

pub(crate) async fn start(fleet: &AppFleet, group: &Group) -> Result<()> {
    let task =
        group.release.task.as_ref().ok_or_else(|| {
            Error::invalid("task", format!("the release of {} has none", group.id))
        })?;
    task.validate()?;
    let settings = settings::check_release(&group.release)?;
    let client = fleet.client();
    let name = fleet
        .naming()
        .group_app(&group.app, &group.id)
        .ok_or_else(|| {
            Error::invalid(
                "group",
                format!("{} does not fit a 30-character app name", group.id),
            )
        })?;
    if let Found::Ours(_, vars) = apps::find(client, &name, &group.app).await? {
        match labels::group_of(&vars, &group.app) {
            Some(Ok(found)) if &found == group => {}
            Some(Ok(found)) => {
                return Err(Error::conflict(format!(
                    "app {name} holds {} of release {}, not release {}",
                    found.id,
                    found.release.id(),
                    group.release.id()
                )))
            }
            Some(Err(e)) => return Err(e),
            None => {
                return Err(Error::conflict(format!(
                    "app {name} carries {}'s marks but no group record",
                    group.app
                )))
            }
        }
        if vars.contains_key(TASK_VAR) {
            return Ok(());
        }
    }
    // the group's app, in maintenance mode, with its marks; the claim is the last
    // config change before the slug is released, so the release carries it
    let (_, vars, _) =
        apps::ensure(client, &name, &group.app, &labels::group_vars(group), true).await?;
    if !vars.contains_key(TASK_VAR) {
        api::patch_config(
            client,
            &name,
            &[(TASK_VAR.to_owned(), Some(group.release.id().to_string()))]
                .into_iter()
                .collect(),
        )
        .await?;
    }
    let current_slug = api::releases(client, &name)
        .await?
        .iter()
        .rev()
        .find(|r| r.current)
        .and_then(|r| r.slug.as_ref())
        .map(|s| s.id.clone());
    if current_slug.as_deref() != Some(group.release.image.as_str()) {
        api::release(client, &name, group).await?;
        // the platform scales `web` to one dyno at a slug's first release: the group
        // is not launched yet, so none of its process type runs until `launch`
        api::scale(
            client,
            &name,
            &settings.process_type,
            0,
            settings.dyno_size.as_deref(),
        )
        .await?;
    }
    let mut body = json!({
        "command": command_line(&task.command),
        "type": "run",
        "attach": false,
        "time_to_live": task.timeout.as_secs(),
        "env": { "BLUEGREEN_TASK_GROUP": group.id.as_str() },
    });
    if let Some(size) = &settings.dyno_size {
        body["size"] = json!(size);
    }
    client
        .post::<Value>(&format!("/apps/{}/dynos", seg(&name)), &body)
        .await?;
    Ok(())
}

#[derive(Deserialize)]
struct LogSession {
    logplex_url: String,
}

#[derive(Deserialize)]
struct RunDyno {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    command: Option<String>,
}

pub(crate) async fn status(
    fleet: &AppFleet,
    app: &bluegreen_core::App,
    group: &GroupId,
) -> Result<Option<TaskStatus>> {
    let Some(found) = fleet.group_app(app, group).await? else {
        return Ok(None);
    };
    let client = fleet.client();
    let Some(vars) = api::config_vars(client, &found.name).await? else {
        return Ok(None);
    };
    let Some(release) = vars.get(TASK_VAR) else {
        return Ok(None);
    };
    let release = ReleaseId::new(release.clone());
    let Some(task) = found.group.release.task.as_ref() else {
        return Err(Error::conflict(format!(
            "app {} records a task but its group's release has none",
            found.name
        )));
    };
    let command = command_line(&task.command);
    // the dynos first, then the log: a dyno that ends in between has its exit line
    let dynos: Vec<RunDyno> = client
        .list(&format!("/apps/{}/dynos", seg(&found.name)))
        .await?;
    let running = dynos
        .iter()
        .find(|d| d.kind == "run" && d.command.as_deref() == Some(command.as_str()))
        .map(|d| d.name.clone());
    let session: LogSession = client
        .post(
            &format!("/apps/{}/log-sessions", seg(&found.name)),
            &json!({ "lines": LOG_LINES, "tail": false }),
        )
        .await?;
    let mut lines = Vec::new();
    client
        .stream_lines(&session.logplex_url, |l| lines.push(l))
        .await?;
    let started = format!("Starting process with command `{command}`");
    let dyno = lines
        .iter()
        .rev()
        .find_map(|l| {
            let (source, dyno, text) = parse(l)?;
            (source == "heroku" && text == started).then(|| dyno.to_owned())
        })
        .or(running.clone());
    let mut output = Vec::new();
    let mut exit = None;
    if let Some(dyno) = &dyno {
        for l in &lines {
            match parse(l) {
                Some(("app", d, text)) if d == dyno => output.push(text.to_owned()),
                Some(("heroku", d, text)) if d == dyno => {
                    if let Some(code) = text.strip_prefix("Process exited with status ") {
                        exit = code.trim().parse::<i32>().ok();
                    }
                }
                _ => {}
            }
        }
    }
    let state = match (exit, &running) {
        (Some(0), _) => TaskState::Succeeded,
        (Some(code), _) => TaskState::Failed {
            exit_code: Some(code),
            reason: format!(
                "dyno {} exited with status {code}",
                dyno.as_deref().unwrap_or("?")
            ),
        },
        (None, Some(_)) => TaskState::Running,
        (None, None) => TaskState::Failed {
            exit_code: None,
            reason: match &dyno {
                Some(d) => {
                    format!("dyno {d} no longer runs and its exit status is not in the app's log")
                }
                None => format!(
                    "no dyno of the task runs on {} and the app's last {LOG_LINES} log lines \
                     do not show it: it ended too long ago to tell, or its start stopped \
                     before the dyno was created",
                    found.name
                ),
            },
        },
    };
    Ok(Some(TaskStatus::new(release, state).with_output(output, 0)))
}

/// `<time> <source>[<dyno>]: <text>`, Logplex's line.
fn parse(line: &str) -> Option<(&str, &str, &str)> {
    let (_, rest) = line.split_once(' ')?;
    let (tag, text) = rest.split_once(": ")?;
    let (source, dyno) = tag.strip_suffix(']')?.split_once('[')?;
    Some((source, dyno, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_quoted_for_the_shell() {
        let words = |w: &[&str]| command_line(&w.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(words(&["rake", "db:migrate"]), "rake db:migrate");
        assert_eq!(words(&["sh", "-c", "echo it's"]), r"sh -c 'echo it'\''s'");
        assert_eq!(words(&["a", ""]), "a ''");
    }

    #[test]
    fn log_lines_parse() {
        assert_eq!(
            parse("2024-01-01T00:00:00.000Z heroku[run.1234]: Process exited with status 3"),
            Some(("heroku", "run.1234", "Process exited with status 3"))
        );
        assert_eq!(
            parse("2024-01-01T00:00:00.000Z app[run.1234]: a: b"),
            Some(("app", "run.1234", "a: b"))
        );
        assert_eq!(parse("garbage"), None);
    }
}
