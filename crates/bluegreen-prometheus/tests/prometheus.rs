//! The PromQL check against a real Prometheus that scrapes a real proxy: canary
//! deployments of the sample app (local provider) fail and pass through it, and
//! its error cases are met on the real server.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bluegreen_core::{
    App, DeployRequest, Engine, EngineOptions, ErrorKind, Fleet, GroupId, ImageSource, RouteTable,
    Router, Strategy,
};
use bluegreen_local::{LocalFleet, LocalImage, StateDir};
use bluegreen_prometheus::PromQlCheck;
use bluegreen_proxy::{admin, AdminListener, AdminToken, Proxy, ProxyOptions, ProxyRouter};
use bluegreen_testkit::http_load::HttpLoad;
use bluegreen_testkit::scratch::Scratch;
use support::{free_port, prometheus_binary};

const TOKEN: &str = "prometheus-scrape-token";

/// The new group's share of errors over the last 5 s, as the proxy counts them.
const ERROR_RATIO: &str = r#"sum(rate(bluegreen_proxy_errors_total{app="{app}.{environment}",group="{group}"}[5s])) / sum(rate(bluegreen_proxy_requests_total{app="{app}.{environment}",group="{group}"}[5s]))"#;

/// A Prometheus process of this test: its own configuration and data directory,
/// scraping `target`'s `/metrics` every second with the admin token. Killed
/// when dropped.
struct Prometheus {
    url: String,
    child: tokio::process::Child,
}

