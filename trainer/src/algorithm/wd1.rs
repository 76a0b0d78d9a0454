//! wd1 (xiaohangt/wd1, `wd1/trainers/rev_grpo_trainer.py`, `trainer_type = wll_d1_neg`;
//! ALGORITHMS.md §3): weighted likelihood, no ratio.
//!
//! Estimate: d1's one step — the whole completion masked, each real prompt token masked
//! with probability `p_mask_prompt` under the iteration's seed — summed over the
//! completion without length normalisation: `ℓ̂_i = Σ_j c_j lp_j`.
//! Loss: `w⁺ = softmax(A)`, `w⁻ = softmax(−A)` over each prompt's group (the authors take
//! them over the per-device micro-batch, which is one group with their batch of G = 6),
//! `L = −Σ_i (w⁺_i − w⁻_i) ℓ̂_i` per group, averaged over the step's groups (the authors
//! average micro-batches: the same with one group per micro-batch). `positive_only` drops
//! the w⁻ term (`wll_d1_pos_only`). Advantages: `A = r − mean(r)` over the group. No old
//! policy, no reference; rollouts reused over μ iterations draw new prompt masks.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::coupled::linear_combination;
use super::espo::sequence_kl;
use super::masks::{uniform01, VersionGrid, Versions};
use super::{invalid, EstimatorBatch, LossInput, LossMetrics, Method, ObjectiveError};
use crate::advantages::{AdvantageError, Advantages, Baseline};
use crate::config::ConfigError;
use couplet_model::random::stream::ESTIMATOR_PROMPT;

/// wd1's knobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Wd1 {
    /// Probability of masking each real prompt token.
    pub p_mask_prompt: f64,
    /// Keep only the positive weights w⁺ (`wll_d1_pos_only`).
    pub positive_only: bool,
}

impl Default for Wd1 {
    /// The authors' recipe: d1's prompt masking 0.15, both weights.
    fn default() -> Self {
        Wd1 {
            p_mask_prompt: 0.15,
            positive_only: false,
        }
    }
}

/// `softmax(x)` of a group.
fn softmax(x: &[f64]) -> Vec<f64> {
    let max = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = x.iter().map(|v| (v - max).exp()).collect();
    let sum: f64 = e.iter().sum();
    e.iter().map(|v| v / sum).collect()
}

impl Method for Wd1 {
    fn name(&self) -> &'static str {
        "wd1"
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if !(0.0..=1.0).contains(&self.p_mask_prompt) {
            return Err(invalid("p_mask_prompt", "must be in [0, 1]"));
        }
        Ok(())
    }

    fn versions(&self, batch: &EstimatorBatch, seed: u64) -> Versions {
        let mut grid = VersionGrid::new(1, batch);
        let completion = batch.completion_rows();
        for (row, &sample) in batch.samples.iter().enumerate().take(grid.b) {
            for (j, &c) in completion[row].iter().enumerate() {
                // Post-end-of-text tokens are masked (the model sees [MASK]) but not summed.
                if c == 1 {
                    grid.mask_token(0, row, j, 1.0);
                } else {
                    grid.mask(0, row, grid.p + j);
                }
            }
            let draw = |offset| uniform01(seed, ESTIMATOR_PROMPT, sample, offset);
            grid.mask_prompt(0, row, self.p_mask_prompt, draw);
        }
        grid.finish(vec![Vec::new(); batch.samples.len()])
    }

    fn combine(&self, versions: &Versions, lp: &Tensor) -> Tensor {
        linear_combination(versions, lp).sum_dim_intlist(1, false, Kind::Float) // [B]
    }

    fn loss(&self, input: &LossInput) -> Result<(Tensor, LossMetrics), ObjectiveError> {
        let s = input.scores.to_kind(Kind::Float);
        let coef = input.advantages.to_kind(Kind::Float);
        let loss = -(&coef * &s).sum(Kind::Float) / input.step_sequences.max(1.0);
        let k = input.completion_mask.size()[1] as f64;
        let (kl, kl_k2) = sequence_kl(&s, input.reference, k);
        let metrics = LossMetrics {
            loss: loss.double_value(&[]),
            kl,
            kl_k2,
            mean_estimate: tch::no_grad(|| s.mean(Kind::Float)).double_value(&[]),
            tokens: input
                .completion_mask
                .to_kind(Kind::Float)
                .sum(Kind::Float)
                .double_value(&[]),
            ..Default::default()
        };
        Ok((loss, metrics))
    }

    fn advantages(&self, rewards: &[f64], g: usize) -> Result<Advantages, AdvantageError> {
        crate::advantages::compute_advantages(rewards, g, Baseline::GroupMean, false)
    }

    /// `G · (w⁺ − w⁻)` per group: the loss divides the step's sum by its N = groups · G
    /// sequences, which makes it the mean over groups of each group's weighted sum.
    fn coefficients(&self, advantages: &Advantages, g: usize) -> Vec<f64> {
        let mut out = Vec::with_capacity(advantages.values.len());
        for group in advantages.values.chunks(g.max(1)) {
            let plus = softmax(group);
            let negated: Vec<f64> = group.iter().map(|a| -a).collect();
            let minus = softmax(&negated);
            for (p, m) in plus.iter().zip(&minus) {
                let w = if self.positive_only { *p } else { p - m };
                out.push(w * group.len() as f64);
            }
        }
        out
    }

    fn uses_old(&self, _mu: usize) -> bool {
        false
    }

    fn versions_per_sample(&self, _completion: usize, _steps: usize) -> usize {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_and_loss_by_hand() {
        // Group [1, −1]: w⁺ = softmax([1, −1]) = [σ(2), σ(−2)], w⁻ the reverse; the
        // coefficients are G (w⁺ − w⁻) = 2 (σ(2) − σ(−2)) · [1, −1].
        let adv = Advantages {
            values: vec![1.0, -1.0],
            zero_std_ratio: 0.0,
            group_std: vec![1.0],
        };
        let sigma = |x: f64| 1.0 / (1.0 + (-x).exp());
        let d = sigma(2.0) - sigma(-2.0);
        let c = Wd1::default().coefficients(&adv, 2);
        assert!((c[0] - 2.0 * d).abs() < 1e-12 && (c[1] + 2.0 * d).abs() < 1e-12);
        let positive = Wd1 {
            positive_only: true,
            ..Wd1::default()
        };
        let p = positive.coefficients(&adv, 2);
        assert!((p[0] - 2.0 * sigma(2.0)).abs() < 1e-12);
        // L = −Σ c ℓ̂ / N: ℓ̂ = [−2, −6] → −(2d·−2 − 2d·−6)/2 = −4d.
        let s = Tensor::from_slice(&[-2.0f32, -6.0]);
        let coef = Tensor::from_slice(&[c[0] as f32, c[1] as f32]);
        let mask = Tensor::ones([2, 3], (Kind::Int64, tch::Device::Cpu));
        let (loss, _) = Wd1::default()
            .loss(&LossInput {
                scores: &s,
                old: None,
                reference: None,
                advantages: &coef,
                completion_mask: &mask,
                step_tokens: 6.0,
                step_sequences: 2.0,
                step_units: 2.0,
                columns: 1,
                versions: &Versions::none(),
            })
            .unwrap();
        assert!((loss.double_value(&[]) + 4.0 * d).abs() < 1e-5, "{loss}");
    }
}
