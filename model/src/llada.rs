//! LLaDA checkpoints (LLaDA-8B-Base/Instruct, d1's model) in their own Hugging Face layout:
//! OLMo-style `config.json` keys (`d_model`, `n_heads`, `n_layers`, `mlp_hidden_size`,
//! `weight_tying`, ...) and tensor names (`model.transformer.blocks.N.q_proj`, `attn_out`,
//! `ff_proj`, `up_proj`, `ff_out`, ...). The architecture is Dream's with three switches —
//! no q/k/v bias, unshifted logits, mask id 126336 — so a LLaDA folder is mapped onto
//! Couplet's model on load and written back in LLaDA's layout on save: every decoder,
//! estimator and trainer path runs unchanged.
//!
//! Positions count real tokens under left padding (Couplet's convention for every model);
//! LLaDA's own code numbers padded rows from 0, so only unpadded batches are bitwise its.

use std::path::Path;

use serde_json::{json, Map, Value};

use crate::config::{DreamConfig, Layout};
use crate::error::{ModelError, Result};
use crate::lora::LoraTarget;

/// `model_type` of LLaDA's `config.json`.
pub const MODEL_TYPE: &str = "llada";
/// LLaDA's `[MASK]` token id.
pub const MASK_TOKEN_ID: i64 = 126_336;

/// The trunk's tensors: Couplet's name (Qwen2's) and LLaDA's, per decoder layer.
const LAYER_NAMES: [(&str, &str); 11] = [
    ("input_layernorm.weight", "attn_norm.weight"),
    ("post_attention_layernorm.weight", "ff_norm.weight"),
    ("self_attn.q_proj.weight", "q_proj.weight"),
    ("self_attn.k_proj.weight", "k_proj.weight"),
    ("self_attn.v_proj.weight", "v_proj.weight"),
    ("self_attn.q_proj.bias", "q_proj.bias"),
    ("self_attn.k_proj.bias", "k_proj.bias"),
    ("self_attn.v_proj.bias", "v_proj.bias"),
    ("self_attn.o_proj.weight", "attn_out.weight"),
    ("mlp.gate_proj.weight", "ff_proj.weight"),
    ("mlp.up_proj.weight", "up_proj.weight"),
];
/// The one layer tensor whose LLaDA name needs the layer prefix handled apart (it shares
/// `ff_out` with the LM head at the top level).
const DOWN_PROJ: (&str, &str) = ("mlp.down_proj.weight", "ff_out.weight");
/// Top-level tensors.
const TOP_NAMES: [(&str, &str); 3] = [
    ("model.embed_tokens.weight", "model.transformer.wte.weight"),
    ("model.norm.weight", "model.transformer.ln_f.weight"),
    ("lm_head.weight", "model.transformer.ff_out.weight"),
];

/// LLaDA's name of Couplet's tensor `name`.
pub fn stored_name(name: &str) -> String {
    if let Some((_, stored)) = TOP_NAMES.iter().find(|(ours, _)| *ours == name) {
        return stored.to_string();
    }
    if let Some((layer, rest)) = name
        .strip_prefix("model.layers.")
        .and_then(|r| r.split_once('.'))
    {
        let pairs = LAYER_NAMES.iter().chain(std::iter::once(&DOWN_PROJ));
        if let Some((_, stored)) = pairs.clone().find(|(ours, _)| *ours == rest) {
            return format!("model.transformer.blocks.{layer}.{stored}");
        }
    }
    name.to_string()
}

/// Couplet's name of LLaDA's tensor `stored`; `None` for a name LLaDA's layout does not
/// have (a Qwen2 name in a LLaDA folder is an error, not silently accepted).
pub fn var_name(stored: &str) -> Option<String> {
    if let Some((ours, _)) = TOP_NAMES.iter().find(|(_, s)| *s == stored) {
        return Some(ours.to_string());
    }
    if let Some((layer, rest)) = stored
        .strip_prefix("model.transformer.blocks.")
        .and_then(|r| r.split_once('.'))
    {
        let pairs = LAYER_NAMES.iter().chain(std::iter::once(&DOWN_PROJ));
        if let Some((ours, _)) = pairs.clone().find(|(_, s)| *s == rest) {
            return Some(format!("model.layers.{layer}.{ours}"));
        }
    }
    None
}

/// LLaDA's module name of a LoRA target (its PEFT `target_modules` entry).
pub fn target_module(target: LoraTarget) -> &'static str {
    match target {
        LoraTarget::OProj => "attn_out",
        LoraTarget::GateProj => "ff_proj",
        LoraTarget::DownProj => "ff_out",
        other => other.name(),
    }
}

