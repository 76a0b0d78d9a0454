//! `couplet sft`: supervised fine-tuning with the masked-diffusion objective.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use couplet_model::{save_model, Checkpoint, LoadOptions, SaveOptions};
use couplet_reward::{load_rows, LoadOptions as RowOptions};
use couplet_trainer::{build_example, sft_step, AdamW, AdamWConfig, SftSettings};
use tch::Kind;

#[derive(clap::Args)]
pub struct Args {
    /// Starting model folder.
    #[arg(long)]
    model: PathBuf,
    /// AceCoder-format rows with a solution column.
    #[arg(long)]
    data: PathBuf,
    /// Output model folder.
    #[arg(long)]
    out: PathBuf,
    /// Column holding the reference solution.
    #[arg(long, default_value = "solution")]
    solution_column: String,
    #[arg(long, default_value_t = 200)]
    steps: u64,
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Lower bound of the mask ratio t ~ U(eps, 1).
    #[arg(long, default_value_t = 1e-3)]
    eps: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value = couplet_model::tokenizer::DEFAULT_SYSTEM_PROMPT)]
    system: String,
    #[arg(long, default_value_t = 200)]
    max_prompt_length: usize,
    #[arg(long, default_value_t = 10)]
    log_every: u64,
    #[arg(long, default_value = "cpu")]
    device: String,
}

pub fn run(args: Args) -> Result<()> {
    if args.batch_size == 0 || args.steps == 0 {
        bail!("--batch-size and --steps must be at least 1");
    }
    if !(args.lr >= 0.0 && args.lr.is_finite() && args.eps > 0.0 && args.eps < 1.0) {
        bail!("--lr must be ≥ 0 and --eps in (0, 1)");
    }
    let device = super::parse_device(&args.device)?;
    let ckpt = Checkpoint::load(
        &args.model,
        LoadOptions {
            device,
            kind: Some(Kind::Float),
        },
    )
    .with_context(|| format!("loading model {}", args.model.display()))?;
    let (rows, summary) = load_rows(&args.data, &RowOptions::default())?;
    let mut examples = Vec::with_capacity(rows.len());
    for row in &rows {
        let Some(solution) = row
            .extra
            .get(&args.solution_column)
            .and_then(|v| v.as_str())
        else {
            bail!(
                "{}: row {}: field `{}` missing or not a string",
                args.data.display(),
                row.id,
                args.solution_column
            );
        };
        examples.push(build_example(
            &ckpt.tokenizer,
            &args.system,
            &row.question,
            solution,
            args.max_prompt_length,
        )?);
    }
    if examples.is_empty() {
        bail!("{}: no usable rows ({summary})", args.data.display());
    }
    let settings = SftSettings {
        mask_id: ckpt.tokenizer.special().mask,
        pad: ckpt.tokenizer.special().pad,
        eps: args.eps,
        seed: args.seed,
    };
    let params = ckpt.model.var_store().variables().into_iter().collect();
    let mut optimizer = AdamW::new(
        params,
        AdamWConfig {
            lr: args.lr,
            weight_decay: 0.0,
            max_grad_norm: 1.0,
            ..Default::default()
        },
    );
    let n = examples.len();
    let mut recent = Vec::new();
    for step in 0..args.steps {
        // Examples in a fixed cycle through the file.
        let first = (step as usize * args.batch_size) % n;
        let batch: Vec<_> = (0..args.batch_size.min(n))
            .map(|i| examples[(first + i) % n].clone())
            .collect();
        let loss = sft_step(
            &ckpt.model,
            &mut optimizer,
            args.lr,
            &settings,
            &batch,
            step,
            first as u64,
        );
        if !loss.is_finite() {
            bail!("non-finite loss at step {step}; lower --lr");
        }
        recent.push(loss);
        if (step + 1) % args.log_every == 0 || step + 1 == args.steps {
            let mean = recent.iter().sum::<f64>() / recent.len() as f64;
            eprintln!("sft step {:>5}/{}  loss {mean:.4}", step + 1, args.steps);
            recent.clear();
        }
    }
    save_model(
        &ckpt.model,
        &args.out,
        &SaveOptions {
            assets_from: Some(args.model.clone()),
            ..Default::default()
        },
    )
    .with_context(|| format!("saving {}", args.out.display()))?;
    eprintln!("wrote {}", args.out.display());
    Ok(())
}
