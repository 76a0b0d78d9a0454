//! Stability telemetry a user can act on: the share of clipped gradient steps, and two
//! warnings raised once per run — the gradient norm grown ×5 over its first steps (the
//! median of the last 5 steps against that of the first 5, so one spike does not warn: a
//! policy sharpening under a step size it can no longer take), and validation pass@1
//! fallen below the starting evaluation by more than its noise.
//!
//! The noise of a validation change is the standard error of the mean of the per-problem
//! differences (each problem's pass fraction now minus at the start; both evaluations use
//! the same seed, so the same decoding orders): a paired estimate, so that problems every
//! model solves (or none does) add no noise. A drop warns when it exceeds two of them.

use serde::{Deserialize, Serialize};

use super::metrics::StepMetrics;
use crate::eval::EvalReport;

/// Steps whose gradient norms set the baseline of the growth warning, and the recent
/// window compared with it.
pub const BASELINE_STEPS: usize = 5;
/// Growth over the baseline median that warns.
pub const GROWTH_FACTOR: f64 = 5.0;
/// Standard errors a validation drop must exceed to warn.
pub const DROP_STANDARD_ERRORS: f64 = 2.0;

/// The warnings, each raised at most once per run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Warning {
    /// The gradient norm grew ×[`GROWTH_FACTOR`] over its first steps' median.
    GradNormGrowth,
    /// Validation pass@1 fell by more than its noise.
    ValidationDrop,
}

impl Warning {
    /// The TensorBoard tag the warning is marked under.
    pub fn tag(self) -> &'static str {
        match self {
            Warning::GradNormGrowth => "warnings/grad_norm_growth",
            Warning::ValidationDrop => "warnings/validation_drop",
        }
    }
}

/// Share of the steps in `history` (this one included) whose pre-clip gradient norm
/// exceeded `max_grad_norm` (0 when clipping is off).
pub fn clipped_share(history: &[StepMetrics], max_grad_norm: f64) -> f64 {
    if max_grad_norm <= 0.0 || history.is_empty() {
        return 0.0;
    }
    let clipped = history
        .iter()
        .filter(|m| m.grad_norm.is_finite() && m.grad_norm > max_grad_norm)
        .count();
    clipped as f64 / history.len() as f64
}

/// The growth warning at the newest step of `history`, when the median gradient norm of
/// the last [`BASELINE_STEPS`] steps is ×[`GROWTH_FACTOR`] that of the first ones (finite
/// norms only; the windows do not overlap).
pub fn grad_norm_growth(history: &[StepMetrics]) -> Option<String> {
    let norms: Vec<f64> = history
        .iter()
        .map(|m| m.grad_norm)
        .filter(|g| g.is_finite())
        .collect();
    if norms.len() < 2 * BASELINE_STEPS {
        return None;
    }
    let first = median(&norms[..BASELINE_STEPS]);
    let recent = median(&norms[norms.len() - BASELINE_STEPS..]);
    (first > 0.0 && recent > GROWTH_FACTOR * first).then(|| {
        format!(
            "gradient norm: median {recent:.3} over the last {BASELINE_STEPS} steps (to step {}) is {:.1}× the median {first:.3} of the first {BASELINE_STEPS}: \
             the policy is sharpening faster than the step size allows; consider a lower \
             optimizer.lr, a decaying schedule.kind, or a trust region (schedule.num_iterations > 1, algorithm.beta > 0)",
            history.len(),
            recent / first
        )
    })
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

/// Per problem: the pass fraction of an evaluation, by problem id.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PassFractions(pub Vec<(String, f64)>);

impl PassFractions {
    /// The fractions of `report`.
    pub fn of(report: &EvalReport) -> Self {
        PassFractions(
            report
                .problems
                .iter()
                .map(|p| (p.id.clone(), p.correct as f64 / p.samples.max(1) as f64))
                .collect(),
        )
    }
}

/// A validation change against the starting evaluation, with its paired noise.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ValidationChange {
    /// Mean pass fraction now minus at the start, over the problems both evaluated.
    pub change: f64,
    /// Standard error of that mean.
    pub standard_error: f64,
    /// Problems compared.
    pub problems: usize,
}

