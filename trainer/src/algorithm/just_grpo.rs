//! JustGRPO (LeapLabTHU/JustGRPO, `grpo.py`, `utils/generate.py`, `train.py`;
//! ALGORITHMS.md §5): plain GRPO on the exact autoregressive likelihood of a masked model.
//!
//! Rollouts are strictly left to right (the block decoder with `block_length = 1` and
//! `steps = K` at temperature 1, no key/value cache: one token per step, sampled exactly
//! by the float64 Gumbel-max draw from the full forward); [`Method::check_config`]
//! requires that mode and
//! [`Method::rollout_overrides`] sets it. Estimate: for t = 0..K−1 the version
//! `[prompt, y_<t, MASK^{K−t}]` reads token t, so `lp_t` is exactly the sampler's
//! probability — K full-length versions per sample, every position scored (post-end-of-
//! text ones too). Loss: token-level PPO clip, `ρ_t = exp(lp_t − lp_old,t)`,
//! `L = Σ_i Σ_{t<K} −min(ρA_i, clip(ρ)A_i) / (K · (V + 10⁻⁵))` with V the step's samples whose
//! advantage is non-zero (the authors' mean over ranks of the per-rank count, with
//! gradients averaged over ranks: the same). Advantages: `(r − mean)/(std + 1e-4)`,
//! unbiased std. No reference. One backward per position, as released
//! (`versions_per_backward`): the same gradient at one position's activation memory. For Dream (shifted) models the scored
//! row is P + t − 1 (the authors' code is LLaDA-only: unverified there).

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::masks::{VersionGrid, Versions};
use super::{invalid, EstimatorBatch, LossInput, LossMetrics, Method, ObjectiveError};
use crate::advantages::{AdvantageError, Advantages, Baseline};
use crate::config::ConfigError;
use couplet_rollout::{CacheMode, DecoderKind};

/// JustGRPO's knobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JustGrpo {
    /// Lower clip of the token ratio.
    pub epsilon_low: f64,
    /// Upper clip of the token ratio.
    pub epsilon_high: f64,
    /// Positions per backward (the released schedule: 1, so activation memory does not
    /// grow with K; 0: all K at once).
    pub versions_per_backward: usize,
}

impl Default for JustGrpo {
    /// The released clip (0.8, 1.2).
    fn default() -> Self {
        JustGrpo {
            epsilon_low: 0.2,
            epsilon_high: 0.2,
            versions_per_backward: 1,
        }
    }
}

