//! What a step reports. A round's statistics are computed once, from the per-sample (and
//! per-rank cost) values gathered from every rank, so 1 or N ranks give the same numbers
//! and a new metric is one field here plus one line in [`RoundRecord::statistics`].

use couplet_reward::RewardBatch;
use couplet_rollout::{ArNess, Rollout};
use serde::{Deserialize, Serialize};

/// Scalars of one optimizer step.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    /// Optimizer steps taken, this one included.
    pub step: u64,
    /// Mean total reward of the round's completions.
    pub reward: f64,
    /// Their (population) standard deviation.
    pub reward_std: f64,
    /// Mean of each reward function over its non-NaN values, by name.
    pub reward_per_function: Vec<(String, f64)>,
    /// Mean total reward of each `data.stratify_by` group present in the round, by label
    /// (empty without stratification): a group being unlearned shows here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reward_per_stratum: Vec<(String, f64)>,
    /// The clipped-GRPO loss of this step.
    pub loss: f64,
    /// Token-weighted mean k3 KL of the policy to the reference — the starting policy
    /// unless the reference is synced — measured on this step's batch before the update
    /// (0 without one: β = 0 and `logging.kl_to_start = false`).
    pub kl: f64,
    /// The same KL as the k2 estimate, token-mean ½ (log π_ref − log π)²: finite and
    /// readable where a single token driven towards zero probability dominates k3.
    #[serde(default)]
    pub kl_k2: f64,
    /// Token-weighted mean entropy (nats) of the distributions the round's completion
    /// tokens were drawn from.
    #[serde(default)]
    pub entropy: f64,
    /// Token-weighted share of ratios in the clipped region.
    pub clip_ratio: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Share of the run's steps so far whose gradient was clipped (norm above
    /// `optimizer.max_grad_norm`).
    #[serde(default)]
    pub grad_clipped_share: f64,
    /// Learning rate of this step.
    pub lr: f64,
    /// Mean completion length in tokens.
    pub completion_length: f64,
    /// Share of prompt groups whose rewards are all equal (no learning signal).
    pub zero_std_ratio: f64,
    /// Shortest completion.
    pub completion_min: f64,
    /// Longest completion.
    pub completion_max: f64,
    /// Share of completions that hit max_new_tokens without an end token.
    pub clipped_ratio: f64,
    /// Mean |advantage|.
    pub advantage_mean_abs: f64,
    /// Local AR-ness@1..9 of the round's decode orders.
    pub arness_local: Vec<f64>,
    /// Global AR-ness@1..4 of the round's decode orders.
    pub arness_global: Vec<f64>,
    /// Throughput and time of the round (rates summed over ranks, times of the slowest).
    #[serde(flatten)]
    pub cost: RoundCost,
    /// Time of this step's forward/backward passes and update.
    pub update_seconds: f64,
    /// Steps skipped so far because the loss or gradient norm was NaN/inf.
    #[serde(default)]
    pub skipped_nonfinite: u64,
    /// Stability warnings raised at this step (each kind once per run), with their text.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<(super::stability::Warning, String)>,
}

/// What a round cost: one rank's, or the whole round's (rates add over ranks, times take
/// the slowest, per-run decoding counts average).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RoundCost {
    /// Decoded tokens per second.
    pub rollout_tokens_per_second: f64,
    /// Forward passes per decoding run (per chunk of rows decoded together).
    #[serde(default)]
    pub rollout_forwards_per_chunk: f64,
    /// Tokens each sequence revealed per forward pass.
    #[serde(default)]
    pub rollout_tokens_per_forward: f64,
    /// Sandbox tests per second.
    pub sandbox_tests_per_second: f64,
    /// Tests that timed out.
    pub sandbox_timeouts: usize,
    /// Jobs the sandbox failed on.
    pub sandbox_failures: usize,
    /// Tests failed because a value could not cross as plain data.
    #[serde(default)]
    pub sandbox_non_data: usize,
    /// Decoding seconds.
    pub rollout_seconds: f64,
    /// Reward seconds not hidden behind decoding.
    pub reward_seconds: f64,
    /// Tests the sandbox ran.
    #[serde(default)]
    pub sandbox_tests: usize,
    /// Seconds scoring the round under the old policy and the reference (no-grad passes
    /// before the first update; rank 0's).
    #[serde(default)]
    pub scoring_seconds: f64,
}

