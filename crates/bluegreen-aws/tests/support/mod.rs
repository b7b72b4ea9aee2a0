//! The AWS API in the tests: a real `moto` server on a free loopback port, installed
//! into the project's `.venv` when missing, the network a test deploys into, and
//! what every rig reads back from the account.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use bluegreen_aws::{AmiImage, AmiImageOptions, AwsClients, AwsOptions};
use bluegreen_core::{App, ImageSource};

struct Moto {
    endpoint: String,
    _child: Child,
}

static MOTO: OnceLock<Moto> = OnceLock::new();

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `moto_server`: `$BLUEGREEN_MOTO_SERVER`, or the project's `.venv`, installed there
/// with pip when missing.
fn moto_server() -> PathBuf {
    if let Some(path) = std::env::var_os("BLUEGREEN_MOTO_SERVER") {
        return PathBuf::from(path);
    }
    let venv = workspace().join(".venv");
    let server = venv.join("bin/moto_server");
    if !server.is_file() {
        eprintln!("installing moto[server] into {}", venv.display());
        let ok = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success())
            && Command::new(venv.join("bin/pip"))
                .args([
                    "install",
                    "-q",
                    "--disable-pip-version-check",
                    "moto[server]>=5,<6",
                ])
                .status()
                .is_ok_and(|s| s.success());
        assert!(
            ok,
            "could not install moto[server] into {} (python3 -m venv, pip install)",
            venv.display()
        );
    }
    server
}

/// The moto endpoint, started once per test binary. The server dies with the tests.
pub fn endpoint() -> String {
    MOTO.get_or_init(|| {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // moto_server runs as long as this test process holds the pipe to its shell:
        // when the tests end, the pipe closes, `read` returns and the shell stops it
        let mut command = Command::new("sh");
        command
            .args([
                "-c",
                "\"$0\" -H 127.0.0.1 -p \"$1\" >/dev/null 2>&1 & pid=$!; read _; kill $pid",
            ])
            .arg(moto_server())
            .arg(port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::null());
        let child = command.spawn().expect("moto_server starts");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "moto_server did not listen on {port} within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // the SDK's configuration chain reads these; moto accepts any credentials
        std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
        std::env::set_var("AWS_REGION", "us-east-1");
        std::env::remove_var("AWS_PROFILE");
        Moto {
            endpoint: format!("http://127.0.0.1:{port}"),
            _child: child,
        }
    })
    .endpoint
    .clone()
}

/// Clients pointed at moto.
pub async fn clients() -> AwsClients {
    let endpoint = endpoint();
    AwsClients::load(
        &AwsOptions::default()
            .with_region("us-east-1")
            .with_endpoint_url(endpoint),
    )
    .await
}

/// A VPC with two subnets in two zones, a load balancer and a listener, and a base AMI.
pub struct Network {
    pub vpc: String,
    pub subnets: Vec<String>,
    pub listener: String,
    pub base_ami: String,
}

