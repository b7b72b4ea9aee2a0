//! Counting API calls per operation, as an SDK interceptor: one place, every call.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

/// API calls per operation.
#[derive(Debug, Default)]
pub struct CallCounter {
    counts: Mutex<BTreeMap<String, u64>>,
}

impl CallCounter {
    pub(crate) fn interceptor(self: &Arc<Self>) -> Counting {
        Counting(self.clone())
    }

    pub(crate) fn snapshot(&self) -> BTreeMap<String, u64> {
        self.counts.lock().expect("call counter poisoned").clone()
    }
}

#[derive(Debug)]
pub(crate) struct Counting(Arc<CallCounter>);

impl Intercept for Counting {
    fn name(&self) -> &'static str {
        "bluegreen-call-counter"
    }

    // once per attempt: every request that reaches the platform counts
    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let name = cfg
            .load::<Metadata>()
            .map(|m| m.name().to_owned())
            .unwrap_or_else(|| "unknown".into());
        *self
            .0
            .counts
            .lock()
            .expect("call counter poisoned")
            .entry(name)
            .or_default() += 1;
        Ok(())
    }
}