/// The LoRA target of LLaDA's module `name`.
pub fn parse_target_module(name: &str) -> Option<LoraTarget> {
    LoraTarget::ALL
        .into_iter()
        .find(|&t| target_module(t) == name)
}

/// PEFT's name of an adapter tensor on a LLaDA base, from Couplet's
/// (`base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight` →
/// `base_model.model.model.transformer.blocks.N.q_proj.lora_A.weight`).
pub fn adapter_tensor_name(name: &str) -> String {
    let Some((module, lora)) = name
        .strip_prefix(PEFT_PREFIX)
        .and_then(|rest| rest.split_once(".lora_"))
    else {
        return name.to_string();
    };
    let stored = stored_name(&format!("{module}.weight"));
    let module = stored.strip_suffix(".weight").unwrap_or(&stored);
    format!("{PEFT_PREFIX}{module}.lora_{lora}")
}

/// What PEFT puts before a module path in adapter tensor names.
const PEFT_PREFIX: &str = "base_model.model.";

/// A LLaDA `config.json` (already parsed) as Couplet's config; `path` names the file in
/// errors. Settings the architecture does not have are errors naming the key.
pub fn config_from_json(path: &Path, original: Map<String, Value>) -> Result<DreamConfig> {
    let err = |field: &str, message: String| ModelError::field(path, field, message);
    let int = |key: &str| -> Result<Option<i64>> {
        match original.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| err(key, format!("must be an integer, got {v}"))),
        }
    };
    let float = |key: &str, default: f64| -> Result<f64> {
        match original.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| err(key, format!("must be a number, got {v}"))),
        }
    };
    let required = |key: &str| int(key)?.ok_or_else(|| err(key, "missing".into()));
    check_features(&original).map_err(|(field, message)| err(field, message))?;
    let d_model = required("d_model")?;
    let n_heads = required("n_heads")?;
    let multi_query = original.get("multi_query_attention") == Some(&Value::Bool(true));
    let n_kv_heads = int("n_kv_heads")?.unwrap_or(if multi_query { 1 } else { n_heads });
    let mlp = match int("mlp_hidden_size")? {
        Some(m) => m,
        None => (float("mlp_ratio", 4.0)? * d_model as f64) as i64,
    };
    let vocab = match int("embedding_size")? {
        Some(e) => e,
        None => required("vocab_size")?,
    };
    let mask = int("mask_token_id")?.or((MASK_TOKEN_ID < vocab).then_some(MASK_TOKEN_ID));
    let eos = original
        .get("eos_token_id")
        .filter(|v| !v.is_null())
        .map(|v| serde_json::from_value(v.clone()))
        .transpose()
        .map_err(|e| err("eos_token_id", e.to_string()))?;
    let config = DreamConfig {
        model_type: MODEL_TYPE.into(),
        vocab_size: vocab,
        hidden_size: d_model,
        intermediate_size: mlp,
        num_hidden_layers: required("n_layers")?,
        num_attention_heads: n_heads,
        num_key_value_heads: Some(n_kv_heads),
        head_dim: None,
        rms_norm_eps: float("rms_norm_eps", 1e-5)?,
        rope_theta: float("rope_theta", 10_000.0)?,
        max_position_embeddings: int("max_sequence_length")?.unwrap_or(4096),
        tie_word_embeddings: original.get("weight_tying") == Some(&Value::Bool(true)),
        hidden_act: "silu".into(),
        initializer_range: float("init_std", 0.02)?,
        torch_dtype: original
            .get("torch_dtype")
            .and_then(Value::as_str)
            .map(str::to_string),
        mask_token_id: mask,
        pad_token_id: int("pad_token_id")?,
        bos_token_id: int("bos_token_id")?,
        eos_token_id: eos,
        shift_logits: Some(false),
        attention_bias: Some(original.get("include_qkv_bias") == Some(&Value::Bool(true))),
        layout: Layout::Llada(Box::new(original)),
        extra: Map::new(),
    };
    config.validate(path)?;
    Ok(config)
}