impl RoundCost {
    /// The round's cost from every rank's.
    pub fn merge(costs: &[RoundCost]) -> RoundCost {
        let sum = |f: fn(&RoundCost) -> f64| costs.iter().map(f).sum::<f64>();
        let max = |f: fn(&RoundCost) -> f64| costs.iter().map(f).fold(0.0, f64::max);
        let n = costs.len().max(1) as f64;
        RoundCost {
            rollout_tokens_per_second: sum(|c| c.rollout_tokens_per_second),
            rollout_forwards_per_chunk: sum(|c| c.rollout_forwards_per_chunk) / n,
            rollout_tokens_per_forward: sum(|c| c.rollout_tokens_per_forward) / n,
            sandbox_tests_per_second: sum(|c| c.sandbox_tests_per_second),
            sandbox_timeouts: costs.iter().map(|c| c.sandbox_timeouts).sum(),
            sandbox_failures: costs.iter().map(|c| c.sandbox_failures).sum(),
            sandbox_non_data: costs.iter().map(|c| c.sandbox_non_data).sum(),
            rollout_seconds: max(|c| c.rollout_seconds),
            reward_seconds: max(|c| c.reward_seconds),
            sandbox_tests: costs.iter().map(|c| c.sandbox_tests).sum(),
            scoring_seconds: max(|c| c.scoring_seconds),
        }
    }
}

/// The raw material of a round's statistics, per sample (in global sample order once
/// gathered) and per rank.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RoundRecord {
    /// Total reward per completion.
    pub rewards: Vec<f64>,
    /// Each function's values per completion, functions by name.
    pub per_function: Vec<(String, Vec<f64>)>,
    /// Completion lengths in tokens.
    pub lengths: Vec<usize>,
    /// Whether each completion ended with an end token.
    pub terminated: Vec<bool>,
    /// Advantage per completion.
    pub advantages: Vec<f64>,
    /// Per prompt group: whether its rewards had zero spread.
    pub group_zero_std: Vec<bool>,
    /// Decode-order AR-ness per completion.
    pub arness: Vec<ArNess>,
    /// Entropy summed over each completion's tokens.
    pub entropy_sums: Vec<f64>,
    /// Each completion's `data.stratify_by` label (empty without stratification).
    pub strata: Vec<String>,
    /// Per rank.
    pub costs: Vec<RoundCost>,
}

impl RoundRecord {
    /// This rank's record of a round; `strata` labels each completion (or is empty).
    pub fn new(
        rollout: &Rollout,
        rewards: &RewardBatch,
        advantages: &crate::Advantages,
        strata: Vec<String>,
        cost: RoundCost,
    ) -> Self {
        let mut per_function: Vec<(String, Vec<f64>)> = rewards
            .per_function
            .iter()
            .map(|(k, v)| (k.name().to_string(), v.clone()))
            .collect();
        per_function.sort_by(|a, b| a.0.cmp(&b.0));
        RoundRecord {
            rewards: rewards.total.clone(),
            per_function,
            lengths: rollout.completion_lengths.clone(),
            terminated: rollout.terminated.clone(),
            advantages: advantages.values.clone(),
            group_zero_std: advantages.group_std.iter().map(|&s| s < 1e-6).collect(),
            arness: rollout.arness.clone(),
            entropy_sums: rollout.entropy_sums.clone(),
            strata,
            costs: vec![cost],
        }
    }

    /// The ranks' records joined in rank order (= global sample order).
    pub fn concat(parts: Vec<RoundRecord>) -> RoundRecord {
        let mut parts = parts.into_iter();
        let mut out = parts.next().unwrap_or_default();
        for p in parts {
            out.rewards.extend(p.rewards);
            for ((_, mine), (_, theirs)) in out.per_function.iter_mut().zip(p.per_function) {
                mine.extend(theirs);
            }
            out.lengths.extend(p.lengths);
            out.terminated.extend(p.terminated);
            out.advantages.extend(p.advantages);
            out.group_zero_std.extend(p.group_zero_std);
            out.arness.extend(p.arness);
            out.entropy_sums.extend(p.entropy_sums);
            out.strata.extend(p.strata);
            out.costs.extend(p.costs);
        }
        out
    }

