//! The training loop: one GRPO round after another (SPEC sections 4–7, 9).
//!
//! A round reads as the algorithm: take the step's prompts → roll out G completions each →
//! score them in the sandbox → group-relative advantages on the full batch → old (and
//! reference) estimates per iteration seed, before any update → μ iterations of
//! micro-batches, one optimizer step each → log → checkpoint.
//!
//! Every random draw is keyed by (seed, step, …) — data order, rollouts, masks — so the
//! run holds no generator state: a checkpoint (weights, AdamW moments, step, the rollout
//! buffer when saved mid-round) is all that resuming needs, and a resumed run repeats the
//! uninterrupted one.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use couplet_dist::{Backend as DistBackend, ProcessGroup, Rendezvous};
use couplet_model::{chat_prompt, random, Checkpoint, DreamModel, LoadOptions, SaveOptions};
use couplet_reward::{load_rows, score_batch, BadRows, RewardConfig, RewardKind, Row};
use couplet_rollout::{generate_rollout, RolloutConfig};
use couplet_sandbox::{Backend, Limits, ProcessBackend, SandboxPool, WasmBackend};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::advantages::compute_advantages;
use crate::config::TrainConfig;
use crate::estimator::{estimate, Estimator, EstimatorBatch, LeanEstimate};
use crate::eval::{evaluate, load_benchmark, EvalProblem, EvalReport, EvalSettings};
use crate::lean::LeanConfig;
use crate::objective::{grpo_loss, ObjectiveConfig};
use crate::optim::{lr_factor, warmup_steps, AdamW, AdamWConfig, Schedule};
use crate::order::PromptOrder;
use crate::reference::{with_autocast, ReferenceModel};

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{0}")]
    Setup(String),
    #[error("{path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
    #[error("stopped at step {step}: the loss or gradient norm was NaN/inf in {count} optimizer steps in a row (those steps were skipped, no weights were updated by them). The last checkpoint before them is intact; lower optimizer.lr, raise optimizer.eps or check the model, or raise schedule.max_nonfinite_in_a_row")]
    NonFinite { step: u64, count: u32 },
}

fn setup<E: std::fmt::Display>(context: &str) -> impl FnOnce(E) -> TrainError + '_ {
    move |e| TrainError::Setup(format!("{context}: {e}"))
}

/// Scalars of one optimizer step.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    pub step: u64,
    pub reward: f64,
    pub reward_std: f64,
    pub reward_per_function: Vec<(String, f64)>,
    pub loss: f64,
    pub kl: f64,
    pub clip_ratio: f64,
    pub grad_norm: f64,
    pub lr: f64,
    pub completion_length: f64,
    pub zero_std_ratio: f64,
    pub completion_min: f64,
    pub completion_max: f64,
    /// Share of completions that hit max_new_tokens without an end token.
    pub clipped_ratio: f64,
    pub advantage_mean_abs: f64,
    /// Local AR-ness@1..9 and global AR-ness@1..4 of the round's decode orders.
    pub arness_local: Vec<f64>,
    pub arness_global: Vec<f64>,
    pub rollout_tokens_per_second: f64,
    pub sandbox_tests_per_second: f64,
    pub sandbox_timeouts: usize,
    pub sandbox_failures: usize,
    pub rollout_seconds: f64,
    pub reward_seconds: f64,
    pub update_seconds: f64,
    /// Steps skipped so far because the loss or gradient norm was NaN/inf.
    #[serde(default)]
    pub skipped_nonfinite: u64,
}

/// One sampled completion with its rewards, for `completions.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionSample {
    pub step: u64,
    pub prompt: String,
    pub completion: String,
    pub rewards: Vec<(String, f64)>,
    pub total: f64,
}

/// What a checkpoint records besides weights and optimizer moments.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimizer steps taken.
    pub step: u64,
    /// Iteration of the current round to run next (0 = start a new round).
    pub next_iteration: usize,
    pub nonfinite_in_a_row: u32,
    #[serde(default)]
    pub skipped_nonfinite: u64,
    pub history: Vec<StepMetrics>,
}

/// The rollout batch of a round, kept until its μ iterations are done.
struct RoundBuffer {
    sequences: Tensor,       // [N, P + K]
    prompt_mask: Tensor,     // [N, P]
    completion_mask: Tensor, // [N, K]
    advantages: Tensor,      // [N]
    /// Per iteration: old-policy estimates [N, K] (μ > 1 only) and reference estimates.
    old: Vec<Option<Tensor>>,
    reference: Vec<Option<Tensor>>,
    metrics: StepMetrics,
}

/// One micro-batch's slice of a round buffer, with the global sample indices of its rows.
struct MicroBatch {
    start: i64,
    len: i64,
    sequences: Tensor,
    prompt_mask: Tensor,
    samples: Vec<u64>,
}

impl MicroBatch {
    fn batch(&self) -> EstimatorBatch<'_> {
        EstimatorBatch {
            sequences: &self.sequences,
            prompt_mask: &self.prompt_mask,
            prompt_width: self.prompt_mask.size()[1],
            samples: &self.samples,
        }
    }
}

impl RoundBuffer {
    /// The tensors a checkpoint keeps (on the CPU), by name.
    fn tensors(&self) -> Vec<(String, Tensor)> {
        let cpu = |t: &Tensor| t.to_device(Device::Cpu);
        let mut out = vec![
            ("sequences".to_string(), cpu(&self.sequences)),
            ("prompt_mask".to_string(), cpu(&self.prompt_mask)),
            ("completion_mask".to_string(), cpu(&self.completion_mask)),
            ("advantages".to_string(), cpu(&self.advantages)),
        ];
        for (i, t) in self.old.iter().enumerate() {
            if let Some(t) = t {
                out.push((format!("old/{i}"), cpu(t)));
            }
        }
        for (i, t) in self.reference.iter().enumerate() {
            if let Some(t) = t {
                out.push((format!("reference/{i}"), cpu(t)));
            }
        }
        out
    }

    /// Consecutive micro-batches of `size` rows; row i is global sample `first + i`.
    fn micro_batches(&self, size: i64, first: u64) -> Vec<MicroBatch> {
        let n = self.sequences.size()[0];
        (0..n)
            .step_by(size.max(1) as usize)
            .map(|start| {
                let len = size.min(n - start);
                MicroBatch {
                    start,
                    len,
                    sequences: self.sequences.narrow(0, start, len),
                    prompt_mask: self.prompt_mask.narrow(0, start, len),
                    samples: (start..start + len).map(|i| first + i as u64).collect(),
                }
            })
            .collect()
    }
}

