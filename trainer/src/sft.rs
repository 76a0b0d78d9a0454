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

use couplet_model::{chat_prompt, random, PromptBatch, TextTokenizer};
use tch::{Kind, Tensor};

use crate::optim::AdamW;
use couplet_model::DreamModel;

const STREAM_T: u64 = 0x700;
const STREAM_MASK: u64 = 0x701;

/// Token ids and mask settings shared by every SFT step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SftSettings {
    pub mask_id: i64,
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
    let mut prompt = tokenizer.encode(&chat_prompt(system, question))?;
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