/// The keys whose values would change the architecture away from LLaDA's Llama block.
fn check_features(c: &Map<String, Value>) -> std::result::Result<(), (&'static str, String)> {
    let is = |key: &str, expected: &Value| c.get(key).is_none_or(|v| v.is_null() || v == expected);
    let requirements: [(&'static str, Value, &str); 10] = [
        (
            "block_type",
            json!("llama"),
            "only the \"llama\" block is supported",
        ),
        (
            "activation_type",
            json!("silu"),
            "only \"silu\" (SwiGLU) is supported",
        ),
        (
            "layer_norm_type",
            json!("rms"),
            "only RMS norm is supported",
        ),
        (
            "layer_norm_with_affine",
            json!(true),
            "norms without a weight are not supported",
        ),
        (
            "bias_for_layer_norm",
            json!(false),
            "norm biases are not supported",
        ),
        (
            "include_bias",
            json!(false),
            "biases outside q/k/v are not supported",
        ),
        (
            "rope",
            json!(true),
            "only rotary position embeddings are supported",
        ),
        ("alibi", json!(false), "ALiBi is not supported"),
        (
            "attention_layer_norm",
            json!(false),
            "q/k norms are not supported",
        ),
        (
            "scale_logits",
            json!(false),
            "logit scaling is not supported",
        ),
    ];
    for (key, expected, message) in requirements {
        if !is(key, &expected) {
            return Err((key, format!("{message}, got {}", c[key])));
        }
    }
    if !is("input_emb_norm", &json!(false)) {
        return Err(("input_emb_norm", "embedding norms are not supported".into()));
    }
    if !is("clip_qkv", &Value::Null) {
        return Err(("clip_qkv", "q/k/v clipping is not supported".into()));
    }
    Ok(())
}

/// The `config.json` to write for `config` in LLaDA's layout: the folder's own keys, with
/// the architecture's current values written over them.
pub fn to_json(config: &DreamConfig, original: &Map<String, Value>) -> Value {
    let mut out = original.clone();
    let mut set = |key: &str, value: Value| {
        out.insert(key.to_string(), value);
    };
    set("model_type", json!(MODEL_TYPE));
    set("d_model", json!(config.hidden_size));
    set("n_heads", json!(config.num_attention_heads));
    set("n_kv_heads", json!(config.num_kv_heads()));
    set("n_layers", json!(config.num_hidden_layers));
    set("mlp_hidden_size", json!(config.intermediate_size));
    set("embedding_size", json!(config.vocab_size));
    set("max_sequence_length", json!(config.max_position_embeddings));
    set("rope_theta", json!(config.rope_theta));
    set("rms_norm_eps", json!(config.rms_norm_eps));
    set("weight_tying", json!(config.tie_word_embeddings));
    set("include_qkv_bias", json!(config.attention_bias()));
    set("init_std", json!(config.initializer_range));
    for (key, value) in [
        ("mask_token_id", config.mask_token_id),
        ("pad_token_id", config.pad_token_id),
        ("bos_token_id", config.bos_token_id),
    ] {
        if let Some(id) = value {
            set(key, json!(id));
        }
    }
    if let Some(eos) = &config.eos_token_id {
        set("eos_token_id", json!(eos));
    }
    if let Some(dtype) = &config.torch_dtype {
        set("torch_dtype", json!(dtype));
    }
    let vocab_fits = out
        .get("vocab_size")
        .and_then(Value::as_i64)
        .is_some_and(|v| v <= config.vocab_size);
    if !vocab_fits {
        out.insert("vocab_size".into(), json!(config.vocab_size));
    }
    Value::Object(out)
}

/// `config` turned into a fresh LLaDA folder's: LLaDA-8B's block settings, multi-head
/// attention, no q/k/v bias, unshifted logits (what `init-model --arch llada` writes).
pub fn fresh(mut config: DreamConfig) -> DreamConfig {
    let template = json!({
        "architectures": ["LLaDAModelLM"],
        "model_type": MODEL_TYPE,
        "block_type": "llama",
        "activation_type": "silu",
        "layer_norm_type": "rms",
        "layer_norm_with_affine": true,
        "bias_for_layer_norm": false,
        "include_bias": false,
        "include_qkv_bias": false,
        "rope": true,
        "rope_full_precision": true,
        "alibi": false,
        "attention_layer_norm": false,
        "input_emb_norm": false,
        "scale_logits": false,
        "multi_query_attention": null,
        "vocab_size": config.vocab_size,
        "use_cache": false,
    });
    let Value::Object(template) = template else {
        unreachable!("a JSON object literal")
    };
    config.model_type = MODEL_TYPE.into();
    config.num_key_value_heads = Some(config.num_attention_heads);
    config.attention_bias = Some(false);
    config.shift_logits = Some(false);
    config.extra = Map::new();
    config.layout = Layout::Llada(Box::new(template));
    config
}
