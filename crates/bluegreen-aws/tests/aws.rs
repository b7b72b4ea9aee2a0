//! The AWS provider against a real AWS API emulator (`moto` in server mode).

mod support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification};
use bluegreen_aws::{Ec2Fleet, Ec2FleetOptions, ElbRouter, ElbRouterOptions};
use bluegreen_core::{
    App, DeployRequest, Engine, EngineOptions, ErrorKind, Event, EventSink, Fleet, Image, ImageId,
    Release, RouteTable, Router, Step, Strategy,
};
use bluegreen_testkit::conformance::{self, Settings, Sources};
use support::{base, Base};

struct Rig {
    base: Base,
    fleet: Ec2Fleet,
    router: ElbRouter,
}

impl std::ops::Deref for Rig {
    type Target = Base;
    fn deref(&self) -> &Base {
        &self.base
    }
}

async fn rig(name: &str) -> Rig {
    let base = base(name).await;
    let fleet = Ec2Fleet::new(
        base.clients.clone(),
        Ec2FleetOptions::default()
            .with_subnets(base.net.subnets.clone())
            .with_port(8080),
    )
    .unwrap();
    let router = ElbRouter::new(
        base.clients.clone(),
        ElbRouterOptions::new(base.net.listener.clone(), base.net.vpc.clone())
            .with_port(8080)
            .with_deregistration_delay(Duration::from_secs(5)),
    );
    Rig {
        base,
        fleet,
        router,
    }
}

