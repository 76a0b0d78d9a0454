//! Fresh, randomly initialised Dream folders for tests and demos (`couplet init-model`).
//! No pretrained weights are reachable from this project's machines, so everything that
//! needs a model makes one here, deterministically from a seed.

use std::path::Path;
use std::str::FromStr;

use serde_json::Map;
use tch::{Device, Kind};

use crate::config::{DreamConfig, GenerationConfig, TokenIds};
use crate::dream::{DreamModel, Init};
use crate::error::{ModelError, Result};
use crate::hf_folder::{save_model, write_generation_config, SaveOptions};
use crate::tokenizer::{
    add_dream_tokens, load_tokenizer_file, END_OF_TEXT_TOKEN, IM_END_TOKEN, MASK_TOKEN,
};

/// Size presets. Both keep Dream's shape traits: GQA (kv heads < heads), q/k/v bias.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// ~0.1M trunk parameters: unit tests and parity checks.
    Tiny,
    /// ~4M trunk parameters: the CPU demo.
    Small,
}

impl FromStr for Preset {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "tiny" => Ok(Preset::Tiny),
            "small" => Ok(Preset::Small),
            other => Err(format!("unknown preset {other:?} (expected tiny or small)")),
        }
    }
}

impl Preset {
    /// The architecture for a tokenizer of `vocab_size` tokens (rounded up to a multiple of
    /// 64, as released checkpoints pad their embeddings).
    pub fn config(self, vocab_size: usize) -> DreamConfig {
        let (hidden, layers, heads, kv_heads, mlp) = match self {
            Preset::Tiny => (64, 2, 4, 2, 176),
            Preset::Small => (256, 6, 8, 2, 704),
        };
        DreamConfig {
            model_type: "Dream".into(),
            vocab_size: (vocab_size as i64 + 63) / 64 * 64,
            hidden_size: hidden,
            intermediate_size: mlp,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            num_key_value_heads: Some(kv_heads),
            head_dim: None,
            rms_norm_eps: 1e-6,
            rope_theta: 10_000.0,
            max_position_embeddings: 4096,
            tie_word_embeddings: false,
            hidden_act: "silu".into(),
            initializer_range: 0.02,
            torch_dtype: Some("float32".into()),
            mask_token_id: None,
            pad_token_id: None,
            bos_token_id: None,
            eos_token_id: None,
            shift_logits: None,
            attention_bias: None,
            layout: crate::config::Layout::Qwen2,
            extra: Map::new(),
        }
    }
}

/// Writes a randomly initialised model folder at `out` using the tokenizer at
/// `tokenizer_path` (Dream's mask tokens are added when missing). The weights are a
/// function of `seed` (drawn under [`crate::random::with_torch_seed`]).
pub fn init_model_folder(
    mut config: DreamConfig,
    tokenizer_path: &Path,
    out: &Path,
    seed: i64,
) -> Result<DreamModel> {
    let mut tokenizer = load_tokenizer_file(tokenizer_path)?;
    add_dream_tokens(&mut tokenizer);
    let id = |t: &str| {
        tokenizer
            .token_to_id(t)
            .map(i64::from)
            .ok_or_else(|| ModelError::Tokenizer {
                path: tokenizer_path.to_path_buf(),
                message: format!("the tokenizer has no {t} token"),
            })
    };
    let eos = id(END_OF_TEXT_TOKEN)?;
    let mask = id(MASK_TOKEN)?;
    config.mask_token_id = Some(mask);
    config.pad_token_id = Some(eos);
    config.bos_token_id = Some(eos);
    config.eos_token_id = Some(TokenIds::One(eos));
    let tokenizer_vocab = tokenizer.get_vocab_size(true) as i64;
    if config.vocab_size < tokenizer_vocab {
        config.vocab_size = (tokenizer_vocab + 63) / 64 * 64;
    }
    config.validate(&out.join("config.json"))?;

    std::fs::create_dir_all(out).map_err(|e| ModelError::io(out, e))?;
    let tok_out = out.join("tokenizer.json");
    tokenizer
        .save(&tok_out, false)
        .map_err(|e| ModelError::Tokenizer {
            path: tok_out.clone(),
            message: e.to_string(),
        })?;
    let mut generation = GenerationConfig {
        bos_token_id: Some(eos),
        eos_token_id: Some(TokenIds::One(eos)),
        pad_token_id: Some(eos),
        mask_token_id: Some(mask),
        extra: Map::new(),
    };
    if let Some(im_end) = tokenizer.token_to_id(IM_END_TOKEN) {
        generation
            .extra
            .insert("chat_end_token_id".into(), (im_end as i64).into());
    }
    write_generation_config(out, &generation)?;

    let model = crate::random::with_torch_seed(seed, || {
        DreamModel::new(&config, Device::Cpu, Kind::Float, Init::Random)
    });
    save_model(&model, out, &SaveOptions::default())?;
    Ok(model)
}
