//! Tokenizer, special tokens and the Qwen chat template (SPEC sections 1 and 8).
//!
//! Special-token ids are resolved from the model folder (config.json, then
//! generation_config.json, then the tokenizer's own vocabulary), never hard-coded: Dream
//! uses 151666 for `<|mask|>`, our CPU demo tokenizer uses something else entirely.

use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};
use tokenizers::{AddedToken, Tokenizer};

use crate::chat_template::ChatTemplate;
use crate::config::{DreamConfig, GenerationConfig};
use crate::error::{ModelError, Result};

/// Dream's mask token.
pub const MASK_TOKEN: &str = "<|mask|>";
/// Dream's beginning-of-text token.
pub const BEGIN_OF_TEXT_TOKEN: &str = "<|beginoftext|>";
/// Qwen's end-of-text token.
pub const END_OF_TEXT_TOKEN: &str = "<|endoftext|>";
/// Start of a chat turn.
pub const IM_START_TOKEN: &str = "<|im_start|>";
/// End of a chat turn (also ends a completion).
pub const IM_END_TOKEN: &str = "<|im_end|>";
/// End of a chat turn in LLaMA-3-style templates (LLaDA-8B-Instruct).
pub const EOT_TOKEN: &str = "<|eot_id|>";
/// System prompt of the chat template when none is given.
pub const DEFAULT_SYSTEM_PROMPT: &str = "You are a helpful assistant.";

/// Ids the decoders and the trainer need.
#[derive(Debug, Clone, PartialEq)]
pub struct SpecialTokens {
    /// The diffusion [MASK] token.
    pub mask: i64,
    /// Left padding of batched prompts.
    pub pad: i64,
    /// End-of-sequence ids from the generation config (or config / tokenizer).
    pub eos: Vec<i64>,
    /// Chat turn delimiters, when the tokenizer has them.
    pub im_start: Option<i64>,
    /// End of a chat turn, when the vocabulary has one: Qwen's `<|im_end|>`, else
    /// LLaMA-3's / LLaDA's `<|eot_id|>`.
    pub im_end: Option<i64>,
}

impl SpecialTokens {
    /// Ids that end a completion: eos and, for chat models, the end of turn (SPEC 2.3).
    pub fn end_of_completion(&self) -> Vec<i64> {
        let mut ids = self.eos.clone();
        if let Some(id) = self.im_end {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        ids
    }
}

/// A `tokenizer.json` plus the model folder's special tokens.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    special: SpecialTokens,
    path: PathBuf,
    chat: ChatTemplate,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("path", &self.path)
            .field("special", &self.special)
            .finish()
    }
}

/// Loads a `tokenizer.json` file.
pub fn load_tokenizer_file(path: &Path) -> Result<Tokenizer> {
    if !path.exists() {
        return Err(ModelError::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "tokenizer.json not found"),
        ));
    }
    Tokenizer::from_file(path).map_err(|e| ModelError::Tokenizer {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Adds Dream's `<|beginoftext|>` and `<|mask|>` as special tokens when missing; on the
/// Qwen2.5 tokenizer they become 151665 and 151666, Dream's ids. Returns how many were added.
pub fn add_dream_tokens(tokenizer: &mut Tokenizer) -> usize {
    let missing: Vec<AddedToken> = [BEGIN_OF_TEXT_TOKEN, MASK_TOKEN]
        .iter()
        .filter(|t| tokenizer.token_to_id(t).is_none())
        .map(|t| AddedToken::from(*t, true))
        .collect();
    if missing.is_empty() {
        0
    } else {
        tokenizer.add_special_tokens(&missing)
    }
}

impl TextTokenizer {
    /// Loads `dir/tokenizer.json`, resolves special tokens from the folder's configs and
    /// reads its chat template (built-in Qwen when it has none).
    pub fn from_model_dir(dir: &Path, config: &DreamConfig) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        let inner = load_tokenizer_file(&path)?;
        let generation = GenerationConfig::from_dir(dir)?.unwrap_or_default();
        let special = resolve_special_tokens(&inner, config, &generation, dir)?;
        Ok(TextTokenizer {
            inner,
            special,
            path,
            chat: ChatTemplate::from_model_dir(dir)?,
        })
    }

    /// `system` and `user` wrapped in the model's chat template, ending with the
    /// assistant's prefix.
    pub fn chat_prompt(&self, system: &str, user: &str) -> Result<String> {
        self.chat.prompt(system, user)
    }

    /// The model's chat template.
    pub fn chat_template(&self) -> &ChatTemplate {
        &self.chat
    }

    /// The special-token ids of the folder.
    pub fn special(&self) -> &SpecialTokens {
        &self.special
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The id of `token`, if the vocabulary has it.
    pub fn token_to_id(&self, token: &str) -> Option<i64> {
        self.inner.token_to_id(token).map(i64::from)
    }

    /// Token ids of `text`; special-token strings in the text map to their ids, and no
    /// BOS/EOS is added (as the reference tokenises prompts).
    pub fn encode(&self, text: &str) -> Result<Vec<i64>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| ModelError::Tokenizer {
                path: self.path.clone(),
                message: e.to_string(),
            })?;
        Ok(enc.get_ids().iter().map(|&i| i as i64).collect())
    }

    /// Text of `ids` with special tokens (mask, pad, chat markers) skipped.
    pub fn decode(&self, ids: &[i64]) -> Result<String> {
        let ids: Vec<u32> = ids.iter().filter(|&&i| i >= 0).map(|&i| i as u32).collect();
        self.inner
            .decode(&ids, true)
            .map_err(|e| ModelError::Tokenizer {
                path: self.path.clone(),
                message: e.to_string(),
            })
    }

    /// Tokenises and left-pads prompts. With `max_len`, each prompt keeps its **last**
    /// `max_len` tokens, as the reference's `prompt_ids[:, -max_prompt_length:]` does.
    pub fn encode_prompts(
        &self,
        prompts: &[String],
        max_len: Option<usize>,
    ) -> Result<PromptBatch> {
        let mut rows = Vec::with_capacity(prompts.len());
        let mut truncated = 0;
        for prompt in prompts {
            let mut ids = self.encode(prompt)?;
            if let Some(max) = max_len {
                if ids.len() > max {
                    ids.drain(..ids.len() - max);
                    truncated += 1;
                }
            }
            rows.push(ids);
        }
        Ok(PromptBatch::left_padded(&rows, self.special.pad, truncated))
    }
}

