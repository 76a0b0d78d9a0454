//! `couplet` with no arguments: the embedded default job.
//!
//! For now it makes (once) a tiny random Dream model with the bundled CPU tokenizer under
//! `.cache/demo/tiny-model` and decodes two chat prompts with the entropy decoder, so a new
//! user sees the whole model → tokenizer → diffusion-decoding path run end to end.

use std::path::Path;

use anyhow::{bail, Result};
use couplet_model::{init_model_folder, Preset};

pub fn run() -> Result<()> {
    let tokenizer = Path::new("data/tokenizer-cpu/tokenizer.json");
    if !tokenizer.exists() {
        bail!(
            "{} not found: run `couplet` from the repository root",
            tokenizer.display()
        );
    }
    let model = Path::new(".cache/demo/tiny-model");
    if !model.join("config.json").exists() {
        let vocab = couplet_model::tokenizer::load_tokenizer_file(tokenizer)?.get_vocab_size(true);
        init_model_folder(Preset::Tiny.config(vocab), tokenizer, model, 0)?;
        eprintln!(
            "initialised a tiny random Dream model in {}",
            model.display()
        );
    }
    super::generate::run(super::generate::Args {
        model: model.to_path_buf(),
        prompt: vec![
            "Write a function that returns the square of a number.".into(),
            "Reverse a string in Python.".into(),
        ],
        prompts: None,
        chat: true,
        system: couplet_model::tokenizer::DEFAULT_SYSTEM_PROMPT.into(),
        steps: 32,
        max_new_tokens: 32,
        alg: "entropy".into(),
        temperature: 0.0,
        top_p: None,
        top_k: None,
        alg_temp: 0.0,
        block_length: None,
        remasking: "low_confidence".into(),
        samples: 1,
        batch_size: 16,
        seed: 0,
        max_prompt_length: None,
        device: "cpu".into(),
        dtype: "f32".into(),
        json: false,
        out: None,
    })
}
