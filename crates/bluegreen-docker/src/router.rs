//! [`ProxyContainer`]: the bluegreen proxy as a long-lived container on the Docker
//! host, which outlives the programs that deploy through it.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bluegreen_core::{labels, App, Error, ErrorKind, Result, Router};
use bluegreen_proxy::{AdminToken, ProxyRouter};
use bollard::models::{ContainerCreateBody, HostConfig, RestartPolicy, RestartPolicyNameEnum};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, InspectContainerOptions, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveVolumeOptions, StartContainerOptions,
};
use bollard::Docker;
use futures_util::StreamExt;

use crate::build::{self, ContextFile, ROLE_LABEL};
use crate::error::{docker_error, has_status, PROVIDER};
use crate::labels::labels_of;

const ROLE: &str = "proxy";
/// The label holding the address a proxy container serves on.
pub const PROXY_LISTEN_LABEL: &str = "bluegreen.proxy.listen";
/// The label holding the host directory of a proxy container's admin socket.
pub const PROXY_DIR_LABEL: &str = "bluegreen.proxy.dir";
/// Where the admin socket and the token are, inside the container.
const RUN_DIR: &str = "/run/bluegreen";
/// Where the state volume is mounted, inside the container.
const STATE_DIR: &str = "/var/lib/bluegreen-proxy";

/// Where and how a [`ProxyContainer`] runs.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyContainerOptions {
    /// The container's name (2 to 100 letters, digits and `_.-`, the first a
    /// letter or digit, as Docker takes them); its state volume is
    /// `<name>-state`. Always the name, never a container id. Default
    /// `bluegreen-proxy`.
    pub name: String,
    /// Where the proxy serves clients, on the host. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// A directory of this host for the admin socket (`admin.sock`) and the admin
    /// token (`token`, mode 0600), bind-mounted into the container; created (mode
    /// 0700) when missing. Whoever can read it drives the proxy. Required.
    pub dir: PathBuf,
    /// The `bluegreen-proxy` binary, statically linked (it runs in a `FROM scratch`
    /// image), e.g. `cargo build --release -p bluegreen-proxy --target
    /// x86_64-unknown-linux-gnu` with `RUSTFLAGS="-C target-feature=+crt-static"`.
    /// Required.
    pub binary: PathBuf,
    /// More flags for the proxy (`--health-interval`, `--drain-timeout 10s`, ...);
    /// the listener, the admin API, the token and the state file are set by the
    /// container, and those flags here are [`Error::Invalid`]. Default none.
    pub args: Vec<String>,
}

impl ProxyContainerOptions {
    /// Options with the two required fields and the defaults.
    pub fn new(dir: impl Into<PathBuf>, binary: impl Into<PathBuf>) -> Self {
        ProxyContainerOptions {
            name: "bluegreen-proxy".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            dir: dir.into(),
            binary: binary.into(),
            args: Vec::new(),
        }
    }

    /// Sets [`ProxyContainerOptions::name`].
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Sets [`ProxyContainerOptions::listen`].
    pub fn with_listen(mut self, listen: SocketAddr) -> Self {
        self.listen = listen;
        self
    }

    /// Sets [`ProxyContainerOptions::args`].
    pub fn with_args(mut self, args: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.args = args.into_iter().map(Into::into).collect();
        self
    }

    /// Checks every field, before anything is created: [`Error::Invalid`] naming it.
    fn validate(&self) -> Result<()> {
        check_name(&self.name)?;
        if self.listen.port() == 0 {
            return Err(Error::invalid(
                "proxy.listen",
                "needs a fixed port: clients must find the proxy again after a restart",
            ));
        }
        if !self.dir.is_absolute() {
            return Err(Error::invalid(
                "proxy.dir",
                format!(
                    "`{}` is not an absolute path (Docker bind-mounts it)",
                    self.dir.display()
                ),
            ));
        }
        if let Some(flag) = self.args.iter().find_map(|a| {
            let flag = a.split('=').next().unwrap_or(a);
            SET_BY_THE_CONTAINER.contains(&flag).then_some(flag)
        }) {
            return Err(Error::invalid(
                "proxy.args",
                format!(
                    "`{flag}` is set by the container itself (from proxy.listen and proxy.dir); \
                     leave it out"
                ),
            ));
        }
        if !self.binary.is_file() {
            return Err(Error::invalid(
                "proxy.binary",
                format!("`{}` is not a file", self.binary.display()),
            ));
        }
        Ok(())
    }
}

