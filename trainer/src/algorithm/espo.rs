//! ESPO (ML-GSAI/ESPO, `espo/espo_trainer.py`; ALGORITHMS.md §1): a sequence-level ratio
//! of ELBO estimates.
//!
//! Estimate: for each of `num_mc` draws, the rows of a (micro-)batch of b rows share one
//! offset k ~ U{0..K} and take stratified mask counts `x_i = round(k + i(K+1)/b) mod (K+1)`
//! (`torch.round`: half to even); row i masks x_i of its K completion positions at random
//! (post-end-of-text positions included; the prompt never), and with `reduce_var` a second
//! version masks exactly the complement:
//! `ℓ̂ = ½ [Σ_{j∈M} lp_j(v_M) (K+1)/x + Σ_{j∉M} lp_j(v_M̄) (K+1)/(K−x)]`, averaged over the
//! draws (without `reduce_var`: the first sum alone, no ½).
//! Loss: `ρ_i = exp((ℓ̂_θ − ℓ̂_old)/K)`,
//! `L = −(1/N) Σ_i min(ρ_i A_i, clip(ρ_i) A_i) + β (1/(N K)) Σ_i ½ (ℓ̂_θ − ℓ̂_ref)²` over the
//! step's N sequences (the authors' code divides by the micro-batch's rows and averages
//! micro-batches: the same when they are equal). Advantages: leave-one-out, unscaled.
//!
//! Quirk kept (default, `stratify_across_rows = true`): the mask counts depend on how the
//! rows are grouped into micro-batches, as in the authors' code; Couplet's old, reference
//! and policy passes all use the step's micro-batches, so the three see the same masks.
//! The offset k of a micro-batch is keyed by its first sample.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::coupled::linear_combination;
use super::masks::{random_subset, round_half_even, uniform01, VersionGrid, Versions};
use super::{invalid, EstimatorBatch, LossInput, LossMetrics, Method, ObjectiveError};
use crate::advantages::{AdvantageError, Advantages, Baseline};
use crate::config::ConfigError;
use couplet_model::random::stream::{ESPO_OFFSET, ESPO_ORDER};

/// ESPO's knobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Espo {
    /// Monte-Carlo draws of the ELBO (each costs 2 forward passes with `reduce_var`).
    pub num_mc: usize,
    /// Score each draw's complement too (the authors' `reduce_var`).
    pub reduce_var: bool,
    /// Lower clip of the sequence ratio.
    pub epsilon_low: f64,
    /// Upper clip of the sequence ratio.
    pub epsilon_high: f64,
    /// Weight of the k2 KL to the reference (on the raw ELBO, divided by K).
    pub beta: f64,
    /// Stratify mask counts across the rows of a micro-batch (the authors' code); false:
    /// each row draws its own count.
    pub stratify_across_rows: bool,
}

impl Default for Espo {
    /// The authors' recipe for code: 2 draws with complements, ε = 0.2, β = 0.01.
    fn default() -> Self {
        Espo {
            num_mc: 2,
            reduce_var: true,
            epsilon_low: 0.2,
            epsilon_high: 0.2,
            beta: 0.01,
            stratify_across_rows: true,
        }
    }
}

impl Espo {
    fn per_draw(&self) -> usize {
        1 + usize::from(self.reduce_var)
    }

    /// Mask count of each row for draw `m`.
    fn counts(&self, batch: &EstimatorBatch, seed: u64, m: u64, k: usize) -> Vec<usize> {
        let rows = batch.samples.len();
        let stratum =
            |key: u64| (uniform01(seed, ESPO_OFFSET + m, key, 0) * (k + 1) as f64) as usize;
        (0..rows)
            .map(|i| {
                let (offset, i, b) = if self.stratify_across_rows {
                    (stratum(batch.samples[0]), i, rows)
                } else {
                    (stratum(batch.samples[i]), 0, 1)
                };
                let x = round_half_even(offset as f64 + i as f64 * (k + 1) as f64 / b as f64);
                (x as usize) % (k + 1)
            })
            .collect()
    }
}

