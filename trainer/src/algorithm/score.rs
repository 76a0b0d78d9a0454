//! The one scoring path: a method's masked versions of a batch are stacked into one
//! forward batch, only the read completion positions reach the vocabulary projection, and
//! the method combines the token log-probabilities into its scores. The old policy, the
//! reference and the policy all go through [`score`] / [`LeanScore`], which differ only
//! in how gradients reach the model: none, the plain autograd graph, or the memory-lean
//! closed form ([`crate::lean`]).

use couplet_model::DreamModel;
use couplet_rollout::Denoiser;
use tch::{Device, Kind, Tensor};

use super::{LossInput, LossMetrics, Method, ObjectiveError, Versions};
use crate::lean::{LeanConfig, LeanPass};

/// A batch to score: `sequences [B, P + K]` (left-padded prompt, then completion).
pub struct EstimatorBatch<'a> {
    /// `[B, P + K]` token ids.
    pub sequences: &'a Tensor,
    /// `[B, P]`: 1 for real prompt tokens.
    pub prompt_mask: &'a Tensor,
    /// P: columns of the (left-padded) prompt.
    pub prompt_width: i64,
    /// Global sample index of each row (the key of its masks).
    pub samples: &'a [u64],
    /// `[B, K]` 1 on completion tokens up to and including the end token (methods whose
    /// masks depend on the length read it; `None`: every position is real).
    pub completion_mask: Option<&'a Tensor>,
    /// `[B, K]` the decode step at which each completion token was revealed (TraceRL's
    /// step map; `None` when the rollout did not record it).
    pub reveal_steps: Option<&'a Tensor>,
}

impl<'a> EstimatorBatch<'a> {
    /// A batch of `sequences` with its prompt mask; row i is global sample `samples[i]`.
    pub fn new(sequences: &'a Tensor, prompt_mask: &'a Tensor, samples: &'a [u64]) -> Self {
        EstimatorBatch {
            sequences,
            prompt_mask,
            prompt_width: prompt_mask.size()[1],
            samples,
            completion_mask: None,
            reveal_steps: None,
        }
    }

    /// Rows, P and K.
    pub fn shape(&self) -> (usize, usize, usize) {
        let (b, l) = self.sequences.size2().expect("sequences are [B, L]");
        let p = self.prompt_width;
        (b as usize, p as usize, (l - p) as usize)
    }

    /// Each row's completion mask as 0/1 rows (all ones without one).
    pub fn completion_rows(&self) -> Vec<Vec<i64>> {
        let (b, _, k) = self.shape();
        self.completion_mask
            .and_then(|m| {
                Vec::<Vec<i64>>::try_from(&m.to_device(Device::Cpu).to_kind(Kind::Int64)).ok()
            })
            .unwrap_or_else(|| vec![vec![1; k]; b])
    }
}

/// Consecutive rows of a batch, owned: what a micro-batch or a chunk scores. Row i is global
/// sample `first_sample + start + i`.
pub struct BatchRows {
    /// First row in the whole batch.
    pub start: i64,
    /// Rows.
    pub len: i64,
    sequences: Tensor,
    prompt_mask: Tensor,
    completion_mask: Option<Tensor>,
    reveal_steps: Option<Tensor>,
    samples: Vec<u64>,
}

impl BatchRows {
    /// Rows `start .. start + len` of `sequences [N, P + K]` and `prompt_mask [N, P]`.
    pub fn new(
        sequences: &Tensor,
        prompt_mask: &Tensor,
        first_sample: u64,
        start: i64,
        len: i64,
    ) -> Self {
        BatchRows {
            start,
            len,
            sequences: sequences.narrow(0, start, len),
            prompt_mask: prompt_mask.narrow(0, start, len),
            completion_mask: None,
            reveal_steps: None,
            samples: (start..start + len)
                .map(|i| first_sample + i as u64)
                .collect(),
        }
    }

    /// Consecutive slices of `size` rows covering the whole batch.
    pub fn split(
        sequences: &Tensor,
        prompt_mask: &Tensor,
        first_sample: u64,
        size: i64,
    ) -> Vec<Self> {
        let n = sequences.size()[0];
        (0..n)
            .step_by(size.max(1) as usize)
            .map(|start| {
                Self::new(
                    sequences,
                    prompt_mask,
                    first_sample,
                    start,
                    size.min(n - start),
                )
            })
            .collect()
    }

    /// The same rows with their completion mask `[N, K]` and (when recorded) reveal steps
    /// `[N, K]` of the whole batch.
    pub fn with_completion(mut self, completion_mask: &Tensor, reveal: Option<&Tensor>) -> Self {
        self.completion_mask = Some(completion_mask.narrow(0, self.start, self.len));
        self.reveal_steps = reveal.map(|r| r.narrow(0, self.start, self.len));
        self
    }

