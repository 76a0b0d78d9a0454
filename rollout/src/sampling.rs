//! Token proposal for the Dream decoder (`sample_tokens` of SPEC 2.1, step 3): temperature,
//! top-p, top-k, then a sampled or greedy token and its confidence under one of the
//! confidence rules.
//!
//! Randomness comes in as uniforms (one per row) drawn by the caller from the counter RNG,
//! and a categorical draw is the inverse CDF at that uniform, so the result depends only on
//! (seed, sample index, step), not on a generator's state.

use tch::{Kind, Tensor};

/// How a proposal's confidence is measured (which also names the decoding algorithm).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Confidence {
    /// Probability of the proposed token (`maskgit_plus`).
    Probability,
    /// p(top1) − p(top2) (`topk_margin`).
    Margin,
    /// Σ p log(p + 1e-10), the negative entropy (`entropy`).
    NegEntropy,
}

/// Sampling knobs shared by the algorithms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingParams {
    /// τ; 0 means greedy.
    pub temperature: f64,
    /// Nucleus threshold in (0, 1]; 1 disables it.
    pub top_p: Option<f64>,
    /// Keep the k largest logits (ties at the k-th value are kept, as the reference does).
    pub top_k: Option<i64>,
}

/// Applies temperature, top-p and top-k to `logits [N, V]` (f32) exactly as the reference.
pub fn filtered_logits(logits: &Tensor, params: &SamplingParams) -> Tensor {
    let mut logits = if params.temperature > 0.0 {
        logits / params.temperature
    } else {
        logits.shallow_clone()
    };
    let fill = f32::MIN as f64; // torch.finfo(float32).min
    if let Some(p) = params.top_p.filter(|&p| p < 1.0) {
        let (sorted, indices) = logits.sort(-1, true);
        let cumulative = sorted.softmax(-1, Kind::Float).cumsum(-1, Kind::Float);
        let remove = cumulative.gt(p);
        // Shift right by one so the token that crosses p is kept; always keep the first.
        let v = remove.size()[1];
        let keep_first = Tensor::zeros_like(&remove.narrow(1, 0, 1));
        let shifted = Tensor::cat(&[keep_first, remove.narrow(1, 0, v - 1)], 1);
        let mask = Tensor::zeros_like(&shifted).scatter(-1, &indices, &shifted);
        logits = logits.masked_fill(&mask, fill);
    }
    if let Some(k) = params.top_k {
        let v = logits.size()[1];
        let k = k.clamp(1, v);
        let (top, _) = logits.topk(k, -1, true, true);
        let kth = top.narrow(1, k - 1, 1);
        logits = logits.masked_fill(&logits.lt_tensor(&kth), fill);
    }
    logits
}

/// Categorical draws by inverse CDF: for each row the first index whose cumulative
/// probability exceeds `u · total`. `probs [N, V]`, `u [N]` → `[N]` int64.
pub fn categorical(probs: &Tensor, u: &Tensor) -> Tensor {
    let cdf = probs.to_kind(Kind::Double).cumsum(-1, Kind::Double); // [N, V]
    let v = cdf.size()[1];
    let total = cdf.narrow(1, v - 1, 1);
    let target = u.to_kind(Kind::Double).unsqueeze(1) * &total;
    cdf.le_tensor(&target)
        .sum_dim_intlist(-1, false, Kind::Int64)
        .clamp_max(v - 1)
}

/// A step's proposal for each scored position.
#[derive(Debug)]
pub struct Proposal {
    /// Proposed tokens `[N]`.
    pub tokens: Tensor,
    /// Their confidence `[N]` (f32) under the algorithm's rule.
    pub confidence: Tensor,
    /// Their probability `[N]` (f32) under the filtered distribution: what a confidence
    /// threshold compares against, whatever the rule.
    pub probability: Tensor,
    /// Entropy `[N]` (nats, f32) of the filtered distribution each token is drawn from:
    /// the sampling telemetry (a policy sharpening or collapsing shows here first).
    pub entropy: Tensor,
}

