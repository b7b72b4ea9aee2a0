//! 100 switches between two groups under constant concurrent load: no failed
//! request, and every response comes from a group routed while it was in flight.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bluegreen_core::{App, GroupId, Health, Instance, RouteTable, Router};
use bluegreen_proxy::ProxyRouter;
use support::*;
use tokio::time::Instant;

const CLIENTS: usize = 16;
const SWITCHES: usize = 100;

struct Sample {
    start: Instant,
    end: Instant,
    outcome: Result<String, String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_switches_under_load_fail_no_request() {
    let proxy = RunningProxy::start(test_options()).await;
    let router = ProxyRouter::embedded(proxy.proxy.clone());
    let app = App::new("web", "production").unwrap();
    let host = router.host_of(&app);
    let blue = GroupId::from("web-production-v001");
    let green = GroupId::from("web-production-v002");
    let mut backends = Vec::new();
    for (group, n) in [(&blue, 2), (&green, 2)] {
        let mut instances = Vec::new();
        for i in 0..n {
            let b = TestBackend::start(group.as_str(), &format!("i{i}")).await;
            instances.push(Instance::new(
                format!("{group}-i{i}").as_str(),
                Some(b.address()),
                Health::Healthy,
            ));
            backends.push(b);
        }
        router.attach(&app, group, &instances).await.unwrap();
        let serving = router.serving(&app, group).await.unwrap();
        assert_eq!((serving.healthy, serving.total), (n, n), "{group}");
    }
    router
        .set_routes(&app, &RouteTable::single(blue.clone()))
        .await
        .unwrap();

    // (before, after, group): the change took effect between `before` and `after`
    let history = Arc::new(Mutex::new(vec![(
        Instant::now(),
        Instant::now(),
        blue.to_string(),
    )]));
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let stop = stop.clone();
        let url = proxy.url("/");
        let host = host.clone();
        clients.push(tokio::spawn(async move {
            let client = if c % 2 == 0 {
                http1_client()
            } else {
                h2c_client()
            };
            let mut samples = Vec::new();
            // bounded: stops with the switches, or after 20 000 requests at most
            while !stop.load(Ordering::Relaxed) && samples.len() < 20_000 {
                let start = Instant::now();
                let outcome = match get(&client, &url, &host, &[]).await {
                    Ok((status, _, body)) if status.is_success() => Ok(body),
                    Ok((status, _, body)) => Err(format!("{status}: {body}")),
                    Err(e) => Err(e),
                };
                samples.push(Sample {
                    start,
                    end: Instant::now(),
                    outcome,
                });
            }
            samples
        }));
    }

    for i in 0..SWITCHES {
        tokio::time::sleep(Duration::from_millis(15)).await;
        let to = if i % 2 == 0 { &green } else { &blue };
        let before = Instant::now();
        router
            .set_routes(&app, &RouteTable::single(to.clone()))
            .await
            .unwrap();
        history
            .lock()
            .unwrap()
            .push((before, Instant::now(), to.to_string()));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop.store(true, Ordering::Relaxed);

    let history = history.lock().unwrap().clone();
    let mut total = 0;
    let mut failures = Vec::new();
    let mut misrouted = Vec::new();
    let mut served = std::collections::BTreeMap::<String, usize>::new();
    for client in clients {
        for s in client.await.unwrap() {
            total += 1;
            match &s.outcome {
                Err(e) => failures.push(e.clone()),
                Ok(body) => {
                    let group = body.split(' ').next().unwrap_or("").to_string();
                    *served.entry(group.clone()).or_default() += 1;
                    // the group of table i is routed from history[i].0 until
                    // history[i+1].1
                    let routed_in_flight = history.iter().enumerate().any(|(i, h)| {
                        let from = h.0;
                        let until = history.get(i + 1).map(|n| n.1);
                        h.2 == group && from <= s.end && until.is_none_or(|u| u >= s.start)
                    });
                    if !routed_in_flight {
                        misrouted.push(body.clone());
                    }
                }
            }
        }
    }
    assert!(total > SWITCHES, "only {total} requests ran");
    assert!(
        failures.is_empty(),
        "{} of {total} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(
        misrouted.is_empty(),
        "{} of {total} misrouted: {:?}",
        misrouted.len(),
        &misrouted[..misrouted.len().min(5)]
    );
    assert!(served.len() == 2, "both groups served: {served:?}");
    let serving = router.serving(&app, &blue).await.unwrap();
    assert!(
        serving.requests.unwrap() > 0 && serving.errors == Some(0),
        "{serving:?}"
    );
    assert!(serving.p99.is_some());
}