    /// The estimator's view of the rows.
    pub fn batch(&self) -> EstimatorBatch<'_> {
        EstimatorBatch {
            sequences: &self.sequences,
            prompt_mask: &self.prompt_mask,
            prompt_width: self.prompt_mask.size()[1],
            samples: &self.samples,
            completion_mask: self.completion_mask.as_ref(),
            reveal_steps: self.reveal_steps.as_ref(),
        }
    }
}

/// The stacked forward batch of all versions.
struct Stacked {
    inputs: Tensor,            // [V·B, L]
    attention: Option<Tensor>, // [V·B, L]
    select: Tensor,            // [V·B, L]: read completion positions
    truth: Tensor,             // [V·B, L]: the unmasked sequences
    read: Tensor,              // [V, B, K]
    shape: (i64, i64, i64),    // (V, B, K)
}

fn stack(versions: &Versions, batch: &EstimatorBatch, mask_id: i64, device: Device) -> Stacked {
    let (b, l) = batch.sequences.size2().expect("sequences are [B, L]");
    let p = batch.prompt_width;
    let k = l - p;
    let nv = versions.masked.size()[0];
    let masked = versions.masked.to_device(device);
    let read = versions.read.to_device(device);
    let seqs = batch.sequences.to_device(device);
    let truth = seqs.unsqueeze(0).expand([nv, b, l], false);
    let inputs = truth.masked_fill(&masked, mask_id).reshape([nv * b, l]);
    let prompt_mask = batch.prompt_mask.to_device(device).to_kind(Kind::Int64);
    let padded = bool::try_from(prompt_mask.eq(0).any()).unwrap_or(true);
    let attention = padded.then(|| {
        Tensor::cat(
            &[prompt_mask, Tensor::ones([b, k], (Kind::Int64, device))],
            1,
        )
        .unsqueeze(0)
        .expand([nv, b, l], false)
        .reshape([nv * b, l])
    });
    let select = Tensor::cat(
        &[
            Tensor::zeros([nv, b, p], (Kind::Bool, device)),
            read.shallow_clone(),
        ],
        2,
    )
    .reshape([nv * b, l]);
    Stacked {
        inputs,
        attention,
        select,
        truth: truth.reshape([nv * b, l]),
        read,
        shape: (nv, b, k),
    }
}

impl Stacked {
    /// `[V, B, K]` log-probs from the read tokens' `[N]` (0 elsewhere).
    fn grid(&self, token_lp: &Tensor) -> Tensor {
        let (nv, b, k) = self.shape;
        Tensor::zeros([nv, b, k], (Kind::Float, token_lp.device()))
            .masked_scatter(&self.read, token_lp)
    }
}

/// The method's scores of `batch` under `model` with the iteration's mask `seed`,
/// differentiable through the model the plain way (the `[N, V]` logits of the read
/// positions kept for backward): the path for old and reference scores (under no-grad) and
/// for tests on stub models.
pub fn score(
    model: &dyn Denoiser,
    mask_id: i64,
    method: &dyn Method,
    batch: &EstimatorBatch,
    seed: u64,
) -> (Tensor, Versions) {
    let versions = method.versions(batch, seed);
    (
        score_versions(model, mask_id, method, &versions, batch),
        versions,
    )
}

/// Scores for explicitly given versions (e.g. masks pinned by a user).
pub fn score_versions(
    model: &dyn Denoiser,
    mask_id: i64,
    method: &dyn Method,
    versions: &Versions,
    batch: &EstimatorBatch,
) -> Tensor {
    let st = stack(versions, batch, mask_id, model.device());
    let logits = model.score(&st.inputs, st.attention.as_ref(), &st.select); // [N, V]
    let targets = st.truth.masked_select(&st.select);
    let token_lp = logits
        .log_softmax(-1, Kind::Float)
        .gather(1, &targets.unsqueeze(1), false)
        .squeeze_dim(1); // [N]
    method.combine(versions, &st.grid(&token_lp))
}

/// Scores through the memory-lean path: differentiable only up to a leaf of token
/// log-probs; after `loss.backward()`, call [`LeanScore::backward`] to push the exact
/// gradients into the model.
pub struct LeanScore<'m> {
    /// The method's scores, differentiable up to the token log-prob leaf.
    pub scores: Tensor,
    /// The versions that were scored.
    pub versions: Versions,
    leaf: Tensor,
    pass: LeanPass<'m>,
}

