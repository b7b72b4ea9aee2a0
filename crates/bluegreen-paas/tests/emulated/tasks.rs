//! Release tasks in app mode: one-off dynos on the emulator, which runs their
//! command for real (`sh -c`), checked against the schema.

use std::path::PathBuf;
use std::time::Duration;

use bluegreen_core::{
    App, DeploymentId, ErrorKind, EventSink, Fleet, Generation, Group, Image, Release, ReleaseTask,
    TaskState, TaskStatus,
};
use bluegreen_paas::{AppFleet, TASK_VAR};
use bluegreen_testkit::scratch::Scratch;

use crate::support;

struct Rig {
    emu: support::Emulator,
    fleet: AppFleet,
    app: App,
    tmp: Scratch,
    image: bluegreen_core::ImageId,
}

async fn rig(name: &str) -> Rig {
    let emu = support::emulator().await;
    let app = support::app(name);
    let (image, fleet, _) = support::app_mode(&emu, &app);
    let image = image
        .prepare(
            &app,
            &bluegreen_core::ImageSource::Artifact(support::tarball("app v1")),
            &EventSink::default(),
        )
        .await
        .unwrap()
        .id;
    Rig {
        emu,
        fleet,
        app,
        tmp: Scratch::new("paas-task"),
        image,
    }
}

impl Rig {
    fn group(&self, g: u32, script: &str) -> Group {
        let release = Release::new(self.image.clone(), 1)
            .with_env("MARKER", self.marker().display().to_string())
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
        self.tmp.join("marker")
    }

    fn runs(&self) -> usize {
        std::fs::read_to_string(self.marker())
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }
}

async fn finished(fleet: &AppFleet, group: &Group) -> TaskStatus {
    for _ in 0..200 {
        let status = fleet.task(&group.app, &group.id).await.unwrap().unwrap();
        if status.state.is_finished() {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the task of {} did not finish within 10 s", group.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_is_a_one_off_dyno_of_the_groups_app() {
    let rig = rig("taskok").await;
    let group = rig.group(
        1,
        "echo migrating; echo warning >&2; echo run >> \"$MARKER\"",
    );
    assert!(rig.fleet.capabilities().tasks);
    assert_eq!(rig.fleet.task(&rig.app, &group.id).await.unwrap(), None);
    rig.fleet.start_task(&group).await.unwrap();
    let status = finished(&rig.fleet, &group).await;
    assert_eq!(status.state, TaskState::Succeeded, "{status:?}");
    assert_eq!(status.release, group.release.id());
    let mut output = status.output.clone();
    output.sort();
    assert_eq!(output, ["migrating", "warning"]);
    assert_eq!(rig.runs(), 1);
    // the record, and no instance until launch
    let name = group.id.to_string();
    assert_eq!(
        rig.emu.config(&name).unwrap().get(TASK_VAR),
        Some(&group.release.id().to_string())
    );
    assert!(rig
        .fleet
        .instances(&rig.app, &group.id)
        .await
        .unwrap()
        .is_empty());
    rig.fleet.launch(&group).await.unwrap();
    assert_eq!(
        rig.fleet
            .instances(&rig.app, &group.id)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        finished(&rig.fleet, &group).await.state,
        TaskState::Succeeded
    );
    rig.fleet.destroy(&rig.app, &group.id).await.unwrap();
    assert_eq!(rig.fleet.task(&rig.app, &group.id).await.unwrap(), None);
    rig.emu.assert_schema_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_fails_reports_its_status_and_output() {
    let rig = rig("taskfail").await;
    let group = rig.group(1, "echo 'no such table' >&2; exit 3");
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
    rig.emu.assert_schema_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starting_twice_runs_once_and_a_new_fleet_finds_the_task() {
    let rig = rig("tasktwice").await;
    let group = rig.group(1, "echo run >> \"$MARKER\"; sleep 1; echo done");
    rig.fleet.start_task(&group).await.unwrap();
    rig.fleet.start_task(&group).await.unwrap();
    let other = AppFleet::new(rig.emu.client());
    let status = other.task(&rig.app, &group.id).await.unwrap().unwrap();
    assert_eq!(status.state, TaskState::Running, "{status:?}");
    other.start_task(&group).await.unwrap();
    let status = finished(&other, &group).await;
    assert_eq!(status.state, TaskState::Succeeded, "{status:?}");
    assert_eq!(status.output, ["done"]);
    rig.fleet.start_task(&group).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rig.runs(), 1, "the task ran more than once");
    rig.emu.assert_schema_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_stops_a_running_task_and_removes_its_record() {
    let rig = rig("taskdestroy").await;
    let pid_file = rig.tmp.join("pid");
    let group = rig.group(
        1,
        &format!("echo $$ > '{}'; exec sleep 60", pid_file.display()),
    );
    rig.fleet.start_task(&group).await.unwrap();
    let mut pid = None;
    for _ in 0..100 {
        if let Ok(p) = std::fs::read_to_string(&pid_file) {
            if p.ends_with('\n') {
                pid = p.trim().parse::<u32>().ok();
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = pid.expect("the task wrote its pid");
    let alive = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            !matches!(
                s.rsplit(") ").next().and_then(|r| r.chars().next()),
                Some('Z' | 'X')
            )
        })
    };
    assert!(alive(pid));
    rig.fleet.destroy(&rig.app, &group.id).await.unwrap();
    for _ in 0..100 {
        if !alive(pid) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!alive(pid), "the task's process still runs");
    assert_eq!(rig.fleet.task(&rig.app, &group.id).await.unwrap(), None);
    assert!(!rig.emu.app_names().contains(&group.id.to_string()));
    rig.emu.assert_schema_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_look_alike_app_is_left_alone() {
    let rig = rig("tasklook").await;
    let group = rig.group(1, "echo run >> \"$MARKER\"");
    rig.emu
        .add_foreign_app(group.id.as_str(), &[("DATABASE_URL", "postgres://x")], None);
    let before = rig.emu.config(group.id.as_str());
    assert_eq!(rig.fleet.task(&rig.app, &group.id).await.unwrap(), None);
    let e = rig.fleet.start_task(&group).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    rig.fleet.destroy(&rig.app, &group.id).await.unwrap();
    assert_eq!(rig.emu.config(group.id.as_str()), before);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rig.runs(), 0);
    rig.emu.assert_schema_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_mode_says_it_cannot_run_tasks() {
    let rig = rig("taskrel").await;
    let (_, fleet, _) = support::release_mode(&rig.emu);
    assert!(!fleet.capabilities().tasks);
    let group = rig.group(1, "echo run >> \"$MARKER\"");
    let e = fleet.start_task(&group).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotSupported, "{e}");
    assert!(e.to_string().contains("release phase"), "{e}");
}
