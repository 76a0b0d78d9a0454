//! The model every stage shares: the Dream masked-diffusion transformer on libtorch,
//! Hugging Face checkpoint folders (config, safetensors, tokenizer) and the chat template.
//!
//! `rollout` decodes with [`DreamModel`], `trainer` scores and updates it; both load and
//! save it through [`hf_folder`] (a [`LoadedModel`] is a folder's model with its tokenizer). This crate knows nothing of decoding, rewards or
//! training: it turns token ids into hidden states and logits, and folders into models.
//!
//! Conventions (SPEC section 1): logit row i predicts token i+1 (shifted) unless the
//! checkpoint's config says `"shift_logits": false`; batches are left-padded with an
//! attention mask; special-token ids always come from the checkpoint folder.
#![deny(missing_docs)]

pub mod adapter_folder;
pub mod chat_template;
pub mod config;
pub mod device;
pub mod dream;
pub mod dtype;
pub mod error;
mod fsutil;
pub mod hf_folder;
pub mod init;
pub mod kv_cache;
pub mod llada;
pub mod lora;
pub mod names;
pub mod random;
pub mod tokenizer;

pub use adapter_folder::{is_adapter_folder, load_adapter, save_adapter};
pub use chat_template::{ChatTemplate, Message};
pub use config::{DreamConfig, GenerationConfig, Layout, TokenIds};
pub use device::{cuda_devices, DeviceSpec, DeviceUnavailable, Precision};
pub use dream::{DreamModel, Init};
pub use error::{ModelError, Result};
pub use hf_folder::{load_model, save_model, LoadOptions, SaveOptions};
pub use init::{init_model_folder, Preset};
pub use kv_cache::KvCache;
pub use lora::{LoraConfig, LoraInit, LoraTarget};
pub use tokenizer::{chat_prompt, PromptBatch, SpecialTokens, TextTokenizer};

/// A Hugging Face model folder, loaded: the model and its tokenizer, ready for decoding or
/// training (a *run* checkpoint, with optimizer state, is the trainer's business).
#[derive(Debug)]
pub struct LoadedModel {
    /// The transformer.
    pub model: DreamModel,
    /// The folder's tokenizer, with its special-token ids.
    pub tokenizer: TextTokenizer,
    /// The folder it came from (its assets are copied when the model is saved).
    pub dir: std::path::PathBuf,
}

impl LoadedModel {
    /// Loads the model and tokenizer of the folder `dir`.
    pub fn load(dir: &std::path::Path, options: LoadOptions) -> Result<Self> {
        let model = load_model(dir, options)?;
        let tokenizer = TextTokenizer::from_model_dir(dir, model.config())?;
        Ok(LoadedModel {
            model,
            tokenizer,
            dir: dir.to_path_buf(),
        })
    }
}
