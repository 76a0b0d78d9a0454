//! SPG (facebookresearch/SPG, `spg/spg_trainer.py`: `forward_process` with
//! `forward_type = "block_random"`, `_get_per_seq_logps`, `compute_loss`; ALGORITHMS.md §2):
//! sandwiched policy gradient, no ratio.
//!
//! Estimate: `num_t` draws per sample. Draw k picks a block `b_k` (blocks of
//! `block_length` over the padded completion; a random permutation of the block ids, taken
//! modulo the number of blocks holding completion tokens) and masks: m ~ U{1..n} of the
//! block's n completion tokens at random (its post-end-of-text positions too), every later
//! position, every post-end-of-text position, and each other position — the prompt and the
//! earlier blocks — with probability `p_mask_prompt`. With `M_k` the masked completion
//! tokens and `t_k = |M_k| / |y|`:
//! `ELBO = mean_k (1/|M_k|) Σ_{j∈M_k} lp_j`,
//! `EUBO = (1/β) mean_{j: u_j>0} log u_j` with `u_j = mean_k 1[j∈M_k] p_{k,j}^β / t_k`
//! (p the probability, β = `eubo_beta`). Scores are `[B, 2]` = (ELBO, EUBO).
//! Loss: `ℓ̂_i = ELBO` when `A_i > 0`, else `ω EUBO + (1 − ω) ELBO` (`estimate = "mix"`;
//! `"eubo"`: ω = 1; `"elbo"`: ω = 0); `L = Σ_i −A_i ℓ̂_i |y_i| / Σ_i |y_i|` over the step.
//! Advantages: `r − mean(r)` over the group. No old policy, no reference: rollouts reused
//! over μ iterations are scored with new masks, uncorrected, as released.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::masks::{random_subset, uniform01, VersionGrid, Versions};
use super::{invalid, EstimatorBatch, LossInput, LossMetrics, Method, ObjectiveError};
use crate::advantages::{AdvantageError, Advantages, Baseline};
use crate::config::ConfigError;
use couplet_model::random::stream::{SPG_BLOCK, SPG_CONTEXT, SPG_COUNT, SPG_ORDER};

/// Offsets of completion positions in the context-masking draws (prompt tokens use their
/// index among the real prompt tokens).
const COMPLETION_OFFSET: u64 = 1 << 19;

/// Which likelihood bound scores the samples with A ≤ 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpgEstimate {
    /// ω · EUBO + (1 − ω) · ELBO (the released recipe).
    Mix,
    /// The EUBO alone.
    Eubo,
    /// The ELBO alone (no sandwich).
    Elbo,
}

/// SPG's knobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Spg {
    /// Mask draws per sample (each a forward pass).
    pub num_t: usize,
    /// Block length of the masks (the rollout's block length in the recipe, 32); must
    /// divide the completion length. 0: the largest divisor of K up to 32 (32 for the
    /// recipe's K = 256, 24 for the CPU demo's K = 48).
    pub block_length: usize,
    /// Probability of masking each prompt token and each token of the earlier blocks.
    pub p_mask_prompt: f64,
    /// β of the EUBO.
    pub eubo_beta: f64,
    /// ω of the mix.
    pub mix_weight: f64,
    /// The bound for samples with A ≤ 0.
    pub estimate: SpgEstimate,
}

impl Default for Spg {
    /// The released `spg_mix` recipe: 2 draws, blocks of 32 (for its K = 256), context
    /// masking 0.15, β = 1.5, ω = 0.5.
    fn default() -> Self {
        Spg {
            num_t: 2,
            block_length: 0,
            p_mask_prompt: 0.15,
            eubo_beta: 1.5,
            mix_weight: 0.5,
            estimate: SpgEstimate::Mix,
        }
    }
}

impl Spg {
    /// ω for samples with A ≤ 0.
    fn omega(&self) -> f64 {
        match self.estimate {
            SpgEstimate::Mix => self.mix_weight,
            SpgEstimate::Eubo => 1.0,
            SpgEstimate::Elbo => 0.0,
        }
    }

    /// The block length for K completion tokens.
    fn block(&self, k: usize) -> usize {
        if self.block_length > 0 {
            return self.block_length;
        }
        (1..=32.min(k.max(1))).rev().find(|b| k % b == 0).unwrap_or(1)
    }

