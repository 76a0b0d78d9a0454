//! Group-relative advantages (SPEC section 4), computed on the full gathered rollout batch
//! so that a group split across micro-batches or devices still sees all of its rewards.
//!
//! Rewards are prompt-major: `rewards[i·G .. (i+1)·G]` is prompt i's group.

/// How the baseline of a completion is formed from its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Baseline {
    /// `A_j = r_j − mean(r_{−j})` (DiffuCoder's default; needs G ≥ 2).
    LeaveOneOut,
    /// `A_j = r_j − mean(r)` (plain GRPO).
    GroupMean,
}

/// Rewards that cannot be turned into advantages.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AdvantageError {
    /// The rewards are not whole groups.
    #[error("{len} rewards do not split into groups of {group_size}")]
    Ragged {
        /// Rewards given.
        len: usize,
        /// Completions per prompt.
        group_size: usize,
    },
    /// A group size of 0.
    #[error("group size must be at least 1")]
    EmptyGroup,
    /// Leave-one-out with one completion per prompt.
    #[error("leave-one-out advantages need at least 2 completions per prompt (group size is 1); use baseline = \"group_mean\" or raise num_generations")]
    LeaveOneOutNeedsTwo,
    /// A NaN or infinite reward.
    #[error(
        "reward {index} is not finite ({value}); NaN rewards must be resolved before advantages"
    )]
    NonFinite {
        /// Its position.
        index: usize,
        /// Its value.
        value: f64,
    },
}

/// Advantages plus the statistics the trainer logs.
#[derive(Debug, Clone, PartialEq)]
pub struct Advantages {
    /// One advantage per completion, group-major.
    pub values: Vec<f64>,
    /// Share of groups whose reward std is below 1e-6 (no learning signal).
    pub zero_std_ratio: f64,
    /// Unbiased (G − 1) standard deviation of each group.
    pub group_std: Vec<f64>,
}

/// Computes advantages for prompt-major `rewards` in groups of `group_size`. With
/// `scale_rewards`, each advantage is divided by (group std + 1e-4).
pub fn compute_advantages(
    rewards: &[f64],
    group_size: usize,
    baseline: Baseline,
    scale_rewards: bool,
) -> Result<Advantages, AdvantageError> {
    if group_size == 0 {
        return Err(AdvantageError::EmptyGroup);
    }
    if rewards.len() % group_size != 0 {
        return Err(AdvantageError::Ragged {
            len: rewards.len(),
            group_size,
        });
    }
    if baseline == Baseline::LeaveOneOut && group_size < 2 {
        return Err(AdvantageError::LeaveOneOutNeedsTwo);
    }
    if let Some((index, &value)) = rewards.iter().enumerate().find(|(_, r)| !r.is_finite()) {
        return Err(AdvantageError::NonFinite { index, value });
    }
    let g = group_size as f64;
    let mut values = Vec::with_capacity(rewards.len());
    let mut group_std = Vec::with_capacity(rewards.len() / group_size);
    for group in rewards.chunks(group_size) {
        let sum: f64 = group.iter().sum();
        let mean = sum / g;
        let std = if group_size > 1 {
            (group.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (g - 1.0)).sqrt()
        } else {
            0.0
        };
        group_std.push(std);
        for &r in group {
            let a = match baseline {
                // r − (Σr − r)/(G − 1), written so equal rewards cancel exactly.
                Baseline::LeaveOneOut => (g * r - sum) / (g - 1.0),
                Baseline::GroupMean => r - mean,
            };
            values.push(if scale_rewards { a / (std + 1e-4) } else { a });
        }
    }
    let groups = group_std.len().max(1) as f64;
    let zero_std_ratio = group_std.iter().filter(|&&s| s < 1e-6).count() as f64 / groups;
    Ok(Advantages {
        values,
        zero_std_ratio,
        group_std,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f64], b: &[f64]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-12)
    }

    #[test]
    fn leave_one_out_by_hand() {
        // Group [1, 0, 0, 1]: A_0 = 1 − (1/3), A_1 = 0 − (2/3).
        let a = compute_advantages(&[1.0, 0.0, 0.0, 1.0], 4, Baseline::LeaveOneOut, false).unwrap();
        assert!(
            close(&a.values, &[2.0 / 3.0, -2.0 / 3.0, -2.0 / 3.0, 2.0 / 3.0]),
            "{:?}",
            a.values
        );
        // LOO is the group-mean advantage scaled by G / (G − 1).
        let m = compute_advantages(&[1.0, 0.0, 0.0, 1.0], 4, Baseline::GroupMean, false).unwrap();
        assert!(close(&m.values, &[0.5, -0.5, -0.5, 0.5]));
    }

    #[test]
    fn std_scaling_and_zero_std_ratio() {
        let a = compute_advantages(&[2.0, 0.0, 1.0, 1.0], 2, Baseline::GroupMean, true).unwrap();
        let std = 2f64.sqrt(); // unbiased std of [2, 0]
        assert!(close(
            &a.values[..2],
            &[1.0 / (std + 1e-4), -1.0 / (std + 1e-4)]
        ));
        assert_eq!(&a.values[2..], &[0.0, 0.0]);
        assert_eq!(a.zero_std_ratio, 0.5);
        assert!((a.group_std[0] - std).abs() < 1e-12);
    }

    #[test]
    fn all_equal_rewards_give_zero_advantages() {
        let a = compute_advantages(&[0.7; 6], 3, Baseline::LeaveOneOut, true).unwrap();
        assert!(a.values.iter().all(|&v| v.abs() < 1e-9), "{:?}", a.values);
        assert_eq!(a.zero_std_ratio, 1.0);
    }

    #[test]
    fn errors_are_clear() {
        assert_eq!(
            compute_advantages(&[1.0], 1, Baseline::LeaveOneOut, false),
            Err(AdvantageError::LeaveOneOutNeedsTwo)
        );
        assert!(compute_advantages(&[1.0], 1, Baseline::GroupMean, false).is_ok());
        assert_eq!(
            compute_advantages(&[1.0, 2.0, 3.0], 2, Baseline::GroupMean, false),
            Err(AdvantageError::Ragged {
                len: 3,
                group_size: 2
            })
        );
        assert!(matches!(
            compute_advantages(&[1.0, f64::NAN], 2, Baseline::GroupMean, false),
            Err(AdvantageError::NonFinite { index: 1, .. })
        ));
    }
}
