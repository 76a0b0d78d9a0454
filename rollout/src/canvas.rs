//! The sequence being denoised, shared by both decoders: `prompt ++ [MASK] × K`, its
//! attention mask, and the step at which each completion position was revealed.

use couplet_model::{random, PromptBatch};
use tch::{Device, Kind, Tensor};

use crate::fast::DecodeStats;
use crate::RolloutError;

/// Output of a decoding run.
#[derive(Debug)]
pub struct Decoded {
    /// `[B, P + K]`: the (left-padded) prompt followed by the completion.
    pub sequences: Tensor,
    /// `[B, P]`: 1 for real prompt tokens, 0 for padding.
    pub prompt_mask: Tensor,
    /// Prompt width P (with padding).
    pub prompt_width: i64,
    /// `[B][K]`: the step at which each completion position was revealed.
    pub reveal_step: Vec<Vec<i64>>,
    /// `[B][K]`: entropy (nats) of the distribution each completion token was drawn from.
    pub entropy: Vec<Vec<f64>>,
    /// Forwards run (steps that reveal nothing are skipped), refreshes, audit.
    pub stats: DecodeStats,
}

pub(crate) struct Canvas {
    pub x: Tensor,                 // [B, L]
    pub attention: Option<Tensor>, // [B, L], None when nothing is padded
    prompt_mask: Tensor,           // [B, P]
    reveal: Tensor,                // [B, K]
    entropy: Tensor,               // [B, K] f64
    pub mask_id: i64,
    pub b: i64,
    pub p: i64,
    pub k: i64,
    pub device: Device,
    /// `[B, L]` bool: the positions the last reveal wrote (what `delayed` caching
    /// recomputes once).
    pub last_revealed: Tensor,
    /// Global sample index of each row: the key of its random draws.
    samples: Vec<u64>,
}

impl Canvas {
    pub fn new(
        prompts: &PromptBatch,
        samples: &[u64],
        mask_id: i64,
        k: i64,
        device: Device,
    ) -> Result<Self, RolloutError> {
        let prompt_ids = prompts.ids.to_device(device);
        let (b, p) = prompt_ids
            .size2()
            .map_err(RolloutError::torch("prompt ids"))?;
        if samples.len() as i64 != b {
            return Err(RolloutError::Invalid {
                option: "samples".into(),
                message: format!("{} sample indices for {b} prompt rows", samples.len()),
            });
        }
        let prompt_mask = prompts
            .attention_mask
            .to_device(device)
            .to_kind(Kind::Int64);
        if bool::try_from(prompt_ids.eq(mask_id).logical_and(&prompt_mask.ne(0)).any())
            .unwrap_or(false)
        {
            return Err(RolloutError::Invalid {
                option: "prompts".into(),
                message: "a prompt contains the mask token".into(),
            });
        }
        let x = Tensor::cat(
            &[
                prompt_ids,
                Tensor::full([b, k], mask_id, (Kind::Int64, device)),
            ],
            1,
        );
        let padded = bool::try_from(prompt_mask.eq(0).any()).unwrap_or(true);
        let attention = padded.then(|| {
            Tensor::cat(
                &[&prompt_mask, &Tensor::ones([b, k], (Kind::Int64, device))],
                1,
            )
        });
        Ok(Canvas {
            x,
            attention,
            prompt_mask,
            reveal: Tensor::full([b, k], -1i64, (Kind::Int64, device)),
            entropy: Tensor::zeros([b, k], (Kind::Double, device)),
            mask_id,
            b,
            p,
            k,
            device,
            last_revealed: Tensor::zeros([b, p + k], (Kind::Bool, device)),
            samples: samples.to_vec(),
        })
    }

    /// `[B, L]` bool: completion positions still masked (prompt tokens never count).
    pub fn masked(&self) -> Tensor {
        let completion = Tensor::arange(self.p + self.k, (Kind::Int64, self.device))
            .ge(self.p)
            .unsqueeze(0);
        self.x.eq(self.mask_id).logical_and(&completion)
    }

    /// Masked count per row.
    pub fn counts(masked: &Tensor) -> Result<Vec<i64>, RolloutError> {
        Vec::<i64>::try_from(
            &masked
                .sum_dim_intlist(1, false, Kind::Int64)
                .to_device(Device::Cpu),
        )
        .map_err(RolloutError::torch("mask counts"))
    }

