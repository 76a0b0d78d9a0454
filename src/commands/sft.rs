//! `couplet sft`: supervised fine-tuning with the masked-diffusion objective.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use couplet_model::{save_model, SaveOptions};
use couplet_reward::{load_rows, LoadOptions as RowOptions};
use couplet_trainer::{
    build_example, lr_factor, sft_step, AdamW, AdamWConfig, Schedule, SftSettings,
};

#[derive(clap::Args)]
pub struct Args {
    /// Starting model folder, training checkpoint or run directory.
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
    /// Peak learning rate.
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// constant, linear, cosine or cosine_with_min_lr (floor 0.1 · lr).
    #[arg(long, default_value = "cosine")]
    schedule: String,
    #[arg(long, default_value_t = 0)]
    warmup_steps: u64,
    /// Also write the model to OUT/checkpoint-<step> every N steps (0: only at the end).
    #[arg(long, default_value_t = 0)]
    save_every: u64,
    /// Lower bound of the mask ratio t ~ U(eps, 1).
    #[arg(long, default_value_t = 1e-3)]
    eps: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value = couplet_model::tokenizer::DEFAULT_SYSTEM_PROMPT)]
    system: String,
    #[arg(long, default_value_t = 200)]
    max_prompt_length: usize,
    /// Pad answers with end tokens to this many tokens — the decoding length you will
    /// generate with (`max_new_tokens`), so the model learns to fill the canvas past the
    /// answer with end tokens (0: no padding).
    #[arg(long, default_value_t = 256)]
    answer_length: usize,
    /// Weight of a padding position relative to an answer token in the loss (1: the plain
    /// masked-diffusion bound; lower keeps the gradient on the solution's tokens).
    #[arg(long, default_value_t = 1.0)]
    pad_weight: f64,
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
    if !(args.pad_weight > 0.0 && args.pad_weight <= 1.0) {
        bail!("--pad-weight must be in (0, 1], got {}", args.pad_weight);
    }
    let Some(schedule) = Schedule::parse(&args.schedule, 0.1) else {
        bail!(
            "--schedule: expected constant, linear, cosine or cosine_with_min_lr, got {:?}",
            args.schedule
        );
    };
    let ckpt = super::load_checkpoint(&args.model, &args.device, "f32")?;
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
            args.answer_length,
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
        pad_weight: args.pad_weight,
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
    let save_options = SaveOptions {
        assets_from: Some(args.model.clone()),
        ..Default::default()
    };
    let n = examples.len();
    let mut recent = Vec::new();
    for step in 0..args.steps {
        // Examples in a fixed cycle through the file.
        let first = (step as usize * args.batch_size) % n;
        let batch: Vec<_> = (0..args.batch_size.min(n))
            .map(|i| examples[(first + i) % n].clone())
            .collect();
        let lr = args.lr * lr_factor(schedule, step, args.steps, args.warmup_steps);
        let loss = sft_step(
            &ckpt.model,
            &mut optimizer,
            lr,
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
            eprintln!(
                "sft step {:>5}/{}  loss {mean:.4}  lr {lr:.2e}",
                step + 1,
                args.steps
            );
            recent.clear();
        }
        if args.save_every > 0 && (step + 1) % args.save_every == 0 && step + 1 < args.steps {
            let dir = args.out.join(format!("checkpoint-{}", step + 1));
            save_model(&ckpt.model, &dir, &save_options)
                .with_context(|| format!("saving {}", dir.display()))?;
        }
    }
    save_model(&ckpt.model, &args.out, &save_options)
        .with_context(|| format!("saving {}", args.out.display()))?;
    eprintln!("wrote {}", args.out.display());
    Ok(())
}