/// Left-padded prompt ids with their attention mask.
#[derive(Debug)]
pub struct PromptBatch {
    /// `[B, P]` int64.
    pub ids: Tensor,
    /// `[B, P]` int64, 1 for real tokens, 0 for padding.
    pub attention_mask: Tensor,
    /// Real (unpadded) length of each prompt.
    pub lengths: Vec<usize>,
    /// How many prompts lost tokens to `max_len`.
    pub truncated: usize,
}

impl PromptBatch {
    /// Left-pads `rows` with `pad` to the longest (`truncated`: rows that were cut).
    pub fn left_padded(rows: &[Vec<i64>], pad: i64, truncated: usize) -> Self {
        let width = rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(rows.len() * width);
        let mut mask = Vec::with_capacity(rows.len() * width);
        for row in rows {
            let pad_len = width - row.len();
            ids.extend(std::iter::repeat_n(pad, pad_len).chain(row.iter().copied()));
            mask.extend(
                std::iter::repeat_n(0i64, pad_len).chain(std::iter::repeat_n(1, row.len())),
            );
        }
        let shape = [rows.len() as i64, width as i64];
        PromptBatch {
            ids: Tensor::from_slice(&ids).view(shape),
            attention_mask: Tensor::from_slice(&mask).view(shape),
            lengths: rows.iter().map(Vec::len).collect(),
            truncated,
        }
    }

    /// The batch on `device`.
    pub fn to_device(&self, device: Device) -> PromptBatch {
        PromptBatch {
            ids: self.ids.to_device(device),
            attention_mask: self.attention_mask.to_device(device).to_kind(Kind::Int64),
            lengths: self.lengths.clone(),
            truncated: self.truncated,
        }
    }
}

/// The built-in Qwen chat template for one system + one user turn, ending with the
/// assistant prefix (SPEC section 8), byte for byte; models use
/// [`TextTokenizer::chat_prompt`], which renders their folder's own template when it has one.
pub fn chat_prompt(system: &str, user: &str) -> String {
    format!(
        "{IM_START_TOKEN}system\n{system}{IM_END_TOKEN}\n{IM_START_TOKEN}user\n{user}{IM_END_TOKEN}\n{IM_START_TOKEN}assistant\n"
    )
}

fn resolve_special_tokens(
    tokenizer: &Tokenizer,
    config: &DreamConfig,
    generation: &GenerationConfig,
    dir: &Path,
) -> Result<SpecialTokens> {
    let lookup = |t: &str| tokenizer.token_to_id(t).map(i64::from);
    let config_path = dir.join("config.json");
    let mask = config
        .mask_token_id
        .or(generation.mask_token_id)
        .or_else(|| lookup(MASK_TOKEN))
        .ok_or_else(|| {
            ModelError::field(
                &config_path,
                "mask_token_id",
                format!("no mask token: set mask_token_id or add {MASK_TOKEN} to tokenizer.json"),
            )
        })?;
    let pad = config
        .pad_token_id
        .or(generation.pad_token_id)
        .or_else(|| lookup(END_OF_TEXT_TOKEN))
        .ok_or_else(|| {
            ModelError::field(
                &config_path,
                "pad_token_id",
                format!(
                    "no pad token: set pad_token_id or add {END_OF_TEXT_TOKEN} to tokenizer.json"
                ),
            )
        })?;
    let eos = generation
        .eos_token_id
        .as_ref()
        .or(config.eos_token_id.as_ref())
        .map(|ids| ids.to_vec())
        .or_else(|| lookup(END_OF_TEXT_TOKEN).map(|id| vec![id]))
        .ok_or_else(|| {
            ModelError::field(
                &config_path,
                "eos_token_id",
                "no end-of-sequence token in config.json, generation_config.json or tokenizer.json",
            )
        })?;
    let special = SpecialTokens {
        mask,
        pad,
        eos,
        im_start: lookup(IM_START_TOKEN),
        im_end: lookup(IM_END_TOKEN).or_else(|| lookup(EOT_TOKEN)),
    };
    let vocab = config.vocab_size;
    let tokenizer_vocab = tokenizer.get_vocab_size(true) as i64;
    if tokenizer_vocab > vocab {
        return Err(ModelError::field(
            &config_path,
            "vocab_size",
            format!("{vocab} is smaller than the tokenizer's {tokenizer_vocab} tokens"),
        ));
    }
    let mut named: Vec<(&str, i64)> = vec![
        ("mask_token_id", special.mask),
        ("pad_token_id", special.pad),
    ];
    named.extend(special.eos.iter().map(|&id| ("eos_token_id", id)));
    for (field, id) in named {
        if id < 0 || id >= vocab {
            return Err(ModelError::field(
                &config_path,
                field,
                format!("token id {id} is outside the vocabulary (size {vocab})"),
            ));
        }
    }
    Ok(special)
}