pub struct Trainer {
    pub config: TrainConfig,
    pub policy: Checkpoint,
    reference: Option<ReferenceModel>,
    optimizer: AdamW,
    pool: SandboxPool,
    rows: Vec<Row>,
    order: PromptOrder,
    /// `data.validation` problems when `eval.every > 0`.
    validation: Vec<EvalProblem>,
    pub state: TrainerState,
    buffer: Option<RoundBuffer>,
    total_steps: u64,
    device: Device,
    /// Completions of the last sampled round (for `completions.jsonl`; this rank's).
    pub last_samples: Vec<CompletionSample>,
    /// The data-parallel group (`distributed.backend` ≠ none), and under ZeRO-1 the rank
    /// that owns (updates) each optimizer parameter.
    dist: Option<ProcessGroup>,
    owners: Option<Vec<usize>>,
}

impl Trainer {
    /// Loads the policy, data and sandbox for `config`; resumes from `resume` (a
    /// checkpoint folder) when given.
    pub fn new(
        config: TrainConfig,
        repo_root: &Path,
        resume: Option<&Path>,
    ) -> Result<Self, TrainError> {
        let device = match config.model.device.as_str() {
            "cpu" => Device::Cpu,
            "auto" => Device::cuda_if_available(),
            "cuda" => Device::Cuda(0),
            other => match other.strip_prefix("cuda:").and_then(|i| i.parse().ok()) {
                Some(i) => Device::Cuda(i),
                None => {
                    return Err(TrainError::Setup(format!(
                        "model.device: unknown device {other:?}"
                    )))
                }
            },
        };
        let dist = join_group(&config)?;
        let device = match &dist {
            Some(pg) if pg.backend == DistBackend::Nccl => pg.device(),
            _ => device,
        };
        let world = dist.as_ref().map_or(1, |pg| pg.world_size);
        let per_rank_step =
            config.schedule.micro_batch_size * config.schedule.gradient_accumulation_steps;
        if per_rank_step * world != config.completions_per_step() {
            return Err(TrainError::Setup(format!(
                "schedule.micro_batch_size × gradient_accumulation_steps = {per_rank_step} per rank × {world} rank(s) must equal the completions per step ({}); set gradient_accumulation_steps = {}",
                config.completions_per_step(),
                config.completions_per_step() / world / config.schedule.micro_batch_size.max(1)
            )));
        }
        if let Some(pg) = &dist {
            if config.rollout.prompts_per_step % pg.world_size != 0 {
                return Err(TrainError::Setup(format!(
                    "rollout.prompts_per_step = {} must be a multiple of the world size {} (each rank rolls out whole prompt groups)",
                    config.rollout.prompts_per_step, pg.world_size
                )));
            }
        }
        let source = resume
            .map(|r| r.join("policy"))
            .unwrap_or_else(|| config.model.path.clone());
        let policy = Checkpoint::load(
            &source,
            LoadOptions {
                device,
                kind: Some(Kind::Float),
            },
        )
        .map_err(|e| TrainError::Setup(format!("loading the policy: {e}")))?;
        if let Some(pg) = &dist {
            sync_weights(pg, &policy.model)?;
        }
        let load = couplet_reward::LoadOptions {
            prompt_column: config.data.prompt_column.clone(),
            bad_rows: if config.data.bad_rows == "fatal" {
                BadRows::Fatal
            } else {
                BadRows::Skip
            },
            require_inferences: false,
        };
        let (rows, _) = load_rows(&config.data.train, &load).map_err(setup("training data"))?;
        if rows.is_empty() {
            return Err(TrainError::Setup(format!(
                "{}: no usable rows",
                config.data.train.display()
            )));
        }
        let order = prompt_order(&config, &rows)?;
        let mut validation = match (&config.data.validation, config.eval.every) {
            (Some(path), every) if every > 0 => load_benchmark(&path.to_string_lossy(), repo_root)
                .map_err(|e| TrainError::Setup(format!("data.validation: {e}")))?,
            _ => Vec::new(),
        };
        if let Some(max) = config.eval.max_problems {
            validation.truncate(max);
        }
        let backend: Arc<dyn Backend> = match config.sandbox.backend.as_str() {
            "process" => Arc::new(
                ProcessBackend::new(
                    &config
                        .sandbox
                        .python
                        .clone()
                        .unwrap_or_else(ProcessBackend::default_python),
                )
                .map_err(setup("sandbox"))?,
            ),
            _ => Arc::new(WasmBackend::from_repo(repo_root).map_err(setup("sandbox"))?),
        };
        let pool =
            SandboxPool::new(backend, config.sandbox.workers).map_err(setup("sandbox pool"))?;
        let params: Vec<(String, Tensor)> =
            policy.model.var_store().variables().into_iter().collect();
        let mut optimizer = AdamW::new(params, config.optimizer);
        let per_epoch = (rows.len() / config.rollout.prompts_per_step).max(1) as u64
            * config.objective.num_iterations as u64;
        let total_steps = config
            .schedule
            .max_steps
            .unwrap_or(per_epoch * config.schedule.epochs as u64);
        // The reference starts as the *base* model, also when resuming (a synced one is
        // restored from the checkpoint below).
        let reference = if config.objective.beta > 0.0 {
            let sync = config
                .objective
                .sync_ref_model
                .then_some(config.objective.ref_model_sync_steps);
            let base = if resume.is_some() {
                Some(
                    couplet_model::load_model(
                        &config.model.path,
                        LoadOptions {
                            device,
                            kind: Some(Kind::Float),
                        },
                    )
                    .map_err(setup("loading the reference (base) model"))?,
                )
            } else {
                None
            };
            let from = base.as_ref().unwrap_or(&policy.model);
            Some(ReferenceModel::from_policy(
                from,
                device,
                Kind::Float,
                sync,
                config.objective.ref_model_mixup_alpha,
            ))
        } else {
            None
        };
        let mut trainer = Trainer {
            config,
            policy,
            reference,
            optimizer: AdamW::new(Vec::new(), AdamWConfig::default()),
            pool,
            rows,
            order,
            validation,
            state: TrainerState::default(),
            buffer: None,
            total_steps,
            device,
            last_samples: Vec::new(),
            dist,
            owners: None,
        };
        if trainer.config.distributed.zero1 {
            if let Some(pg) = &trainer.dist {
                trainer.owners = Some(optimizer.shard(pg.rank, pg.world_size));
            }
        }
        if let Some(dir) = resume {
            trainer.restore(dir, &mut optimizer)?;
        }
        trainer.optimizer = optimizer;
        Ok(trainer)
    }

