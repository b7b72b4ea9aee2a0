//! Where a group's labels live on this machine.
//!
//! A local group has no platform to hold its labels, so they are kept twice: in the
//! group's file, `<state>/groups/<app>/<group>/group.json` (its labels and its whole
//! record), and as marks in the environment of every process it starts, so that a
//! process whose record was never written (the deployer killed between the spawn
//! and the write) is still found and stopped.

use bluegreen_core::labels::Labels;
use serde::{Deserialize, Serialize};

/// The mark of every process bluegreen starts: `BLUEGREEN_OWNER=bluegreen`.
pub(crate) const MARK_OWNER: &str = "BLUEGREEN_OWNER";
/// The mark of the state directory that started a process; a process of another
/// state directory is never touched.
pub(crate) const MARK_STATE: &str = "BLUEGREEN_STATE_DIR";
/// The mark of an instance's group (its id).
pub(crate) const MARK_GROUP: &str = "BLUEGREEN_GROUP";
/// The mark of a release task's processes: `<app slug>/<group id>`.
pub(crate) const MARK_TASK: &str = "BLUEGREEN_TASK";

/// A group's file: its labels and its record.
#[derive(Serialize, Deserialize)]
pub(crate) struct GroupFile {
    /// The group's labels.
    pub(crate) labels: Labels,
    /// [`Group::to_record`](bluegreen_core::Group::to_record).
    pub(crate) record: String,
}
