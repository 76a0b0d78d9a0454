//! The GRPO objective with clipping and k3 KL (SPEC section 6).

use tch::{Kind, Tensor};

/// Where the k3 KL turns linear in d = lp_ref − lp. Below it the estimator is exactly
/// SPEC 6's; at it a token's KL is already e²⁰ ≈ 5·10⁸.
pub const KL_LOG_RATIO_LIMIT: f64 = 20.0;

/// k3 = e^d − d − 1 (SPEC 6) for d ≤ KL_LOG_RATIO_LIMIT, continued by its tangent above.
/// f32's exp is inf past d = 88.7, and one such token (a policy far below the reference on
/// a heavily divided coupled estimate) would make the step's loss inf and its gradient NaN;
/// the tangent keeps the value finite and the pull towards the reference at its largest.
fn k3(d: &Tensor) -> Tensor {
    let limit = KL_LOG_RATIO_LIMIT;
    let exact = d.clamp_max(limit).exp() - d - 1.0;
    let tangent = (d - limit) * (limit.exp() - 1.0) + (limit.exp() - limit - 1.0);
    exact.where_self(&d.le(limit), &tangent)
}

/// Clipping and KL settings.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ObjectiveConfig {
    /// ε_low: ratios below 1 − ε_low are clipped (for A < 0).
    pub epsilon_low: f64,
    /// ε_high: ratios above 1 + ε_high are clipped (for A > 0).
    pub epsilon_high: f64,
    /// KL weight; 0 means no reference model is held at all.
    pub beta: f64,
}

impl Default for ObjectiveConfig {
    /// The DiffuCoder recipe: ε = 0.5 on both sides, β = 0.01.
    fn default() -> Self {
        ObjectiveConfig {
            epsilon_low: 0.5,
            epsilon_high: 0.5,
            beta: 0.01,
        }
    }
}

/// A loss that lacks a score it needs: a bug in the caller, reported rather than
/// silently dropping a term.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ObjectiveError {
    /// β > 0 but no reference scores were given.
    #[error("the KL term (β = {beta}) needs the reference model's scores, and none were given")]
    MissingReference {
        /// The KL weight.
        beta: f64,
    },
    /// The method needs the old policy's scores (μ > 1), and none were given.
    #[error("{0} needs the old policy's scores, and none were given")]
    MissingOld(&'static str),
}

/// Scalars of one micro-batch, for logs.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct ObjectiveMetrics {
    /// The loss (token-normalised).
    pub loss: f64,
    /// Masked mean of the k3 KL to the reference (0 without one; reported, not in the
    /// loss, when β = 0).
    pub kl: f64,
    /// Masked mean of ½ (log π_ref − log π)², the k2 estimate of the same KL: always
    /// finite and low-variance, where one token driven towards zero probability can
    /// dominate the k3 mean (0 without a reference).
    pub kl_k2: f64,
    /// Share of completion tokens with ρ < 1 − ε_low and A < 0.
    pub clip_low: f64,
    /// Share with ρ > 1 + ε_high and A > 0.
    pub clip_high: f64,
    /// Share in either clipped region.
    pub clip_region: f64,
    /// Masked mean of the per-token estimate.
    pub mean_estimate: f64,
    /// Completion tokens of the micro-batch.
    pub tokens: f64,
}

