//! The killed-deployer harness: a deploying process killed with `SIGKILL` at every
//! event of a deployment (or at chosen ones), the deployment run again from a fresh
//! process, and the platform checked.
//!
//! # Expected flow
//!
//! A provider's test is a test target with `harness = false` whose `main` builds a
//! [`CrashHarness`] and calls [`CrashHarness::run`]. The harness re-executes the test
//! binary in child processes, with [`ROLE_VAR`] naming the child's role; in a child,
//! `run` plays that role and exits. For each case the parent:
//!
//! 1. makes a scratch directory and a tag for the case ([`Case`]), builds the
//!    provider's [`Rig`] and calls [`Subject::before`] (deploy the release being
//!    replaced, say);
//! 2. starts the **deployer**, a child that builds its own rig from the case and
//!    deploys [`Rig::request`], printing every event; at the chosen event it stops
//!    and the parent kills it with `SIGKILL`: nothing after that event happens;
//! 3. starts the **rerun**, a fresh child that deploys the same request again;
//! 4. checks, and reports each check: the rerun succeeded; one group is left, the
//!    live one, running the request's release; the route table sends everything to
//!    it; everything [`Subject::leftovers`] lists belongs to the live group; the lock
//!    is free; and once the harness removed the live group (routes emptied, detached,
//!    destroyed), nothing is left;
//! 5. calls [`Subject::after`], also when a check failed.
//!
//! The first case is not killed (a survey): its events are the deployment's, and
//! [`CrashHarness::at_every_event`] makes one case of each.
//!
//! # Assumptions
//!
//! Every process of a case reaches the same platform, the same router and the same
//! [`Lock`] from the [`Case`] alone (its directory, its tag). The lock must exclude
//! processes (a `MemoryLock` excludes nothing across processes, so the lock check is
//! then vacuous). When the rig's options have no `lock_wait`, the rerun waits up to
//! twice the lease for the killed deployer's lock.
//!
//! ```no_run
//! use std::sync::Arc;
//! use bluegreen_core::{DeployRequest, ImageSource};
//! use bluegreen_testkit::crash::{Case, CrashHarness, Rig, Subject};
//! use bluegreen_testkit::MemoryPlatform;
//!
//! struct Mine;
//!
//! #[bluegreen_core::async_trait]
//! impl Subject for Mine {
//!     async fn rig(&self, case: &Case) -> Rig {
//!         // a real provider reaches its platform from `case.dir` or `case.tag`
//!         let platform = MemoryPlatform::new();
//!         let app = case.app("web", "crash");
//!         Rig::new(
//!             Arc::new(platform.image()),
//!             Arc::new(platform.fleet()),
//!             Arc::new(platform.router()),
//!             DeployRequest::new(app, ImageSource::Reference("web:2".into())),
//!         )
//!     }
//!     async fn leftovers(&self, case: &Case, rig: &Rig) -> Vec<String> {
//!         Vec::new() // the platform's instances of the case's app, by name
//!     }
//! }
//!
//! fn main() {
//!     let report = CrashHarness::new(Mine).run();
//!     println!("{report}");
//! }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::io::{BufRead, BufReader, Write};
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use bluegreen_core::{
    App, DeployRequest, Engine, EngineOptions, Event, EventSink, Fleet, GroupId, Image, ImageId,
    Lock, LockHolder, MemoryLock, RouteTable, Router,
};
use futures_util::FutureExt;

use crate::scratch::Scratch;

/// The environment variable that names a child's role (`deployer` or `rerun`); the
/// parent runs without it.
pub const ROLE_VAR: &str = "BLUEGREEN_CRASH_ROLE";
const DIR_VAR: &str = "BLUEGREEN_CRASH_DIR";
const TAG_VAR: &str = "BLUEGREEN_CRASH_TAG";
const AT_VAR: &str = "BLUEGREEN_CRASH_AT";
/// What starts every line the harness reads from a child.
const MARK: &str = "bluegreen-crash";

/// One case: what every process of it shares.
#[derive(Clone, Debug)]
pub struct Case {
    /// A scratch directory of the case (a state directory, image sources), removed
    /// after the case.
    pub dir: PathBuf,
    /// Six lowercase hex digits, unique to the case: names on a shared platform.
    pub tag: String,
}

