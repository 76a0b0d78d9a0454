//! `couplet sft`: supervised fine-tuning with the masked-diffusion objective.

use std::path::PathBuf;

use std::time::Instant;

use super::summary::{peak_resident_mib, reset_peak_resident, start_end, RunSummary};
use anyhow::{bail, Context, Result};
use couplet_model::{save_model, DeviceSpec, Precision, SaveOptions};
use couplet_reward::{load_rows, LoadOptions as RowOptions};
use couplet_trainer::{
    examples_from_rows, run_sft, ExampleShape, ScheduleKind, SftEvent, SftPlan, SftSettings,
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
    schedule: ScheduleKind,
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
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "cpu")]
    device: DeviceSpec,
}

pub fn run(args: Args) -> Result<()> {
    if args.batch_size == 0 || args.steps == 0 {
        usage!("--batch-size and --steps must be at least 1");
    }
    if !(args.lr >= 0.0 && args.lr.is_finite() && args.eps > 0.0 && args.eps < 1.0) {
        usage!("--lr must be ≥ 0 and --eps in (0, 1)");
    }
    if !(args.pad_weight > 0.0 && args.pad_weight <= 1.0) {
        usage!("--pad-weight must be in (0, 1], got {}", args.pad_weight);
    }
    let started = Instant::now();
    let loaded = super::load_model(&args.model, args.device, Precision::F32)?;
    let (rows, summary) = load_rows(&args.data, &RowOptions::default())?;
    let shape = ExampleShape {
        system: &args.system,
        max_prompt_length: args.max_prompt_length,
        answer_length: args.answer_length,
    };
    let examples = examples_from_rows(
        &loaded.tokenizer,
        &rows,
        &args.data,
        &args.solution_column,
        shape,
    )
    .map_err(anyhow::Error::msg)?;
    if examples.is_empty() {
        bail!("{}: no usable rows ({summary})", args.data.display());
    }
    let special = loaded.tokenizer.special();
    let plan = SftPlan {
        steps: args.steps,
        batch_size: args.batch_size,
        lr: args.lr,
        schedule: args.schedule.with_floor(0.1),
        warmup_steps: args.warmup_steps,
        log_every: args.log_every,
        save_every: args.save_every,
        settings: SftSettings {
            mask_id: special.mask,
            pad: special.pad,
            eps: args.eps,
            seed: args.seed,
            pad_weight: args.pad_weight,
        },
    };
    let save_options = SaveOptions {
        assets_from: Some(args.model.clone()),
        ..Default::default()
    };
    let save = |dir: &std::path::Path| {
        save_model(&loaded.model, dir, &save_options)
            .with_context(|| format!("saving {}", dir.display()))
    };
    let loading = started.elapsed().as_secs_f64();
    reset_peak_resident();
    let (mut losses, mut saving) = (Vec::new(), 0.0);
    let training = Instant::now();
    run_sft(&loaded.model, &examples, &plan, |event| -> Result<()> {
        match event {
            SftEvent::Log { step, loss, lr } => {
                losses.push(loss);
                eprintln!(
                    "sft step {step:>5}/{}  loss {loss:.4}  lr {lr:.2e}",
                    args.steps
                );
                Ok(())
            }
            SftEvent::Save { step } => {
                let at = Instant::now();
                save(&args.out.join(format!("checkpoint-{step}")))?;
                saving += at.elapsed().as_secs_f64();
                Ok(())
            }
        }
    })?;
    let trained = training.elapsed().as_secs_f64() - saving;
    let at = Instant::now();
    save(&args.out)?;
    saving += at.elapsed().as_secs_f64();
    let mut summary = RunSummary::new("sft", started.elapsed().as_secs_f64());
    summary.steps = args.steps;
    summary.add("loading (model, data)", loading);
    summary.add("training", trained);
    summary.add("checkpointing", saving);
    summary.close();
    // Every row is a full prompt + padded answer: the tokens each step runs through.
    let per_example = examples
        .iter()
        .map(|e| (e.prompt.len() + e.answer.len()) as f64)
        .sum::<f64>()
        / examples.len() as f64;
    let tokens = per_example * (args.batch_size as u64 * args.steps) as f64;
    summary.train_tokens_per_second = Some(tokens / trained.max(1e-9));
    summary.peak_resident_mib = peak_resident_mib();
    summary.loss = start_end(&losses, 5);
    eprint!("{}", summary.render());
    summary.write(&args.out)?;
    eprintln!("wrote {}", args.out.display());
    Ok(())
}