/// A container name as Docker takes it: [`Error::Invalid`] naming `proxy.name`
/// otherwise.
fn check_name(name: &str) -> Result<()> {
    let name_ok = (2..=100).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !name_ok {
        return Err(Error::invalid(
            "proxy.name",
            format!(
                "`{name}` is not a container name: 2 to 100 letters, digits, `_.-`, \
                 starting with a letter or digit"
            ),
        ));
    }
    Ok(())
}

/// The bluegreen proxy as a plain, long-lived container on the Docker host.
///
/// [`ProxyContainer::start`] runs `bluegreen-proxy` in a `FROM scratch` image built
/// from [`ProxyContainerOptions::binary`] (tagged `bluegreen/proxy:<hash>`), with:
///
/// - the **host's network** (`--network host`): it serves on
///   [`ProxyContainerOptions::listen`] of the host, reaches the containers that
///   [`DockerFleet`](crate::DockerFleet) publishes on `127.0.0.1`, and opens its
///   preview listeners on the host's loopback, where the engine's checks reach them;
/// - its **admin API on a unix socket**, `<dir>/admin.sock`, and its token in
///   `<dir>/token` (mode 0600), both in [`ProxyContainerOptions::dir`],
///   bind-mounted at `/run/bluegreen`; [`ProxyContainer::router`] is a
///   [`ProxyRouter::remote`] over that socket;
/// - its **routing state on a volume**, `<name>-state`, as `--state-file`: a
///   restarted container serves the same route tables at once;
/// - the restart policy `unless-stopped`, the labels `bluegreen.owner=bluegreen`,
///   `bluegreen.role=proxy`, [`PROXY_LISTEN_LABEL`] and [`PROXY_DIR_LABEL`], and
///   the user that owns
///   `dir` (so that the socket and the token are its own).
///
/// It outlives the program that started it: a later program calls
/// [`ProxyContainer::start`] with the same name and gets the same proxy (a stopped
/// one is started again). [`ProxyContainer::remove`] takes it down.
#[derive(Clone, Debug)]
pub struct ProxyContainer {
    name: String,
    address: SocketAddr,
    router: ProxyRouter,
}

/// The proxy's flags that the container sets itself, refused in
/// [`ProxyContainerOptions::args`].
const SET_BY_THE_CONTAINER: [&str; 4] =
    ["--listen", "--admin", "--admin-token-file", "--state-file"];

/// Where the proxy's images are tagged.
const PROXY_REPOSITORY: &str = "bluegreen/proxy";

/// How many times [`ProxyContainer::start`] looks up (or builds) the proxy image
/// and creates the container on it, when the image goes in between.
const IMAGE_TRIES: u32 = 3;

/// A hash of the binary and the user, for the image's tag.
fn image_tag(binary: &[u8], uid: u32, gid: u32) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    binary.hash(&mut h);
    (uid, gid).hash(&mut h);
    format!("{PROXY_REPOSITORY}:{:016x}", h.finish())
}

fn io_error(what: &Path, e: std::io::Error) -> Error {
    Error::provider_source(PROVIDER, false, format!("{}: {e}", what.display()))
}

fn owned(l: &labels::Labels) -> bool {
    l.get(labels::OWNER).map(String::as_str) == Some(labels::OWNER_VALUE)
        && l.get(ROLE_LABEL).map(String::as_str) == Some(ROLE)
}