    /// Draw k of one row: masks it in version k, returns t_k.
    #[allow(clippy::too_many_arguments)]
    fn draw(
        &self,
        grid: &mut VersionGrid,
        row: usize,
        k: usize,
        block: usize,
        length: usize,
        seed: u64,
        sample: u64,
    ) -> f64 {
        let (bl, kk) = (self.block(grid.k), grid.k);
        let start = block * bl;
        let n = bl.min(length - start);
        let count = 1 + (uniform01(seed, SPG_COUNT + k as u64, sample, 0) * n as f64) as usize;
        let valid: Vec<usize> = (start..start + n).collect();
        let chosen = random_subset(count, &valid, |j| {
            uniform01(seed, SPG_ORDER + k as u64, sample, j)
        });
        let mut masked = vec![false; kk];
        for j in chosen {
            masked[j] = true;
        }
        // The block's post-end-of-text positions, the later blocks, everything after the end.
        for (j, m) in masked.iter_mut().enumerate() {
            if j >= length || (j >= start + n) {
                *m = true;
            }
        }
        let context = |offset| uniform01(seed, SPG_CONTEXT + k as u64, sample, offset);
        for (j, m) in masked.iter_mut().enumerate().take(start) {
            if context(COMPLETION_OFFSET + j as u64) < self.p_mask_prompt {
                *m = true;
            }
        }
        grid.mask_prompt(k, row, self.p_mask_prompt, context);
        let mut in_m = 0;
        for (j, &m) in masked.iter().enumerate() {
            if !m {
                continue;
            }
            if j < length {
                grid.mask_token(k, row, j, 1.0);
                in_m += 1;
            } else {
                grid.mask(k, row, grid.p + j);
            }
        }
        in_m as f64 / length as f64
    }
}

