use std::fmt;

/// What a run of the suite, or of one of its parts, checked: each rule that passed,
/// and each that was skipped with the reason (the capability or the missing input
/// that decided). A rule that fails panics, naming it, after the rules before it
/// were printed as they passed.
#[non_exhaustive]
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Every rule, in the order the suite took them.
    pub checks: Vec<Checked>,
}

/// One rule of the suite and how it ended.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    /// The part of the suite: `image`, `fleet`, `router`, `deployment`, `look-alikes`,
    /// `sources`, `lock`.
    pub part: &'static str,
    /// The rule, as the traits' `# Behavior` sections state it.
    pub rule: String,
    /// Whether it passed or why it was skipped.
    pub outcome: Outcome,
}

/// How a rule ended (a failed rule panics instead).
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Checked, and it held.
    Passed,
    /// Not checked: the provider declared it cannot keep the rule, or the input the
    /// rule needs was not given.
    Skipped {
        /// What decided: the capability and its value, or the missing input.
        reason: String,
    },
}

impl Report {
    /// Rules that were checked and held.
    pub fn passed(&self) -> usize {
        self.checks
            .iter()
            .filter(|c| c.outcome == Outcome::Passed)
            .count()
    }

    /// Rules that were skipped.
    pub fn skipped(&self) -> usize {
        self.checks.len() - self.passed()
    }

    /// The rules of `part` whose text contains `rule`, for a provider's own test
    /// that wants to know how one ended.
    pub fn find(&self, part: &str, rule: &str) -> Option<&Checked> {
        self.checks
            .iter()
            .find(|c| c.part == part && c.rule.contains(rule))
    }

    /// Adds the rules of `other` after these.
    pub fn extend(&mut self, other: Report) {
        self.checks.extend(other.checks);
    }

    pub(crate) fn pass(&mut self, part: &'static str, rule: impl Into<String>) {
        self.push(part, rule.into(), Outcome::Passed);
    }

    pub(crate) fn skip(
        &mut self,
        part: &'static str,
        rule: impl Into<String>,
        reason: impl Into<String>,
    ) {
        let reason = reason.into();
        self.push(part, rule.into(), Outcome::Skipped { reason });
    }

    fn push(&mut self, part: &'static str, rule: String, outcome: Outcome) {
        let checked = Checked {
            part,
            rule,
            outcome,
        };
        // printed as it ends: a test that fails later shows what held before
        println!("conformance: {checked}");
        self.checks.push(checked);
    }
}

impl fmt::Display for Checked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.outcome {
            Outcome::Passed => write!(f, "passed  {}: {}", self.part, self.rule),
            Outcome::Skipped { reason } => {
                write!(f, "skipped {}: {} ({reason})", self.part, self.rule)
            }
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "conformance: {} rules passed, {} skipped",
            self.passed(),
            self.skipped()
        )?;
        for c in &self.checks {
            write!(f, "\n  {c}")?;
        }
        Ok(())
    }
}
