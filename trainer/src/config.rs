//! The training configuration: one TOML file, sections per concern, every field with a
//! default and a doc comment (`configs/README.md` lists them all; a test keeps the two in
//! step). Unknown keys are rejected with their name; `--set section.key=value` overrides
//! apply before validation; [`TrainConfig::validate`] checks every documented rule up
//! front and names the key it is about.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use couplet_rollout::{
    BlockDecodeConfig, DecoderConfig, DreamAlg, DreamDecodeConfig, Remasking, SamplingParams,
};

use crate::advantages::Baseline;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("config key `{key}`: {message}")]
    Invalid { key: String, message: String },
    #[error("--set {spec:?}: {message}")]
    Override { spec: String, message: String },
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        message: message.into(),
    }
}

/// The whole run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Seed of everything random: data order, rollouts, masks.
    pub seed: u64,
    pub model: ModelSection,
    pub data: DataSection,
    pub rollout: RolloutSection,
    pub reward: RewardSection,
    pub sandbox: SandboxSection,
    pub estimator: EstimatorSection,
    pub objective: ObjectiveSection,
    pub optimizer: OptimizerSection,
    pub schedule: ScheduleSection,
    pub checkpointing: CheckpointSection,
    pub logging: LoggingSection,
    pub eval: EvalSection,
    pub distributed: DistributedSection,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            seed: 42,
            model: ModelSection::default(),
            data: DataSection::default(),
            rollout: RolloutSection::default(),
            reward: RewardSection::default(),
            sandbox: SandboxSection::default(),
            estimator: EstimatorSection::default(),
            objective: ObjectiveSection::default(),
            optimizer: OptimizerSection::default(),
            schedule: ScheduleSection::default(),
            checkpointing: CheckpointSection::default(),
            logging: LoggingSection::default(),
            eval: EvalSection::default(),
            distributed: DistributedSection::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSection {
    /// Hugging Face model folder of the starting policy.
    pub path: PathBuf,
    /// cpu, cuda, cuda:N or auto.
    pub device: String,
    /// f32, or bf16 (autocast over f32 master weights on CUDA).
    pub dtype: String,
    /// Recompute layer activations in backward.
    pub gradient_checkpointing: bool,
}

impl Default for ModelSection {
    fn default() -> Self {
        ModelSection {
            path: PathBuf::from("data/demo-model"),
            device: "cpu".into(),
            dtype: "f32".into(),
            gradient_checkpointing: false,
        }
    }
}

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
    pub bad_rows: String,
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
            bad_rows: "skip".into(),
            stratify_by: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RolloutSection {
    /// dream (Dream decoder) or block (LLaDA/d1 block decoder).
    pub decoder: String,
    /// G: completions per prompt.
    pub num_generations: usize,
    /// Prompts per optimizer step (over all ranks).
    pub prompts_per_step: usize,
    /// Sequences decoded together.
    pub generation_batch_size: usize,
    pub max_new_tokens: i64,
    /// Diffusion steps.
    pub steps: i64,
    pub temperature: f64,
    pub top_p: Option<f64>,
    pub top_k: Option<i64>,
    /// Dream decoder: origin, maskgit_plus, topk_margin or entropy.
    pub alg: String,
    pub alg_temp: f64,
    /// Block decoder: block size (must divide max_new_tokens).
    pub block_length: Option<i64>,
    /// Block decoder: low_confidence or random.
    pub remasking: String,
}

impl RolloutSection {
    /// The decoder these settings describe (validated by [`TrainConfig::validate`]).
    pub fn decoder_config(&self) -> DecoderConfig {
        if self.decoder == "block" {
            DecoderConfig::Block(BlockDecodeConfig {
                steps: self.steps,
                max_new_tokens: self.max_new_tokens,
                block_length: self.block_length.unwrap_or(self.max_new_tokens),
                temperature: self.temperature,
                remasking: if self.remasking == "random" {
                    Remasking::Random
                } else {
                    Remasking::LowConfidence
                },
            })
        } else {
            DecoderConfig::Dream(DreamDecodeConfig {
                steps: self.steps,
                max_new_tokens: self.max_new_tokens,
                alg: DreamAlg::parse(&self.alg).unwrap_or(DreamAlg::Entropy),
                alg_temp: self.alg_temp,
                sampling: SamplingParams {
                    temperature: self.temperature,
                    top_p: self.top_p,
                    top_k: self.top_k,
                },
                eps: 1e-3,
            })
        }
    }
}