impl Case {
    /// An app of the case alone: `{name}-{tag}` in `environment`.
    ///
    /// # Panics
    ///
    /// When the name or the environment is not valid.
    pub fn app(&self, name: &str, environment: &str) -> App {
        App::new(format!("{name}-{}", self.tag), environment).expect("a valid app")
    }
}

/// What one process deploys with: the providers, the lock, the engine's options
/// and the deployment that gets killed and run again.
#[non_exhaustive]
pub struct Rig {
    /// The image provider.
    pub image: Arc<dyn Image>,
    /// The fleet.
    pub fleet: Arc<dyn Fleet>,
    /// The router.
    pub router: Arc<dyn Router>,
    /// The lock every process of the case shares. Default: a `MemoryLock`.
    pub lock: Arc<dyn Lock>,
    /// The engine's options. Default: the engine's.
    pub options: EngineOptions,
    /// The deployment killed and run again.
    pub request: DeployRequest,
}

impl std::fmt::Debug for Rig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rig").finish_non_exhaustive()
    }
}

impl Rig {
    /// A rig with a `MemoryLock` and the engine's default options.
    pub fn new(
        image: Arc<dyn Image>,
        fleet: Arc<dyn Fleet>,
        router: Arc<dyn Router>,
        request: DeployRequest,
    ) -> Self {
        Rig {
            image,
            fleet,
            router,
            lock: Arc::new(MemoryLock::new()),
            options: EngineOptions::default(),
            request,
        }
    }

    /// Uses `lock`, which every process of the case must share.
    pub fn with_lock(mut self, lock: Arc<dyn Lock>) -> Self {
        self.lock = lock;
        self
    }

    /// Uses `options`.
    pub fn with_options(mut self, options: EngineOptions) -> Self {
        self.options = options;
        self
    }

    /// An engine over the rig's providers, lock and options.
    pub fn engine(&self) -> Engine {
        Engine::from_arcs(self.image.clone(), self.fleet.clone(), self.router.clone())
            .with_lock(self.lock.clone())
            .with_options(self.options.clone())
    }

    fn app(&self) -> &App {
        &self.request.app
    }
}

/// What a provider's test gives the harness.
#[bluegreen_core::async_trait]
pub trait Subject: Send + Sync {
    /// The rig of one process of `case`: called in the parent, in the killed
    /// deployer and in the rerun. All must reach the same platform.
    async fn rig(&self, case: &Case) -> Rig;

    /// Readies the platform before the deployer starts, in the parent: deploys the
    /// release that the killed deployment replaces, say. Nothing by default.
    async fn before(&self, case: &Case, rig: &Rig) {
        let _ = (case, rig);
    }

    /// What exists on the platform for the case's app, one name per resource the
    /// groups own (instances, containers, processes), each name containing its
    /// group's id. After the rerun, everything listed must belong to the live
    /// group; once the harness removed the groups, nothing may be listed.
    async fn leftovers(&self, case: &Case, rig: &Rig) -> Vec<String>;

    /// What the subject itself checks after the rerun converged, in the parent: one
    /// line per problem found (a release task that ran twice, say). None by
    /// default.
    async fn invariants(&self, case: &Case, rig: &Rig) -> Vec<String> {
        let _ = (case, rig);
        Vec::new()
    }

    /// Removes what the case left, in the parent, after its checks, passed or not
    /// (images, a proxy process). Nothing by default.
    async fn after(&self, case: &Case, rig: &Rig) {
        let _ = (case, rig);
    }
}

/// Where the deployer is killed.
#[derive(Clone, Debug)]
enum At {
    /// One case for each event of the survey.
    Every,
    /// These events (`Key` or `Key#n`).
    Only(Vec<String>),
}

/// The harness: see the [module](self) docs.
pub struct CrashHarness<S> {
    subject: S,
    at: At,
    timeout: Duration,
    leftovers: Option<usize>,
}

impl<S> std::fmt::Debug for CrashHarness<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrashHarness").finish_non_exhaustive()
    }
}

impl<S: Subject> CrashHarness<S> {
    /// A harness killing the deployer at every event of the deployment, each stage
    /// bounded by 3 minutes.
    pub fn new(subject: S) -> Self {
        CrashHarness {
            subject,
            at: At::Every,
            timeout: Duration::from_secs(180),
            leftovers: None,
        }
    }

