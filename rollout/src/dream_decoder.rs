//! The Dream decoder (SPEC 2.1): start from `prompt ++ [MASK] × K`, and at each of S steps
//! run the model once, propose tokens at the still-masked positions and reveal some.
//!
//! Differences from the reference `generate`, all deliberate:
//! * logits are computed only at still-masked positions (never `[B, L, V]`);
//! * the number revealed per step is computed **per row** from that row's masked count,
//!   not from the batch average (identical when rows have equal counts, which is always
//!   the case for the confidence algorithms; correct when they do not);
//! * ties in confidence are broken towards the left-most position (stable sort), where the
//!   reference's `topk` order is unspecified;
//! * randomness comes from the counter RNG keyed by (seed, sample index, step, position),
//!   so a rollout is reproducible from (seed, batch) whatever the chunking;
//! * a step with nothing left to reveal skips its forward pass (the output is unchanged).

use couplet_model::random;
use couplet_model::{DreamModel, PromptBatch};
use tch::{Device, Kind, Tensor};

use crate::sampling::{sample_tokens, Confidence, SamplingParams};
use crate::RolloutError;

/// RNG streams of the decoder (see [`couplet_model::random`]).
const STREAM_TOKEN: u64 = 0x10;
const STREAM_TRANSFER: u64 = 0x11;
const STREAM_POSITION: u64 = 0x12;

/// Which positions are revealed at a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DreamAlg {
    /// Each masked position independently with probability 1 − s/t, sampled token.
    Origin,
    /// The n most confident (probability of the proposal).
    MaskgitPlus,
    /// The n with the largest top-1 / top-2 margin.
    TopkMargin,
    /// The n with the lowest entropy (DiffuCoder's choice).
    Entropy,
}

impl DreamAlg {
    pub const NAMES: [&'static str; 4] = ["origin", "maskgit_plus", "topk_margin", "entropy"];

    pub fn parse(name: &str) -> Result<Self, RolloutError> {
        match name {
            "origin" => Ok(DreamAlg::Origin),
            "maskgit_plus" => Ok(DreamAlg::MaskgitPlus),
            "topk_margin" => Ok(DreamAlg::TopkMargin),
            "entropy" => Ok(DreamAlg::Entropy),
            other => Err(RolloutError::Invalid {
                option: "alg".into(),
                message: format!(
                    "unknown algorithm {other:?} (expected one of {})",
                    Self::NAMES.join(", ")
                ),
            }),
        }
    }

    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    fn confidence(self) -> Confidence {
        match self {
            DreamAlg::Origin | DreamAlg::MaskgitPlus => Confidence::Probability,
            DreamAlg::TopkMargin => Confidence::Margin,
            DreamAlg::Entropy => Confidence::NegEntropy,
        }
    }
}

/// Settings of one Dream decoding run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DreamDecodeConfig {
    pub steps: i64,
    pub max_new_tokens: i64,
    pub alg: DreamAlg,
    /// Temperature of the position choice; 0 = take the most confident.
    pub alg_temp: f64,
    pub sampling: SamplingParams,
    pub eps: f64,
}

impl DreamDecodeConfig {
    pub fn validate(&self) -> Result<(), RolloutError> {
        let bad = |option: &str, message: String| {
            Err(RolloutError::Invalid {
                option: option.into(),
                message,
            })
        };
        if self.steps < 1 {
            return bad("steps", format!("must be at least 1, got {}", self.steps));
        }
        if self.max_new_tokens < 1 {
            return bad(
                "max_new_tokens",
                format!("must be at least 1, got {}", self.max_new_tokens),
            );
        }
        if self.alg_temp < 0.0 || !self.alg_temp.is_finite() {
            return bad("alg_temp", format!("must be ≥ 0, got {}", self.alg_temp));
        }
        if !(self.eps > 0.0 && self.eps < 1.0) {
            return bad("eps", format!("must be in (0, 1), got {}", self.eps));
        }
        crate::validate_sampling(&self.sampling)
    }
}

