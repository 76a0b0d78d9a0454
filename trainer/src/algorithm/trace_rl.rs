//! TraceRL (Gen-Verse/dLLM-RL, `train/rl_dream.py`: `collapse_k_unique`,
//! `prepare_inputs_and_labels_for_text` with `method = "TraceRL"`, `forward_process`;
//! `configs/rl_dream.yaml`; ALGORITHMS.md §6): trajectory-aware training on the rollout's
//! own decoding order.
//!
//! Rows: the sorted unique decode steps of a sample's completion are merged in runs of
//! `shrink` (each step mapped to the last step of its run); each run becomes one row in
//! which the tokens of this run and of every later run are masked and this run's tokens
//! are the targets — the sampler's context, coarsened. Post-end-of-text tokens are masked
//! with their run but are never targets (the released `post_num = 0`); a run with no
//! target is no row. Loss per row: the token PPO clip against the old policy's
//! log-probabilities on the same rows, averaged over the row's targets, plus
//! `β Σ_targets k3` between the policy and the **old** policy; rows summed and divided by
//! the step's rows. Advantages: the group z-score with the population std (0 when the std
//! is 0), the same for every row of a sample.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::coupled::linear_combination;
use super::masks::{VersionGrid, Versions};
use super::{invalid, EstimatorBatch, LossInput, LossMetrics, Method, ObjectiveError};
use crate::advantages::{AdvantageError, Advantages, Baseline};
use crate::config::ConfigError;

/// TraceRL's knobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TraceRl {
    /// Unique decode steps merged into one row.
    pub shrink: usize,
    /// Lower clip of the token ratio.
    pub epsilon_low: f64,
    /// Upper clip of the token ratio.
    pub epsilon_high: f64,
    /// Weight of the k3 KL to the old policy (summed over a row's targets).
    pub beta: f64,
}

impl Default for TraceRl {
    /// The released `rl_dream.yaml`: shrink 8, ε = 0.2, β = 0.01.
    fn default() -> Self {
        TraceRl {
            shrink: 8,
            epsilon_low: 0.2,
            epsilon_high: 0.2,
            beta: 0.01,
        }
    }
}

/// One sample's step map, merged into runs: each token's run (the last step of its run, as
/// `collapse_k_unique` maps it) and the rows — per run with a target, its targets.
struct Runs {
    run_of: Vec<i64>,
    rows: Vec<(i64, Vec<usize>)>,
}

impl Runs {
    fn new(steps: &[i64], completion: &[i64], shrink: usize) -> Self {
        let mut unique = steps.to_vec();
        unique.sort_unstable();
        unique.dedup();
        let run_of: Vec<i64> = steps
            .iter()
            .map(|&s| {
                let idx = unique.partition_point(|&u| u < s);
                unique[((idx / shrink + 1) * shrink - 1).min(unique.len() - 1)]
            })
            .collect();
        let mut runs = run_of.clone();
        runs.sort_unstable();
        runs.dedup();
        let rows = runs
            .into_iter()
            .filter_map(|r| {
                let targets: Vec<usize> = (0..steps.len())
                    .filter(|&j| run_of[j] == r && completion[j] == 1)
                    .collect();
                (!targets.is_empty()).then_some((r, targets))
            })
            .collect();
        Runs { run_of, rows }
    }
}

impl TraceRl {
    /// Every sample's runs, from the batch's step map (one step for every token when the
    /// rollout recorded none).
    fn batch_runs(&self, batch: &EstimatorBatch) -> Vec<Runs> {
        let (b, _, k) = batch.shape();
        let steps: Vec<Vec<i64>> = batch
            .reveal_steps
            .and_then(|s| Vec::<Vec<i64>>::try_from(&s.to_device(tch::Device::Cpu)).ok())
            .unwrap_or_else(|| vec![vec![0; k]; b]);
        let completion = batch.completion_rows();
        steps
            .iter()
            .zip(&completion)
            .map(|(s, c)| Runs::new(s, c, self.shrink))
            .collect()
    }
}

