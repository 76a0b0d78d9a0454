//! `couplet merge-lora`: folds a PEFT adapter into its base model and writes a full
//! Hugging Face folder (what `generate`/`eval` and other tools load without `--adapter`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use couplet_model::{save_model, DeviceSpec, Precision, SaveOptions};

#[derive(clap::Args)]
pub struct Args {
    /// The base model folder the adapter was trained on.
    #[arg(long)]
    base: PathBuf,
    /// The adapter folder (adapter_config.json + adapter_model.safetensors).
    #[arg(long)]
    adapter: PathBuf,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    /// Storage dtype of the merged weights: f32, or bf16 (the base's own is kept by default).
    #[arg(long)]
    dtype: Option<Precision>,
}

pub fn run(args: Args) -> Result<()> {
    // Merge in f32 so that s·B·A is added before any rounding.
    let mut loaded = super::load_with_adapter(
        &args.base,
        Some(&args.adapter),
        DeviceSpec::Cpu,
        Precision::F32,
    )?;
    let base_kind = couplet_model::DreamConfig::from_file(&args.base.join("config.json"))
        .ok()
        .and_then(|c| c.torch_dtype)
        .and_then(|name| couplet_model::dtype::kind_from_name(&name));
    loaded.model.merge_lora();
    let options = SaveOptions {
        kind: args.dtype.map(Precision::kind).or(base_kind),
        assets_from: Some(loaded.dir.clone()),
        ..Default::default()
    };
    save_model(&loaded.model, &args.out, &options)
        .with_context(|| format!("writing the merged model {}", args.out.display()))?;
    println!(
        "wrote {} ({} + {})",
        args.out.display(),
        args.base.display(),
        args.adapter.display()
    );
    Ok(())
}