    pub fn total_steps(&self) -> u64 {
        self.total_steps
    }

    /// This process's rank (0 without a group): rank 0 alone logs, evaluates and writes
    /// checkpoints.
    pub fn rank(&self) -> usize {
        self.dist.as_ref().map_or(0, |pg| pg.rank)
    }

    fn rank_and_world(&self) -> (usize, usize) {
        self.dist
            .as_ref()
            .map_or((0, 1), |pg| (pg.rank, pg.world_size))
    }

    /// Global index of this rank's first sample in round `round`: samples are numbered
    /// across ranks, so masks and draws do not depend on the world size.
    fn first_local_sample(&self, round: u64) -> u64 {
        let (rank, world) = self.rank_and_world();
        round * self.config.completions_per_step() as u64
            + (rank * self.config.completions_per_step() / world) as u64
    }

    /// Whether any rank was asked to stop (SIGINT/SIGTERM reach ranks at different
    /// times; every rank must make the same decision or the collectives would diverge).
    pub fn agree_stop(&self, local: bool) -> Result<bool, TrainError> {
        match &self.dist {
            Some(pg) => Ok(all_reduce_scalars(pg, &[f64::from(u8::from(local))])?[0] > 0.0),
            None => Ok(local),
        }
    }

    /// Under ZeRO-1, gathers every parameter's moments from its owner (one parameter at a
    /// time) so rank 0 can write the same optimizer file a single process would; without
    /// sharding, this rank's own moments. Collective under ZeRO-1.
    fn full_moments(&self) -> Result<Vec<(String, Tensor)>, TrainError> {
        let mut out = Vec::new();
        for (i, p) in self.optimizer.params.iter().enumerate() {
            let (a, b) = match (&self.dist, &self.owners) {
                (Some(pg), Some(owners)) => {
                    let mut a = if p.owned {
                        p.exp_avg.shallow_clone()
                    } else {
                        Tensor::zeros(p.param.size(), (Kind::Float, p.param.device()))
                    };
                    let mut b = if p.owned {
                        p.exp_avg_sq.shallow_clone()
                    } else {
                        Tensor::zeros(p.param.size(), (Kind::Float, p.param.device()))
                    };
                    pg.broadcast(&mut a, owners[i])
                        .map_err(setup("gathering optimizer state"))?;
                    pg.broadcast(&mut b, owners[i])
                        .map_err(setup("gathering optimizer state"))?;
                    (a, b)
                }
                _ => (p.exp_avg.shallow_clone(), p.exp_avg_sq.shallow_clone()),
            };
            if self.rank() == 0 {
                out.push((format!("exp_avg/{}", p.name), a.to_device(Device::Cpu)));
                out.push((format!("exp_avg_sq/{}", p.name), b.to_device(Device::Cpu)));
            }
        }
        Ok(out)
    }

    /// Prompt indices of round `round` (global prompt counter → epoch permutation).
    fn round_rows(&self, round: u64) -> Vec<usize> {
        let pps = self.config.rollout.prompts_per_step as u64;
        (round * pps..(round + 1) * pps)
            .map(|g| self.order.row(g))
            .collect()
    }

    /// Token width of the round's widest prompt over all ranks (after `max_prompt_length`).
    fn round_prompt_width(&self, rows: &[usize]) -> Result<i64, TrainError> {
        let cfg = &self.config;
        let mut width = 0;
        for &i in rows {
            let prompt = chat_prompt(&cfg.data.system_prompt, &self.rows[i].question);
            let ids = self
                .policy
                .tokenizer
                .encode(&prompt)
                .map_err(setup("tokenizing a prompt"))?;
            width = width.max(ids.len().min(cfg.data.max_prompt_length));
        }
        Ok(width as i64)
    }

    fn estimator(&self) -> Estimator {
        let e = &self.config.estimator;
        match e.kind.as_str() {
            "d1" => Estimator::D1 {
                p_mask_prompt: e.p_mask_prompt,
            },
            "full_mask" => Estimator::FullMask,
            "decoupled" => Estimator::Decoupled,
            _ => Estimator::Coupled {
                pairs: e.pairs,
                include_full_mask: e.include_full_mask,
            },
        }
    }

    fn mask_seed(&self, round: u64, iteration: usize) -> u64 {
        if self.config.estimator.random_masking {
            random::bits(self.config.seed, 0x500 + iteration as u64, round)
        } else {
            42
        }
    }

    /// Evaluates the policy on `data.validation` (`None` when evaluation is off): pass@1
    /// over `eval.samples` samples per problem, decoded like the rollouts but at
    /// `eval.temperature`, with the same seed at every evaluation so runs compare.
    pub fn evaluate_validation(&self) -> Result<Option<EvalReport>, TrainError> {
        if self.validation.is_empty() {
            return Ok(None);
        }
        let cfg = &self.config;
        let mut rollout = cfg.rollout.clone();
        rollout.temperature = cfg.eval.temperature;
        let settings = EvalSettings {
            samples: cfg.eval.samples,
            ks: vec![1],
            rollout: RolloutConfig {
                decoder: rollout.decoder_config(),
                group_size: cfg.eval.samples,
                generation_batch_size: cfg.rollout.generation_batch_size,
                max_prompt_length: Some(cfg.data.max_prompt_length),
                end_tokens: None,
                progress: false,
            },
            seed: random::bits(cfg.seed, 0x800, 0),
            system_prompt: cfg.data.system_prompt.clone(),
            limits: self.limits(),
            bf16: cfg.model.dtype == "bf16",
        };
        evaluate(
            &self.policy,
            &self.validation,
            &settings,
            &self.pool,
            |_, _| {},
        )
        .map(Some)
        .map_err(setup("evaluation"))
    }

    fn limits(&self) -> Limits {
        Limits {
            per_test: Duration::from_secs_f64(self.config.sandbox.timeout_seconds),
            memory_bytes: self.config.sandbox.memory_mb << 20,
            ..Limits::default()
        }
    }

