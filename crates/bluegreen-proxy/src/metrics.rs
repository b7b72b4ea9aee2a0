//! `GET /metrics`: the proxy's counters in the OpenMetrics text format (which
//! Prometheus scrapes), encoded by `prometheus-client` at scrape time from the
//! atomics the request path updates.
//!
//! Every family, its labels and its unit are listed in the crate's README
//! ("Metrics"). `app` is the app's host; `group` the group id; a series with no
//! `group` label counts what is no group's (a paused app, an app without routes,
//! a client fault).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::state::Proxy;
use crate::stats::{Cause, CLASSES};

/// The `Content-Type` of the exposition.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The causes an app counts when no group is to blame.
const APP_CAUSES: [Cause; 3] = [Cause::HoldTimeout, Cause::QueueFull, Cause::ClientFault];

/// The exposition of `proxy`'s counters now.
pub(crate) fn render(proxy: &Proxy) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(ProxyCollector(proxy.clone())));
    let mut out = String::new();
    // writing to a String does not fail, and the collector's own encoding
    // errors are fmt errors of that String
    prometheus_client::encoding::text::encode(&mut out, &registry).expect("encoding to a String");
    out
}

#[derive(Debug)]
struct ProxyCollector(Proxy);

type Labels<'a> = Vec<(&'static str, &'a str)>;

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(Labels<'_>, u64)],
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in series {
        ConstCounter::new(*value).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(Labels<'_>, u64)],
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in series {
        let value = i64::try_from(*value).unwrap_or(i64::MAX);
        ConstGauge::new(value).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

impl Collector for ProxyCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let proxy = &self.0;
        let apps = proxy.apps();
        // every app's groups, by id, with their counters
        let groups: Vec<Vec<_>> = apps
            .iter()
            .map(|app| {
                let mut groups: Vec<_> = app
                    .stats
                    .lock()
                    .expect("stats lock")
                    .iter()
                    .map(|(id, stats)| (id.to_string(), stats.clone()))
                    .collect();
                groups.sort_by(|a, b| a.0.cmp(&b.0));
                groups
            })
            .collect();

        let mut requests = Vec::new();
        let mut errors = Vec::new();
        let mut draining = Vec::new();
        let mut switches = Vec::new();
        for (app, groups) in apps.iter().zip(&groups) {
            let host = app.host.as_str();
            for (group, stats) in groups {
                let classes = stats.classes();
                for (i, class) in CLASSES.iter().enumerate() {
                    requests.push((
                        vec![("app", host), ("group", group.as_str()), ("class", *class)],
                        classes[i],
                    ));
                }
                let causes = stats.causes();
                for cause in Cause::ALL.iter().filter(|c| **c != Cause::ClientFault) {
                    errors.push((
                        vec![
                            ("app", host),
                            ("group", group.as_str()),
                            ("cause", cause.label()),
                        ],
                        causes[*cause as usize],
                    ));
                }
                draining.push((
                    vec![("app", host), ("group", group.as_str())],
                    stats.draining.load(std::sync::atomic::Ordering::Relaxed),
                ));
            }
            let classes = app.counters.classes();
            for (i, class) in CLASSES.iter().enumerate().skip(3) {
                requests.push((vec![("app", host), ("class", *class)], classes[i]));
            }
            let causes = app.counters.causes();
            for cause in APP_CAUSES {
                errors.push((
                    vec![("app", host), ("cause", cause.label())],
                    causes[cause as usize],
                ));
            }
            switches.push((vec![("app", host)], app.counters.switches()));
        }

        counter(
            &mut encoder,
            "bluegreen_proxy_requests",
            "Responses given, by status class; with a group: the group's (from a backend or the proxy's own error for the group); without: the proxy's own that are no group's.",
            &requests,
        )?;
        counter(
            &mut encoder,
            "bluegreen_proxy_errors",
            "Error responses by cause: backend_error, upstream_timeout, hold_timeout, queue_full, drain_cut (a group's), client_fault (never a group's).",
            &errors,
        )?;
        {
            let mut family = encoder.encode_descriptor(
                "bluegreen_proxy_request_duration",
                "Time from sending a request to a backend to its response headers (or to the proxy's own error), by group.",
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?;
            for (app, groups) in apps.iter().zip(&groups) {
                for (group, stats) in groups {
                    let labels: Labels = vec![("app", app.host.as_str()), ("group", group)];
                    let (sum, count, buckets) = stats.latency_seconds();
                    family
                        .encode_family(&labels)?
                        .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
                }
            }
        }
        let (accepted, open) = proxy.inner.connections.counts();
        counter(
            &mut encoder,
            "bluegreen_proxy_connections_accepted",
            "Client connections accepted.",
            &[(vec![], accepted)],
        )?;
        gauge(
            &mut encoder,
            "bluegreen_proxy_connections_open",
            "Client connections open now.",
            &[(vec![], open)],
        )?;
        gauge(
            &mut encoder,
            "bluegreen_proxy_held_requests",
            "Requests held now (an app paused, without a route or without a healthy backend).",
            &[(vec![], proxy.held() as u64)],
        )?;
        gauge(
            &mut encoder,
            "bluegreen_proxy_drains",
            "Drains in progress: retired states of a group (it lost its traffic or was attached again) still kept by requests in flight.",
            &draining,
        )?;
        counter(
            &mut encoder,
            "bluegreen_proxy_route_switches",
            "Changes of the app's route table.",
            &switches,
        )?;
        Ok(())
    }
}