impl Method for Espo {
    fn name(&self) -> &'static str {
        "espo"
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.num_mc == 0 {
            return Err(invalid("num_mc", "must be at least 1"));
        }
        if !(0.0..1.0).contains(&self.epsilon_low) || self.epsilon_high < 0.0 {
            return Err(invalid(
                "epsilon_low",
                "ε_low must be in [0, 1), ε_high ≥ 0",
            ));
        }
        if self.beta < 0.0 || !self.beta.is_finite() {
            return Err(invalid("beta", "must be ≥ 0"));
        }
        Ok(())
    }

    fn versions(&self, batch: &EstimatorBatch, seed: u64) -> Versions {
        let mut grid = VersionGrid::new(self.versions_per_sample(0, 0), batch);
        let (k, per_draw) = (grid.k, self.per_draw());
        let all: Vec<usize> = (0..k).collect();
        let half = if self.reduce_var { 0.5 } else { 1.0 } / self.num_mc as f64;
        let mut ratios = vec![Vec::new(); grid.b];
        for m in 0..self.num_mc {
            let counts = self.counts(batch, seed, m as u64, k);
            for (row, &x) in counts.iter().enumerate() {
                let sample = batch.samples[row];
                let draw = |j| uniform01(seed, ESPO_ORDER + m as u64, sample, j);
                let masked = random_subset(x, &all, draw);
                let mut in_m = vec![false; k];
                let p = x as f64 / (k + 1) as f64;
                for &j in &masked {
                    in_m[j] = true;
                    grid.mask_token(m * per_draw, row, j, half / p);
                }
                if self.reduce_var {
                    let q = k as f64 / (k + 1) as f64 - p;
                    for j in (0..k).filter(|&j| !in_m[j]) {
                        grid.mask_token(m * per_draw + 1, row, j, half / q);
                    }
                }
                ratios[row].push(p);
            }
        }
        grid.finish(ratios)
    }

    fn combine(&self, versions: &Versions, lp: &Tensor) -> Tensor {
        linear_combination(versions, lp).sum_dim_intlist(1, false, Kind::Float) // [B]
    }

    fn loss(&self, input: &LossInput) -> Result<(Tensor, LossMetrics), ObjectiveError> {
        sequence_ratio_loss(input, self.epsilon_low, self.epsilon_high, self.beta)
    }

    fn advantages(&self, rewards: &[f64], g: usize) -> Result<Advantages, AdvantageError> {
        crate::advantages::compute_advantages(rewards, g, Baseline::LeaveOneOut, false)
    }

    fn beta(&self) -> f64 {
        self.beta
    }

    fn versions_per_sample(&self, _completion: usize, _steps: usize) -> usize {
        self.num_mc * self.per_draw()
    }
}

/// ESPO's loss on sequence scores `[B]`: the clipped ratio `exp((ℓ̂ − ℓ̂_old)/K)` and the k2
/// KL of the raw ELBOs divided by K, both over the step's sequences.
fn sequence_ratio_loss(
    input: &LossInput,
    eps_low: f64,
    eps_high: f64,
    beta: f64,
) -> Result<(Tensor, LossMetrics), ObjectiveError> {
    if beta > 0.0 && input.reference.is_none() {
        return Err(ObjectiveError::MissingReference { beta });
    }
    let s = input.scores.to_kind(Kind::Float); // [B]
    let k = input.completion_mask.size()[1] as f64;
    let old = input
        .old
        .map_or_else(|| s.detach(), |o| o.to_kind(Kind::Float));
    let adv = input.advantages.to_kind(Kind::Float);
    let ratio = ((&s - &old) / k).exp();
    let clipped = ratio.clamp(1.0 - eps_low, 1.0 + eps_high);
    let per = -(&ratio * &adv).minimum(&(&clipped * &adv));
    let n = input.step_sequences.max(1.0);
    let mut loss = per.sum(Kind::Float) / n;
    if let (Some(reference), true) = (input.reference, beta > 0.0) {
        let sq = (&s - reference.to_kind(Kind::Float)).square() * 0.5;
        loss += sq.sum(Kind::Float) * (beta / (n * k));
    }
    let (kl, k2) = sequence_kl(&s, input.reference, k);
    let metrics = tch::no_grad(|| {
        let rows = s.size()[0].max(1) as f64;
        let low = ratio.lt(1.0 - eps_low).logical_and(&adv.lt(0.0));
        let high = ratio.gt(1.0 + eps_high).logical_and(&adv.gt(0.0));
        let share = |t: &Tensor| t.to_kind(Kind::Float).sum(Kind::Float).double_value(&[]) / rows;
        let (low, high) = (share(&low), share(&high));
        LossMetrics {
            loss: loss.double_value(&[]),
            kl,
            kl_k2: k2,
            clip_low: low,
            clip_high: high,
            clip_region: low + high,
            mean_estimate: s.mean(Kind::Float).double_value(&[]),
            tokens: input
                .completion_mask
                .to_kind(Kind::Float)
                .sum(Kind::Float)
                .double_value(&[]),
        }
    });
    Ok((loss, metrics))
}