    /// Samples, scores and prepares round `round`.
    fn start_round(&mut self, round: u64) -> Result<RoundBuffer, TrainError> {
        let cfg = &self.config;
        let (rank, world) = self.rank_and_world();
        let all_rows = self.round_rows(round);
        let per_rank = all_rows.len() / world;
        let rows: Vec<usize> = all_rows[rank * per_rank..(rank + 1) * per_rank].to_vec();
        let prompts: Vec<String> = rows
            .iter()
            .map(|&i| chat_prompt(&cfg.data.system_prompt, &self.rows[i].question))
            .collect();
        let rollout_cfg = RolloutConfig {
            decoder: cfg.rollout.decoder_config(),
            group_size: cfg.rollout.num_generations,
            generation_batch_size: cfg.rollout.generation_batch_size,
            max_prompt_length: Some(cfg.data.max_prompt_length),
            end_tokens: None,
            progress: false,
        };
        let g = cfg.rollout.num_generations;
        let first_sample = round * self.config.completions_per_step() as u64
            + (rank * per_rank * cfg.rollout.num_generations) as u64;
        let functions: Vec<(RewardKind, f64)> = cfg
            .reward
            .functions
            .iter()
            .map(|f| {
                let kind = match f.name.as_str() {
                    "binary_code" => RewardKind::BinaryCode,
                    "code_format" => RewardKind::CodeFormat,
                    "soft_overlong" => RewardKind::SoftOverlong,
                    _ => RewardKind::Code,
                };
                (kind, f.weight)
            })
            .collect();
        let reward_cfg = RewardConfig {
            functions,
            max_completion_tokens: cfg.rollout.max_new_tokens as usize,
            overlong_buffer: cfg.reward.overlong_buffer,
        };
        let limits = self.limits();
        // Decode prompt groups one after another; each group's rewards run in the sandbox
        // pool on a helper thread while the next group decodes. Draws are keyed by sample
        // index and every group is scored in full, so nothing depends on timing.
        let group = (cfg.rollout.generation_batch_size / g).max(1);
        let rollout_seed = random::bits(cfg.seed, 0x400, round);
        let started = Instant::now();
        let (parts, scored) = std::thread::scope(
            |scope| -> Result<
                (
                    Vec<couplet_rollout::Rollout>,
                    Vec<couplet_reward::RewardBatch>,
                ),
                TrainError,
            > {
                let mut parts = Vec::new();
                let mut handles = Vec::new();
                for (c, chunk) in prompts.chunks(group).enumerate() {
                    let first = first_sample + (c * group * g) as u64;
                    let part = with_autocast(self.device, cfg.model.dtype == "bf16", || {
                        generate_rollout(
                            &self.policy.model,
                            &self.policy.tokenizer,
                            chunk,
                            &rollout_cfg,
                            rollout_seed,
                            first,
                        )
                    })
                    .map_err(setup("rollout"))?;
                    let tests: Vec<Vec<String>> = part
                        .prompt_index
                        .iter()
                        .map(|&p| self.rows[rows[c * group + p]].test_cases.clone())
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
                            .map_err(|_| TrainError::Setup("a reward thread panicked".into()))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok((parts, scored))
            },
        )?;
        let elapsed = started.elapsed().as_secs_f64();
        let pad = self.policy.tokenizer.special().pad;
        let mut rollout = couplet_rollout::Rollout::concat(parts, pad);
        rollout.pad_prompts_to(self.round_prompt_width(&all_rows)?, pad);
        let rewards = couplet_reward::RewardBatch::concat(scored);
        let rollout_seconds = rollout.seconds;
        // Reward time not hidden behind decoding.
        let reward_seconds = (elapsed - rollout_seconds).max(0.0);

        let adv = compute_advantages(
            &rewards.total,
            g,
            cfg.objective.baseline,
            cfg.objective.scale_rewards,
        )
        .map_err(setup("advantages"))?;
        let n = rewards.total.len() as f64;
        let mean = rewards.total.iter().sum::<f64>() / n;
        let std = (rewards
            .total
            .iter()
            .map(|r| (r - mean).powi(2))
            .sum::<f64>()
            / n)
            .sqrt();
        let lengths: Vec<f64> = rollout
            .completion_lengths
            .iter()
            .map(|&l| l as f64)
            .collect();
        let arness = rollout.mean_arness();
        self.last_samples = (0..rollout.len())
            .map(|i| CompletionSample {
                step: self.state.step + 1,
                prompt: self.rows[rows[rollout.prompt_index[i]]].question.clone(),
                completion: rollout.texts[i].clone(),
                rewards: rewards
                    .per_function
                    .iter()
                    .map(|(k, v)| (k.name().to_string(), v[i]))
                    .collect(),
                total: rewards.total[i],
            })
            .collect();
        let metrics = StepMetrics {
            completion_min: lengths.iter().cloned().fold(f64::INFINITY, f64::min),
            completion_max: lengths.iter().cloned().fold(0.0, f64::max),
            clipped_ratio: rollout.terminated.iter().filter(|t| !**t).count() as f64 / n,
            advantage_mean_abs: adv.values.iter().map(|a| a.abs()).sum::<f64>() / n,
            arness_local: arness.local.clone(),
            arness_global: arness.global.clone(),
            rollout_tokens_per_second: rollout.tokens_per_second(),
            sandbox_tests_per_second: rewards.tests_run as f64 / rewards.sandbox_seconds.max(1e-9),
            sandbox_timeouts: rewards.timeouts,
            sandbox_failures: rewards.sandbox_failures,
            reward: mean,
            reward_std: std,
            reward_per_function: rewards.means.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            completion_length: rollout.completion_lengths.iter().sum::<usize>() as f64 / n,
            zero_std_ratio: adv.zero_std_ratio,
            rollout_seconds,
            reward_seconds,
            ..StepMetrics::default()
        };
        let metrics = match &self.dist {
            Some(pg) => {
                let mine = serde_json::to_vec(&(n, &metrics)).unwrap_or_default();
                let parts = pg
                    .all_gather_bytes(&mine)
                    .map_err(setup("gathering the round's metrics"))?
                    .into_iter()
                    .map(|b| serde_json::from_slice::<(f64, StepMetrics)>(&b))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(setup("gathering the round's metrics"))?;
                merge_round_metrics(&parts)
            }
            None => metrics,
        };
        let sequences = rollout.sequences();
        let mut buffer = RoundBuffer {
            sequences,
            prompt_mask: rollout.prompt_mask.shallow_clone(),
            completion_mask: rollout.completion_mask.shallow_clone(),
            advantages: Tensor::from_slice(&adv.values)
                .to_kind(Kind::Float)
                .to_device(self.device),
            old: Vec::new(),
            reference: Vec::new(),
            metrics,
        };
        // Old and reference estimates for every iteration, before any update.
        let mu = cfg.objective.num_iterations;
        for it in 0..mu {
            let seed = self.mask_seed(round, it);
            buffer.old.push(if mu > 1 {
                Some(self.score_all(&self.policy.model, &buffer, round, seed))
            } else {
                None
            });
            buffer.reference.push(
                self.reference
                    .as_ref()
                    .map(|r| self.score_all(&r.model, &buffer, round, seed)),
            );
        }
        Ok(buffer)
    }

    /// No-grad estimates `[N, K]` of the whole buffer under `model`.
    fn score_all(&self, model: &DreamModel, buffer: &RoundBuffer, round: u64, seed: u64) -> Tensor {
        let _guard = tch::no_grad_guard();
        let first = self.first_local_sample(round);
        let mask_id = self.policy.tokenizer.special().mask;
        let parts: Vec<Tensor> = buffer
            .micro_batches(self.config.schedule.micro_batch_size as i64, first)
            .iter()
            .map(|mb| estimate(model, mask_id, &self.estimator(), &mb.batch(), seed).0)
            .collect();
        Tensor::cat(&parts, 0)
    }

    /// One optimizer step: the next iteration of the current round (sampling a new round
    /// first when none is buffered).
    pub fn step(&mut self) -> Result<StepMetrics, TrainError> {
        let mu = self.config.objective.num_iterations;
        let round = self.state.step / mu as u64;
        if self.buffer.is_none() {
            let buffer = self.start_round(round)?;
            self.buffer = Some(buffer);
            self.state.next_iteration = 0;
        }
        let iteration = self.state.next_iteration;
        let started = Instant::now();
        let buffer = self.buffer.as_ref().expect("buffered above");
        let seed = self.mask_seed(round, iteration);
        let mb = self.config.schedule.micro_batch_size as i64;
        let first = self.first_local_sample(round);
        let mut tokens = buffer.completion_mask.sum(Kind::Float).double_value(&[]);
        if let Some(pg) = &self.dist {
            // The loss is normalised by the step's *global* token count, so summing the
            // ranks' gradients gives the single-process gradient of the global batch.
            tokens = all_reduce_scalars(pg, &[tokens])?[0];
        }
        let o = &self.config.objective;
        let objective = ObjectiveConfig {
            epsilon_low: o.epsilon_low,
            epsilon_high: o.epsilon_high,
            beta: o.beta,
        };
        let lean = LeanConfig {
            chunk_rows: self.config.estimator.logits_chunk_rows,
            checkpoint: self.config.model.gradient_checkpointing,
        };
        let estimator = self.estimator();
        let mask_id = self.policy.tokenizer.special().mask;
        let (mut loss_sum, mut kl_sum, mut clip_sum) = (0.0, 0.0, 0.0);
        for micro in buffer.micro_batches(mb, first) {
            let (start, len) = (micro.start, micro.len);
            let batch = micro.batch();
            let old = buffer.old[iteration]
                .as_ref()
                .map(|t| t.narrow(0, start, len));
            let reference = buffer.reference[iteration]
                .as_ref()
                .map(|t| t.narrow(0, start, len));
            let cm = buffer.completion_mask.narrow(0, start, len);
            let (loss_value, metrics) =
                with_autocast(self.device, self.config.model.dtype == "bf16", || {
                    let le = LeanEstimate::new(
                        &self.policy.model,
                        mask_id,
                        &estimator,
                        &batch,
                        seed,
                        lean,
                    );
                    let (loss, metrics) = grpo_loss(
                        &le.estimate,
                        old.as_ref(),
                        reference.as_ref(),
                        &buffer.advantages.narrow(0, start, len),
                        &cm,
                        &objective,
                        Some(tokens),
                    );
                    loss.backward();
                    le.backward();
                    (loss.double_value(&[]), metrics)
                });
            let weight = metrics.tokens / tokens.max(1.0);
            loss_sum += loss_value;
            kl_sum += metrics.kl * weight;
            clip_sum += metrics.clip_region * weight;
        }
        if let Some(pg) = &self.dist {
            all_reduce_grads(pg, &self.policy.model, self.config.distributed.bucket_mb)?;
            let sums = all_reduce_scalars(pg, &[loss_sum, kl_sum, clip_sum])?;
            (loss_sum, kl_sum, clip_sum) = (sums[0], sums[1], sums[2]);
        }
        let s = &self.config.schedule;
        let schedule = Schedule::parse(&s.kind, s.min_lr_rate).unwrap_or(Schedule::Constant);
        let warmup = s
            .warmup_steps
            .unwrap_or_else(|| warmup_steps(self.total_steps, s.warmup_ratio));
        let lr = self.config.optimizer.lr
            * lr_factor(schedule, self.state.step, self.total_steps, warmup);
        let mut metrics = buffer.metrics.clone();
        // A non-finite loss or gradient norm skips the update (AdamW moments untouched),
        // so one bad batch cannot poison the weights; K such steps in a row stop the run.
        let grad_norm = if loss_sum.is_finite() {
            self.optimizer.grad_norm()
        } else {
            f64::NAN
        };
        if !grad_norm.is_finite() {
            self.optimizer.zero_grad();
            self.state.nonfinite_in_a_row += 1;
            self.state.skipped_nonfinite += 1;
            metrics.grad_norm = grad_norm;
            let limit = self.config.schedule.max_nonfinite_in_a_row;
            if self.state.nonfinite_in_a_row >= limit {
                return Err(TrainError::NonFinite {
                    step: self.state.step + 1,
                    count: self.state.nonfinite_in_a_row,
                });
            }
        } else {
            self.state.nonfinite_in_a_row = 0;
            let report = self.optimizer.step(lr);
            metrics.grad_norm = report.grad_norm;
            if let (Some(pg), Some(owners)) = (&self.dist, &self.owners) {
                // ZeRO-1: each parameter was updated by its owner only; share the result.
                tch::no_grad(|| -> Result<(), TrainError> {
                    for (p, &owner) in self.optimizer.params.iter_mut().zip(owners) {
                        pg.broadcast(&mut p.param, owner)
                            .map_err(setup("broadcasting updated parameters"))?;
                    }
                    Ok(())
                })?;
            }
        }
        metrics.skipped_nonfinite = self.state.skipped_nonfinite;
        self.state.step += 1;
        if let Some(reference) = self.reference.as_mut() {
            reference.maybe_sync(&self.policy.model, self.state.step);
        }
        metrics.step = self.state.step;
        metrics.loss = loss_sum;
        metrics.kl = kl_sum;
        metrics.clip_ratio = clip_sum;
        metrics.lr = lr;
        metrics.update_seconds = started.elapsed().as_secs_f64();
        self.state.next_iteration = iteration + 1;
        if self.state.next_iteration >= self.config.objective.num_iterations {
            self.buffer = None;
            self.state.next_iteration = 0;
        }
        self.state.history.push(metrics.clone());
        Ok(metrics)
    }

    /// Writes `run_dir/checkpoint-<step>` atomically (temp dir, fsync, rename), updates
    /// `latest`, and prunes beyond `save_total_limit` (never the newest).
    ///
    /// With several ranks this is collective: rank 0 writes the checkpoint (gathering
    /// ZeRO-1 optimizer shards first), every other rank adds only its part of a mid-round
    /// rollout buffer, and all ranks return the same result.
    pub fn save_checkpoint(&self) -> Result<PathBuf, TrainError> {
        let rank = self.rank();
        let moments = self.full_moments()?;
        let run = &self.config.checkpointing.run_dir;
        let final_dir = run.join(format!("checkpoint-{}", self.state.step));
        let tmp = run.join(format!(".tmp-checkpoint-{}", self.state.step));
        let err = |path: &Path, message: String| TrainError::Checkpoint {
            path: path.to_path_buf(),
            message,
        };
        let prepared = if rank == 0 {
            let _ = std::fs::remove_dir_all(&tmp);
            std::fs::create_dir_all(&tmp).map_err(|e| err(&tmp, e.to_string()))
        } else {
            Ok(())
        };
        self.collective_ok(prepared, &tmp)?;
        let shard = match (&self.buffer, rank) {
            (Some(buffer), r) if r > 0 => Tensor::write_safetensors(
                &buffer.tensors(),
                tmp.join(format!("round_buffer-rank{r}.safetensors")),
            )
            .map_err(|e| err(&tmp, e.to_string())),
            _ => Ok(()),
        };
        if let Err(e) = self.collective_ok(shard, &tmp) {
            if rank == 0 {
                let _ = std::fs::remove_dir_all(&tmp);
            }
            return Err(e);
        }
        if rank != 0 {
            self.collective_ok(Ok(()), &final_dir)?;
            return Ok(final_dir);
        }
        let result = (|| -> Result<(), TrainError> {
            couplet_model::save_model(
                &self.policy.model,
                &tmp.join("policy"),
                &SaveOptions {
                    assets_from: Some(self.policy.dir.clone()),
                    ..Default::default()
                },
            )
            .map_err(|e| err(&tmp, e.to_string()))?;
            Tensor::write_safetensors(&moments, tmp.join("optimizer.safetensors"))
                .map_err(|e| err(&tmp, e.to_string()))?;
            if let Some(buffer) = &self.buffer {
                let tensors = buffer.tensors();
                Tensor::write_safetensors(&tensors, tmp.join("round_buffer.safetensors"))
                    .map_err(|e| err(&tmp, e.to_string()))?;
                let metrics = serde_json::to_string(&buffer.metrics).unwrap_or_default();
                std::fs::write(tmp.join("round_metrics.json"), metrics)
                    .map_err(|e| err(&tmp, e.to_string()))?;
            }
            if let Some(reference) = &self.reference {
                if reference.syncs > 0 {
                    couplet_model::save_model(
                        &reference.model,
                        &tmp.join("reference"),
                        &SaveOptions::default(),
                    )
                    .map_err(|e| err(&tmp, e.to_string()))?;
                }
            }
            let state = serde_json::json!({
                "world_size": self.rank_and_world().1,
                "optimizer_step": self.optimizer.step,
                "trainer": self.state,
                "config": self.config.to_toml(),
            });
            std::fs::write(
                tmp.join("trainer_state.json"),
                serde_json::to_string_pretty(&state).unwrap_or_default(),
            )
            .map_err(|e| err(&tmp, e.to_string()))?;
            std::fs::write(tmp.join("COMPLETE"), b"ok").map_err(|e| err(&tmp, e.to_string()))?;
            if let Ok(dir) = std::fs::File::open(&tmp) {
                let _ = dir.sync_all();
            }
            let _ = std::fs::remove_dir_all(&final_dir);
            std::fs::rename(&tmp, &final_dir).map_err(|e| err(&final_dir, e.to_string()))
        })();
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        let result = result.and_then(|()| {
            std::fs::write(
                run.join("latest"),
                format!("checkpoint-{}\n", self.state.step),
            )
            .map_err(|e| err(run, e.to_string()))
        });
        if result.is_ok() {
            self.prune();
        }
        self.collective_ok(result, &final_dir)?;
        Ok(final_dir)
    }

    /// Every rank learns whether every rank's `local` part succeeded: its own error, or an
    /// error naming `path` when another rank failed.
    fn collective_ok(&self, local: Result<(), TrainError>, path: &Path) -> Result<(), TrainError> {
        let Some(pg) = &self.dist else {
            return local;
        };
        let failed = all_reduce_scalars(pg, &[f64::from(u8::from(local.is_err()))])?[0] > 0.0;
        match local {
            Err(e) => Err(e),
            Ok(()) if failed => Err(TrainError::Checkpoint {
                path: path.to_path_buf(),
                message: "another rank failed to write its part (see its error)".into(),
            }),
            Ok(()) => Ok(()),
        }
    }

    fn prune(&self) {
        let mut steps = complete_checkpoints(&self.config.checkpointing.run_dir);
        steps.sort();
        let keep = self.config.checkpointing.save_total_limit.max(1);
        while steps.len() > keep {
            let step = steps.remove(0);
            let _ = std::fs::remove_dir_all(
                self.config
                    .checkpointing
                    .run_dir
                    .join(format!("checkpoint-{step}")),
            );
        }
    }

    fn restore(&mut self, dir: &Path, optimizer: &mut AdamW) -> Result<(), TrainError> {
        let err = |message: String| TrainError::Checkpoint {
            path: dir.to_path_buf(),
            message,
        };
        let state: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("trainer_state.json"))
                .map_err(|e| err(e.to_string()))?,
        )
        .map_err(|e| err(format!("trainer_state.json: {e}")))?;
        self.state = serde_json::from_value(state["trainer"].clone())
            .map_err(|e| err(format!("trainer_state.json: {e}")))?;
        optimizer.step = state["optimizer_step"].as_u64().unwrap_or(0);
        let (rank, world) = self.rank_and_world();
        let saved_world = state["world_size"].as_u64().unwrap_or(1) as usize;
        if saved_world != world {
            return Err(err(format!(
                "written by {saved_world} rank(s), resumed with {world}: resume with the same world size (the rollout buffer and data shards are per rank)"
            )));
        }
        let moments = Tensor::read_safetensors(dir.join("optimizer.safetensors"))
            .map_err(|e| err(e.to_string()))?;
        let moments: std::collections::HashMap<String, Tensor> = moments.into_iter().collect();
        for p in optimizer.params.iter_mut().filter(|p| p.owned) {
            let (a, b) = (
                moments.get(&format!("exp_avg/{}", p.name)),
                moments.get(&format!("exp_avg_sq/{}", p.name)),
            );
            match (a, b) {
                (Some(a), Some(b)) => {
                    p.exp_avg = a.to_device(self.device);
                    p.exp_avg_sq = b.to_device(self.device);
                }
                _ => {
                    return Err(err(format!(
                        "optimizer.safetensors has no moments for {}",
                        p.name
                    )))
                }
            }
        }
        let buffer_file = if rank == 0 {
            dir.join("round_buffer.safetensors")
        } else {
            dir.join(format!("round_buffer-rank{rank}.safetensors"))
        };
        if buffer_file.exists() {
            let t: std::collections::HashMap<String, Tensor> =
                Tensor::read_safetensors(&buffer_file)
                    .map_err(|e| err(e.to_string()))?
                    .into_iter()
                    .collect();
            let get = |k: &str| {
                t.get(k)
                    .map(|x| x.to_device(self.device))
                    .ok_or_else(|| err(format!("round buffer lacks {k}")))
            };
            let mu = self.config.objective.num_iterations;
            let metrics = std::fs::read_to_string(dir.join("round_metrics.json"))
                .ok()
                .and_then(|s| serde_json::from_str(&s).ok())
                .unwrap_or_default();
            self.buffer = Some(RoundBuffer {
                sequences: get("sequences")?,
                prompt_mask: get("prompt_mask")?,
                completion_mask: get("completion_mask")?,
                advantages: get("advantages")?,
                old: (0..mu)
                    .map(|i| t.get(&format!("old/{i}")).map(|x| x.to_device(self.device)))
                    .collect(),
                reference: (0..mu)
                    .map(|i| {
                        t.get(&format!("reference/{i}"))
                            .map(|x| x.to_device(self.device))
                    })
                    .collect(),
                metrics,
            });
        }
        if let Some(reference) = self.reference.as_mut() {
            if dir.join("reference").exists() {
                couplet_model::checkpoint::load_weights_into(
                    &reference.model,
                    &dir.join("reference"),
                )
                .map_err(|e| err(e.to_string()))?;
            }
        }
        Ok(())
    }
}

