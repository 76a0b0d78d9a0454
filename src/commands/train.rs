//! `couplet train`: run (or resume) a coupled-GRPO job from a TOML config.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::summary::{peak_resident_mib, reset_peak_resident, resident_mib, start_end, RunSummary};
use anyhow::{Context, Result};
use couplet_rollout::progress_bar;
use couplet_trainer::train::stability::DROP_STANDARD_ERRORS;
use couplet_trainer::{
    latest_checkpoint, Flow, RunCheckpoint, RunLog, StepMetrics, TrainConfig, Trainer,
};

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
                None => usage!(
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
    let started = Instant::now();
    let before_model = resident_mib();
    let (mut trainer, mut job) = Job::start(config, resume, name)?;
    // The steps' own peak: loading (a mapped checkpoint file next to the weights it fills)
    // and optimizer setup are not part of it.
    reset_peak_resident();
    let mut step_peak = 0.0f64;
    let total = trainer.total_steps();
    let eval_every = config.eval.every;
    if eval_every > 0 && trainer.state.step == 0 {
        job.evaluate(&mut trainer)?;
    }
    let mut interrupted = false;
    while trainer.state.step < total && !interrupted {
        trainer.train_round(|trainer, m| -> Result<Flow> {
            step_peak = step_peak.max(peak_resident_mib());
            job.record(trainer, m)?;
            if eval_every > 0 && (m.step % eval_every == 0 || m.step == total) {
                job.evaluate(trainer)?;
            }
            interrupted = trainer.agree_stop(STOP.load(Ordering::SeqCst))?;
            if m.step % config.checkpointing.save_every == 0 || m.step == total || interrupted {
                job.save(trainer, m.step)?;
            }
            Ok(if interrupted || m.step == total {
                Flow::Stop
            } else {
                Flow::Continue
            })
        })?;
    }
    job.bar.finish_and_clear();
    if interrupted {
        job.summarize(&trainer, started, step_peak)?;
        job.say(format!(
            "interrupted at step {}: checkpoint saved; resume with --resume {}",
            trainer.state.step,
            job.run_dir.display()
        ));
        return Ok(JobEnd::Interrupted);
    }
    // Every rank reports (the ZeRO shards differ); `scripts/bench-memory` compares this with
    // `couplet memory`. Checkpoint writing is not included.
    job.bar.suspend(|| {
        eprintln!(
            "memory: rank {}: {before_model:.1} MiB resident before the model, peak {step_peak:.1} MiB over the training steps",
            trainer.rank()
        )
    });
    job.summarize(&trainer, started, step_peak)?;
    job.say(format!(
        "done: {} steps; checkpoints in {}",
        trainer.state.step,
        job.run_dir.display()
    ));
    Ok(JobEnd::Finished)
}

/// What a job keeps besides its trainer: (on rank 0) its logs and progress bar. With several
/// ranks, rank 0 alone talks: progress, logs, evaluation, the config copy.
struct Job {
    run_dir: PathBuf,
    log: Option<RunLog>,
    bar: indicatif::ProgressBar,
    lead: bool,
    /// This process's steps, evaluations (pass@1) and their times, for the summary.
    steps: Vec<StepMetrics>,
    pass_at_1: Vec<f64>,
    eval_seconds: f64,
    save_seconds: f64,
}

impl Job {
    fn start(config: &TrainConfig, resume: Option<&Path>, name: &str) -> Result<(Trainer, Job)> {
        let run_dir = &config.checkpointing.run_dir;
        let repo = std::env::current_dir()?;
        let trainer = Trainer::new(config.clone(), &repo, resume)?;
        let lead = trainer.rank() == 0;
        let log = if lead {
            std::fs::create_dir_all(run_dir)
                .with_context(|| format!("creating {}", run_dir.display()))?;
            std::fs::write(run_dir.join("config.toml"), config.to_toml())
                .with_context(|| format!("writing {}/config.toml", run_dir.display()))?;
            let log = RunLog::open(run_dir, config.logging.tensorboard)
                .with_context(|| format!("opening the logs in {}", run_dir.display()))?;
            Some(log)
        } else {
            None
        };
        let bar = progress_bar(trainer.total_steps(), name, "steps", lead);
        bar.set_position(trainer.state.step);
        let job = Job {
            run_dir: run_dir.clone(),
            log,
            bar,
            lead,
            steps: Vec::new(),
            pass_at_1: Vec::new(),
            eval_seconds: 0.0,
            save_seconds: 0.0,
        };
        if let Some(r) = resume {
            job.say(format!(
                "resumed from {} at step {}",
                r.display(),
                trainer.state.step
            ));
        }
        Ok((trainer, job))
    }

    /// A line on stderr from rank 0, above the progress bar.
    fn say(&self, message: String) {
        if self.lead {
            self.bar.suspend(|| eprintln!("{message}"));
        }
    }

