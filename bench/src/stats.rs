//! Latency percentiles and the small statistics the report needs.

use std::time::Duration;

/// Sorted latencies of one run, in microseconds.
#[derive(Clone, Debug, Default)]
pub struct Latencies {
    sorted_us: Vec<u32>,
}

impl Latencies {
    /// Takes raw samples in microseconds (any order).
    pub fn from_micros(mut samples: Vec<u32>) -> Latencies {
        samples.sort_unstable();
        Latencies { sorted_us: samples }
    }

    /// Takes raw samples as durations (any order).
    pub fn from_durations(samples: &[Duration]) -> Latencies {
        Latencies::from_micros(
            samples
                .iter()
                .map(|d| u32::try_from(d.as_micros()).unwrap_or(u32::MAX))
                .collect(),
        )
    }

    /// The `p`-th percentile (0..=100) by the nearest-rank method; `None` when empty.
    pub fn percentile(&self, p: f64) -> Option<Duration> {
        let n = self.sorted_us.len();
        if n == 0 {
            return None;
        }
        let rank = ((p / 100.0) * n as f64).ceil() as usize;
        let index = rank.clamp(1, n) - 1;
        self.sorted_us
            .get(index)
            .map(|us| Duration::from_micros(u64::from(*us)))
    }

    /// Median.
    pub fn p50(&self) -> Option<Duration> {
        self.percentile(50.0)
    }

    /// 99th percentile.
    pub fn p99(&self) -> Option<Duration> {
        self.percentile(99.0)
    }
}

/// Milliseconds with sensible precision, or `-` when absent.
pub fn ms(d: Option<Duration>) -> String {
    match d {
        None => "-".into(),
        Some(d) => {
            let ms = d.as_secs_f64() * 1000.0;
            if ms < 10.0 {
                format!("{ms:.2}")
            } else if ms < 100.0 {
                format!("{ms:.1}")
            } else {
                format!("{ms:.0}")
            }
        }
    }
}

/// A rate in thousands with one decimal (`48.5k`), or the plain number under 1000.
pub fn rate(r: f64) -> String {
    if r >= 1000.0 {
        format!("{:.1}k", r / 1000.0)
    } else {
        format!("{r:.0}")
    }
}

/// `a / b` as `1.23x`, or `-` when either is missing or `b` is zero.
pub fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "-".into(),
    }
}

/// Bytes as MB with one decimal.
pub fn mb(bytes: Option<u64>) -> String {
    match bytes {
        None => "-".into(),
        Some(b) => format!("{:.1} MB", b as f64 / 1_000_000.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let l = Latencies::from_micros((1..=100).rev().collect());
        assert_eq!(l.p50(), Some(Duration::from_micros(50)));
        assert_eq!(l.p99(), Some(Duration::from_micros(99)));
        assert_eq!(l.percentile(100.0), Some(Duration::from_micros(100)));
        assert_eq!(Latencies::default().p50(), None);
    }

    #[test]
    fn formats() {
        assert_eq!(rate(48_500.0), "48.5k");
        assert_eq!(ratio(Some(3.0), Some(2.0)), "1.50x");
        assert_eq!(ratio(Some(3.0), Some(0.0)), "-");
        assert_eq!(ms(Some(Duration::from_micros(4400))), "4.40");
    }
}
