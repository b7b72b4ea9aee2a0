//! Ready-made lifecycle hooks ([`bluegreen_core::Hook`]): a local command
//! ([`CommandHook`]) and a signed HTTP POST ([`WebhookHook`]).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bluegreen_core::redact::{url_without_credentials, HIDDEN};
use bluegreen_core::{Decision, Error, Hook, HookContext, Result};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use crate::error::failed;

/// The exit status with which a [`CommandHook`]'s command pauses the deployment:
/// 75, `EX_TEMPFAIL` of `sysexits.h` ("try again later").
pub const PAUSE_EXIT_CODE: i32 = 75;

/// How many of the last lines of a failing command's output a
/// [`Decision::Fail`] quotes.
const QUOTED_LINES: usize = 5;

/// The extra time [`Hook::timeout`] gives the engine over a hook's own timeout, so
/// that the hook stops its command (or request) and reports it first.
const MARGIN: Duration = Duration::from_secs(2);

/// The header carrying a [`WebhookHook`]'s signature.
pub const SIGNATURE_HEADER: &str = "bluegreen-signature";

/// A hook that runs a local command.
///
/// The command inherits this program's environment, plus:
///
/// | variable | value |
/// | --- | --- |
/// | `BLUEGREEN_APP` | the app's name (`web`) |
/// | `BLUEGREEN_ENVIRONMENT` | its environment (`production`) |
/// | `BLUEGREEN_STAGE` | the stage, `before_launch` style ([`Stage::as_str`](bluegreen_core::Stage::as_str)) |
/// | `BLUEGREEN_GROUP` | the new group (`web-production-v007`) |
/// | `BLUEGREEN_PREVIOUS_GROUP` | the group that had the most traffic before, empty when none |
/// | `BLUEGREEN_WEIGHT` | the new group's share of traffic now, `0` to `100` |
/// | `BLUEGREEN_DEPLOYMENT` | the deployment's id |
/// | `BLUEGREEN_RESUMED` | `true` when a paused deployment reached this stage again, else `false` |
/// | `BLUEGREEN_PREVIEW_URL` | where the new group is reached alone, empty when the router gives no address |
/// | `BLUEGREEN_RELEASE` | the new release's id |
///
/// Its exit status decides:
///
/// - 0: [`Decision::Continue`];
/// - [`PAUSE_EXIT_CODE`] (75): [`Decision::Pause`], with the last line of output as
///   the reason;
/// - any other status, or a signal: [`Decision::Fail`] with the status and the last
///   lines of output (stdout and stderr together);
/// - a command that does not start: [`Decision::Fail`] naming it.
///
/// A command still running after the hook's timeout (default 300 s) is killed with
/// its whole process group (it runs as its own group) and the hook fails; a
/// deployment that stops waiting kills it too.
///
/// ```
/// use std::time::Duration;
/// use bluegreen_local::CommandHook;
/// let hook = CommandHook::new("smoke", ["./scripts/smoke-test", "--quick"])
///     .unwrap()
///     .with_timeout(Duration::from_secs(60));
/// assert_eq!(bluegreen_core::Hook::name(&hook), "smoke");
/// assert!(CommandHook::new("empty", Vec::<String>::new()).is_err());
/// ```
#[derive(Clone, Debug)]
pub struct CommandHook {
    name: String,
    command: Vec<OsString>,
    env: BTreeMap<String, String>,
    current_dir: Option<std::path::PathBuf>,
    timeout: Duration,
}

impl CommandHook {
    /// A hook named `name` running `command` (the program, then its arguments), with
    /// a 300 s timeout.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming `hook.name` (empty) or `hook.command` (empty, or a
    /// blank program).
    pub fn new<S: Into<OsString>>(
        name: impl Into<String>,
        command: impl IntoIterator<Item = S>,
    ) -> Result<Self> {
        let name = check_name(name.into())?;
        let command: Vec<OsString> = command.into_iter().map(Into::into).collect();
        match command.first() {
            None => {
                return Err(Error::invalid(
                    "hook.command",
                    "is empty: name the program to run",
                ))
            }
            Some(p) if p.to_string_lossy().trim().is_empty() => {
                return Err(Error::invalid("hook.command[0]", "the program is blank"))
            }
            Some(_) => {}
        }
        Ok(CommandHook {
            name,
            command,
            env: BTreeMap::new(),
            current_dir: None,
            timeout: Duration::from_secs(300),
        })
    }

