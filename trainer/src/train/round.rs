//! Sampling a round (SPEC sections 4–6): this rank's prompts → G completions each, decoded
//! group after group while the previous group's tests run in the sandbox → group-relative
//! advantages → the round's statistics (gathered over ranks) → old and reference estimates
//! for every iteration, before any update. The result is a [`RoundBuffer`], kept until the
//! round's μ iterations are done (and saved with a mid-round checkpoint).

use std::collections::HashMap;
use std::time::Instant;

use couplet_model::{random, DreamModel};
use couplet_reward::{score_batch, RewardBatch};
use couplet_rollout::{generate_rollout, Rollout};
use tch::{Device, Kind, Tensor};

use super::metrics::{RoundCost, RoundRecord, StepMetrics};
use super::order::rank_share;
use super::{CompletionSample, TrainError, Trainer};
use crate::algorithm::{score, BatchRows};
use crate::reference::Reference;

/// The rollout batch of a round, kept until its μ iterations are done.
pub struct RoundBuffer {
    /// `[N, P + K]` prompts and completions.
    pub sequences: Tensor,
    /// `[N, P]` 1 on real prompt tokens.
    pub prompt_mask: Tensor,
    /// `[N, K]` 1 on completion tokens up to and including the end token.
    pub completion_mask: Tensor,
    /// `[N, K]` the decode step that revealed each completion token (TraceRL's step map;
    /// `None` in checkpoints written before it was kept).
    pub reveal_steps: Option<Tensor>,
    /// `[N]` the method's per-sample coefficients (the group-relative advantages for most
    /// methods; [`crate::algorithm::Method::coefficients`]).
    pub advantages: Tensor,
    /// Per iteration: old-policy scores (`[N, K]` per token or `[N, …]` per sequence, as
    /// the method combines them), when the method uses them.
    pub old: Vec<Option<Tensor>>,
    /// Per iteration: reference scores, when a reference is held.
    pub reference: Vec<Option<Tensor>>,
    /// The round's statistics.
    pub metrics: StepMetrics,
}

impl RoundBuffer {
    /// The tensors a checkpoint keeps (on the CPU), by name.
    pub fn tensors(&self) -> Vec<(String, Tensor)> {
        let cpu = |t: &Tensor| t.to_device(Device::Cpu);
        let mut out = vec![
            ("sequences".to_string(), cpu(&self.sequences)),
            ("prompt_mask".to_string(), cpu(&self.prompt_mask)),
            ("completion_mask".to_string(), cpu(&self.completion_mask)),
            ("advantages".to_string(), cpu(&self.advantages)),
        ];
        if let Some(steps) = &self.reveal_steps {
            out.push(("reveal_steps".to_string(), cpu(steps)));
        }
        let per_iteration = [("old", &self.old), ("reference", &self.reference)];
        for (prefix, list) in per_iteration {
            for (i, t) in list.iter().enumerate() {
                if let Some(t) = t {
                    out.push((format!("{prefix}/{i}"), cpu(t)));
                }
            }
        }
        out
    }

    /// The buffer [`RoundBuffer::tensors`] saved, on `device`, for `mu` iterations; the
    /// error names the missing tensor.
    pub fn from_tensors(
        tensors: HashMap<String, Tensor>,
        mu: usize,
        metrics: StepMetrics,
        device: Device,
    ) -> Result<Self, String> {
        let get = |k: &str| {
            tensors
                .get(k)
                .map(|x| x.to_device(device))
                .ok_or_else(|| format!("round buffer lacks {k}"))
        };
        let optional = |prefix: &str| -> Vec<Option<Tensor>> {
            (0..mu)
                .map(|i| {
                    tensors
                        .get(&format!("{prefix}/{i}"))
                        .map(|x| x.to_device(device))
                })
                .collect()
        };
        Ok(RoundBuffer {
            sequences: get("sequences")?,
            prompt_mask: get("prompt_mask")?,
            completion_mask: get("completion_mask")?,
            advantages: get("advantages")?,
            reveal_steps: tensors.get("reveal_steps").map(|x| x.to_device(device)),
            old: optional("old"),
            reference: optional("reference"),
            metrics,
        })
    }

    /// Consecutive micro-batches of `size` rows; row i is global sample `first + i`.
    pub fn micro_batches(&self, size: i64, first: u64) -> Vec<BatchRows> {
        BatchRows::split(&self.sequences, &self.prompt_mask, first, size)
            .into_iter()
            .map(|rows| rows.with_completion(&self.completion_mask, self.reveal_steps.as_ref()))
            .collect()
    }
}

/// Decoded parts of a round and their rewards, in prompt-group order.
type Scored = (Vec<Rollout>, Vec<RewardBatch>);

