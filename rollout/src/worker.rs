//! The rollout worker: G completions for each prompt, in chunks of
//! `generation_batch_size`, cut at their end token, decoded to text, with decode orders and
//! AR-ness — everything the trainer needs from one round of sampling.

use std::time::Instant;

use couplet_model::{PromptBatch, SpecialTokens, TextTokenizer};
use tch::{Device, Kind, Tensor};

use crate::canvas::Decoded;
use crate::denoiser::Denoiser;
use crate::dream_decoder::{dream_generate, DreamDecodeConfig};
use crate::fast::DecodeStats;
use crate::llada_decoder::{block_generate, BlockDecodeConfig};
use crate::order::{reveal_order, ArNess};
use crate::RolloutError;

/// Which decoder samples the completions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DecoderConfig {
    /// Dream's decoder (DiffuCoder's rollouts).
    Dream(DreamDecodeConfig),
    /// LLaDA / d1 semi-autoregressive block decoder.
    Block(BlockDecodeConfig),
}

impl DecoderConfig {
    /// Completion canvas length.
    pub fn max_new_tokens(&self) -> i64 {
        match self {
            DecoderConfig::Dream(c) => c.max_new_tokens,
            DecoderConfig::Block(c) => c.max_new_tokens,
        }
    }

    /// Diffusion steps (an upper bound of forwards per chunk).
    pub fn steps(&self) -> i64 {
        match self {
            DecoderConfig::Dream(c) => c.steps,
            DecoderConfig::Block(c) => c.steps,
        }
    }

    /// Checks every setting's range; the error names the option.
    pub fn validate(&self) -> Result<(), RolloutError> {
        match self {
            DecoderConfig::Dream(c) => c.validate(),
            DecoderConfig::Block(c) => c.validate(),
        }
    }

    /// Runs the decoder on one chunk.
    pub fn decode(
        &self,
        model: &dyn Denoiser,
        prompts: &PromptBatch,
        mask_id: i64,
        seed: u64,
        samples: &[u64],
        on_step: impl FnMut(i64),
    ) -> Result<Decoded, RolloutError> {
        match self {
            DecoderConfig::Dream(c) => {
                dream_generate(model, prompts, mask_id, c, seed, samples, on_step)
            }
            DecoderConfig::Block(c) => {
                block_generate(model, prompts, mask_id, c, seed, samples, on_step)
            }
        }
    }
}

/// Settings of the worker.
#[derive(Debug, Clone)]
pub struct RolloutConfig {
    /// The decoder.
    pub decoder: DecoderConfig,
    /// G: completions per prompt.
    pub group_size: usize,
    /// Sequences decoded together (one forward batch).
    pub generation_batch_size: usize,
    /// Keep only the last N prompt tokens.
    pub max_prompt_length: Option<usize>,
    /// Tokens that end a completion; `None` = the tokenizer's eos + `<|im_end|>`.
    pub end_tokens: Option<Vec<i64>>,
    /// Draw an indicatif progress bar on stderr.
    pub progress: bool,
}

impl RolloutConfig {
    /// The decoder's rules, and group and batch sizes of at least 1.
    pub fn validate(&self) -> Result<(), RolloutError> {
        self.decoder.validate()?;
        let at_least_one = |option: &str, value: usize| {
            if value == 0 {
                Err(RolloutError::Invalid {
                    option: option.into(),
                    message: "must be at least 1".into(),
                })
            } else {
                Ok(())
            }
        };
        at_least_one("group_size", self.group_size)?;
        at_least_one("generation_batch_size", self.generation_batch_size)
    }

    /// `group_size` completions per prompt decoded `generation_batch_size` at a time, prompts
    /// cut to their last `max_prompt_length` tokens; the tokenizer's end tokens, no bar.
    pub fn new(
        decoder: DecoderConfig,
        group_size: usize,
        generation_batch_size: usize,
        max_prompt_length: Option<usize>,
    ) -> Self {
        RolloutConfig {
            decoder,
            group_size,
            generation_batch_size,
            max_prompt_length,
            end_tokens: None,
            progress: false,
        }
    }
}