    /// Sets how long the command may run before it is killed and the hook fails
    /// (default 300 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Adds an environment variable for the command (the `BLUEGREEN_*` ones win).
    pub fn with_env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    /// Runs the command in `dir` (default: this program's working directory).
    pub fn with_current_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.current_dir = Some(dir.into());
        self
    }

    fn shown(&self) -> String {
        self.command
            .iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The `BLUEGREEN_*` variables of a hook's context.
pub fn hook_env(context: &HookContext) -> Vec<(&'static str, String)> {
    vec![
        ("BLUEGREEN_APP", context.app.name().to_owned()),
        (
            "BLUEGREEN_ENVIRONMENT",
            context.app.environment().to_owned(),
        ),
        ("BLUEGREEN_STAGE", context.stage.as_str().to_owned()),
        ("BLUEGREEN_GROUP", context.group.to_string()),
        (
            "BLUEGREEN_PREVIOUS_GROUP",
            context
                .previous
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
        ),
        ("BLUEGREEN_WEIGHT", context.weight.to_string()),
        ("BLUEGREEN_DEPLOYMENT", context.deployment.to_string()),
        ("BLUEGREEN_RESUMED", context.resumed.to_string()),
        (
            "BLUEGREEN_PREVIEW_URL",
            context.preview.clone().unwrap_or_default(),
        ),
        ("BLUEGREEN_RELEASE", context.release.id().to_string()),
    ]
}

fn check_name(name: String) -> Result<String> {
    if name.trim().is_empty() {
        return Err(Error::invalid("hook.name", "is empty"));
    }
    Ok(name)
}

/// Kills a process group when dropped, unless disarmed.
struct GroupGuard(Option<i32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0.take() {
            // the process group this hook started; its leader has not been reaped
            // (the guard is disarmed once it is), so the id is not reused
            if let Some(pgid) = rustix::process::Pid::from_raw(pgid) {
                let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
            }
        }
    }
}

async fn collect(stream: impl AsyncRead + Unpin, into: Arc<Mutex<Vec<String>>>) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        into.lock().expect("not poisoned").push(line);
    }
}

#[async_trait]
impl Hook for CommandHook {
    fn name(&self) -> &str {
        &self.name
    }

    fn timeout(&self) -> Duration {
        self.timeout + MARGIN
    }

    async fn call(&self, context: &HookContext) -> Decision {
        let mut command = tokio::process::Command::new(&self.command[0]);
        command
            .args(&self.command[1..])
            .envs(&self.env)
            .envs(hook_env(context))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(dir) = &self.current_dir {
            command.current_dir(dir);
        }
        let mut child = match command.spawn() {
            Ok(c) => c,
            Err(e) => {
                return Decision::Fail(format!(
                    "hook {}: `{}` did not start: {e}",
                    self.name,
                    self.shown()
                ))
            }
        };
        let mut guard = GroupGuard(child.id().map(|p| p as i32));
        let output = Arc::new(Mutex::new(Vec::new()));
        let readers = [
            child
                .stdout
                .take()
                .map(|s| tokio::spawn(collect(s, output.clone()))),
            child
                .stderr
                .take()
                .map(|s| tokio::spawn(collect(s, output.clone()))),
        ];
        let waited = tokio::time::timeout(self.timeout, child.wait()).await;
        let status = match waited {
            Ok(Ok(status)) => {
                guard.0 = None;
                status
            }
            Ok(Err(e)) => {
                return Decision::Fail(format!(
                    "hook {}: waiting for `{}`: {e}",
                    self.name,
                    self.shown()
                ))
            }
            Err(_) => {
                drop(guard);
                let _ = child.wait().await;
                return Decision::Fail(format!(
                    "hook {}: `{}` ran longer than {} s: killed",
                    self.name,
                    self.shown(),
                    self.timeout.as_secs_f64()
                ));
            }
        };
        // the output is whole once the pipes close (a child of the command may keep
        // them open: wait a little, no more)
        for reader in readers.into_iter().flatten() {
            let _ = tokio::time::timeout(Duration::from_secs(1), reader).await;
        }
        let lines = output.lock().expect("not poisoned").clone();
        let last = |n: usize| lines[lines.len().saturating_sub(n)..].join("\n");
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(0), _) => Decision::Continue,
            (Some(PAUSE_EXIT_CODE), _) => Decision::Pause(
                lines
                    .iter()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .cloned()
                    .unwrap_or_else(|| {
                        format!("hook {} paused (exit status {PAUSE_EXIT_CODE})", self.name)
                    }),
            ),
            (Some(code), _) => Decision::Fail(format!(
                "hook {}: `{}` exited with status {code}{}",
                self.name,
                self.shown(),
                if lines.is_empty() {
                    String::new()
                } else {
                    format!(":\n{}", last(QUOTED_LINES))
                }
            )),
            (None, signal) => Decision::Fail(format!(
                "hook {}: `{}` was killed by signal {}{}",
                self.name,
                self.shown(),
                signal.unwrap_or_default(),
                if lines.is_empty() {
                    String::new()
                } else {
                    format!(":\n{}", last(QUOTED_LINES))
                }
            )),
        }
    }
}

