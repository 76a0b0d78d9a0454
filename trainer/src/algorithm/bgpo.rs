//! BGPO (THU-KEG/BGPO, as ported in DARE: `verl/trainer/ppo/dllm_core_algos.py`,
//! `llada_dp_actor_bgpo.py`; ALGORITHMS.md §4): VRPO's stratified-timestep estimator with a
//! linear lower bound of the ratio for positive advantages.
//!
//! Estimate: n = `mc_num` Monte-Carlo versions per sample, one mask each, with timesteps
//! stratified across the copies of one sequence: k ~ U{1..T} (T = the sample's completion
//! tokens up to and including the end token), `x_r = ((round(k + rT/n) − 1) mod T) + 1`,
//! x_r of the T positions masked at random, `l_r = (T / x_r) Σ_{j∈M_r} lp_j / K` (K the
//! padded completion length). Old, reference and policy passes share the masks (they are
//! keyed by seed and sample). Scores are `[B, n]`.
//! Loss, per Monte-Carlo sample r: `Δ = l_r − l_old,r`; `ρ = 1 + Δ` when A > 0 (the linear
//! lower bound), else `exp(Δ)`; PPO clip at 1 ± ε and, for A < 0, dual clip at c:
//! `max(−Aρ, −A clip(ρ))`, then `min(·, −A c)` when A < 0; a token mean over the
//! completion (each sample weighted by its length) over the step, divided by n.
//! Advantages: `(r − mean) / (std + 1e-6)` (unbiased std) over the group.
//!
//! Difference from the authors' code, by default: they compute `ρ = exp(log(1 + Δ))`,
//! which is NaN once Δ ≤ −1; Couplet computes `1 + Δ` directly (the same value and
//! gradient wherever theirs is finite). `nan_below_minus_one = true` reproduces theirs.
//! Their one backward per Monte-Carlo sample is kept (`versions_per_backward = 1`): the
//! loss is a sum over r, so it is the same gradient at one sample's activation memory.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::espo::sequence_kl;
use super::masks::{random_subset, round_half_even, uniform01, VersionGrid, Versions};
use super::{invalid, EstimatorBatch, LossInput, LossMetrics, Method, ObjectiveError};
use crate::advantages::{AdvantageError, Advantages, Baseline};
use crate::config::ConfigError;
use couplet_model::random::stream::{BGPO_OFFSET, BGPO_ORDER};

/// BGPO's knobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Bgpo {
    /// n: Monte-Carlo masks per sample (one timestep each).
    pub mc_num: usize,
    /// Lower clip of the ratio.
    pub epsilon_low: f64,
    /// Upper clip of the ratio.
    pub epsilon_high: f64,
    /// Dual-clip bound c (> 1) for negative advantages.
    pub dual_clip: f64,
    /// The authors' `exp(log(1 + Δ))`: NaN for Δ ≤ −1.
    pub nan_below_minus_one: bool,
    /// Monte-Carlo samples per backward (the released schedule: 1, so activation memory
    /// does not grow with `mc_num`; 0: all at once).
    pub versions_per_backward: usize,
}

impl Default for Bgpo {
    /// DARE's BGPO recipe: n = 16, ε = 0.2, c = 3.
    fn default() -> Self {
        Bgpo {
            mc_num: 16,
            epsilon_low: 0.2,
            epsilon_high: 0.2,
            dual_clip: 3.0,
            nan_below_minus_one: false,
            versions_per_backward: 1,
        }
    }
}