    /// Kills the deployer at every event of the deployment, as the survey saw them
    /// (progress events, `Health` and `BuildOutput`, only at their first
    /// occurrence). The default.
    pub fn at_every_event(mut self) -> Self {
        self.at = At::Every;
        self
    }

    /// Kills the deployer only at these events, each named as [`event_key`] names
    /// it (`GroupLaunched`, `StepStarted(Attach)`), at its first occurrence, or its
    /// `n`th with `#n` (`TrafficShifted#2`).
    pub fn at<I: IntoIterator<Item = T>, T: Into<String>>(mut self, events: I) -> Self {
        self.at = At::Only(events.into_iter().map(Into::into).collect());
        self
    }

    /// After the rerun, [`Subject::leftovers`] must list exactly `n` resources (the
    /// live group's instances, say).
    pub fn expect_leftovers(mut self, n: usize) -> Self {
        self.leftovers = Some(n);
        self
    }

    /// Bounds each stage of a case (the deployer reaching its event, the rerun) by
    /// `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Runs the harness. In a child process (with [`ROLE_VAR`] set) it plays the
    /// child's part and exits the process. In the parent it runs every case, prints
    /// each case's report as it ends, then `N passed, N failed`, and returns them
    /// all.
    ///
    /// # Panics
    ///
    /// In the parent, when a case failed (after every case ran).
    pub fn run(self) -> CrashReport {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        if let Ok(role) = std::env::var(ROLE_VAR) {
            let case = Case {
                dir: std::env::var_os(DIR_VAR).expect(DIR_VAR).into(),
                tag: std::env::var(TAG_VAR).expect(TAG_VAR),
            };
            let code = match role.as_str() {
                "deployer" => rt.block_on(self.deployer(&case, std::env::var(AT_VAR).ok())),
                "rerun" => rt.block_on(self.rerun(&case)),
                other => panic!("{ROLE_VAR}={other}: not a role of the crash harness"),
            };
            std::process::exit(code);
        }
        let report = self.parent(&rt);
        println!("{report}");
        println!("{} passed, {} failed", report.passed(), report.failed());
        let failed = report.failed();
        assert!(
            failed == 0,
            "killed deployer: {failed} of {} cases failed",
            report.cases.len()
        );
        report
    }

    fn parent(&self, rt: &tokio::runtime::Runtime) -> CrashReport {
        let survey = self.case(rt, None);
        println!("{survey}");
        let events = survey.events.clone();
        let mut cases = vec![survey];
        let targets = match &self.at {
            At::Only(list) => list
                .iter()
                .map(|k| match k.split_once('#') {
                    Some(_) => k.clone(),
                    None => format!("{k}#1"),
                })
                .collect(),
            At::Every => events
                .into_iter()
                .filter(|e| {
                    let (key, n) = e.split_once('#').unwrap_or((e, "1"));
                    n == "1" || !matches!(key, "Health" | "BuildOutput")
                })
                .collect::<Vec<_>>(),
        };
        for at in targets {
            let case = self.case(rt, Some(at));
            println!("{case}");
            cases.push(case);
        }
        CrashReport { cases }
    }

    /// One case: the deployer killed at `at` (or left to finish), the rerun, the
    /// checks.
    fn case(&self, rt: &tokio::runtime::Runtime, at: Option<String>) -> CaseReport {
        let scratch = Scratch::new("crash");
        let case = Case {
            dir: scratch.path().to_path_buf(),
            tag: format!("{:06x}", fastrand::u32(..0x100_0000)),
        };
        let mut report = CaseReport {
            at: at.clone(),
            reached: at.is_none(),
            events: Vec::new(),
            live: None,
            adopted: false,
            leftovers: Vec::new(),
            rerun: Duration::ZERO,
            checks: Vec::new(),
        };
        let rig = rt.block_on(self.subject.rig(&case));
        let strict = matches!(self.at, At::Only(_));
        let run =
            AssertUnwindSafe(self.checked_case(&case, &rig, at.as_deref(), strict, &mut report));
        if let Err(panic) = rt.block_on(run.catch_unwind()) {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic".into());
            report.check("the case ran to its end", false, message);
        }
        rt.block_on(self.subject.after(&case, &rig));
        report
    }

