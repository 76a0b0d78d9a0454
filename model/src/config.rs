//! `config.json` and `generation_config.json` of a Hugging Face model folder.
//!
//! The structs deserialise straight from the files (as candle does). Fields we do not use are
//! kept verbatim in `extra` so that saving a policy writes back everything the user had.
//! Values the architecture cannot honour (another activation, rope scaling, sliding window,
//! an unknown `model_type`) are errors naming the field rather than silently ignored.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{ModelError, Result};

/// Architecture hyper-parameters of a Dream (or Qwen2-layout) checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DreamConfig {
    /// "Dream" for Dream/DiffuCoder checkpoints; "qwen2" is accepted for the same tensors.
    pub model_type: String,
    /// Vocabulary size (rows of the embedding and the LM head).
    pub vocab_size: i64,
    /// Width of the residual stream.
    pub hidden_size: i64,
    /// Width of the SwiGLU MLP.
    pub intermediate_size: i64,
    /// Transformer layers.
    pub num_hidden_layers: i64,
    /// Attention (query) heads.
    pub num_attention_heads: i64,
    /// Defaults to `num_attention_heads` (plain multi-head attention), as in transformers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_key_value_heads: Option<i64>,
    /// Defaults to `hidden_size / num_attention_heads`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_dim: Option<i64>,
    /// ε of the RMS norms.
    #[serde(default = "default_rms_norm_eps")]
    pub rms_norm_eps: f64,
    /// Base of the rotary embedding frequencies.
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    /// Longest position the rotary tables are built for.
    #[serde(default = "default_max_position_embeddings")]
    pub max_position_embeddings: i64,
    /// Whether the LM head shares the embedding matrix.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// MLP activation (only `silu` is supported).
    #[serde(default = "default_hidden_act")]
    pub hidden_act: String,
    /// Std of the normal init of random models.
    #[serde(default = "default_initializer_range")]
    pub initializer_range: f64,
    /// Storage dtype of the weights ("float32", "bfloat16", "float16").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub torch_dtype: Option<String>,
    /// Mask token id of the diffusion model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask_token_id: Option<i64>,
    /// Padding token id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pad_token_id: Option<i64>,
    /// Beginning-of-text token id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bos_token_id: Option<i64>,
    /// End-of-text token id(s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eos_token_id: Option<TokenIds>,
    /// Couplet's own key: whether logit row i predicts token i+1 (Dream, adapted from an AR
    /// model) or token i (LLaDA-style). Absent means shifted, Dream's convention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shift_logits: Option<bool>,
    /// Whether the q/k/v projections carry a bias (Qwen2 and Dream do, LLaDA does not).
    /// Absent means they do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention_bias: Option<bool>,
    /// The checkpoint layout the folder uses; saving writes the same layout back.
    #[serde(skip)]
    pub layout: Layout,
    /// Every other key of the file, written back unchanged on save.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// How a folder names its tensors and config keys.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Layout {
    /// Qwen2's (Dream, DiffuCoder): `model.layers.N.self_attn.q_proj`, `hidden_size`, ...
    #[default]
    Qwen2,
    /// LLaDA's ([`crate::llada`]), holding the folder's own `config.json` keys so a save
    /// writes back everything the user had.
    Llada(Box<Map<String, Value>>),
}

/// `eos_token_id` is an integer or a list of integers in Hugging Face files.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum TokenIds {
    /// One id.
    One(i64),
    /// Several ids (any of them ends a sequence).
    Many(Vec<i64>),
}

impl TokenIds {
    /// The ids as a list.
    pub fn to_vec(&self) -> Vec<i64> {
        match self {
            TokenIds::One(id) => vec![*id],
            TokenIds::Many(ids) => ids.clone(),
        }
    }
}

fn default_rms_norm_eps() -> f64 {
    1e-6
}
fn default_rope_theta() -> f64 {
    10_000.0
}
fn default_max_position_embeddings() -> i64 {
    32_768
}
fn default_hidden_act() -> String {
    "silu".to_string()
}
fn default_initializer_range() -> f64 {
    0.02
}

/// Model types whose tensors follow Qwen2's names and shapes.
pub const SUPPORTED_MODEL_TYPES: [&str; 4] = ["Dream", "dream", "qwen2", crate::llada::MODEL_TYPE];

