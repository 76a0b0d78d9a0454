//! The LLaDA / d1 block decoder (SPEC 2.2): semi-autoregressive over blocks of
//! `block_length`; within a block, `steps / num_blocks` steps each reveal a precomputed
//! number of positions (`floor(m / steps)`, plus one for the first `m mod steps` steps).
//!
//! Works with shifted (Dream) and unshifted (LLaDA) checkpoints alike: the model's
//! [`Denoiser::score`] applies its own convention, read from its config.
//!
//! Differences from the reference `generate`, all exact or documented:
//! * logits are computed only at the still-masked positions of the **current block** (the
//!   reference computes `[B, L, V]` and then sets everything outside the block to −∞);
//! * the Gumbel-max proposal `argmax(exp(l) / (−log u)^τ)` equals
//!   `argmax(l / τ + Gumbel)`, i.e. one draw from `softmax(l / τ)`; we take that draw by
//!   inverse CDF in float64 with one counter-RNG uniform per position instead of V uniforms;
//! * ties in confidence go to the left-most position;
//! * a step that reveals nothing skips its forward pass.

use couplet_model::PromptBatch;
use tch::{Kind, Tensor};

use crate::canvas::{top_n_per_row, uniform_tensor, Canvas, Decoded};
use crate::denoiser::Denoiser;
use crate::fast::{threshold_reveal, CacheMode, FastDecoding, Scorer};
use crate::sampling::categorical;
use crate::settings::DecoderKind;
use crate::RolloutError;

pub use couplet_model::random::stream::BLOCK_REMASK as STREAM_REMASK;
pub use couplet_model::random::stream::BLOCK_TOKEN as STREAM_TOKEN;

/// How the positions to reveal are chosen among the block's masked ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Remasking {
    /// Highest softmax probability of the proposal.
    LowConfidence,
    /// Uniformly random.
    Random,
}

couplet_model::from_str_via!(Remasking, RolloutError, Remasking::parse);

impl Remasking {
    /// The rule called `name`.
    pub fn parse(name: &str) -> Result<Self, RolloutError> {
        match name {
            "low_confidence" => Ok(Remasking::LowConfidence),
            "random" => Ok(Remasking::Random),
            other => Err(RolloutError::Invalid {
                option: "remasking".into(),
                message: format!("unknown remasking {other:?} (expected low_confidence or random)"),
            }),
        }
    }
}

/// Settings of one block-decoding run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlockDecodeConfig {
    /// Diffusion steps over all blocks.
    pub steps: i64,
    /// Completion canvas length.
    pub max_new_tokens: i64,
    /// Block size (divides max_new_tokens).
    pub block_length: i64,
    /// τ of the Gumbel-max proposal; 0 = argmax.
    pub temperature: f64,
    /// How the positions to reveal are chosen.
    pub remasking: Remasking,
    /// Threshold reveals and key/value caching ([`FastDecoding::EXACT`]: none).
    pub fast: FastDecoding,
}

impl BlockDecodeConfig {
    /// Checks every setting's range; the error names the option.
    pub fn validate(&self) -> Result<(), RolloutError> {
        let bad = |option: &str, message: String| {
            Err(RolloutError::Invalid {
                option: option.into(),
                message,
            })
        };
        if self.max_new_tokens < 1 {
            return bad(
                "max_new_tokens",
                format!("must be at least 1, got {}", self.max_new_tokens),
            );
        }
        if self.block_length < 1 || self.max_new_tokens % self.block_length != 0 {
            return bad(
                "block_length",
                format!(
                    "{} must be ≥ 1 and divide max_new_tokens = {}",
                    self.block_length, self.max_new_tokens
                ),
            );
        }
        let blocks = self.max_new_tokens / self.block_length;
        if self.steps < 1 || self.steps % blocks != 0 {
            return bad(
                "steps",
                format!("{} must be a positive multiple of the number of blocks ({blocks} = max_new_tokens / block_length)", self.steps),
            );
        }
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return bad(
                "temperature",
                format!("must be ≥ 0, got {}", self.temperature),
            );
        }
        self.fast.validate(DecoderKind::Block)
    }
}

/// Per-step reveal counts for a block with `masked` masked positions over `steps` steps.
pub fn transfer_schedule(masked: i64, steps: i64) -> Vec<i64> {
    let (base, rem) = (masked / steps, masked % steps);
    (0..steps).map(|i| base + i64::from(i < rem)).collect()
}

