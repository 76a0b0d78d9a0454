//! The training configuration: one TOML file, sections per concern, every field with a
//! default and a doc comment (`configs/README.md` lists them all; a test keeps the two in
//! step). Values are typed ([`sections`]): an unknown key or value is rejected at load with
//! its key named (and, for a value, the allowed ones listed); `--set section.key=value`
//! overrides apply before validation; each section checks its own rules and
//! [`TrainConfig::validate`] adds the few that span sections.

mod legacy;
mod sections;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::algorithm::Algorithm;
pub use sections::*;

/// A config that cannot be used, with the file, key or override at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read (the reason follows as the error's source).
    #[error("config file {path}")]
    Io {
        /// The config file.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// Not TOML, an unknown key or a value of the wrong type or name.
    #[error("{origin}: {message}")]
    Parse {
        /// The file (or `--set`) the text came from.
        origin: String,
        /// What is wrong, with the key.
        message: String,
    },
    /// A value outside its documented range or contradicting another.
    #[error("config key `{key}`: {message}")]
    Invalid {
        /// The key, e.g. `rollout.top_p`.
        key: String,
        /// The rule it breaks.
        message: String,
    },
    /// A malformed `--set` override.
    #[error("--set {spec:?}: {message}")]
    Override {
        /// The override as given.
        spec: String,
        /// What is wrong with it.
        message: String,
    },
}

pub(crate) fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
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
    /// `[model]`: the starting policy and where it runs.
    pub model: ModelSection,
    /// `[data]`: training and validation rows.
    pub data: DataSection,
    /// `[rollout]`: how completions are sampled.
    pub rollout: RolloutSection,
    /// `[reward]`: the weighted reward functions.
    pub reward: RewardSection,
    /// `[sandbox]`: where tests run.
    pub sandbox: SandboxSection,
    /// `[algorithm]`: the RL method (`name`) and its own knobs.
    pub algorithm: Algorithm,
    /// `[reference]`: the reference policy of the KL term.
    pub reference: ReferenceSection,
    /// `[optimizer]`: AdamW.
    pub optimizer: OptimizerSection,
    /// `[schedule]`: learning-rate schedule, run length, batch geometry.
    pub schedule: ScheduleSection,
    /// `[checkpointing]`: run checkpoints.
    pub checkpointing: CheckpointSection,
    /// `[logging]`: scalars, TensorBoard, sampled completions.
    pub logging: LoggingSection,
    /// `[eval]`: periodic validation.
    pub eval: EvalSection,
    /// `[distributed]`: data parallelism.
    pub distributed: DistributedSection,
    /// `[lora]`: LoRA adapters on a frozen base (rank 0: full fine-tuning).
    pub lora: couplet_model::LoraConfig,
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
            algorithm: Algorithm::default(),
            reference: ReferenceSection::default(),
            optimizer: OptimizerSection::default(),
            schedule: ScheduleSection::default(),
            checkpointing: CheckpointSection::default(),
            logging: LoggingSection::default(),
            eval: EvalSection::default(),
            distributed: DistributedSection::default(),
            lora: couplet_model::LoraConfig::default(),
        }
    }
}

impl TrainConfig {
    /// Whether a reference policy is scored every round: for the KL term (β > 0), or for
    /// the KL-to-start telemetry (`logging.kl_to_start`).
    pub fn holds_reference(&self) -> bool {
        self.algorithm.method().beta() > 0.0 || self.logging.kl_to_start
    }

