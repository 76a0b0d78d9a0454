//! The sections of a training config: one struct per `[section]`, each field with its
//! default and a doc comment, typed (enums, not strings: an unknown value fails at load with
//! its key and the allowed values), and each section's rules in its own `validate`.

use std::path::{Path, PathBuf};

use couplet_model::{DeviceSpec, Precision};
use couplet_reward::{BadRows, RewardKind};
use couplet_rollout::{
    CacheMode, CachePolicy, DecoderConfig, DecoderKind, DecoderSettings, DreamAlg, FastDecoding,
    Remasking, RolloutError, SamplingParams,
};
use couplet_sandbox::{BackendKind, BackendSpec, Isolation, Limits};
use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError};
use crate::optim::{Schedule, ScheduleKind};

/// `[model]`: the starting policy and where it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSection {
    /// Hugging Face model folder of the starting policy.
    pub path: PathBuf,
    /// cpu, cuda, cuda:N or auto.
    pub device: DeviceSpec,
    /// f32, or bf16 (bf16 weights and activations, f32 master weights and moments in the
    /// optimizer).
    pub dtype: Precision,
    /// Recompute layer activations in backward.
    pub gradient_checkpointing: bool,
    /// Rows of vocabulary logits computed at once when the policy is scored with gradient
    /// (the memory-lean pass).
    pub logits_chunk_rows: i64,
}

impl Default for ModelSection {
    fn default() -> Self {
        ModelSection {
            path: PathBuf::from("data/demo-model"),
            device: DeviceSpec::Cpu,
            dtype: Precision::F32,
            gradient_checkpointing: false,
            logits_chunk_rows: 1024,
        }
    }
}

/// `[data]`: the training (and validation) rows and how prompts are built from them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataSection {
    /// AceCoder-format training rows (JSON lines or a JSON array).
    pub train: PathBuf,
    /// Validation rows for periodic evaluation (empty: none).
    pub validation: Option<PathBuf>,
    /// Column holding the question.
    pub prompt_column: String,
    /// System prompt of the chat template.
    pub system_prompt: String,
    /// Keep only the last N prompt tokens.
    pub max_prompt_length: usize,
    /// skip or fatal.
    pub bad_rows: BadRows,
    /// Column whose value groups the training rows (e.g. `template`, `source`): each epoch
    /// then draws one prompt per group in turn, so every window of steps sees the groups in
    /// equal shares. Unset: a plain shuffle.
    pub stratify_by: Option<String>,
}

impl Default for DataSection {
    fn default() -> Self {
        DataSection {
            train: PathBuf::from("data/tasks/train.jsonl"),
            validation: Some(PathBuf::from("data/tasks/val.jsonl")),
            prompt_column: "question".into(),
            system_prompt: "You are a helpful assistant.".into(),
            max_prompt_length: 200,
            bad_rows: BadRows::Skip,
            stratify_by: None,
        }
    }
}

impl DataSection {
    /// `stratify_by`, when set, names a column.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self
            .stratify_by
            .as_deref()
            .is_some_and(|c| c.trim().is_empty())
        {
            return Err(invalid("data.stratify_by", "names no column"));
        }
        Ok(())
    }

    /// How the row reader treats the training file.
    pub fn load_options(&self) -> couplet_reward::LoadOptions {
        couplet_reward::LoadOptions {
            prompt_column: self.prompt_column.clone(),
            bad_rows: self.bad_rows,
            require_inferences: false,
        }
    }
}

