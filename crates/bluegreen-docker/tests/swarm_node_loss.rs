//! A node of the harness's swarm lost during a deployment (its dockerd and every
//! process of its namespace killed, its link cut): the deployment converges or fails
//! closed, and no request reaches the lost node. A test program of its own, since it
//! takes a node away from the swarm that the other Swarm tests share; it brings the
//! node back when it ends, passed or not.

mod swarm_support;

use std::time::{Duration, Instant};

use bluegreen_core::{App, DeployRequest, Fleet, RouteTable, Router};
use bluegreen_testkit::zero_downtime::ZeroDowntime;
use swarm_support::{build, context, deploy_options, setup, swarm, Cleanup, Harness, Scratch};

/// Brings node `n` back when dropped.
struct NodeBack(Harness, usize);

impl Drop for NodeBack {
    fn drop(&mut self) {
        let out = std::process::Command::new(&self.0.script)
            .args(["node-up", &self.1.to_string()])
            .output();
        match out {
            Ok(o) if o.status.success() => println!("node {} is back", self.1),
            Ok(o) => println!(
                "node {} did not come back: {}",
                self.1,
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => println!("node {} did not come back: {e}", self.1),
        }
    }
}

fn request(app: &App, dir: std::path::PathBuf) -> DeployRequest {
    DeployRequest::new(app.clone(), build(dir))
        .size(3)
        .setting("stop_timeout_ms", "1000")
        .setting("memory", "64m")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_lost_during_a_deployment_gets_no_traffic() {
    let Some((h, docker)) = swarm("node loss").await else {
        return;
    };
    assert_eq!(h.addresses.len(), 3, "{h:?}");
    let lost_ip = h.addresses[2].clone();
    let tmp = Scratch::new("swarm-node-loss");
    let app = swarm_support::app("lost", "swarm");
    let _cleanup = Cleanup::new(&h, &app);
    let s = setup(
        &h,
        docker,
        deploy_options().with_health_timeout(Duration::from_secs(120)),
    )
    .await;
    // the live group stays off node 3, so that only the new group meets the loss
    let first = s
        .engine
        .deploy(
            &request(&app, context(tmp.path(), "1", &[]))
                .setting("constraints", "node.labels.bluegreen.node!=3"),
        )
        .await
        .unwrap();
    let mut load = ZeroDowntime::new(
        s.proxy.address(),
        format!("{}.{}", app.name(), app.environment()),
    )
    .with_clients(4)
    .start()
    .await;
    // the new group spreads over the three nodes; node 3 is lost once it runs a task
    let v2 = request(&app, context(tmp.path(), "2", &[]))
        .setting("spread", "node.labels.bluegreen.node");
    let fleet = s.fleet.clone();
    let watcher_app = app.clone();
    let watcher_h = h.clone();
    let watcher_ip = lost_ip.clone();
    let watcher = tokio::spawn(async move {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(120) {
            for g in fleet.groups(&watcher_app).await.unwrap_or_default() {
                if g.generation.0 < 2 {
                    continue;
                }
                let on_lost = fleet
                    .instances(&watcher_app, &g.id)
                    .await
                    .unwrap_or_default()
                    .iter()
                    .any(|i| {
                        i.address
                            .as_deref()
                            .is_some_and(|a| a.starts_with(&format!("{watcher_ip}:")))
                    });
                if on_lost {
                    let out = std::process::Command::new(&watcher_h.script)
                        .args(["kill-node", "3"])
                        .output()
                        .unwrap();
                    assert!(out.status.success(), "{out:?}");
                    return Some(NodeBack(watcher_h, 3));
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    });
    let outcome = load
        .phase("deploy while node 3 is lost", s.engine.deploy(&v2))
        .await;
    let back = watcher.await.unwrap();
    assert!(
        back.is_some(),
        "node 3 ran a task of the new group and was lost"
    );
    let report = load.finish().await; // panics on any failed request
    println!("{outcome:?}");
    let routes = s.proxy.router().routes(&app).await.unwrap();
    match outcome {
        Ok(deployed) => {
            println!(
                "converged: {} requests, versions {:?}",
                report.total.ok, report.total.versions
            );
            assert_eq!(routes, RouteTable::single(deployed.live.clone()));
            // the deployment may have converged before the swarm saw the node
            // go (its task there was healthy when checked, the node lost just
            // after): the swarm then replaces that task once it marks the node
            // down, within its heartbeat timeouts
            let deadline = Instant::now() + Duration::from_secs(120);
            let (instances, healthy) = loop {
                let instances = s.fleet.instances(&app, &deployed.live).await.unwrap();
                let healthy: Vec<_> = instances
                    .iter()
                    .filter(|i| i.health.is_healthy())
                    .cloned()
                    .collect();
                if healthy.len() == 3 || Instant::now() > deadline {
                    break (instances, healthy);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            };
            assert_eq!(healthy.len(), 3, "{instances:?}");
            assert!(
                healthy.iter().all(|i| !i
                    .address
                    .as_deref()
                    .unwrap()
                    .starts_with(&format!("{lost_ip}:"))),
                "no healthy instance on the lost node: {instances:?}"
            );
            // and the proxy sends nothing there: a fresh load answers fully
            let after = ZeroDowntime::new(
                s.proxy.address(),
                format!("{}.{}", app.name(), app.environment()),
            )
            .with_clients(4)
            .start()
            .await;
            let seen = after.finish().await;
            assert_eq!(seen.total.versions, vec!["2".to_owned()]);
        }
        Err(e) => {
            println!("failed closed: {e}");
            assert!(e.rolled_back(), "{e}");
            assert_eq!(routes, RouteTable::single(first.live.clone()));
            assert_eq!(report.total.versions, vec!["1".to_owned()]);
        }
    }
    drop(back);
}
