//! Medians, percentiles and the formatting of durations.

use std::time::Duration;

pub fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// The median of `values` (the mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// The `p`-th percentile (nearest rank) of `values`.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

/// Mean, p50 and p99 of one run of many samples, in ms.
#[derive(Clone, Copy, Debug)]
pub struct Latency {
    pub mean: f64,
    pub p50: f64,
    pub p99: f64,
}

impl Latency {
    pub fn of(samples: &[Duration]) -> Latency {
        let values: Vec<f64> = samples.iter().map(|d| ms(*d)).collect();
        Latency {
            mean: mean(&values),
            p50: percentile(&values, 50.0),
            p99: percentile(&values, 99.0),
        }
    }

    /// The median of each statistic over several runs.
    pub fn median_of(runs: &[Latency]) -> Latency {
        let pick = |f: fn(&Latency) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
        Latency {
            mean: pick(|l| l.mean),
            p50: pick(|l| l.p50),
            p99: pick(|l| l.p99),
        }
    }
}

/// A duration given in ms, in the unit that reads best.
pub fn show_ms(value: f64) -> String {
    if value.is_nan() {
        "-".into()
    } else if value >= 1000.0 {
        format!("{:.2} s", value / 1000.0)
    } else if value >= 1.0 {
        format!("{value:.2} ms")
    } else {
        format!("{:.1} µs", value * 1000.0)
    }
}

/// A size in KiB, in the unit that reads best.
pub fn show_kib(kib: f64) -> String {
    if kib >= 1024.0 * 1024.0 {
        format!("{:.2} GiB", kib / 1024.0 / 1024.0)
    } else if kib >= 1024.0 {
        format!("{:.2} MiB", kib / 1024.0)
    } else {
        format!("{kib:.0} KiB")
    }
}