/// A hook that POSTs the context, as JSON, to an HTTP or HTTPS address, signed.
///
/// # The request
///
/// `POST <url>` with `content-type: application/json`, `user-agent: bluegreen`,
/// `bluegreen-stage: <stage>`, `bluegreen-deployment: <id>` and the signature header
/// ([`SIGNATURE_HEADER`]):
///
/// ```text
/// bluegreen-signature: sha256=<hex of HMAC-SHA256(secret, body)>
/// ```
///
/// computed over the exact bytes of the body, as GitHub's `X-Hub-Signature-256`. A
/// receiver recomputes it with the shared secret and compares in constant time
/// before trusting the body. The body ([`WebhookBody`]):
///
/// ```json
/// {"hook":"approve","app":"web","environment":"production","stage":"before_traffic",
///  "deployment":"…","group":"web-production-v007","previous_group":"web-production-v006",
///  "weight":0,"preview_url":null,"resumed":false,"release":"…","image":"sha256:…"}
/// ```
///
/// # The answer
///
/// - 2xx with no body, a body that is not JSON, or a JSON object without
///   `decision`: [`Decision::Continue`];
/// - 2xx with `{"decision": "continue" | "pause" | "fail", "reason": "…"}`: that
///   decision (`reason` optional); another `decision` fails closed;
/// - any other status: [`Decision::Fail`] with the status and the start of the body;
/// - no answer (refused, DNS, TLS) or none within the timeout (default 30 s):
///   [`Decision::Fail`] naming the URL.
///
/// Redirects are not followed (a redirect is a non-2xx answer).
///
/// ```
/// use bluegreen_local::WebhookHook;
/// let hook = WebhookHook::new("approve", "https://ops.example.com/hooks/deploy", "s3cret").unwrap();
/// assert!(WebhookHook::new("approve", "ftp://example.com", "s3cret").is_err());
/// assert!(WebhookHook::new("approve", "https://example.com", "").is_err());
/// ```
#[derive(Clone)]
pub struct WebhookHook {
    name: String,
    url: reqwest::Url,
    secret: Vec<u8>,
    timeout: Duration,
    client: reqwest::Client,
}

impl std::fmt::Debug for WebhookHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookHook")
            .field("name", &self.name)
            .field("url", &self.shown_url())
            .field("secret", &HIDDEN)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The JSON body a [`WebhookHook`] POSTs.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookBody {
    /// The hook's name.
    pub hook: String,
    /// The app's name.
    pub app: String,
    /// The app's environment.
    pub environment: String,
    /// The stage, `before_launch` style.
    pub stage: String,
    /// The deployment's id.
    pub deployment: String,
    /// The new group.
    pub group: String,
    /// The group with the most traffic before, if any.
    pub previous_group: Option<String>,
    /// The new group's share of traffic now, 0 to 100.
    pub weight: u8,
    /// Where the new group is reached alone, if the router gives an address.
    pub preview_url: Option<String>,
    /// A paused deployment reached this stage again.
    pub resumed: bool,
    /// The new release's id.
    pub release: String,
    /// The new release's image id.
    pub image: String,
}

impl WebhookBody {
    /// The body describing `context` for the hook `hook`.
    pub fn of(hook: &str, context: &HookContext) -> Self {
        WebhookBody {
            hook: hook.to_owned(),
            app: context.app.name().to_owned(),
            environment: context.app.environment().to_owned(),
            stage: context.stage.as_str().to_owned(),
            deployment: context.deployment.to_string(),
            group: context.group.to_string(),
            previous_group: context.previous.as_ref().map(ToString::to_string),
            weight: context.weight,
            preview_url: context.preview.clone(),
            resumed: context.resumed,
            release: context.release.id().to_string(),
            image: context.release.image.to_string(),
        }
    }
}

#[derive(Deserialize)]
struct Answer {
    decision: Option<String>,
    reason: Option<String>,
}

/// `sha256=<hex>`: the HMAC-SHA256 of `body` under `secret`, as sent in
/// [`SIGNATURE_HEADER`].
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(secret)
        .expect("HMAC takes a key of any length");
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    let mut hex = String::with_capacity(7 + bytes.len() * 2);
    hex.push_str("sha256=");
    for b in bytes {
        hex.push_str(&format!("{b:02x}"));
    }
    hex
}