/// `[rollout]`: how completions are sampled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RolloutSection {
    /// dream (Dream decoder) or block (LLaDA/d1 block decoder).
    pub decoder: DecoderKind,
    /// G: completions per prompt.
    pub num_generations: usize,
    /// Prompts per optimizer step (over all ranks).
    pub prompts_per_step: usize,
    /// Sequences decoded together.
    pub generation_batch_size: usize,
    /// Completion canvas length in tokens.
    pub max_new_tokens: i64,
    /// Diffusion steps.
    pub steps: i64,
    /// Sampling temperature τ (0: greedy).
    pub temperature: f64,
    /// Nucleus threshold in (0, 1] (unset: off).
    pub top_p: Option<f64>,
    /// Keep the k largest logits (unset: off).
    pub top_k: Option<i64>,
    /// Dream decoder: origin, maskgit_plus, topk_margin or entropy.
    pub alg: DreamAlg,
    /// Dream decoder: temperature of the position choice (0: the most confident).
    pub alg_temp: f64,
    /// Block decoder: block size (must divide max_new_tokens).
    pub block_length: Option<i64>,
    /// Block decoder: low_confidence or random.
    pub remasking: Remasking,
    /// Key/value reuse between decoding steps: none (exact), prefix, dual (block decoder)
    /// or delayed. The estimators stay exact; the rollouts come from the cached sampler.
    pub cache: CacheMode,
    /// With a cache: a full forward every this many forwards (unset: only at the start
    /// and at each block boundary).
    pub refresh_every: Option<i64>,
    /// Reveal every masked position whose proposal probability exceeds this (at least one
    /// per row); `steps` becomes an upper bound. Unset: the decoder's schedule.
    pub threshold: Option<f64>,
}

impl Default for RolloutSection {
    fn default() -> Self {
        RolloutSection {
            decoder: DecoderKind::Dream,
            num_generations: 10,
            prompts_per_step: 8,
            generation_batch_size: 10,
            max_new_tokens: 256,
            steps: 256,
            temperature: 1.0,
            top_p: Some(0.95),
            top_k: None,
            alg: DreamAlg::Entropy,
            alg_temp: 0.0,
            block_length: None,
            remasking: Remasking::LowConfidence,
            cache: CacheMode::None,
            refresh_every: None,
            threshold: None,
        }
    }
}

impl RolloutSection {
    /// The decoder knobs, at sampling temperature `temperature`.
    pub fn decoder_settings(&self, temperature: f64) -> DecoderSettings {
        DecoderSettings {
            kind: self.decoder,
            steps: self.steps,
            max_new_tokens: self.max_new_tokens,
            sampling: SamplingParams {
                temperature,
                top_p: self.top_p,
                top_k: self.top_k,
            },
            alg: self.alg,
            alg_temp: self.alg_temp,
            block_length: self.block_length,
            remasking: self.remasking,
            fast: FastDecoding {
                cache: CachePolicy {
                    mode: self.cache,
                    refresh_every: self.refresh_every,
                },
                threshold: self.threshold,
                audit: false,
            },
        }
    }

    /// The rollout decoder; an invalid setting names its `rollout.*` key.
    pub fn decoder_config(&self) -> Result<DecoderConfig, ConfigError> {
        self.decoder_settings(self.temperature)
            .build()
            .map_err(|e| match e {
                RolloutError::Invalid { option, message } => {
                    invalid(&format!("rollout.{option}"), message)
                }
                other => invalid("rollout", other.to_string()),
            })
    }

    /// Group and batch sizes, and the decoder's own rules.
    pub fn validate(&self, completions_per_step: usize) -> Result<(), ConfigError> {
        if self.num_generations == 0 {
            return Err(invalid("rollout.num_generations", "must be at least 1"));
        }
        if self.prompts_per_step == 0 {
            return Err(invalid("rollout.prompts_per_step", "must be at least 1"));
        }
        let per_step = completions_per_step;
        if self.generation_batch_size == 0 || per_step % self.generation_batch_size != 0 {
            return Err(invalid(
                "rollout.generation_batch_size",
                format!(
                    "{} must divide num_generations × prompts_per_step = {per_step}",
                    self.generation_batch_size
                ),
            ));
        }
        self.decoder_config().map(|_| ())
    }
}

/// One weighted reward function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewardFunction {
    /// code, binary_code, code_format or soft_overlong.
    pub name: RewardKind,
    /// Its weight in the total reward.
    pub weight: f64,
}

/// `[reward]`: which reward functions, weighted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RewardSection {
    /// The weighted functions summed into a completion's reward.
    pub functions: Vec<RewardFunction>,
    /// soft_overlong: penalty buffer in tokens before max_new_tokens.
    pub overlong_buffer: usize,
}

impl Default for RewardSection {
    fn default() -> Self {
        let function = |name, weight| RewardFunction { name, weight };
        RewardSection {
            functions: vec![
                function(RewardKind::Code, 2.0),
                function(RewardKind::CodeFormat, 0.5),
            ],
            overlong_buffer: 64,
        }
    }
}

