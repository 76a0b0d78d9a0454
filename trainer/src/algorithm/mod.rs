//! The RL algorithm as a value: one file per method, one enum variant each.
//!
//! A method owns three things: its **likelihood estimate** (which masked versions of a
//! sequence are scored, and how their token log-probabilities combine into a per-token or
//! per-sequence score), its **advantage baseline**, and its **loss**. The trainer never
//! matches on the method: it asks for versions, scores them through the one scoring path
//! ([`score`]) for the old policy, the reference and the policy alike, and hands the scores
//! to the method's loss.
//!
//! `[algorithm]` in a config deserialises straight into [`Algorithm`]: `name` picks the
//! variant, and the other keys are that method's own knobs (an unknown knob fails at load
//! with its key named). Adding a method is one new file implementing [`Method`] plus one
//! line in the `methods!` list below.

pub mod masks;
mod score;

use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::advantages::{AdvantageError, Advantages};
use crate::config::ConfigError;
pub use crate::objective::{ObjectiveError, ObjectiveMetrics as LossMetrics};
pub use masks::Versions;
pub use score::{
    policy_backward, score, score_versions, BatchRows, EstimatorBatch, LeanScore, LossContext,
};

/// The methods: `Variant => module::Type`. The module's name is the config name
/// (`algorithm.name`, serde's snake case of the variant); this one list makes the enum,
/// [`NAMES`] and [`Algorithm::method`].
macro_rules! methods {
    ($($(#[$doc:meta])* $variant:ident => $module:ident::$ty:ident,)*) => {
        $(mod $module;)*

        /// Which method, with its knobs (`[algorithm]`, `name = "…"`).
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "name", rename_all = "snake_case")]
        pub enum Algorithm {
            $($(#[$doc])* $variant($module::$ty),)*
        }

        /// Every method's name, in the order of the docs.
        pub const NAMES: &[&str] = &[$(stringify!($module)),*];

        impl Algorithm {
            /// The method behind the value.
            pub fn method(&self) -> &dyn Method {
                match self {
                    $(Algorithm::$variant(m) => m,)*
                }
            }
        }
    };
}

methods! {
    /// coupled-GRPO (DiffuCoder): the full mask plus complementary mask pairs.
    Coupled => coupled::Coupled,
    /// d1 / diffu-GRPO: the completion fully masked, prompt tokens masked at random.
    D1 => d1::D1,
    /// The completion fully masked, the prompt intact (the paper's baseline).
    FullMask => full_mask::FullMask,
    /// Like coupled, with two independent masks instead of a complementary pair.
    Decoupled => decoupled::Decoupled,
    /// ESPO: a sequence-level ratio of stratified, complement-coupled ELBO estimates.
    Espo => espo::Espo,
    /// wd1: softmax-weighted sequence likelihoods over the group, no ratio.
    Wd1 => wd1::Wd1,
    /// BGPO: VRPO's stratified-timestep estimator, a linear ratio bound for A > 0, dual clip.
    Bgpo => bgpo::Bgpo,
    /// SPG: block-wise masks, ELBO for A > 0 and an EUBO/ELBO mix otherwise, no ratio.
    Spg => spg::Spg,
    /// JustGRPO: strict left-to-right rollouts, the exact autoregressive likelihood.
    JustGrpo => just_grpo::JustGrpo,
    /// TraceRL: rows from the rollout's own decoding order, token clip and k3 to the old
    /// policy.
    TraceRl => trace_rl::TraceRl,
}

pub use bgpo::Bgpo;
pub use coupled::Coupled;
pub use d1::D1;
pub use decoupled::Decoupled;
pub use espo::Espo;
pub use full_mask::FullMask;
pub use just_grpo::JustGrpo;
pub use spg::{Spg, SpgEstimate};
pub use trace_rl::TraceRl;
pub use wd1::Wd1;

impl Default for Algorithm {
    fn default() -> Self {
        Algorithm::Coupled(Coupled::default())
    }
}

impl Algorithm {
    /// The method named `name` with its default knobs; the error lists the names.
    pub fn by_name(name: &str) -> Result<Self, String> {
        let table: toml::Table = [("name".to_string(), toml::Value::from(name))]
            .into_iter()
            .collect();
        toml::Value::Table(table).try_into().map_err(|_| {
            format!(
                "unknown algorithm {name:?}; expected one of {}",
                NAMES.join(", ")
            )
        })
    }

    /// The method `name` with this value's knobs where it has the same ones (ε, β, …) and
    /// its own defaults for the rest: what an ablation compares on one base config.
    pub fn switched_to(&self, name: &str) -> Result<Self, String> {
        let target = Self::by_name(name)?;
        let (Ok(toml::Value::Table(mine)), Ok(toml::Value::Table(mut theirs))) =
            (toml::Value::try_from(self), toml::Value::try_from(&target))
        else {
            return Ok(target);
        };
        for (key, value) in mine {
            if key != "name" && theirs.contains_key(&key) {
                theirs.insert(key, value);
            }
        }
        toml::Value::Table(theirs)
            .try_into()
            .map_err(|e: toml::de::Error| format!("{name}: {e}"))
    }

    /// The config name (`algorithm.name`).
    pub fn name(&self) -> &'static str {
        self.method().name()
    }

    /// The value as a TOML inline table (`--set algorithm={…}` replaces the whole section).
    pub fn inline_toml(&self) -> String {
        toml::Value::try_from(self)
            .map(|v| v.to_string())
            .unwrap_or_default()
    }
}

/// The value is its method: `&algorithm` goes wherever a `&dyn Method` is taken.
impl Method for Algorithm {
    fn name(&self) -> &'static str {
        self.method().name()
    }
    fn validate(&self) -> Result<(), ConfigError> {
        self.method().validate()
    }
    fn check_config(&self, config: &crate::TrainConfig) -> Result<(), ConfigError> {
        self.method().check_config(config)
    }
    fn rollout_overrides(&self, k: usize) -> Vec<String> {
        self.method().rollout_overrides(k)
    }
    fn versions(&self, batch: &EstimatorBatch, seed: u64) -> Versions {
        self.method().versions(batch, seed)
    }
    fn combine(&self, versions: &Versions, lp: &Tensor) -> Tensor {
        self.method().combine(versions, lp)
    }
    fn loss(&self, input: &LossInput) -> Result<(Tensor, LossMetrics), ObjectiveError> {
        self.method().loss(input)
    }
    fn advantages(&self, rewards: &[f64], g: usize) -> Result<Advantages, AdvantageError> {
        self.method().advantages(rewards, g)
    }
    fn coefficients(&self, advantages: &Advantages, g: usize) -> Vec<f64> {
        self.method().coefficients(advantages, g)
    }
    fn uses_old(&self, mu: usize) -> bool {
        self.method().uses_old(mu)
    }
    fn beta(&self) -> f64 {
        self.method().beta()
    }
    fn random_masking(&self) -> bool {
        self.method().random_masking()
    }
    fn versions_per_sample(&self, completion: usize, steps: usize) -> usize {
        self.method().versions_per_sample(completion, steps)
    }
    fn versions_per_backward(&self) -> Option<usize> {
        self.method().versions_per_backward()
    }
    fn units(&self, batch: &EstimatorBatch, coefficients: &Tensor) -> f64 {
        self.method().units(batch, coefficients)
    }
}

