//! coupled-GRPO (DiffuCoder, arXiv 2506.20639; SPEC sections 5.1 and 6).
//!
//! Estimate: v0 masks the whole completion; each of λ pairs draws `t ~ U(0.2, 0.8)` and
//! masks the completion tokens with `u < t` in one version and the complement in the
//! other, so every token is scored once partially masked:
//! `lp_j = (lp(v0)_j + Σ_i [j ∈ M_i] lp(v1_i)_j / t_i + [j ∉ M_i] lp(v2_i)_j / (1 − t_i)) / (λ + 1)`
//! (without v0: divided by λ). Unlike the reference, t is drawn per sample.
//! Loss: token-level clipped GRPO with the k3 KL (SPEC 6). Advantages: leave-one-out by
//! default.

use serde::{Deserialize, Serialize};
use tch::Tensor;

use super::masks::{uniform01, VersionGrid, Versions};
use super::{invalid, EstimatorBatch, LossInput, LossMetrics, Method, ObjectiveError};
use crate::advantages::{AdvantageError, Advantages, Baseline};
use crate::config::ConfigError;
use crate::objective::{grpo_loss, ObjectiveConfig};
use couplet_model::random::stream::{ESTIMATOR_RATIO, ESTIMATOR_UNIFORM};

/// coupled-GRPO's knobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Coupled {
    /// λ: complementary pairs per sample (each costs two forward passes).
    pub pairs: usize,
    /// Also score the fully masked version v0.
    pub include_full_mask: bool,
    /// ε_low: ratios below 1 − ε_low are clipped (for A < 0).
    pub epsilon_low: f64,
    /// ε_high: ratios above 1 + ε_high are clipped (for A > 0).
    pub epsilon_high: f64,
    /// KL weight (k3 to the reference); 0 holds no reference for the loss.
    pub beta: f64,
    /// leave_one_out or group_mean.
    pub baseline: Baseline,
    /// Divide advantages by the group std (+ 1e-4).
    pub scale_rewards: bool,
    /// Draw new masks each iteration (false: the fixed seed 42 every iteration).
    pub random_masking: bool,
}

impl Default for Coupled {
    /// The DiffuCoder recipe: λ = 1 with v0, ε = 0.5 on both sides, β = 0.01.
    fn default() -> Self {
        Coupled {
            pairs: 1,
            include_full_mask: true,
            epsilon_low: 0.5,
            epsilon_high: 0.5,
            beta: 0.01,
            baseline: Baseline::LeaveOneOut,
            scale_rewards: false,
            random_masking: true,
        }
    }
}

/// The clipped token-level GRPO settings shared by coupled, d1, full-mask and decoupled.
pub(super) struct Grpo {
    pub objective: ObjectiveConfig,
    pub baseline: Baseline,
    pub scale_rewards: bool,
}

impl Grpo {
    /// ε and β ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let o = &self.objective;
        if o.beta < 0.0 || !o.beta.is_finite() {
            return Err(invalid("beta", "must be ≥ 0"));
        }
        if o.epsilon_low < 0.0 || o.epsilon_low >= 1.0 {
            return Err(invalid("epsilon_low", "must be in [0, 1)"));
        }
        if o.epsilon_high < 0.0 {
            return Err(invalid("epsilon_high", "must be ≥ 0"));
        }
        Ok(())
    }

    /// SPEC 6 over the micro-batch, normalised by the step's completion tokens.
    pub fn loss(&self, input: &LossInput) -> Result<(Tensor, LossMetrics), ObjectiveError> {
        grpo_loss(
            input.scores,
            input.old,
            input.reference,
            input.advantages,
            input.completion_mask,
            &self.objective,
            Some(input.step_tokens),
        )
    }

    /// SPEC 4.
    pub fn advantages(&self, rewards: &[f64], g: usize) -> Result<Advantages, AdvantageError> {
        crate::advantages::compute_advantages(rewards, g, self.baseline, self.scale_rewards)
    }
}

/// The per-token linear estimate `Σ_v weight · lp(v)`, `[B, K]`.
pub(super) fn linear_combination(versions: &Versions, lp: &Tensor) -> Tensor {
    let weights = versions
        .weights
        .to_device(lp.device())
        .to_kind(tch::Kind::Float);
    (lp * weights).sum_dim_intlist(0, false, tch::Kind::Float)
}

impl Coupled {
    fn grpo(&self) -> Grpo {
        Grpo {
            objective: ObjectiveConfig {
                epsilon_low: self.epsilon_low,
                epsilon_high: self.epsilon_high,
                beta: self.beta,
            },
            baseline: self.baseline,
            scale_rewards: self.scale_rewards,
        }
    }

    /// (v0 and) λ complementary pairs for `row`; returns the ratios drawn.
    fn row(&self, grid: &mut VersionGrid, row: usize, seed: u64, sample: u64) -> Vec<f64> {
        let full = self.include_full_mask;
        let denom = (self.pairs + usize::from(full)) as f64;
        let mut v = 0;
        if full {
            grid.mask_completion(0, row, 1.0 / denom);
            v = 1;
        }
        let mut drawn = Vec::with_capacity(self.pairs);
        for pair in 0..self.pairs as u64 {
            let t = 0.2 + 0.6 * uniform01(seed, ESTIMATOR_RATIO + 2 * pair, sample, 0);
            drawn.push(t);
            for j in 0..grid.k {
                let u = uniform01(seed, ESTIMATOR_UNIFORM + 2 * pair, sample, j as u64);
                let (version, w) = if u < t {
                    (v, 1.0 / t)
                } else {
                    (v + 1, 1.0 / (1.0 - t))
                };
                grid.mask_token(version, row, j, w / denom);
            }
            v += 2;
        }
        drawn
    }
}

impl Method for Coupled {
    fn name(&self) -> &'static str {
        "coupled"
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.pairs == 0 {
            return Err(invalid("pairs", "must be at least 1"));
        }
        self.grpo().validate()
    }

    fn versions(&self, batch: &EstimatorBatch, seed: u64) -> Versions {
        let mut grid = VersionGrid::new(self.versions_per_sample(0, 0), batch);
        let ratios = batch
            .samples
            .iter()
            .enumerate()
            .take(grid.b)
            .map(|(row, &sample)| self.row(&mut grid, row, seed, sample))
            .collect();
        grid.finish(ratios)
    }

    fn combine(&self, versions: &Versions, lp: &Tensor) -> Tensor {
        linear_combination(versions, lp)
    }

    fn loss(&self, input: &LossInput) -> Result<(Tensor, LossMetrics), ObjectiveError> {
        self.grpo().loss(input)
    }

    fn advantages(&self, rewards: &[f64], g: usize) -> Result<Advantages, AdvantageError> {
        self.grpo().advantages(rewards, g)
    }

    fn beta(&self) -> f64 {
        self.beta
    }

    fn random_masking(&self) -> bool {
        self.random_masking
    }

    fn versions_per_sample(&self, _completion: usize, _steps: usize) -> usize {
        2 * self.pairs + usize::from(self.include_full_mask)
    }
}