impl Prometheus {
    async fn start(binary: &Path, dir: &Path, target: SocketAddr) -> Prometheus {
        let token_file = dir.join("token");
        std::fs::write(&token_file, TOKEN).unwrap();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: proxy\n    metrics_path: /metrics\n    \
                 authorization:\n      credentials_file: {}\n    static_configs:\n      \
                 - targets: ['{target}']\n",
                token_file.display()
            ),
        )
        .unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = tokio::process::Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{} did not start: {e}", binary.display()));
        let prometheus = Prometheus {
            url: format!("http://127.0.0.1:{port}"),
            child,
        };
        // ready, and the proxy scraped at least once
        let up = PromQlCheck::below("up", &prometheus.url, r#"up{job="proxy"}"#, 1.0)
            .unwrap()
            .with_timeout(Duration::from_secs(2));
        let mut last = String::new();
        for _ in 0..300 {
            match up.evaluate(r#"up{job="proxy"}"#).await {
                Ok(1.0) => return prometheus,
                Ok(v) => last = format!("up is {v}"),
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let log = std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default();
        panic!("Prometheus did not scrape the proxy within 30 s: {last}\n{log}");
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// A proxy with its admin listener, Prometheus scraping it, and an engine that
/// deploys the sample app with the local provider behind the proxy.
struct Rig {
    tmp: Scratch,
    proxy_addr: SocketAddr,
    router: ProxyRouter,
    fleet: LocalFleet,
    engine: Engine,
    app: App,
    prometheus: Prometheus,
}

impl Rig {
    async fn start(tag: &str) -> Option<Rig> {
        let binary = prometheus_binary()?;
        let tmp = Scratch::new(tag);
        let proxy = Proxy::new(
            ProxyOptions::default().with_health(
                bluegreen_proxy::HealthCheckOptions::default()
                    .with_interval(Duration::from_millis(200)),
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy_addr = listener.local_addr().unwrap();
        let serving = proxy.clone();
        tokio::spawn(async move { serving.serve(listener, None, std::future::pending()).await });
        let admin_listener = AdminListener::bind(&"127.0.0.1:0".parse().unwrap(), false)
            .await
            .unwrap();
        let admin_addr = admin_listener.local_addr().unwrap();
        tokio::spawn(admin::serve(
            proxy.clone(),
            admin_listener,
            AdminToken::new(TOKEN).unwrap(),
            std::future::pending(),
        ));
        let prometheus = Prometheus::start(&binary, tmp.path(), admin_addr).await;
        let state = StateDir::new(tmp.path().join("state")).unwrap();
        let image = LocalImage::new(state.clone());
        let fleet = LocalFleet::new(state, image.clone());
        let router = ProxyRouter::embedded(proxy);
        let engine = Engine::new(image, fleet.clone(), router.clone()).with_options(
            EngineOptions::default()
                .with_poll_interval(Duration::from_millis(100))
                .with_drain(Duration::from_millis(200))
                .with_health_timeout(Duration::from_secs(20))
                .with_keep(1),
        );
        Some(Rig {
            tmp,
            proxy_addr,
            router,
            fleet,
            engine,
            app: App::new("web", "metrics").unwrap(),
            prometheus,
        })
    }

    /// An image directory: the sample app as `version` with `flags`.
    fn image(&self, version: &str, flags: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let dir = self.tmp.path().join(format!("image-{version}"));
        std::fs::create_dir_all(&dir).unwrap();
        let sample_app = bluegreen_testkit::binaries::binary("sample-app", "sample-app");
        std::fs::copy(sample_app, dir.join("sample-app")).unwrap();
        let script = dir.join("run");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nexec \"$(dirname \"$0\")/sample-app\" --app-version {version} {flags}\n"
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        dir
    }

    fn request(&self, version: &str, flags: &str) -> DeployRequest {
        DeployRequest::new(
            self.app.clone(),
            ImageSource::Artifact(self.image(version, flags)),
        )
        .size(1)
        .setting("command", "run")
        .setting("stop_timeout_ms", "3000")
    }

    /// A canary to 50 % for 4 s, with the error ratio checked after the step.
    fn canary(&self, version: &str, flags: &str) -> DeployRequest {
        let check =
            PromQlCheck::above("error ratio", &self.prometheus.url, ERROR_RATIO, 0.1).unwrap();
        self.request(version, flags)
            .strategy(Strategy::canary([50], Duration::from_secs(4)))
            .analysis(Arc::new(check))
    }

    async fn clean(&self) {
        self.router
            .set_routes(&self.app, &RouteTable::empty())
            .await
            .unwrap();
        for g in self.fleet.groups(&self.app).await.unwrap() {
            self.router.detach(&self.app, &g.id).await.unwrap();
            self.fleet.destroy(&self.app, &g.id).await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_that_answers_500_fails_its_step_and_a_good_one_passes() {
    let Some(rig) = Rig::start("promql-canary").await else {
        return;
    };
    let v1 = rig.engine.deploy(&rig.request("1", "")).await.unwrap();
    let load = HttpLoad::start(rig.proxy_addr, "web.metrics", 2);

    let e = rig
        .engine
        .deploy(&rig.canary("2", "--error-rate 1.0"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unhealthy, "{e}");
    let text = e.to_string();
    assert!(
        text.contains("check `error ratio` failed") && text.contains("above the limit 0.1"),
        "{text}"
    );
    assert!(e.rolled_back(), "{e}");
    assert_eq!(
        rig.router.routes(&rig.app).await.unwrap(),
        RouteTable::single(v1.live.clone()),
        "no route left on the failed group"
    );
    let groups = rig.fleet.groups(&rig.app).await.unwrap();
    assert_eq!(
        groups.iter().map(|g| g.id.clone()).collect::<Vec<_>>(),
        vec![v1.live.clone()],
        "the failed group is removed"
    );

    let report = rig.engine.deploy(&rig.canary("3", "")).await.unwrap();
    assert_ne!(report.live, v1.live);
    assert_eq!(
        rig.router.routes(&rig.app).await.unwrap(),
        RouteTable::single(report.live.clone())
    );
    // the check passed on the good group with its traffic counted: a ratio of 0
    let check = PromQlCheck::above("error ratio", &rig.prometheus.url, ERROR_RATIO, 0.1).unwrap();
    let ratio = check.check(&rig.app, &report.live).await;
    let seen = load.stop().await;
    assert_eq!(ratio, Ok(0.0));
    assert!(seen.by_version.get("3").is_some_and(|n| *n > 0), "{seen:?}");
    rig.clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checks_error_cases_on_a_real_server() {
    let Some(rig) = Rig::start("promql-errors").await else {
        return;
    };
    let url = rig.prometheus.url.clone();
    let app = &rig.app;
    let group = &GroupId::from("web-metrics-v009");
    let run = |query: &str, above: f64| {
        let check = PromQlCheck::above("c", &url, query, above).unwrap();
        async move { check.check(app, group).await }
    };

    // a bad expression: Prometheus' own error text
    let e = run("sum(rate(", 1.0).await.unwrap_err();
    assert!(
        e.starts_with("Prometheus refused `sum(rate(`: bad_data:") && e.contains("parse error"),
        "{e}"
    );
    // no series for the group
    let e = run(r#"bluegreen_proxy_drains{group="{group}"}"#, 1.0)
        .await
        .unwrap_err();
    assert!(e.contains("empty result"), "{e}");
    // several series
    let e = run(r#"up{job="proxy"} or vector(1)"#, 1.0)
        .await
        .unwrap_err();
    assert!(e.contains("gave 2 series") && e.contains("sum(...)"), "{e}");
    // a range vector
    let e = run(r#"up{job="proxy"}[5s]"#, 1.0).await.unwrap_err();
    assert!(e.contains("a matrix"), "{e}");
    // NaN
    let e = run("0/0", 1.0).await.unwrap_err();
    assert!(e.contains("NaN"), "{e}");
    // the limit, both ways, on a scalar and on a one-series vector
    assert_eq!(run("scalar(vector(2))", 2.0).await, Ok(2.0));
    let e = run("scalar(vector(2))", 1.5).await.unwrap_err();
    assert_eq!(e, "`scalar(vector(2))` is 2, above the limit 1.5");
    let below = PromQlCheck::below("c", &url, r#"up{job="proxy"}"#, 2.0).unwrap();
    let e = below.check(app, &"g".into()).await.unwrap_err();
    assert!(e.ends_with("is 1, below the limit 2"), "{e}");
    // a server that is not there: the check fails closed
    let gone =
        PromQlCheck::above("c", &format!("http://127.0.0.1:{}", free_port()), "up", 1.0).unwrap();
    let e = gone.check(app, &"g".into()).await.unwrap_err();
    assert!(e.contains("could not be reached"), "{e}");
}