impl RewardSection {
    /// At least one function, finite weights, a buffer that fits the canvas.
    pub fn validate(&self, max_new_tokens: i64) -> Result<(), ConfigError> {
        if self.functions.is_empty() {
            return Err(invalid(
                "reward.functions",
                "at least one reward function is needed",
            ));
        }
        for (i, f) in self.functions.iter().enumerate() {
            if !f.weight.is_finite() {
                return Err(invalid(
                    &format!("reward.functions[{i}].weight"),
                    "must be finite",
                ));
            }
        }
        if self.overlong_buffer as i64 > max_new_tokens {
            return Err(invalid(
                "reward.overlong_buffer",
                "cannot exceed rollout.max_new_tokens",
            ));
        }
        Ok(())
    }

    /// The reward crate's view, for completions of at most `max_new_tokens` tokens.
    pub fn reward_config(&self, max_new_tokens: i64) -> couplet_reward::RewardConfig {
        couplet_reward::RewardConfig {
            functions: self.functions.iter().map(|f| (f.name, f.weight)).collect(),
            max_completion_tokens: max_new_tokens as usize,
            overlong_buffer: self.overlong_buffer,
        }
    }
}

/// `[sandbox]`: where completions' tests run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxSection {
    /// wasm or process.
    pub backend: BackendKind,
    /// Worker threads (0 = all cores).
    pub workers: usize,
    /// Seconds per test.
    pub timeout_seconds: f64,
    /// Memory cap per job in MiB.
    pub memory_mb: u64,
    /// Interpreter of the process backend (empty: /usr/bin/python3 or python3).
    pub python: Option<PathBuf>,
    /// The process backend's OS boundary: `strict` (every layer, else refuse to start) or
    /// `best_effort` (what the kernel allows, said at start).
    pub process_isolation: Isolation,
}

impl Default for SandboxSection {
    fn default() -> Self {
        SandboxSection {
            backend: BackendKind::Wasm,
            workers: 0,
            timeout_seconds: 5.0,
            memory_mb: 512,
            python: None,
            process_isolation: Isolation::Strict,
        }
    }
}

impl SandboxSection {
    /// A positive timeout and enough memory for CPython.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.timeout_seconds.is_nan() || self.timeout_seconds <= 0.0 {
            return Err(invalid("sandbox.timeout_seconds", "must be positive"));
        }
        if self.memory_mb < 32 {
            return Err(invalid("sandbox.memory_mb", "must be at least 32"));
        }
        Ok(())
    }

    /// The backend to open, with its files under the project folder `root`.
    pub fn backend_spec(&self, root: &Path) -> BackendSpec {
        BackendSpec {
            python: self.python.clone(),
            process_isolation: self.process_isolation,
            ..BackendSpec::new(self.backend, root)
        }
    }

    /// Per-test time and per-job memory limits.
    pub fn limits(&self) -> Limits {
        Limits {
            per_test: std::time::Duration::from_secs_f64(self.timeout_seconds),
            memory_bytes: self.memory_mb << 20,
            ..Limits::default()
        }
    }
}

/// `[reference]`: the frozen reference policy of the KL term (held when the algorithm's
/// β > 0, or for `logging.kl_to_start`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReferenceSection {
    /// Periodically move the reference towards the policy (TRL's sync_ref_model).
    pub sync: bool,
    /// Sync the reference every N optimizer steps.
    pub sync_steps: u64,
    /// α of the sync: reference ← α · policy + (1 − α) · reference.
    pub mixup_alpha: f64,
    /// Element type of the reference copy (default: `model.dtype`); bf16 halves its memory.
    pub dtype: Option<Precision>,
    /// Where the reference copy lives (default: the policy's device); `cpu` takes it off
    /// the GPU entirely, at the cost of scoring each round's completions on the CPU.
    pub device: Option<DeviceSpec>,
}

impl Default for ReferenceSection {
    /// The DiffuCoder recipe: sync every 64 steps with α = 0.6.
    fn default() -> Self {
        ReferenceSection {
            sync: true,
            sync_steps: 64,
            mixup_alpha: 0.6,
            dtype: None,
            device: None,
        }
    }
}