impl ValidationChange {
    /// The paired change from `start` to `now` (`None` when no problem is shared).
    pub fn between(start: &PassFractions, now: &PassFractions) -> Option<Self> {
        let before: std::collections::HashMap<&str, f64> =
            start.0.iter().map(|(id, f)| (id.as_str(), *f)).collect();
        let d: Vec<f64> = now
            .0
            .iter()
            .filter_map(|(id, f)| before.get(id.as_str()).map(|b| f - b))
            .collect();
        let n = d.len();
        if n == 0 {
            return None;
        }
        let mean = d.iter().sum::<f64>() / n as f64;
        let var = if n > 1 {
            d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64
        } else {
            0.0
        };
        Some(ValidationChange {
            change: mean,
            standard_error: (var / n as f64).sqrt(),
            problems: n,
        })
    }

    /// The warning when the drop exceeds [`DROP_STANDARD_ERRORS`] standard errors.
    pub fn warning(&self, step: u64) -> Option<String> {
        let noise = DROP_STANDARD_ERRORS * self.standard_error;
        (self.change < 0.0 && -self.change > noise).then(|| {
            format!(
                "validation pass@1 at step {step} is {:.1} points below the start ({} problems; noise ±{:.1} points = {DROP_STANDARD_ERRORS} paired standard errors): \
                 the policy is getting worse; consider a lower optimizer.lr or a trust region (schedule.num_iterations > 1, algorithm.beta > 0)",
                -100.0 * self.change,
                self.problems,
                100.0 * noise
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steps(norms: &[f64]) -> Vec<StepMetrics> {
        norms
            .iter()
            .map(|&g| StepMetrics {
                grad_norm: g,
                ..StepMetrics::default()
            })
            .collect()
    }

    #[test]
    fn clipped_share_counts_steps_above_the_limit() {
        let h = steps(&[0.5, 1.5, f64::NAN, 2.0]);
        assert_eq!(clipped_share(&h, 1.0), 0.5);
        assert_eq!(clipped_share(&h, 0.0), 0.0);
    }

    #[test]
    fn growth_warns_when_the_recent_median_passes_five_times_the_first() {
        // First median (0.4, 0.5, 0.3, 0.6, 0.5) is 0.5; one spike of 9 does not warn.
        let first = [0.4, 0.5, 0.3, 0.6, 0.5];
        let mut h = steps(&[&first[..], &[0.5, 9.0, 0.6, 0.5, 0.4]].concat());
        assert!(grad_norm_growth(&h).is_none());
        // Last five 2.4, 2.6, 2.5, 3.0, 2.7: median 2.6 > 2.5 = 5 × 0.5.
        h = steps(&[&first[..], &[2.4, 2.6, 2.5, 3.0, 2.7]].concat());
        let w = grad_norm_growth(&h).expect("2.6 > 5 × 0.5");
        assert!(w.contains("to step 10") && w.contains("5.2×"), "{w}");
        // A median of 2.4 stays under.
        h = steps(&[&first[..], &[2.4, 2.4, 2.4, 3.0, 2.7]].concat());
        assert!(grad_norm_growth(&h).is_none());
        // Too few steps for two windows: no verdict; NaN steps do not count.
        assert!(grad_norm_growth(&steps(&[0.1, 9.0, 9.0])).is_none());
        let nan = steps(&[&first[..], &[f64::NAN, 2.6, 2.6, 2.6, 2.6]].concat());
        assert!(grad_norm_growth(&nan).is_none());
    }

    #[test]
    fn a_paired_drop_warns_only_beyond_its_noise() {
        let fractions = |v: &[f64]| {
            PassFractions(
                v.iter()
                    .enumerate()
                    .map(|(i, f)| (format!("p{i}"), *f))
                    .collect(),
            )
        };
        let start = fractions(&[1.0; 100]);
        // 10 of 100 problems lost: change −0.1, sd of d = sqrt(0.1·0.9·100/99), se ≈ 0.0302.
        let mut lost = vec![1.0; 100];
        lost[..10].fill(0.0);
        let c = ValidationChange::between(&start, &fractions(&lost)).unwrap();
        assert!((c.change + 0.1).abs() < 1e-12);
        let se = (0.1f64 * 0.9 * 100.0 / 99.0 / 100.0).sqrt();
        assert!((c.standard_error - se).abs() < 1e-12);
        assert!(c.warning(30).is_some());
        // One of 100 lost: −0.01 against 2 · 0.01 noise: silent.
        let mut one = vec![1.0; 100];
        one[0] = 0.0;
        let c = ValidationChange::between(&start, &fractions(&one)).unwrap();
        assert!(c.warning(30).is_none());
        // Gains never warn.
        let c = ValidationChange::between(&fractions(&lost), &start).unwrap();
        assert!(c.change > 0.0 && c.warning(30).is_none());
    }
}
