//! Impossible image sources are refused before any side effect.

use bluegreen_core::{App, DeployRequest, Engine, ErrorKind, ImageSource};

use super::report::Report;

const PART: &str = "sources";

/// An image source that cannot possibly work on a provider, and how the provider
/// must refuse it.
#[derive(Clone, Debug)]
pub struct Refused {
    /// The source.
    pub source: ImageSource,
    /// The kind of the error (`Invalid` for a malformed source, `NotFound` for a
    /// missing file, `NotSupported` for a kind the provider does not take).
    pub kind: ErrorKind,
    /// Text the error's message must contain: the field and the problem.
    pub why: String,
}

impl Refused {
    /// `source` refused with an error of `kind` whose message contains `why`.
    pub fn new(source: ImageSource, kind: ErrorKind, why: impl Into<String>) -> Self {
        Refused {
            source,
            kind,
            why: why.into(),
        }
    }
}

/// Deploys each source of `refused` with `engine` and checks that the deployment
/// fails with the expected kind and message (for `Invalid`, one that names the
/// field: `invalid <field>: <problem>`), without a revert (nothing was
/// changed, so there is nothing to revert). Whether nothing reached the platform is
/// the caller's to check after it (a count of the provider's calls, a list of its
/// resources): only the provider knows how to see that.
///
/// # Panics
///
/// When a source deploys, or fails otherwise than expected, naming the source.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// use bluegreen_core::{App, Engine, ErrorKind, ImageSource};
/// use bluegreen_testkit::{conformance::{self, Refused}, MemoryPlatform};
///
/// let platform = MemoryPlatform::new();
/// let engine = Engine::new(platform.image(), platform.fleet(), platform.router());
/// let app = App::new("sources", "test").unwrap();
/// let report = conformance::sources_refused(&engine, &app, &[Refused::new(
///     ImageSource::Reference("  ".into()),
///     ErrorKind::Invalid,
///     "invalid source",
/// )]).await;
/// assert_eq!(report.passed(), 1);
/// assert!(platform.instance_count() == 0);
/// # }
/// ```
pub async fn sources_refused(engine: &Engine, app: &App, refused: &[Refused]) -> Report {
    let mut report = Report::default();
    for case in refused {
        let rule = format!(
            "{} is refused as {:?} naming \"{}\"",
            case.source, case.kind, case.why
        );
        let e = match engine
            .deploy(&DeployRequest::new(app.clone(), case.source.clone()))
            .await
        {
            Ok(r) => panic!("conformance: {PART}: {rule}: it deployed as {}", r.live),
            Err(e) => e,
        };
        assert_eq!(e.kind(), case.kind, "conformance: {PART}: {rule}: {e}");
        assert!(
            e.to_string().contains(&case.why),
            "conformance: {PART}: {rule}: the error says: {e}"
        );
        if case.kind == ErrorKind::Invalid {
            assert!(
                e.to_string().contains("invalid "),
                "conformance: {PART}: {rule}: an invalid input's error names the field \
                 (`invalid <field>: <problem>`): {e}"
            );
        }
        assert!(
            !e.rolled_back(),
            "conformance: {PART}: {rule}: it was refused only after a change, which was \
             reverted: {e}"
        );
        report.pass(PART, rule);
    }
    report
}