/// Decodes `prompts` block by block. Draws are keyed by `(seed, samples[row], step,
/// position)`, as in the Dream decoder.
pub fn block_generate(
    model: &dyn Denoiser,
    prompts: &PromptBatch,
    mask_id: i64,
    cfg: &BlockDecodeConfig,
    seed: u64,
    samples: &[u64],
    mut on_step: impl FnMut(i64),
) -> Result<Decoded, RolloutError> {
    cfg.validate()?;
    let _guard = tch::no_grad_guard();
    let device = model.device();
    let mut canvas = Canvas::new(prompts, samples, mask_id, cfg.max_new_tokens, device)?;
    let mut scorer = Scorer::new(model, mask_id, cfg.fast.cache, cfg.fast.audit);
    let (b, p, l) = (canvas.b, canvas.p, canvas.p + canvas.k);
    let blocks = cfg.max_new_tokens / cfg.block_length;
    let steps_per_block = cfg.steps / blocks;
    let position = Tensor::arange(l, (Kind::Int64, device)).unsqueeze(0);

    for block in 0..blocks {
        let (start, end) = (
            p + block * cfg.block_length,
            p + (block + 1) * cfg.block_length,
        );
        let in_block = position.ge(start).logical_and(&position.lt(end));
        let schedules: Vec<Vec<i64>> = Canvas::counts(&canvas.masked().logical_and(&in_block))?
            .into_iter()
            .map(|m| transfer_schedule(m, steps_per_block))
            .collect();
        let mut first_forward = true;
        for i in 0..steps_per_block {
            let step = block * steps_per_block + i;
            on_step(step);
            let masked = canvas.masked().logical_and(&in_block); // [B, L]
            let n: Vec<i64> = match cfg.fast.threshold {
                Some(_) => Canvas::counts(&masked)?,
                None => schedules.iter().map(|s| s[i as usize]).collect(),
            };
            if n.iter().all(|&n| n == 0) {
                continue;
            }
            let positions = masked.nonzero();
            let draw_index = canvas.draw_indices(&positions, step, cfg.steps);
            let scored = scorer.score(&canvas, &masked, first_forward, || {
                let computed = match cfg.fast.cache.mode {
                    CacheMode::Prefix => position.ge(start),
                    CacheMode::Delayed => masked.logical_or(&canvas.last_revealed),
                    // `none` never asks.
                    CacheMode::Dual | CacheMode::None => in_block.shallow_clone(),
                };
                computed
                    .logical_and(&position.ge(start))
                    .expand([b, l], false)
            });
            first_forward = false;
            let logits = scored.logits.to_kind(Kind::Double); // [N, V]
            let probs = logits.softmax(-1, Kind::Double);
            // The distribution a token is drawn from (the model's own when greedy).
            let drawn = if cfg.temperature > 0.0 {
                (logits.shallow_clone() / cfg.temperature).softmax(-1, Kind::Double)
            } else {
                probs.shallow_clone()
            };
            let x0 = if cfg.temperature > 0.0 {
                let u = uniform_tensor(seed, STREAM_TOKEN, &draw_index, device);
                categorical(&drawn, &u)
            } else {
                logits.argmax(-1, false)
            };
            let entropy = -(&drawn * (&drawn + 1e-300).log()).sum_dim_intlist(-1, false, None);
            // The proposal's probability: the low-confidence ranking and the threshold's
            // measure (when either needs it).
            let probability = (cfg.remasking == Remasking::LowConfidence
                || cfg.fast.threshold.is_some())
            .then(|| probs.gather(-1, &x0.unsqueeze(-1), false).squeeze_dim(-1));
            let conf = match (cfg.remasking, &probability) {
                (Remasking::LowConfidence, Some(p)) => p.shallow_clone(),
                _ => uniform_tensor(seed, STREAM_REMASK, &draw_index, device),
            };
            let index = [Some(positions.select(1, 0)), Some(positions.select(1, 1))];
            let on_canvas = |values: &Tensor, fill: f64| {
                Tensor::full([b, l], fill, (Kind::Double, device)).index_put(&index, values, false)
            };
            let full = on_canvas(&conf, f64::NEG_INFINITY);
            let chosen = match cfg.fast.threshold {
                Some(tau) => {
                    let last = i == steps_per_block - 1;
                    let p = probability.as_ref().expect("computed under a threshold");
                    threshold_reveal(&on_canvas(p, 0.0), &full, &masked, tau, last)
                }
                None => top_n_per_row(&full, &n, &masked),
            };
            scorer.audit(&scored, &x0, &chosen.index(&index));
            canvas.reveal(&positions, (&x0, &entropy), &chosen, step);
        }
    }
    canvas.finish(scorer.stats)
}