/// G completions for each of a batch of prompts, prompt-major (rows `i·G .. (i+1)·G` belong
/// to prompt i).
#[derive(Debug)]
pub struct Rollout {
    /// `[N, P]` left-padded prompt ids and their mask (1 = real token).
    pub prompt_ids: Tensor,
    /// `[N, P]` 1 on real prompt tokens.
    pub prompt_mask: Tensor,
    /// `[N, K]` completion ids as decoded (after the end token: whatever was decoded).
    pub completion_ids: Tensor,
    /// `[N, K]` int64: 1 up to and including the first end token, 0 after.
    pub completion_mask: Tensor,
    /// Completion text (special tokens skipped), cut at the end token.
    pub texts: Vec<String>,
    /// Tokens up to and including the end token (K when none was produced).
    pub completion_lengths: Vec<usize>,
    /// Whether a completion produced an end token (false = clipped at K).
    pub terminated: Vec<bool>,
    /// Prompt index of each row.
    pub prompt_index: Vec<usize>,
    /// Reveal order of the K completion positions of each row.
    pub decode_orders: Vec<Vec<usize>>,
    /// The decode step at which each of the K completion positions of each row was
    /// revealed (the step map trajectory methods train on).
    pub reveal_steps: Vec<Vec<i64>>,
    /// AR-ness of each row's decode order.
    pub arness: Vec<ArNess>,
    /// Per row: the entropies (nats) of the distributions its completion tokens were drawn
    /// from, summed over the completion (up to and including the end token).
    pub entropy_sums: Vec<f64>,
    /// Prompts that lost tokens to `max_prompt_length`.
    pub truncated_prompts: usize,
    /// Forward passes spent, refreshes, audit (summed over the decoding chunks).
    pub stats: DecodeStats,
    /// Decoding runs (chunks of `generation_batch_size` rows) the rows took.
    pub chunks: usize,
    /// Decoding wall time.
    pub seconds: f64,
}

impl Rollout {
    /// Completions.
    pub fn len(&self) -> usize {
        self.texts.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }

    /// Generated completion tokens per second (all K positions of every row).
    pub fn tokens_per_second(&self) -> f64 {
        self.len() as f64 * self.canvas_length() / self.seconds.max(1e-9)
    }

    /// Forwards per decoding run (per chunk of rows decoded together).
    pub fn forwards_per_chunk(&self) -> f64 {
        self.stats.forward_passes as f64 / self.chunks.max(1) as f64
    }

    /// Tokens each row revealed per forward, on average (K / forwards per chunk).
    pub fn tokens_per_forward(&self) -> f64 {
        self.canvas_length() / self.forwards_per_chunk().max(1e-9)
    }

    fn canvas_length(&self) -> f64 {
        self.completion_ids.size().get(1).copied().unwrap_or(0) as f64
    }

    /// `[N, P + K]` full sequences.
    pub fn sequences(&self) -> Tensor {
        Tensor::cat(&[&self.prompt_ids, &self.completion_ids], 1)
    }

    /// AR-ness averaged over the completions.
    pub fn mean_arness(&self) -> ArNess {
        ArNess::mean(&self.arness)
    }

    /// Left-pads the prompt batch to at least `width` columns. Data-parallel ranks pad to
    /// the widest prompt of the whole round, so every rank's training batch has the layout
    /// one process would give it (and the same arithmetic, bit for bit).
    pub fn pad_prompts_to(&mut self, width: i64, pad: i64) {
        if self.prompt_ids.size()[1] < width {
            self.prompt_ids = left_pad(&self.prompt_ids, width, pad);
            self.prompt_mask = left_pad(&self.prompt_mask, width, 0);
        }
    }