impl Rig {
    fn engine(&self) -> Engine {
        Engine::new(self.image.clone(), self.fleet.clone(), self.router.clone()).with_options(
            EngineOptions::default()
                .with_poll_interval(Duration::from_millis(200))
                .with_drain(Duration::from_millis(100))
                .with_keep(0),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aws_provider_passes_the_conformance_suite() {
    let rig = rig("conformance").await;
    let sources = Sources {
        good: rig.bake("1"),
        other: rig.bake("2"),
        // moto reports every instance healthy and has no failing status checks
        never_healthy: None,
    };
    let settings = Settings::default().with_health_timeout(Duration::from_secs(30));
    conformance::run_all(
        Arc::new(rig.image.clone()),
        Arc::new(rig.fleet.clone()),
        Arc::new(rig.router.clone()),
        &App::new("conformance", "aws").unwrap(),
        &sources,
        &settings,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bake_deploy_canary_rollback_and_retention() {
    let rig = rig("e2e").await;
    let app = App::new("web", "e2e").unwrap();
    let shifted = Arc::new(Mutex::new(Vec::new()));
    let engine = Engine::new(rig.image.clone(), rig.fleet.clone(), rig.router.clone())
        .with_options(
            EngineOptions::default()
                .with_poll_interval(Duration::from_millis(200))
                .with_drain(Duration::from_millis(100))
                .with_keep(1)
                .with_retain_images(1),
        )
        .with_events(EventSink::new({
            let shifted = shifted.clone();
            move |e: &Event| {
                if let Event::TrafficShifted { routes } = e {
                    shifted.lock().unwrap().push(routes.clone());
                }
            }
        }));
    let request = |v: &str| DeployRequest::new(app.clone(), rig.bake(v)).size(3);

    let v1 = engine.deploy(&request("1")).await.unwrap();
    let v2 = engine
        .deploy(&request("2").strategy(Strategy::canary([20, 50], Duration::from_millis(200))))
        .await
        .unwrap();
    let weights: Vec<u8> = shifted
        .lock()
        .unwrap()
        .iter()
        .map(|t| t.weight(&v2.live))
        .collect();
    assert_eq!(
        weights,
        [0, 20, 50, 100],
        "the canary went through its steps at the load balancer"
    );
    assert_eq!(
        rig.router.routes(&app).await.unwrap(),
        RouteTable::single(v2.live.clone())
    );
    assert_eq!(v2.kept_warm, vec![v1.live.clone()]);

    // instances spread across both subnets
    let instances = rig.fleet.instances(&app, &v2.live).await.unwrap();
    assert_eq!(instances.len(), 3);
    assert!(instances.iter().all(|i| i.health.is_healthy()));

    let back = engine.rollback(&app).await.unwrap();
    assert_eq!(back.to, v1.live);
    assert_eq!(
        rig.router.routes(&app).await.unwrap(),
        RouteTable::single(v1.live.clone())
    );

    let v3 = engine.deploy(&request("3")).await.unwrap();
    // retention: v1's image is the previous release's, v3's is live; v2's AMI went
    let images = rig.image.images(&app).await.unwrap();
    assert_eq!(images.len(), 2, "{images:?}");
    assert!(v3.images_removed.len() == 1, "{:?}", v3.images_removed);
    let gone = &v3.images_removed[0];
    let described = rig
        .clients
        .ec2()
        .describe_images()
        .image_ids(gone.as_str())
        .send()
        .await
        .map(|o| o.images().len())
        .unwrap_or(0);
    assert_eq!(described, 0, "the removed AMI is deregistered");
    // no builder is left running
    assert!(rig
        .live_instances(&[("bluegreen.app", app.name()), ("bluegreen.role", "builder")])
        .await
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_deployment_converges_with_no_stray_resources() {
    let steps = [
        Step::PrepareImage,
        Step::Launch,
        Step::WaitHealthy,
        Step::Attach,
        Step::Verify,
        Step::Promote,
        Step::Confirm,
        Step::Drain,
        Step::Retire,
    ];
    let mut cases = 0;
    for (n, step) in steps.iter().enumerate() {
        // a load balancer listener serves one app
        let rig = rig(&format!("interrupted{n}")).await;
        let app = App::new(format!("stop{n}"), "aws").unwrap();
        let request =
            |v: &str| DeployRequest::new(app.clone(), rig.bake(&format!("{n}-{v}"))).size(2);
        rig.engine().deploy(&request("1")).await.unwrap();

        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let stop_at = *step;
        let engine = rig.engine().with_events(EventSink::new(move |e: &Event| {
            if matches!(e, Event::StepStarted { step } if *step == stop_at) {
                let _ = tx.send(());
            }
        }));
        let second = request("2");
        tokio::select! {
            _ = engine.deploy(&second) => panic!("the deployment ended before {step}"),
            _ = rx.recv() => {}
        }
        // the dropped deployment left its lock held in this process's lock; a new
        // process has its own
        let report = rig
            .engine()
            .with_lock(std::sync::Arc::new(bluegreen_core::MemoryLock::new()))
            .deploy(&request("2"))
            .await
            .unwrap_or_else(|e| panic!("after {step}: {e}"));
        let groups: BTreeSet<String> = rig
            .fleet
            .groups(&app)
            .await
            .unwrap()
            .into_iter()
            .map(|g| g.id.to_string())
            .collect();
        assert_eq!(
            groups,
            BTreeSet::from([report.live.to_string()]),
            "after {step}: one group"
        );
        let running: Vec<_> = rig
            .live_instances(&[("bluegreen.app", app.name())])
            .await
            .into_iter()
            .filter(|(_, g)| g.is_some())
            .collect();
        assert!(
            running
                .iter()
                .all(|(_, g)| g.as_deref() == Some(report.live.as_str())),
            "after {step}: stray instances {running:?}"
        );
        assert_eq!(running.len(), 2, "after {step}");
        assert_eq!(
            rig.target_groups(&app).await,
            BTreeSet::from([report.live.to_string()]),
            "after {step}: target groups"
        );
        assert!(
            rig.live_instances(&[("bluegreen.app", app.name()), ("bluegreen.role", "builder")])
                .await
                .is_empty(),
            "after {step}: builders"
        );
        let amis = rig.image.images(&app).await.unwrap();
        assert!(
            amis.len() <= 2,
            "after {step}: {} AMIs for two releases",
            amis.len()
        );
        cases += 1;
    }
    println!("interrupted AWS deployment: {cases} cases converged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifty_instance_deployment_makes_batched_calls() {
    let rig = rig("batched").await;
    let app = App::new("batch", "aws").unwrap();
    rig.engine()
        .deploy(&DeployRequest::new(app.clone(), rig.bake("1")).size(50))
        .await
        .unwrap();
    let before = rig.clients.call_counts();
    rig.engine()
        .deploy(&DeployRequest::new(app.clone(), rig.bake("2")).size(50))
        .await
        .unwrap();
    let after = rig.clients.call_counts();
    let delta = |op: &str| after.get(op).unwrap_or(&0) - before.get(op).unwrap_or(&0);
    println!("a 50-instance deployment (keep 0), calls per operation:");
    for op in after.keys() {
        if delta(op) > 0 {
            println!("  {op:<30} {}", delta(op));
        }
    }
    assert_eq!(
        delta("RunInstances"),
        1 + 2,
        "one builder, one launch per subnet"
    );
    assert_eq!(
        delta("TerminateInstances"),
        1 + 1,
        "the builder, and one batch for 50 instances"
    );
    assert_eq!(delta("RegisterTargets"), 1, "one batch of 50 targets");
    let describes = delta("DescribeInstances");
    let statuses = delta("DescribeInstanceStatus");
    assert!(
        statuses <= describes,
        "status checks: one call per 100 instances per poll ({statuses} for {describes} polls)"
    );
    assert!(describes < 50, "no per-instance describe: {describes}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn look_alike_instances_without_tags_survive() {
    let rig = rig("lookalike").await;
    let app = App::new("look", "aws").unwrap();
    let mut foreign = Vec::new();
    for name in ["look-aws-v001", "look-aws-v002"] {
        let out = rig
            .clients
            .ec2()
            .run_instances()
            .image_id(&rig.net.base_ami)
            .min_count(1)
            .max_count(1)
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Instance)
                    .tags(Tag::builder().key("Name").value(name).build())
                    .tags(Tag::builder().key("bluegreen.app").value("look").build())
                    .tags(Tag::builder().key("bluegreen.group").value(name).build())
                    .build(),
            )
            .send()
            .await
            .unwrap();
        foreign.push(out.instances()[0].instance_id().unwrap().to_owned());
    }
    let engine = rig.engine();
    let request = |v: &str| DeployRequest::new(app.clone(), rig.bake(v)).size(1);
    engine.deploy(&request("1")).await.unwrap();
    engine.deploy(&request("2")).await.unwrap();
    engine.deploy(&request("3")).await.unwrap();
    let running: Vec<String> = rig
        .live_instances(&[])
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    for id in &foreign {
        assert!(running.contains(id), "{id} (no owner tag) survived");
    }
}

/// `DescribeInstances` through the SDK's paginator, a page of one reservation: a
/// group launched in two subnets (two reservations) is read on two pages, whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_on_several_pages_are_all_read() {
    let rig = rig("paged").await;
    let fleet = Ec2Fleet::new(
        rig.clients.clone(),
        Ec2FleetOptions::default()
            .with_subnets(rig.net.subnets.clone())
            .with_port(8080)
            .with_page_size(1),
    )
    .unwrap();
    let app = App::new("paged", "aws").unwrap();
    let engine = Engine::new(rig.image.clone(), fleet.clone(), rig.router.clone()).with_options(
        EngineOptions::default()
            .with_poll_interval(Duration::from_millis(200))
            .with_drain(Duration::from_millis(100))
            .with_keep(0),
    );
    let live = engine
        .deploy(&DeployRequest::new(app.clone(), rig.bake("1")).size(4))
        .await
        .unwrap()
        .live;
    let pages = |before: &std::collections::BTreeMap<String, u64>| {
        rig.clients.call_counts()["DescribeInstances"] - before["DescribeInstances"]
    };
    let before = rig.clients.call_counts();
    let instances = fleet.instances(&app, &live).await.unwrap();
    assert_eq!(instances.len(), 4, "{instances:?}");
    assert!(instances.iter().all(|i| i.address.is_some()));
    assert_eq!(pages(&before), 2, "one reservation a page");
    let before = rig.clients.call_counts();
    let groups = fleet.groups(&app).await.unwrap();
    assert_eq!(groups.len(), 1);
    assert_eq!(pages(&before), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_options_are_refused_before_any_call() {
    let clients = support::clients().await;
    let bad = [
        (
            Ec2FleetOptions::default().with_subnets(["sub-1"]),
            "subnets",
        ),
        (
            Ec2FleetOptions::default().with_subnets(["subnet-1", "subnet-1"]),
            "subnets",
        ),
        (
            Ec2FleetOptions::default().with_security_groups(["default"]),
            "security_groups",
        ),
        (
            Ec2FleetOptions::default().with_instance_type("large"),
            "instance_type",
        ),
        (Ec2FleetOptions::default().with_port(0), "port"),
        (Ec2FleetOptions::default().with_page_size(0), "page_size"),
        (
            Ec2FleetOptions::default().with_launch_template("my-template"),
            "launch_template",
        ),
    ];
    let before = clients.call_counts();
    for (options, field) in bad {
        let e = Ec2Fleet::new(clients.clone(), options).err().unwrap();
        assert_eq!(e.kind(), ErrorKind::Invalid, "{field}: {e}");
        assert!(e.to_string().contains(field), "{field}: {e}");
    }
    let fleet = Ec2Fleet::new(clients.clone(), Ec2FleetOptions::default()).unwrap();
    for (key, value) in [("port", "0"), ("instance_type", "big"), ("flavour", "x")] {
        let release = Release::new(ImageId::new("ami-12345678"), 1).with_setting(key, value);
        let e = fleet.check_release(&release).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Invalid, "{key}={value}: {e}");
        assert!(e.to_string().contains(&format!("settings.{key}")), "{e}");
    }
    assert_eq!(clients.call_counts(), before, "no call was made");
}