impl WebhookHook {
    /// A hook named `name` POSTing to `url` (`http` or `https`), signed with
    /// `secret`, with a 30 s timeout.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming `hook.name` (empty), `hook.url` (not an absolute
    /// `http`/`https` URL) or `hook.secret` (empty).
    pub fn new(
        name: impl Into<String>,
        url: impl AsRef<str>,
        secret: impl Into<Vec<u8>>,
    ) -> Result<Self> {
        let name = check_name(name.into())?;
        let shown = url_without_credentials(url.as_ref()).into_owned();
        let url = reqwest::Url::parse(url.as_ref())
            .map_err(|e| Error::invalid("hook.url", format!("`{shown}` is not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(Error::invalid(
                "hook.url",
                format!("`{shown}` is not an http or https address"),
            ));
        }
        let secret = secret.into();
        if secret.is_empty() {
            return Err(Error::invalid(
                "hook.secret",
                "is empty: the body is signed with it",
            ));
        }
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent("bluegreen")
            .build()
            .map_err(|e| failed(format!("an HTTP client: {e}")))?;
        Ok(WebhookHook {
            name,
            url,
            secret,
            timeout: Duration::from_secs(30),
            client,
        })
    }

    /// The URL without the user name and password it may carry, for messages.
    fn shown_url(&self) -> std::borrow::Cow<'_, str> {
        url_without_credentials(self.url.as_str())
    }

    /// Sets how long the hook waits for an answer (default 30 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

#[async_trait]
impl Hook for WebhookHook {
    fn name(&self) -> &str {
        &self.name
    }

    fn timeout(&self) -> Duration {
        self.timeout + MARGIN
    }

    async fn call(&self, context: &HookContext) -> Decision {
        let body =
            serde_json::to_vec(&WebhookBody::of(&self.name, context)).expect("the body serializes");
        let sent = self
            .client
            .post(self.url.clone())
            .timeout(self.timeout)
            .header("content-type", "application/json")
            .header("bluegreen-stage", context.stage.as_str())
            .header("bluegreen-deployment", context.deployment.to_string())
            .header(SIGNATURE_HEADER, signature(&self.secret, &body))
            .body(body)
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) if e.is_timeout() => {
                return Decision::Fail(format!(
                    "hook {}: POST {}: no answer within {} s",
                    self.name,
                    self.shown_url(),
                    self.timeout.as_secs_f64()
                ))
            }
            Err(e) => {
                let mut cause = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    cause.push_str(&format!(": {s}"));
                    source = s.source();
                }
                return Decision::Fail(format!(
                    "hook {}: POST {} is unreachable: {cause}",
                    self.name,
                    self.shown_url()
                ));
            }
        };
        let status = response.status();
        let text = match tokio::time::timeout(self.timeout, response.text()).await {
            Ok(Ok(t)) => t,
            Ok(Err(_)) | Err(_) if !status.is_success() => String::new(),
            Ok(Err(e)) => {
                return Decision::Fail(format!(
                    "hook {}: POST {}: reading the answer: {e}",
                    self.name,
                    self.shown_url()
                ))
            }
            Err(_) => {
                return Decision::Fail(format!(
                    "hook {}: POST {}: the answer did not end within {} s",
                    self.name,
                    self.shown_url(),
                    self.timeout.as_secs_f64()
                ))
            }
        };
        if !status.is_success() {
            let start: String = text.trim().chars().take(200).collect();
            return Decision::Fail(format!(
                "hook {}: POST {} answered {status}{}",
                self.name,
                self.shown_url(),
                if start.is_empty() {
                    String::new()
                } else {
                    format!(": {start}")
                }
            ));
        }
        let Ok(answer) = serde_json::from_str::<Answer>(&text) else {
            return Decision::Continue;
        };
        let reason = answer.reason.unwrap_or_default();
        match answer.decision.as_deref() {
            None | Some("continue") => Decision::Continue,
            Some("pause") => Decision::Pause(if reason.is_empty() {
                format!("hook {} paused the deployment", self.name)
            } else {
                reason
            }),
            Some("fail") => Decision::Fail(if reason.is_empty() {
                format!("hook {} failed the deployment", self.name)
            } else {
                format!("hook {}: {reason}", self.name)
            }),
            Some(other) => Decision::Fail(format!(
                "hook {}: POST {} answered the decision `{other}`, not continue, pause or fail",
                self.name,
                self.shown_url()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_githubs_hmac_sha256() {
        // RFC 4231 test case 2
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn bad_hooks_name_the_field() {
        let field = |e: Error| match e {
            Error::Invalid { field, .. } => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            field(CommandHook::new("", ["true"]).unwrap_err()),
            "hook.name"
        );
        assert_eq!(
            field(CommandHook::new("x", [" "]).unwrap_err()),
            "hook.command[0]"
        );
        assert_eq!(
            field(WebhookHook::new("x", "not a url", "s").unwrap_err()),
            "hook.url"
        );
        assert_eq!(
            field(WebhookHook::new("x", "file:///etc/passwd", "s").unwrap_err()),
            "hook.url"
        );
        assert_eq!(
            field(WebhookHook::new("x", "http://127.0.0.1:1/", "").unwrap_err()),
            "hook.secret"
        );
    }
}
