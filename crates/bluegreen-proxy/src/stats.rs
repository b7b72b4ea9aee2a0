//! Per-group and per-app counters and a lock-free latency histogram: relaxed
//! atomics on the request path, read by the admin API and `GET /metrics`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Sub-buckets per power of two: each bucket is at most 1/8 (12.5 %) wide.
const SUB_BITS: u32 = 3;
const SUB: usize = 1 << SUB_BITS;
/// Enough powers of two for latencies up to 2^40 µs (about 12 days).
const BUCKETS: usize = 41 * SUB;

/// A log-linear histogram of latencies in microseconds, updated with relaxed atomics.
pub(crate) struct Histogram {
    counts: Box<[AtomicU64]>,
}

impl Histogram {
    pub(crate) fn new() -> Self {
        Histogram {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn index(micros: u64) -> usize {
        if micros < SUB as u64 {
            return micros as usize;
        }
        let msb = 63 - micros.leading_zeros();
        let shift = msb - SUB_BITS;
        let sub = ((micros >> shift) as usize) & (SUB - 1);
        (((msb - SUB_BITS + 1) as usize) * SUB + sub).min(BUCKETS - 1)
    }

    /// The upper bound of a bucket, in microseconds.
    fn upper(index: usize) -> u64 {
        if index < SUB {
            return index as u64;
        }
        let octave = (index / SUB) as u32 - 1;
        let sub = (index % SUB) as u64;
        let shift = octave;
        ((SUB as u64 + sub + 1) << shift) - 1
    }

    #[cfg(test)]
    pub(crate) fn record(&self, latency: Duration) {
        self.record_micros(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
    }

    pub(crate) fn record_micros(&self, micros: u64) {
        self.counts[Self::index(micros)].fetch_add(1, Ordering::Relaxed);
    }

    /// The count and the buckets for the exposition, in seconds: one bucket per
    /// power of two of microseconds from 2^7 µs (128 µs) to 2^26 µs (67.1 s), then
    /// +Inf (`f64::MAX`). Each holds the samples above the previous bound and up
    /// to its own, not cumulative. The bounds fall on bucket edges of this
    /// histogram, so the counts are exact.
    pub(crate) fn seconds_buckets(&self) -> (u64, Vec<(f64, u64)>) {
        let mut out = Vec::with_capacity(21);
        let mut total = 0;
        let mut in_bucket = 0;
        let mut bound = 7;
        for (i, c) in self.counts.iter().enumerate() {
            let c = c.load(Ordering::Relaxed);
            total += c;
            // the bucket ends below 2^bound µs: `upper` is inclusive
            while bound <= 26 && Self::upper(i) >= (1u64 << bound) {
                out.push(((1u64 << bound) as f64 / 1e6, in_bucket));
                in_bucket = 0;
                bound += 1;
            }
            in_bucket += c;
        }
        while bound <= 26 {
            out.push(((1u64 << bound) as f64 / 1e6, in_bucket));
            in_bucket = 0;
            bound += 1;
        }
        out.push((f64::MAX, in_bucket));
        (total, out)
    }

    /// The latency under which `q` (0 to 1) of the samples fall, or `None` without
    /// samples.
    pub(crate) fn quantile(&self, q: f64) -> Option<Duration> {
        let counts: Vec<u64> = self
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(Duration::from_micros(Self::upper(i)));
            }
        }
        None
    }
}

/// Why the proxy counted an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cause {
    /// A backend's 5xx, or a backend that failed (502) or turned unhealthy
    /// before it answered (504).
    BackendError = 0,
    /// No response headers within the upstream timeout (504).
    UpstreamTimeout = 1,
    /// Held past the hold timeout (503).
    HoldTimeout = 2,
    /// Refused by a full hold queue (503).
    QueueFull = 3,
    /// Cut by the drain timeout (504).
    DrainCut = 4,
    /// A malformed or stalled request body (400, 408): never a group's.
    ClientFault = 5,
}

impl Cause {
    /// Every cause, in the order of their counters.
    pub(crate) const ALL: [Cause; 6] = [
        Cause::BackendError,
        Cause::UpstreamTimeout,
        Cause::HoldTimeout,
        Cause::QueueFull,
        Cause::DrainCut,
        Cause::ClientFault,
    ];

    /// The `cause` label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Cause::BackendError => "backend_error",
            Cause::UpstreamTimeout => "upstream_timeout",
            Cause::HoldTimeout => "hold_timeout",
            Cause::QueueFull => "queue_full",
            Cause::DrainCut => "drain_cut",
            Cause::ClientFault => "client_fault",
        }
    }
}

/// The status classes counted, `1xx` to `5xx`.
pub(crate) const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn class(status: u16) -> usize {
    usize::from(status / 100).clamp(1, 5) - 1
}

/// A group's counters, kept across re-attachments of the group.
pub(crate) struct GroupStats {
    /// Responses by status class (`CLASSES`): their sum is the request count,
    /// the last one the error count.
    classes: [AtomicU64; 5],
    /// Errors by cause (`Cause::ALL`; a client fault is never counted here).
    causes: [AtomicU64; 6],
    latency: Histogram,
    /// The sum of the recorded latencies, in microseconds.
    latency_sum: AtomicU64,
    /// Retired states of the group still alive: requests in flight (or a client
    /// connection's backend connection in use) keep them.
    pub(crate) draining: AtomicU64,
}

impl GroupStats {
    pub(crate) fn new() -> Self {
        GroupStats {
            classes: Default::default(),
            causes: Default::default(),
            latency: Histogram::new(),
            latency_sum: AtomicU64::new(0),
            draining: AtomicU64::new(0),
        }
    }