    /// Reads a TOML file, applies `--set key=value` overrides, validates.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
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
        legacy::reject_old_sections(&value, origin)?;
        // An [algorithm] section without `name` is the default method's.
        if let Some(toml::Value::Table(section)) = value.get_mut("algorithm") {
            let default = Algorithm::default();
            section
                .entry("name")
                .or_insert_with(|| toml::Value::from(default.name()));
        }
        if overrides
            .iter()
            .any(|o| o.trim_start().starts_with("algorithm.name"))
        {
            let explicit: Vec<&str> = overrides
                .iter()
                .filter_map(|o| o.trim_start().strip_prefix("algorithm."))
                .filter_map(|o| o.split('=').next())
                .map(str::trim)
                .collect();
            keep_shared_knobs(&mut value, &explicit)?;
        }
        let config: TrainConfig = serde_path_to_error::deserialize(toml::Value::Table(value))
            .map_err(|e| {
                let path = e.path().to_string();
                ConfigError::Parse {
                    origin: origin.into(),
                    message: format!("key `{path}`: {}", without_location(&e.into_inner())),
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

    /// Every documented rule, each error naming its key: each section's own, then the
    /// rules that span sections.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let per_step = self.completions_per_step();
        self.data.validate()?;
        self.distributed.validate()?;
        self.rollout.validate(per_step)?;
        let single = self.algorithm.method().advantages(&[0.0], 1);
        if self.rollout.num_generations < 2 && single.is_err() {
            return Err(invalid(
                "rollout.num_generations",
                format!(
                    "{} advantages need at least 2 completions per prompt",
                    self.algorithm.name()
                ),
            ));
        }
        self.reward.validate(self.rollout.max_new_tokens)?;
        self.sandbox.validate()?;
        self.algorithm.method().validate()?;
        self.algorithm.method().check_config(self)?;
        self.reference.validate()?;
        if self.model.logits_chunk_rows < 1 {
            return Err(invalid("model.logits_chunk_rows", "must be at least 1"));
        }
        validate_optimizer(&self.optimizer)?;
        self.eval.validate(self.data.validation.as_deref())?;
        self.schedule.validate(per_step)?;
        self.checkpointing.validate()?;
        if self.logging.log_every == 0 {
            return Err(invalid("logging.log_every", "must be at least 1"));
        }
        self.validate_lora()
    }

    /// `[lora]`'s ranges, and what LoRA changes elsewhere: the reference is the base
    /// model itself (adapters off), so it cannot be synced towards the policy.
    fn validate_lora(&self) -> Result<(), ConfigError> {
        if let Err((field, message)) = self.lora.check() {
            let key = format!("lora.{field}");
            return Err(ConfigError::Invalid { key, message });
        }
        if self.lora.enabled() && self.algorithm.method().beta() > 0.0 && self.reference.sync {
            return Err(invalid(
                "reference.sync",
                "with [lora] the reference is the frozen base (adapters switched off) and cannot be synced towards the policy: set reference.sync = false",
            ));
        }
        Ok(())
    }
}

/// A deserialisation error without toml's trailing "in `key`" line (the key is named
/// already).
fn without_location(error: &toml::de::Error) -> String {
    let text = error.to_string();
    match text.rsplit_once("\nin `") {
        Some((message, _)) => message.trim_end().to_string(),
        None => text.trim_end().to_string(),
    }
}

/// After `--set algorithm.name=…`: the section keeps only the knobs the new method has
/// (its ε, β, … carry over; another method's knobs such as `pairs` are dropped), so one
/// override switches the method of a config written for another. Knobs set by `--set`
/// (`explicit`) are always kept, so one the method lacks still fails by name.
fn keep_shared_knobs(table: &mut toml::Table, explicit: &[&str]) -> Result<(), ConfigError> {
    let Some(toml::Value::Table(section)) = table.get_mut("algorithm") else {
        return Ok(());
    };
    let name = section
        .get("name")
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    let target = Algorithm::by_name(name).map_err(|e| invalid("algorithm.name", e))?;
    let Ok(toml::Value::Table(known)) = toml::Value::try_from(&target) else {
        return Ok(());
    };
    section.retain(|key, _| known.contains_key(key) || explicit.contains(&key));
    Ok(())
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
                c.schedule.num_iterations,
                c.algorithm.method().beta()
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
            (c.rollout.temperature, c.model.device),
            (1.2, couplet_model::DeviceSpec::Cuda(0))
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
            (vec!["rollout.cache=\"dual\""], "rollout.cache"),
            (vec!["rollout.cache=\"always\""], "rollout.cache"),
            (
                vec!["rollout.cache=\"delayed\"", "rollout.refresh_every=0"],
                "rollout.refresh_every",
            ),
            (vec!["rollout.threshold=-0.1"], "rollout.threshold"),
            (vec!["schedule.num_iterations=0"], "schedule.num_iterations"),
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
            (vec!["algorithm.name=\"magic\""], "algorithm"),
            (
                vec!["algorithm.name=\"d1\"", "algorithm.p_mask_prompt=1.5"],
                "algorithm.p_mask_prompt",
            ),
            (vec!["algorithm.pairs=0"], "algorithm.pairs"),
            (vec!["algorithm.name=wd1", "algorithm.pairs=2"], "pairs"),
            (vec!["algorithm.p_mask_prompt=0.2"], "p_mask_prompt"),
            (vec!["algorithm.beta=-0.1"], "algorithm.beta"),
            (vec!["algorithm.epsilon_low=1.0"], "algorithm.epsilon_low"),
            (vec!["model.logits_chunk_rows=0"], "model.logits_chunk_rows"),
            (vec!["reference.mixup_alpha=2"], "reference.mixup_alpha"),
            (vec!["estimator.kind=\"d1\""], "algorithm.name = \"d1\""),
            (vec!["objective.beta=0.02"], "algorithm.beta = 0.02"),
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
        for name in crate::algorithm::NAMES {
            let method = toml::Value::try_from(Algorithm::by_name(name).unwrap()).unwrap();
            for key in method.as_table().unwrap().keys() {
                if !readme.contains(&format!("`algorithm.{key}`")) {
                    missing.push(format!("algorithm.{key} ({name})"));
                }
            }
        }
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