impl Method for Spg {
    fn name(&self) -> &'static str {
        "spg"
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.num_t == 0 {
            return Err(invalid("num_t", "must be at least 1"));
        }
        if !(0.0..=1.0).contains(&self.p_mask_prompt) {
            return Err(invalid("p_mask_prompt", "must be in [0, 1]"));
        }
        if self.eubo_beta <= 0.0 {
            return Err(invalid("eubo_beta", "must be > 0"));
        }
        if !(0.0..=1.0).contains(&self.mix_weight) {
            return Err(invalid("mix_weight", "must be in [0, 1]"));
        }
        Ok(())
    }

    fn check_config(&self, config: &crate::TrainConfig) -> Result<(), ConfigError> {
        let k = config.rollout.max_new_tokens.max(0) as usize;
        let bl = self.block(k);
        if k % bl != 0 || self.num_t > k / bl {
            return Err(invalid(
                "block_length",
                &format!(
                    "must divide rollout.max_new_tokens = {k} into at least num_t = {} blocks",
                    self.num_t
                ),
            ));
        }
        Ok(())
    }

    fn versions(&self, batch: &EstimatorBatch, seed: u64) -> Versions {
        let mut grid = VersionGrid::new(self.num_t, batch);
        let (kk, bl) = (grid.k, self.block(grid.k));
        let blocks = (kk / bl).max(1);
        let completion = batch.completion_rows();
        let mut ratios = Vec::with_capacity(grid.b);
        for (row, &sample) in batch.samples.iter().enumerate().take(grid.b) {
            let length = completion[row].iter().filter(|&&c| c == 1).count().max(1);
            let with_completion = (length - 1) / bl + 1;
            let ids: Vec<usize> = (0..blocks).collect();
            let order = random_subset(blocks, &ids, |b| uniform01(seed, SPG_BLOCK, sample, b));
            let drawn = (0..self.num_t)
                .map(|k| {
                    let block = order[k % blocks] % with_completion;
                    self.draw(&mut grid, row, k, block, length, seed, sample)
                })
                .collect();
            ratios.push(drawn);
        }
        grid.finish(ratios)
    }

    fn combine(&self, versions: &Versions, lp: &Tensor) -> Tensor {
        let device = lp.device();
        let read = versions.read.to_device(device).to_kind(Kind::Float); // [V, B, K]
        let counts = read.sum_dim_intlist(2, false, Kind::Float); // [V, B]
        let elbo = (lp.sum_dim_intlist(2, false, Kind::Float) / counts.clamp_min(1e-8)).mean_dim(
            0,
            false,
            Kind::Float,
        ); // [B]
        let t: Vec<f32> = {
            let (v, b) = (read.size()[0] as usize, read.size()[1] as usize);
            (0..v)
                .flat_map(|k| (0..b).map(move |row| (k, row)))
                .map(|(k, row)| versions.ratios[row][k] as f32)
                .collect()
        };
        let t = Tensor::from_slice(&t)
            .view([read.size()[0], read.size()[1], 1])
            .to_device(device);
        let beta = self.eubo_beta;
        let u = ((lp * beta).exp() * &read / t.clamp_min(1e-8)).mean_dim(0, false, Kind::Float); // [B, K]
        let positive = u.gt(0.0).to_kind(Kind::Float);
        let logs = u.where_self(&u.gt(0.0), &u.ones_like()).log() * &positive;
        let eubo = logs.sum_dim_intlist(1, false, Kind::Float)
            / positive
                .sum_dim_intlist(1, false, Kind::Float)
                .clamp_min(1e-8)
            / beta;
        Tensor::stack(&[elbo, eubo], 1) // [B, 2]
    }

    fn loss(&self, input: &LossInput) -> Result<(Tensor, LossMetrics), ObjectiveError> {
        let s = input.scores.to_kind(Kind::Float);
        let (elbo, eubo) = (s.select(1, 0), s.select(1, 1));
        let adv = input.advantages.to_kind(Kind::Float);
        let omega = self.omega();
        let negative = &eubo * omega + &elbo * (1.0 - omega);
        let chosen = elbo.where_self(&adv.gt(0.0), &negative);
        let lengths =
            input
                .completion_mask
                .to_kind(Kind::Float)
                .sum_dim_intlist(1, false, Kind::Float);
        let loss = (-(&adv * &chosen) * &lengths).sum(Kind::Float) / input.step_tokens.max(1.0);
        let metrics = LossMetrics {
            loss: loss.double_value(&[]),
            mean_estimate: tch::no_grad(|| chosen.mean(Kind::Float)).double_value(&[]),
            tokens: lengths.sum(Kind::Float).double_value(&[]),
            ..Default::default()
        };
        Ok((loss, metrics))
    }

    fn advantages(&self, rewards: &[f64], g: usize) -> Result<Advantages, AdvantageError> {
        crate::advantages::compute_advantages(rewards, g, Baseline::GroupMean, false)
    }

    fn uses_old(&self, _mu: usize) -> bool {
        false
    }

    fn versions_per_sample(&self, _completion: usize, _steps: usize) -> usize {
        self.num_t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elbo_eubo_and_the_sandwich_by_hand() {
        // One sample, |y| = K = 2, two draws: draw 0 masks token 0 (t = ½), draw 1 both
        // (t = 1). ELBO = mean(−1/1, (−2 − 3)/2) = −1.75. With β = 1:
        // u_0 = mean(e^−1 / ½, e^−2 / 1), u_1 = mean(0, e^−3 / 1); EUBO = mean(log u).
        let read = Tensor::from_slice(&[true, false, true, true]).view([2, 1, 2]);
        let versions = Versions {
            masked: Tensor::zeros([2, 1, 4], (Kind::Bool, tch::Device::Cpu)),
            weights: read.to_kind(Kind::Double),
            read,
            ratios: vec![vec![0.5, 1.0]],
        };
        let lp = Tensor::from_slice(&[-1.0f32, 0.0, -2.0, -3.0]).view([2, 1, 2]);
        let spg = Spg {
            eubo_beta: 1.0,
            ..Spg::default()
        };
        let s = spg.combine(&versions, &lp);
        let e = |x: f64| x.exp();
        let u0 = (e(-1.0) / 0.5 + e(-2.0)) / 2.0;
        let u1 = e(-3.0) / 2.0;
        let eubo = (u0.ln() + u1.ln()) / 2.0;
        let got = Vec::<f64>::try_from(&s.to_kind(Kind::Double).view([-1])).unwrap();
        assert!(
            (got[0] + 1.75).abs() < 1e-6 && (got[1] - eubo).abs() < 1e-6,
            "{got:?}"
        );
        // A = −1 ≤ 0: ℓ̂ = ½ EUBO + ½ ELBO, L = −A ℓ̂ |y| / |y| = ℓ̂; A = 1 uses the ELBO.
        let mask = Tensor::ones([1, 2], (Kind::Int64, tch::Device::Cpu));
        let loss = |a: f32| {
            let adv = Tensor::from_slice(&[a]);
            let input = LossInput {
                scores: &s,
                old: None,
                reference: None,
                advantages: &adv,
                completion_mask: &mask,
                step_tokens: 2.0,
                step_sequences: 1.0,
                step_units: 1.0,
                columns: 2,
                versions: &Versions::none(),
            };
            spg.loss(&input).unwrap().0.double_value(&[])
        };
        assert!((loss(-1.0) - (0.5 * eubo - 0.5 * 1.75)).abs() < 1e-6);
        assert!((loss(1.0) - 1.75).abs() < 1e-6);
    }

    #[test]
    fn block_length_must_divide_the_completion() {
        let spg = Spg {
            block_length: 32,
            ..Spg::default()
        };
        let mut config = crate::TrainConfig::default();
        config.rollout.max_new_tokens = 256;
        assert!(spg.check_config(&config).is_ok());
        // The default picks a divisor: 32 for 256, 24 for 48.
        assert_eq!((Spg::default().block(256), Spg::default().block(48)), (32, 24));
        config.rollout.max_new_tokens = 48;
        let err = spg.check_config(&config).unwrap_err().to_string();
        assert!(
            err.contains("algorithm.block_length") && err.contains("48"),
            "{err}"
        );
    }
}