impl ReferenceSection {
    /// The reference's sync period, when syncing is on.
    pub fn sync_every(&self) -> Option<u64> {
        self.sync.then_some(self.sync_steps)
    }

    /// Ranges of the sync.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(0.0..=1.0).contains(&self.mixup_alpha) {
            return Err(invalid("reference.mixup_alpha", "must be in [0, 1]"));
        }
        if self.sync && self.sync_steps == 0 {
            return Err(invalid(
                "reference.sync_steps",
                "must be at least 1 when reference.sync is on",
            ));
        }
        Ok(())
    }
}

/// `[optimizer]`: the AdamW hyperparameters as they are.
pub type OptimizerSection = crate::optim::AdamWConfig;

/// AdamW's rules, each naming its `optimizer.*` key.
pub fn validate_optimizer(opt: &OptimizerSection) -> Result<(), ConfigError> {
    if opt.lr < 0.0 || !opt.lr.is_finite() {
        return Err(invalid(
            "optimizer.lr",
            format!("must be ≥ 0, got {}", opt.lr),
        ));
    }
    for (key, beta) in [
        ("optimizer.beta1", opt.beta1),
        ("optimizer.beta2", opt.beta2),
    ] {
        if !(0.0..1.0).contains(&beta) {
            return Err(invalid(key, "must be in [0, 1)"));
        }
    }
    if opt.eps <= 0.0 {
        return Err(invalid("optimizer.eps", "must be positive"));
    }
    if opt.weight_decay < 0.0 {
        return Err(invalid("optimizer.weight_decay", "must be ≥ 0"));
    }
    if opt.max_grad_norm < 0.0 {
        return Err(invalid(
            "optimizer.max_grad_norm",
            "must be ≥ 0 (0 disables clipping)",
        ));
    }
    Ok(())
}

/// `[schedule]`: learning-rate schedule, run length and batch geometry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleSection {
    /// constant, linear, cosine or cosine_with_min_lr.
    pub kind: ScheduleKind,
    /// μ: optimizer steps (policy iterations) per rollout batch.
    pub num_iterations: usize,
    /// cosine_with_min_lr: floor as a fraction of lr.
    pub min_lr_rate: f64,
    /// Warmup steps as a fraction of the run.
    pub warmup_ratio: f64,
    /// Overrides warmup_ratio when set.
    pub warmup_steps: Option<u64>,
    /// Passes over the training rows.
    pub epochs: usize,
    /// Stop after this many optimizer steps (default: epochs over the data).
    pub max_steps: Option<u64>,
    /// Completions per forward/backward micro-batch.
    pub micro_batch_size: usize,
    /// Micro-batches per optimizer step.
    pub gradient_accumulation_steps: usize,
    /// A step whose loss or gradient norm is NaN/inf is skipped (no update); this many in
    /// a row stop the run with an error instead of silently burning compute.
    pub max_nonfinite_in_a_row: u32,
}

impl Default for ScheduleSection {
    fn default() -> Self {
        ScheduleSection {
            kind: ScheduleKind::CosineWithMinLr,
            num_iterations: 2,
            min_lr_rate: 0.1,
            warmup_ratio: 1e-4,
            warmup_steps: None,
            epochs: 1,
            max_steps: None,
            micro_batch_size: 40,
            gradient_accumulation_steps: 2,
            max_nonfinite_in_a_row: 3,
        }
    }
}

impl ScheduleSection {
    /// The learning-rate schedule.
    pub fn schedule(&self) -> Schedule {
        self.kind.with_floor(self.min_lr_rate)
    }

    /// Completions one rank processes per optimizer step.
    pub fn per_rank_step(&self) -> usize {
        self.micro_batch_size * self.gradient_accumulation_steps
    }