/// The KL to the reference of sequence scores `[B]` per completion position, for logs:
/// (k3, k2) of `(ℓ̂_ref − ℓ̂)/K` averaged over the rows; (0, 0) without a reference.
pub(super) fn sequence_kl(scores: &Tensor, reference: Option<&Tensor>, k: f64) -> (f64, f64) {
    let Some(reference) = reference else {
        return (0.0, 0.0);
    };
    tch::no_grad(|| {
        let d = (reference.to_kind(Kind::Float) - scores) / k;
        let k3 = (d.exp() - &d - 1.0).mean(Kind::Float).double_value(&[]);
        let k2 = (d.square() * 0.5).mean(Kind::Float).double_value(&[]);
        (k3, k2)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(
        scores: &'a Tensor,
        old: Option<&'a Tensor>,
        reference: Option<&'a Tensor>,
        adv: &'a Tensor,
        mask: &'a Tensor,
    ) -> LossInput<'a> {
        LossInput {
            scores,
            old,
            reference,
            advantages: adv,
            completion_mask: mask,
            step_tokens: 5.0,
            step_sequences: 2.0,
            step_units: 2.0,
            columns: 1,
            // A test-only leak: the loss does not read the versions.
            versions: Box::leak(Box::new(Versions::none())),
        }
    }

    #[test]
    fn loss_by_hand() {
        // K = 4. Row 0: ℓ̂ − ℓ̂_old = 0.4 → ρ = e^0.1 inside [0.8, 1.2], A = 1: −ρ.
        // Row 1: ℓ̂ − ℓ̂_old = −2 → ρ = e^−0.5 = 0.607 < 0.8, A = −0.5: −min(−0.5ρ, −0.4) = 0.4.
        // KL: β/(N K) Σ ½ (ℓ̂ − ℓ̂_ref)² = 0.1/8 · ½ (1 + 4).
        let s = Tensor::from_slice(&[-3.6f32, -7.0]);
        let old = Tensor::from_slice(&[-4.0f32, -5.0]);
        let reference = Tensor::from_slice(&[-4.6f32, -9.0]);
        let adv = Tensor::from_slice(&[1.0f32, -0.5]);
        let mask = Tensor::from_slice2(&[[1i64, 1, 1, 0], [1, 1, 0, 0]]);
        let espo = Espo {
            beta: 0.1,
            ..Espo::default()
        };
        let (loss, m) = espo
            .loss(&input(&s, Some(&old), Some(&reference), &adv, &mask))
            .unwrap();
        let want = (-(0.1f64.exp()) + 0.4) / 2.0 + 0.1 / 8.0 * 0.5 * 5.0;
        assert!(
            (loss.double_value(&[]) - want).abs() < 1e-6,
            "{loss} vs {want}"
        );
        assert_eq!((m.clip_low, m.clip_high), (0.5, 0.0));
        // No reference at β > 0 is an error, not a dropped term.
        assert!(espo
            .loss(&input(&s, Some(&old), None, &adv, &mask))
            .is_err());
    }

    #[test]
    fn counts_are_stratified_across_rows_and_complements_cover_every_token() {
        let seqs = Tensor::zeros([3, 7], (Kind::Int64, tch::Device::Cpu));
        let pmask = Tensor::ones([3, 2], (Kind::Int64, tch::Device::Cpu));
        let samples = [30u64, 31, 32];
        let batch = EstimatorBatch::new(&seqs, &pmask, &samples);
        let espo = Espo {
            num_mc: 1,
            ..Espo::default()
        };
        // K = 5, b = 3: counts k, k + 2, k + 4 (mod 6) — spread over the whole range.
        let x = espo.counts(&batch, 9, 0, 5);
        let k = x[0];
        assert_eq!(x, [k, (k + 2) % 6, (k + 4) % 6]);
        let v = espo.versions(&batch, 9);
        let read = Vec::<Vec<Vec<bool>>>::try_from(&v.read).unwrap();
        let w = Vec::<Vec<Vec<f64>>>::try_from(&v.weights).unwrap();
        for (row, &x) in x.iter().enumerate() {
            let in_m = read[0][row].iter().filter(|&&r| r).count();
            assert_eq!(in_m, x);
            for j in 0..5 {
                // Exactly one of the two versions reads each token, with weight ½ (K+1)/x
                // or ½ (K+1)/(K − x).
                assert!(read[0][row][j] ^ read[1][row][j]);
                let want = if read[0][row][j] {
                    3.0 / x as f64
                } else {
                    3.0 / (5 - x) as f64
                };
                assert!((w[0][row][j] + w[1][row][j] - want).abs() < 1e-12);
            }
        }
    }
}
