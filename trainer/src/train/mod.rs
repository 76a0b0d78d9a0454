//! The training loop: one GRPO round after another (SPEC sections 4–7, 9).
//!
//! [`Trainer::step`] reads as the algorithm: sample a round when none is buffered (prompts
//! → G completions each → rewards in the sandbox → advantages → old and reference
//! estimates; [`round`]) → one clipped-GRPO update of the round's next iteration
//! ([`update`]) → advance → record ([`metrics`]). The rest is machinery: the data order
//! ([`order`]), run checkpoints ([`checkpoint`]) and data parallelism ([`parallel`]),
//! which is a no-op for one process so the step reads the same for 1 or N ranks.
//!
//! Every random draw is keyed by (seed, step, …) — data order, rollouts, masks — so the
//! run holds no generator state: a checkpoint (weights, AdamW moments, step, the rollout
//! buffer when saved mid-round) is all that resuming needs, and a resumed run repeats the
//! uninterrupted one.

pub mod checkpoint;
pub mod metrics;
pub mod order;
pub mod parallel;
pub mod round;
pub mod stability;
pub mod update;

use std::path::{Path, PathBuf};
use std::time::Instant;

use couplet_model::{random, LoadOptions, LoadedModel};
use couplet_rollout::RolloutConfig;
use couplet_sandbox::SandboxPool;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind};

use crate::config::{invalid, ConfigError, TrainConfig};
use crate::eval::{evaluate, load_benchmark, EvalProblem, EvalReport, EvalSettings};
use crate::optim::AdamW;
use crate::reference::{Reference, ReferenceModel};
use checkpoint::RunCheckpoint;
use metrics::StepMetrics;
use order::TrainingData;
use parallel::DataParallel;
use round::RoundBuffer;
use stability::{PassFractions, ValidationChange, Warning};
use update::UpdateReport;

/// Mask seed of every iteration when `algorithm.random_masking` is off (the reference's
/// fixed seed).
pub const FIXED_MASK_SEED: u64 = 42;