impl Method for TraceRl {
    fn name(&self) -> &'static str {
        "trace_rl"
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.shrink == 0 {
            return Err(invalid("shrink", "must be at least 1"));
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

    fn versions(&self, batch: &EstimatorBatch, _seed: u64) -> Versions {
        let all = self.batch_runs(batch);
        let most = all.iter().map(|r| r.rows.len()).max().unwrap_or(0).max(1);
        let mut grid = VersionGrid::new(most, batch);
        let mut ratios = Vec::with_capacity(all.len());
        for (row, runs) in all.iter().enumerate() {
            // Per token: 1 / (targets of its row), the weight of its clipped term.
            let mut weights = vec![0.0; grid.k];
            for (v, (run, targets)) in runs.rows.iter().enumerate() {
                // Tokens of this run and of every later run are masked.
                for (j, &r) in runs.run_of.iter().enumerate() {
                    if r >= *run {
                        grid.mask(v, row, grid.p + j);
                    }
                }
                for &j in targets {
                    grid.read_token(v, row, j, 1.0);
                    weights[j] = 1.0 / targets.len() as f64;
                }
            }
            ratios.push(weights);
        }
        grid.finish(ratios)
    }

    fn combine(&self, versions: &Versions, lp: &Tensor) -> Tensor {
        linear_combination(versions, lp) // [B, K]: each target read in its row
    }

    fn loss(&self, input: &LossInput) -> Result<(Tensor, LossMetrics), ObjectiveError> {
        let lp = input.scores.to_kind(Kind::Float);
        let old = input
            .old
            .map_or_else(|| lp.detach(), |o| o.to_kind(Kind::Float));
        let weights: Vec<f32> = input
            .versions
            .ratios
            .iter()
            .flatten()
            .map(|&w| w as f32)
            .collect();
        let weights = Tensor::from_slice(&weights)
            .view_as(&lp)
            .to_device(lp.device());
        let targets = weights.gt(0.0).to_kind(Kind::Float);
        let adv = input.advantages.to_kind(Kind::Float).unsqueeze(1);
        let ratio = (&lp - &old).exp();
        let clipped = ratio.clamp(1.0 - self.epsilon_low, 1.0 + self.epsilon_high);
        let surrogate = (&ratio * &adv).minimum(&(&clipped * &adv));
        let rows = input.step_units.max(1.0);
        let mut loss = -(&surrogate * &weights).sum(Kind::Float) / rows;
        let d = &lp - &old;
        let k3 = ((-&d).exp() - 1.0 + &d) * &targets;
        if self.beta > 0.0 {
            loss += k3.sum(Kind::Float) * (self.beta / rows);
        }
        let metrics = tch::no_grad(|| {
            let n = targets.sum(Kind::Float).double_value(&[]).max(1.0);
            let adv_b = adv.expand_as(&ratio);
            let share = |t: Tensor| {
                (t.to_kind(Kind::Float) * &targets)
                    .sum(Kind::Float)
                    .double_value(&[])
                    / n
            };
            let low = share(ratio.lt(1.0 - self.epsilon_low).logical_and(&adv_b.lt(0.0)));
            let high = share(
                ratio
                    .gt(1.0 + self.epsilon_high)
                    .logical_and(&adv_b.gt(0.0)),
            );
            LossMetrics {
                loss: loss.double_value(&[]),
                kl: k3.sum(Kind::Float).double_value(&[]) / n,
                clip_low: low,
                clip_high: high,
                clip_region: low + high,
                mean_estimate: (&lp * &targets).sum(Kind::Float).double_value(&[]) / n,
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
        let mut adv = crate::advantages::compute_advantages(rewards, g, Baseline::GroupMean, false)?;
        let g = g.max(1);
        let population = ((g.max(2) - 1) as f64 / g as f64).sqrt();
        for (i, a) in adv.values.iter_mut().enumerate() {
            let std = adv.group_std[i / g] * population;
            *a = if std == 0.0 { 0.0 } else { *a / std };
        }
        Ok(adv)
    }

    /// Rows of the micro-batch.
    fn units(&self, batch: &EstimatorBatch, _coefficients: &Tensor) -> f64 {
        self.batch_runs(batch)
            .iter()
            .map(|r| r.rows.len())
            .sum::<usize>() as f64
    }

    fn beta(&self) -> f64 {
        0.0 // the KL is to the old policy: no reference model
    }

    fn versions_per_sample(&self, completion: usize, steps: usize) -> usize {
        // One row per run of `shrink` distinct decode steps; a sample has at most
        // min(steps, completion) distinct steps.
        completion.min(steps).div_ceil(self.shrink).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_merge_steps_and_skip_rows_without_targets() {
        // Steps 0..5, shrink 2: runs {0,1}→1, {2,3}→3, {4,5}→5. The last two tokens are
        // past the end: run 5 has no target and is no row.
        let runs = Runs::new(&[0, 1, 2, 3, 4, 5], &[1, 1, 1, 1, 0, 0], 2);
        assert_eq!(runs.run_of, [1, 1, 3, 3, 5, 5]);
        assert_eq!(runs.rows, [(1, vec![0, 1]), (3, vec![2, 3])]);
        // shrink larger than the steps: one row with every real token.
        let one = Runs::new(&[3, 0, 1], &[1, 1, 1], 8);
        assert_eq!(one.rows, [(3, vec![0, 1, 2])]);
    }

    #[test]
    fn advantages_are_population_z_scores_and_zero_without_spread() {
        // Group [1, 0]: mean ½, population std ½ → ±1. Group [2, 2]: std 0 → 0.
        let a = TraceRl::default()
            .advantages(&[1.0, 0.0, 2.0, 2.0], 2)
            .unwrap();
        assert!((a.values[0] - 1.0).abs() < 1e-12 && (a.values[1] + 1.0).abs() < 1e-12);
        assert_eq!(&a.values[2..], &[0.0, 0.0]);
    }
}