/// What one micro-batch's loss sees. Scores have the shape the method's
/// [`Method::combine`] gives (`[B, K]` per token, `[B, …]` per sequence).
pub struct LossInput<'a> {
    /// The policy's scores, with gradient.
    pub scores: &'a Tensor,
    /// The old policy's scores with the same masks (`None` when μ = 1 or unused).
    pub old: Option<&'a Tensor>,
    /// The reference's scores with the same masks (`None` without a reference).
    pub reference: Option<&'a Tensor>,
    /// `[B]` the per-sample coefficients of [`Method::coefficients`] (the advantages for
    /// most methods).
    pub advantages: &'a Tensor,
    /// `[B, K]` 1 on completion tokens up to and including the end token.
    pub completion_mask: &'a Tensor,
    /// Completion tokens of the whole optimizer step (all micro-batches and ranks).
    pub step_tokens: f64,
    /// Sequences of the whole optimizer step.
    pub step_sequences: f64,
    /// The method's [`Method::units`] summed over the whole optimizer step.
    pub step_units: f64,
    /// Score columns of the whole micro-batch (a method run in chunks of versions sees a
    /// slice of them and normalises by the whole).
    pub columns: i64,
    /// The versions the policy's scores came from (the old and reference scores used the
    /// same ones).
    pub versions: &'a Versions,
}