    /// Joins rollouts of consecutive prompt groups (e.g. decoded while the previous
    /// group's rewards ran) into one, left-padding prompts to the widest with `pad`.
    pub fn concat(parts: Vec<Rollout>, pad: i64) -> Rollout {
        let width = parts
            .iter()
            .map(|r| r.prompt_ids.size()[1])
            .max()
            .unwrap_or(0);
        let left_pad = |t: &Tensor, value: i64| left_pad(t, width, value);
        let mut out = Rollout {
            prompt_ids: Tensor::cat(
                &parts
                    .iter()
                    .map(|r| left_pad(&r.prompt_ids, pad))
                    .collect::<Vec<_>>(),
                0,
            ),
            prompt_mask: Tensor::cat(
                &parts
                    .iter()
                    .map(|r| left_pad(&r.prompt_mask, 0))
                    .collect::<Vec<_>>(),
                0,
            ),
            completion_ids: Tensor::cat(
                &parts
                    .iter()
                    .map(|r| r.completion_ids.shallow_clone())
                    .collect::<Vec<_>>(),
                0,
            ),
            completion_mask: Tensor::cat(
                &parts
                    .iter()
                    .map(|r| r.completion_mask.shallow_clone())
                    .collect::<Vec<_>>(),
                0,
            ),
            texts: Vec::new(),
            completion_lengths: Vec::new(),
            terminated: Vec::new(),
            prompt_index: Vec::new(),
            decode_orders: Vec::new(),
            reveal_steps: Vec::new(),
            arness: Vec::new(),
            entropy_sums: Vec::new(),
            truncated_prompts: 0,
            stats: DecodeStats::default(),
            chunks: 0,
            seconds: 0.0,
        };
        let mut prompts_before = 0;
        for part in parts {
            let count = part.prompt_index.iter().max().map_or(0, |m| m + 1);
            out.prompt_index
                .extend(part.prompt_index.iter().map(|i| i + prompts_before));
            prompts_before += count;
            out.texts.extend(part.texts);
            out.completion_lengths.extend(part.completion_lengths);
            out.terminated.extend(part.terminated);
            out.decode_orders.extend(part.decode_orders);
            out.reveal_steps.extend(part.reveal_steps);
            out.arness.extend(part.arness);
            out.entropy_sums.extend(part.entropy_sums);
            out.truncated_prompts += part.truncated_prompts;
            out.stats.add(&part.stats);
            out.chunks += part.chunks;
            out.seconds += part.seconds;
        }
        out
    }
}

/// `t` (`[N, P]`, P ≤ width) with `width − P` columns of `value` prepended.
fn left_pad(t: &Tensor, width: i64, value: i64) -> Tensor {
    let (n, p) = t.size2().expect("[N, P]");
    if p >= width {
        return t.shallow_clone();
    }
    Tensor::cat(
        &[
            Tensor::full([n, width - p], value, (t.kind(), t.device())),
            t.shallow_clone(),
        ],
        1,
    )
}