/// Steps of the complete checkpoints in `run_dir` (half-written ones lack `COMPLETE`).
pub fn complete_checkpoints(run_dir: &Path) -> Vec<u64> {
    let Ok(entries) = std::fs::read_dir(run_dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let step = name.strip_prefix("checkpoint-")?.parse::<u64>().ok()?;
            e.path().join("COMPLETE").exists().then_some(step)
        })
        .collect()
}

/// The newest complete checkpoint of a run directory, warning about incomplete ones.
pub fn latest_checkpoint(run_dir: &Path) -> Option<PathBuf> {
    if let Ok(entries) = std::fs::read_dir(run_dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if (name.starts_with("checkpoint-") && !e.path().join("COMPLETE").exists())
                || name.starts_with(".tmp-checkpoint-")
            {
                eprintln!(
                    "warning: ignoring incomplete checkpoint {}",
                    e.path().display()
                );
            }
        }
    }
    complete_checkpoints(run_dir)
        .into_iter()
        .max()
        .map(|s| run_dir.join(format!("checkpoint-{s}")))
}

/// A permutation of `0..n` from `seed` (Fisher–Yates on the counter RNG).
/// The epoch order of the training rows; a `data.stratify_by` column must hold a string
/// (or number) in every row, else the error names the file, the row and the column.
fn prompt_order(config: &TrainConfig, rows: &[Row]) -> Result<PromptOrder, TrainError> {
    let Some(column) = &config.data.stratify_by else {
        return Ok(PromptOrder::shuffled(rows.len(), config.seed));
    };
    let labels = rows
        .iter()
        .map(|row| {
            let value = match column.as_str() {
                "source" => row.source.clone().map(serde_json::Value::String),
                "id" => Some(serde_json::Value::String(row.id.clone())),
                _ => row.extra.get(column).cloned(),
            };
            match value {
                Some(serde_json::Value::String(s)) => Ok(s),
                Some(serde_json::Value::Number(n)) => Ok(n.to_string()),
                _ => Err(TrainError::Setup(format!(
                    "{}: row `{}`: data.stratify_by = \"{column}\" but the row has no \
                     string or number `{column}` column",
                    config.data.train.display(),
                    row.id
                ))),
            }
        })
        .collect::<Result<Vec<String>, TrainError>>()?;
    Ok(PromptOrder::stratified(&labels, config.seed))
}

