//! `couplet init-model`: a fresh random Dream (or LLaDA-layout) folder for tests and demos.

use std::path::PathBuf;

use anyhow::{Context, Result};
use couplet_model::{init_model_folder, Preset};

/// The checkpoint layout `init-model` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Arch {
    /// Dream / DiffuCoder (Qwen2 layout).
    Dream,
    /// LLaDA-8B's layout.
    Llada,
}

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
    /// Checkpoint layout: dream (Qwen2 names, q/k/v bias, GQA, shifted logits) or llada
    /// (LLaDA-8B's names and config keys, no q/k/v bias, multi-head attention, unshifted).
    #[arg(long, value_enum, default_value_t = Arch::Dream)]
    arch: Arch,
    /// Seed of the random initialisation.
    #[arg(long, default_value_t = 0)]
    seed: i64,
    /// A `config.json` whose architecture to use instead of the preset (its vocabulary
    /// size is replaced by the tokenizer's), e.g. configs/shapes/bench-100m.json.
    #[arg(long)]
    shape: Option<PathBuf>,
    /// Tie lm_head to the embedding.
    #[arg(long)]
    tie_embeddings: bool,
    /// Unshifted logits (`"shift_logits": false`): row i scores token i, LLaDA's
    /// convention, instead of Dream's row i → token i+1.
    #[arg(long)]
    no_shift: bool,
    /// Standard deviation of the weight matrices (default: the preset's 0.02).
    #[arg(long)]
    init_std: Option<f64>,
    /// Standard deviation of the token embedding (default: as the other matrices); 1 is
    /// PyTorch's `nn.Embedding` default, which the plain-PyTorch demo probes use.
    #[arg(long)]
    embedding_std: Option<f64>,
}

pub fn run(args: Args) -> Result<()> {
    let tokenizer = couplet_model::tokenizer::load_tokenizer_file(&args.tokenizer)?;
    let vocab = tokenizer.get_vocab_size(true);
    let mut config = match &args.shape {
        Some(path) => {
            let mut shape = couplet_model::DreamConfig::from_file(path)?;
            shape.vocab_size = vocab as i64;
            shape.mask_token_id = None;
            shape.torch_dtype = Some("float32".into());
            shape.tie_word_embeddings |= args.tie_embeddings;
            shape
        }
        None => args.preset.config(vocab),
    };
    config.tie_word_embeddings |= args.tie_embeddings;
    if args.no_shift {
        config.shift_logits = Some(false);
    }
    if let Some(std) = args.init_std {
        config.initializer_range = std;
    }
    if args.arch == Arch::Llada {
        config = couplet_model::llada::fresh(config);
    }
    let mut model = init_model_folder(config, &args.tokenizer, &args.out, args.seed)
        .with_context(|| format!("writing model folder {}", args.out.display()))?;
    if let Some(std) = args.embedding_std {
        model = rescale_embedding(&args.out, std, args.seed)?;
    }
    println!(
        "wrote {} ({} parameters, vocab {})",
        args.out.display(),
        model.num_parameters(),
        model.config().vocab_size
    );
    Ok(())
}

/// Redraws the token embedding of the folder at `dir` from Normal(0, std) (seeded) and
/// saves the folder again.
fn rescale_embedding(
    dir: &std::path::Path,
    std: f64,
    seed: i64,
) -> Result<couplet_model::DreamModel> {
    let model = couplet_model::load_model(dir, couplet_model::LoadOptions::default())?;
    couplet_model::random::with_torch_seed(seed.wrapping_add(1), || {
        tch::no_grad(|| {
            for (name, mut var) in model.var_store().variables() {
                if name == "model.embed_tokens.weight" {
                    let fresh =
                        tch::Tensor::randn(var.size(), (tch::Kind::Float, var.device())) * std;
                    var.copy_(&fresh);
                }
            }
        })
    });
    couplet_model::save_model(&model, dir, &couplet_model::SaveOptions::default())?;
    Ok(model)
}
