//! The user data every instance of a group boots with: the group's record (release
//! included) on a comment line, the release's environment written to
//! `/etc/bluegreen/release.env`, then the fleet's own script.

use base64::Engine as _;
use bluegreen_core::Group;

const RECORD_LINE: &str = "# bluegreen-record: ";

/// The user data of `group`, base64-encoded as EC2 takes it, with `script` appended.
pub(crate) fn encode(group: &Group, script: Option<&str>) -> String {
    let b64 = &base64::engine::general_purpose::STANDARD;
    let record = b64.encode(group.to_record());
    // the environment travels base64-encoded: no value can end a heredoc or run
    let mut env = String::new();
    for (k, v) in &group.release.env {
        env.push_str(&format!("{k}='{}'\n", v.replace('\'', r"'\''")));
    }
    let env = b64.encode(env);
    let mut text = format!(
        "#!/bin/sh\n{RECORD_LINE}{record}\nmkdir -p /etc/bluegreen\necho '{env}' | base64 -d > /etc/bluegreen/release.env\n"
    );
    if let Some(extra) = script {
        text.push_str(extra);
        text.push('\n');
    }
    b64.encode(text)
}

/// The group record in base64-encoded user data, when it carries one.
pub(crate) fn record(encoded: &str) -> Option<String> {
    let b64 = &base64::engine::general_purpose::STANDARD;
    let bytes = b64.decode(encoded.trim()).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    let line = text.lines().find_map(|l| l.strip_prefix(RECORD_LINE))?;
    let record = b64.decode(line.trim()).ok()?;
    Some(String::from_utf8_lossy(&record).into_owned())
}
