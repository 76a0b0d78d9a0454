//! The model every stage shares: the Dream masked-diffusion transformer on libtorch,
//! Hugging Face checkpoint folders (config, safetensors, tokenizer) and the chat template.
//!
//! `rollout` decodes with [`DreamModel`], `trainer` scores and updates it; both load and
//! save it through [`checkpoint`]. This crate knows nothing of decoding, rewards or
//! training: it turns token ids into hidden states and logits, and folders into models.
//!
//! Conventions (SPEC section 1): logit row i predicts token i+1 (shifted) unless the
//! checkpoint's config says `"shift_logits": false`; batches are left-padded with an
//! attention mask; special-token ids always come from the checkpoint folder.

pub mod checkpoint;
pub mod config;
pub mod dream;
pub mod dtype;
pub mod error;
mod fsutil;
pub mod init;
pub mod random;
pub mod tokenizer;

pub use checkpoint::{load_model, save_model, LoadOptions, SaveOptions};
pub use config::{DreamConfig, GenerationConfig, TokenIds};
pub use dream::{DreamModel, Init};
pub use error::{ModelError, Result};
pub use init::{init_model_folder, Preset};
pub use tokenizer::{chat_prompt, PromptBatch, SpecialTokens, TextTokenizer};

/// A loaded model folder: the model and its tokenizer, ready for decoding or training.
#[derive(Debug)]
pub struct Checkpoint {
    pub model: DreamModel,
    pub tokenizer: TextTokenizer,
    pub dir: std::path::PathBuf,
}

impl Checkpoint {
    pub fn load(dir: &std::path::Path, options: LoadOptions) -> Result<Self> {
        let model = load_model(dir, options)?;
        let tokenizer = TextTokenizer::from_model_dir(dir, model.config())?;
        Ok(Checkpoint {
            model,
            tokenizer,
            dir: dir.to_path_buf(),
        })
    }
}
