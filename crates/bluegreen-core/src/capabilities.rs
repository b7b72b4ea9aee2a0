//! What an image provider, a fleet and a router can do. The engine and the conformance suite adapt to
//! these declarations instead of special-casing providers, and the engine says so
//! with an [`Event::StrategyAdapted`](crate::Event::StrategyAdapted).

/// What a [`Fleet`](crate::Fleet) declares.
///
/// ```
/// use bluegreen_core::FleetCapabilities;
/// let caps = FleetCapabilities::default().with_batch_size(50);
/// assert_eq!(caps.batch_size, Some(50));
/// assert!(caps.warm_groups && !caps.launch_is_switch && !caps.scaling);
/// ```
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetCapabilities {
    /// The fleet launches, lists and destroys instances in batches of at most this many
    /// per platform call (`None`: one call for a whole group).
    pub batch_size: Option<usize>,
    /// An older group can stay warm (running, without traffic) beside the live one.
    /// Default true. Without it, the groups `keep` keeps are records only, a
    /// rollback relaunches the previous release, and there is no bake after the
    /// switch (nothing warm to switch back to).
    pub warm_groups: bool,
    /// Launching a group is what moves the traffic to it (a platform that runs one
    /// release of an app at a time, such as a Heroku release). Default false. The
    /// engine then cannot keep traffic off a new group until it is verified: it
    /// says so, switches in one step, and reverts by launching the previous release.
    pub launch_is_switch: bool,
    /// The fleet runs release tasks ([`Fleet::start_task`](crate::Fleet::start_task)).
    /// Default false: a release with a task is then refused before anything happens.
    pub tasks: bool,
    /// The fleet can change how many instances a group runs
    /// ([`Fleet::scale`](crate::Fleet::scale)), so that a warm group waits scaled in
    /// ([`EngineOptions::warm_size`](crate::EngineOptions::warm_size)). Default false:
    /// the option is then refused before anything happens.
    pub scaling: bool,
}

impl Default for FleetCapabilities {
    fn default() -> Self {
        FleetCapabilities {
            batch_size: None,
            warm_groups: true,
            launch_is_switch: false,
            tasks: false,
            scaling: false,
        }
    }
}

impl FleetCapabilities {
    /// Sets [`FleetCapabilities::batch_size`].
    pub fn with_batch_size(mut self, size: usize) -> Self {
        self.batch_size = Some(size);
        self
    }

    /// Sets [`FleetCapabilities::warm_groups`].
    pub fn with_warm_groups(mut self, yes: bool) -> Self {
        self.warm_groups = yes;
        self
    }

    /// Sets [`FleetCapabilities::launch_is_switch`].
    pub fn with_launch_is_switch(mut self, yes: bool) -> Self {
        self.launch_is_switch = yes;
        self
    }

    /// Sets [`FleetCapabilities::tasks`].
    pub fn with_tasks(mut self, yes: bool) -> Self {
        self.tasks = yes;
        self
    }

    /// Sets [`FleetCapabilities::scaling`].
    pub fn with_scaling(mut self, yes: bool) -> Self {
        self.scaling = yes;
        self
    }
}

/// What an [`Image`](crate::Image) provider declares.
///
/// ```
/// use bluegreen_core::ImageCapabilities;
/// let caps = ImageCapabilities::default();
/// assert!(caps.refuses_removal_in_use);
/// assert!(!caps.with_refuses_removal_in_use(false).refuses_removal_in_use);
/// ```
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageCapabilities {
    /// [`Image::remove`](crate::Image::remove) sees the instances that use an image
    /// and refuses to remove one still in use ([`Error::Conflict`](crate::Error::Conflict)),
    /// as its contract says. Default true. A provider whose images run where it
    /// cannot look (instances of another platform's fleet) declares false; the
    /// conformance suite then skips that check and says why, and the engine's
    /// retention still keeps the images of every group it keeps.
    pub refuses_removal_in_use: bool,
}

impl Default for ImageCapabilities {
    fn default() -> Self {
        ImageCapabilities {
            refuses_removal_in_use: true,
        }
    }
}

impl ImageCapabilities {
    /// Sets [`ImageCapabilities::refuses_removal_in_use`].
    pub fn with_refuses_removal_in_use(mut self, yes: bool) -> Self {
        self.refuses_removal_in_use = yes;
        self
    }
}

/// What a [`Router`](crate::Router) declares.
///
/// ```
/// use bluegreen_core::RouterCapabilities;
/// let caps = RouterCapabilities::default().with_weighted_routing(true);
/// assert!(caps.weighted_routing && !caps.preview);
/// ```
#[non_exhaustive]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouterCapabilities {
    /// The router can split an app's traffic between groups by weight (canary steps).
    /// Without it, the engine switches in one step, and a table with more than one
    /// group is refused before it reaches the router.
    pub weighted_routing: bool,
    /// The router holds requests during a switch, and while a group has no healthy
    /// member, instead of failing them.
    pub holds_requests: bool,
    /// The router can give a group that has no traffic yet a preview address
    /// ([`Attachment::preview`](crate::Attachment::preview)), which verify checks get.
    pub preview: bool,
    /// The router can replace several apps' tables in one atomic change
    /// ([`Router::set_routes_many`](crate::Router::set_routes_many)): a request sees
    /// every old table or every new one. Without it,
    /// [`Engine::deploy_all`](crate::Engine::deploy_all) refuses or switches app by
    /// app, as the caller chose.
    pub multi_app_switch: bool,
}

impl RouterCapabilities {
    /// Sets [`RouterCapabilities::weighted_routing`].
    pub fn with_weighted_routing(mut self, yes: bool) -> Self {
        self.weighted_routing = yes;
        self
    }

    /// Sets [`RouterCapabilities::holds_requests`].
    pub fn with_holds_requests(mut self, yes: bool) -> Self {
        self.holds_requests = yes;
        self
    }

    /// Sets [`RouterCapabilities::preview`].
    pub fn with_preview(mut self, yes: bool) -> Self {
        self.preview = yes;
        self
    }

    /// Sets [`RouterCapabilities::multi_app_switch`].
    pub fn with_multi_app_switch(mut self, yes: bool) -> Self {
        self.multi_app_switch = yes;
        self
    }
}
