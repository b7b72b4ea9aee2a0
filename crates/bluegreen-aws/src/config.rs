//! Where the AWS clients come from: the standard configuration chain, a region, and
//! an endpoint override for emulators. Retries are left to bluegreen's own layer.

use std::sync::Arc;

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};

use crate::calls::CallCounter;

/// How to reach AWS.
///
/// Credentials come from the standard chain (environment, profile, SSO, instance
/// role); they are never logged, and `Debug` shows none.
#[non_exhaustive]
#[derive(Clone, Debug, Default)]
pub struct AwsOptions {
    /// The region (default: from the configuration chain).
    pub region: Option<String>,
    /// An endpoint override, for emulators (default: `AWS_ENDPOINT_URL` when set).
    pub endpoint_url: Option<String>,
}

impl AwsOptions {
    /// Sets the region.
    pub fn with_region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Sets the endpoint.
    pub fn with_endpoint_url(mut self, url: impl Into<String>) -> Self {
        self.endpoint_url = Some(url.into());
        self
    }
}

/// The EC2, ELBv2 and Auto Scaling clients that every provider of this crate shares,
/// with one call counter.
#[derive(Clone, Debug)]
pub struct AwsClients {
    pub(crate) autoscaling: aws_sdk_autoscaling::Client,
    pub(crate) ec2: aws_sdk_ec2::Client,
    pub(crate) elb: aws_sdk_elasticloadbalancingv2::Client,
    pub(crate) calls: Arc<CallCounter>,
}

impl AwsClients {
    /// Loads the configuration chain and builds the clients. The SDK's own retries
    /// are turned off: wrap providers in `bluegreen_core::Retry` (the engine does by
    /// default), so that retries live in one place.
    pub async fn load(options: &AwsOptions) -> AwsClients {
        let mut loader =
            aws_config::defaults(BehaviorVersion::latest()).retry_config(RetryConfig::disabled());
        if let Some(region) = &options.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(url) = &options.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let shared = loader.load().await;
        AwsClients::from_sdk_config(&shared)
    }

    /// The clients from a configuration the caller loaded (its region, credentials,
    /// endpoint and retry configuration, as given), each with this crate's call
    /// counter. Makes no call. For retries in one place, load `config` with
    /// `RetryConfig::disabled()` and wrap providers in `bluegreen_core::Retry`.
    pub fn from_sdk_config(config: &SdkConfig) -> AwsClients {
        let calls = Arc::new(CallCounter::default());
        let autoscaling = aws_sdk_autoscaling::Client::from_conf(
            aws_sdk_autoscaling::config::Builder::from(config)
                .interceptor(calls.interceptor())
                .build(),
        );
        let ec2 = aws_sdk_ec2::Client::from_conf(
            aws_sdk_ec2::config::Builder::from(config)
                .interceptor(calls.interceptor())
                .build(),
        );
        let elb = aws_sdk_elasticloadbalancingv2::Client::from_conf(
            aws_sdk_elasticloadbalancingv2::config::Builder::from(config)
                .interceptor(calls.interceptor())
                .build(),
        );
        AwsClients {
            autoscaling,
            ec2,
            elb,
            calls,
        }
    }

    /// The API calls made so far, per operation (`RunInstances`, `ModifyListener`,
    /// ...).
    pub fn call_counts(&self) -> std::collections::BTreeMap<String, u64> {
        self.calls.snapshot()
    }

    /// The EC2 client, for what this crate does not cover.
    pub fn ec2(&self) -> &aws_sdk_ec2::Client {
        &self.ec2
    }

    /// The Auto Scaling client, for what this crate does not cover.
    pub fn autoscaling(&self) -> &aws_sdk_autoscaling::Client {
        &self.autoscaling
    }

    /// The ELBv2 client, for what this crate does not cover.
    pub fn elb(&self) -> &aws_sdk_elasticloadbalancingv2::Client {
        &self.elb
    }
}