    /// Ranges, and that the batch geometry covers a step's completions.
    pub fn validate(&self, completions_per_step: usize) -> Result<(), ConfigError> {
        if self.num_iterations < 1 {
            return Err(invalid("schedule.num_iterations", "μ must be at least 1"));
        }
        if !(0.0..=1.0).contains(&self.min_lr_rate) {
            return Err(invalid("schedule.min_lr_rate", "must be in [0, 1]"));
        }
        if !(0.0..=1.0).contains(&self.warmup_ratio) {
            return Err(invalid("schedule.warmup_ratio", "must be in [0, 1]"));
        }
        if self.max_nonfinite_in_a_row == 0 {
            return Err(invalid(
                "schedule.max_nonfinite_in_a_row",
                "must be at least 1",
            ));
        }
        if self.epochs == 0 && self.max_steps.is_none() {
            return Err(invalid(
                "schedule.epochs",
                "must be at least 1 (or set max_steps)",
            ));
        }
        if self.micro_batch_size == 0 || self.gradient_accumulation_steps == 0 {
            return Err(invalid(
                "schedule.micro_batch_size",
                "micro_batch_size and gradient_accumulation_steps must be at least 1",
            ));
        }
        let (per_rank_step, per_step) = (self.per_rank_step(), completions_per_step);
        if per_step % per_rank_step != 0 {
            return Err(invalid(
                "schedule.gradient_accumulation_steps",
                format!(
                    "micro_batch_size × gradient_accumulation_steps = {per_rank_step} (per rank) × the number of ranks must equal the completions per step (num_generations × prompts_per_step = {per_step})"
                ),
            ));
        }
        Ok(())
    }
}

/// `[checkpointing]`: where and how often run checkpoints are written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointSection {
    /// Where checkpoints, logs and the resolved config go.
    pub run_dir: PathBuf,
    /// Save every N optimizer steps (and at the end).
    pub save_every: u64,
    /// Keep the last K checkpoints.
    pub save_total_limit: usize,
}

impl Default for CheckpointSection {
    fn default() -> Self {
        CheckpointSection {
            run_dir: PathBuf::from("runs/couplet"),
            save_every: 2000,
            save_total_limit: 5,
        }
    }
}

impl CheckpointSection {
    /// Positive period and limit.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.save_every == 0 {
            return Err(invalid("checkpointing.save_every", "must be at least 1"));
        }
        if self.save_total_limit == 0 {
            return Err(invalid(
                "checkpointing.save_total_limit",
                "must keep at least 1 checkpoint",
            ));
        }
        Ok(())
    }
}

/// `[logging]`: scalars, TensorBoard and sampled completions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingSection {
    /// Write TensorBoard event files under run_dir.
    pub tensorboard: bool,
    /// Scalars every N optimizer steps.
    pub log_every: u64,
    /// Sample completions to completions.jsonl every N steps (0: never).
    pub completions_every: u64,
    /// Report the KL to the starting policy every step, also at β = 0 (then a frozen copy
    /// of the starting weights is held — none under LoRA — and scored once per round; it
    /// never enters the loss). With β > 0 the KL is the reference's anyway.
    pub kl_to_start: bool,
}

impl Default for LoggingSection {
    fn default() -> Self {
        LoggingSection {
            tensorboard: true,
            log_every: 1,
            completions_every: 10,
            kl_to_start: true,
        }
    }
}

/// Periodic evaluation on `data.validation` (pass@k in the sandbox, see `couplet eval`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalSection {
    /// Evaluate every N optimizer steps, before the first and after the last (0: never).
    pub every: u64,
    /// Samples per problem (n of pass@k; pass@1 is reported).
    pub samples: usize,
    /// Decoding temperature of the evaluation (0: greedy); the other decoder settings are
    /// the rollout's.
    pub temperature: f64,
    /// Evaluate only the first N validation rows (default: all).
    pub max_problems: Option<usize>,
}

impl Default for EvalSection {
    fn default() -> Self {
        EvalSection {
            every: 0,
            samples: 1,
            temperature: 0.0,
            max_problems: None,
        }
    }
}

impl EvalSection {
    /// When evaluation is on: rows to evaluate, samples, a temperature.
    pub fn validate(&self, validation: Option<&Path>) -> Result<(), ConfigError> {
        if self.every == 0 {
            return Ok(());
        }
        if validation.is_none() {
            return Err(invalid(
                "eval.every",
                "needs data.validation (the rows to evaluate on)",
            ));
        }
        if self.samples == 0 {
            return Err(invalid("eval.samples", "must be at least 1"));
        }
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(invalid("eval.temperature", "must be ≥ 0 (0: greedy)"));
        }
        Ok(())
    }
}