impl ProxyContainer {
    /// Runs the proxy container, or reuses the one that runs already.
    ///
    /// - No container has [`ProxyContainerOptions::name`]: the image is built (once
    ///   per binary: a program builds one at a time, so proxies it starts at once
    ///   share it), the state volume and `dir` are created, a random token is
    ///   written to `<dir>/token` unless one is there (programs that start the
    ///   same proxy at once all use the first one written), and the container is
    ///   created and started. Of several programs starting the same name at
    ///   once, one creates the container and the others reuse it. An image that
    ///   goes before the container is created on it (another proxy container of
    ///   the same binary removed meanwhile, its image with it) is built again.
    /// - Ours (bluegreen's labels) with the same listener: reused, running or not
    ///   (a stopped one is started; it restores its routes from its volume; when
    ///   `dir` or its token went meanwhile, a reboot that cleared it say, they are
    ///   made again first); its image is not replaced, so that nothing stops
    ///   serving.
    /// - Ours with another listener or another `dir`: [`Error::Conflict`]; remove
    ///   it first.
    /// - Another owner's container with that name: [`Error::Conflict`], and it is
    ///   left alone.
    ///
    /// Returns once the admin API answers (within 20 s; otherwise the container this
    /// call created is removed again, with the state volume when this call created
    /// it, and the error quotes its last log lines).
    /// Bad options are [`Error::Invalid`] naming the field, before anything is
    /// created.
    pub async fn start(docker: &Docker, options: &ProxyContainerOptions) -> Result<ProxyContainer> {
        options.validate()?;
        let name = options.name.as_str();
        let dir = &options.dir;
        if let Some(c) = inspect_named(docker, name).await? {
            let l = labels_of(c.config.as_ref().and_then(|c| c.labels.as_ref()));
            if !owned(&l) {
                return Err(Error::conflict(format!(
                    "container {name} exists without bluegreen's proxy labels; it is left \
                     alone (choose another proxy.name)"
                )));
            }
            let listen = options.listen.to_string();
            if l.get(PROXY_LISTEN_LABEL) != Some(&listen) {
                return Err(Error::conflict(format!(
                    "proxy container {name} serves on {}, not {listen}; remove it first \
                     (ProxyContainer::remove)",
                    l.get(PROXY_LISTEN_LABEL).map_or("?", String::as_str)
                )));
            }
            let wanted = dir.display().to_string();
            if l.get(PROXY_DIR_LABEL) != Some(&wanted) {
                return Err(Error::conflict(format!(
                    "proxy container {name} keeps its admin socket in {}, not {wanted}; \
                     give that proxy.dir, or remove it first (ProxyContainer::remove)",
                    l.get(PROXY_DIR_LABEL).map_or("?", String::as_str)
                )));
            }
            let running = c.state.as_ref().and_then(|s| s.running) == Some(true);
            if !running {
                // it reads its token when it starts: a directory that went (a
                // reboot that cleared it) is made again, with a new token
                make_dir(dir)?;
                ensure_token(dir)?;
                tracing::info!(container = name, "starting the stopped proxy container");
                start_container(docker, name).await?;
            }
            let router = Self::router_in(dir)?;
            wait_for_admin(docker, name, &router, None).await?;
            return Ok(ProxyContainer {
                name: name.to_owned(),
                address: options.listen,
                router,
            });
        }
        make_dir(dir)?;
        let meta = std::fs::metadata(dir).map_err(|e| io_error(dir, e))?;
        let (uid, gid) = (meta.uid(), meta.gid());
        let mut image = Self::image(docker, &options.binary, uid, gid).await?;
        let volume = format!("{name}-state");
        let made_volume = Self::volume(docker, &volume).await?;
        // one token for every program that starts this proxy at once: the first
        // one written is kept
        ensure_token(dir)?;
        let mut cmd = vec![
            "--listen".to_owned(),
            options.listen.to_string(),
            "--admin".to_owned(),
            format!("unix:{RUN_DIR}/admin.sock"),
            "--admin-token-file".to_owned(),
            format!("{RUN_DIR}/token"),
            "--state-file".to_owned(),
            format!("{STATE_DIR}/state.json"),
        ];
        cmd.extend(options.args.iter().cloned());
        let container_labels = HashMap::from([
            (labels::OWNER.to_owned(), labels::OWNER_VALUE.to_owned()),
            (ROLE_LABEL.to_owned(), ROLE.to_owned()),
            (PROXY_LISTEN_LABEL.to_owned(), options.listen.to_string()),
            (PROXY_DIR_LABEL.to_owned(), dir.display().to_string()),
        ]);
        let mut body = ContainerCreateBody {
            cmd: Some(cmd),
            // plain log lines in `docker logs`
            env: Some(vec!["NO_COLOR=1".into()]),
            user: Some(format!("{uid}:{gid}")),
            labels: Some(container_labels),
            stop_timeout: Some(35),
            host_config: Some(HostConfig {
                network_mode: Some("host".into()),
                binds: Some(vec![
                    format!("{}:{RUN_DIR}", dir.display()),
                    format!("{volume}:{STATE_DIR}"),
                ]),
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                    maximum_retry_count: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut tries = 0;
        let id = loop {
            tries += 1;
            body.image = Some(image);
            match docker
                .create_container(
                    Some(CreateContainerOptionsBuilder::new().name(name).build()),
                    body.clone(),
                )
                .await
            {
                Ok(created) => break created.id,
                // another program created it meanwhile: use that one
                Err(e) if has_status(&e, 409) => {
                    return Box::pin(Self::start(docker, options)).await
                }
                // the image went between its lookup and the create: another proxy
                // container of the same binary was removed, and its image with it,
                // as no container used it yet. Look it up (build it) again.
                Err(e) if has_status(&e, 404) && tries < IMAGE_TRIES => {
                    tracing::debug!(container = name, error = %e, "the proxy image went before the container was created; again");
                    image = Self::image(docker, &options.binary, uid, gid).await?;
                }
                Err(e) => return Err(docker_error(format!("container {name}"), e)),
            }
        };
        let router = Self::router_in(dir)?;
        let started = async {
            start_container(docker, &id).await?;
            wait_for_admin(docker, &id, &router, Some(Duration::from_secs(20))).await
        }
        .await;
        if let Err(e) = started {
            // nothing of a failed start is left: the container it created, and the
            // volume when it created that too
            let _ = docker
                .remove_container(
                    &id,
                    Some(RemoveContainerOptionsBuilder::new().force(true).build()),
                )
                .await;
            if made_volume {
                let _ = docker
                    .remove_volume(&volume, None::<RemoveVolumeOptions>)
                    .await;
            }
            return Err(e);
        }
        tracing::info!(container = name, listen = %options.listen, "proxy container started");
        Ok(ProxyContainer {
            name: name.to_owned(),
            address: options.listen,
            router,
        })
    }

    /// The proxy container `name` when it is ours and runs, with its admin socket
    /// and token in `dir`; `None` when there is no such container, it does not
    /// run, or it is stopped or removed while this call looks at it. Never creates
    /// or starts anything. Another owner's container of that name is
    /// [`Error::Conflict`]; a `name` that is no container name (see
    /// [`ProxyContainerOptions::name`]) is [`Error::Invalid`].
    pub async fn find(docker: &Docker, name: &str, dir: &Path) -> Result<Option<ProxyContainer>> {
        check_name(name)?;
        let Some(c) = inspect_named(docker, name).await? else {
            return Ok(None);
        };
        let l = labels_of(c.config.as_ref().and_then(|c| c.labels.as_ref()));
        if !owned(&l) {
            return Err(Error::conflict(format!(
                "container {name} is not a bluegreen proxy; it is left alone"
            )));
        }
        if c.state.as_ref().and_then(|s| s.running) != Some(true) {
            return Ok(None);
        }
        let address = l
            .get(PROXY_LISTEN_LABEL)
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| {
                Error::conflict(format!(
                    "proxy container {name} has no {PROXY_LISTEN_LABEL}"
                ))
            })?;
        let answered = async {
            let router = Self::router_in(dir)?;
            wait_for_admin(docker, name, &router, Some(Duration::from_secs(5))).await?;
            Ok(router)
        }
        .await;
        match answered {
            Ok(router) => Ok(Some(ProxyContainer {
                name: name.to_owned(),
                address,
                router,
            })),
            Err(e) => {
                // removed or stopped meanwhile (another program's remove): not there
                match inspect_named(docker, name).await {
                    Ok(None) => Ok(None),
                    Ok(Some(now)) if now.state.as_ref().and_then(|s| s.running) != Some(true) => {
                        Ok(None)
                    }
                    _ => Err(e),
                }
            }
        }
    }

    /// The router over `<dir>/admin.sock` with the token of `<dir>/token`.
    fn router_in(dir: &Path) -> Result<ProxyRouter> {
        let path = dir.join("token");
        let text = std::fs::read_to_string(&path).map_err(|e| io_error(&path, e))?;
        let token = AdminToken::new(text.trim())?;
        ProxyRouter::remote(&format!("unix:{}", dir.join("admin.sock").display()), token)
    }

    /// The proxy image for `binary`, built when missing (one build at a time in a
    /// program).
    async fn image(docker: &Docker, binary: &Path, uid: u32, gid: u32) -> Result<String> {
        // one build at a time in this program: proxies started at once share one
        // image instead of each building its own
        static BUILDING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let _one = BUILDING.lock().await;
        let bytes = std::fs::read(binary).map_err(|e| io_error(binary, e))?;
        let tag = image_tag(&bytes, uid, gid);
        if let Some(id) = build::image_id(docker, &tag).await? {
            return Ok(id);
        }
        // the state directory belongs to the user, and a new volume copies it
        let dockerfile = format!(
            "FROM scratch\nCOPY --chown={uid}:{gid} state/ {STATE_DIR}/\n\
             COPY bluegreen-proxy /bluegreen-proxy\nENTRYPOINT [\"/bluegreen-proxy\"]\n"
        );
        build::build(
            docker,
            &tag,
            ROLE,
            &[
                ContextFile {
                    path: "Dockerfile".into(),
                    bytes: dockerfile.into_bytes(),
                    mode: 0o644,
                },
                ContextFile {
                    path: "state/.keep".into(),
                    bytes: Vec::new(),
                    mode: 0o600,
                },
                ContextFile {
                    path: "bluegreen-proxy".into(),
                    bytes,
                    mode: 0o755,
                },
            ],
        )
        .await
    }

    /// Creates the state volume, or checks that the one there is ours; whether it
    /// was created.
    async fn volume(docker: &Docker, volume: &str) -> Result<bool> {
        match docker.inspect_volume(volume).await {
            Ok(v) => {
                let l: labels::Labels = v.labels.into_iter().collect();
                if !owned(&l) {
                    return Err(Error::conflict(format!(
                        "volume {volume} exists without bluegreen's proxy labels; it is left \
                         alone (choose another proxy.name)"
                    )));
                }
                Ok(false)
            }
            Err(e) if has_status(&e, 404) => {
                docker
                    .create_volume(bollard::models::VolumeCreateOptions {
                        name: Some(volume.to_owned()),
                        labels: Some(HashMap::from([
                            (labels::OWNER.to_owned(), labels::OWNER_VALUE.to_owned()),
                            (ROLE_LABEL.to_owned(), ROLE.to_owned()),
                        ])),
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| docker_error(format!("volume {volume}"), e))?;
                Ok(true)
            }
            Err(e) => Err(docker_error(format!("volume {volume}"), e)),
        }
    }

    /// The router that drives this proxy through its admin socket. Each call opens
    /// its own connection: it reaches the proxy again after a restart.
    pub fn router(&self) -> ProxyRouter {
        self.router.clone()
    }

    /// Where clients reach the proxy, on the host.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The container's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Stops and removes the proxy container `name`, its state volume, its image
    /// (unless another container uses it), and the token and socket in `dir`; the
    /// routes it kept are gone. Only what carries
    /// bluegreen's proxy labels is removed: another owner's container or volume of
    /// that name is left alone and is [`Error::Conflict`]. Missing ones are fine,
    /// and so is a removal that meets another program's removal of the same proxy
    /// (it waits, up to a minute, until the container is gone). A `name` that is
    /// no container name is [`Error::Invalid`], and nothing is touched.
    pub async fn remove(docker: &Docker, name: &str, dir: &Path) -> Result<()> {
        check_name(name)?;
        let mut image = None;
        if let Some(c) = inspect_named(docker, name).await? {
            let l = labels_of(c.config.as_ref().and_then(|c| c.labels.as_ref()));
            if !owned(&l) {
                return Err(Error::conflict(format!(
                    "container {name} is not a bluegreen proxy; it is left alone"
                )));
            }
            image = c.image.clone();
            // by its id: the name may be taken again meanwhile
            let id = c.id.clone().unwrap_or_else(|| name.to_owned());
            match docker
                .remove_container(
                    &id,
                    Some(RemoveContainerOptionsBuilder::new().force(true).build()),
                )
                .await
            {
                Ok(()) => {}
                Err(e) if has_status(&e, 404) => {}
                // another program removes it at this moment: wait until it is gone
                Err(e) if has_status(&e, 409) && e.to_string().contains("already in progress") => {
                    gone(docker, &id).await?;
                }
                Err(e) => return Err(docker_error(format!("removing container {name}"), e)),
            }
        }
        let volume = format!("{name}-state");
        match docker.inspect_volume(&volume).await {
            Ok(v) => {
                let l: labels::Labels = v.labels.into_iter().collect();
                if !owned(&l) {
                    return Err(Error::conflict(format!(
                        "volume {volume} is not a bluegreen proxy's; it is left alone"
                    )));
                }
                match docker
                    .remove_volume(&volume, None::<RemoveVolumeOptions>)
                    .await
                {
                    Ok(()) => {}
                    Err(e) if has_status(&e, 404) => {}
                    Err(e) => return Err(docker_error(format!("removing volume {volume}"), e)),
                }
            }
            Err(e) if has_status(&e, 404) => {}
            Err(e) => return Err(docker_error(format!("volume {volume}"), e)),
        }
        // its image too, unless another proxy container uses it (Docker refuses)
        if let Some(id) = image {
            match docker.inspect_image(&id).await {
                Ok(inspect) => {
                    let found = labels_of(inspect.config.as_ref().and_then(|c| c.labels.as_ref()));
                    let ours = found
                        .into_iter()
                        .filter(|(k, _)| k == labels::OWNER || k == ROLE_LABEL)
                        .collect();
                    match crate::image::remove_built(
                        docker,
                        &inspect,
                        &format!("{PROXY_REPOSITORY}:"),
                        &ours,
                    )
                    .await
                    {
                        Ok(()) => {}
                        Err(e) if e.kind() == ErrorKind::Conflict => {}
                        Err(e) => return Err(e),
                    }
                }
                Err(e) if has_status(&e, 404) => {}
                Err(e) => return Err(docker_error(format!("image {id}"), e)),
            }
        }
        for file in ["token", "admin.sock"] {
            let _ = std::fs::remove_file(dir.join(file));
        }
        Ok(())
    }
}

/// The container named `name` exactly (Docker's own lookup also takes an id or a
/// prefix of one, which is another container); `None` when there is none.
async fn inspect_named(
    docker: &Docker,
    name: &str,
) -> Result<Option<bollard::models::ContainerInspectResponse>> {
    match docker
        .inspect_container(name, None::<InspectContainerOptions>)
        .await
    {
        Ok(c) if c.name.as_deref().map(|n| n.trim_start_matches('/')) == Some(name) => Ok(Some(c)),
        Ok(_) => Ok(None),
        Err(e) if has_status(&e, 404) => Ok(None),
        Err(e) => Err(docker_error(format!("container {name}"), e)),
    }
}

/// Waits (up to a minute) until the container `id`, which another program
/// removes, is gone.
async fn gone(docker: &Docker, id: &str) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
        {
            Err(e) if has_status(&e, 404) => return Ok(()),
            Err(e) => return Err(docker_error(format!("container {id}"), e)),
            Ok(_) if tokio::time::Instant::now() >= deadline => {
                return Err(Error::provider(
                    PROVIDER,
                    format!("container {id}: another removal did not end within a minute"),
                    true,
                ))
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Creates `dir` when missing, and makes it mode 0700.
fn make_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| io_error(dir, e))
}

async fn start_container(docker: &Docker, name: &str) -> Result<()> {
    match docker
        .start_container(name, None::<StartContainerOptions>)
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if has_status(&e, 304) => Ok(()),
        Err(e) => Err(docker_error(format!("starting container {name}"), e)),
    }
}

/// Polls the admin API until it answers; the container's last log lines when it
/// does not within `bound` (default 20 s).
async fn wait_for_admin(
    docker: &Docker,
    name: &str,
    router: &ProxyRouter,
    bound: Option<Duration>,
) -> Result<()> {
    let probe = App::new("bluegreen", "probe")?;
    let deadline = tokio::time::Instant::now() + bound.unwrap_or(Duration::from_secs(20));
    loop {
        let last = match router.routes(&probe).await {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        // a proxy that exited (a bad flag, a state file that does not read) will
        // not answer: say why at once
        let stopped = docker
            .inspect_container(name, None::<InspectContainerOptions>)
            .await
            .ok()
            .and_then(|c| c.state)
            .is_some_and(|s| s.running != Some(true) || s.restarting == Some(true));
        if stopped || tokio::time::Instant::now() >= deadline {
            let logs = logs_tail(docker, name).await;
            return Err(Error::provider(
                PROVIDER,
                format!("the proxy container {name} does not answer on its admin socket ({last}); its last lines: {logs}"),
                false,
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn logs_tail(docker: &Docker, name: &str) -> String {
    let mut stream = docker.logs(
        name,
        Some(
            LogsOptionsBuilder::new()
                .stdout(true)
                .stderr(true)
                .tail("10")
                .build(),
        ),
    );
    let mut out = String::new();
    while let Some(Ok(line)) = stream.next().await {
        out.push_str(&line.to_string());
    }
    out.trim().to_owned()
}

/// Writes the token, readable by its owner only.
/// Writes a new random token to `<dir>/token` (mode 0600) unless one is there:
/// of programs that start one proxy at once, the first to write keeps its token
/// and the others use it. The file appears whole (written aside, then linked).
fn ensure_token(dir: &Path) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("token");
    if path.is_file() {
        return Ok(());
    }
    let token = AdminToken::random();
    let aside = dir.join(format!(".token-{:016x}", fastrand::u64(..)));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&aside)
        .and_then(|mut f| f.write_all(token.expose().as_bytes()));
    let linked = written.and_then(|()| match std::fs::hard_link(&aside, &path) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    });
    let _ = std::fs::remove_file(&aside);
    linked.map_err(|e| io_error(&path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_options_name_their_field() {
        let ok = ProxyContainerOptions::new("/tmp/x", "/proc/self/exe");
        assert!(ok.validate().is_ok());
        assert!(ok.clone().with_name("q1").validate().is_ok());
        assert!(ok
            .clone()
            .with_args(["--drain-timeout", "5s", "--listenx"])
            .validate()
            .is_ok());
        for (options, field) in [
            (ok.clone().with_name("bad name"), "proxy.name"),
            (ok.clone().with_name(""), "proxy.name"),
            // Docker wants two characters at least
            (ok.clone().with_name("q"), "proxy.name"),
            (
                ok.clone().with_args(["--listen", "0.0.0.0:80"]),
                "proxy.args",
            ),
            (
                ok.clone().with_args(["--admin=tcp:0.0.0.0:9"]),
                "proxy.args",
            ),
            (ok.clone().with_args(["--state-file", "/x"]), "proxy.args"),
            (
                ok.clone().with_args(["--admin-token-file", "/x"]),
                "proxy.args",
            ),
            (
                ok.clone().with_listen("127.0.0.1:0".parse().unwrap()),
                "proxy.listen",
            ),
            (
                ProxyContainerOptions::new("relative", "/proc/self/exe"),
                "proxy.dir",
            ),
            (
                ProxyContainerOptions::new("/tmp/x", "/no/such/binary"),
                "proxy.binary",
            ),
        ] {
            let e = options.validate().unwrap_err();
            assert!(e.to_string().contains(field), "{field}: {e}");
        }
    }

    #[test]
    fn the_image_tag_follows_the_binary_and_the_user() {
        let a = image_tag(b"one", 0, 0);
        assert_eq!(a, image_tag(b"one", 0, 0));
        assert_ne!(a, image_tag(b"two", 0, 0));
        assert_ne!(a, image_tag(b"one", 1000, 1000));
        assert!(a.starts_with("bluegreen/proxy:"));
    }
}