/// Micro-batch loss `Σ_j loss_j c_j / max(1, Σ_j c_j)` over all rows (the reference's
/// token mean), or over `global_tokens` when given: dividing every micro-batch by the
/// completion-token count of the whole optimizer step makes the accumulated gradient
/// independent of how the batch is split into micro-batches and devices.
///
/// * `lp [B, K]`: current estimates (with grad);
/// * `lp_old`: the old policy's estimates with the same masks (`None` when μ = 1: the
///   detached current estimates, ratio 1);
/// * `lp_ref`: the reference model's estimates (required when β > 0);
/// * `advantages [B]`, `completion_mask [B, K]` (1 up to and including the end token).
pub fn grpo_loss(
    lp: &Tensor,
    lp_old: Option<&Tensor>,
    lp_ref: Option<&Tensor>,
    advantages: &Tensor,
    completion_mask: &Tensor,
    config: &ObjectiveConfig,
    global_tokens: Option<f64>,
) -> Result<(Tensor, ObjectiveMetrics), ObjectiveError> {
    if config.beta > 0.0 && lp_ref.is_none() {
        return Err(ObjectiveError::MissingReference { beta: config.beta });
    }
    let lp = lp.to_kind(Kind::Float);
    let mask = completion_mask.to_kind(Kind::Float);
    let old = lp_old
        .map(|t| t.to_kind(Kind::Float))
        .unwrap_or_else(|| lp.detach());
    let adv = advantages.to_kind(Kind::Float).unsqueeze(1); // [B, 1]
    let ratio = (&lp - &old).exp();
    let clipped = ratio.clamp(1.0 - config.epsilon_low, 1.0 + config.epsilon_high);
    let per_token = -(&ratio * &adv).minimum(&(&clipped * &adv));
    let tokens = mask.sum(Kind::Float);
    let denom = tokens.clamp_min(1.0);
    let mean = |t: &Tensor| (t * &mask).sum(Kind::Float) / &denom;
    let loss_denom = match global_tokens {
        Some(n) => Tensor::from(n.max(1.0) as f32).to_device(lp.device()),
        None => denom.shallow_clone(),
    };
    // With β = 0 a reference may still be held for telemetry (`logging.kl_to_start`): its
    // KL is reported and never enters the loss.
    let (per_token, kl_value, kl_k2) = match lp_ref {
        Some(reference) => {
            let log_ratio = reference.to_kind(Kind::Float) - &lp;
            let kl = k3(&log_ratio);
            let kl_mean = mean(&kl.detach()).double_value(&[]);
            let k2 = mean(&(log_ratio.detach().square() * 0.5)).double_value(&[]);
            let per_token = if config.beta > 0.0 {
                per_token + config.beta * kl
            } else {
                per_token
            };
            (per_token, kl_mean, k2)
        }
        None => (per_token, 0.0, 0.0),
    };
    let loss = (&per_token * &mask).sum(Kind::Float) / &loss_denom;
    let (low, high) = tch::no_grad(|| {
        let adv_b = adv.expand_as(&ratio);
        let low = ratio
            .lt(1.0 - config.epsilon_low)
            .logical_and(&adv_b.lt(0.0))
            .to_kind(Kind::Float);
        let high = ratio
            .gt(1.0 + config.epsilon_high)
            .logical_and(&adv_b.gt(0.0))
            .to_kind(Kind::Float);
        (mean(&low).double_value(&[]), mean(&high).double_value(&[]))
    });
    let metrics = ObjectiveMetrics {
        loss: loss.double_value(&[]),
        kl: kl_value,
        kl_k2,
        clip_low: low,
        clip_high: high,
        clip_region: low + high,
        mean_estimate: tch::no_grad(|| mean(&lp)).double_value(&[]),
        tokens: tokens.double_value(&[]),
    };
    Ok((loss, metrics))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mu_one_gives_ratio_one_and_advantage_weighted_loss() {
        // ρ = 1: loss_j = −A; two tokens of row 0 (A = 2), one of row 1 (A = −1) → (−4 + 1) / 3.
        let lp = Tensor::from_slice2(&[[-1.0f32, -2.0, -3.0], [-0.5, -0.1, -9.0]])
            .set_requires_grad(true);
        let adv = Tensor::from_slice(&[2.0f32, -1.0]);
        let mask = Tensor::from_slice2(&[[1i64, 1, 0], [1, 0, 0]]);
        let cfg = ObjectiveConfig {
            beta: 0.0,
            ..Default::default()
        };
        let (loss, m) = grpo_loss(&lp, None, None, &adv, &mask, &cfg, None).unwrap();
        assert!((m.loss + 1.0).abs() < 1e-6, "{m:?}");
        loss.backward();
        // d/dlp of −ρA with ρ = exp(lp − detach(lp)) is −A per token / 3.
        let g = Vec::<Vec<f32>>::try_from(&lp.grad()).unwrap();
        assert!(
            (g[0][0] + 2.0 / 3.0).abs() < 1e-6
                && (g[1][0] - 1.0 / 3.0).abs() < 1e-6
                && g[0][2] == 0.0
        );
    }

    #[test]
    fn clipping_and_kl_by_hand() {
        // One token, A = 1, ρ = e^1 > 1.5: clipped to 1.5 → loss −1.5, clip_high = 1.
        let lp = Tensor::from_slice2(&[[0.0f32]]);
        let old = Tensor::from_slice2(&[[-1.0f32]]);
        let reference = Tensor::from_slice2(&[[-0.5f32]]);
        let cfg = ObjectiveConfig {
            epsilon_low: 0.5,
            epsilon_high: 0.5,
            beta: 0.1,
        };
        let (_, m) = grpo_loss(
            &lp,
            Some(&old),
            Some(&reference),
            &Tensor::from_slice(&[1.0f32]),
            &Tensor::from_slice2(&[[1i64]]),
            &cfg,
            None,
        )
        .unwrap();
        let kl = (-0.5f64).exp() + 0.5 - 1.0;
        assert!((m.loss - (-1.5 + 0.1 * kl)).abs() < 1e-6, "{m:?}");
        assert!((m.kl - kl).abs() < 1e-6);
        assert_eq!((m.clip_high, m.clip_low, m.clip_region), (1.0, 0.0, 1.0));
    }

    #[test]
    fn a_reference_at_beta_zero_is_reported_and_leaves_the_loss_alone() {
        // Telemetry (`logging.kl_to_start`): the KL to the start is measured; loss and
        // gradient are those of the same batch without a reference, bit for bit.
        let run = |reference: Option<&Tensor>| {
            let lp = Tensor::from_slice2(&[[-1.0f32, -2.0], [-0.5, -3.0]]).set_requires_grad(true);
            let cfg = ObjectiveConfig {
                beta: 0.0,
                ..Default::default()
            };
            let adv = Tensor::from_slice(&[1.0f32, -0.5]);
            let mask = Tensor::from_slice2(&[[1i64, 1], [1, 0]]);
            let (loss, m) = grpo_loss(&lp, None, reference, &adv, &mask, &cfg, None).unwrap();
            loss.backward();
            (m, Vec::<Vec<f32>>::try_from(&lp.grad()).unwrap())
        };
        let reference = Tensor::from_slice2(&[[-1.5f32, -2.0], [-0.5, -1.0]]);
        let (with, g_with) = run(Some(&reference));
        let (without, g_without) = run(None);
        assert_eq!((with.loss, &g_with), (without.loss, &g_without));
        // Tokens (0,0), (0,1), (1,0): k3 of −0.5, 0, 0 over three tokens.
        let want = ((-0.5f64).exp() + 0.5 - 1.0) / 3.0;
        assert!((with.kl - want).abs() < 1e-6, "{} vs {want}", with.kl);
        assert!((with.kl_k2 - 0.125 / 3.0).abs() < 1e-6, "{}", with.kl_k2);
        assert_eq!((without.kl, without.kl_k2), (0.0, 0.0));
    }

    #[test]
    fn an_extreme_reference_gap_keeps_the_kl_finite() {
        // lp_ref − lp = 200 overflows f32's exp; the tangent continuation of k3 keeps value
        // and gradient finite, so one extreme token cannot turn the step into NaN.
        let lp = Tensor::from_slice2(&[[-200.0f32]]).set_requires_grad(true);
        let reference = Tensor::from_slice2(&[[0.0f32]]);
        let cfg = ObjectiveConfig {
            beta: 1.0,
            ..Default::default()
        };
        let (loss, m) = grpo_loss(
            &lp,
            None,
            Some(&reference),
            &Tensor::from_slice(&[0.0f32]),
            &Tensor::from_slice2(&[[1i64]]),
            &cfg,
            None,
        )
        .unwrap();
        let limit = KL_LOG_RATIO_LIMIT;
        let want = (200.0 - limit) * (limit.exp() - 1.0) + limit.exp() - limit - 1.0;
        assert!((m.kl - want).abs() <= 1e-6 * want, "{} vs {want}", m.kl);
        loss.backward();
        // d/dlp of the tangent: −(e^20 − 1) (per token, over one token).
        let g = lp.grad().double_value(&[0, 0]);
        assert!(
            (g + limit.exp() - 1.0).abs() <= 1e-6 * limit.exp(),
            "gradient {g}"
        );
    }

    #[test]
    fn empty_masks_and_zero_advantages_stay_finite() {
        let lp = Tensor::from_slice2(&[[-1.0f32, -2.0]]);
        let (loss, m) = grpo_loss(
            &lp,
            None,
            None,
            &Tensor::from_slice(&[0.0f32]),
            &Tensor::from_slice2(&[[0i64, 0]]),
            &ObjectiveConfig {
                beta: 0.0,
                ..Default::default()
            },
            None,
        )
        .unwrap();
        assert!(loss.double_value(&[]).is_finite() && m.loss == 0.0);
    }

    #[test]
    fn a_kl_term_without_reference_scores_is_an_error_not_a_dropped_term() {
        let lp = Tensor::from_slice2(&[[-1.0f32, -2.0]]);
        let got = grpo_loss(
            &lp,
            None,
            None,
            &Tensor::from_slice(&[1.0f32]),
            &Tensor::from_slice2(&[[1i64, 1]]),
            &ObjectiveConfig::default(),
            None,
        );
        assert_eq!(
            got.err(),
            Some(ObjectiveError::MissingReference { beta: 0.01 })
        );
    }
}
