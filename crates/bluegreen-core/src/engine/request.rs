//! What a deployment asks for: the app, the image source, the release's
//! configuration, the strategy and the checks.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::app::App;
use crate::check::Check;
use crate::error::{Error, Result};
use crate::hook::{Hook, Stage};
use crate::image::{ImageId, ImageSource};
use crate::release::{validate_env, Release, MAX_SIZE};
use crate::task::ReleaseTask;

/// One weighted step of a canary: give the new group `weight` percent, then wait
/// `bake` and run the analysis checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CanaryStep {
    /// The new group's share, 1 to 99. The final switch to 100 is implicit.
    pub weight: u8,
    /// How long to watch this step before the next.
    pub bake: Duration,
}

/// How traffic moves to the new group, and how the new group is judged while it
/// gets traffic.
///
/// Blue/green is the default: one atomic switch. A canary moves through weighted
/// steps, each baked and analysed. Either can be followed by a **bake after the
/// switch** ([`Strategy::with_bake_after`]): the previous group stays attached and
/// warm while the new one is watched, and a breach switches traffic back at once.
///
/// The analysis (the limits and [`Strategy::analysis`] checks) runs after each
/// canary step and at every poll of the bake after the switch, for
/// [`Engine::deploy`](crate::Engine::deploy) and
/// [`Engine::promote`](crate::Engine::promote) alike.
///
/// ```
/// use std::time::Duration;
/// use bluegreen_core::Strategy;
/// let s = Strategy::canary([10, 50], Duration::from_secs(60))
///     .with_max_error_rate(0.01)
///     .with_max_p99_ratio(1.5)
///     .with_bake_after(Duration::from_secs(300));
/// assert!(s.is_canary());
/// assert_eq!(s.bake_after, Duration::from_secs(300));
/// ```
#[non_exhaustive]
#[derive(Clone, Default)]
pub struct Strategy {
    /// The canary steps, with strictly growing weights; empty for blue/green. On a
    /// router without weighted routing the engine switches in one step and says
    /// so with an [`Event::StrategyAdapted`](crate::Event::StrategyAdapted).
    pub steps: Vec<CanaryStep>,
    /// How long the new group is watched after the final switch, with the previous
    /// group kept attached; zero (the default) for no watch. Polled every
    /// [`EngineOptions::poll_interval`](crate::EngineOptions::poll_interval).
    pub bake_after: Duration,
    /// Fail when the new group's share of 5xx responses over a step's window, as
    /// the router counts them, passes this fraction (0.0 to 1.0).
    pub max_error_rate: Option<f64>,
    /// Fail when the new group's 5xx rate passes the previous group's over the
    /// same window by more than this fraction (0.0 to 1.0): `0.01` allows one
    /// point more.
    pub max_error_rate_increase: Option<f64>,
    /// Fail when the new group's p99 latency passes the previous group's by more
    /// than this ratio (at least 1.0): `1.5` allows 50 % slower.
    pub max_p99_ratio: Option<f64>,
    /// Checks run after each canary step and at every poll of the bake after the
    /// switch, with the router's counters of the new group and of the baseline.
    pub analysis: Vec<Arc<dyn Check>>,
}

impl Strategy {
    /// One atomic switch of all traffic.
    pub fn blue_green() -> Self {
        Strategy::default()
    }

    /// A canary through `weights` percent, watching each step for `bake`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use bluegreen_core::Strategy;
    /// let s = Strategy::canary([10, 50], Duration::from_secs(60));
    /// assert_eq!(s.steps.len(), 2);
    /// ```
    pub fn canary(weights: impl IntoIterator<Item = u8>, bake: Duration) -> Self {
        Strategy {
            steps: weights
                .into_iter()
                .map(|weight| CanaryStep { weight, bake })
                .collect(),
            ..Strategy::default()
        }
    }

    /// Whether traffic moves by weighted steps.
    pub fn is_canary(&self) -> bool {
        !self.steps.is_empty()
    }

    /// Sets [`Strategy::max_error_rate`].
    pub fn with_max_error_rate(mut self, rate: f64) -> Self {
        self.max_error_rate = Some(rate);
        self
    }

    /// Sets [`Strategy::max_error_rate_increase`].
    pub fn with_max_error_rate_increase(mut self, increase: f64) -> Self {
        self.max_error_rate_increase = Some(increase);
        self
    }

