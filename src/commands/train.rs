//! `couplet train`: run (or resume) a coupled-GRPO job from a TOML config.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Context, Result};
use couplet_rollout::progress_bar;
use couplet_trainer::{latest_checkpoint, RunCheckpoint, RunLog, TrainConfig, Trainer};

#[derive(clap::Args)]
pub struct Args {
    /// TOML config (see configs/README.md).
    #[arg(long, default_value = "configs/tiny_cpu.toml")]
    config: PathBuf,
    /// Override a key: --set rollout.temperature=1.2 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Resume from a run directory's newest complete checkpoint (or a checkpoint folder).
    #[arg(long)]
    resume: Option<PathBuf>,
}

/// Set by SIGINT / SIGTERM: finish the current step, save, exit 130.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

pub fn install_stop_handler() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

pub fn run(args: Args) -> Result<()> {
    let config = TrainConfig::load(&args.config, &args.overrides)?;
    let run_dir = config.checkpointing.run_dir.clone();
    let resume = match &args.resume {
        None => None,
        Some(path) if RunCheckpoint::at(path).is_some() => Some(path.clone()),
        Some(path) => {
            let dir = if path.as_os_str() == "latest" {
                run_dir.clone()
            } else {
                path.clone()
            };
            match latest_checkpoint(&dir) {
                Some(c) => Some(c),
                None => bail!(
                    "--resume {}: no complete checkpoint in {}",
                    path.display(),
                    dir.display()
                ),
            }
        }
    };
    install_stop_handler();
    match run_job(&config, resume.as_deref(), "train")? {
        JobEnd::Finished => Ok(()),
        JobEnd::Interrupted => std::process::exit(130),
    }
}

/// How a job ended.
pub enum JobEnd {
    Finished,
    /// Stopped by SIGINT/SIGTERM after saving a checkpoint.
    Interrupted,
}

/// Runs (or resumes from the checkpoint `resume`) one training job to its last step:
/// logs, periodic evaluation and checkpoints. `name` prefixes the progress bar. Call
/// [`install_stop_handler`] first for Ctrl-C to save and stop cleanly.
pub fn run_job(config: &TrainConfig, resume: Option<&Path>, name: &str) -> Result<JobEnd> {
    let run_dir = config.checkpointing.run_dir.clone();
    let repo = std::env::current_dir()?;
    let mut trainer = Trainer::new(config.clone(), &repo, resume)?;
    // With several ranks, rank 0 alone talks: progress, logs, evaluation, the config copy.
    let lead = trainer.rank() == 0;
    if lead {
        std::fs::create_dir_all(&run_dir)
            .with_context(|| format!("creating {}", run_dir.display()))?;
        std::fs::write(run_dir.join("config.toml"), config.to_toml())
            .with_context(|| format!("writing {}/config.toml", run_dir.display()))?;
    }
    let say = |message: String| {
        if lead {
            eprintln!("{message}");
        }
    };
    if let Some(r) = resume {
        say(format!(
            "resumed from {} at step {}",
            r.display(),
            trainer.state.step
        ));
    }
    let total = trainer.total_steps();
    let bar = progress_bar(total, name, "steps", lead);
    bar.set_position(trainer.state.step);
    let mut log = if lead {
        Some(
            RunLog::open(&run_dir, config.logging.tensorboard)
                .with_context(|| format!("opening the logs in {}", run_dir.display()))?,
        )
    } else {
        None
    };
    let evaluate =
        |trainer: &Trainer, log: &mut Option<RunLog>, bar: &indicatif::ProgressBar| -> Result<()> {
            let Some(log) = log.as_mut() else {
                return Ok(());
            };
            if let Some(report) = trainer.evaluate_validation()? {
                log.eval(trainer.state.step, &report)?;
                let pass = report.pass_at(1).unwrap_or(f64::NAN);
                bar.suspend(|| {
                    eprintln!(
                        "eval  step {:>5}  validation pass@1 {:.1}% ({} problems, {:.1}s)",
                        trainer.state.step,
                        100.0 * pass,
                        report.problems.len(),
                        report.seconds
                    )
                });
            }
            Ok(())
        };
    let eval_every = config.eval.every;
    if eval_every > 0 && trainer.state.step == 0 {
        evaluate(&trainer, &mut log, &bar)?;
    }
    while trainer.state.step < total {
        let m = trainer.step()?;
        if let Some(log) = log.as_mut() {
            log.step(&m)?;
            let every = config.logging.completions_every;
            if every > 0 && (m.step % every == 0 || m.step == 1) {
                log.completions(&trainer.last_samples)?;
            }
        }
        bar.set_position(m.step);
        bar.set_message(format!("reward {:.3} kl {:.4}", m.reward, m.kl));
        if lead && m.step % config.logging.log_every == 0 {
            bar.suspend(|| eprintln!(
                "step {:>5}  reward {:>7.3} ± {:.3}  loss {:>9.5}  kl {:.5}  clip {:.3}  |g| {:.4}  lr {:.2e}  len {:.1}  rollout {:.1}s reward {:.1}s update {:.1}s",
                m.step, m.reward, m.reward_std, m.loss, m.kl, m.clip_ratio, m.grad_norm, m.lr, m.completion_length, m.rollout_seconds, m.reward_seconds, m.update_seconds
            ));
        }
        if eval_every > 0 && (m.step % eval_every == 0 || m.step == total) {
            evaluate(&trainer, &mut log, &bar)?;
        }
        let stopping = trainer.agree_stop(STOP.load(Ordering::SeqCst))?;
        if m.step % config.checkpointing.save_every == 0 || m.step == total || stopping {
            let dir = trainer.save_checkpoint().map_err(|e| {
                let kept = latest_checkpoint(&run_dir).map_or_else(
                    || "no earlier checkpoint exists".to_string(),
                    |c| format!("the previous checkpoint {} is intact", c.display()),
                );
                anyhow::anyhow!(
                    "saving the checkpoint of step {} failed (disk full?): {:#}\n{kept}; free space and resume with --resume {}",
                    m.step,
                    anyhow::Error::from(e),
                    run_dir.display()
                )
            })?;
            bar.suspend(|| say(format!("saved {}", dir.display())));
        }
        if stopping {
            bar.finish_and_clear();
            say(format!(
                "interrupted at step {}: checkpoint saved; resume with --resume {}",
                m.step,
                run_dir.display()
            ));
            return Ok(JobEnd::Interrupted);
        }
    }
    bar.finish_and_clear();
    say(format!(
        "done: {} steps; checkpoints in {}",
        trainer.state.step,
        run_dir.display()
    ));
    Ok(JobEnd::Finished)
}
