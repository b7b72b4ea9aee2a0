//! What a fleet or a router can do. The engine and the conformance suite adapt to
//! these declarations instead of special-casing providers.

/// What a provider declares it can do.
///
/// ```
/// use bluegreen_core::Capabilities;
/// let caps = Capabilities::default().with_weighted_routing(true).with_batch_size(50);
/// assert!(caps.weighted_routing);
/// assert_eq!(caps.batch_size, Some(50));
/// ```
#[non_exhaustive]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// The router can split an app's traffic between groups by weight (canary steps).
    /// Without it, the engine switches in one step.
    pub weighted_routing: bool,
    /// The router holds requests during a switch instead of failing them.
    pub holds_requests: bool,
    /// The router can give a group that has no traffic yet a preview address.
    pub preview: bool,
    /// The fleet launches, lists and destroys instances in batches of at most this many
    /// per platform call (`None`: one call for a whole group).
    pub batch_size: Option<usize>,
}

impl Capabilities {
    /// Sets [`Capabilities::weighted_routing`].
    pub fn with_weighted_routing(mut self, yes: bool) -> Self {
        self.weighted_routing = yes;
        self
    }

    /// Sets [`Capabilities::holds_requests`].
    pub fn with_holds_requests(mut self, yes: bool) -> Self {
        self.holds_requests = yes;
        self
    }

    /// Sets [`Capabilities::preview`].
    pub fn with_preview(mut self, yes: bool) -> Self {
        self.preview = yes;
        self
    }

    /// Sets [`Capabilities::batch_size`].
    pub fn with_batch_size(mut self, size: usize) -> Self {
        self.batch_size = Some(size);
        self
    }
}
