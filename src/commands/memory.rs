//! `couplet memory`: the per-rank memory budget of a training config, by component, from
//! the model's `config.json` (no weights are read).

use std::path::PathBuf;

use anyhow::{Context, Result};
use couplet_model::DreamConfig;
use couplet_trainer::memory::{plan, PlanInput};
use couplet_trainer::TrainConfig;

#[derive(clap::Args)]
pub struct Args {
    /// TOML training config.
    #[arg(long)]
    config: PathBuf,
    /// Override a key: --set distributed.zero=2 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// The model's `config.json` (default: `model.path`/config.json of the config).
    #[arg(long)]
    model_config: Option<PathBuf>,
    /// Ranks of the run (default 1).
    #[arg(long)]
    world_size: Option<usize>,
    /// Memory per device, to say whether the plan fits.
    #[arg(long)]
    gpu_memory_gb: Option<f64>,
    /// Print the plan as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let config = TrainConfig::load(&args.config, &args.overrides)?;
    let model_config = args
        .model_config
        .clone()
        .unwrap_or_else(|| config.model.path.join("config.json"));
    let model = DreamConfig::from_file(&model_config).with_context(|| {
        format!(
            "reading the model architecture from {} (pass --model-config FILE when the model folder is elsewhere)",
            model_config.display()
        )
    })?;
    let world = args.world_size.unwrap_or(1);
    let input = PlanInput::from_config(&config, model, world);
    let plan = plan(&input);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
        return Ok(());
    }
    println!(
        "{} on {world} rank(s): model.dtype = {:?}, distributed.zero = {}, micro-batch {} × {} versions × {} tokens, checkpointing {}",
        args.config.display(),
        config.model.dtype,
        u8::from(input.zero),
        input.micro_batch,
        input.versions,
        input.sequence,
        if input.checkpointing { "on" } else { "off" },
    );
    print!("{}", plan.render(args.gpu_memory_gb));
    Ok(())
}
