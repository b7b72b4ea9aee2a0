//! The engine's events as a progress display for the examples.
//!
//! On a terminal, a bar follows the running operation: the app, the step, the new
//! group's instances healthy of those wanted, its share of the traffic during a
//! canary, and the time left in a bake or in the watch after the switch; each
//! event's line is printed above the bar. When stdout is not a terminal (a pipe, a
//! file, CI), there is no bar and the same lines are printed as they are, so a log
//! reads the same with or without one.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bluegreen::{Event, EventSink, GroupId, Step};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

/// What the bar shows beside the step and the count of healthy instances.
#[derive(Default)]
struct Shown {
    /// The group the operation launched (or adopted).
    group: Option<GroupId>,
    /// The new group's share of the traffic, percent.
    weight: Option<u8>,
    /// The end of a bake (`"bake"`) or of the watch after the switch (`"watch"`).
    until: Option<(Instant, &'static str)>,
}

struct Inner {
    /// Whether stdout is a terminal: bars only then.
    terminal: bool,
    bar: Option<ProgressBar>,
    shown: Arc<Mutex<Shown>>,
}

impl Drop for Inner {
    /// An operation that ended in an error leaves no bar behind.
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// A progress display fed by the engine's events; clones share it.
#[derive(Clone)]
pub struct Progress {
    inner: Arc<Mutex<Inner>>,
}

impl Progress {
    /// A display on stdout: a bar when it is a terminal, plain lines otherwise.
    pub fn stdout() -> Self {
        Progress {
            inner: Arc::new(Mutex::new(Inner {
                terminal: std::io::stdout().is_terminal(),
                bar: None,
                shown: Arc::default(),
            })),
        }
    }

    /// The sink to give the engine: `line` says what each event prints (`None`
    /// prints nothing); the bar, on a terminal, follows every event.
    pub fn sink(
        &self,
        line: impl Fn(&Event) -> Option<String> + Send + Sync + 'static,
    ) -> EventSink {
        let this = self.clone();
        EventSink::new(move |event: &Event| {
            this.follow(event);
            if let Some(line) = line(event) {
                this.println(&line);
            }
        })
    }

    /// Prints `line` above the bar, or as it is when no bar shows.
    pub fn println(&self, line: &str) {
        let inner = self.inner.lock().expect("not poisoned");
        match &inner.bar {
            Some(bar) => bar.println(line),
            None => println!("{line}"),
        }
    }

    /// Removes the bar (at the end of an operation, before the program's own output).
    pub fn clear(&self) {
        if let Some(bar) = self.inner.lock().expect("not poisoned").bar.take() {
            bar.finish_and_clear();
        }
    }

    fn follow(&self, event: &Event) {
        let mut inner = self.inner.lock().expect("not poisoned");
        if let Event::Started { app, operation, .. } = event {
            if let Some(old) = inner.bar.take() {
                old.finish_and_clear();
            }
            *inner.shown.lock().expect("not poisoned") = Shown::default();
            if inner.terminal {
                let bar = new_bar(inner.shown.clone());
                bar.set_prefix(format!("{app} {operation:?}").to_lowercase());
                inner.bar = Some(bar);
            }
            return;
        }
        let Some(bar) = inner.bar.clone() else {
            return;
        };
        let shown = inner.shown.clone();
        drop(inner);
        // the bar's keys read `shown` while it draws: never draw while holding it
        let update = |f: &mut dyn FnMut(&mut Shown)| f(&mut shown.lock().expect("not poisoned"));
        match event {
            Event::StepStarted { step } => bar.set_message(step.to_string()),
            Event::StepFinished {
                step: Step::Promote | Step::Bake,
                ..
            } => update(&mut |s| s.until = None),
            Event::GroupLaunched { group, size } => {
                update(&mut |s| s.group = Some(group.clone()));
                bar.set_length(u64::from(*size));
                bar.set_position(0);
            }
            Event::GroupAdopted { group } => update(&mut |s| s.group = Some(group.clone())),
            Event::Health {
                healthy, wanted, ..
            } => {
                bar.set_length(*wanted as u64);
                bar.set_position(*healthy as u64);
            }
            Event::TrafficShifted { routes } | Event::Reverted { routes } => update(&mut |s| {
                if let Some(group) = &s.group {
                    s.weight = Some(routes.weight(group));
                }
            }),
            Event::Baking { weight, duration } => update(&mut |s| {
                s.weight = Some(*weight);
                s.until = Some((Instant::now() + *duration, "bake"));
            }),
            Event::Watching { duration, .. } => {
                update(&mut |s| s.until = Some((Instant::now() + *duration, "watch")))
            }
            _ => {}
        }
    }
}

/// A bar on stdout that ticks ten times a second (the time left moves on its own).
fn new_bar(shown: Arc<Mutex<Shown>>) -> ProgressBar {
    let weight = shown.clone();
    let style = ProgressStyle::with_template(
        "{spinner} {prefix:.bold} {msg:<14} [{bar:20}] {pos}/{len} healthy{weight}{left}",
    )
    .expect("a valid template")
    .progress_chars("=> ")
    .with_key(
        "weight",
        move |_: &ProgressState, out: &mut dyn std::fmt::Write| {
            if let Some(w) = weight.lock().expect("not poisoned").weight {
                let _ = write!(out, "  traffic {w}%");
            }
        },
    )
    .with_key(
        "left",
        move |_: &ProgressState, out: &mut dyn std::fmt::Write| {
            if let Some((until, what)) = shown.lock().expect("not poisoned").until {
                let left = until.saturating_duration_since(Instant::now());
                let _ = write!(out, "  {what} {:.0}s left", left.as_secs_f64().ceil());
            }
        },
    );
    let bar =
        ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stdout()).with_style(style);
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}
