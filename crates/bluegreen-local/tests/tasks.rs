//! Release tasks on the local fleet, with real processes: success, failure, one run
//! per group id, a task found again by another program, a task whose process was
//! killed, destroy, and records without bluegreen's labels.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bluegreen_core::{
    App, DeploymentId, ErrorKind, EventSink, Fleet, Generation, Group, Image, ImageSource, Release,
    ReleaseTask, TaskState, TaskStatus,
};
use bluegreen_local::{LocalFleet, LocalImage, StateDir};
use support::{state, Scratch};

/// The environment variable that makes this test program, run again by
/// [`a_task_outlives_the_program_that_started_it`], start a task and exit.
const CHILD: &str = "BLUEGREEN_TASK_TEST_CHILD";

struct Rig {
    _guard: Option<Scratch>,
    root: PathBuf,
    state: StateDir,
    fleet: LocalFleet,
    image: LocalImage,
    app: App,
}

async fn rig(tag: &str) -> Rig {
    let tmp = Scratch::new(tag);
    let root = tmp.path().to_path_buf();
    rig_in(Some(tmp), root).await
}

async fn rig_in(guard: Option<Scratch>, root: PathBuf) -> Rig {
    let state = state(&root);
    let image = LocalImage::new(state.clone());
    let fleet = LocalFleet::new(state.clone(), image.clone());
    Rig {
        _guard: guard,
        root,
        state,
        fleet,
        image,
        app: App::new("web", "tasks").unwrap(),
    }
}

impl Rig {
    /// A group of generation `g` whose task runs `script` with `sh -c`, with
    /// `MARKER` set to the marker file.
    async fn group(&self, g: u32, script: &str) -> Group {
        let dir = self.root.join("image");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("README"), "a task image").unwrap();
        let image = self
            .image
            .prepare(
                &self.app,
                &ImageSource::Artifact(dir),
                &EventSink::default(),
            )
            .await
            .unwrap();
        let release = Release::new(image.id, 1)
            .with_env("MARKER", self.marker().display().to_string())
            .with_setting("stop_timeout_ms", "2000")
            .with_task(ReleaseTask::new(["sh", "-c", script]));
        Group::new(
            self.app.clone(),
            Generation(g),
            release,
            DeploymentId::random(),
            None,
        )
    }

    fn marker(&self) -> PathBuf {
        self.root.join("marker")
    }

    fn runs(&self) -> usize {
        std::fs::read_to_string(self.marker())
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    fn task_dir(&self, group: &Group) -> PathBuf {
        self.state
            .root()
            .join("tasks")
            .join(self.app.slug())
            .join(group.id.as_str())
    }
}