/// Why a run could not start or continue. Each variant keeps its cause as a `source`, so
/// `{:#}` (and anyhow) print the whole chain.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A setting that does not fit this model, data or world size.
    #[error("{0}")]
    Setup(String),
    /// The configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A model folder or the tokenizer.
    #[error("{context}")]
    Model {
        /// What was being done.
        context: &'static str,
        /// The model crate's error.
        #[source]
        source: couplet_model::ModelError,
    },
    /// A data file.
    #[error("{context}")]
    Data {
        /// Which file.
        context: &'static str,
        /// The row reader's error.
        #[source]
        source: couplet_reward::DataError,
    },
    /// The sandbox could not be set up.
    #[error("sandbox")]
    Sandbox(#[source] couplet_sandbox::SandboxError),
    /// A local resource (threads, files) could not be set up.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// Decoding failed.
    #[error("rollout")]
    Rollout(#[source] couplet_rollout::RolloutError),
    /// Rewards that cannot be turned into advantages.
    #[error("advantages")]
    Advantages(#[source] crate::advantages::AdvantageError),
    /// A collective or the process group.
    #[error("{context}")]
    Distributed {
        /// What was being done.
        context: &'static str,
        /// The c10d error.
        #[source]
        source: couplet_dist::DistError,
    },
    /// A tensor operation.
    #[error("{context}")]
    Torch {
        /// What was being done.
        context: &'static str,
        /// libtorch's error.
        #[source]
        source: tch::TchError,
    },
    /// Encoding or decoding what ranks exchange.
    #[error("round statistics")]
    Json(#[source] serde_json::Error),
    /// Writing or reading a run checkpoint.
    #[error("{path}")]
    Checkpoint {
        /// The checkpoint folder.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A helper thread panicked (a bug: please report it).
    #[error("{0} panicked")]
    Panicked(&'static str),
    /// Periodic evaluation.
    #[error("evaluation: {0}")]
    Eval(String),
    /// A loss that lacks a score it needs (a bug: please report it).
    #[error("loss")]
    Loss(#[from] crate::algorithm::ObjectiveError),
    /// Too many non-finite steps in a row.
    #[error("stopped at step {step}: the loss or gradient norm was NaN/inf in {count} optimizer steps in a row (those steps were skipped, no weights were updated by them). The last checkpoint before them is intact; lower optimizer.lr, raise optimizer.eps or check the model, or raise schedule.max_nonfinite_in_a_row")]
    NonFinite {
        /// The step that would have been taken.
        step: u64,
        /// Non-finite steps in a row.
        count: u32,
    },
}

/// One sampled completion with its rewards, for `completions.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionSample {
    /// The optimizer step whose round sampled it.
    pub step: u64,
    /// The question.
    pub prompt: String,
    /// The decoded completion.
    pub completion: String,
    /// Each reward function's value.
    pub rewards: Vec<(String, f64)>,
    /// The weighted total.
    pub total: f64,
}

/// Whether [`Trainer::train_round`] goes on after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// The next iteration of the round.
    Continue,
    /// Return now (the run's last step, or a stop request).
    Stop,
}

/// What a checkpoint records besides weights and optimizer moments.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimizer steps taken.
    pub step: u64,
    /// Iteration of the current round to run next (0 = start a new round).
    pub next_iteration: usize,
    /// Non-finite steps in a row so far.
    pub nonfinite_in_a_row: u32,
    /// Non-finite steps skipped over the run.
    #[serde(default)]
    pub skipped_nonfinite: u64,
    /// Every step's metrics.
    pub history: Vec<StepMetrics>,
    /// Per-problem pass fractions of the first validation evaluation (the baseline of the
    /// validation-drop warning).
    #[serde(default)]
    pub start_eval: Option<PassFractions>,
    /// Stability warnings already raised (each once per run).
    #[serde(default)]
    pub warned: Vec<Warning>,
}

/// A training run in progress: policy, reference, optimizer, data, sandbox, ranks.
pub struct Trainer {
    /// The run's configuration.
    pub config: TrainConfig,
    /// The policy being trained, with its tokenizer.
    pub policy: LoadedModel,
    reference: Option<Reference>,
    optimizer: AdamW,
    pool: SandboxPool,
    data: TrainingData,
    /// `data.validation` problems when `eval.every > 0`.
    validation: Vec<EvalProblem>,
    /// Step, iteration and history.
    pub state: TrainerState,
    buffer: Option<RoundBuffer>,
    total_steps: u64,
    device: Device,
    /// Completions of the last sampled round (for `completions.jsonl`; this rank's).
    pub last_samples: Vec<CompletionSample>,
    parallel: DataParallel,
    rollout: RolloutConfig,
}

impl Trainer {
    /// Loads the policy, data and sandbox for `config` (files under `repo_root`); resumes
    /// from the run checkpoint folder `resume` when given.
    pub fn new(
        config: TrainConfig,
        repo_root: &Path,
        resume: Option<&Path>,
    ) -> Result<Self, TrainError> {
        config.validate()?;
        let rollout = RolloutConfig::new(
            config.rollout.decoder_config()?,
            config.rollout.num_generations,
            config.rollout.generation_batch_size,
            Some(config.data.max_prompt_length),
        );
        // Devices are checked before joining the process group: a rank whose machine lacks
        // them stops with the config error at once, instead of leaving its peers in the
        // rendezvous to fail on a closed connection.
        let configured = resolve("model.device", config.model.device)?;
        if let Some(d) = config.reference.device {
            resolve("reference.device", d)?;
        }
        let mut parallel = DataParallel::join(&config)?;
        check_world_size(&config, parallel.world())?;
        let device = parallel.device(configured);
        let resume = resume.map(|dir| RunCheckpoint {
            dir: dir.to_path_buf(),
        });
        // Under LoRA the base is never saved (it is frozen): it comes from model.path.
        let source = match &resume {
            Some(checkpoint) if !config.lora.enabled() => checkpoint.policy(),
            _ => config.model.path.clone(),
        };
        let mut policy = load_in(
            &source,
            device,
            config.model.dtype.kind(),
            "loading the policy",
        )?;
        if config.lora.enabled() {
            attach_adapters(&mut policy, &config, resume.as_ref())?;
        }
        parallel.sync_weights(&policy.model)?;
        let data = TrainingData::load(&config)?;
        let validation = load_validation(&config, repo_root)?;
        let backend = config
            .sandbox
            .backend_spec(repo_root)
            .open()
            .map_err(TrainError::Sandbox)?;
        let pool =
            SandboxPool::new(backend, config.sandbox.workers).map_err(|source| TrainError::Io {
                context: "starting the sandbox pool",
                source,
            })?;
        let mut reference = build_reference(&config, &policy, device, resume.is_some())?;
        let params = policy.model.trainable_parameters();
        let mut optimizer =
            parallel.optimizer(params, config.optimizer, config.distributed.zero_stage());
        let restored = match &resume {
            Some(checkpoint) => Some(checkpoint.restore(
                &mut optimizer,
                reference.as_mut().and_then(Reference::copy_mut),
                (parallel.rank(), parallel.world()),
                config.schedule.num_iterations,
                device,
            )?),
            None => None,
        };
        let total_steps = total_steps(&config, data.rows.len());
        let (state, buffer) = restored.map_or_else(Default::default, |r| (r.state, r.buffer));
        Ok(Trainer {
            config,
            policy,
            reference,
            optimizer,
            pool,
            data,
            validation,
            state,
            buffer,
            total_steps,
            device,
            last_samples: Vec::new(),
            parallel,
            rollout,
        })
    }

    /// Optimizer steps of the whole run.
    pub fn total_steps(&self) -> u64 {
        self.total_steps
    }

    /// This process's rank (0 without a group): rank 0 alone logs, evaluates and writes
    /// checkpoints.
    pub fn rank(&self) -> usize {
        self.parallel.rank()
    }

    /// Whether any rank was asked to stop (SIGINT/SIGTERM reach ranks at different
    /// times; every rank must make the same decision or the collectives would diverge).
    pub fn agree_stop(&self, local: bool) -> Result<bool, TrainError> {
        self.parallel.any(local)
    }

    /// Trains the rest of the current round: samples it (unless a checkpoint resumed it
    /// mid-round), then runs the μ iterations of the update on the same samples and
    /// old/reference scores, one optimizer step each. `after_step` sees every step (logging,
    /// evaluation, checkpoints) and may stop early; the round's buffer then stays, so a
    /// checkpoint taken at that step resumes inside the round.
    pub fn train_round<E: From<TrainError>>(
        &mut self,
        mut after_step: impl FnMut(&mut Trainer, &StepMetrics) -> Result<Flow, E>,
    ) -> Result<Flow, E> {
        let mu = self.config.schedule.num_iterations;
        let round = self.state.step / mu as u64;
        if self.buffer.is_none() {
            self.buffer = Some(self.sample_round(round)?);
            self.state.next_iteration = 0;
        }
        for iteration in self.state.next_iteration..mu {
            let started = Instant::now();
            let update = self.update(round, iteration)?;
            let round_metrics = self.advance(iteration + 1 == mu);
            let metrics = self.record(round_metrics, update, started);
            if let Flow::Stop = after_step(self, &metrics)? {
                return Ok(Flow::Stop);
            }
        }
        Ok(Flow::Continue)
    }

    /// One optimizer step: the next iteration of the current round (sampling a new round
    /// first when none is buffered). For tests and tools that drive steps one by one.
    pub fn step(&mut self) -> Result<StepMetrics, TrainError> {
        let mut taken = None;
        self.train_round(|_, m| {
            taken = Some(m.clone());
            Ok::<_, TrainError>(Flow::Stop)
        })?;
        taken.ok_or_else(|| {
            TrainError::Config(invalid(
                "schedule.num_iterations",
                format!(
                    "the checkpoint resumes at iteration {} of a round of {} iterations",
                    self.state.next_iteration, self.config.schedule.num_iterations
                ),
            ))
        })
    }

    /// Counts the step, syncs the reference when due, and moves to the round's next
    /// iteration (dropping the buffer after the `last`); returns the round's statistics.
    fn advance(&mut self, last: bool) -> StepMetrics {
        self.state.step += 1;
        if let Some(reference) = self.reference.as_mut().and_then(Reference::copy_mut) {
            reference.maybe_sync(&self.policy.model, self.state.step);
        }
        let metrics = self
            .buffer
            .as_ref()
            .map(|b| b.metrics.clone())
            .unwrap_or_default();
        self.state.next_iteration += 1;
        if last {
            self.buffer = None;
            self.state.next_iteration = 0;
        }
        metrics
    }

    /// The step's metrics: the round's statistics plus this update's, kept in the history.
    fn record(
        &mut self,
        round: StepMetrics,
        update: UpdateReport,
        started: Instant,
    ) -> StepMetrics {
        let metrics = StepMetrics {
            step: self.state.step,
            loss: update.loss,
            kl: update.kl,
            kl_k2: update.kl_k2,
            clip_ratio: update.clip,
            grad_norm: update.grad_norm,
            lr: update.lr,
            skipped_nonfinite: self.state.skipped_nonfinite,
            update_seconds: started.elapsed().as_secs_f64(),
            ..round
        };
        self.state.history.push(metrics);
        let max_norm = self.config.optimizer.max_grad_norm;
        let share = stability::clipped_share(&self.state.history, max_norm);
        let growth = stability::grad_norm_growth(&self.state.history);
        let warning = growth.and_then(|w| self.warn_once(Warning::GradNormGrowth, w));
        let last = self.state.history.last_mut().expect("just pushed");
        last.grad_clipped_share = share;
        last.warnings
            .extend(warning.map(|w| (Warning::GradNormGrowth, w)));
        last.clone()
    }

    /// `message` the first time `kind` is raised in this run, else `None`.
    fn warn_once(&mut self, kind: Warning, message: String) -> Option<String> {
        if self.state.warned.contains(&kind) {
            return None;
        }
        self.state.warned.push(kind);
        Some(message)
    }

    /// Compares a validation evaluation with the run's first one (which it records when it
    /// is the first): the paired change, and the drop warning the first time a drop
    /// exceeds its noise.
    pub fn validation_change(
        &mut self,
        report: &EvalReport,
    ) -> Option<(ValidationChange, Option<String>)> {
        let now = PassFractions::of(report);
        let Some(start) = &self.state.start_eval else {
            self.state.start_eval = Some(now);
            return None;
        };
        let change = ValidationChange::between(start, &now)?;
        let warning = change
            .warning(self.state.step)
            .and_then(|w| self.warn_once(Warning::ValidationDrop, w));
        Some((change, warning))
    }

    /// Global index of this rank's first sample in round `round`: samples are numbered
    /// across ranks, so masks and draws do not depend on the world size.
    fn first_local_sample(&self, round: u64) -> u64 {
        let per_step = self.config.completions_per_step();
        round * per_step as u64 + (self.parallel.rank() * per_step / self.parallel.world()) as u64
    }

    /// The mask seed of iteration `iteration` of round `round`.
    fn mask_seed(&self, round: u64, iteration: usize) -> u64 {
        if self.config.algorithm.method().random_masking() {
            let stream = random::stream::MASK_ITERATION + iteration as u64;
            random::bits(self.config.seed, stream, round)
        } else {
            FIXED_MASK_SEED
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
        let decoder = cfg
            .rollout
            .decoder_settings(cfg.eval.temperature)
            .build()
            .map_err(TrainError::Rollout)?;
        let settings = EvalSettings {
            samples: cfg.eval.samples,
            ks: vec![1],
            rollout: RolloutConfig::new(
                decoder,
                cfg.eval.samples,
                cfg.rollout.generation_batch_size,
                Some(cfg.data.max_prompt_length),
            ),
            seed: random::bits(cfg.seed, random::stream::VALIDATION, 0),
            system_prompt: cfg.data.system_prompt.clone(),
            limits: cfg.sandbox.limits(),
        };
        evaluate(
            &self.policy,
            &self.validation,
            &settings,
            &self.pool,
            |_, _| {},
        )
        .map(Some)
        .map_err(TrainError::Eval)
    }
}

/// Each rank processes whole prompt groups, and the micro-batch geometry covers a step.
fn check_world_size(config: &TrainConfig, world: usize) -> Result<(), TrainError> {
    let per_rank_step = config.schedule.per_rank_step();
    let per_step = config.completions_per_step();
    if per_rank_step * world != per_step {
        let per_rank = per_step / world;
        let micro = config.schedule.micro_batch_size.max(1);
        // Keep the micro-batch when it divides the rank's share, else shrink it to the share.
        let fix = if per_rank > 0 && per_rank % micro == 0 {
            format!(
                "set schedule.gradient_accumulation_steps = {}",
                per_rank / micro
            )
        } else {
            format!(
                "set schedule.micro_batch_size = {per_rank} and gradient_accumulation_steps = 1"
            )
        };
        return Err(TrainError::Setup(format!(
            "schedule.micro_batch_size × gradient_accumulation_steps = {per_rank_step} per rank × {world} rank(s) must equal the completions per step ({per_step}); {fix}"
        )));
    }
    if world > 1 && config.rollout.prompts_per_step % world != 0 {
        return Err(TrainError::Setup(format!(
            "rollout.prompts_per_step = {} must be a multiple of the world size {world} (each rank rolls out whole prompt groups)",
            config.rollout.prompts_per_step
        )));
    }
    Ok(())
}

/// A model folder in `kind` on `device`.
fn load_in(
    dir: &Path,
    device: Device,
    kind: Kind,
    context: &'static str,
) -> Result<LoadedModel, TrainError> {
    let options = LoadOptions {
        device,
        kind: Some(kind),
    };
    LoadedModel::load(dir, options).map_err(|source| TrainError::Model { context, source })
}

/// LoRA adapters on the frozen base: the checkpoint's when resuming (their shape must be
/// the config's), else fresh ones (`B = 0`) drawn from the run's seed.
fn attach_adapters(
    policy: &mut LoadedModel,
    config: &TrainConfig,
    resume: Option<&RunCheckpoint>,
) -> Result<(), TrainError> {
    let Some(checkpoint) = resume else {
        let seed = random::bits(config.seed, random::stream::LORA_INIT, 0);
        random::with_torch_seed((seed >> 1) as i64, || {
            policy.model.attach_lora(&config.lora)
        });
        return Ok(());
    };
    let dir = checkpoint.adapter();
    let saved = couplet_model::load_adapter(&mut policy.model, &dir).map_err(|source| {
        TrainError::Model {
            context: "loading the checkpoint's LoRA adapters",
            source,
        }
    })?;
    let same = saved.rank == config.lora.rank
        && saved.alpha == config.lora.alpha
        && saved.target_modules == config.lora.target_modules;
    if !same {
        return Err(TrainError::Setup(format!(
            "{}: adapters of rank {} alpha {} on {:?}, but [lora] asks for rank {} alpha {} on {:?}: resume with the run's own [lora]",
            dir.display(),
            saved.rank,
            saved.alpha,
            saved.target_modules,
            config.lora.rank,
            config.lora.alpha,
            config.lora.target_modules
        )));
    }
    Ok(())
}

/// The validation problems when periodic evaluation is on (`eval.max_problems` of them).
fn load_validation(config: &TrainConfig, repo_root: &Path) -> Result<Vec<EvalProblem>, TrainError> {
    let mut validation = match (&config.data.validation, config.eval.every) {
        (Some(path), every) if every > 0 => load_benchmark(&path.to_string_lossy(), repo_root)
            .map_err(|e| TrainError::Setup(format!("data.validation: {e}")))?,
        _ => Vec::new(),
    };
    if let Some(max) = config.eval.max_problems {
        validation.truncate(max);
    }
    Ok(validation)
}

/// The reference model when β > 0 or `logging.kl_to_start`: a frozen copy of the *base*
/// model, also when resuming (a synced one is then restored from the checkpoint), in
/// `reference.dtype` on `reference.device` (default: the policy's
/// dtype and device).
fn build_reference(
    config: &TrainConfig,
    policy: &LoadedModel,
    device: Device,
    resuming: bool,
) -> Result<Option<Reference>, TrainError> {
    if !config.holds_reference() {
        return Ok(None);
    }
    if config.lora.enabled() {
        return Ok(Some(Reference::BaseWithoutAdapters));
    }
    let settings = &config.reference;
    let kind = settings.dtype.unwrap_or(config.model.dtype).kind();
    let device = match settings.device {
        Some(d) => resolve("reference.device", d)?,
        None => device,
    };
    let base = if resuming {
        let options = LoadOptions {
            device,
            kind: Some(kind),
        };
        let base = couplet_model::load_model(&config.model.path, options).map_err(|source| {
            TrainError::Model {
                context: "loading the reference (base) model",
                source,
            }
        })?;
        Some(base)
    } else {
        None
    };
    let from = base.as_ref().unwrap_or(&policy.model);
    Ok(Some(Reference::Copy(Box::new(
        ReferenceModel::from_policy(
            from,
            device,
            kind,
            settings.sync_every(),
            settings.mixup_alpha,
        ),
    ))))
}

/// Optimizer steps of the run: `schedule.max_steps`, else `epochs` passes over `rows` rows.
fn total_steps(config: &TrainConfig, rows: usize) -> u64 {
    let per_epoch = (rows / config.rollout.prompts_per_step).max(1) as u64
        * config.schedule.num_iterations as u64;
    config
        .schedule
        .max_steps
        .unwrap_or(per_epoch * config.schedule.epochs as u64)
}

/// The device a config key names, or a config error naming the key and what exists.
fn resolve(key: &str, spec: couplet_model::DeviceSpec) -> Result<Device, TrainError> {
    spec.resolve()
        .map_err(|e| crate::config::invalid(key, e.to_string()).into())
}