/// One RL method: its estimate, its advantages and its loss.
pub trait Method: std::fmt::Debug + Send + Sync {
    /// The config name.
    fn name(&self) -> &'static str;

    /// The knobs' ranges; errors name `algorithm.<knob>`.
    fn validate(&self) -> Result<(), ConfigError>;

    /// Rules that involve other sections (the completion length, the rollout mode).
    fn check_config(&self, _config: &crate::TrainConfig) -> Result<(), ConfigError> {
        Ok(())
    }

    /// `--set` overrides that put a config's rollouts in the mode this method needs
    /// (what `couplet ablate` adds when it switches a config to the method).
    fn rollout_overrides(&self, _k: usize) -> Vec<String> {
        Vec::new()
    }

    /// The masked versions of `batch` scored under the iteration's mask `seed`.
    fn versions(&self, batch: &EstimatorBatch, seed: u64) -> Versions;

    /// Scores from the read tokens' log-probabilities `lp [V, B, K]` (0 where not read).
    fn combine(&self, versions: &Versions, lp: &Tensor) -> Tensor;

    /// The micro-batch loss, normalised so that summing micro-batches (and ranks) gives
    /// the step's loss; an error when a score the loss needs is missing.
    fn loss(&self, input: &LossInput) -> Result<(Tensor, LossMetrics), ObjectiveError>;

    /// Group-relative advantages of prompt-major `rewards` in groups of `group_size`.
    fn advantages(&self, rewards: &[f64], group_size: usize) -> Result<Advantages, AdvantageError>;

    /// The per-sample coefficients the loss multiplies (default: the advantages).
    fn coefficients(&self, advantages: &Advantages, _group_size: usize) -> Vec<f64> {
        advantages.values.clone()
    }

    /// Whether the old policy is scored at rollout time for `mu` iterations.
    fn uses_old(&self, mu: usize) -> bool {
        mu > 1
    }

    /// The KL weight (> 0: a reference model is held and scored every round).
    fn beta(&self) -> f64 {
        0.0
    }

    /// Whether every iteration draws new masks (false: the fixed seed 42 every iteration).
    fn random_masking(&self) -> bool {
        true
    }

    /// When the loss is a sum over versions with one score column each: how many versions
    /// one backward covers (the rest of the micro-batch follows in further chunks).
    fn versions_per_backward(&self) -> Option<usize> {
        None
    }

    /// Forward versions per sample of `completion` tokens decoded in at most `steps` steps
    /// (for the memory planner: the most a sample can need).
    fn versions_per_sample(&self, completion: usize, steps: usize) -> usize;

    /// What the step's loss is averaged over, counted in a micro-batch with its
    /// coefficients `[B]`: its sequences by default (a method that averages over rows of
    /// a trajectory, or over samples with a non-zero advantage, counts those).
    fn units(&self, batch: &EstimatorBatch, _coefficients: &Tensor) -> f64 {
        batch.samples.len() as f64
    }
}

/// `algorithm.<key>`: `message`.
pub(crate) fn invalid(key: &str, message: &str) -> ConfigError {
    crate::config::invalid(&format!("algorithm.{key}"), message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_is_its_variants_config_name() {
        for name in NAMES {
            let algorithm = Algorithm::by_name(name).unwrap();
            assert_eq!(algorithm.name(), *name);
            assert_eq!(algorithm.method().name(), *name);
        }
        let last = NAMES[NAMES.len() - 1];
        assert!(Algorithm::by_name("magic").unwrap_err().contains(last));
    }
}
