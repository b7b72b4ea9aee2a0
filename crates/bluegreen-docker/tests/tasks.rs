//! Release tasks on the real Docker daemon: one-off containers from a `FROM
//! scratch` image holding `sample-task`, with a bind-mounted directory where each
//! run appends to a marker file.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bluegreen_core::{
    App, DeploymentId, ErrorKind, EventSink, Fleet, Generation, Group, ImageSource, Release,
    ReleaseTask, TaskState, TaskStatus,
};
use bluegreen_docker::{DockerFleet, DockerFleetOptions, DockerImage, TASK_LABEL};
use support::{docker, labelled_containers, Cleanup, Scratch};

/// A build context: `sample-task` `FROM scratch`.
fn task_context(root: &Path) -> PathBuf {
    let dir = root.join("task-context");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        bluegreen_testkit::binaries::static_binary("sample-app", "sample-task"),
        dir.join("sample-task"),
    )
    .unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM scratch\nCOPY sample-task /sample-task\n",
    )
    .unwrap();
    dir
}

struct Rig {
    tmp: Scratch,
    fleet: DockerFleet,
    app: App,
    image: bluegreen_core::ImageId,
    _cleanup: Cleanup,
}

async fn rig(test: &str) -> Option<Rig> {
    let docker = docker(test).await?;
    let tmp = Scratch::new(test);
    let app = support::app("task", "docker");
    let cleanup = Cleanup::new(&app);
    let data = tmp.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let fleet = DockerFleet::new(
        docker.clone(),
        DockerFleetOptions::default().with_task_bind(format!("{}:/data", data.display())),
    );
    let image = support::prepare(
        &DockerImage::new(docker.clone()),
        &app,
        &ImageSource::Build {
            context: task_context(tmp.path()),
            args: Default::default(),
        },
        &EventSink::default(),
    )
    .await
    .unwrap()
    .id;
    Some(Rig {
        tmp,
        fleet,
        app,
        image,
        _cleanup: cleanup,
    })
}

impl Rig {
    /// Generation `g` whose task is `/sample-task` with `args` then `--append
    /// /data/marker`.
    fn group(&self, g: u32, args: &[&str]) -> Group {
        let mut command = vec!["/sample-task".to_owned()];
        command.extend(args.iter().map(|a| a.to_string()));
        command.extend(["--append".to_owned(), "/data/marker".to_owned()]);
        let release = Release::new(self.image.clone(), 1)
            .with_setting("command", "/sample-task --sleep-ms 600000")
            .with_setting("health_path", "none")
            .with_setting("stop_timeout_ms", "1000")
            .with_task(ReleaseTask::new(command));
        Group::new(
            self.app.clone(),
            Generation(g),
            release,
            DeploymentId::random(),
            None,
        )
    }

