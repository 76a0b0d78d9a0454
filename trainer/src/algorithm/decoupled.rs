//! Decoupled sampling (the paper's control with coupled's number of passes, SPEC 5.2):
//! v0 masks the whole completion, v1 and v2 draw independent ratios t1, t2 ~ U(0.2, 0.8)
//! and independent uniforms, so a token can be masked in both, one or neither:
//! `lp_j = ½ (lp(v0)_j + [m1_j] lp(v1)_j / t1 + [m2_j] lp(v2)_j / t2)`. Loss and
//! advantages: the clipped token-level GRPO of SPEC 6.

use serde::{Deserialize, Serialize};
use tch::Tensor;

use super::coupled::{linear_combination, Grpo};
use super::masks::{uniform01, VersionGrid, Versions};
use super::{EstimatorBatch, LossInput, LossMetrics, Method, ObjectiveError};
use crate::advantages::{AdvantageError, Advantages, Baseline};
use crate::config::ConfigError;
use crate::objective::ObjectiveConfig;
use couplet_model::random::stream::{ESTIMATOR_RATIO, ESTIMATOR_UNIFORM};

/// Decoupled's knobs: the objective's only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Decoupled {
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

impl Default for Decoupled {
    /// The DiffuCoder recipe's objective.
    fn default() -> Self {
        Decoupled {
            epsilon_low: 0.5,
            epsilon_high: 0.5,
            beta: 0.01,
            baseline: Baseline::LeaveOneOut,
            scale_rewards: false,
            random_masking: true,
        }
    }
}

impl Decoupled {
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

    /// v0 plus two independent random masks for `row`; returns their ratios.
    fn row(grid: &mut VersionGrid, row: usize, seed: u64, sample: u64) -> Vec<f64> {
        grid.mask_completion(0, row, 0.5);
        let mut drawn = Vec::with_capacity(2);
        for half in 0..2u64 {
            let t = 0.2 + 0.6 * uniform01(seed, ESTIMATOR_RATIO + half, sample, 0);
            drawn.push(t);
            for j in 0..grid.k {
                if uniform01(seed, ESTIMATOR_UNIFORM + half, sample, j as u64) < t {
                    grid.mask_token(1 + half as usize, row, j, 0.5 / t);
                }
            }
        }
        drawn
    }
}

impl Method for Decoupled {
    fn name(&self) -> &'static str {
        "decoupled"
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.grpo().validate()
    }

    fn versions(&self, batch: &EstimatorBatch, seed: u64) -> Versions {
        let mut grid = VersionGrid::new(3, batch);
        let ratios = batch
            .samples
            .iter()
            .enumerate()
            .take(grid.b)
            .map(|(row, &sample)| Self::row(&mut grid, row, seed, sample))
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
        3
    }
}
