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

/// Proposed tokens `[N]` and their confidence `[N]` (f32) for `logits [N, V]`.
/// `u [N]` supplies one uniform per row and is only read when τ > 0.
pub fn sample_tokens(
    logits: &Tensor,
    params: &SamplingParams,
    confidence: Confidence,
    u: Option<&Tensor>,
) -> (Tensor, Tensor) {
    let probs = filtered_logits(logits, params).softmax(-1, Kind::Float);
    let (mut conf, x0) = match (params.temperature > 0.0, u) {
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
    match confidence {
        Confidence::Probability => {}
        Confidence::Margin => {
            let (top2, _) = probs.topk(2.min(probs.size()[1]), -1, true, true);
            conf = if top2.size()[1] > 1 {
                top2.select(1, 0) - top2.select(1, 1)
            } else {
                top2.select(1, 0)
            };
        }
        Confidence::NegEntropy => {
            conf = (&probs * (&probs + 1e-10).log()).sum_dim_intlist(-1, false, Kind::Float);
        }
    }
    (x0, conf)
}