pub async fn network(clients: &AwsClients, name: &str) -> Network {
    use aws_sdk_ec2::types::Filter;
    let ec2 = clients.ec2();
    let vpc = ec2
        .create_vpc()
        .cidr_block("10.0.0.0/16")
        .send()
        .await
        .unwrap();
    let vpc = vpc.vpc().unwrap().vpc_id().unwrap().to_owned();
    let mut subnets = Vec::new();
    for (n, zone) in ["us-east-1a", "us-east-1b"].iter().enumerate() {
        let s = ec2
            .create_subnet()
            .vpc_id(&vpc)
            // /20: room for two 200-instance groups in one subnet (moto uses the first)
            .cidr_block(format!("10.0.{}.0/20", n * 16))
            .availability_zone(*zone)
            .send()
            .await
            .unwrap();
        subnets.push(s.subnet().unwrap().subnet_id().unwrap().to_owned());
    }
    let elb = clients.elb();
    let lb = elb
        .create_load_balancer()
        .name(format!("lb-{name}"))
        .set_subnets(Some(subnets.clone()))
        .send()
        .await
        .unwrap();
    let lb_arn = lb.load_balancers()[0]
        .load_balancer_arn()
        .unwrap()
        .to_owned();
    use aws_sdk_elasticloadbalancingv2::types::{
        Action, ActionTypeEnum, FixedResponseActionConfig, ProtocolEnum,
    };
    let listener = elb
        .create_listener()
        .load_balancer_arn(lb_arn)
        .protocol(ProtocolEnum::Http)
        .port(80)
        .default_actions(
            Action::builder()
                .r#type(ActionTypeEnum::FixedResponse)
                .fixed_response_config(
                    FixedResponseActionConfig::builder()
                        .status_code("503")
                        .content_type("text/plain")
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    let listener = listener.listeners()[0].listener_arn().unwrap().to_owned();
    let images = ec2
        .describe_images()
        .owners("amazon")
        .filters(
            Filter::builder()
                .name("architecture")
                .values("x86_64")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let base_ami = images
        .images()
        .first()
        .and_then(|i| i.image_id())
        .expect("moto has base AMIs")
        .to_owned();
    Network {
        vpc,
        subnets,
        listener,
        base_ami,
    }
}

/// Plays the provisioning script's last line (`shutdown -h now`) for moto, which runs
/// no user data: every running builder instance is stopped shortly after it runs.
/// One poller for the whole test binary, on its own thread and runtime, so that it
/// outlives each test's runtime.
pub fn stop_builders(_clients: &AwsClients) {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        let endpoint = endpoint();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                use aws_sdk_ec2::types::Filter;
                let clients = AwsClients::load(
                    &AwsOptions::default()
                        .with_region("us-east-1")
                        .with_endpoint_url(endpoint),
                )
                .await;
                let ec2 = clients.ec2().clone();
                loop {
                    let running = ec2
                        .describe_instances()
                        .filters(
                            Filter::builder()
                                .name("tag:bluegreen.role")
                                .values("builder")
                                .build(),
                        )
                        .filters(
                            Filter::builder()
                                .name("instance-state-name")
                                .values("running")
                                .build(),
                        )
                        .send()
                        .await;
                    if let Ok(out) = running {
                        let ids: Vec<String> = out
                            .reservations()
                            .iter()
                            .flat_map(|r| r.instances())
                            .filter_map(|i| i.instance_id().map(str::to_owned))
                            .collect();
                        if !ids.is_empty() {
                            let _ = ec2
                                .stop_instances()
                                .set_instance_ids(Some(ids))
                                .send()
                                .await;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(150)).await;
                }
            });
        });
    });
}

/// What every rig starts from: clients pointed at moto, a network of its own (one
/// load balancer listener serves one app), builders stopped as their script would,
/// and an image provider that bakes from the network's base AMI.
pub struct Base {
    pub clients: AwsClients,
    pub net: Network,
    pub image: AmiImage,
}

pub async fn base(name: &str) -> Base {
    let clients = clients().await;
    let net = network(&clients, name).await;
    stop_builders(&clients);
    let image = AmiImage::new(
        clients.clone(),
        AmiImageOptions::default()
            .with_poll_interval(Duration::from_millis(100))
            .with_builder_subnet(net.subnets[0].clone()),
    );
    Base {
        clients,
        net,
        image,
    }
}

impl Base {
    /// A bake of version `version` from the base AMI.
    pub fn bake(&self, version: &str) -> ImageSource {
        ImageSource::Bake {
            base: self.net.base_ami.clone(),
            script: format!(
                "#!/bin/sh\necho version {version} > /etc/app-version\nshutdown -h now\n"
            ),
        }
    }

    /// Target groups whose name starts with the app's slug.
    pub async fn target_groups(&self, app: &App) -> BTreeSet<String> {
        let out = self
            .clients
            .elb()
            .describe_target_groups()
            .send()
            .await
            .unwrap();
        out.target_groups()
            .iter()
            .filter_map(|t| t.target_group_name())
            .filter(|n| n.starts_with(&app.slug()))
            .map(str::to_owned)
            .collect()
    }

    /// Instances not terminated (nor terminating) with all of `filter_tags`, and
    /// their group tag (builders have none).
    pub async fn live_instances(
        &self,
        filter_tags: &[(&str, &str)],
    ) -> Vec<(String, Option<String>)> {
        use aws_sdk_ec2::types::Filter;
        let mut filters = vec![Filter::builder()
            .name("instance-state-name")
            .set_values(Some(
                ["pending", "running", "stopping", "stopped"]
                    .map(String::from)
                    .to_vec(),
            ))
            .build()];
        for (k, v) in filter_tags {
            filters.push(
                Filter::builder()
                    .name(format!("tag:{k}"))
                    .values(*v)
                    .build(),
            );
        }
        let out = self
            .clients
            .ec2()
            .describe_instances()
            .set_filters(Some(filters))
            .send()
            .await
            .unwrap();
        out.reservations()
            .iter()
            .flat_map(|r| r.instances())
            .map(|i| {
                let group = i
                    .tags()
                    .iter()
                    .find(|t| t.key() == Some("bluegreen.group"))
                    .and_then(|t| t.value())
                    .map(str::to_owned);
                (i.instance_id().unwrap().to_owned(), group)
            })
            .collect()
    }
}