impl Trainer {
    /// Samples, scores and prepares round `round`.
    pub(super) fn sample_round(&mut self, round: u64) -> Result<RoundBuffer, TrainError> {
        let (rank, world) = (self.parallel.rank(), self.parallel.world());
        let all_rows = self
            .data
            .round_rows(round, self.config.rollout.prompts_per_step);
        let rows = rank_share(&all_rows, rank, world).to_vec();
        let started = Instant::now();
        let (parts, scored) = self.roll_out_and_score(&rows, round)?;
        let elapsed = started.elapsed().as_secs_f64();
        let pad = self.policy.tokenizer.special().pad;
        let mut rollout = Rollout::concat(parts, pad);
        rollout.pad_prompts_to(self.round_prompt_width(&all_rows)?, pad);
        let rewards = RewardBatch::concat(scored);
        let cfg = &self.config;
        let method = cfg.algorithm.method();
        let g = cfg.rollout.num_generations;
        let adv = method
            .advantages(&rewards.total, g)
            .map_err(TrainError::Advantages)?;
        let coefficients = method.coefficients(&adv, g);
        self.last_samples = self.completion_samples(&rows, &rollout, &rewards);
        let cost = rank_cost(&rollout, &rewards, elapsed);
        let strata = self.strata(&rows, &rollout);
        let record = RoundRecord::new(&rollout, &rewards, &adv, strata, cost);
        let metrics = self.round_statistics(record)?;
        let mut buffer = RoundBuffer {
            sequences: rollout.sequences(),
            prompt_mask: rollout.prompt_mask.shallow_clone(),
            completion_mask: rollout.completion_mask.shallow_clone(),
            reveal_steps: reveal_steps_tensor(&rollout.reveal_steps, self.device),
            advantages: coefficients_tensor(&coefficients, self.device),
            old: Vec::new(),
            reference: Vec::new(),
            metrics,
        };
        let scoring = Instant::now();
        self.score_iterations(&mut buffer, round);
        buffer.metrics.cost.scoring_seconds = scoring.elapsed().as_secs_f64();
        Ok(buffer)
    }