/// Joins the data-parallel group when `distributed.backend` asks for one; the ranks come
/// from torchrun's environment variables.
fn join_group(config: &TrainConfig) -> Result<Option<ProcessGroup>, TrainError> {
    let Some(backend) = DistBackend::parse(&config.distributed.backend) else {
        return Ok(None);
    };
    let rv = Rendezvous::from_env()
        .map_err(setup("distributed"))?
        .ok_or_else(|| {
            TrainError::Setup(format!(
                "distributed.backend = {:?} needs the ranks in the environment (WORLD_SIZE, RANK, MASTER_ADDR, MASTER_PORT): launch with `torchrun --no-python --nproc-per-node N couplet train ...` or `couplet launch --nproc N -- train ...`",
                config.distributed.backend
            ))
        })?;
    let timeout = Duration::from_secs_f64(config.distributed.timeout_seconds);
    ProcessGroup::new(backend, &rv, timeout)
        .map(Some)
        .map_err(setup("distributed"))
}

/// Sums `values` over ranks (f64 on the CPU; Gloo carries CPU tensors, NCCL device ones).
fn all_reduce_scalars(pg: &ProcessGroup, values: &[f64]) -> Result<Vec<f64>, TrainError> {
    let mut t = Tensor::from_slice(values).to_device(pg.device());
    pg.all_reduce_sum(&mut t).map_err(setup("all-reduce"))?;
    Vec::<f64>::try_from(t.to_device(Device::Cpu)).map_err(setup("all-reduce"))
}

