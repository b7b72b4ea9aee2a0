//! Release tasks: a one-off command run from a new release's image and
//! configuration before the release gets traffic (a database migration, as Heroku's
//! release phase or Kamal's `pre-deploy` hook run one).
//!
//! A release names its task ([`Release::with_task`](crate::Release::with_task)); a
//! fleet that declares [`FleetCapabilities::tasks`](crate::FleetCapabilities::tasks)
//! runs it with [`Fleet::start_task`](crate::Fleet::start_task) and reports it with
//! [`Fleet::task`](crate::Fleet::task). The task's record lives on the platform,
//! keyed by the group id, so that a deployment run again after a crash finds a
//! finished task and does not run it twice.
//!
//! What a task cannot undo: rolling the code back does not roll a migration back.
//! Write migrations expand/contract (add before use, remove only after no release
//! reads it), and mark a task that cannot be gone behind
//! [`ReleaseTask::irreversible`]: a rollback behind it is then refused unless forced.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::release::ReleaseId;

/// The longest a task may be given to finish.
pub const MAX_TASK_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// When a release's task runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskPhase {
    /// After the image is prepared, before the new group is launched (the default):
    /// a failing task leaves nothing launched.
    #[default]
    BeforeLaunch,
    /// Once every instance of the new group is healthy, before it is attached to
    /// the router: for a task that needs the new release running.
    AfterHealthy,
}

/// A one-off command of a release.
///
/// ```
/// use std::time::Duration;
/// use bluegreen_core::{ReleaseTask, TaskPhase};
/// let task = ReleaseTask::new(["migrate", "--to", "latest"])
///     .with_timeout(Duration::from_secs(600))
///     .irreversible();
/// assert_eq!(task.phase, TaskPhase::BeforeLaunch);
/// assert!(task.validate().is_ok());
/// assert!(ReleaseTask::new(Vec::<String>::new()).validate().is_err());
/// ```
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseTask {
    /// The program and its arguments, run with the release's environment.
    pub command: Vec<String>,
    /// When it runs.
    #[serde(default)]
    pub phase: TaskPhase,
    /// How long the deployment waits for it, in whole seconds (default 600 s; a
    /// fraction of a second is refused by [`ReleaseTask::validate`], since the
    /// platform's record keeps whole seconds). A task still running then is stopped
    /// and the deployment fails closed.
    #[serde(with = "secs", default = "default_timeout")]
    pub timeout: Duration,
    /// Going back behind this release is unsafe (the task changed data in a way the
    /// older code cannot read): [`Engine::rollback`](crate::Engine::rollback) refuses
    /// unless forced.
    #[serde(default)]
    pub irreversible: bool,
}

fn default_timeout() -> Duration {
    Duration::from_secs(600)
}

mod secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

impl ReleaseTask {
    /// A task running `command` before launch, with a 600 s timeout.
    pub fn new<S: Into<String>>(command: impl IntoIterator<Item = S>) -> Self {
        ReleaseTask {
            command: command.into_iter().map(Into::into).collect(),
            phase: TaskPhase::BeforeLaunch,
            timeout: default_timeout(),
            irreversible: false,
        }
    }

    /// Sets [`ReleaseTask::phase`].
    pub fn with_phase(mut self, phase: TaskPhase) -> Self {
        self.phase = phase;
        self
    }

    /// Sets [`ReleaseTask::timeout`], in whole seconds.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Marks the task [`ReleaseTask::irreversible`].
    pub fn irreversible(mut self) -> Self {
        self.irreversible = true;
        self
    }

    /// Checks the command and the timeout; errors name `task.command` or
    /// `task.timeout`.
    pub fn validate(&self) -> Result<()> {
        let Some(program) = self.command.first() else {
            return Err(Error::invalid(
                "task.command",
                "is empty: name the program to run",
            ));
        };
        if program.trim().is_empty() {
            return Err(Error::invalid("task.command[0]", "the program is blank"));
        }
        if let Some(i) = self.command.iter().position(|a| a.contains('\0')) {
            return Err(Error::invalid(
                format!("task.command[{i}]"),
                "must not contain NUL",
            ));
        }
        if self.timeout < Duration::from_secs(1) {
            return Err(Error::invalid("task.timeout", "must be at least 1 s"));
        }
        if self.timeout.subsec_nanos() != 0 {
            return Err(Error::invalid(
                "task.timeout",
                format!(
                    "{:?} is not a whole number of seconds (the record keeps seconds)",
                    self.timeout
                ),
            ));
        }
        if self.timeout > MAX_TASK_TIMEOUT {
            return Err(Error::invalid(
                "task.timeout",
                format!(
                    "{} s is more than the most, {} s",
                    self.timeout.as_secs(),
                    MAX_TASK_TIMEOUT.as_secs()
                ),
            ));
        }
        Ok(())
    }
}

/// Where a task is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Started and not finished.
    Running,
    /// Exited with status 0.
    Succeeded,
    /// Exited with another status, was killed, or could not start.
    Failed {
        /// The exit status, where there is one.
        exit_code: Option<i32>,
        /// What the platform says happened.
        reason: String,
    },
}

impl TaskState {
    /// Whether the task has finished, either way.
    pub fn is_finished(&self) -> bool {
        !matches!(self, TaskState::Running)
    }
}

/// A task as the fleet reports it.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStatus {
    /// The release the task was started for: a record of another release under the
    /// same group id is a leftover, not this release's task.
    pub release: ReleaseId,
    /// Where it is.
    pub state: TaskState,
    /// Its output so far, one entry a line (stdout and stderr together), oldest
    /// first. A fleet may keep only the last lines: then `dropped` counts the lines
    /// before them.
    pub output: Vec<String>,
    /// Lines of output no longer kept, before `output`.
    pub dropped: u64,
}

impl TaskStatus {
    /// A status with no output.
    pub fn new(release: ReleaseId, state: TaskState) -> Self {
        TaskStatus {
            release,
            state,
            output: Vec::new(),
            dropped: 0,
        }
    }

    /// Sets the output.
    pub fn with_output(mut self, output: Vec<String>, dropped: u64) -> Self {
        self.output = output;
        self.dropped = dropped;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_tasks_name_the_field() {
        let field = |t: ReleaseTask| match t.validate() {
            Err(Error::Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field(ReleaseTask::new([" "])), "task.command[0]");
        assert_eq!(field(ReleaseTask::new(["a", "b\0"])), "task.command[1]");
        assert_eq!(
            field(ReleaseTask::new(["a"]).with_timeout(Duration::ZERO)),
            "task.timeout"
        );
        assert_eq!(
            field(ReleaseTask::new(["a"]).with_timeout(MAX_TASK_TIMEOUT * 2)),
            "task.timeout"
        );
        assert_eq!(
            field(ReleaseTask::new(["a"]).with_timeout(Duration::from_millis(1900))),
            "task.timeout"
        );
    }

    #[test]
    fn a_record_round_trips() {
        let t = ReleaseTask::new(["migrate"])
            .with_phase(TaskPhase::AfterHealthy)
            .irreversible();
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(
            json,
            r#"{"command":["migrate"],"phase":"after_healthy","timeout":600,"irreversible":true}"#
        );
        assert_eq!(serde_json::from_str::<ReleaseTask>(&json).unwrap(), t);
    }
}
