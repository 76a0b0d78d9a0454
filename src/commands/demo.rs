//! `couplet` with no arguments: a first look at diffusion decoding.
//!
//! It decodes two of the bundled tasks with the demo model (`data/demo-model`, built by
//! `scripts/make-demo-model.sh` during setup) — or, before that exists, with a tiny random
//! model made once under `.cache/demo/tiny-model` — so a new user sees the whole model →
//! tokenizer → diffusion-decoding path run end to end. `couplet train` is the next step.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use couplet_model::{init_model_folder, Preset};

use super::decode_args::DecodeArgs;

pub fn run() -> Result<()> {
    let tokenizer = Path::new("data/tokenizer-cpu/tokenizer.json");
    if !tokenizer.exists() {
        bail!(
            "{} not found: run `couplet` from the repository root",
            tokenizer.display()
        );
    }
    let demo = Path::new("data/demo-model");
    let model: PathBuf = if demo.join("config.json").exists() {
        demo.to_path_buf()
    } else {
        let model = Path::new(".cache/demo/tiny-model");
        if !model.join("config.json").exists() {
            let vocab =
                couplet_model::tokenizer::load_tokenizer_file(tokenizer)?.get_vocab_size(true);
            init_model_folder(Preset::Tiny.config(vocab), tokenizer, model, 0)?;
            eprintln!(
                "initialised a tiny random Dream model in {} (scripts/setup.sh builds the trained demo model)",
                model.display()
            );
        }
        model.to_path_buf()
    };
    super::generate::run(super::generate::Args {
        model,
        prompt: vec![
            "Write a Python function `triple_plus(x)` that returns x multiplied by 3 plus 4."
                .into(),
            "Write a Python function `shout(s)` that returns s in upper case followed by 2 exclamation marks.".into(),
        ],
        prompts: None,
        chat: true,
        system: couplet_model::tokenizer::DEFAULT_SYSTEM_PROMPT.into(),
        decode: DecodeArgs {
            steps: 32,
            max_new_tokens: 48,
            alg: couplet_rollout::DreamAlg::Entropy,
            temperature: 0.0,
            top_p: None,
            top_k: None,
            alg_temp: 0.0,
            block_length: None,
            remasking: couplet_rollout::Remasking::LowConfidence,
            cache: couplet_rollout::CacheMode::None,
            refresh_every: None,
            threshold: None,
            audit_cache: false,
            batch_size: 16,
            seed: 0,
            max_prompt_length: None,
            device: couplet_model::DeviceSpec::Cpu,
            dtype: couplet_model::Precision::F32,
            adapter: None,
        },
        samples: 1,
        json: false,
        out: None,
    })
}