    /// Counts one response from a backend (a 5xx counts as a backend error) and
    /// its time to headers.
    pub(crate) fn record(&self, status: u16, latency: Duration) {
        self.count(status, latency);
        if status >= 500 {
            self.causes[Cause::BackendError as usize].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts one error response of the proxy's own, for `cause`.
    pub(crate) fn record_error(&self, status: u16, cause: Cause, latency: Duration) {
        self.count(status, latency);
        self.causes[cause as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn count(&self, status: u16, latency: Duration) {
        self.classes[class(status)].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency.record_micros(micros);
        self.latency_sum.fetch_add(micros, Ordering::Relaxed);
    }

    /// Responses by status class, in the order of `CLASSES`.
    pub(crate) fn classes(&self) -> [u64; 5] {
        std::array::from_fn(|i| self.classes[i].load(Ordering::Relaxed))
    }

    /// Errors by cause, in the order of `Cause::ALL`.
    pub(crate) fn causes(&self) -> [u64; 6] {
        std::array::from_fn(|i| self.causes[i].load(Ordering::Relaxed))
    }

    /// The latency histogram in seconds: the sum, the count and the count of each
    /// bucket (not cumulative) by upper bound, the last one `f64::MAX` (+Inf).
    pub(crate) fn latency_seconds(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let sum = self.latency_sum.load(Ordering::Relaxed) as f64 / 1e6;
        let (count, buckets) = self.latency.seconds_buckets();
        (sum, count, buckets)
    }

    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        let classes = self.classes();
        StatsSnapshot {
            requests: classes.iter().sum(),
            errors: classes[4],
            p50: self.latency.quantile(0.5),
            p99: self.latency.quantile(0.99),
        }
    }
}

/// An app's counters for what is no group's: responses the proxy gave while no
/// group was to blame (a paused app, no route, a client fault) and route
/// switches.
#[derive(Default)]
pub(crate) struct AppStats {
    classes: [AtomicU64; 5],
    causes: [AtomicU64; 6],
    switches: AtomicU64,
}

impl AppStats {
    /// Counts one error response of the proxy's own that is no group's.
    pub(crate) fn record_error(&self, status: u16, cause: Cause) {
        self.classes[class(status)].fetch_add(1, Ordering::Relaxed);
        self.causes[cause as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one change of the app's route table.
    pub(crate) fn switched(&self) {
        self.switches.fetch_add(1, Ordering::Relaxed);
    }

    /// Responses by status class, in the order of `CLASSES`.
    pub(crate) fn classes(&self) -> [u64; 5] {
        std::array::from_fn(|i| self.classes[i].load(Ordering::Relaxed))
    }

    /// Errors by cause, in the order of `Cause::ALL`.
    pub(crate) fn causes(&self) -> [u64; 6] {
        std::array::from_fn(|i| self.causes[i].load(Ordering::Relaxed))
    }

    /// Route table changes so far.
    pub(crate) fn switches(&self) -> u64 {
        self.switches.load(Ordering::Relaxed)
    }
}

/// A group's counters at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StatsSnapshot {
    /// Responses given so far (from a backend or from the proxy itself).
    pub requests: u64,
    /// Responses with a 5xx status so far.
    pub errors: u64,
    /// The median time to response headers.
    #[serde(with = "opt_micros", rename = "p50_us")]
    pub p50: Option<Duration>,
    /// The 99th percentile time to response headers.
    #[serde(with = "opt_micros", rename = "p99_us")]
    pub p99: Option<Duration>,
}

pub(crate) mod opt_micros {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&(d.as_micros() as u64)),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_micros))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for i in 0..BUCKETS - 1 {
            let up = Histogram::upper(i);
            assert!(i == 0 || up > last, "bucket {i}: {up} <= {last}");
            last = up;
        }
        for v in [0u64, 1, 7, 8, 9, 15, 16, 100, 999, 1000, 12345, 1 << 30] {
            let i = Histogram::index(v);
            assert!(Histogram::upper(i) >= v, "{v} above bucket {i}");
            assert!(Histogram::upper(i) as f64 <= v as f64 * 1.126 + 1.0, "{v}");
            assert!(
                i == 0 || Histogram::upper(i - 1) < v,
                "{v} below bucket {i}"
            );
        }
    }

    #[test]
    fn seconds_buckets_split_at_powers_of_two_of_microseconds() {
        let h = Histogram::new();
        for micros in [
            0,
            127,
            128,
            255,
            256,
            1 << 20,
            (1 << 26) - 1,
            1 << 26,
            u64::MAX,
        ] {
            h.record_micros(micros);
        }
        let (count, buckets) = h.seconds_buckets();
        assert_eq!(count, 9);
        assert_eq!(buckets.len(), 21);
        assert_eq!(buckets[0], (0.000128, 2), "0 and 127 µs");
        assert_eq!(buckets[1], (0.000256, 2), "128 and 255 µs");
        assert_eq!(buckets[2], (0.000512, 1), "256 µs");
        assert_eq!(buckets[14], (2.097152, 1), "2^20 µs");
        assert_eq!(buckets[19], (67.108864, 1), "2^26 - 1 µs");
        assert_eq!(buckets[20], (f64::MAX, 2), "2^26 µs and beyond");
        assert_eq!(buckets.iter().map(|b| b.1).sum::<u64>(), 9);
    }

    #[test]
    fn quantiles() {
        let h = Histogram::new();
        assert_eq!(h.quantile(0.99), None);
        for ms in 1..=100 {
            h.record(Duration::from_millis(ms));
        }
        let p50 = h.quantile(0.5).unwrap();
        let p99 = h.quantile(0.99).unwrap();
        assert!(p50 >= Duration::from_millis(50) && p50 <= Duration::from_millis(57));
        assert!(p99 >= Duration::from_millis(99) && p99 <= Duration::from_millis(112));
    }
}
