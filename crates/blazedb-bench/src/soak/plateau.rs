//! The plateau verdict. A quantity that keeps growing under a steady workload grows between
//! the middle and the last third of the run; one that has levelled off does not. So, per
//! node and metric: `growth = (mean(last third) − mean(middle third)) / max(mean(middle
//! third), floor)`, and the metric plateaus when `growth ≤ tolerance`. The first third is
//! warm-up (caches filling, the first GC horizons moving) and is not judged.
//!
//! Linear growth from zero gives `growth ≈ 0.67` whatever the rate, so a 10% tolerance
//! catches it in any run length; slow growth on top of a large base can hide in a short run,
//! which is why each verdict also carries the slope over the judged two thirds, per minute.

use serde_json::{json, Value as Json};

use super::sample::{Metric, Sample};

/// One node's verdict on one metric.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// Mean over the middle third.
    pub mid_mean: f64,
    /// Mean over the last third.
    pub last_mean: f64,
    /// `(last − mid) / max(mid, floor)`.
    pub growth: f64,
    /// Least-squares slope over the last two thirds, per minute.
    pub slope_per_min: f64,
    /// `growth ≤ tolerance`.
    pub pass: bool,
}

impl Verdict {
    /// As JSON.
    pub fn to_json(&self) -> Json {
        json!({
            "mid_mean": round(self.mid_mean),
            "last_mean": round(self.last_mean),
            "growth": (self.growth * 1000.0).round() / 1000.0,
            "slope_per_min": round(self.slope_per_min),
            "pass": self.pass,
        })
    }
}

/// Judge `metric` over one node's `samples` (in time order). `None` when a third holds no
/// sample (a run too short to judge).
pub fn judge(samples: &[&Sample], metric: Metric, tolerance: f64) -> Option<Verdict> {
    let end = samples.last()?.time_s;
    let (a, b) = (end / 3.0, 2.0 * end / 3.0);
    let mean = |lo: f64, hi: f64, last: bool| {
        let v: Vec<f64> = samples
            .iter()
            .filter(|s| s.time_s >= lo && (s.time_s < hi || last))
            .map(|s| metric.value(s) as f64)
            .collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    let mid_mean = mean(a, b, false)?;
    let last_mean = mean(b, end, true)?;
    let growth = (last_mean - mid_mean) / mid_mean.max(metric.floor());
    let judged: Vec<(f64, f64)> = samples
        .iter()
        .filter(|s| s.time_s >= a)
        .map(|s| (s.time_s / 60.0, metric.value(s) as f64))
        .collect();
    Some(Verdict {
        mid_mean,
        last_mean,
        growth,
        slope_per_min: slope(&judged),
        pass: growth <= tolerance,
    })
}

/// Least-squares slope of `y` over `x` (0 for fewer than two distinct x).
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    if sxx == 0.0 {
        0.0
    } else {
        sxy / sxx
    }
}

fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(f: impl Fn(f64) -> u64) -> Vec<Sample> {
        (0..=36)
            .map(|i| {
                let t = i as f64 * 5.0;
                Sample {
                    time_s: t,
                    node: "relay".into(),
                    file_bytes: 0,
                    history_rows: f(t),
                    tombstones: 0,
                    rss_kb: 0,
                    live_records: 0,
                    feed_rows: 0,
                    wal_bytes: 0,
                }
            })
            .collect()
    }

    fn judge_rows(s: &[Sample]) -> Verdict {
        let refs: Vec<&Sample> = s.iter().collect();
        judge(&refs, Metric::HistoryRows, 0.10).unwrap()
    }

    #[test]
    fn linear_growth_fails_whatever_the_rate() {
        for rate in [50, 600] {
            let v = judge_rows(&series(|t| (t * rate as f64) as u64));
            assert!(!v.pass && v.growth > 0.5, "{v:?}");
            assert!((v.slope_per_min - 60.0 * rate as f64).abs() < 1.0, "{v:?}");
        }
    }

    #[test]
    fn a_sawtooth_under_a_level_plateaus() {
        // Grows for 25 s, GC takes it back down: the pattern of a periodic collection.
        let v = judge_rows(&series(|t| 20_000 + ((t as u64 % 25) * 300)));
        assert!(v.pass, "{v:?}");
    }

    #[test]
    fn a_rise_that_levels_off_in_the_first_third_plateaus() {
        let v = judge_rows(&series(|t| (50_000.0 * (1.0 - (-t / 15.0).exp())) as u64));
        assert!(v.pass, "{v:?}");
    }

    #[test]
    fn small_values_are_judged_against_the_floor() {
        // 40 → 80 rows doubles, but 40 rows is noise next to the 1000-row floor.
        let v = judge_rows(&series(|t| if t < 120.0 { 40 } else { 80 }));
        assert!(v.pass && v.growth < 0.05, "{v:?}");
    }

    #[test]
    fn too_short_a_run_gives_no_verdict() {
        let s = series(|_| 1);
        let refs: Vec<&Sample> = s[..1].iter().collect();
        assert!(judge(&refs, Metric::HistoryRows, 0.1).is_none());
    }
}
