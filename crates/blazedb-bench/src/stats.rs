//! Summaries of measurements: percentiles of latency samples and rates of timed batches.
//!
//! Percentiles use the nearest-rank method on the sorted samples (the value at rank
//! `ceil(p / 100 * n)`), so every reported percentile is a latency that was actually observed
//! and p100 is the maximum.

use std::time::{Duration, Instant};

/// A distribution of latencies, in microseconds.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// Number of samples.
    pub samples: usize,
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// Arithmetic mean.
    pub mean_us: f64,
    /// Fastest sample.
    pub min_us: f64,
    /// Slowest sample.
    pub max_us: f64,
}

impl Summary {
    /// Summarize samples; `None` when there are none.
    pub fn of(samples: &[Duration]) -> Option<Summary> {
        if samples.is_empty() {
            return None;
        }
        let mut us: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e6).collect();
        us.sort_by(f64::total_cmp);
        let mean_us = us.iter().sum::<f64>() / us.len() as f64;
        Some(Summary {
            samples: us.len(),
            p50_us: percentile_sorted(&us, 50.0),
            p99_us: percentile_sorted(&us, 99.0),
            mean_us,
            min_us: us[0],
            max_us: us[us.len() - 1],
        })
    }
}

/// The nearest-rank `p`th percentile (0 ≤ p ≤ 100) of ascending `sorted` values.
///
/// Panics on an empty slice or a `p` outside 0..=100: both are bugs in the caller.
pub fn percentile_sorted(sorted: &[f64], p: f64) -> f64 {
    assert!(!sorted.is_empty(), "percentile of no samples");
    assert!((0.0..=100.0).contains(&p), "percentile {p} outside 0..=100");
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Operations per second for `ops` operations that took `elapsed` in total.
pub fn rate_per_s(ops: usize, elapsed: Duration) -> f64 {
    ops as f64 / elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
}

/// Run `f` and return its result with the time it took.
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles_of_1_to_100() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile_sorted(&v, 0.0), 1.0);
        assert_eq!(percentile_sorted(&v, 50.0), 50.0);
        assert_eq!(percentile_sorted(&v, 99.0), 99.0);
        assert_eq!(percentile_sorted(&v, 99.5), 100.0);
        assert_eq!(percentile_sorted(&v, 100.0), 100.0);
    }

    #[test]
    fn percentiles_of_small_samples_are_observed_values() {
        assert_eq!(percentile_sorted(&[7.0], 50.0), 7.0);
        assert_eq!(percentile_sorted(&[7.0], 99.0), 7.0);
        // Two samples: the median is the lower one, p99 the upper one.
        assert_eq!(percentile_sorted(&[1.0, 9.0], 50.0), 1.0);
        assert_eq!(percentile_sorted(&[1.0, 9.0], 99.0), 9.0);
    }

    #[test]
    fn summary_sorts_and_converts_to_microseconds() {
        let samples: Vec<Duration> = [30, 10, 20, 40]
            .iter()
            .map(|&n| Duration::from_micros(n))
            .collect();
        let s = Summary::of(&samples).expect("non-empty");
        assert_eq!(s.samples, 4);
        assert_eq!(s.p50_us, 20.0);
        assert_eq!(s.p99_us, 40.0);
        assert_eq!(s.min_us, 10.0);
        assert_eq!(s.max_us, 40.0);
        assert_eq!(s.mean_us, 25.0);
        assert_eq!(Summary::of(&[]), None);
    }

    #[test]
    fn rate_of_a_batch() {
        assert_eq!(rate_per_s(500, Duration::from_millis(250)), 2000.0);
    }
}