impl DreamConfig {
    /// Reads and validates `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        let value: Value = parse_json(path, &text)?;
        if let Value::Object(map) = &value {
            if map.get("model_type").and_then(Value::as_str) == Some(crate::llada::MODEL_TYPE) {
                return crate::llada::config_from_json(path, map.clone());
            }
        }
        let config: DreamConfig = parse_json(path, &text)?;
        config.validate(path)?;
        Ok(config)
    }

    /// Whether the q/k/v projections carry a bias.
    pub fn attention_bias(&self) -> bool {
        self.attention_bias.unwrap_or(true)
    }

    /// Whether the folder uses LLaDA's names and keys.
    pub fn is_llada(&self) -> bool {
        matches!(self.layout, Layout::Llada(_))
    }

    /// Key/value heads (grouped-query attention), defaulting to the attention heads.
    pub fn num_kv_heads(&self) -> i64 {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> i64 {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// Whether logit row i predicts token i + 1 (the default) rather than token i.
    pub fn shift_logits(&self) -> bool {
        self.shift_logits.unwrap_or(true)
    }

    /// Checks that the values describe an architecture this crate implements.
    pub fn validate(&self, path: &Path) -> Result<()> {
        self.check_shape()
            .and_then(|()| self.check_features())
            .and_then(|()| self.check_token_ids())
            .map_err(|(field, message)| ModelError::field(path, field, message))
    }

    /// Model type, positive sizes, and head arithmetic that divides.
    fn check_shape(&self) -> Result<(), (&'static str, String)> {
        if !SUPPORTED_MODEL_TYPES.contains(&self.model_type.as_str()) {
            let supported = SUPPORTED_MODEL_TYPES.join(", ");
            let message = format!(
                "unsupported model type {:?} (supported: {supported})",
                self.model_type
            );
            return Err(("model_type", message));
        }
        for (field, value) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_kv_heads()),
            ("head_dim", self.head_dim()),
        ] {
            if value <= 0 {
                return Err((field, format!("must be positive, got {value}")));
            }
        }
        if self.head_dim.is_none() && self.hidden_size % self.num_attention_heads != 0 {
            return Err((
                "num_attention_heads",
                format!(
                    "hidden_size {} is not divisible by {} heads (set head_dim explicitly)",
                    self.hidden_size, self.num_attention_heads
                ),
            ));
        }
        if self.head_dim() % 2 != 0 {
            let message = format!(
                "rotary embedding needs an even head_dim, got {}",
                self.head_dim()
            );
            return Err(("head_dim", message));
        }
        if self.num_attention_heads % self.num_kv_heads() != 0 {
            return Err((
                "num_key_value_heads",
                format!(
                    "{} attention heads are not a multiple of {} key/value heads",
                    self.num_attention_heads,
                    self.num_kv_heads()
                ),
            ));
        }
        Ok(())
    }

    /// Activation, norm and rotary settings, and the features this crate does not have.
    fn check_features(&self) -> Result<(), (&'static str, String)> {
        let act = &self.hidden_act;
        if act != "silu" {
            return Err((
                "hidden_act",
                format!("only \"silu\" (SwiGLU) is supported, got {act:?}"),
            ));
        }
        for (field, value) in [
            ("rms_norm_eps", self.rms_norm_eps),
            ("rope_theta", self.rope_theta),
        ] {
            if value.is_nan() || value <= 0.0 {
                return Err((field, format!("must be positive, got {value}")));
            }
        }
        if let Some(v) = self.extra.get("rope_scaling").filter(|v| !v.is_null()) {
            return Err((
                "rope_scaling",
                format!("rope scaling is not supported, got {v}"),
            ));
        }
        if let Some(Value::Bool(true)) = self.extra.get("use_sliding_window") {
            let message = "sliding-window attention is not supported".to_string();
            return Err(("use_sliding_window", message));
        }
        if let Some(dtype) = &self.torch_dtype {
            if crate::dtype::kind_from_name(dtype).is_none() {
                return Err(("torch_dtype", format!("unknown dtype {dtype:?}")));
            }
        }
        Ok(())
    }

    /// Special-token ids inside the vocabulary.
    fn check_token_ids(&self) -> Result<(), (&'static str, String)> {
        for (field, id) in [
            ("mask_token_id", self.mask_token_id),
            ("pad_token_id", self.pad_token_id),
            ("bos_token_id", self.bos_token_id),
        ] {
            if let Some(id) = id.filter(|&id| id < 0 || id >= self.vocab_size) {
                let message = format!(
                    "token id {id} is outside the vocabulary (size {})",
                    self.vocab_size
                );
                return Err((field, message));
            }
        }
        Ok(())
    }

    /// Writes the config as pretty JSON, atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        match &self.layout {
            Layout::Qwen2 => write_json(path, self),
            Layout::Llada(original) => write_json(path, &crate::llada::to_json(self, original)),
        }
    }
}

/// `generation_config.json`: the special-token ids a checkpoint was released with, plus
/// decoding defaults we keep verbatim.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct GenerationConfig {
    /// Beginning-of-text token id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bos_token_id: Option<i64>,
    /// End-of-text token id(s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eos_token_id: Option<TokenIds>,
    /// Padding token id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pad_token_id: Option<i64>,
    /// Mask token id of the diffusion model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask_token_id: Option<i64>,
    /// Every other key, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl GenerationConfig {
    /// Reads `generation_config.json` if the folder has one.
    pub fn from_dir(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join("generation_config.json");
        if !path.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).map_err(|e| ModelError::io(&path, e))?;
        parse_json(&path, &text).map(Some)
    }
}

/// Deserialises JSON, naming the offending field (`field `x`: invalid type ...`).
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(path: &Path, text: &str) -> Result<T> {
    let de = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        if field.is_empty() || field == "." {
            ModelError::Parse {
                path: path.to_path_buf(),
                message: e.inner().to_string(),
            }
        } else {
            ModelError::field(path, field, e.inner().to_string())
        }
    })
}

pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value).map_err(|e| ModelError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    text.push('\n');
    crate::fsutil::write_atomic(path, text.as_bytes())
}

/// The files of a model folder, by role.
#[derive(Debug, Clone)]
pub struct ModelFolder {
    /// The folder.
    pub dir: PathBuf,
}

impl ModelFolder {
    /// The files of the folder `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ModelFolder { dir: dir.into() }
    }

    /// `config.json`.
    pub fn config(&self) -> PathBuf {
        self.dir.join("config.json")
    }

    /// `tokenizer.json`.
    pub fn tokenizer(&self) -> PathBuf {
        self.dir.join("tokenizer.json")
    }
}
