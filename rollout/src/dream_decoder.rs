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
//! * a step with nothing left to reveal skips its forward pass (the output is unchanged);
//! * the [MASK] token is never proposed (its logit is set to −∞ before sampling).

use couplet_model::PromptBatch;
use tch::{Device, Kind, Tensor};

use crate::canvas::{top_n_per_row, uniform_tensor, Canvas, Decoded};
use crate::denoiser::Denoiser;
use crate::fast::{threshold_reveal, CacheMode, FastDecoding, Scorer};
use crate::sampling::{sample_tokens, Confidence, SamplingParams};
use crate::settings::DecoderKind;
use crate::RolloutError;

// RNG streams of the decoder (see [`couplet_model::random`]).
pub use couplet_model::random::stream::DREAM_POSITION as STREAM_POSITION;
pub use couplet_model::random::stream::DREAM_TOKEN as STREAM_TOKEN;
pub use couplet_model::random::stream::DREAM_TRANSFER as STREAM_TRANSFER;

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

couplet_model::from_str_via!(DreamAlg, RolloutError, DreamAlg::parse);

impl DreamAlg {
    /// The names, in variant order.
    pub const NAMES: [&'static str; 4] = ["origin", "maskgit_plus", "topk_margin", "entropy"];

    /// The algorithm called `name`.
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

    /// The algorithm's name.
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
    /// Diffusion steps.
    pub steps: i64,
    /// Completion canvas length.
    pub max_new_tokens: i64,
    /// Which positions are revealed at a step.
    pub alg: DreamAlg,
    /// Temperature of the position choice; 0 = take the most confident.
    pub alg_temp: f64,
    /// Token sampling.
    pub sampling: SamplingParams,
    /// Lower bound of the time grid `linspace(1, eps, steps + 1)`.
    pub eps: f64,
    /// Threshold reveals and key/value caching ([`FastDecoding::EXACT`]: none).
    pub fast: FastDecoding,
}

impl DreamDecodeConfig {
    /// Checks every setting's range; the error names the option.
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
        self.fast.validate(DecoderKind::Dream)?;
        crate::validate_sampling(&self.sampling)
    }
}

