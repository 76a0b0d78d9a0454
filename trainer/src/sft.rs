//! Supervised fine-tuning with the masked-diffusion objective (stage III of DiffuCoder's
//! pipeline; how the CPU demo model is made).
//!
//! Each example is a chat prompt followed by the answer "```python\n<solution>```\n" and the
//! end token. Per example, draw t ~ U(eps, 1) and mask each answer token independently with
//! probability t (the prompt is never masked); the loss is the cross-entropy of the masked
//! answer tokens weighted by 1/t, divided by the answer length, averaged over the batch —
//! the evidence bound the diffusion model is trained on. End-token padding may count less
//! than the answer (`pad_weight`): then every token's weight is w/t over the weighted
//! length n_answer + w·n_pad, so the loss stays a per-token average and w = 1 is the plain
//! bound. Logits follow the model's shift convention. Masks come from the counter RNG keyed
//! by (seed, step, example).

use couplet_model::{random, PromptBatch, TextTokenizer};
use tch::{Kind, Tensor};

use std::path::Path;

use couplet_model::DreamModel;
use couplet_reward::Row;

use crate::optim::{lr_factor, AdamW, AdamWConfig, Schedule};

use couplet_model::random::stream::SFT_MASK as STREAM_MASK;
use couplet_model::random::stream::SFT_RATIO as STREAM_T;

/// Token ids and mask settings shared by every SFT step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SftSettings {
    /// Id of the mask token.
    pub mask_id: i64,
    /// Id of the padding token.
    pub pad: i64,
    /// Lower bound of t ~ U(eps, 1).
    pub eps: f64,
    /// Seed of the masks.
    pub seed: u64,
    /// Weight of an end-token padding position relative to an answer token (1: the
    /// plain masked-diffusion bound). Padding is easy and, on a long canvas, the majority
    /// of the answer: weighting it less keeps the gradient on the tokens that carry the
    /// solution while the model still learns to fill the canvas with end tokens.
    pub pad_weight: f64,
}

/// One supervised example, tokenised.
#[derive(Debug, Clone, PartialEq)]
pub struct SftExample {
    /// The chat prompt's token ids.
    pub prompt: Vec<i64>,
    /// The answer followed by its end-token padding.
    pub answer: Vec<i64>,
    /// How many leading tokens of `answer` are the answer itself (the rest is padding).
    pub answer_tokens: usize,
}

/// Formats and tokenises (question, solution) pairs: the chat prompt, then the fenced
/// solution and the chat end token (or eos), then eos padding up to `answer_length` tokens.
///
/// The padding is what teaches a diffusion model where an answer ends: at decoding time the
/// canvas has a fixed number of masked positions, and every one past the answer must be
/// filled with end tokens (LLaDA and Dream pad SFT answers with EOS the same way and score
/// the padding like any other token). Answers longer than `answer_length` are kept whole.
pub fn build_example(
    tokenizer: &TextTokenizer,
    system: &str,
    question: &str,
    solution: &str,
    max_prompt: usize,
    answer_length: usize,
) -> couplet_model::Result<SftExample> {
    let mut prompt = tokenizer.encode(&tokenizer.chat_prompt(system, question)?)?;
    if prompt.len() > max_prompt {
        prompt.drain(..prompt.len() - max_prompt);
    }
    let body = if solution.ends_with('\n') {
        solution.to_string()
    } else {
        format!("{solution}\n")
    };
    let mut answer = tokenizer.encode(&format!("```python\n{body}```\n"))?;
    let special = tokenizer.special();
    answer.push(special.im_end.unwrap_or(special.eos[0]));
    let answer_tokens = answer.len();
    if answer.len() < answer_length {
        answer.resize(answer_length, special.eos[0]);
    }
    Ok(SftExample {
        prompt,
        answer,
        answer_tokens,
    })
}