    fn runs(&self) -> usize {
        std::fs::read_to_string(self.tmp.join("data").join("marker"))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    fn task_containers(&self) -> Vec<String> {
        let out = std::process::Command::new("docker")
            .args(["ps", "-a", "--format", "{{.Names}}"])
            .args([
                "--filter",
                &format!("label=bluegreen.app={}", self.app.name()),
            ])
            .args(["--filter", &format!("label={TASK_LABEL}")])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

async fn finished(fleet: &DockerFleet, group: &Group) -> TaskStatus {
    for _ in 0..300 {
        let status = fleet.task(&group.app, &group.id).await.unwrap().unwrap();
        if status.state.is_finished() {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the task of {} did not finish within 30 s", group.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_succeeds_is_a_labelled_exited_container() {
    let Some(rig) = rig("docker-task-ok").await else {
        return;
    };
    let group = rig.group(1, &["--print", "migrating", "--stderr", "warning"]);
    assert!(rig.fleet.capabilities().tasks);
    assert_eq!(rig.fleet.task(&rig.app, &group.id).await.unwrap(), None);
    rig.fleet.start_task(&group).await.unwrap();
    let status = finished(&rig.fleet, &group).await;
    assert_eq!(status.state, TaskState::Succeeded, "{status:?}");
    assert_eq!(status.release, group.release.id());
    // the daemon keeps stdout and stderr apart: their order between the two is its own
    let mut output = status.output.clone();
    output.sort();
    assert_eq!(output, ["migrating", "warning"]);
    assert_eq!(status.dropped, 0);
    assert_eq!(rig.runs(), 1);
    // the exited container is the record; it is no group and no instance
    assert_eq!(rig.task_containers(), [format!("{}-task", group.id)]);
    assert!(rig.fleet.groups(&rig.app).await.unwrap().is_empty());
    rig.fleet.launch(&group).await.unwrap();
    let instances = rig.fleet.instances(&rig.app, &group.id).await.unwrap();
    assert_eq!(instances.len(), 1, "{instances:?}");
    assert_eq!(instances[0].id.to_string(), format!("{}-0", group.id));
    assert_eq!(rig.fleet.groups(&rig.app).await.unwrap().len(), 1);
    rig.fleet.destroy(&rig.app, &group.id).await.unwrap();
    assert!(labelled_containers(&rig.app).is_empty());
    assert_eq!(rig.fleet.task(&rig.app, &group.id).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_fails_reports_its_status_and_output() {
    let Some(rig) = rig("docker-task-fail").await else {
        return;
    };
    let group = rig.group(1, &["--stderr", "no such table", "--exit", "3"]);
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
    // a command the image does not have fails too, with the daemon's reason
    let mut missing = rig.group(2, &[]);
    missing.release.task = Some(ReleaseTask::new(["/no-such-program"]));
    let _ = rig.fleet.start_task(&missing).await;
    let status = finished(&rig.fleet, &missing).await;
    assert!(
        matches!(status.state, TaskState::Failed { .. }),
        "{status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starting_twice_runs_once_and_another_fleet_finds_the_task() {
    let Some(rig) = rig("docker-task-twice").await else {
        return;
    };
    let group = rig.group(1, &["--sleep-ms", "1500", "--print", "done"]);
    rig.fleet.start_task(&group).await.unwrap();
    rig.fleet.start_task(&group).await.unwrap();
    // another program: a new connection and a new fleet
    let other = DockerFleet::new(
        bluegreen_docker::connect().await.unwrap(),
        DockerFleetOptions::default(),
    );
    let status = other.task(&rig.app, &group.id).await.unwrap().unwrap();
    assert_eq!(status.state, TaskState::Running);
    assert_eq!(status.release, group.release.id());
    other.start_task(&group).await.unwrap();
    assert_eq!(finished(&other, &group).await.state, TaskState::Succeeded);
    rig.fleet.start_task(&group).await.unwrap();
    other.start_task(&group).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rig.runs(), 1, "the task ran more than once");
    assert_eq!(rig.task_containers().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_stops_a_running_task_and_removes_its_container() {
    let Some(rig) = rig("docker-task-destroy").await else {
        return;
    };
    let group = rig.group(1, &["--sleep-ms", "600000"]);
    rig.fleet.start_task(&group).await.unwrap();
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
    assert_eq!(rig.fleet.task(&rig.app, &group.id).await.unwrap(), None);
    assert!(rig.task_containers().is_empty());
    rig.fleet.destroy(&rig.app, &group.id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_look_alike_container_is_left_alone() {
    let Some(rig) = rig("docker-task-lookalike").await else {
        return;
    };
    let group = rig.group(1, &["--print", "ours"]);
    let name = format!("{}-task", group.id);
    let created = std::process::Command::new("docker")
        .args([
            "create",
            "--name",
            &name,
            rig.image.as_str(),
            "/sample-task",
        ])
        .output()
        .unwrap();
    assert!(created.status.success(), "{created:?}");
    let guard = LookAlike(name.clone());
    assert_eq!(rig.fleet.task(&rig.app, &group.id).await.unwrap(), None);
    rig.fleet.start_task(&group).await.unwrap();
    let status = finished(&rig.fleet, &group).await;
    assert_eq!(status.output, ["ours"]);
    rig.fleet.destroy(&rig.app, &group.id).await.unwrap();
    assert_eq!(rig.fleet.task(&rig.app, &group.id).await.unwrap(), None);
    let still = std::process::Command::new("docker")
        .args(["inspect", "--format", "{{.Name}}", &name])
        .output()
        .unwrap();
    assert!(still.status.success(), "the look-alike was removed");
    drop(guard);
}

/// Removes the look-alike container when dropped.
struct LookAlike(String);

impl Drop for LookAlike {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", &self.0])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_without_a_task_is_refused_naming_the_field() {
    let Some(rig) = rig("docker-task-none").await else {
        return;
    };
    let mut group = rig.group(1, &[]);
    group.release.task = None;
    let e = rig.fleet.start_task(&group).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid, "{e:?}");
    assert!(
        matches!(&e, bluegreen_core::Error::Invalid { field, .. } if field == "task"),
        "{e:?}"
    );
    assert!(rig.task_containers().is_empty());
}