    /// Decodes this rank's prompt groups one after another; each group's rewards run in
    /// the sandbox pool on a helper thread while the next group decodes. Draws are keyed
    /// by sample index and every group is scored in full, so nothing depends on timing.
    fn roll_out_and_score(&self, rows: &[usize], round: u64) -> Result<Scored, TrainError> {
        let cfg = &self.config;
        let g = cfg.rollout.num_generations;
        let group = (cfg.rollout.generation_batch_size / g).max(1);
        let prompts: Vec<String> = rows
            .iter()
            .map(|&i| {
                let question = &self.data.rows[i].question;
                self.policy
                    .tokenizer
                    .chat_prompt(&cfg.data.system_prompt, question)
            })
            .collect::<Result<_, _>>()
            .map_err(|source| TrainError::Model {
                context: "rendering the chat template",
                source,
            })?;
        let rollout_seed = random::bits(cfg.seed, random::stream::ROLLOUT_ROUND, round);
        let first_sample = self.first_local_sample(round);
        let reward_cfg = cfg.reward.reward_config(cfg.rollout.max_new_tokens);
        let limits = cfg.sandbox.limits();
        std::thread::scope(|scope| -> Result<Scored, TrainError> {
            let (mut parts, mut handles) = (Vec::new(), Vec::new());
            for (c, chunk) in prompts.chunks(group).enumerate() {
                let first = first_sample + (c * group * g) as u64;
                let part = generate_rollout(
                    &self.policy.model,
                    &self.policy.tokenizer,
                    chunk,
                    &self.rollout,
                    rollout_seed,
                    first,
                )
                .map_err(TrainError::Rollout)?;
                let tests: Vec<Vec<String>> = part
                    .prompt_index
                    .iter()
                    .map(|&p| self.data.rows[rows[c * group + p]].test_cases.clone())
                    .collect();
                let (texts, lengths) = (part.texts.clone(), part.completion_lengths.clone());
                let (reward_cfg, pool) = (&reward_cfg, &self.pool);
                handles.push(scope.spawn(move || {
                    score_batch(&texts, &lengths, &tests, reward_cfg, pool, limits)
                }));
                parts.push(part);
            }
            let scored = handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .map_err(|_| TrainError::Panicked("a reward thread"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok((parts, scored))
        })
    }

    /// Token width of the round's widest prompt over all ranks (after `max_prompt_length`).
    fn round_prompt_width(&self, rows: &[usize]) -> Result<i64, TrainError> {
        let cfg = &self.config;
        let mut width = 0;
        for &i in rows {
            let question = &self.data.rows[i].question;
            let prompt = self
                .policy
                .tokenizer
                .chat_prompt(&cfg.data.system_prompt, question)
                .map_err(|source| TrainError::Model {
                    context: "rendering the chat template",
                    source,
                })?;
            let ids =
                self.policy
                    .tokenizer
                    .encode(&prompt)
                    .map_err(|source| TrainError::Model {
                        context: "tokenizing a prompt",
                        source,
                    })?;
            width = width.max(ids.len().min(cfg.data.max_prompt_length));
        }
        Ok(width as i64)
    }

    /// The round's completions with their rewards, for `completions.jsonl`.
    fn completion_samples(
        &self,
        rows: &[usize],
        rollout: &Rollout,
        rewards: &RewardBatch,
    ) -> Vec<CompletionSample> {
        (0..rollout.len())
            .map(|i| CompletionSample {
                step: self.state.step + 1,
                prompt: self.data.rows[rows[rollout.prompt_index[i]]]
                    .question
                    .clone(),
                completion: rollout.texts[i].clone(),
                rewards: rewards
                    .per_function
                    .iter()
                    .map(|(k, v)| (k.name().to_string(), v[i]))
                    .collect(),
                total: rewards.total[i],
            })
            .collect()
    }

    /// Each completion's `data.stratify_by` label (empty without stratification).
    fn strata(&self, rows: &[usize], rollout: &Rollout) -> Vec<String> {
        let Some(labels) = &self.data.labels else {
            return Vec::new();
        };
        let label = |&p: &usize| labels[rows[p]].clone();
        rollout.prompt_index.iter().map(label).collect()
    }

    /// Statistics of the whole round, from every rank's record.
    fn round_statistics(&self, mine: RoundRecord) -> Result<StepMetrics, TrainError> {
        let parts = self.parallel.gather(mine)?;
        Ok(RoundRecord::concat(parts).statistics())
    }

    /// Old and reference scores for every iteration's mask seed, before any update.
    fn score_iterations(&self, buffer: &mut RoundBuffer, round: u64) {
        let mu = self.config.schedule.num_iterations;
        let uses_old = self.config.algorithm.method().uses_old(mu);
        for it in 0..mu {
            let seed = self.mask_seed(round, it);
            let old = uses_old.then(|| self.score_all(&self.policy.model, buffer, round, seed));
            let policy = &self.policy.model;
            let reference = self.reference.as_ref().map(|r| match r {
                Reference::Copy(copy) => self.score_all(&copy.model, buffer, round, seed),
                Reference::BaseWithoutAdapters => {
                    policy.without_adapters(|| self.score_all(policy, buffer, round, seed))
                }
            });
            buffer.old.push(old);
            buffer.reference.push(reference);
        }
    }

    /// No-grad scores of the whole buffer under `model`.
    fn score_all(&self, model: &DreamModel, buffer: &RoundBuffer, round: u64, seed: u64) -> Tensor {
        let _guard = tch::no_grad_guard();
        let first = self.first_local_sample(round);
        let mask_id = self.policy.tokenizer.special().mask;
        let method = self.config.algorithm.method();
        let parts: Vec<Tensor> = buffer
            .micro_batches(self.config.schedule.micro_batch_size as i64, first)
            .iter()
            .map(|mb| score(model, mask_id, method, &mb.batch(), seed).0)
            .map(|t| t.to_device(self.device))
            .collect();
        Tensor::cat(&parts, 0)
    }
}

/// This rank's decoding and sandbox costs; `elapsed` is the round's wall time so far.
fn rank_cost(rollout: &Rollout, rewards: &RewardBatch, elapsed: f64) -> RoundCost {
    RoundCost {
        rollout_tokens_per_second: rollout.tokens_per_second(),
        rollout_forwards_per_chunk: rollout.forwards_per_chunk(),
        rollout_tokens_per_forward: rollout.tokens_per_forward(),
        sandbox_tests_per_second: rewards.tests_run as f64 / rewards.sandbox_seconds.max(1e-9),
        sandbox_timeouts: rewards.timeouts,
        sandbox_failures: rewards.sandbox_failures,
        sandbox_non_data: rewards.non_data,
        rollout_seconds: rollout.seconds,
        // Reward time not hidden behind decoding.
        reward_seconds: (elapsed - rollout.seconds).max(0.0),
        sandbox_tests: rewards.tests_run,
        scoring_seconds: 0.0,
    }
}

/// `[N, K]` reveal steps (`None` when the rows are ragged or empty: not recorded).
fn reveal_steps_tensor(steps: &[Vec<i64>], device: Device) -> Option<Tensor> {
    let k = steps.first()?.len();
    if k == 0 || steps.iter().any(|s| s.len() != k) {
        return None;
    }
    let flat: Vec<i64> = steps.iter().flatten().copied().collect();
    Some(
        Tensor::from_slice(&flat)
            .view([steps.len() as i64, k as i64])
            .to_device(device),
    )
}

fn coefficients_tensor(values: &[f64], device: Device) -> Tensor {
    Tensor::from_slice(values)
        .to_kind(Kind::Float)
        .to_device(device)
}