impl Method for JustGrpo {
    fn name(&self) -> &'static str {
        "just_grpo"
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if !(0.0..1.0).contains(&self.epsilon_low) || self.epsilon_high < 0.0 {
            return Err(invalid(
                "epsilon_low",
                "ε_low must be in [0, 1), ε_high ≥ 0",
            ));
        }
        Ok(())
    }

    fn check_config(&self, config: &crate::TrainConfig) -> Result<(), ConfigError> {
        let r = &config.rollout;
        let strict = r.decoder == DecoderKind::Block
            && r.block_length == Some(1)
            && r.steps == r.max_new_tokens
            && r.temperature == 1.0
            && r.cache == CacheMode::None;
        if !strict {
            return Err(crate::config::invalid(
                "rollout.decoder",
                format!(
                    "just_grpo scores the exact left-to-right likelihood, so rollouts must be strictly left to right at temperature 1 without a cache: set {}",
                    self.rollout_overrides(r.max_new_tokens.max(0) as usize).join(", ")
                ),
            ));
        }
        Ok(())
    }

    fn rollout_overrides(&self, k: usize) -> Vec<String> {
        vec![
            "rollout.decoder=\"block\"".into(),
            "rollout.block_length=1".into(),
            format!("rollout.steps={k}"),
            "rollout.temperature=1.0".into(),
            // A key/value cache approximates the logits the sampler draws from.
            "rollout.cache=\"none\"".into(),
        ]
    }

    fn versions(&self, batch: &EstimatorBatch, _seed: u64) -> Versions {
        let (_, _, k) = batch.shape();
        let mut grid = VersionGrid::new(k, batch);
        for row in 0..grid.b {
            for t in 0..k {
                for j in t..k {
                    if j == t {
                        grid.mask_token(t, row, j, 1.0);
                    } else {
                        grid.mask(t, row, grid.p + j);
                    }
                }
            }
        }
        grid.finish(vec![Vec::new(); batch.samples.len()])
    }

    fn combine(&self, versions: &Versions, lp: &Tensor) -> Tensor {
        // Version t reads token t only: [V, B, K] → [B, V], column t = lp_t.
        let weights = versions.weights.to_device(lp.device()).to_kind(Kind::Float);
        (lp * weights)
            .sum_dim_intlist(2, false, Kind::Float)
            .transpose(0, 1)
    }

    fn loss(&self, input: &LossInput) -> Result<(Tensor, LossMetrics), ObjectiveError> {
        let lp = input.scores.to_kind(Kind::Float);
        // All K positions, also when this call sees a chunk of them.
        let k = input.columns.max(1) as f64;
        let old = input
            .old
            .map_or_else(|| lp.detach(), |o| o.to_kind(Kind::Float));
        let adv = input.advantages.to_kind(Kind::Float).unsqueeze(1);
        let ratio = (&lp - &old).exp();
        let clipped = ratio.clamp(1.0 - self.epsilon_low, 1.0 + self.epsilon_high);
        let per_token = -(&ratio * &adv).minimum(&(&clipped * &adv));
        // The released scale: 1 / (K · (V + 1e-5)).
        let loss = per_token.sum(Kind::Float) / (k * (input.step_units + 1e-5));
        let metrics = tch::no_grad(|| {
            let adv_b = adv.expand_as(&ratio);
            let share = |t: Tensor| t.to_kind(Kind::Float).mean(Kind::Float).double_value(&[]);
            let low = share(ratio.lt(1.0 - self.epsilon_low).logical_and(&adv_b.lt(0.0)));
            let high = share(
                ratio
                    .gt(1.0 + self.epsilon_high)
                    .logical_and(&adv_b.gt(0.0)),
            );
            LossMetrics {
                loss: loss.double_value(&[]),
                clip_low: low,
                clip_high: high,
                clip_region: low + high,
                mean_estimate: lp.mean(Kind::Float).double_value(&[]),
                tokens: input
                    .completion_mask
                    .to_kind(Kind::Float)
                    .sum(Kind::Float)
                    .double_value(&[]),
                ..Default::default()
            }
        });
        Ok((loss, metrics))
    }

    fn advantages(&self, rewards: &[f64], g: usize) -> Result<Advantages, AdvantageError> {
        crate::advantages::compute_advantages(rewards, g, Baseline::GroupMean, true)
    }

    /// Samples with a non-zero advantage.
    fn units(&self, _batch: &EstimatorBatch, coefficients: &Tensor) -> f64 {
        coefficients.ne(0.0).sum(Kind::Float).double_value(&[])
    }

    fn versions_per_sample(&self, completion: usize, _steps: usize) -> usize {
        completion
    }

    fn versions_per_backward(&self) -> Option<usize> {
        (self.versions_per_backward > 0).then_some(self.versions_per_backward)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_t_sees_the_prefix_and_reads_token_t() {
        let seqs = Tensor::zeros([1, 5], (Kind::Int64, tch::Device::Cpu));
        let pmask = Tensor::ones([1, 2], (Kind::Int64, tch::Device::Cpu));
        let v = JustGrpo::default().versions(&EstimatorBatch::new(&seqs, &pmask, &[0]), 1);
        let masked = Vec::<Vec<Vec<bool>>>::try_from(&v.masked).unwrap();
        let read = Vec::<Vec<Vec<bool>>>::try_from(&v.read).unwrap();
        assert_eq!(masked[0][0], [false, false, true, true, true]);
        assert_eq!(masked[1][0], [false, false, false, true, true]);
        assert_eq!(masked[2][0], [false, false, false, false, true]);
        assert_eq!(read[1][0], [false, true, false]);
    }

    #[test]
    fn loss_by_hand_divides_by_k_and_the_active_samples() {
        // Two samples, K = 2; sample 1 has A = 0 (not counted in V = 1). Sample 0: A = 2,
        // ratios e^0.1 (inside 1.2) and e^0.5 (clipped at 1.2): −(2e^0.1 + 2·1.2) / (2·1).
        let lp = Tensor::from_slice2(&[[0.1f32, 0.5], [0.3, -0.3]]);
        let old = Tensor::zeros([2, 2], (Kind::Float, tch::Device::Cpu));
        let adv = Tensor::from_slice(&[2.0f32, 0.0]);
        let mask = Tensor::ones([2, 2], (Kind::Int64, tch::Device::Cpu));
        let seqs = Tensor::zeros([2, 4], (Kind::Int64, tch::Device::Cpu));
        let pmask = Tensor::ones([2, 2], (Kind::Int64, tch::Device::Cpu));
        let method = JustGrpo::default();
        let units = method.units(&EstimatorBatch::new(&seqs, &pmask, &[0, 1]), &adv);
        assert_eq!(units, 1.0);
        let (loss, _) = method
            .loss(&LossInput {
                scores: &lp,
                old: Some(&old),
                reference: None,
                advantages: &adv,
                completion_mask: &mask,
                step_tokens: 4.0,
                step_sequences: 2.0,
                step_units: units,
                columns: 2,
                versions: &Versions::none(),
            })
            .unwrap();
        let want = -(2.0 * 0.1f64.exp() + 2.0 * 1.2) / (2.0 * (1.0 + 1e-5));
        assert!(
            (loss.double_value(&[]) - want).abs() < 1e-6,
            "{loss} vs {want}"
        );
    }
}
