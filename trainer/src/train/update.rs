//! One clipped-GRPO update (SPEC section 7): the buffered round in micro-batches, each
//! loss normalised by the step's global completion-token count so that summed micro-batch
//! (and rank) gradients are the gradient of the whole batch; then the learning rate, and an
//! AdamW step — skipped when the loss or gradient norm is not finite.

use couplet_model::random;
use tch::Kind;

use super::round::RoundBuffer;
use super::{TrainError, Trainer};
use crate::algorithm::{policy_backward, LossContext};
use crate::lean::LeanConfig;
use crate::optim::{lr_factor, warmup_steps};

/// The size of a whole optimizer step (all micro-batches and ranks): what each
/// micro-batch's loss is normalised by.
#[derive(Debug, Clone, Copy)]
struct StepSize {
    tokens: f64,
    sequences: f64,
    units: f64,
}

/// What an update did.
pub struct UpdateReport {
    /// The loss (summed over micro-batches and ranks).
    pub loss: f64,
    /// Token-weighted k3 KL to the reference.
    pub kl: f64,
    /// Token-weighted k2 KL to the reference.
    pub kl_k2: f64,
    /// Token-weighted share of clipped ratios.
    pub clip: f64,
    /// Pre-clip gradient norm (NaN/inf when the step was skipped).
    pub grad_norm: f64,
    /// The learning rate used.
    pub lr: f64,
}

impl Trainer {
    /// Iteration `iteration` of the buffered round `round`: gradients, then the step.
    pub(super) fn update(
        &mut self,
        round: u64,
        iteration: usize,
    ) -> Result<UpdateReport, TrainError> {
        let buffer = self
            .buffer
            .as_ref()
            .ok_or_else(|| TrainError::Setup("no round is buffered (sample_round first)".into()))?;
        let local_tokens = buffer.completion_mask.sum(Kind::Float).double_value(&[]);
        let local_units = self.local_units(buffer, round);
        let totals = self.parallel.sum(&[local_tokens, local_units])?;
        let sequences = self.config.completions_per_step() as f64;
        let step = StepSize {
            tokens: totals[0],
            sequences,
            units: totals[1],
        };
        let [loss, kl, kl_k2, clip] = self.accumulate_gradients(buffer, round, iteration, step)?;
        let dist = &self.config.distributed;
        self.parallel.reduce_grads(
            &mut self.optimizer,
            dist.bucket_mb,
            dist.reduce_dtype.kind(),
        )?;
        let sums = self.parallel.sum(&[loss, kl, kl_k2, clip])?;
        let lr = self.learning_rate();
        let grad_norm = self.apply_gradients(lr, sums[0])?;
        Ok(UpdateReport {
            loss: sums[0],
            kl: sums[1],
            kl_k2: sums[2],
            clip: sums[3],
            grad_norm,
            lr,
        })
    }

    /// Backward over every micro-batch; returns this rank's (loss, k3 KL, k2 KL, clip)
    /// sums, each term weighted by its share of the step's completion tokens.
    fn accumulate_gradients(
        &self,
        buffer: &RoundBuffer,
        round: u64,
        iteration: usize,
        step: StepSize,
    ) -> Result<[f64; 4], TrainError> {
        let seed = self.mask_seed(round, iteration);
        let method = self.config.algorithm.method();
        let tokens = step.tokens;
        let lean = LeanConfig {
            chunk_rows: self.config.model.logits_chunk_rows,
            recompute_layers: self.config.model.gradient_checkpointing,
        };
        let mask_id = self.policy.tokenizer.special().mask;
        let mb = self.config.schedule.micro_batch_size as i64;
        let [mut loss_sum, mut kl_sum, mut k2_sum, mut clip_sum] = [0.0; 4];
        for micro in buffer.micro_batches(mb, self.first_local_sample(round)) {
            let (start, len) = (micro.start, micro.len);
            let slice = |t: &Option<tch::Tensor>| t.as_ref().map(|t| t.narrow(0, start, len));
            let old = slice(&buffer.old[iteration]);
            let reference = slice(&buffer.reference[iteration]);
            let cm = buffer.completion_mask.narrow(0, start, len);
            let advantages = buffer.advantages.narrow(0, start, len);
            let batch = micro.batch();
            let model = &self.policy.model;
            // LoRA dropout masks keyed by the micro-batch's first sample and the mask seed.
            let dropout = random::bits(seed, random::stream::LORA_DROPOUT, batch.samples[0]);
            let ctx = LossContext {
                old: old.as_ref(),
                reference: reference.as_ref(),
                advantages: &advantages,
                completion_mask: &cm,
                step_tokens: step.tokens,
                step_sequences: step.sequences,
                step_units: step.units,
            };
            let (loss, metrics) = model.with_adapter_dropout(dropout, || {
                policy_backward(model, mask_id, method, &batch, seed, lean, &ctx)
            })?;
            let weight = metrics.tokens / tokens.max(1.0);
            loss_sum += loss;
            kl_sum += metrics.kl * weight;
            k2_sum += metrics.kl_k2 * weight;
            clip_sum += metrics.clip_region * weight;
        }
        Ok([loss_sum, kl_sum, k2_sum, clip_sum])
    }

    /// The method's loss units ([`crate::algorithm::Method::units`]) in this rank's
    /// micro-batches.
    fn local_units(&self, buffer: &RoundBuffer, round: u64) -> f64 {
        let method = self.config.algorithm.method();
        let mb = self.config.schedule.micro_batch_size as i64;
        buffer
            .micro_batches(mb, self.first_local_sample(round))
            .iter()
            .map(|micro| {
                let coefficients = buffer.advantages.narrow(0, micro.start, micro.len);
                method.units(&micro.batch(), &coefficients)
            })
            .sum()
    }

    /// The scheduled learning rate of the next step.
    fn learning_rate(&self) -> f64 {
        let s = &self.config.schedule;
        let warmup = s
            .warmup_steps
            .unwrap_or_else(|| warmup_steps(self.total_steps, s.warmup_ratio));
        self.config.optimizer.lr
            * lr_factor(s.schedule(), self.state.step, self.total_steps, warmup)
    }

    /// An AdamW step at `lr`, unless the loss or gradient norm is not finite: then the
    /// gradients are dropped (moments untouched, so one bad batch cannot poison the
    /// weights), and `max_nonfinite_in_a_row` such steps stop the run. Returns the norm.
    fn apply_gradients(&mut self, lr: f64, loss: f64) -> Result<f64, TrainError> {
        let grad_norm = if loss.is_finite() {
            self.parallel.grad_norm(&self.optimizer)?
        } else {
            f64::NAN
        };
        if grad_norm.is_finite() {
            self.state.nonfinite_in_a_row = 0;
            let report = self.optimizer.step_with_norm(lr, grad_norm);
            self.parallel.share_updates(&mut self.optimizer)?;
            return Ok(report.grad_norm);
        }
        self.optimizer.zero_grad();
        self.state.nonfinite_in_a_row += 1;
        self.state.skipped_nonfinite += 1;
        if self.state.nonfinite_in_a_row >= self.config.schedule.max_nonfinite_in_a_row {
            return Err(TrainError::NonFinite {
                step: self.state.step + 1,
                count: self.state.nonfinite_in_a_row,
            });
        }
        Ok(grad_norm)
    }
}