    async fn checked_case(
        &self,
        case: &Case,
        rig: &Rig,
        at: Option<&str>,
        strict: bool,
        report: &mut CaseReport,
    ) {
        self.subject.before(case, rig).await;
        let deployed = self.deployer_child(case, at);
        report.events = deployed.events;
        match (&deployed.end, at) {
            (End::Frozen, _) => report.reached = true,
            (End::Done(outcome), None) => report.check(
                "the uninterrupted deployment succeeded",
                outcome.is_ok(),
                format!("{outcome:?}"),
            ),
            // an event the survey saw may not come again (a progress event, say): the
            // deployment ran to its end, and the rerun below must still converge
            (End::Done(outcome), Some(at)) => report.check(
                "the deployer reached the event",
                !strict,
                format!("the deployment ended first ({outcome:?}) without {at}"),
            ),
            (End::Lost(why), _) => report.check("the deployer ran", false, why.clone()),
        }

        let started = Instant::now();
        let rerun = self.rerun_child(case);
        report.rerun = started.elapsed();
        let (live, image) = match rerun {
            Ok(r) => {
                report.adopted = r.adopted;
                report.check(
                    "the rerun from a fresh process succeeded",
                    true,
                    format!(
                        "in {:?}{}",
                        report.rerun,
                        if r.adopted {
                            ", adopting the group"
                        } else {
                            ""
                        }
                    ),
                );
                (r.live, r.image)
            }
            Err(e) => {
                report.check("the rerun from a fresh process succeeded", false, e);
                return;
            }
        };
        report.live = Some(live.clone());
        let app = rig.app();

        let groups = rig.fleet.groups(app).await.expect("the fleet lists groups");
        let ids: Vec<&GroupId> = groups.iter().map(|g| &g.id).collect();
        report.check(
            "one group is left, the live one",
            ids == [&live],
            format!("{ids:?}"),
        );
        if let Some(g) = groups.iter().find(|g| g.id == live) {
            let want = rig.request.release(image.clone());
            report.check(
                "it runs the request's release",
                g.release.id() == want.id(),
                format!("image {}", g.release.image),
            );
        }
        let routes = rig.router.routes(app).await.expect("the router reads");
        report.check(
            "all traffic goes to it",
            routes == RouteTable::single(live.clone()),
            format!("{routes}"),
        );
        let left = self.subject.leftovers(case, rig).await;
        let stray: Vec<&String> = left.iter().filter(|l| !l.contains(live.as_str())).collect();
        report.check(
            "what is left belongs to the live group",
            stray.is_empty() && !left.is_empty(),
            format!("{} left, stray {stray:?}", left.len()),
        );
        if let Some(n) = self.leftovers {
            report.check(
                "as many are left as expected",
                left.len() == n,
                format!("{} left, {n} expected", left.len()),
            );
        }
        report.leftovers = left;
        let problems = self.subject.invariants(case, rig).await;
        report.check(
            "the subject's own invariants hold",
            problems.is_empty(),
            problems.join("; "),
        );
        let holder = LockHolder::new(format!("crash-check-{}", case.tag));
        match rig.lock.acquire(app, &holder, Duration::from_secs(5)).await {
            Ok(token) => {
                let _ = rig.lock.release(app, &holder, token).await;
                report.check("the lock is free", true, String::new());
            }
            Err(e) => report.check("the lock is free", false, e.to_string()),
        }

        rig.router
            .set_routes(app, &RouteTable::empty())
            .await
            .expect("emptying the routes");
        for g in &groups {
            rig.router.detach(app, &g.id).await.expect("detaching");
            rig.fleet.destroy(app, &g.id).await.expect("destroying");
        }
        let left = self.subject.leftovers(case, rig).await;
        report.check(
            "nothing is left once the groups are removed",
            left.is_empty(),
            format!("{left:?}"),
        );
    }