/// Rank 0's weights for everyone, then a checksum every rank must agree on.
fn sync_weights(pg: &ProcessGroup, model: &DreamModel) -> Result<(), TrainError> {
    let mut vars: Vec<(String, Tensor)> = model.var_store().variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let checksum = tch::no_grad(|| -> Result<f64, TrainError> {
        let mut sum = 0.0;
        for (_, t) in vars.iter_mut() {
            pg.broadcast(t, 0)
                .map_err(setup("broadcasting initial weights"))?;
            sum += t
                .to_kind(Kind::Double)
                .abs()
                .sum(Kind::Double)
                .double_value(&[]);
        }
        Ok(sum)
    })?;
    let t = Tensor::from_slice(&[checksum]).to_device(pg.device());
    let all = pg.all_gather(&t).map_err(setup("weight checksum"))?;
    let all = Vec::<f64>::try_from(all.view([-1]).to_device(Device::Cpu))
        .map_err(setup("weight checksum"))?;
    if all.iter().any(|c| *c != all[0]) {
        return Err(TrainError::Setup(format!(
            "ranks disagree on the initial weights after the broadcast (checksums {all:?})"
        )));
    }
    Ok(())
}

/// Sums every gradient over ranks in flattened buckets of about `bucket_mb` MiB.
fn all_reduce_grads(
    pg: &ProcessGroup,
    model: &DreamModel,
    bucket_mb: usize,
) -> Result<(), TrainError> {
    let mut vars: Vec<(String, Tensor)> = model.var_store().variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    // Every rank must send the same layout: a parameter without a gradient here (unused
    // in this rank's batch) gets an explicit zero one.
    for (_, v) in &vars {
        if !v.grad().defined() {
            (v.sum(Kind::Float) * 0.0).backward();
        }
    }
    let grads: Vec<Tensor> = vars.iter().map(|(_, v)| v.grad()).collect();
    let limit = (bucket_mb << 20) as i64;
    let mut start = 0;
    while start < grads.len() {
        let mut end = start;
        let mut bytes = 0;
        while end < grads.len() && (end == start || bytes + grads[end].numel() as i64 * 4 <= limit)
        {
            bytes += grads[end].numel() as i64 * 4;
            end += 1;
        }
        let bucket = &grads[start..end];
        let mut flat = Tensor::cat(
            &bucket
                .iter()
                .map(|g| g.to_kind(Kind::Float).view([-1]))
                .collect::<Vec<_>>(),
            0,
        );
        pg.all_reduce_sum(&mut flat)
            .map_err(setup("all-reducing gradients"))?;
        let mut offset = 0;
        tch::no_grad(|| {
            for g in bucket {
                let n = g.numel() as i64;
                let mut g = g.shallow_clone();
                g.copy_(
                    &flat
                        .narrow(0, offset, n)
                        .view(g.size().as_slice())
                        .to_kind(g.kind()),
                );
                offset += n;
            }
        });
        start = end;
    }
    Ok(())
}

