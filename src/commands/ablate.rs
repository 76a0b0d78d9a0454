//! `couplet ablate` and `couplet report`: the same training budget per estimator and seed,
//! then a table and plots comparing them.

use std::path::PathBuf;

use anyhow::{Context, Result};
use couplet_trainer::{Algorithm, Method, RunCheckpoint, TrainConfig};

use super::train::{install_stop_handler, run_job, JobEnd};

#[derive(clap::Args)]
pub struct AblateArgs {
    /// The base config; every variant runs it with only the algorithm (and seed) changed:
    /// each method keeps the base's knobs it shares (ε, β, …) and its own defaults for the
    /// rest.
    #[arg(long, default_value = "configs/tiny_cpu.toml")]
    config: PathBuf,
    /// Algorithms to compare (comma-separated `algorithm.name`s).
    #[arg(
        long,
        alias = "estimators",
        value_delimiter = ',',
        default_value = "coupled,d1,full_mask,decoupled"
    )]
    algorithms: Vec<String>,
    /// Seeds per algorithm: the config's seed, +1, +2, …
    #[arg(long, default_value_t = 3)]
    seeds: u64,
    /// Override a key of the base config for every run (repeatable), e.g.
    /// --set schedule.max_steps=20.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Where the runs (OUT/<algorithm>-seed<N>/) and the report go.
    #[arg(long, default_value = "runs/ablate")]
    out: PathBuf,
}

#[derive(clap::Args)]
pub struct ReportArgs {
    /// Run directories (each with config.toml and metrics.jsonl).
    #[arg(required = true)]
    runs: Vec<PathBuf>,
    /// Where report.md and the PNGs go.
    #[arg(long, default_value = "report")]
    out: PathBuf,
}

pub fn ablate(args: AblateArgs) -> Result<()> {
    if args.seeds == 0 || args.algorithms.is_empty() {
        usage!("--seeds and --algorithms must not be empty");
    }
    // Validate the base config, every override and every algorithm before any run starts.
    let base = TrainConfig::load(&args.config, &args.overrides)?;
    let variants = args
        .algorithms
        .iter()
        .map(|name| base.algorithm.switched_to(name))
        .collect::<Result<Vec<Algorithm>, String>>()
        .map_err(|e| anyhow::anyhow!("--algorithms: {e}"))?;
    install_stop_handler();
    let mut dirs = Vec::new();
    for variant in &variants {
        let e = variant.name();
        let inline = variant.inline_toml();
        for s in 0..args.seeds {
            let dir = args.out.join(format!("{e}-seed{s}"));
            let mut overrides = args.overrides.clone();
            // A method that needs another rollout mode (JustGRPO: strictly left to right)
            // gets it; everything else stays the base config's.
            let k = base.rollout.max_new_tokens.max(0) as usize;
            overrides.extend(variant.rollout_overrides(k));
            overrides.extend([
                format!("algorithm={inline}"),
                format!("seed={}", base.seed + s),
                format!("checkpointing.run_dir=\"{}\"", dir.display()),
            ]);
            let config = TrainConfig::load(&args.config, &overrides)?;
            let last = config.schedule.max_steps.unwrap_or(0);
            if couplet_trainer::latest_checkpoint(&dir)
                == Some(RunCheckpoint::of_step(&dir, last).dir)
            {
                eprintln!("{}: already finished, kept", dir.display());
            } else {
                // A half-done run resumes from its newest checkpoint.
                let resume = couplet_trainer::latest_checkpoint(&dir);
                if let Some(r) = &resume {
                    eprintln!("{}: resuming from {}", dir.display(), r.display());
                } else if dir.join("metrics.jsonl").exists() {
                    std::fs::remove_dir_all(&dir)
                        .with_context(|| format!("clearing {}", dir.display()))?;
                }
                let name = format!("{e} seed {}", base.seed + s);
                if let JobEnd::Interrupted = run_job(&config, resume.as_deref(), &name)? {
                    eprintln!(
                        "interrupted: run the same `couplet ablate` command again to continue"
                    );
                    std::process::exit(130);
                }
            }
            dirs.push(dir);
        }
    }
    let files = couplet_report::write_report(&dirs, &args.out)?;
    for f in files {
        println!("{}", f.display());
    }
    Ok(())
}

pub fn report(args: ReportArgs) -> Result<()> {
    let files = couplet_report::write_report(&args.runs, &args.out)?;
    for f in files {
        println!("{}", f.display());
    }
    Ok(())
}