    /// Logs step `m`: scalars, sampled completions, the progress bar and a summary line.
    fn record(&mut self, trainer: &Trainer, m: &StepMetrics) -> Result<()> {
        self.steps.push(m.clone());
        let logging = &trainer.config.logging;
        if let Some(log) = self.log.as_mut() {
            log.step(m)?;
            let every = logging.completions_every;
            if every > 0 && (m.step % every == 0 || m.step == 1) {
                log.completions(&trainer.last_samples)?;
            }
        }
        self.bar.set_position(m.step);
        self.bar
            .set_message(format!("reward {:.3} kl {:.4}", m.reward, m.kl));
        if m.step % logging.log_every == 0 {
            self.say(format!(
                "step {:>5}  reward {:>7.3} ± {:.3}  loss {:>9.5}  kl {:.5} (k2 {:.4})  ent {:.3}  clip {:.3}  |g| {:.4} (clipped {:.0}%)  lr {:.2e}  len {:.1}  rollout {:.1}s ({:.0} tok/s, {:.1} fwd/run, {:.2} tok/fwd) reward {:.1}s update {:.1}s",
                m.step, m.reward, m.reward_std, m.loss, m.kl, m.kl_k2, m.entropy, m.clip_ratio, m.grad_norm, 100.0 * m.grad_clipped_share, m.lr, m.completion_length, m.cost.rollout_seconds, m.cost.rollout_tokens_per_second, m.cost.rollout_forwards_per_chunk, m.cost.rollout_tokens_per_forward, m.cost.reward_seconds, m.update_seconds
            ));
        }
        for (_, warning) in &m.warnings {
            self.say(format!("warning: {warning}"));
        }
        Ok(())
    }

    /// Validation pass@1 of the current policy, logged (rank 0 only).
    fn evaluate(&mut self, trainer: &mut Trainer) -> Result<()> {
        let Some(log) = self.log.as_mut() else {
            return Ok(());
        };
        let started = Instant::now();
        let report = trainer.evaluate_validation()?;
        self.eval_seconds += started.elapsed().as_secs_f64();
        if let Some(report) = report {
            self.pass_at_1.push(report.pass_at(1).unwrap_or(f64::NAN));
            let change = trainer.validation_change(&report);
            log.eval(trainer.state.step, &report, change.as_ref())?;
            let pass = report.pass_at(1).unwrap_or(f64::NAN);
            let versus = change.as_ref().map_or_else(String::new, |(c, _)| {
                format!(
                    ", {:+.1} points vs the start ± {:.1} noise",
                    100.0 * c.change,
                    100.0 * DROP_STANDARD_ERRORS * c.standard_error
                )
            });
            self.say(format!(
                "eval  step {:>5}  validation pass@1 {:.1}% ({} problems, {:.1}s{versus})",
                trainer.state.step,
                100.0 * pass,
                report.problems.len(),
                report.seconds
            ));
            if let Some((_, Some(warning))) = &change {
                self.say(format!("warning: {warning}"));
            }
        }
        Ok(())
    }

    /// Saves the checkpoint of `step`; a failure says which earlier checkpoint is intact.
    fn save(&mut self, trainer: &Trainer, step: u64) -> Result<()> {
        let started = Instant::now();
        self.write_checkpoint(trainer, step)?;
        self.save_seconds += started.elapsed().as_secs_f64();
        Ok(())
    }

    fn write_checkpoint(&self, trainer: &Trainer, step: u64) -> Result<()> {
        let run_dir = &self.run_dir;
        let dir = trainer.save_checkpoint().map_err(|e| {
            let kept = latest_checkpoint(run_dir).map_or_else(
                || "no earlier checkpoint exists".to_string(),
                |c| format!("the previous checkpoint {} is intact", c.display()),
            );
            anyhow::anyhow!(
                "saving the checkpoint of step {step} failed (disk full?): {:#}\n{kept}; free space and resume with --resume {}",
                anyhow::Error::from(e),
                run_dir.display()
            )
        })?;
        self.say(format!("saved {}", dir.display()));
        Ok(())
    }

    /// Prints the run's summary and writes `summary.json` (rank 0).
    fn summarize(&self, trainer: &Trainer, started: Instant, peak_mib: f64) -> Result<()> {
        if !self.lead {
            return Ok(());
        }
        let mu = trainer.config.schedule.num_iterations as u64;
        let mut summary = RunSummary::new("train", started.elapsed().as_secs_f64());
        summary.steps = self.steps.len() as u64;
        // A round's rollout, reward and scoring are paid once, at its first iteration.
        let firsts = self.steps.iter().filter(|m| (m.step - 1) % mu == 0);
        let (mut busy, mut decode) = (0.0, 0.0);
        for m in firsts {
            let c = &m.cost;
            summary.add("rollout", c.rollout_seconds);
            summary.add("reward (beyond decoding)", c.reward_seconds);
            summary.add("old/reference scoring", c.scoring_seconds);
            summary.tokens_decoded += c.rollout_tokens_per_second * c.rollout_seconds;
            decode += c.rollout_seconds;
            summary.tests_run += c.sandbox_tests as u64;
            busy += c.sandbox_tests as f64 / c.sandbox_tests_per_second.max(1e-9);
        }
        let update: f64 = self.steps.iter().map(|m| m.update_seconds).sum();
        summary.add("update", update);
        summary.add("evaluation", self.eval_seconds);
        summary.add("checkpointing", self.save_seconds);
        summary.close();
        summary.tokens_per_second = (decode > 0.0).then(|| summary.tokens_decoded / decode);
        summary.tests_per_second = (busy > 0.0).then(|| summary.tests_run as f64 / busy);
        summary.peak_resident_mib = peak_mib;
        let rewards: Vec<f64> = self.steps.iter().map(|m| m.reward).collect();
        summary.reward = start_end(&rewards, 5);
        summary.pass_at_1 = start_end(&self.pass_at_1, 1);
        self.bar.suspend(|| eprint!("{}", summary.render()));
        summary.write(&self.run_dir)
    }
}