    /// Writes `tokens [N]` (proposals for `positions [N, 2]`, drawn from distributions of
    /// entropy `entropy [N]`) where `chosen [B, L]` is set.
    pub fn reveal(
        &mut self,
        positions: &Tensor,
        proposal: (&Tensor, &Tensor),
        chosen: &Tensor,
        step: i64,
    ) {
        let (tokens, entropy) = proposal;
        let index = [Some(positions.select(1, 0)), Some(positions.select(1, 1))];
        self.x = self
            .x
            .index_put(&index, tokens, false)
            .where_self(chosen, &self.x);
        let newly = chosen.narrow(1, self.p, self.k);
        let drawn = Tensor::zeros([self.b, self.p + self.k], (Kind::Double, self.device))
            .index_put(&index, &entropy.to_kind(Kind::Double), false);
        self.entropy = drawn
            .narrow(1, self.p, self.k)
            .where_self(&newly, &self.entropy);
        self.reveal = self.reveal.masked_fill(&newly, step);
        self.last_revealed = chosen.shallow_clone();
    }

    /// `[B, L]` bool: the completion columns.
    pub fn completion(&self) -> Tensor {
        Tensor::arange(self.p + self.k, (Kind::Int64, self.device))
            .ge(self.p)
            .unsqueeze(0)
            .expand([self.b, self.p + self.k], false)
    }

    pub fn finish(self, stats: DecodeStats) -> Result<Decoded, RolloutError> {
        let reveal_step = Vec::<Vec<i64>>::try_from(&self.reveal.to_device(Device::Cpu))
            .map_err(RolloutError::torch("reveal steps"))?;
        let entropy = Vec::<Vec<f64>>::try_from(&self.entropy.to_device(Device::Cpu))
            .map_err(RolloutError::torch("token entropies"))?;
        Ok(Decoded {
            sequences: self.x,
            prompt_mask: self.prompt_mask,
            prompt_width: self.p,
            reveal_step,
            entropy,
            stats,
        })
    }

    /// Global draw index of each masked `(row, position)` at `step`: unique per sample,
    /// step and completion offset, independent of batch composition and prompt padding.
    pub fn draw_indices(&self, positions: &Tensor, step: i64, steps: i64) -> Vec<u64> {
        let pos = Vec::<i64>::try_from(&positions.to_device(Device::Cpu).reshape([-1]))
            .unwrap_or_default();
        pos.chunks(2)
            .map(|rc| {
                let sample = self.samples[rc[0] as usize];
                (sample * steps as u64 + step as u64) * self.k as u64 + (rc[1] - self.p) as u64
            })
            .collect()
    }
}

/// Sets the [MASK] column of proposal logits `[N, V]` to −∞: a decoder must never
/// "reveal" a position as [MASK] (the reference can, and then leaves a mask in the output
/// when it happens on the last step).
pub(crate) fn suppress_mask(logits: Tensor, mask_id: i64) -> Tensor {
    let v = logits.size().last().copied().unwrap_or(0);
    if (0..v).contains(&mask_id) {
        let col = Tensor::from_slice(&[mask_id]).to_device(logits.device());
        logits.index_fill(1, &col, f64::NEG_INFINITY)
    } else {
        logits
    }
}

/// Uniforms `[N]` (f64) on `device` for the given draw indices.
pub(crate) fn uniform_tensor(seed: u64, stream: u64, indices: &[u64], device: Device) -> Tensor {
    let u: Vec<f64> = indices
        .iter()
        .map(|&i| random::uniform(seed, stream, i))
        .collect();
    Tensor::from_slice(&u).to_device(device)
}

/// `[B, L]` bool with the top-`n[b]` entries of each row of `scores` set (ties: left-most
/// first), restricted to `eligible`.
pub(crate) fn top_n_per_row(scores: &Tensor, n: &[i64], eligible: &Tensor) -> Tensor {
    let (b, l) = scores.size2().expect("scores are [B, L]");
    let device = scores.device();
    let (_, order) = scores.sort_stable(true, -1, true);
    let n = Tensor::from_slice(n).to_device(device).unsqueeze(1);
    let take = Tensor::arange(l, (Kind::Int64, device))
        .unsqueeze(0)
        .lt_tensor(&n);
    Tensor::zeros([b, l], (Kind::Bool, device))
        .scatter(1, &order, &take)
        .logical_and(eligible)
}
