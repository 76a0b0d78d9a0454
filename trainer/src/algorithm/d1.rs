//! d1 / diffu-GRPO (SPEC 5.2): one version, the whole completion masked and each real
//! prompt token masked with probability `p_mask_prompt` under the iteration's seed;
//! `lp_j = lp(v)_j`. Loss and advantages: the clipped token-level GRPO of SPEC 6.

use serde::{Deserialize, Serialize};
use tch::Tensor;

use super::coupled::{linear_combination, Grpo};
use super::masks::{uniform01, VersionGrid, Versions};
use super::{invalid, EstimatorBatch, LossInput, LossMetrics, Method, ObjectiveError};
use crate::advantages::{AdvantageError, Advantages, Baseline};
use crate::config::ConfigError;
use crate::objective::ObjectiveConfig;
use couplet_model::random::stream::ESTIMATOR_PROMPT;

/// d1's knobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct D1 {
    /// Probability of masking each real prompt token.
    pub p_mask_prompt: f64,
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

impl Default for D1 {
    /// d1's prompt masking (0.15) with the DiffuCoder recipe's objective.
    fn default() -> Self {
        D1 {
            p_mask_prompt: 0.15,
            epsilon_low: 0.5,
            epsilon_high: 0.5,
            beta: 0.01,
            baseline: Baseline::LeaveOneOut,
            scale_rewards: false,
            random_masking: true,
        }
    }
}

impl D1 {
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
}

impl Method for D1 {
    fn name(&self) -> &'static str {
        "d1"
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if !(0.0..=1.0).contains(&self.p_mask_prompt) {
            return Err(invalid("p_mask_prompt", "must be in [0, 1]"));
        }
        self.grpo().validate()
    }

    fn versions(&self, batch: &EstimatorBatch, seed: u64) -> Versions {
        let mut grid = VersionGrid::new(1, batch);
        for (row, &sample) in batch.samples.iter().enumerate().take(grid.b) {
            grid.mask_completion(0, row, 1.0);
            let draw = |offset| uniform01(seed, ESTIMATOR_PROMPT, sample, offset);
            grid.mask_prompt(0, row, self.p_mask_prompt, draw);
        }
        grid.finish(vec![Vec::new(); batch.samples.len()])
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
        1
    }
}