/// The process-group backend of data parallelism (`distributed.backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DistributedBackend {
    /// One process.
    #[default]
    None,
    /// Gloo: CPU tensors.
    Gloo,
    /// NCCL: one GPU per rank.
    Nccl,
}

impl DistributedBackend {
    /// The c10d backend, or `None` for a single process.
    pub fn group_backend(self) -> Option<couplet_dist::Backend> {
        match self {
            DistributedBackend::None => None,
            DistributedBackend::Gloo => Some(couplet_dist::Backend::Gloo),
            DistributedBackend::Nccl => Some(couplet_dist::Backend::Nccl),
        }
    }
}

/// How much of the training state ZeRO shards across ranks (`distributed.zero`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub enum ZeroStage {
    /// 0: every rank holds everything (gradients all-reduced).
    #[default]
    Replicated,
    /// 1: AdamW moments and f32 masters are sharded; gradients are still all-reduced.
    OptimizerStates,
    /// 2: also the reduced gradients: each bucket is reduced into its owner only.
    Gradients,
}

impl TryFrom<u8> for ZeroStage {
    type Error = String;

    fn try_from(stage: u8) -> Result<Self, String> {
        match stage {
            0 => Ok(ZeroStage::Replicated),
            1 => Ok(ZeroStage::OptimizerStates),
            2 => Ok(ZeroStage::Gradients),
            other => Err(format!(
                "ZeRO stage {other} is not supported: expected 0, 1 or 2"
            )),
        }
    }
}

impl From<ZeroStage> for u8 {
    fn from(stage: ZeroStage) -> u8 {
        stage as u8
    }
}

impl ZeroStage {
    /// Whether optimizer state is sharded.
    pub fn shards_optimizer(self) -> bool {
        self >= ZeroStage::OptimizerStates
    }

    /// Whether reduced gradients are sharded.
    pub fn shards_gradients(self) -> bool {
        self == ZeroStage::Gradients
    }
}

/// `[distributed]`: data parallelism over ranks started by torchrun or `couplet launch`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DistributedSection {
    /// none, gloo (CPU) or nccl (GPU).
    pub backend: DistributedBackend,
    /// ZeRO stage: 0 (replicated), 1 (optimizer state sharded), 2 (and gradients).
    pub zero: ZeroStage,
    /// Older spelling of `zero = 1` (kept so existing configs load).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub zero1: bool,
    /// Element type gradients travel in between ranks (f32, or bf16 for half the traffic).
    pub reduce_dtype: Precision,
    /// Rendezvous and collective timeout.
    pub timeout_seconds: f64,
    /// Gradient all-reduce bucket size.
    pub bucket_mb: usize,
}

impl Default for DistributedSection {
    fn default() -> Self {
        DistributedSection {
            backend: DistributedBackend::None,
            zero: ZeroStage::Replicated,
            zero1: false,
            reduce_dtype: Precision::F32,
            timeout_seconds: 1800.0,
            bucket_mb: 25,
        }
    }
}

impl DistributedSection {
    /// The ZeRO stage in effect (`zero1 = true` reads as stage 1 at least).
    pub fn zero_stage(&self) -> ZeroStage {
        if self.zero1 {
            self.zero.max(ZeroStage::OptimizerStates)
        } else {
            self.zero
        }
    }

    /// ZeRO needs a group; positive timeout and bucket.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.zero_stage() != ZeroStage::Replicated && self.backend == DistributedBackend::None {
            let key = if self.zero1 {
                "distributed.zero1"
            } else {
                "distributed.zero"
            };
            return Err(invalid(
                key,
                "shards training state across ranks: needs distributed.backend = \"gloo\" or \"nccl\"",
            ));
        }
        if !(self.timeout_seconds > 0.0 && self.timeout_seconds.is_finite()) {
            return Err(invalid("distributed.timeout_seconds", "must be > 0"));
        }
        if self.bucket_mb == 0 {
            return Err(invalid("distributed.bucket_mb", "must be at least 1"));
        }
        Ok(())
    }
}