impl<'m> LeanScore<'m> {
    /// Scores `batch` under `model` with the iteration's mask `seed`.
    pub fn new(
        model: &'m DreamModel,
        mask_id: i64,
        method: &dyn Method,
        batch: &EstimatorBatch,
        seed: u64,
        lean: LeanConfig,
    ) -> Self {
        Self::with_versions(
            model,
            mask_id,
            method,
            batch,
            method.versions(batch, seed),
            lean,
        )
    }

    /// Scores explicitly given `versions` of `batch` (e.g. one chunk of them).
    pub fn with_versions(
        model: &'m DreamModel,
        mask_id: i64,
        method: &dyn Method,
        batch: &EstimatorBatch,
        versions: Versions,
        lean: LeanConfig,
    ) -> Self {
        let st = stack(&versions, batch, mask_id, model.device());
        let pass = LeanPass::forward_with_targets(
            model,
            &st.inputs,
            st.attention.as_ref(),
            &st.select,
            &st.truth,
            lean,
        );
        let leaf = pass.logprobs.detach().set_requires_grad(true);
        let scores = method.combine(&versions, &st.grid(&leaf));
        LeanScore {
            scores,
            versions,
            leaf,
            pass,
        }
    }

    /// Call after the loss's backward reached the scores.
    pub fn backward(self) {
        let g = self.leaf.grad();
        let g = if g.defined() {
            g
        } else {
            self.leaf.zeros_like()
        };
        self.pass.backward(&g);
    }
}

/// What a micro-batch's loss needs besides the policy's scores.
pub struct LossContext<'a> {
    /// The old policy's scores (`None`: the detached policy's).
    pub old: Option<&'a Tensor>,
    /// The reference's scores.
    pub reference: Option<&'a Tensor>,
    /// `[B]` the method's per-sample coefficients.
    pub advantages: &'a Tensor,
    /// `[B, K]` completion mask.
    pub completion_mask: &'a Tensor,
    /// Completion tokens of the whole optimizer step.
    pub step_tokens: f64,
    /// Sequences of the whole optimizer step.
    pub step_sequences: f64,
    /// The method's loss units over the whole optimizer step.
    pub step_units: f64,
}

/// The policy's pass over one micro-batch: scores (memory-lean), the method's loss, and
/// its backward into the model's `.grad`. A method whose loss is a sum over versions, one
/// score column each ([`Method::versions_per_backward`]), is run chunk by chunk with one
/// backward per chunk, so activation memory is that of one chunk (BGPO's and JustGRPO's
/// released schedule); the gradient is the same sum. Returns the loss and its metrics
/// (token-weighted over the chunks).
pub fn policy_backward(
    model: &DreamModel,
    mask_id: i64,
    method: &dyn Method,
    batch: &EstimatorBatch,
    seed: u64,
    lean: LeanConfig,
    ctx: &LossContext,
) -> Result<(f64, LossMetrics), ObjectiveError> {
    let versions = method.versions(batch, seed);
    let columns = versions.count();
    let chunk = method
        .versions_per_backward()
        .map_or(columns, |c| c.max(1) as i64);
    let mut total = LossMetrics::default();
    let mut loss_sum = 0.0;
    let chunks = ((columns + chunk - 1) / chunk).max(1);
    let mut start = 0;
    while start < columns.max(1) {
        let len = chunk.min(columns - start).max(1);
        let part = versions.narrow(start, len);
        let narrow = |t: Option<&Tensor>| {
            t.map(|t| {
                if chunk >= columns {
                    t.shallow_clone()
                } else {
                    t.narrow(1, start, len)
                }
            })
        };
        let (old, reference) = (narrow(ctx.old), narrow(ctx.reference));
        let scored = LeanScore::with_versions(model, mask_id, method, batch, part, lean);
        let (loss, metrics) = method.loss(&LossInput {
            scores: &scored.scores,
            old: old.as_ref(),
            reference: reference.as_ref(),
            advantages: ctx.advantages,
            completion_mask: ctx.completion_mask,
            step_tokens: ctx.step_tokens,
            step_sequences: ctx.step_sequences,
            step_units: ctx.step_units,
            columns,
            versions: &scored.versions,
        })?;
        loss.backward();
        scored.backward();
        loss_sum += metrics.loss;
        let share = 1.0 / chunks as f64;
        total.kl += metrics.kl * share;
        total.kl_k2 += metrics.kl_k2 * share;
        total.clip_low += metrics.clip_low * share;
        total.clip_high += metrics.clip_high * share;
        total.clip_region += metrics.clip_region * share;
        total.mean_estimate += metrics.mean_estimate * share;
        total.tokens = metrics.tokens;
        start += len;
    }
    total.loss = loss_sum;
    Ok((loss_sum, total))
}