/// Samples `group_size` completions for every prompt (already chat-formatted text).
/// Row r of the result has global sample index `first_sample + r`; draws are keyed by it,
/// so the result does not depend on `generation_batch_size` or on the order in which rows
/// are decoded. Rows are decoded in chunks of similar prompt length (see
/// [`length_buckets`]), which wastes less compute on padding; results come back in row
/// order.
pub fn generate_rollout(
    model: &dyn Denoiser,
    tokenizer: &TextTokenizer,
    prompts: &[String],
    cfg: &RolloutConfig,
    seed: u64,
    first_sample: u64,
) -> Result<Rollout, RolloutError> {
    cfg.validate()?;
    let special = tokenizer.special();
    let end_tokens = cfg
        .end_tokens
        .clone()
        .unwrap_or_else(|| special.end_of_completion());
    let start = Instant::now();
    let prompt_rows = PromptRows::tokenize(tokenizer, prompts, cfg)?;
    let rows = &prompt_rows.rows;
    let decoded = decode_rows(model, rows, cfg, special, seed, first_sample)?;
    let device = model.device();
    let prompt_batch =
        PromptBatch::left_padded(rows, special.pad, prompt_rows.truncated).to_device(device);
    let completion_ids = Tensor::stack(&decoded.completions, 0);
    let ids_cpu = Vec::<Vec<i64>>::try_from(&completion_ids.to_device(Device::Cpu))
        .map_err(RolloutError::torch("completion ids"))?;
    let ends = CompletionEnds::find(&ids_cpu, &end_tokens, tokenizer)?;
    let k = cfg.decoder.max_new_tokens();
    let decode_orders: Vec<Vec<usize>> = decoded
        .reveal_steps
        .iter()
        .map(|r| reveal_order(r))
        .collect();
    let arness = decode_orders.iter().map(|o| ArNess::of_order(o)).collect();
    let entropy_sums = decoded
        .entropies
        .iter()
        .zip(&ends.lengths)
        .map(|(e, &n)| e.iter().take(n).sum())
        .collect();
    Ok(Rollout {
        prompt_ids: prompt_batch.ids,
        prompt_mask: prompt_batch.attention_mask,
        completion_mask: Tensor::from_slice(&ends.mask)
            .view([rows.len() as i64, k])
            .to_device(device)
            .to_kind(Kind::Int64),
        completion_ids,
        texts: ends.texts,
        completion_lengths: ends.lengths,
        terminated: ends.terminated,
        prompt_index: prompt_rows.prompt_index,
        decode_orders,
        reveal_steps: decoded.reveal_steps,
        arness,
        entropy_sums,
        truncated_prompts: prompt_rows.truncated,
        stats: decoded.stats,
        chunks: decoded.chunks,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// The token rows of a rollout: each prompt tokenised once and repeated G times.
pub(crate) struct PromptRows {
    pub(crate) rows: Vec<Vec<i64>>,
    /// The prompt of each row.
    prompt_index: Vec<usize>,
    /// Prompts cut to `max_prompt_length`.
    truncated: usize,
}

impl PromptRows {
    pub(crate) fn tokenize(
        tokenizer: &TextTokenizer,
        prompts: &[String],
        cfg: &RolloutConfig,
    ) -> Result<Self, RolloutError> {
        let mut out = PromptRows {
            rows: Vec::with_capacity(prompts.len() * cfg.group_size),
            prompt_index: Vec::with_capacity(prompts.len() * cfg.group_size),
            truncated: 0,
        };
        for (i, prompt) in prompts.iter().enumerate() {
            let mut ids = tokenizer.encode(prompt)?;
            if let Some(max) = cfg.max_prompt_length {
                if ids.len() > max {
                    ids.drain(..ids.len() - max);
                    out.truncated += 1;
                }
            }
            for _ in 0..cfg.group_size {
                out.rows.push(ids.clone());
                out.prompt_index.push(i);
            }
        }
        Ok(out)
    }
}

/// What decoding every row produced, in row order.
struct DecodedRows {
    /// `[K]` completion ids per row.
    completions: Vec<Tensor>,
    /// Per row, the step that revealed each completion position.
    reveal_steps: Vec<Vec<i64>>,
    /// Per row, the entropy of each completion position's draw.
    entropies: Vec<Vec<f64>>,
    stats: DecodeStats,
    chunks: usize,
}

/// Decodes `rows` in length buckets of at most `generation_batch_size`, with a progress bar
/// when asked; row r is global sample `first_sample + r`.
fn decode_rows(
    model: &dyn Denoiser,
    rows: &[Vec<i64>],
    cfg: &RolloutConfig,
    special: &SpecialTokens,
    seed: u64,
    first_sample: u64,
) -> Result<DecodedRows, RolloutError> {
    let k = cfg.decoder.max_new_tokens();
    let lengths: Vec<usize> = rows.iter().map(Vec::len).collect();
    let chunks = length_buckets(&lengths, cfg.generation_batch_size, k as usize);
    let steps = cfg.decoder.steps() as u64;
    let bar = crate::progress_bar(
        steps * chunks.len() as u64,
        "rollout",
        "steps",
        cfg.progress,
    );
    let mut completions: Vec<Option<Tensor>> = (0..rows.len()).map(|_| None).collect();
    let mut reveal_steps: Vec<Vec<i64>> = vec![Vec::new(); rows.len()];
    let mut entropies: Vec<Vec<f64>> = vec![Vec::new(); rows.len()];
    let (mut stats, mut done) = (DecodeStats::default(), 0);
    for chunk in &chunks {
        let chunk_rows: Vec<Vec<i64>> = chunk.iter().map(|&r| rows[r].clone()).collect();
        let samples: Vec<u64> = chunk.iter().map(|&r| first_sample + r as u64).collect();
        let batch = PromptBatch::left_padded(&chunk_rows, special.pad, 0);
        let decoded = cfg
            .decoder
            .decode(model, &batch, special.mask, seed, &samples, |_| bar.inc(1))?;
        let generated = decoded.sequences.narrow(1, decoded.prompt_width, k);
        for (i, &r) in chunk.iter().enumerate() {
            completions[r] = Some(generated.get(i as i64));
            reveal_steps[r] = decoded.reveal_step[i].clone();
            entropies[r] = decoded.entropy[i].clone();
        }
        stats.add(&decoded.stats);
        done += chunk.len();
        bar.set_message(format!("{done}/{} sequences", rows.len()));
    }
    bar.finish_and_clear();
    Ok(DecodedRows {
        completions: completions.into_iter().flatten().collect(),
        reveal_steps,
        entropies,
        stats,
        chunks: chunks.len(),
    })
}

/// Where each completion ends: at its first end token (included), else the canvas end.
struct CompletionEnds {
    texts: Vec<String>,
    lengths: Vec<usize>,
    terminated: Vec<bool>,
    /// `[N · K]` 1 up to and including the end.
    mask: Vec<i64>,
}

impl CompletionEnds {
    fn find(
        ids: &[Vec<i64>],
        end_tokens: &[i64],
        tokenizer: &TextTokenizer,
    ) -> Result<Self, RolloutError> {
        let mut out = CompletionEnds {
            texts: Vec::with_capacity(ids.len()),
            lengths: Vec::with_capacity(ids.len()),
            terminated: Vec::with_capacity(ids.len()),
            mask: Vec::new(),
        };
        for row in ids {
            let end = row.iter().position(|t| end_tokens.contains(t));
            let len = end.map_or(row.len(), |e| e + 1);
            out.texts.push(tokenizer.decode(&row[..len])?);
            out.lengths.push(len);
            out.terminated.push(end.is_some());
            out.mask.extend((0..row.len()).map(|j| i64::from(j < len)));
        }
        Ok(out)
    }
}

/// Groups rows into decoding chunks of at most `batch` rows: rows sorted by prompt length
/// (longest first, ties in row order), and a new chunk started when padding would exceed
/// 1/8 of the chunk's tokens. Pads cost a full forward pass each step and contribute
/// nothing; the result of each row does not depend on its chunk.
pub fn length_buckets(prompt_lengths: &[usize], batch: usize, k: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..prompt_lengths.len()).collect();
    order.sort_by_key(|&r| (std::cmp::Reverse(prompt_lengths[r]), r));
    let mut chunks: Vec<Vec<usize>> = Vec::new();
    let mut real = 0usize;
    for r in order {
        let fits = chunks.last().is_some_and(|c: &Vec<usize>| {
            let width = prompt_lengths[c[0]] + k;
            let tokens = width * (c.len() + 1);
            let padding = tokens - (real + prompt_lengths[r] + k);
            c.len() < batch.max(1) && padding * 8 <= tokens
        });
        if fits {
            real += prompt_lengths[r] + k;
            chunks.last_mut().expect("checked above").push(r);
        } else {
            real = prompt_lengths[r] + k;
            chunks.push(vec![r]);
        }
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::length_buckets;

    #[test]
    fn buckets_by_length_with_bounded_padding() {
        // Lengths 10, 100, 98, 12 with K = 0: {100, 98} pad 2 of 200; 12 next to them would
        // pad 88 of 300 → new chunk {12, 10}.
        assert_eq!(
            length_buckets(&[10, 100, 98, 12], 8, 0),
            vec![vec![1, 2], vec![3, 0]]
        );
        // Batch size caps a chunk; equal lengths keep row order.
        assert_eq!(length_buckets(&[5, 5, 5], 2, 4), vec![vec![0, 1], vec![2]]);
        assert!(length_buckets(&[], 4, 4).is_empty());
    }
}