async fn finished(fleet: &LocalFleet, group: &Group) -> TaskStatus {
    for _ in 0..200 {
        let status = fleet.task(&group.app, &group.id).await.unwrap().unwrap();
        if status.state.is_finished() {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the task of {} did not finish within 10 s", group.id);
}

fn wait_for(path: &Path) -> String {
    for _ in 0..200 {
        if let Ok(s) = std::fs::read_to_string(path) {
            if s.ends_with('\n') {
                return s;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{} was not written", path.display());
}

fn alive(pid: i32) -> bool {
    rustix::process::Pid::from_raw(pid)
        .is_some_and(|pid| rustix::process::test_kill_process(pid).is_ok())
}

#[tokio::test]
async fn a_task_that_succeeds_reports_its_output() {
    let rig = rig("task-ok").await;
    let group = rig
        .group(
            1,
            "echo migrating; echo warning >&2; echo run >> \"$MARKER\"",
        )
        .await;
    assert!(rig.fleet.capabilities().tasks);
    assert_eq!(rig.fleet.task(&rig.app, &group.id).await.unwrap(), None);
    rig.fleet.start_task(&group).await.unwrap();
    let status = finished(&rig.fleet, &group).await;
    assert_eq!(status.state, TaskState::Succeeded);
    assert_eq!(status.release, group.release.id());
    assert_eq!(status.output, ["migrating", "warning"]);
    assert_eq!(status.dropped, 0);
    assert_eq!(rig.runs(), 1);
}

#[tokio::test]
async fn a_task_that_fails_reports_its_status_and_output() {
    let rig = rig("task-fail").await;
    let group = rig.group(1, "echo 'no such table' >&2; exit 3").await;
    rig.fleet.start_task(&group).await.unwrap();
    let status = finished(&rig.fleet, &group).await;
    match &status.state {
        TaskState::Failed { exit_code, reason } => {
            assert_eq!(*exit_code, Some(3));
            assert!(reason.contains("status 3"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(status.output, ["no such table"]);
}

#[tokio::test]
async fn long_output_keeps_the_last_lines_and_counts_the_others() {
    let rig = rig("task-long").await;
    let group = rig
        .group(
            1,
            "i=0; while [ $i -lt 1005 ]; do echo line$i; i=$((i+1)); done",
        )
        .await;
    rig.fleet.start_task(&group).await.unwrap();
    let status = finished(&rig.fleet, &group).await;
    assert_eq!(status.output.len(), bluegreen_local::TASK_OUTPUT_LINES);
    assert_eq!(status.dropped, 5);
    assert_eq!(status.output.first().unwrap(), "line5");
    assert_eq!(status.output.last().unwrap(), "line1004");
}

#[tokio::test]
async fn starting_twice_runs_once_running_or_finished() {
    let rig = rig("task-twice").await;
    let group = rig.group(1, "echo run >> \"$MARKER\"; sleep 0.5").await;
    rig.fleet.start_task(&group).await.unwrap();
    rig.fleet.start_task(&group).await.unwrap();
    finished(&rig.fleet, &group).await;
    rig.fleet.start_task(&group).await.unwrap();
    // a fleet of another program finds the record too
    let other = LocalFleet::new(rig.state.clone(), rig.image.clone());
    other.start_task(&group).await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        finished(&rig.fleet, &group).await.state,
        TaskState::Succeeded
    );
    assert_eq!(rig.runs(), 1, "the task ran more than once");
}

#[tokio::test]
async fn a_release_without_a_task_is_refused_naming_the_field() {
    let rig = rig("task-none").await;
    let mut group = rig.group(1, "true").await;
    group.release.task = None;
    let e = rig.fleet.start_task(&group).await.unwrap_err();
    assert!(
        matches!(&e, bluegreen_core::Error::Invalid { field, .. } if field == "task"),
        "{e:?}"
    );
    assert!(!rig.task_dir(&group).exists());
}

/// Run again as a child: start the task of generation 1 and exit at once.
#[tokio::test]
async fn a_task_outlives_the_program_that_started_it() {
    if let Some(dir) = std::env::var_os(CHILD) {
        let rig = rig_in(None, PathBuf::from(dir)).await;
        let group = rig
            .group(1, "sleep 1; echo done; echo run >> \"$MARKER\"")
            .await;
        rig.fleet.start_task(&group).await.unwrap();
        return;
    }
    let rig = rig("task-outlives").await;
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_task_outlives_the_program_that_started_it",
            "--nocapture",
        ])
        .env(CHILD, &rig.root)
        .status()
        .unwrap();
    assert!(child.success());
    // a fresh fleet, in this program, finds the task still running
    let fleet = LocalFleet::new(rig.state.clone(), rig.image.clone());
    let group = rig
        .group(1, "sleep 1; echo done; echo run >> \"$MARKER\"")
        .await;
    let status = fleet.task(&rig.app, &group.id).await.unwrap().unwrap();
    assert_eq!(status.state, TaskState::Running);
    assert_eq!(status.release, group.release.id());
    fleet.start_task(&group).await.unwrap();
    // its status is written without the program that started it
    let status = finished(&fleet, &group).await;
    assert_eq!(status.state, TaskState::Succeeded, "{status:?}");
    assert_eq!(status.output, ["done"]);
    assert_eq!(rig.runs(), 1);
}

#[tokio::test]
async fn a_task_killed_without_writing_its_status_is_failed_with_a_reason() {
    let rig = rig("task-killed").await;
    let pid_file = rig.root.join("pid");
    let group = rig
        .group(
            1,
            &format!("echo $PPID > '{}'; sleep 30", pid_file.display()),
        )
        .await;
    rig.fleet.start_task(&group).await.unwrap();
    let wrapper: i32 = wait_for(&pid_file).trim().parse().unwrap();
    // the wrapper leads the task's process group: kill all of it at once
    rustix::process::kill_process_group(
        rustix::process::Pid::from_raw(wrapper).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    let status = finished(&rig.fleet, &group).await;
    match &status.state {
        TaskState::Failed { exit_code, reason } => {
            assert_eq!(*exit_code, None);
            assert!(
                reason.contains("without writing its exit status"),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn destroy_stops_a_running_task_and_removes_its_record() {
    let rig = rig("task-destroy").await;
    let pid_file = rig.root.join("pid");
    let group = rig
        .group(1, &format!("echo $$ > '{}'; sleep 60", pid_file.display()))
        .await;
    rig.fleet.start_task(&group).await.unwrap();
    let pid: i32 = wait_for(&pid_file).trim().parse().unwrap();
    assert!(alive(pid));
    assert_eq!(
        rig.fleet
            .task(&rig.app, &group.id)
            .await
            .unwrap()
            .unwrap()
            .state,
        TaskState::Running
    );
    // the group was never launched: destroy still removes its task
    rig.fleet.destroy(&rig.app, &group.id).await.unwrap();
    for _ in 0..100 {
        if !alive(pid) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!alive(pid), "the task's process still runs");
    assert_eq!(rig.fleet.task(&rig.app, &group.id).await.unwrap(), None);
    assert!(!rig.task_dir(&group).exists());
    rig.fleet.destroy(&rig.app, &group.id).await.unwrap();
}

#[tokio::test]
async fn a_record_without_bluegreens_labels_is_left_alone() {
    let rig = rig("task-lookalike").await;
    let group = rig.group(1, "echo run >> \"$MARKER\"").await;
    let dir = rig.task_dir(&group);
    std::fs::create_dir_all(&dir).unwrap();
    let lookalike = format!(
        r#"{{"labels":{{}},"release":"{}","command":["true"],"process":null,"stop_timeout_ms":10}}"#,
        group.release.id()
    );
    std::fs::write(dir.join("task.json"), &lookalike).unwrap();
    assert_eq!(rig.fleet.task(&rig.app, &group.id).await.unwrap(), None);
    let e = rig.fleet.start_task(&group).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e:?}");
    rig.fleet.destroy(&rig.app, &group.id).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.join("task.json")).unwrap(),
        lookalike
    );
    assert_eq!(rig.runs(), 0);
    // an unreadable one too
    std::fs::write(dir.join("task.json"), "not json").unwrap();
    rig.fleet.destroy(&rig.app, &group.id).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.join("task.json")).unwrap(),
        "not json"
    );
}