/// Proposed tokens for `logits [N, V]` (f32), with confidence and probability.
/// `u [N]` supplies one uniform per row and is only read when τ > 0.
pub fn sample_tokens(
    logits: &Tensor,
    params: &SamplingParams,
    confidence: Confidence,
    u: Option<&Tensor>,
) -> Proposal {
    let probs = filtered_logits(logits, params).softmax(-1, Kind::Float);
    let (probability, x0) = match (params.temperature > 0.0, u) {
        (true, Some(u)) => {
            let x0 = categorical(&probs, u);
            let conf = probs.gather(-1, &x0.unsqueeze(-1), false).squeeze_dim(-1);
            (conf, x0)
        }
        _ => {
            let (conf, x0) = probs.max_dim(-1, false);
            (conf, x0)
        }
    };
    let neg_entropy = (&probs * (&probs + 1e-10).log()).sum_dim_intlist(-1, false, Kind::Float);
    let conf = match confidence {
        Confidence::Probability => probability.shallow_clone(),
        Confidence::Margin => {
            let (top2, _) = probs.topk(2.min(probs.size()[1]), -1, true, true);
            if top2.size()[1] > 1 {
                top2.select(1, 0) - top2.select(1, 1)
            } else {
                top2.select(1, 0)
            }
        }
        Confidence::NegEntropy => neg_entropy.shallow_clone(),
    };
    // The 1e-10 guard makes a certain token's entropy −1e-10; the telemetry floors it at 0.
    let entropy = (-neg_entropy).clamp_min(0.0);
    Proposal {
        tokens: x0,
        confidence: conf,
        probability,
        entropy,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probs_of(logits: &[f32], params: &SamplingParams) -> Vec<f32> {
        let t = Tensor::from_slice(logits).unsqueeze(0);
        Vec::<f32>::try_from(
            &filtered_logits(&t, params)
                .softmax(-1, Kind::Float)
                .squeeze_dim(0),
        )
        .unwrap()
    }

    const GREEDY: SamplingParams = SamplingParams {
        temperature: 0.0,
        top_p: None,
        top_k: None,
    };

    #[test]
    fn top_p_keeps_the_token_that_crosses_p() {
        // probs 0.5, 0.3, 0.2: with p = 0.6 the cumulative sums are 0.5, 0.8, 1.0; the second
        // token crosses 0.6 and is kept, the third is dropped.
        let logits = [0.5f32.ln(), 0.3f32.ln(), 0.2f32.ln()];
        let p = probs_of(
            &logits,
            &SamplingParams {
                top_p: Some(0.6),
                ..GREEDY
            },
        );
        assert!(
            (p[0] - 0.625).abs() < 1e-6 && (p[1] - 0.375).abs() < 1e-6 && p[2] == 0.0,
            "{p:?}"
        );
        // p below the first token's mass keeps only the first.
        let p = probs_of(
            &logits,
            &SamplingParams {
                top_p: Some(0.1),
                ..GREEDY
            },
        );
        assert_eq!(p, vec![1.0, 0.0, 0.0]);
        // p = 1 disables the filter.
        let p = probs_of(
            &logits,
            &SamplingParams {
                top_p: Some(1.0),
                ..GREEDY
            },
        );
        assert!((p[2] - 0.2).abs() < 1e-6);
    }

    #[test]
    fn top_k_keeps_ties_and_clamps_k() {
        let logits = [1.0f32, 3.0, 3.0, 2.0];
        let p = probs_of(
            &logits,
            &SamplingParams {
                top_k: Some(1),
                ..GREEDY
            },
        );
        assert!(
            p[0] == 0.0 && p[3] == 0.0 && (p[1] - 0.5).abs() < 1e-6 && (p[2] - 0.5).abs() < 1e-6,
            "{p:?}"
        );
        let p = probs_of(
            &logits,
            &SamplingParams {
                top_k: Some(100),
                ..GREEDY
            },
        );
        assert!(p.iter().all(|&x| x > 0.0));
    }

    #[test]
    fn temperature_sharpens() {
        let logits = [1.0f32, 2.0];
        let cold = probs_of(
            &logits,
            &SamplingParams {
                temperature: 0.5,
                ..GREEDY
            },
        );
        let hot = probs_of(
            &logits,
            &SamplingParams {
                temperature: 2.0,
                ..GREEDY
            },
        );
        assert!(cold[1] > hot[1]);
        assert!((cold[1] - 1.0 / (1.0 + (-2.0f32).exp())).abs() < 1e-6);
    }

    #[test]
    fn categorical_is_the_inverse_cdf() {
        let probs = Tensor::from_slice(&[0.2f32, 0.5, 0.3])
            .unsqueeze(0)
            .repeat([5, 1]);
        let u = Tensor::from_slice(&[0.0f64, 0.19, 0.2, 0.69, 0.99]);
        let got = Vec::<i64>::try_from(&categorical(&probs, &u)).unwrap();
        assert_eq!(got, vec![0, 0, 1, 1, 2]);
    }

    #[test]
    fn confidences_by_hand() {
        let logits = Tensor::from_slice(&[0.6f32.ln(), 0.4f32.ln()]).unsqueeze(0);
        let Proposal {
            tokens: x0,
            confidence: c,
            ..
        } = sample_tokens(&logits, &GREEDY, Confidence::Probability, None);
        assert_eq!(x0.int64_value(&[0]), 0);
        assert!((c.double_value(&[0]) - 0.6).abs() < 1e-6);
        let c = sample_tokens(&logits, &GREEDY, Confidence::Margin, None).confidence;
        assert!((c.double_value(&[0]) - 0.2).abs() < 1e-6);
        let c = sample_tokens(&logits, &GREEDY, Confidence::NegEntropy, None).confidence;
        let want = 0.6 * 0.6f64.ln() + 0.4 * 0.4f64.ln();
        assert!((c.double_value(&[0]) - want).abs() < 1e-5);
    }

    #[test]
    fn entropy_is_that_of_the_filtered_distribution() {
        // probs 0.5, 0.3, 0.2; top-p 0.6 keeps 0.5 and 0.3 → renormalised 0.625, 0.375.
        let logits = Tensor::from_slice(&[0.5f32.ln(), 0.3f32.ln(), 0.2f32.ln()]).unsqueeze(0);
        let h = |p: &[f64]| -p.iter().map(|p| p * p.ln()).sum::<f64>();
        let all = sample_tokens(&logits, &GREEDY, Confidence::Probability, None).entropy;
        assert!((all.double_value(&[0]) - h(&[0.5, 0.3, 0.2])).abs() < 1e-5);
        let nucleus = SamplingParams {
            top_p: Some(0.6),
            ..GREEDY
        };
        let kept = sample_tokens(&logits, &nucleus, Confidence::Probability, None).entropy;
        assert!((kept.double_value(&[0]) - h(&[0.625, 0.375])).abs() < 1e-5);
    }

    #[test]
    fn sampled_confidence_is_the_drawn_tokens_probability() {
        let logits = Tensor::from_slice(&[0.25f32.ln(), 0.75f32.ln()])
            .unsqueeze(0)
            .repeat([2, 1]);
        let u = Tensor::from_slice(&[0.1f64, 0.9]);
        let params = SamplingParams {
            temperature: 1.0,
            ..GREEDY
        };
        let Proposal {
            tokens: x0,
            confidence: c,
            ..
        } = sample_tokens(&logits, &params, Confidence::Probability, Some(&u));
        assert_eq!(Vec::<i64>::try_from(&x0).unwrap(), vec![0, 1]);
        let c = Vec::<f32>::try_from(&c).unwrap();
        assert!((c[0] - 0.25).abs() < 1e-6 && (c[1] - 0.75).abs() < 1e-6);
    }
}