/// Decodes `prompts` with the Dream algorithm. `samples[r]` is the global sample index of
/// row r: draws are keyed by it, so decoding rows together or in any chunks, in any order,
/// gives the same completions. `on_step` is called
/// once per step (for progress bars).
pub fn dream_generate(
    model: &dyn Denoiser,
    prompts: &PromptBatch,
    mask_id: i64,
    cfg: &DreamDecodeConfig,
    seed: u64,
    samples: &[u64],
    mut on_step: impl FnMut(i64),
) -> Result<Decoded, RolloutError> {
    cfg.validate()?;
    let _guard = tch::no_grad_guard();
    let device = model.device();
    let mut canvas = Canvas::new(prompts, samples, mask_id, cfg.max_new_tokens, device)?;
    let mut scorer = Scorer::new(model, mask_id, cfg.fast.cache, cfg.fast.audit);
    let (b, l) = (canvas.b, canvas.p + canvas.k);
    // Same float32 schedule as the reference's torch.linspace(1, eps, S + 1).
    let timesteps = Vec::<f32>::try_from(&Tensor::linspace(
        1.0,
        cfg.eps,
        cfg.steps + 1,
        (Kind::Float, Device::Cpu),
    ))
    .map_err(RolloutError::torch("timesteps"))?;
    let confidence = cfg.alg.confidence();

    for step in 0..cfg.steps {
        on_step(step);
        let masked = canvas.masked(); // [B, L]
        let counts = Canvas::counts(&masked)?;
        if counts.iter().all(|&c| c == 0) {
            continue;
        }
        let last = step == cfg.steps - 1;
        let (t, s) = (timesteps[step as usize], timesteps[step as usize + 1]);
        let ratio = 1.0f32 - s / t;
        let positions = masked.nonzero(); // [N, 2], row-major
        let draw_index = canvas.draw_indices(&positions, step, cfg.steps);
        let index = [Some(positions.select(1, 0)), Some(positions.select(1, 1))];

        // Decide how many (origin: which) positions this step reveals before paying for the
        // forward pass; a step that reveals nothing leaves the canvas unchanged. A threshold
        // step always reveals at least one position per unfinished row.
        let origin_transfer = match (cfg.alg, cfg.fast.threshold) {
            (DreamAlg::Origin, None) => {
                let u =
                    uniform_tensor(seed, STREAM_TRANSFER, &draw_index, device).to_kind(Kind::Float);
                let transfer = if last {
                    u.ones_like().to_kind(Kind::Bool)
                } else {
                    u.lt(ratio as f64)
                };
                if !bool::try_from(transfer.any()).unwrap_or(true) {
                    continue;
                }
                Some(transfer)
            }
            _ => None,
        };
        let n: Vec<i64> = counts
            .iter()
            .map(|&m| if last { m } else { (m as f32 * ratio) as i64 })
            .collect();
        if cfg.fast.threshold.is_none() && origin_transfer.is_none() && n.iter().all(|&n| n == 0) {
            continue;
        }

        let scored = scorer.score(&canvas, &masked, false, || {
            delayed_or_prefix(&canvas, &masked, cfg.fast.cache.mode)
        }); // [N, V]
        let u_token = (cfg.sampling.temperature > 0.0)
            .then(|| uniform_tensor(seed, STREAM_TOKEN, &draw_index, device));
        let proposal = sample_tokens(&scored.logits, &cfg.sampling, confidence, u_token.as_ref());
        let on_canvas = |values: &Tensor, fill: f64| {
            Tensor::full([b, l], fill, (Kind::Double, device)).index_put(
                &index,
                &values.to_kind(Kind::Double),
                false,
            )
        };
        let chosen = match origin_transfer {
            Some(transfer) => {
                Tensor::zeros([b, l], (Kind::Bool, device)).index_put(&index, &transfer, false)
            }
            None => {
                let scores = match (cfg.alg, cfg.alg_temp > 0.0) {
                    // Origin under a threshold: its fallback position is a random one.
                    (DreamAlg::Origin, _) => {
                        uniform_tensor(seed, STREAM_TRANSFER, &draw_index, device)
                    }
                    // Sampling n positions without replacement from softmax(conf / alg_temp)
                    // is the top-n of conf / alg_temp + Gumbel noise.
                    (_, true) => {
                        let u = uniform_tensor(seed, STREAM_POSITION, &draw_index, device);
                        let gumbel = -(-(u.clamp(1e-300, 1.0)).log()).log();
                        proposal.confidence.to_kind(Kind::Double) / cfg.alg_temp + gumbel
                    }
                    (_, false) => proposal.confidence.to_kind(Kind::Double),
                };
                let full = on_canvas(&scores, f64::NEG_INFINITY);
                match cfg.fast.threshold {
                    Some(tau) => threshold_reveal(
                        &on_canvas(&proposal.probability, 0.0),
                        &full,
                        &masked,
                        tau,
                        last,
                    ),
                    None => top_n_per_row(&full, &n, &masked),
                }
            }
        };
        scorer.audit(&scored, &proposal.tokens, &chosen.index(&index));
        canvas.reveal(
            &positions,
            (&proposal.tokens, &proposal.entropy),
            &chosen,
            step,
        );
    }
    canvas.finish(scorer.stats)
}

/// What a cached Dream step recomputes: the completion (`prefix`), or the masked
/// positions and the tokens revealed on the last forward (`delayed`).
fn delayed_or_prefix(canvas: &Canvas, masked: &Tensor, mode: CacheMode) -> Tensor {
    match mode {
        CacheMode::Prefix => canvas.completion(),
        CacheMode::Delayed => masked.logical_or(&canvas.last_revealed),
        // `dual` is rejected for this decoder by validation; `none` never asks.
        CacheMode::None | CacheMode::Dual => canvas.completion(),
    }
}