    /// The round's statistics (the per-update fields are left at zero).
    pub fn statistics(&self) -> StepMetrics {
        let n = self.rewards.len() as f64;
        let reward = self.rewards.iter().sum::<f64>() / n;
        let var = self
            .rewards
            .iter()
            .map(|r| (r - reward).powi(2))
            .sum::<f64>()
            / n;
        let lengths = self.lengths.iter().map(|&l| l as f64);
        let arness = ArNess::mean(&self.arness);
        let groups = self.group_zero_std.len().max(1) as f64;
        let tokens = self.lengths.iter().sum::<usize>().max(1) as f64;
        StepMetrics {
            reward,
            reward_std: var.sqrt(),
            reward_per_function: self
                .per_function
                .iter()
                .map(|(name, values)| (name.clone(), nan_mean(values)))
                .collect(),
            reward_per_stratum: self.reward_per_stratum(),
            entropy: self.entropy_sums.iter().sum::<f64>() / tokens,
            completion_length: self.lengths.iter().sum::<usize>() as f64 / n,
            completion_min: lengths.clone().fold(f64::INFINITY, f64::min),
            completion_max: lengths.fold(0.0, f64::max),
            clipped_ratio: self.terminated.iter().filter(|t| !**t).count() as f64 / n,
            advantage_mean_abs: self.advantages.iter().map(|a| a.abs()).sum::<f64>() / n,
            zero_std_ratio: self.group_zero_std.iter().filter(|z| **z).count() as f64 / groups,
            arness_local: arness.local,
            arness_global: arness.global,
            cost: RoundCost::merge(&self.costs),
            ..StepMetrics::default()
        }
    }
}

impl RoundRecord {
    /// Mean total reward per stratum label, labels sorted.
    fn reward_per_stratum(&self) -> Vec<(String, f64)> {
        let mut sums: std::collections::BTreeMap<&str, (f64, usize)> = Default::default();
        for (label, reward) in self.strata.iter().zip(&self.rewards) {
            let entry = sums.entry(label).or_default();
            entry.0 += reward;
            entry.1 += 1;
        }
        sums.into_iter()
            .map(|(label, (sum, n))| (label.to_string(), sum / n as f64))
            .collect()
    }
}

/// Mean over the non-NaN values (NaN when there are none), as the reward crate reports.
fn nan_mean(values: &[f64]) -> f64 {
    let ok: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    if ok.is_empty() {
        f64::NAN
    } else {
        ok.iter().sum::<f64>() / ok.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(rewards: &[f64], code: &[f64], cost: f64) -> RoundRecord {
        RoundRecord {
            rewards: rewards.to_vec(),
            per_function: vec![("code".into(), code.to_vec())],
            lengths: rewards.iter().map(|r| *r as usize).collect(),
            terminated: rewards.iter().map(|r| *r > 1.0).collect(),
            advantages: rewards.to_vec(),
            group_zero_std: vec![rewards[0] == rewards[1]],
            arness: Vec::new(),
            entropy_sums: rewards.iter().map(|r| 0.5 * r).collect(),
            strata: rewards
                .iter()
                .map(|r| format!("t{}", *r as i64 % 2))
                .collect(),
            costs: vec![RoundCost {
                rollout_seconds: cost,
                sandbox_timeouts: 1,
                ..RoundCost::default()
            }],
        }
    }

    #[test]
    fn ranks_statistics_equal_one_process_of_all_samples() {
        let both = record(&[1.0, 3.0, 2.0, 2.0], &[0.0, 1.0, f64::NAN, 1.0], 5.0);
        let joined = RoundRecord::concat(vec![
            record(&[1.0, 3.0], &[0.0, 1.0], 5.0),
            record(&[2.0, 2.0], &[f64::NAN, 1.0], 4.0),
        ]);
        let (one, two) = (both.statistics(), joined.statistics());
        for (a, b) in [
            (one.reward, two.reward),
            (one.reward_std, two.reward_std),
            (one.reward_per_function[0].1, two.reward_per_function[0].1),
            (one.completion_length, two.completion_length),
            (one.completion_max, two.completion_max),
            (one.clipped_ratio, two.clipped_ratio),
            (one.entropy, two.entropy),
        ] {
            assert_eq!(a, b);
        }
        assert_eq!(two.reward_per_function[0].1, 2.0 / 3.0);
        assert_eq!(one.reward_per_stratum, two.reward_per_stratum);
        // Rewards 1, 3 (odd: t1) and 2, 2 (even: t0); entropy sums r/2 over lengths r.
        assert_eq!(
            two.reward_per_stratum,
            vec![("t0".to_string(), 2.0), ("t1".to_string(), 2.0)]
        );
        assert_eq!(two.entropy, 0.5);
        assert_eq!((one.zero_std_ratio, two.zero_std_ratio), (0.0, 0.5));
        assert_eq!(
            (two.cost.sandbox_timeouts, two.cost.rollout_seconds),
            (2, 5.0)
        );
    }
}