/// One round's metrics from every rank's (sample count, metrics): means weighted by
/// samples, pooled standard deviation, extremes, summed rates and counts, slowest times.
pub fn merge_round_metrics(parts: &[(f64, StepMetrics)]) -> StepMetrics {
    let n: f64 = parts.iter().map(|(k, _)| k).sum::<f64>().max(1.0);
    let mean =
        |f: &dyn Fn(&StepMetrics) -> f64| parts.iter().map(|(k, m)| k * f(m)).sum::<f64>() / n;
    let reward = mean(&|m| m.reward);
    let var = parts
        .iter()
        .map(|(k, m)| k * (m.reward_std.powi(2) + (m.reward - reward).powi(2)))
        .sum::<f64>()
        / n;
    let vec_mean = |f: &dyn Fn(&StepMetrics) -> &Vec<f64>| -> Vec<f64> {
        let len = parts.iter().map(|(_, m)| f(m).len()).min().unwrap_or(0);
        (0..len).map(|i| mean(&|m| f(m)[i])).collect()
    };
    let first = parts.first().map(|(_, m)| m.clone()).unwrap_or_default();
    StepMetrics {
        reward,
        reward_std: var.sqrt(),
        reward_per_function: first
            .reward_per_function
            .iter()
            .enumerate()
            .map(|(i, (name, _))| {
                (
                    name.clone(),
                    mean(&|m| m.reward_per_function.get(i).map_or(f64::NAN, |x| x.1)),
                )
            })
            .collect(),
        completion_length: mean(&|m| m.completion_length),
        completion_min: parts
            .iter()
            .map(|(_, m)| m.completion_min)
            .fold(f64::INFINITY, f64::min),
        completion_max: parts
            .iter()
            .map(|(_, m)| m.completion_max)
            .fold(0.0, f64::max),
        clipped_ratio: mean(&|m| m.clipped_ratio),
        advantage_mean_abs: mean(&|m| m.advantage_mean_abs),
        zero_std_ratio: mean(&|m| m.zero_std_ratio),
        arness_local: vec_mean(&|m| &m.arness_local),
        arness_global: vec_mean(&|m| &m.arness_global),
        rollout_tokens_per_second: parts.iter().map(|(_, m)| m.rollout_tokens_per_second).sum(),
        sandbox_tests_per_second: parts.iter().map(|(_, m)| m.sandbox_tests_per_second).sum(),
        sandbox_timeouts: parts.iter().map(|(_, m)| m.sandbox_timeouts).sum(),
        sandbox_failures: parts.iter().map(|(_, m)| m.sandbox_failures).sum(),
        rollout_seconds: parts
            .iter()
            .map(|(_, m)| m.rollout_seconds)
            .fold(0.0, f64::max),
        reward_seconds: parts
            .iter()
            .map(|(_, m)| m.reward_seconds)
            .fold(0.0, f64::max),
        ..first
    }
}