/// Output of a decoding run.
#[derive(Debug)]
pub struct Decoded {
    /// `[B, P + K]`: the (padded) prompt followed by the completion.
    pub sequences: Tensor,
    /// Prompt width P (with padding).
    pub prompt_width: i64,
    /// `[B][K]`: the step at which each completion position was revealed.
    pub reveal_step: Vec<Vec<i64>>,
}

/// Decodes `prompts` with the Dream algorithm. `first_sample` is the global index of the
/// batch's first row: draws are keyed by it, so decoding rows 0..8 at once or in two
/// chunks of 4 (with first_sample 0 and 4) gives the same completions.
pub fn dream_generate(
    model: &DreamModel,
    prompts: &PromptBatch,
    mask_id: i64,
    cfg: &DreamDecodeConfig,
    seed: u64,
    first_sample: u64,
    mut on_step: impl FnMut(i64),
) -> Result<Decoded, RolloutError> {
    cfg.validate()?;
    let _guard = tch::no_grad_guard();
    let device = model.device();
    let prompt_ids = prompts.ids.to_device(device);
    let (b, p) = prompt_ids
        .size2()
        .map_err(RolloutError::torch("prompt ids"))?;
    let k = cfg.max_new_tokens;
    let l = p + k;
    let mut x = Tensor::cat(
        &[
            prompt_ids,
            Tensor::full([b, k], mask_id, (Kind::Int64, device)),
        ],
        1,
    );
    let attention = Tensor::cat(
        &[
            prompts
                .attention_mask
                .to_device(device)
                .to_kind(Kind::Int64),
            Tensor::ones([b, k], (Kind::Int64, device)),
        ],
        1,
    );
    let attention = Some(attention);
    let completion = Tensor::arange(l, (Kind::Int64, device)).ge(p).unsqueeze(0); // [1, L]
    let mut reveal = Tensor::full([b, k], -1i64, (Kind::Int64, device));
    // Same float32 schedule as the reference's torch.linspace(1, eps, S + 1).
    let timesteps: Vec<f32> = Vec::<f32>::try_from(&Tensor::linspace(
        1.0,
        cfg.eps,
        cfg.steps + 1,
        (Kind::Float, Device::Cpu),
    ))
    .map_err(RolloutError::torch("timesteps"))?;
    let confidence = cfg.alg.confidence();

    for step in 0..cfg.steps {
        on_step(step);
        let masked = x.eq(mask_id).logical_and(&completion); // [B, L]
        let counts: Vec<i64> = Vec::<i64>::try_from(
            &masked
                .sum_dim_intlist(1, false, Kind::Int64)
                .to_device(Device::Cpu),
        )
        .map_err(RolloutError::torch("mask counts"))?;
        let total: i64 = counts.iter().sum();
        if total == 0 {
            continue;
        }
        let last = step == cfg.steps - 1;
        let (t, s) = (timesteps[step as usize], timesteps[step as usize + 1]);
        let ratio = 1.0f32 - s / t;

        let hidden = model.hidden_states(&x, attention.as_ref());
        let positions = masked.nonzero(); // [N, 2], row-major
        let logits = model.lm_logits(&model.scoring_rows(&hidden, &positions)); // [N, V]
        let draw_index = draw_indices(&positions, first_sample, step, cfg.steps, p, k);
        let u_token = (cfg.sampling.temperature > 0.0)
            .then(|| uniform_tensor(seed, STREAM_TOKEN, &draw_index, device));

        let revealed_now = match cfg.alg {
            DreamAlg::Origin => {
                let u =
                    uniform_tensor(seed, STREAM_TRANSFER, &draw_index, device).to_kind(Kind::Float);
                let transfer = if last {
                    u.ones_like().to_kind(Kind::Bool)
                } else {
                    u.lt(ratio as f64)
                };
                let (x0, _) = sample_tokens(&logits, &cfg.sampling, confidence, u_token.as_ref());
                let chosen = Tensor::zeros([b, l], (Kind::Bool, device)).index_put(
                    &[Some(positions.select(1, 0)), Some(positions.select(1, 1))],
                    &transfer,
                    false,
                );
                let proposal = x.index_put(
                    &[Some(positions.select(1, 0)), Some(positions.select(1, 1))],
                    &x0,
                    false,
                );
                x = proposal.where_self(&chosen, &x);
                chosen
            }
            _ => {
                let (x0, conf) =
                    sample_tokens(&logits, &cfg.sampling, confidence, u_token.as_ref());
                let index = [Some(positions.select(1, 0)), Some(positions.select(1, 1))];
                let mut full_conf = Tensor::full([b, l], f64::NEG_INFINITY, (Kind::Float, device))
                    .index_put(&index, &conf.to_kind(Kind::Float), false);
                let n: Vec<i64> = counts
                    .iter()
                    .map(|&m| if last { m } else { (m as f32 * ratio) as i64 })
                    .collect();
                if n.iter().all(|&n| n == 0) {
                    continue;
                }
                if cfg.alg_temp > 0.0 {
                    // Sampling n positions without replacement from softmax(conf / alg_temp)
                    // is the top-n of conf / alg_temp + Gumbel noise.
                    let u = uniform_tensor(seed, STREAM_POSITION, &draw_index, device);
                    let gumbel = -(-(u.clamp(1e-20, 1.0 - 1e-16)).log()).log();
                    let noisy = conf.to_kind(Kind::Double) / cfg.alg_temp + gumbel;
                    full_conf = Tensor::full([b, l], f64::NEG_INFINITY, (Kind::Double, device))
                        .index_put(&index, &noisy, false);
                }
                let (_, order) = full_conf.sort_stable(true, -1, true); // [B, L]
                let n = Tensor::from_slice(&n).to_device(device).unsqueeze(1); // [B, 1]
                let take = Tensor::arange(l, (Kind::Int64, device))
                    .unsqueeze(0)
                    .lt_tensor(&n); // [B, L] by rank
                let chosen = Tensor::zeros([b, l], (Kind::Bool, device))
                    .scatter(1, &order, &take)
                    .logical_and(&masked);
                let proposal = x.index_put(&index, &x0, false);
                x = proposal.where_self(&chosen, &x);
                chosen
            }
        };
        let newly = revealed_now.narrow(1, p, k);
        reveal = reveal.masked_fill(&newly, step);
    }

    let reveal_step = Vec::<Vec<i64>>::try_from(&reveal.to_device(Device::Cpu))
        .map_err(RolloutError::torch("reveal steps"))?;
    Ok(Decoded {
        sequences: x,
        prompt_width: p,
        reveal_step,
    })
}

/// Global draw index of each `(row, position)` at `step`: unique per sample, step and
/// completion offset, independent of batch composition and prompt padding.
fn draw_indices(
    positions: &Tensor,
    first_sample: u64,
    step: i64,
    steps: i64,
    prompt_width: i64,
    k: i64,
) -> Vec<u64> {
    let pos =
        Vec::<i64>::try_from(&positions.to_device(Device::Cpu).reshape([-1])).unwrap_or_default();
    pos.chunks(2)
        .map(|rc| {
            let sample = first_sample + rc[0] as u64;
            (sample * steps as u64 + step as u64) * k as u64 + (rc[1] - prompt_width) as u64
        })
        .collect()
}

fn uniform_tensor(seed: u64, stream: u64, indices: &[u64], device: Device) -> Tensor {
    let u: Vec<f64> = indices
        .iter()
        .map(|&i| random::uniform(seed, stream, i))
        .collect();
    Tensor::from_slice(&u).to_device(device)
}