    /// Sets [`Strategy::max_p99_ratio`].
    pub fn with_max_p99_ratio(mut self, ratio: f64) -> Self {
        self.max_p99_ratio = Some(ratio);
        self
    }

    /// Sets [`Strategy::bake_after`].
    pub fn with_bake_after(mut self, bake_after: Duration) -> Self {
        self.bake_after = bake_after;
        self
    }

    /// Adds an analysis check.
    pub fn with_analysis(mut self, check: Arc<dyn Check>) -> Self {
        self.analysis.push(check);
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let mut last = 0;
        for (i, step) in self.steps.iter().enumerate() {
            let field = format!("strategy.steps[{i}].weight");
            if step.weight == 0 || step.weight >= 100 {
                return Err(Error::invalid(
                    field,
                    format!(
                        "{} is not between 1 and 99 (the switch to 100 comes last on its own)",
                        step.weight
                    ),
                ));
            }
            if step.weight <= last {
                return Err(Error::invalid(
                    field,
                    format!(
                        "{} does not grow from the step before ({last})",
                        step.weight
                    ),
                ));
            }
            last = step.weight;
        }
        let fractions = [
            ("strategy.max_error_rate", self.max_error_rate),
            (
                "strategy.max_error_rate_increase",
                self.max_error_rate_increase,
            ),
        ];
        for (field, value) in fractions {
            if let Some(rate) = value {
                if !(0.0..=1.0).contains(&rate) {
                    return Err(Error::invalid(
                        field,
                        format!("{rate} is not a fraction between 0.0 and 1.0"),
                    ));
                }
            }
        }
        if let Some(ratio) = self.max_p99_ratio {
            if !(ratio >= 1.0 && ratio.is_finite()) {
                return Err(Error::invalid(
                    "strategy.max_p99_ratio",
                    format!("{ratio} is not a finite ratio of at least 1.0"),
                ));
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for check in &self.analysis {
            if check.name().trim().is_empty() {
                return Err(Error::invalid(
                    "strategy.analysis",
                    "a check has an empty name",
                ));
            }
            if !names.insert(check.name().to_owned()) {
                return Err(Error::invalid(
                    format!("strategy.analysis.{}", check.name()),
                    "two checks have this name",
                ));
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Strategy")
            .field("steps", &self.steps)
            .field("bake_after", &self.bake_after)
            .field("max_error_rate", &self.max_error_rate)
            .field("max_error_rate_increase", &self.max_error_rate_increase)
            .field("max_p99_ratio", &self.max_p99_ratio)
            .finish()
    }
}

/// A deployment of an app: where the image comes from, how the release is
/// configured, how traffic moves and what is checked.
///
/// ```
/// use bluegreen_core::{App, DeployRequest, ImageSource};
/// let request = DeployRequest::new(
///     App::new("web", "production").unwrap(),
///     ImageSource::Reference("web:v2".into()),
/// )
/// .size(3)
/// .env("RUST_LOG", "info");
/// assert_eq!(request.size, 3);
/// ```
#[non_exhaustive]
#[derive(Clone)]
pub struct DeployRequest {
    /// The app.
    pub app: App,
    /// Where the image comes from.
    pub source: ImageSource,
    /// The release's environment variables.
    pub env: BTreeMap<String, String>,
    /// How many instances. Default 1.
    pub size: u32,
    /// Provider-specific instance settings.
    pub settings: BTreeMap<String, String>,
    /// How traffic moves.
    pub strategy: Strategy,
    /// Checks run against the new group alone, before it gets traffic.
    pub verify: Vec<Arc<dyn Check>>,
    /// The release's one-off task ([`ReleaseTask`]), run before it gets traffic.
    pub task: Option<ReleaseTask>,
    /// Lifecycle hooks by stage, called in the order added ([`Hook`]).
    pub hooks: Vec<(Stage, Arc<dyn Hook>)>,
}

impl DeployRequest {
    /// A blue/green deployment of one instance of `source`.
    pub fn new(app: App, source: ImageSource) -> Self {
        DeployRequest {
            app,
            source,
            env: BTreeMap::new(),
            size: 1,
            settings: BTreeMap::new(),
            strategy: Strategy::default(),
            verify: Vec::new(),
            task: None,
            hooks: Vec::new(),
        }
    }

    /// Sets the release's task. The fleet must declare
    /// [`FleetCapabilities::tasks`](crate::FleetCapabilities::tasks).
    pub fn task(mut self, task: ReleaseTask) -> Self {
        self.task = Some(task);
        self
    }

    /// Adds a hook at `stage`.
    pub fn hook(mut self, stage: Stage, hook: Arc<dyn Hook>) -> Self {
        self.hooks.push((stage, hook));
        self
    }

    /// Sets the size.
    pub fn size(mut self, size: u32) -> Self {
        self.size = size;
        self
    }

    /// Adds an environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    /// Adds an instance setting.
    pub fn setting(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.insert(key.into(), value.into());
        self
    }

    /// Sets the strategy. Analysis checks added before with
    /// [`DeployRequest::analysis`] are kept.
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        let earlier = std::mem::take(&mut self.strategy.analysis);
        self.strategy = strategy;
        self.strategy.analysis.splice(0..0, earlier);
        self
    }

    /// Adds a verify check.
    pub fn verify(mut self, check: Arc<dyn Check>) -> Self {
        self.verify.push(check);
        self
    }

    /// Adds an analysis check to the strategy ([`Strategy::analysis`]).
    pub fn analysis(mut self, check: Arc<dyn Check>) -> Self {
        self.strategy.analysis.push(check);
        self
    }

    /// The release this request gives once its image is `image`.
    pub fn release(&self, image: ImageId) -> Release {
        Release {
            image,
            env: self.env.clone(),
            size: self.size,
            settings: self.settings.clone(),
            task: self.task.clone(),
        }
    }

    /// Checks everything that can be checked without the platform.
    pub fn validate(&self) -> Result<()> {
        if self.size == 0 {
            return Err(Error::invalid("size", "must be at least 1"));
        }
        if self.size > MAX_SIZE {
            return Err(Error::invalid(
                "size",
                format!("{} is more than the most, {MAX_SIZE}", self.size),
            ));
        }
        validate_env(&self.env)?;
        if let Some(key) = self.settings.keys().find(|k| k.trim().is_empty()) {
            return Err(Error::invalid(
                format!("settings.{key:?}"),
                "a setting has an empty name",
            ));
        }
        validate_source(&self.source)?;
        self.strategy.validate()?;
        let mut names = std::collections::BTreeSet::new();
        for check in self.verify.iter().chain(&self.strategy.analysis) {
            if check.name().trim().is_empty() {
                return Err(Error::invalid("verify", "a check has an empty name"));
            }
            if !names.insert(check.name().to_owned()) {
                return Err(Error::invalid(
                    format!("verify.{}", check.name()),
                    "two checks have this name",
                ));
            }
        }
        if let Some(task) = &self.task {
            task.validate()?;
        }
        for (stage, hook) in &self.hooks {
            if hook.name().trim().is_empty() {
                return Err(Error::invalid(
                    format!("hooks.{stage}"),
                    "a hook has an empty name",
                ));
            }
            if hook.timeout().is_zero() {
                return Err(Error::invalid(
                    format!("hooks.{stage}.{}", hook.name()),
                    "the timeout must be more than zero",
                ));
            }
        }
        Ok(())
    }
}

fn validate_source(source: &ImageSource) -> Result<()> {
    let empty = match source {
        ImageSource::Id(id) => id.as_str().trim().is_empty(),
        ImageSource::Reference(r) => r.trim().is_empty(),
        ImageSource::Artifact(p) => p.as_os_str().is_empty(),
        ImageSource::Build { context, .. } => context.as_os_str().is_empty(),
        ImageSource::SourceUrl(u) => {
            if !(u.starts_with("https://") || u.starts_with("http://")) {
                return Err(Error::invalid(
                    "source",
                    format!("`{u}` is not an http(s) URL"),
                ));
            }
            false
        }
        ImageSource::Bake { base, .. } => base.trim().is_empty(),
    };
    if empty {
        return Err(Error::invalid("source", "must not be empty"));
    }
    Ok(())
}

impl fmt::Debug for DeployRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeployRequest")
            .field("app", &self.app)
            .field("source", &self.source)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("size", &self.size)
            .field("settings", &self.settings)
            .field("strategy", &self.strategy)
            .field(
                "verify",
                &self.verify.iter().map(|c| c.name()).collect::<Vec<_>>(),
            )
            .field("task", &self.task)
            .field(
                "hooks",
                &self
                    .hooks
                    .iter()
                    .map(|(s, h)| format!("{s}: {}", h.name()))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}
