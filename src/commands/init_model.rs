//! `couplet init-model`: a fresh random Dream folder for tests and demos.

use std::path::PathBuf;

use anyhow::{Context, Result};
use couplet_model::{init_model_folder, Preset};

#[derive(clap::Args)]
pub struct Args {
    /// Size preset: tiny (unit tests) or small (CPU demo).
    #[arg(long, default_value = "tiny")]
    preset: Preset,
    /// A tokenizer.json (Dream's <|beginoftext|> and <|mask|> are added when missing).
    #[arg(long)]
    tokenizer: PathBuf,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    /// Seed of the random initialisation.
    #[arg(long, default_value_t = 0)]
    seed: i64,
    /// Tie lm_head to the embedding.
    #[arg(long)]
    tie_embeddings: bool,
    /// Unshifted logits (`"shift_logits": false`): row i scores token i, LLaDA's
    /// convention, instead of Dream's row i → token i+1.
    #[arg(long)]
    no_shift: bool,
}

pub fn run(args: Args) -> Result<()> {
    let tokenizer = couplet_model::tokenizer::load_tokenizer_file(&args.tokenizer)?;
    let mut config = args.preset.config(tokenizer.get_vocab_size(true));
    config.tie_word_embeddings = args.tie_embeddings;
    if args.no_shift {
        config.shift_logits = Some(false);
    }
    let model = init_model_folder(config, &args.tokenizer, &args.out, args.seed)
        .with_context(|| format!("writing model folder {}", args.out.display()))?;
    println!(
        "wrote {} ({} parameters, vocab {})",
        args.out.display(),
        model.num_parameters(),
        model.config().vocab_size
    );
    Ok(())
}
