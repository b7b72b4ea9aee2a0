//! Per-group counters and a lock-free latency histogram.

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

    pub(crate) fn record(&self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.counts[Self::index(micros)].fetch_add(1, Ordering::Relaxed);
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

/// A group's counters, kept across re-attachments of the group.
pub(crate) struct GroupStats {
    requests: AtomicU64,
    errors: AtomicU64,
    latency: Histogram,
}

impl GroupStats {
    pub(crate) fn new() -> Self {
        GroupStats {
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latency: Histogram::new(),
        }
    }

    /// Counts one response (a 5xx counts as an error) and its time to headers.
    pub(crate) fn record(&self, status: u16, latency: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if status >= 500 {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.latency.record(latency);
    }

    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            p50: self.latency.quantile(0.5),
            p99: self.latency.quantile(0.99),
        }
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
