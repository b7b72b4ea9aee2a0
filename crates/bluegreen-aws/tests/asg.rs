//! `AsgFleet` with `ElbRouter` (the Auto Scaling group registers its own targets)
//! against a real AWS API emulator (`moto` in server mode).

mod support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_autoscaling::types::LaunchTemplateSpecification;
use aws_sdk_ec2::types::RequestLaunchTemplateData;
use bluegreen_aws::{
    AsgFleet, AsgFleetOptions, AwsClients, ElbRouter, ElbRouterOptions, TargetRegistration,
};
use bluegreen_core::{
    App, DeployRequest, DeploymentId, Engine, EngineOptions, ErrorKind, Event, EventSink, Fleet,
    Generation, Group, Health, Image, ImageId, Release, RouteTable, Router, Step, Strategy,
};
use bluegreen_testkit::conformance::{self, Settings, Sources};
use support::{base, clients, Base};

struct Rig {
    base: Base,
    fleet: AsgFleet,
    router: ElbRouter,
}

impl std::ops::Deref for Rig {
    type Target = Base;
    fn deref(&self) -> &Base {
        &self.base
    }
}

async fn rig(name: &str) -> Rig {
    rig_with(name, |o| o).await
}

/// A rig whose fleet options are `adjust`ed.
async fn rig_with(name: &str, adjust: impl FnOnce(AsgFleetOptions) -> AsgFleetOptions) -> Rig {
    let base = base(name).await;
    let fleet = AsgFleet::new(
        base.clients.clone(),
        adjust(
            AsgFleetOptions::new(base.net.subnets.clone())
                .with_port(8080)
                .with_health_check_grace_period(Duration::from_secs(120))
                .with_delete_wait(Duration::from_secs(60)),
        ),
    )
    .unwrap();
    let router = ElbRouter::new(
        base.clients.clone(),
        ElbRouterOptions::new(base.net.listener.clone(), base.net.vpc.clone())
            .with_port(8080)
            .with_deregistration_delay(Duration::from_secs(5))
            .with_registration(TargetRegistration::AutoScalingGroup),
    );
    Rig {
        base,
        fleet,
        router,
    }
}

impl Rig {
    fn engine(&self, keep: usize) -> Engine {
        Engine::new(self.image.clone(), self.fleet.clone(), self.router.clone()).with_options(
            EngineOptions::default()
                .with_poll_interval(Duration::from_millis(200))
                .with_drain(Duration::from_millis(100))
                .with_keep(keep),
        )
    }

    /// Auto Scaling groups whose name starts with the app's slug.
    async fn asgs(&self, app: &App) -> BTreeSet<String> {
        let out = self
            .clients
            .autoscaling()
            .describe_auto_scaling_groups()
            .send()
            .await
            .unwrap();
        out.auto_scaling_groups()
            .iter()
            .filter_map(|g| g.auto_scaling_group_name())
            .filter(|n| n.starts_with(&app.slug()))
            .map(str::to_owned)
            .collect()
    }

    /// Launch templates whose name starts with the app's slug.
    async fn launch_templates(&self, app: &App) -> BTreeSet<String> {
        let out = self
            .clients
            .ec2()
            .describe_launch_templates()
            .max_results(200)
            .send()
            .await
            .unwrap();
        out.launch_templates()
            .iter()
            .filter_map(|t| t.launch_template_name())
            .filter(|n| n.starts_with(&app.slug()))
            .map(str::to_owned)
            .collect()
    }

    /// Instances not terminated (nor terminating) of the app's groups, with their
    /// group tag.
    async fn live_instances(&self, app: &App) -> Vec<(String, Option<String>)> {
        self.base
            .live_instances(&[("bluegreen.app", app.name())])
            .await
            .into_iter()
            .filter(|(_, g)| g.is_some())
            .collect()
    }