impl Method for Bgpo {
    fn name(&self) -> &'static str {
        "bgpo"
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.mc_num == 0 {
            return Err(invalid("mc_num", "must be at least 1"));
        }
        if !(0.0..1.0).contains(&self.epsilon_low) || self.epsilon_high < 0.0 {
            return Err(invalid(
                "epsilon_low",
                "ε_low must be in [0, 1), ε_high ≥ 0",
            ));
        }
        if self.dual_clip <= 1.0 {
            return Err(invalid("dual_clip", "must be greater than 1"));
        }
        Ok(())
    }

    fn versions(&self, batch: &EstimatorBatch, seed: u64) -> Versions {
        let n = self.mc_num;
        let mut grid = VersionGrid::new(n, batch);
        let k = grid.k;
        let completion = batch.completion_rows();
        let mut ratios = Vec::with_capacity(grid.b);
        for (row, &sample) in batch.samples.iter().enumerate().take(grid.b) {
            let valid: Vec<usize> = (0..k).filter(|&j| completion[row][j] == 1).collect();
            let t = valid.len();
            let mut drawn = Vec::with_capacity(n);
            if t == 0 {
                ratios.push(drawn);
                continue;
            }
            let offset = 1 + (uniform01(seed, BGPO_OFFSET, sample, 0) * t as f64) as usize;
            for r in 0..n {
                let stratified = round_half_even(offset as f64 + (r * t) as f64 / n as f64);
                let x = ((stratified as usize - 1) % t) + 1;
                let draw = |j| uniform01(seed, BGPO_ORDER + r as u64, sample, j);
                let p = x as f64 / t as f64;
                for j in random_subset(x, &valid, draw) {
                    grid.mask_token(r, row, j, 1.0 / (p * k as f64));
                }
                drawn.push(p);
            }
            ratios.push(drawn);
        }
        grid.finish(ratios)
    }

    fn combine(&self, versions: &Versions, lp: &Tensor) -> Tensor {
        // Σ_j per version: [V, B] → [B, n].
        let weighted = lp * versions.weights.to_device(lp.device()).to_kind(Kind::Float);
        weighted
            .sum_dim_intlist(2, false, Kind::Float)
            .transpose(0, 1)
    }

    fn loss(&self, input: &LossInput) -> Result<(Tensor, LossMetrics), ObjectiveError> {
        let l = input.scores.to_kind(Kind::Float); // [B, n]
        let old = input
            .old
            .map_or_else(|| l.detach(), |o| o.to_kind(Kind::Float));
        let adv = input.advantages.to_kind(Kind::Float).unsqueeze(1); // [B, 1]
        let delta = &l - &old;
        let linear = if self.nan_below_minus_one {
            (&delta + 1.0).log().exp()
        } else {
            &delta + 1.0
        };
        let ratio = linear.where_self(&adv.gt(0.0), &delta.exp());
        let clipped = ratio.clamp(1.0 - self.epsilon_low, 1.0 + self.epsilon_high);
        let pg1 = -(&adv * &ratio);
        let pg2 = -(&adv * &clipped);
        let clip1 = pg1.maximum(&pg2);
        let clip2 = clip1.minimum(&(-(&adv * self.dual_clip)));
        let pg = clip2.where_self(&adv.lt(0.0), &clip1); // [B, n]
        let lengths =
            input
                .completion_mask
                .to_kind(Kind::Float)
                .sum_dim_intlist(1, true, Kind::Float);
        // All n Monte-Carlo samples, also when this call sees a chunk of them.
        let n = input.columns.max(1) as f64;
        let loss = (&pg * &lengths).sum(Kind::Float) / (input.step_tokens.max(1.0) * n);
        let k = input.completion_mask.size()[1] as f64;
        let per_sample = l.mean_dim(1, false, Kind::Float);
        let reference = input
            .reference
            .map(|r| r.to_kind(Kind::Float).mean_dim(1, false, Kind::Float));
        let (kl, kl_k2) = sequence_kl(&(&per_sample * k), reference.map(|r| r * k).as_ref(), k);
        let metrics = tch::no_grad(|| {
            let share = |t: Tensor| t.to_kind(Kind::Float).mean(Kind::Float).double_value(&[]);
            let adv_b = adv.expand_as(&ratio);
            let low = share(ratio.lt(1.0 - self.epsilon_low).logical_and(&adv_b.lt(0.0)));
            let high = share(
                ratio
                    .gt(1.0 + self.epsilon_high)
                    .logical_and(&adv_b.gt(0.0)),
            );
            LossMetrics {
                loss: loss.double_value(&[]),
                kl,
                kl_k2,
                clip_low: low,
                clip_high: high,
                clip_region: low + high,
                mean_estimate: l.mean(Kind::Float).double_value(&[]),
                tokens: lengths.sum(Kind::Float).double_value(&[]),
            }
        });
        Ok((loss, metrics))
    }

    fn advantages(&self, rewards: &[f64], g: usize) -> Result<Advantages, AdvantageError> {
        let mut adv = crate::advantages::compute_advantages(rewards, g, Baseline::GroupMean, false)?;
        for (i, a) in adv.values.iter_mut().enumerate() {
            *a /= adv.group_std[i / g.max(1)] + 1e-6;
        }
        Ok(adv)
    }

    fn versions_per_sample(&self, _completion: usize, _steps: usize) -> usize {
        self.mc_num
    }

    fn versions_per_backward(&self) -> Option<usize> {
        (self.versions_per_backward > 0).then_some(self.versions_per_backward)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loss_of(bgpo: &Bgpo, l: &Tensor, old: &Tensor, adv: &Tensor) -> f64 {
        let mask = Tensor::from_slice2(&[[1i64, 1, 1], [1, 0, 0]]);
        let (loss, _) = bgpo
            .loss(&LossInput {
                scores: l,
                old: Some(old),
                reference: None,
                advantages: adv,
                completion_mask: &mask,
                step_tokens: 4.0,
                step_sequences: 2.0,
                step_units: 2.0,
                columns: 2,
                versions: &Versions::none(),
            })
            .unwrap();
        loss.double_value(&[])
    }

    #[test]
    fn linear_bound_dual_clip_and_the_nan_quirk_by_hand() {
        let bgpo = Bgpo::default();
        // Row 0, A = 2 > 0, Δ = (0.1, −0.5): ρ = 1 + Δ = (1.1, 0.5); min(ρA, clip(ρ)A) =
        // (2.2, 1.0) → losses (−2.2, −1.0). Row 1, A = −1, Δ = (1.5, 0): ρ = (e^1.5, 1):
        // max(−Aρ, −A clip(ρ)) = (4.48, 1) → dual clip min(·, 3) = (3, 1).
        // Token mean (lengths 3 and 1 over 4 tokens), / n = 2.
        let l = Tensor::from_slice2(&[[0.1f32, -0.5], [1.5, 0.0]]);
        let old = Tensor::zeros([2, 2], (Kind::Float, tch::Device::Cpu));
        let adv = Tensor::from_slice(&[2.0f32, -1.0]);
        let want = (3.0 * (-2.2 - 1.0) + (3.0 + 1.0)) / 4.0 / 2.0;
        let got = loss_of(&bgpo, &l, &old, &adv);
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        // Δ ≤ −1 with A > 0: the authors' exp(log(1 + Δ)) is NaN; the default is finite.
        let l = Tensor::from_slice2(&[[-1.5f32, 0.0], [0.0, 0.0]]);
        assert!(loss_of(&bgpo, &l, &old, &adv).is_finite());
        let quirk = Bgpo {
            nan_below_minus_one: true,
            ..Bgpo::default()
        };
        assert!(loss_of(&quirk, &l, &old, &adv).is_nan());
    }

    #[test]
    fn timesteps_are_stratified_across_a_samples_copies() {
        let seqs = Tensor::zeros([1, 10], (Kind::Int64, tch::Device::Cpu));
        let pmask = Tensor::ones([1, 2], (Kind::Int64, tch::Device::Cpu));
        let cmask = Tensor::from_slice2(&[[1i64, 1, 1, 1, 1, 1, 0, 0]]);
        let mut batch = EstimatorBatch::new(&seqs, &pmask, &[4]);
        batch.completion_mask = Some(&cmask);
        let bgpo = Bgpo {
            mc_num: 3,
            ..Bgpo::default()
        };
        // T = 6, n = 3: x_r = ((k + 2r − 1) mod 6) + 1, masked among the 6 real tokens only.
        let v = bgpo.versions(&batch, 5);
        let read = Vec::<Vec<Vec<bool>>>::try_from(&v.read).unwrap();
        let counts: Vec<usize> = (0..3)
            .map(|r| read[r][0].iter().filter(|&&x| x).count())
            .collect();
        let k = counts[0];
        assert_eq!(counts, [k, (k + 1) % 6 + 1, (k + 3) % 6 + 1]);
        assert!((0..3).all(|r| !read[r][0][6] && !read[r][0][7]));
        assert_eq!(
            v.ratios[0],
            counts.iter().map(|&x| x as f64 / 6.0).collect::<Vec<_>>()
        );
    }
}