    /// Starts a child with `role` for `case`.
    fn spawn(&self, case: &Case, role: &str, at: Option<&str>) -> (Child, mpsc::Receiver<String>) {
        let mut command = Command::new(std::env::current_exe().expect("the test binary"));
        command
            .env(ROLE_VAR, role)
            .env(DIR_VAR, &case.dir)
            .env(TAG_VAR, &case.tag)
            .env_remove(AT_VAR)
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        if let Some(at) = at {
            command.env(AT_VAR, at);
        }
        let mut child = command.spawn().expect("the test binary starts again");
        let out = BufReader::new(child.stdout.take().expect("piped"));
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines().map_while(|l| l.ok()) {
                if let Some(line) = line.strip_prefix(MARK) {
                    if tx.send(line.trim_start().to_owned()).is_err() {
                        break;
                    }
                }
            }
        });
        (child, rx)
    }

    /// Runs the deployer until it stops at `at` (then kills it) or ends.
    fn deployer_child(&self, case: &Case, at: Option<&str>) -> Deployed {
        let (mut child, lines) = self.spawn(case, "deployer", at);
        let deadline = Instant::now() + self.timeout;
        let mut events = Vec::new();
        let end = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(e) = line.strip_prefix("event ") {
                        events.push(e.to_owned());
                    } else if line.starts_with("frozen") {
                        break End::Frozen;
                    } else if let Some(done) = line.strip_prefix("done ") {
                        break End::Done(match done.split_once(' ') {
                            Some(("ok", live)) => Ok(live.to_owned()),
                            _ => Err(done.to_owned()),
                        });
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    break End::Lost(format!("no end within {:?}", self.timeout))
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    break End::Lost(format!("the deployer died: {:?}", child.try_wait()))
                }
            }
        };
        // SIGKILL: no destructor, no release of the lock, nothing more
        let _ = child.kill();
        let _ = child.wait();
        Deployed { events, end }
    }

    /// Runs the deployment again in a fresh process.
    fn rerun_child(&self, case: &Case) -> Result<Rerun, String> {
        let (mut child, lines) = self.spawn(case, "rerun", None);
        let out = lines.recv_timeout(self.timeout);
        let _ = child.kill();
        let _ = child.wait();
        let line = out.map_err(|e| format!("the rerun gave no answer: {e}"))?;
        let fields: Vec<&str> = line.split('\t').collect();
        match fields.as_slice() {
            ["rerun", "ok", live, image, adopted] => Ok(Rerun {
                live: GroupId::new(*live),
                image: ImageId::new(*image),
                adopted: *adopted == "true",
            }),
            ["rerun", "err", e] => Err(e.to_string()),
            _ => Err(format!("an unexpected answer: {line}")),
        }
    }

    /// The deployer's part: deploys, printing each event; at `at`, stops for good.
    async fn deployer(&self, case: &Case, at: Option<String>) -> i32 {
        let rig = self.subject.rig(case).await;
        let seen: Mutex<HashMap<String, usize>> = Mutex::default();
        let events = EventSink::new(move |e: &Event| {
            let key = event_key(e);
            let n = {
                let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                let n = seen.entry(key.clone()).or_default();
                *n += 1;
                *n
            };
            let this = format!("{key}#{n}");
            say(&format!("event {this}"));
            if at.as_deref() == Some(this.as_str()) {
                say(&format!("frozen {this}"));
                // wait here for the SIGKILL: nothing after this event happens
                loop {
                    std::thread::park();
                }
            }
        });
        match rig.engine().with_events(events).deploy(&rig.request).await {
            Ok(report) => say(&format!("done ok {}", report.live)),
            Err(e) => say(&format!("done err {}", one_line(&e.to_string()))),
        }
        0
    }

    /// The rerun's part: deploys, and says how it ended.
    async fn rerun(&self, case: &Case) -> i32 {
        let rig = self.subject.rig(case).await;
        let mut options = rig.options.clone();
        if options.lock_wait.is_none() {
            let wait = options.lock_lease * 2;
            options = options.with_lock_wait(Some(wait));
        }
        let seen: Arc<Mutex<(Option<ImageId>, bool)>> = Arc::default();
        let events = EventSink::new({
            let seen = seen.clone();
            move |e: &Event| {
                let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                match e {
                    Event::ImageReady { image } => seen.0 = Some(image.id.clone()),
                    Event::GroupAdopted { .. } => seen.1 = true,
                    _ => {}
                }
            }
        });
        let engine = rig.engine().with_options(options).with_events(events);
        match engine.deploy(&rig.request).await {
            Ok(report) => {
                let (image, adopted) = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let image = image.map(|i| i.to_string()).unwrap_or_default();
                say(&format!("rerun\tok\t{}\t{image}\t{adopted}", report.live));
            }
            Err(e) => say(&format!("rerun\terr\t{}", one_line(&e.to_string()))),
        }
        0
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{MARK} {line}");
    let _ = out.flush();
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\t'], " ")
}

