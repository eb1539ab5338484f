//! The benchmark gate's statistics: mean, a 95% confidence interval from Student's t, and the
//! decision — swap only when the candidate's interval lies wholly below the incumbent's and the
//! gain reaches the configured minimum.

use serde::Serialize;

/// Two-sided 95% critical values of Student's t for 1..=30 degrees of freedom.
const T95: [f64; 30] = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101,
    2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
];

fn t95(df: usize) -> f64 {
    match df {
        0 => f64::INFINITY,
        1..=30 => T95[df - 1],
        31..=60 => 2.000,
        61..=120 => 1.980,
        _ => 1.960,
    }
}

/// A sample's summary: mean and its 95% confidence interval (same unit as the sample).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    pub n: usize,
    pub mean: f64,
    pub stddev: f64,
    pub ci_low: f64,
    pub ci_high: f64,
}

pub fn summarize(xs: &[f64]) -> Summary {
    let n = xs.len();
    if n == 0 {
        return Summary { n, mean: f64::NAN, stddev: f64::NAN, ci_low: f64::NAN, ci_high: f64::NAN };
    }
    let mean = xs.iter().sum::<f64>() / n as f64;
    let var = if n > 1 { xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64 } else { f64::INFINITY };
    let stddev = var.sqrt();
    let half = t95(n - 1) * stddev / (n as f64).sqrt();
    Summary { n, mean, stddev, ci_low: mean - half, ci_high: mean + half }
}

/// The gate's verdict on timings (lower is better).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    pub incumbent: Summary,
    pub candidate: Summary,
    /// 1 − candidate mean / incumbent mean: 0.25 is 25% less time.
    pub gain: f64,
    pub min_gain: f64,
    pub faster: bool,
    pub reason: String,
}

pub fn compare(incumbent: &[f64], candidate: &[f64], min_gain: f64) -> Comparison {
    let a = summarize(incumbent);
    let b = summarize(candidate);
    let gain = 1.0 - b.mean / a.mean;
    let (faster, reason) = if !(a.mean.is_finite() && b.mean.is_finite()) || a.n < 2 || b.n < 2 {
        (false, "too few timings to decide".to_string())
    } else if b.ci_high >= a.ci_low {
        (
            false,
            format!(
                "not measurably faster: the 95% intervals overlap (candidate {:.2}..{:.2} ms, incumbent {:.2}..{:.2} ms)",
                b.ci_low * 1e3,
                b.ci_high * 1e3,
                a.ci_low * 1e3,
                a.ci_high * 1e3
            ),
        )
    } else if gain < min_gain {
        (false, format!("faster by {:.1}%, less than the {:.1}% required", gain * 100.0, min_gain * 100.0))
    } else {
        (true, format!("faster by {:.1}% ({:.2} ms against {:.2} ms, 95% intervals apart)", gain * 100.0, b.mean * 1e3, a.mean * 1e3))
    };
    Comparison { incumbent: a, candidate: b, gain, min_gain, faster, reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_follow_students_t() {
        let s = summarize(&[1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(s.mean, 3.0);
        assert!((s.stddev - 1.5811).abs() < 1e-3);
        // 2.776 · 1.5811 / √5 = 1.963
        assert!((s.ci_high - 4.963).abs() < 1e-3 && (s.ci_low - 1.037).abs() < 1e-3, "{s:?}");
    }

    #[test]
    fn a_clear_gain_is_faster_and_noise_is_not() {
        let inc = [0.100, 0.102, 0.098, 0.101, 0.099, 0.100];
        let fast = [0.050, 0.051, 0.049, 0.050, 0.052, 0.048];
        let c = compare(&inc, &fast, 0.05);
        assert!(c.faster, "{c:?}");
        assert!((c.gain - 0.5).abs() < 0.01);
        let same = [0.101, 0.099, 0.100, 0.102, 0.098, 0.100];
        let c = compare(&inc, &same, 0.05);
        assert!(!c.faster && c.reason.contains("overlap"), "{c:?}");
    }

    #[test]
    fn a_real_but_small_gain_is_below_the_minimum() {
        let inc = [0.1000, 0.1001, 0.0999, 0.1000, 0.1000, 0.1000];
        let bit = [0.0980, 0.0981, 0.0979, 0.0980, 0.0980, 0.0980];
        let c = compare(&inc, &bit, 0.05);
        assert!(!c.faster && c.reason.contains("less than the 5.0% required"), "{c:?}");
    }

    #[test]
    fn one_timing_decides_nothing() {
        assert!(!compare(&[0.1], &[0.01], 0.05).faster);
        assert!(!compare(&[], &[], 0.05).faster);
    }
}
