//! Summaries of measured runs: medians, latency percentiles, rates, and per-process
//! CPU maps.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

/// The `p` quantile (0..=1) of sorted latencies, in milliseconds.
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// Megabytes (10^6 bytes) per second.
pub(crate) fn mbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

/// CPU seconds per process used between two [`crate::local::ProcCluster::cpu`]
/// snapshots, as nanoseconds per byte moved, plus their `total`: a figure the load of
/// other work on the machine does not move much, unlike MB/s.
pub(crate) fn cpu_per_byte(
    before: &[(String, f64)],
    after: &[(String, f64)],
    bytes: u64,
) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    let mut total = 0.0;
    for (name, a) in after {
        if let Some((_, b)) = before.iter().find(|(n, _)| n == name) {
            let ns = (a - b) * 1e9 / bytes.max(1) as f64;
            total += ns;
            m.insert(name.clone(), ns);
        }
    }
    m.insert("total".into(), total);
    m
}

/// Per-key medians of several runs' maps.
pub(crate) fn median_map(runs: &[BTreeMap<String, f64>]) -> Value {
    let Some(first) = runs.first() else {
        return Value::Null;
    };
    let m: BTreeMap<&String, f64> = first
        .keys()
        .map(|k| {
            (
                k,
                median(runs.iter().filter_map(|r| r.get(k).copied()).collect()),
            )
        })
        .collect();
    json!(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_percentiles() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        let d: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&d, 0.5), 51.0);
        assert_eq!(percentile(&d, 0.99), 99.0);
    }

    #[test]
    fn cpu_per_byte_counts_processes_seen_twice_and_their_total() {
        let before = [("a".to_owned(), 1.0), ("gone".to_owned(), 5.0)];
        let after = [("a".to_owned(), 3.0), ("new".to_owned(), 9.0)];
        let m = cpu_per_byte(&before, &after, 1_000_000_000);
        assert_eq!(m.len(), 2);
        assert_eq!(m["a"], 2.0);
        assert_eq!(m["total"], 2.0);
    }

    #[test]
    fn median_map_takes_each_keys_median() {
        let run = |v: f64| BTreeMap::from([("x".to_owned(), v)]);
        assert_eq!(
            median_map(&[run(3.0), run(1.0), run(2.0)]),
            json!({"x": 2.0})
        );
        assert_eq!(median_map(&[]), Value::Null);
    }
}