    /// The targets registered in a group's target group.
    async fn targets(&self, group: &str) -> Vec<String> {
        let tg = self
            .clients
            .elb()
            .describe_target_groups()
            .names(group)
            .send()
            .await
            .unwrap();
        let arn = tg.target_groups()[0].target_group_arn().unwrap().to_owned();
        let health = self
            .clients
            .elb()
            .describe_target_health()
            .target_group_arn(arn)
            .send()
            .await
            .unwrap();
        health
            .target_health_descriptions()
            .iter()
            .filter_map(|d| d.target().and_then(|t| t.id()).map(str::to_owned))
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_asg_fleet_passes_the_conformance_suite() {
    let rig = rig("asg-conformance").await;
    let sources = Sources {
        good: rig.bake("1"),
        other: rig.bake("2"),
        // moto reports every instance healthy and has no failing health checks
        never_healthy: None,
    };
    let settings = Settings::default().with_health_timeout(Duration::from_secs(30));
    conformance::run_all(
        Arc::new(rig.image.clone()),
        Arc::new(rig.fleet.clone()),
        Arc::new(rig.router.clone()),
        &App::new("asgconf", "aws").unwrap(),
        &sources,
        &settings,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_canary_rollback_and_retention_with_auto_scaling_groups() {
    let rig = rig("asg-e2e").await;
    let app = App::new("web", "asg").unwrap();
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
        "the canary went through its steps"
    );
    assert_eq!(
        rig.router.routes(&app).await.unwrap(),
        RouteTable::single(v2.live.clone())
    );
    assert_eq!(v2.kept_warm, vec![v1.live.clone()]);

    // the group as launched: an Auto Scaling group of the release's size from a
    // launch template of its own, ELB health checks, both subnets, tags propagated
    let out = rig
        .clients
        .autoscaling()
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(v2.live.as_str())
        .send()
        .await
        .unwrap();
    let asg = &out.auto_scaling_groups()[0];
    assert_eq!(
        (asg.min_size(), asg.max_size(), asg.desired_capacity()),
        (Some(3), Some(3), Some(3))
    );
    assert_eq!(asg.health_check_type(), Some("ELB"));
    assert_eq!(asg.health_check_grace_period(), Some(120));
    let zone_subnets: BTreeSet<&str> = asg.vpc_zone_identifier().unwrap().split(',').collect();
    assert_eq!(
        zone_subnets,
        rig.net.subnets.iter().map(String::as_str).collect()
    );
    assert!(asg.tags().iter().any(|t| t.key() == Some("bluegreen.group")
        && t.value() == Some(v2.live.as_str())
        && t.propagate_at_launch() == Some(true)));
    assert_eq!(
        asg.launch_template().and_then(|t| t.launch_template_name()),
        Some(v2.live.as_str()),
        "the group's own launch template"
    );
    // the Auto Scaling group registered its instances once, the router none
    let instances = rig.fleet.instances(&app, &v2.live).await.unwrap();
    assert_eq!(instances.len(), 3);
    assert!(instances.iter().all(|i| i.health.is_healthy()));
    let mut targets = rig.targets(v2.live.as_str()).await;
    targets.sort();
    let mut ids: Vec<String> = instances.iter().map(|i| i.id.to_string()).collect();
    ids.sort();
    assert_eq!(targets, ids, "each instance registered once");
    assert_eq!(
        rig.clients.call_counts().get("RegisterTargets"),
        None,
        "the router registers nothing: the Auto Scaling group does"
    );
    // instances carry the group's tags
    let tagged: Vec<_> = rig
        .live_instances(&app)
        .await
        .into_iter()
        .filter(|(_, g)| g.as_deref() == Some(v2.live.as_str()))
        .collect();
    assert_eq!(tagged.len(), 3, "{tagged:?}");

    let back = engine.rollback(&app).await.unwrap();
    assert_eq!(back.to, v1.live);
    assert_eq!(
        rig.router.routes(&app).await.unwrap(),
        RouteTable::single(v1.live.clone())
    );

    let v3 = engine.deploy(&request("3")).await.unwrap();
    let images = rig.image.images(&app).await.unwrap();
    assert_eq!(images.len(), 2, "{images:?}");
    assert_eq!(v3.images_removed.len(), 1, "{:?}", v3.images_removed);
    // v1 is kept warm, v2 was destroyed with its launch template and target group
    let expected = BTreeSet::from([v1.live.to_string(), v3.live.to_string()]);
    assert_eq!(rig.asgs(&app).await, expected);
    assert_eq!(rig.launch_templates(&app).await, expected);
    assert_eq!(rig.target_groups(&app).await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_group_replaces_an_instance_terminated_behind_its_back() {
    let rig = rig("asg-heal").await;
    let app = App::new("heal", "asg").unwrap();
    let report = rig
        .engine(0)
        .deploy(&DeployRequest::new(app.clone(), rig.bake("1")).size(3))
        .await
        .unwrap();
    let live = report.live.clone();
    let table = rig.router.routes(&app).await.unwrap();
    let before = rig.fleet.instances(&app, &live).await.unwrap();
    assert_eq!(before.len(), 3);

    // moto replaces an instance of a group when EC2 terminates it
    let victim = before[0].id.to_string();
    rig.clients
        .ec2()
        .terminate_instances()
        .instance_ids(&victim)
        .send()
        .await
        .unwrap();
    let mut after = Vec::new();
    for _ in 0..100 {
        after = rig.fleet.instances(&app, &live).await.unwrap();
        if after.len() == 3 && after.iter().all(|i| i.id.as_str() != victim) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let old: BTreeSet<String> = before.iter().map(|i| i.id.to_string()).collect();
    let new: Vec<&bluegreen_core::Instance> = after
        .iter()
        .filter(|i| !old.contains(i.id.as_str()))
        .collect();
    assert!(
        after.iter().all(|i| i.id.as_str() != victim),
        "the terminated instance left the group: {after:?}"
    );
    assert_eq!(after.len(), 3, "the group is back to its size: {after:?}");
    assert_eq!(new.len(), 1, "one replacement: {after:?}");
    assert!(new[0].health.is_healthy(), "{:?}", new[0]);
    assert!(new[0].address.is_some(), "{:?}", new[0]);
    assert_eq!(
        rig.router.routes(&app).await.unwrap(),
        table,
        "the route table is unchanged"
    );
    assert_eq!(
        rig.fleet.groups(&app).await.unwrap().len(),
        1,
        "the same single group"
    );

    // an instance Auto Scaling marks unhealthy reads as unhealthy (moto does not
    // replace it: it replaces only on termination)
    let sick = after
        .iter()
        .find(|i| i.id != new[0].id)
        .unwrap()
        .id
        .to_string();
    rig.clients
        .autoscaling()
        .set_instance_health()
        .instance_id(&sick)
        .health_status("Unhealthy")
        .send()
        .await
        .unwrap();
    let read = rig.fleet.instances(&app, &live).await.unwrap();
    let health = &read.iter().find(|i| i.id.as_str() == sick).unwrap().health;
    assert!(
        matches!(health, Health::Unhealthy { .. }),
        "{sick}: {health:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_hundred_instance_deployment_makes_batched_calls() {
    let rig = rig("asg-batched").await;
    let app = App::new("many", "asg").unwrap();
    rig.engine(0)
        .deploy(&DeployRequest::new(app.clone(), rig.bake("1")).size(200))
        .await
        .unwrap();
    let before = rig.clients.call_counts();
    let report = rig
        .engine(0)
        .deploy(&DeployRequest::new(app.clone(), rig.bake("2")).size(200))
        .await
        .unwrap();
    let after = rig.clients.call_counts();
    let delta = |op: &str| after.get(op).unwrap_or(&0) - before.get(op).unwrap_or(&0);
    println!("a 200-instance deployment (keep 0), calls per operation:");
    for op in after.keys() {
        if delta(op) > 0 {
            println!("  {op:<34} {}", delta(op));
        }
    }
    assert_eq!(
        rig.fleet.instances(&app, &report.live).await.unwrap().len(),
        200
    );
    assert_eq!(delta("CreateLaunchTemplate"), 1);
    assert_eq!(
        delta("CreateAutoScalingGroup"),
        1,
        "one call for 200 instances"
    );
    assert_eq!(delta("AttachLoadBalancerTargetGroups"), 1);
    assert_eq!(delta("RegisterTargets"), 0, "the group registers its own");
    assert_eq!(
        delta("DeleteAutoScalingGroup"),
        1,
        "the old group, in one call"
    );
    assert_eq!(delta("DeleteLaunchTemplate"), 1);
    assert_eq!(delta("RunInstances"), 1, "the builder only");
    assert_eq!(delta("TerminateInstances"), 1, "the builder only");
    let describes = delta("DescribeInstances");
    let statuses = delta("DescribeInstanceStatus");
    assert!(
        statuses <= 2 * describes,
        "status checks: one call per 100 instances per poll ({statuses} for {describes} polls)"
    );
    assert!(describes < 100, "no per-instance describe: {describes}");
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
        let rig = rig(&format!("asg-stop{n}")).await;
        let app = App::new(format!("asgstop{n}"), "aws").unwrap();
        let request =
            |v: &str| DeployRequest::new(app.clone(), rig.bake(&format!("{n}-{v}"))).size(2);
        rig.engine(0).deploy(&request("1")).await.unwrap();

        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let stop_at = *step;
        let engine = rig.engine(0).with_events(EventSink::new(move |e: &Event| {
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
            .engine(0)
            .with_lock(std::sync::Arc::new(bluegreen_core::MemoryLock::new()))
            .deploy(&request("2"))
            .await
            .unwrap_or_else(|e| panic!("after {step}: {e}"));
        let live = BTreeSet::from([report.live.to_string()]);
        let groups: BTreeSet<String> = rig
            .fleet
            .groups(&app)
            .await
            .unwrap()
            .into_iter()
            .map(|g| g.id.to_string())
            .collect();
        assert_eq!(groups, live, "after {step}: one group");
        assert_eq!(
            rig.asgs(&app).await,
            live,
            "after {step}: Auto Scaling groups"
        );
        assert_eq!(
            rig.launch_templates(&app).await,
            live,
            "after {step}: launch templates"
        );
        assert_eq!(
            rig.target_groups(&app).await,
            live,
            "after {step}: target groups"
        );
        let running = rig.live_instances(&app).await;
        assert!(
            running
                .iter()
                .all(|(_, g)| g.as_deref() == Some(report.live.as_str())),
            "after {step}: stray instances {running:?}"
        );
        assert_eq!(running.len(), 2, "after {step}");
        cases += 1;
    }
    println!("interrupted Auto Scaling deployment: {cases} cases converged");
}

/// A launch that stopped between the launch template and the Auto Scaling group
/// leaves a group the fleet lists (with no instance) and destroys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launch_template_without_its_group_is_listed_and_destroyed() {
    let rig = rig("asg-half").await;
    let app = App::new("half", "asg").unwrap();
    let image = rig
        .image
        .prepare(&app, &rig.bake("1"), &EventSink::none())
        .await
        .unwrap();
    let group = Group::new(
        app.clone(),
        Generation(1),
        Release::new(image.id.clone(), 2),
        DeploymentId::new("d-half"),
        None,
    );
    rig.fleet.launch(&group).await.unwrap();
    // the Auto Scaling group goes behind bluegreen's back; its template stays
    rig.clients
        .autoscaling()
        .delete_auto_scaling_group()
        .auto_scaling_group_name(group.id.as_str())
        .force_delete(true)
        .send()
        .await
        .unwrap();
    let listed = rig.fleet.groups(&app).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, group.id);
    assert!(rig
        .fleet
        .instances(&app, &group.id)
        .await
        .unwrap()
        .is_empty());
    rig.fleet.destroy(&app, &group.id).await.unwrap();
    assert!(rig.fleet.groups(&app).await.unwrap().is_empty());
    assert!(rig.launch_templates(&app).await.is_empty());
    rig.fleet.destroy(&app, &group.id).await.unwrap();
    let e = rig.fleet.instances(&app, &group.id).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn look_alike_auto_scaling_groups_without_tags_are_never_touched() {
    let rig = rig("asg-lookalike").await;
    let app = App::new("alike", "asg").unwrap();
    // a launch template and an Auto Scaling group named like a group of the app,
    // with the app's name tag but not bluegreen's owner tag
    let lookalike = Group::id_for(&app, Generation(0)).to_string();
    let template = rig
        .clients
        .ec2()
        .create_launch_template()
        .launch_template_name(format!("{lookalike}-foreign"))
        .launch_template_data(
            RequestLaunchTemplateData::builder()
                .image_id(&rig.net.base_ami)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let template_id = template
        .launch_template()
        .unwrap()
        .launch_template_id()
        .unwrap()
        .to_owned();
    rig.clients
        .autoscaling()
        .create_auto_scaling_group()
        .auto_scaling_group_name(&lookalike)
        .launch_template(
            LaunchTemplateSpecification::builder()
                .launch_template_id(&template_id)
                .build(),
        )
        .min_size(1)
        .max_size(1)
        .desired_capacity(1)
        .vpc_zone_identifier(rig.net.subnets[0].clone())
        .tags(
            aws_sdk_autoscaling::types::Tag::builder()
                .key("bluegreen.app")
                .value(app.name())
                .propagate_at_launch(true)
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert!(rig.fleet.groups(&app).await.unwrap().is_empty());
    let image = rig
        .image
        .prepare(&app, &rig.bake("1"), &EventSink::none())
        .await
        .unwrap();
    let group = Group::new(
        app.clone(),
        Generation(0),
        Release::new(image.id.clone(), 1),
        DeploymentId::new("d-alike"),
        None,
    );
    let e = rig.fleet.launch(&group).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    rig.fleet.destroy(&app, &group.id).await.unwrap();
    let e = rig.router.attach(&app, &group.id, &[]).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");

    assert!(
        rig.target_groups(&app).await.is_empty(),
        "no target group for a group that is not ours"
    );

    // deployments beside it (generations 1, 2, 3, keep 0) never touch it
    let engine = rig.engine(0);
    for v in ["1", "2", "3"] {
        engine
            .deploy(&DeployRequest::new(app.clone(), rig.bake(v)).size(1))
            .await
            .unwrap();
    }
    assert!(
        rig.asgs(&app).await.contains(&lookalike),
        "the look-alike group survived"
    );
    let out = rig
        .clients
        .autoscaling()
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(&lookalike)
        .send()
        .await
        .unwrap();
    assert_eq!(
        out.auto_scaling_groups()[0].instances().len(),
        1,
        "its instance survived"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_instance_types_make_a_mixed_instances_policy() {
    let rig = rig("asg-mixed").await;
    let app = App::new("mixed", "asg").unwrap();
    let image = rig
        .image
        .prepare(&app, &rig.bake("1"), &EventSink::none())
        .await
        .unwrap();
    let mut release = Release::new(image.id.clone(), 2);
    release
        .settings
        .insert("instance_types".into(), "m5.large, m5a.large".into());
    let group = Group::new(
        app.clone(),
        Generation(1),
        release,
        DeploymentId::new("d-mixed"),
        None,
    );
    rig.fleet.launch(&group).await.unwrap();
    rig.fleet.launch(&group).await.unwrap();
    let out = rig
        .clients
        .autoscaling()
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(group.id.as_str())
        .send()
        .await
        .unwrap();
    let policy = out.auto_scaling_groups()[0]
        .mixed_instances_policy()
        .expect("a mixed instances policy");
    let types: Vec<&str> = policy
        .launch_template()
        .unwrap()
        .overrides()
        .iter()
        .filter_map(|o| o.instance_type())
        .collect();
    assert_eq!(types, ["m5.large", "m5a.large"]);
    assert_eq!(
        rig.fleet.groups(&app).await.unwrap().len(),
        1,
        "adopted once"
    );
    assert_eq!(rig.fleet.instances(&app, &group.id).await.unwrap().len(), 2);
    rig.fleet.destroy(&app, &group.id).await.unwrap();
    assert!(rig.asgs(&app).await.is_empty());
    assert!(rig.launch_templates(&app).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_are_refused_before_any_call() {
    let clients = clients().await;
    let bad_options = [
        (AsgFleetOptions::new(Vec::<String>::new()), "subnets"),
        (AsgFleetOptions::new(["sub-1"]), "subnets"),
        (AsgFleetOptions::new(["subnet-1", "subnet-1"]), "subnets"),
        (
            AsgFleetOptions::new(["subnet-1"]).with_security_groups(["default"]),
            "security_groups",
        ),
        (
            AsgFleetOptions::new(["subnet-1"]).with_instance_type("large"),
            "instance_type",
        ),
        (AsgFleetOptions::new(["subnet-1"]).with_port(0), "port"),
        (
            AsgFleetOptions::new(["subnet-1"])
                .with_health_check_grace_period(Duration::from_millis(1500)),
            "health_check_grace_period",
        ),
        (
            AsgFleetOptions::new(["subnet-1"]).with_delete_wait(Duration::ZERO),
            "delete_wait",
        ),
    ];
    for (options, field) in bad_options {
        let e = AsgFleet::new(clients.clone(), options).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Invalid, "{field}: {e}");
        assert!(e.to_string().contains(field), "{field}: {e}");
    }

    let fleet = AsgFleet::new(clients.clone(), AsgFleetOptions::new(["subnet-1"])).unwrap();
    let app = App::new("refused", "asg").unwrap();
    let bad_settings = [
        ("port", "http", "settings.port"),
        ("port", "0", "settings.port"),
        ("instance_type", "big", "settings.instance_type"),
        (
            "instance_types",
            "t3.micro,,m5.large",
            "settings.instance_types",
        ),
        (
            "instance_types",
            "t3.micro,t3.micro",
            "settings.instance_types",
        ),
        ("flavour", "x", "settings.flavour"),
    ];
    let before = clients.call_counts();
    for (key, value, field) in bad_settings {
        let release = Release::new(ImageId::new("ami-12345678"), 1).with_setting(key, value);
        let e = fleet.check_release(&release).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Invalid, "{key}={value}: {e}");
        assert!(e.to_string().contains(field), "{key}={value}: {e}");
        let group = Group::new(
            app.clone(),
            Generation(1),
            release,
            DeploymentId::new("d-refused"),
            None,
        );
        let e = fleet.launch(&group).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Invalid, "{key}={value}: {e}");
    }
    assert_eq!(clients.call_counts(), before, "no call was made");
}

/// The group's minimum, maximum and desired capacity.
async fn capacity(clients: &AwsClients, group: &str) -> (i32, i32, i32) {
    let out = clients
        .autoscaling()
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(group)
        .send()
        .await
        .unwrap();
    let g = &out.auto_scaling_groups()[0];
    (
        g.min_size().unwrap(),
        g.max_size().unwrap(),
        g.desired_capacity().unwrap(),
    )
}

/// With `EngineOptions::warm_size`, the previous group is scaled in after the switch
/// (minimum and desired only) and back, healthy, before a rollback moves the
/// listener to it. Describe calls go through a page size of 1, so that the groups
/// and the scaled-back group's instances (two reservations) take several pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_group_is_scaled_in_and_back_before_a_rollback() {
    let rig = rig_with("asg-warm", |o| o.with_page_size(1)).await;
    let app = App::new("warm", "asg").unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let engine = rig
        .engine(1)
        .with_options(
            EngineOptions::default()
                .with_poll_interval(Duration::from_millis(200))
                .with_drain(Duration::from_millis(100))
                .with_keep(1)
                .with_warm_size(Some(1)),
        )
        .with_events(EventSink::new({
            let seen = seen.clone();
            move |e: &Event| seen.lock().unwrap().push((Instant::now(), e.clone()))
        }));
    let request = |v: &str| DeployRequest::new(app.clone(), rig.bake(v)).size(3);
    let v1 = engine.deploy(&request("1")).await.unwrap().live;
    let before = rig.clients.call_counts();
    let v2 = engine.deploy(&request("2")).await.unwrap().live;
    let updates = |counts: &std::collections::BTreeMap<String, u64>| {
        counts.get("UpdateAutoScalingGroup").copied().unwrap_or(0)
    };
    assert_eq!(
        updates(&rig.clients.call_counts()) - updates(&before),
        1,
        "one UpdateAutoScalingGroup scales v1 in"
    );
    assert_eq!(capacity(&rig.clients, v1.as_str()).await, (1, 3, 1));
    assert_eq!(capacity(&rig.clients, v2.as_str()).await, (3, 3, 3));
    assert_eq!(rig.fleet.instances(&app, &v1).await.unwrap().len(), 1);

    // the groups, one a page
    let before = rig.clients.call_counts();
    let groups = rig.fleet.groups(&app).await.unwrap();
    assert_eq!(groups.len(), 2, "{groups:?}");
    let pages = rig.clients.call_counts()["DescribeAutoScalingGroups"]
        - before["DescribeAutoScalingGroups"];
    assert!(pages >= 2, "{pages} pages for two groups");

    seen.lock().unwrap().clear();
    let started = Instant::now();
    let back = engine.rollback(&app).await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!((back.to.clone(), back.relaunched), (v1.clone(), false));
    let events = seen.lock().unwrap().clone();
    let at = |wanted: &dyn Fn(&Event) -> bool| {
        events
            .iter()
            .position(|(_, e)| wanted(e))
            .unwrap_or_else(|| panic!("{events:#?}"))
    };
    let scaled = at(&|e| matches!(e, Event::GroupScaledOut { size: 3, .. }));
    let healthy = at(&|e| matches!(e, Event::Health { healthy: 3, .. }));
    let shifted = at(&|e| matches!(e, Event::TrafficShifted { .. }));
    assert!(scaled < healthy && healthy < shifted, "{events:#?}");
    println!(
        "scaled back 1 -> 3 on moto: healthy {:?} after the scale-out call, listener moved after {:?}; the whole rollback {elapsed:?}",
        events[healthy].0 - events[scaled].0,
        events[shifted].0 - events[scaled].0,
    );
    assert_eq!(
        rig.router.routes(&app).await.unwrap(),
        RouteTable::single(v1.clone())
    );
    assert_eq!(capacity(&rig.clients, v1.as_str()).await, (3, 3, 3));
    assert_eq!(
        capacity(&rig.clients, v2.as_str()).await,
        (1, 3, 1),
        "the group rolled back from is scaled in"
    );

    // the scaled-back group's instances: one reservation from its launch, one from
    // its scale-out, read on two pages at least, every one with its address
    let before = rig.clients.call_counts();
    let instances = rig.fleet.instances(&app, &v1).await.unwrap();
    let pages = rig.clients.call_counts()["DescribeInstances"] - before["DescribeInstances"];
    assert!(pages >= 2, "{pages} pages");
    assert_eq!(instances.len(), 3, "{instances:?}");
    assert!(
        instances
            .iter()
            .all(|i| i.health.is_healthy() && i.address.is_some()),
        "{instances:?}"
    );

    // scaling is idempotent, refuses a size above the maximum, and a missing group
    let calls = rig.clients.call_counts();
    rig.fleet.scale(&app, &v1, 3).await.unwrap();
    assert_eq!(updates(&rig.clients.call_counts()), updates(&calls));
    let e = rig.fleet.scale(&app, &v1, 4).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid, "{e}");
    let missing = Group::id_for(&app, Generation(99));
    let e = rig.fleet.scale(&app, &missing, 1).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
}