/// The masked-diffusion loss of a batch (scalar, with grad) and the number of masked
/// tokens. `step` and `first` (global index of the first example) key the masks.
pub fn sft_loss(
    model: &DreamModel,
    settings: &SftSettings,
    examples: &[SftExample],
    step: u64,
    first: u64,
) -> (Tensor, i64) {
    let SftSettings {
        mask_id,
        pad,
        eps,
        seed,
        pad_weight,
    } = *settings;
    let rows: Vec<Vec<i64>> = examples
        .iter()
        .map(|e| e.prompt.iter().chain(&e.answer).copied().collect())
        .collect();
    let batch = PromptBatch::left_padded(&rows, pad, 0);
    let width = batch.ids.size()[1] as usize;
    let mut ids = Vec::<Vec<i64>>::try_from(&batch.ids).unwrap_or_default();
    let mut select = vec![vec![false; width]; rows.len()];
    let mut weight = vec![vec![0f32; width]; rows.len()];
    let mut masked = 0;
    for (r, e) in examples.iter().enumerate() {
        let key = (step << 32) ^ (first + r as u64);
        let t = eps + (1.0 - eps) * random::uniform(seed, STREAM_T, key);
        let start = width - e.answer.len();
        let padding = (e.answer.len() - e.answer_tokens) as f64;
        let length = e.answer_tokens as f64 + pad_weight * padding;
        for j in 0..e.answer.len() {
            if random::uniform(seed, STREAM_MASK, (key << 12) ^ j as u64) < t {
                let w = if j < e.answer_tokens { 1.0 } else { pad_weight };
                select[r][start + j] = true;
                weight[r][start + j] = (w / t / length) as f32;
                ids[r][start + j] = mask_id;
                masked += 1;
            }
        }
    }
    let device = model.device();
    let inputs = Tensor::from_slice2(&ids).to_device(device);
    let select = Tensor::from_slice2(&select).to_device(device);
    let targets = batch.ids.to_device(device).masked_select(&select);
    let weights = Tensor::from_slice2(&weight)
        .to_device(device)
        .masked_select(&select);
    let attention = batch.attention_mask.to_device(device);
    if masked == 0 {
        return (
            Tensor::zeros([], (Kind::Float, device)).set_requires_grad(true),
            0,
        );
    }
    let logits = model.forward(&inputs, Some(&attention), Some(&select)); // [N, V]
    let nll = -logits
        .log_softmax(-1, Kind::Float)
        .gather(1, &targets.unsqueeze(1), false)
        .squeeze_dim(1);
    (
        (nll * weights).sum(Kind::Float) / examples.len() as f64,
        masked,
    )
}

/// One optimizer step on `examples`; returns the loss.
pub fn sft_step(
    model: &DreamModel,
    optimizer: &mut AdamW,
    lr: f64,
    settings: &SftSettings,
    examples: &[SftExample],
    step: u64,
    first: u64,
) -> f64 {
    let (loss, _) = sft_loss(model, settings, examples, step, first);
    loss.backward();
    optimizer.step(lr);
    loss.double_value(&[])
}

/// A whole SFT run: how long, how fast, and how examples are masked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SftPlan {
    /// Optimizer steps.
    pub steps: u64,
    /// Examples per step (taken in a fixed cycle through the data).
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Learning-rate schedule.
    pub schedule: Schedule,
    /// Linear warmup steps.
    pub warmup_steps: u64,
    /// Report the mean loss every N steps (and at the last).
    pub log_every: u64,
    /// Ask for a snapshot every N steps before the last (0: only the final model).
    pub save_every: u64,
    /// Mask settings.
    pub settings: SftSettings,
}

/// What [`run_sft`] tells its caller along the way.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SftEvent {
    /// The mean loss since the last report, after `step` steps.
    Log {
        /// Steps done.
        step: u64,
        /// Mean loss over the reported steps.
        loss: f64,
        /// The last learning rate.
        lr: f64,
    },
    /// Time to save a snapshot of the model after `step` steps.
    Save {
        /// Steps done.
        step: u64,
    },
}