impl Default for RolloutSection {
    fn default() -> Self {
        RolloutSection {
            decoder: "dream".into(),
            num_generations: 10,
            prompts_per_step: 8,
            generation_batch_size: 10,
            max_new_tokens: 256,
            steps: 256,
            temperature: 1.0,
            top_p: Some(0.95),
            top_k: None,
            alg: "entropy".into(),
            alg_temp: 0.0,
            block_length: None,
            remasking: "low_confidence".into(),
        }
    }
}

/// One weighted reward function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewardFunction {
    /// code, binary_code, code_format or soft_overlong.
    pub name: String,
    pub weight: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RewardSection {
    pub functions: Vec<RewardFunction>,
    /// soft_overlong: penalty buffer in tokens before max_new_tokens.
    pub overlong_buffer: usize,
}

impl Default for RewardSection {
    fn default() -> Self {
        RewardSection {
            functions: vec![
                RewardFunction {
                    name: "code".into(),
                    weight: 2.0,
                },
                RewardFunction {
                    name: "code_format".into(),
                    weight: 0.5,
                },
            ],
            overlong_buffer: 64,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxSection {
    /// wasm or process.
    pub backend: String,
    /// Worker threads (0 = all cores).
    pub workers: usize,
    pub timeout_seconds: f64,
    pub memory_mb: u64,
    /// Interpreter of the process backend (empty: /usr/bin/python3 or python3).
    pub python: Option<PathBuf>,
}

impl Default for SandboxSection {
    fn default() -> Self {
        SandboxSection {
            backend: "wasm".into(),
            workers: 0,
            timeout_seconds: 5.0,
            memory_mb: 512,
            python: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EstimatorSection {
    /// coupled, d1, full_mask or decoupled.
    pub kind: String,
    /// coupled: λ, complementary pairs.
    pub pairs: usize,
    /// coupled: also score the fully masked version.
    pub include_full_mask: bool,
    /// d1: probability of masking each prompt token.
    pub p_mask_prompt: f64,
    /// Draw new masks each iteration (false: the fixed seed 42 every iteration).
    pub random_masking: bool,
    /// Rows of vocabulary logits computed at once in the lean path.
    pub logits_chunk_rows: i64,
}

impl Default for EstimatorSection {
    fn default() -> Self {
        EstimatorSection {
            kind: "coupled".into(),
            pairs: 1,
            include_full_mask: true,
            p_mask_prompt: 0.15,
            random_masking: true,
            logits_chunk_rows: 1024,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ObjectiveSection {
    /// KL weight (0: no reference model is held).
    pub beta: f64,
    pub epsilon_low: f64,
    pub epsilon_high: f64,
    /// μ: policy iterations per rollout batch.
    pub num_iterations: usize,
    /// leave_one_out or group_mean.
    pub baseline: Baseline,
    /// Divide advantages by the group std.
    pub scale_rewards: bool,
    pub sync_ref_model: bool,
    pub ref_model_sync_steps: u64,
    pub ref_model_mixup_alpha: f64,
}

impl Default for ObjectiveSection {
    fn default() -> Self {
        ObjectiveSection {
            beta: 0.01,
            epsilon_low: 0.5,
            epsilon_high: 0.5,
            num_iterations: 2,
            baseline: Baseline::LeaveOneOut,
            scale_rewards: false,
            sync_ref_model: true,
            ref_model_sync_steps: 64,
            ref_model_mixup_alpha: 0.6,
        }
    }
}

/// `[optimizer]`: the AdamW hyperparameters as they are.
pub type OptimizerSection = crate::optim::AdamWConfig;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleSection {
    /// constant, linear, cosine or cosine_with_min_lr.
    pub kind: String,
    /// cosine_with_min_lr: floor as a fraction of lr.
    pub min_lr_rate: f64,
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
            kind: "cosine_with_min_lr".into(),
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingSection {
    /// Write TensorBoard event files under run_dir.
    pub tensorboard: bool,
    /// Scalars every N optimizer steps.
    pub log_every: u64,
    /// Sample completions to completions.jsonl every N steps (0: never).
    pub completions_every: u64,
}

impl Default for LoggingSection {
    fn default() -> Self {
        LoggingSection {
            tensorboard: true,
            log_every: 1,
            completions_every: 10,
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DistributedSection {
    /// none, gloo (CPU) or nccl (GPU).
    pub backend: String,
    /// Shard AdamW state across ranks (ZeRO-1).
    pub zero1: bool,
    /// Rendezvous and collective timeout.
    pub timeout_seconds: f64,
    /// Gradient all-reduce bucket size.
    pub bucket_mb: usize,
}

impl Default for DistributedSection {
    fn default() -> Self {
        DistributedSection {
            backend: "none".into(),
            zero1: false,
            timeout_seconds: 1800.0,
            bucket_mb: 25,
        }
    }
}

impl TrainConfig {
    /// Reads a TOML file, applies `--set key=value` overrides, validates.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Io {
            path: path.to_path_buf(),
            error: e,
        })?;
        Self::from_toml(&text, &path.display().to_string(), overrides)
    }

    /// Parses TOML text (`origin` names it in errors), applies overrides, validates.
    pub fn from_toml(text: &str, origin: &str, overrides: &[String]) -> Result<Self, ConfigError> {
        let mut value: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| ConfigError::Parse {
                    origin: origin.into(),
                    message: e.to_string(),
                })?;
        for spec in overrides {
            apply_override(&mut value, spec)?;
        }
        let config: TrainConfig = serde_path_to_error::deserialize(toml::Value::Table(value))
            .map_err(|e| {
                let path = e.path().to_string();
                ConfigError::Parse {
                    origin: origin.into(),
                    message: format!("key `{path}`: {}", e.into_inner()),
                }
            })?;
        config.validate()?;
        Ok(config)
    }

    /// The resolved configuration as TOML (saved in the run directory).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// Completions per optimizer step (over all ranks).
    pub fn completions_per_step(&self) -> usize {
        self.rollout.prompts_per_step * self.rollout.num_generations
    }

    /// Every documented rule, each error naming its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let r = &self.rollout;
        let one_of = |key: &str, value: &str, allowed: &[&str]| {
            if allowed.contains(&value) {
                Ok(())
            } else {
                Err(invalid(
                    key,
                    format!("{value:?} is not one of {}", allowed.join(", ")),
                ))
            }
        };
        one_of("model.dtype", &self.model.dtype, &["f32", "bf16"])?;
        one_of("data.bad_rows", &self.data.bad_rows, &["skip", "fatal"])?;
        if self
            .data
            .stratify_by
            .as_deref()
            .is_some_and(|c| c.trim().is_empty())
        {
            return Err(invalid("data.stratify_by", "names no column"));
        }
        one_of("rollout.decoder", &r.decoder, &["dream", "block"])?;
        one_of(
            "rollout.alg",
            &r.alg,
            &["origin", "maskgit_plus", "topk_margin", "entropy"],
        )?;
        one_of(
            "rollout.remasking",
            &r.remasking,
            &["low_confidence", "random"],
        )?;
        one_of(
            "sandbox.backend",
            &self.sandbox.backend,
            &["wasm", "process"],
        )?;
        one_of(
            "estimator.kind",
            &self.estimator.kind,
            &["coupled", "d1", "full_mask", "decoupled"],
        )?;
        one_of(
            "schedule.kind",
            &self.schedule.kind,
            &["constant", "linear", "cosine", "cosine_with_min_lr"],
        )?;
        one_of(
            "distributed.backend",
            &self.distributed.backend,
            &["none", "gloo", "nccl"],
        )?;
        let d = &self.distributed;
        if d.zero1 && d.backend == "none" {
            return Err(invalid(
                "distributed.zero1",
                "shards optimizer state across ranks: needs distributed.backend = \"gloo\" or \"nccl\"",
            ));
        }
        if !(d.timeout_seconds > 0.0 && d.timeout_seconds.is_finite()) {
            return Err(invalid("distributed.timeout_seconds", "must be > 0"));
        }
        if d.bucket_mb == 0 {
            return Err(invalid("distributed.bucket_mb", "must be at least 1"));
        }
        if r.num_generations == 0 {
            return Err(invalid("rollout.num_generations", "must be at least 1"));
        }
        if r.num_generations < 2 && self.objective.baseline == Baseline::LeaveOneOut {
            return Err(invalid(
                "rollout.num_generations",
                "leave-one-out advantages need at least 2 completions per prompt",
            ));
        }
        if r.prompts_per_step == 0 {
            return Err(invalid("rollout.prompts_per_step", "must be at least 1"));
        }
        let per_step = self.completions_per_step();
        if r.generation_batch_size == 0 || per_step % r.generation_batch_size != 0 {
            return Err(invalid(
                "rollout.generation_batch_size",
                format!(
                    "{} must divide num_generations × prompts_per_step = {per_step}",
                    r.generation_batch_size
                ),
            ));
        }
        if r.max_new_tokens < 1 {
            return Err(invalid("rollout.max_new_tokens", "must be at least 1"));
        }
        if r.steps < 1 {
            return Err(invalid("rollout.steps", "must be at least 1"));
        }
        if r.decoder == "block" {
            let Some(block) = r.block_length.filter(|&b| b > 0) else {
                return Err(invalid(
                    "rollout.block_length",
                    "the block decoder needs a positive block_length",
                ));
            };
            if r.max_new_tokens % block != 0 {
                return Err(invalid(
                    "rollout.block_length",
                    format!(
                        "{block} does not divide max_new_tokens = {}",
                        r.max_new_tokens
                    ),
                ));
            }
            let blocks = r.max_new_tokens / block;
            if r.steps % blocks != 0 {
                return Err(invalid(
                    "rollout.steps",
                    format!(
                        "{} is not a multiple of the number of blocks ({blocks})",
                        r.steps
                    ),
                ));
            }
        }
        if !(r.temperature >= 0.0 && r.temperature.is_finite()) {
            return Err(invalid("rollout.temperature", "must be ≥ 0"));
        }
        if let Some(p) = r.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(invalid(
                    "rollout.top_p",
                    format!("must be in (0, 1], got {p}"),
                ));
            }
        }
        if r.top_k.is_some_and(|k| k < 1) {
            return Err(invalid("rollout.top_k", "must be at least 1"));
        }
        if r.alg_temp < 0.0 {
            return Err(invalid("rollout.alg_temp", "must be ≥ 0"));
        }
        if self.reward.functions.is_empty() {
            return Err(invalid(
                "reward.functions",
                "at least one reward function is needed",
            ));
        }
        for (i, f) in self.reward.functions.iter().enumerate() {
            one_of(
                &format!("reward.functions[{i}].name"),
                &f.name,
                &["code", "binary_code", "code_format", "soft_overlong"],
            )?;
            if !f.weight.is_finite() {
                return Err(invalid(
                    &format!("reward.functions[{i}].weight"),
                    "must be finite",
                ));
            }
        }
        if self.reward.overlong_buffer as i64 > r.max_new_tokens {
            return Err(invalid(
                "reward.overlong_buffer",
                "cannot exceed rollout.max_new_tokens",
            ));
        }
        if self.sandbox.timeout_seconds.is_nan() || self.sandbox.timeout_seconds <= 0.0 {
            return Err(invalid("sandbox.timeout_seconds", "must be positive"));
        }
        if self.sandbox.memory_mb < 32 {
            return Err(invalid("sandbox.memory_mb", "must be at least 32"));
        }
        let e = &self.estimator;
        if e.kind == "coupled" && e.pairs == 0 {
            return Err(invalid("estimator.pairs", "must be at least 1"));
        }
        if !(0.0..=1.0).contains(&e.p_mask_prompt) {
            return Err(invalid("estimator.p_mask_prompt", "must be in [0, 1]"));
        }
        if e.logits_chunk_rows < 1 {
            return Err(invalid("estimator.logits_chunk_rows", "must be at least 1"));
        }
        let o = &self.objective;
        if o.num_iterations < 1 {
            return Err(invalid("objective.num_iterations", "μ must be at least 1"));
        }
        if o.beta < 0.0 || !o.beta.is_finite() {
            return Err(invalid("objective.beta", "must be ≥ 0"));
        }
        if o.epsilon_low < 0.0 || o.epsilon_low >= 1.0 {
            return Err(invalid("objective.epsilon_low", "must be in [0, 1)"));
        }
        if o.epsilon_high < 0.0 {
            return Err(invalid("objective.epsilon_high", "must be ≥ 0"));
        }
        if !(0.0..=1.0).contains(&o.ref_model_mixup_alpha) {
            return Err(invalid(
                "objective.ref_model_mixup_alpha",
                "must be in [0, 1]",
            ));
        }
        if o.sync_ref_model && o.ref_model_sync_steps == 0 {
            return Err(invalid(
                "objective.ref_model_sync_steps",
                "must be at least 1 when sync_ref_model is on",
            ));
        }
        let opt = &self.optimizer;
        if opt.lr < 0.0 || !opt.lr.is_finite() {
            return Err(invalid(
                "optimizer.lr",
                format!("must be ≥ 0, got {}", opt.lr),
            ));
        }
        if !(0.0..1.0).contains(&opt.beta1) || !(0.0..1.0).contains(&opt.beta2) {
            return Err(invalid(
                if (0.0..1.0).contains(&opt.beta1) {
                    "optimizer.beta2"
                } else {
                    "optimizer.beta1"
                },
                "must be in [0, 1)",
            ));
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
        let s = &self.schedule;
        if !(0.0..=1.0).contains(&s.min_lr_rate) {
            return Err(invalid("schedule.min_lr_rate", "must be in [0, 1]"));
        }
        if !(0.0..=1.0).contains(&s.warmup_ratio) {
            return Err(invalid("schedule.warmup_ratio", "must be in [0, 1]"));
        }
        if self.eval.every > 0 {
            if self.data.validation.is_none() {
                return Err(invalid(
                    "eval.every",
                    "needs data.validation (the rows to evaluate on)",
                ));
            }
            if self.eval.samples == 0 {
                return Err(invalid("eval.samples", "must be at least 1"));
            }
            if !(self.eval.temperature >= 0.0 && self.eval.temperature.is_finite()) {
                return Err(invalid("eval.temperature", "must be ≥ 0 (0: greedy)"));
            }
        }
        if s.max_nonfinite_in_a_row == 0 {
            return Err(invalid(
                "schedule.max_nonfinite_in_a_row",
                "must be at least 1",
            ));
        }
        if s.epochs == 0 && s.max_steps.is_none() {
            return Err(invalid(
                "schedule.epochs",
                "must be at least 1 (or set max_steps)",
            ));
        }
        if s.micro_batch_size == 0 || s.gradient_accumulation_steps == 0 {
            return Err(invalid(
                "schedule.micro_batch_size",
                "micro_batch_size and gradient_accumulation_steps must be at least 1",
            ));
        }
        let per_rank_step = s.micro_batch_size * s.gradient_accumulation_steps;
        if per_step % per_rank_step != 0 {
            return Err(invalid(
                "schedule.gradient_accumulation_steps",
                format!(
                    "micro_batch_size × gradient_accumulation_steps = {per_rank_step} (per rank) × the number of ranks must equal the completions per step (num_generations × prompts_per_step = {per_step})"
                ),
            ));
        }
        if self.checkpointing.save_every == 0 {
            return Err(invalid("checkpointing.save_every", "must be at least 1"));
        }
        if self.checkpointing.save_total_limit == 0 {
            return Err(invalid(
                "checkpointing.save_total_limit",
                "must keep at least 1 checkpoint",
            ));
        }
        if self.logging.log_every == 0 {
            return Err(invalid("logging.log_every", "must be at least 1"));
        }
        Ok(())
    }
}

/// `section.key=value` (value in TOML syntax; bare words are strings).
fn apply_override(table: &mut toml::Table, spec: &str) -> Result<(), ConfigError> {
    let err = |message: String| ConfigError::Override {
        spec: spec.to_string(),
        message,
    };
    let (key, raw) = spec
        .split_once('=')
        .ok_or_else(|| err("expected KEY=VALUE".into()))?;
    let key = key.trim();
    let value: toml::Value = match format!("v = {raw}").parse::<toml::Table>() {
        Ok(mut t) => t.remove("v").ok_or_else(|| err("no value".into()))?,
        Err(_) => toml::Value::String(raw.trim().to_string()),
    };
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(err(format!("bad key {key:?}")));
    }
    let mut current = table;
    for part in &parts[..parts.len() - 1] {
        let entry = current
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = match entry {
            toml::Value::Table(t) => t,
            _ => return Err(err(format!("`{part}` is not a section"))),
        };
    }
    current.insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, overrides: &[&str], needle: &str) {
        let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        match TrainConfig::from_toml(text, "test.toml", &overrides) {
            Ok(_) => panic!("{text:?} {overrides:?} should fail with {needle}"),
            Err(e) => assert!(e.to_string().contains(needle), "{needle}: {e}"),
        }
    }

    const OK: &str = "[schedule]\nmicro_batch_size = 40\ngradient_accumulation_steps = 2\n";

    #[test]
    fn defaults_are_the_recipe_and_valid() {
        let c = TrainConfig::from_toml(OK, "test.toml", &[]).unwrap();
        assert_eq!(
            (
                c.rollout.num_generations,
                c.objective.num_iterations,
                c.objective.beta
            ),
            (10, 2, 0.01)
        );
        // Round trip through the resolved TOML.
        assert_eq!(
            TrainConfig::from_toml(&c.to_toml(), "resolved", &[]).unwrap(),
            c
        );
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        check("[rollout]\ntemprature = 1.0\n", &[], "temprature");
        check("[nonsense]\n", &[], "nonsense");
        check(OK, &["rollout.temprature=2"], "temprature");
    }

    #[test]
    fn overrides_apply_before_validation() {
        let c = TrainConfig::from_toml(
            OK,
            "t",
            &["rollout.temperature=1.2".into(), "model.device=cuda".into()],
        )
        .unwrap();
        assert_eq!(
            (c.rollout.temperature, c.model.device.as_str()),
            (1.2, "cuda")
        );
        check(OK, &["rollout.temperature"], "KEY=VALUE");
        check(OK, &["rollout.temperature=hot"], "rollout.temperature");
    }

    #[test]
    fn every_rule_names_its_key() {
        for (overrides, key) in [
            (
                vec!["rollout.generation_batch_size=7"],
                "rollout.generation_batch_size",
            ),
            (
                vec!["rollout.decoder=\"block\"", "rollout.block_length=24"],
                "rollout.block_length",
            ),
            (
                vec![
                    "rollout.decoder=\"block\"",
                    "rollout.block_length=32",
                    "rollout.steps=12",
                ],
                "rollout.steps",
            ),
            (vec!["rollout.decoder=\"block\""], "rollout.block_length"),
            (
                vec!["objective.num_iterations=0"],
                "objective.num_iterations",
            ),
            (vec!["optimizer.lr=-1e-6"], "optimizer.lr"),
            (vec!["rollout.temperature=-0.5"], "rollout.temperature"),
            (vec!["rollout.top_p=1.5"], "rollout.top_p"),
            (
                vec!["rollout.num_generations=1", "rollout.prompts_per_step=80"],
                "rollout.num_generations",
            ),
            (
                vec!["schedule.micro_batch_size=30"],
                "schedule.gradient_accumulation_steps",
            ),
            (vec!["estimator.kind=\"magic\""], "estimator.kind"),
            (
                vec!["estimator.p_mask_prompt=1.5"],
                "estimator.p_mask_prompt",
            ),
            (vec!["objective.beta=-0.1"], "objective.beta"),
            (vec!["objective.epsilon_low=1.0"], "objective.epsilon_low"),
            (vec!["sandbox.backend=\"docker\""], "sandbox.backend"),
            (
                vec!["reward.functions=[{name=\"speed\", weight=1.0}]"],
                "reward.functions[0].name",
            ),
            (
                vec!["checkpointing.save_total_limit=0"],
                "checkpointing.save_total_limit",
            ),
            (vec!["model.dtype=\"f16\""], "model.dtype"),
            (vec!["distributed.backend=\"mpi\""], "distributed.backend"),
        ] {
            check(OK, &overrides, key);
        }
    }

    #[test]
    fn the_configs_readme_documents_every_key() {
        let readme =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/README.md"))
                .unwrap();
        let value = toml::Value::try_from(TrainConfig::default()).unwrap();
        let mut missing = Vec::new();
        if let toml::Value::Table(t) = value {
            for (section, v) in t {
                match v {
                    toml::Value::Table(fields) => {
                        for key in fields.keys() {
                            if !readme.contains(&format!("`{section}.{key}`")) {
                                missing.push(format!("{section}.{key}"));
                            }
                        }
                    }
                    _ => {
                        if !readme.contains(&format!("`{section}`")) {
                            missing.push(section);
                        }
                    }
                }
            }
        }
        assert!(
            missing.is_empty(),
            "configs/README.md does not document: {missing:?}"
        );
    }

    #[test]
    fn shipped_configs_load() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs");
        let mut loaded = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                TrainConfig::load(&path, &[]).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                loaded += 1;
            }
        }
        assert_eq!(loaded, 5, "the five shipped configs");
    }
}