/// How the harness names an event: its variant, with the step for
/// `StepStarted` and `StepFinished` (`StepStarted(Launch)`).
///
/// ```
/// use bluegreen_core::{Event, GroupId, Step};
/// use bluegreen_testkit::crash::event_key;
/// assert_eq!(event_key(&Event::StepStarted { step: Step::Attach }), "StepStarted(Attach)");
/// let launched = Event::GroupLaunched { group: GroupId::new("web-production-v002"), size: 3 };
/// assert_eq!(event_key(&launched), "GroupLaunched");
/// ```
pub fn event_key(event: &Event) -> String {
    match event {
        Event::StepStarted { step } => format!("StepStarted({step:?})"),
        Event::StepFinished { step, .. } => format!("StepFinished({step:?})"),
        other => {
            let debug = format!("{other:?}");
            debug
                .split([' ', '{', '('])
                .next()
                .unwrap_or_default()
                .to_owned()
        }
    }
}

enum End {
    /// Stopped at its event, then killed.
    Frozen,
    /// Ended: the live group, or the error.
    Done(Result<String, String>),
    /// Died or went silent.
    Lost(String),
}

struct Deployed {
    events: Vec<String>,
    end: End,
}

struct Rerun {
    live: GroupId,
    image: ImageId,
    adopted: bool,
}

/// One check of a case.
#[non_exhaustive]
#[derive(Clone, Debug)]
pub struct Checked {
    /// What was checked.
    pub what: &'static str,
    /// Whether it held.
    pub passed: bool,
    /// What was seen.
    pub detail: String,
}

/// What one case did and checked.
#[non_exhaustive]
#[derive(Clone, Debug)]
pub struct CaseReport {
    /// The event the deployer was killed at (`Key#n`); `None` for the survey, left to
    /// finish.
    pub at: Option<String>,
    /// Whether the deployer reached that event.
    pub reached: bool,
    /// The deployer's events, in order, up to where it stopped.
    pub events: Vec<String>,
    /// The group the rerun left live.
    pub live: Option<GroupId>,
    /// Whether the rerun adopted a group the killed deployer launched.
    pub adopted: bool,
    /// What [`Subject::leftovers`] listed after the rerun.
    pub leftovers: Vec<String>,
    /// How long the rerun took.
    pub rerun: Duration,
    /// Every check, in order.
    pub checks: Vec<Checked>,
}

impl CaseReport {
    /// Whether every check held.
    pub fn passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.passed)
    }

    fn check(&mut self, what: &'static str, passed: bool, detail: String) {
        self.checks.push(Checked {
            what,
            passed,
            detail,
        });
    }
}

impl fmt::Display for CaseReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.passed() { "converged" } else { "FAILED" };
        match &self.at {
            Some(at) => write!(f, "killed at {at}: {verdict}")?,
            None => write!(f, "not killed ({} events): {verdict}", self.events.len())?,
        }
        if let Some(live) = &self.live {
            write!(f, ", live {live}")?;
        }
        for c in &self.checks {
            let mark = if c.passed { "ok" } else { "FAILED" };
            write!(f, "\n  {mark}: {}", c.what)?;
            if !c.detail.is_empty() {
                write!(f, " ({})", c.detail)?;
            }
        }
        Ok(())
    }
}

/// Every case of a run.
#[non_exhaustive]
#[derive(Clone, Debug)]
pub struct CrashReport {
    /// The survey (not killed) first, then one case per event.
    pub cases: Vec<CaseReport>,
}

impl CrashReport {
    /// Cases whose checks all held.
    pub fn passed(&self) -> usize {
        self.cases.iter().filter(|c| c.passed()).count()
    }

    /// Cases with a check that failed.
    pub fn failed(&self) -> usize {
        self.cases.len() - self.passed()
    }

    /// The events the deployer was killed at.
    pub fn killed_at(&self) -> Vec<&str> {
        self.cases.iter().filter_map(|c| c.at.as_deref()).collect()
    }
}

impl fmt::Display for CrashReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "killed deployer: {} of {} cases converged (killed at {})",
            self.passed(),
            self.cases.len(),
            self.killed_at().join(", ")
        )
    }
}