/// Why an SFT run stopped early.
#[derive(Debug, thiserror::Error)]
pub enum SftError {
    /// No examples, or a batch size or step count of 0.
    #[error("{0}")]
    Plan(String),
    /// The loss became NaN/inf.
    #[error("non-finite loss at step {0}; lower --lr")]
    NonFinite(u64),
    /// The caller's handling of an event failed (e.g. saving a snapshot).
    #[error("after step {step}")]
    Event {
        /// Steps done.
        step: u64,
        /// The caller's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Fine-tunes `model` on `examples` with AdamW (no weight decay, clipping at 1), calling
/// `on_event` for every log line and snapshot.
pub fn run_sft<E>(
    model: &DreamModel,
    examples: &[SftExample],
    plan: &SftPlan,
    mut on_event: impl FnMut(SftEvent) -> Result<(), E>,
) -> Result<(), SftError>
where
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if examples.is_empty() || plan.batch_size == 0 || plan.steps == 0 {
        return Err(SftError::Plan(
            "SFT needs examples, a batch size and steps of at least 1".into(),
        ));
    }
    let params = model.var_store().variables().into_iter().collect();
    let config = AdamWConfig {
        lr: plan.lr,
        weight_decay: 0.0,
        max_grad_norm: 1.0,
        ..Default::default()
    };
    let mut optimizer = AdamW::new(params, config);
    let n = examples.len();
    let mut recent = Vec::new();
    for step in 0..plan.steps {
        let first = (step as usize * plan.batch_size) % n;
        let batch: Vec<SftExample> = (0..plan.batch_size.min(n))
            .map(|i| examples[(first + i) % n].clone())
            .collect();
        let lr = plan.lr * lr_factor(plan.schedule, step, plan.steps, plan.warmup_steps);
        let loss = sft_step(
            model,
            &mut optimizer,
            lr,
            &plan.settings,
            &batch,
            step,
            first as u64,
        );
        if !loss.is_finite() {
            return Err(SftError::NonFinite(step));
        }
        recent.push(loss);
        let done = step + 1;
        let event = |result: Result<(), E>| {
            result.map_err(|e| SftError::Event {
                step: done,
                source: e.into(),
            })
        };
        if done % plan.log_every.max(1) == 0 || done == plan.steps {
            let loss = recent.iter().sum::<f64>() / recent.len() as f64;
            recent.clear();
            event(on_event(SftEvent::Log {
                step: done,
                loss,
                lr,
            }))?;
        }
        if plan.save_every > 0 && done % plan.save_every == 0 && done < plan.steps {
            event(on_event(SftEvent::Save { step: done }))?;
        }
    }
    Ok(())
}

/// Builds the examples of `rows` (from `path`) whose reference solution is in
/// `solution_column`; the error names the file, the row and the column.
pub fn examples_from_rows(
    tokenizer: &TextTokenizer,
    rows: &[Row],
    path: &Path,
    solution_column: &str,
    shape: ExampleShape<'_>,
) -> Result<Vec<SftExample>, String> {
    let mut examples = Vec::with_capacity(rows.len());
    for row in rows {
        let Some(solution) = row.extra.get(solution_column).and_then(|v| v.as_str()) else {
            return Err(format!(
                "{}: row {}: field `{solution_column}` missing or not a string",
                path.display(),
                row.id,
            ));
        };
        let example = build_example(
            tokenizer,
            shape.system,
            &row.question,
            solution,
            shape.max_prompt_length,
            shape.answer_length,
        )
        .map_err(|e| format!("{}: row {}: {e}", path.display(), row.id))?;
        examples.push(example);
    }
    Ok(examples)
}

/// How examples are formatted: system prompt, prompt cut, answer padding.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExampleShape<'a> {
    /// System prompt of the chat template.
    pub system: &'a str,
    /// Keep only the last N prompt tokens.
    pub max_prompt_length: usize,
    /// Pad answers with end tokens to this many tokens (0: none).
    pub answer_length: usize,
}
