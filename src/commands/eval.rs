//! `couplet eval`: pass@k of a model on HumanEval or a task file, tests in the sandbox.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use std::time::Instant;

use super::summary::{peak_resident_mib, RunSummary};
use anyhow::{bail, Context, Result};

use couplet_rollout::progress_bar;
use couplet_sandbox::{BackendKind, BackendSpec, Isolation, Limits, SandboxPool};
use couplet_trainer::{check_completions, evaluate, load_benchmark, EvalSettings};

use super::decode_args::DecodeArgs;

#[derive(clap::Args)]
pub struct Args {
    /// Model folder, training checkpoint or run directory (not needed with --canonical).
    #[arg(long, required_unless_present = "canonical")]
    model: Option<PathBuf>,
    /// `humaneval`, or a benchmark file, directory or glob (JSON lines, .gz, Parquet,
    /// Arrow) in EvalPlus (HumanEval+/MBPP+), HumanEval, MBPP or AceCoder format.
    #[arg(long, default_value = "humaneval")]
    benchmark: String,
    /// Also judge the plus tests (EvalPlus's plus inputs, MBPP's challenge tests) and
    /// report base and base+plus pass@k side by side.
    #[arg(long)]
    plus: bool,
    /// n: samples per problem.
    #[arg(long, default_value_t = 1)]
    samples: usize,
    /// The k of pass@k, comma-separated (each ≤ --samples).
    #[arg(long, value_delimiter = ',', default_value = "1")]
    k: Vec<usize>,
    /// Evaluate only the first N problems.
    #[arg(long)]
    limit: Option<usize>,
    /// Judge the benchmark's own reference solutions instead of samples (checks the
    /// benchmark file, the wiring and the sandbox: pass@1 should be 1.0).
    #[arg(long)]
    canonical: bool,
    /// System prompt of the chat template.
    #[arg(long, default_value = couplet_model::tokenizer::DEFAULT_SYSTEM_PROMPT)]
    system: String,
    #[command(flatten)]
    decode: DecodeArgs,
    /// Sandbox: wasm or process.
    #[arg(long, default_value = "wasm")]
    backend: BackendKind,
    /// Interpreter of the process backend (default: /usr/bin/python3 or python3).
    #[arg(long)]
    python: Option<PathBuf>,
    /// The process backend's OS boundary: strict (every layer or refuse to start) or
    /// best_effort (what this kernel allows, printed at start).
    #[arg(long, default_value = "strict")]
    process_isolation: Isolation,
    /// Sandbox workers (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// Seconds per test.
    #[arg(long, default_value_t = 5.0)]
    timeout: f64,
    /// Write per-problem results (`results.jsonl`) and `summary.json` here.
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    let started = Instant::now();
    let repo = std::env::current_dir()?;
    let mut problems = load_benchmark(&args.benchmark, &repo).map_err(anyhow::Error::msg)?;
    if let Some(n) = args.limit {
        problems.truncate(n);
    }
    if args.plus && problems.iter().all(|p| p.plus_tests.is_empty()) {
        usage!(
            "--plus: {} has no plus tests (EvalPlus `plus_input`, MBPP `challenge_test_list`)",
            args.benchmark
        );
    }
    if !args.plus {
        problems.iter_mut().for_each(|p| p.plus_tests.clear());
    }
    if args.samples == 0 {
        usage!("--samples must be at least 1");
    }
    if let Some(k) = args.k.iter().find(|&&k| k == 0 || k > args.samples) {
        usage!("--k {k}: pass@k needs 1 ≤ k ≤ --samples ({})", args.samples);
    }
    if !(args.timeout > 0.0 && args.timeout.is_finite()) {
        usage!("--timeout must be a positive number of seconds");
    }
    let backend = BackendSpec {
        python: args.python.clone(),
        process_isolation: args.process_isolation,
        ..BackendSpec::new(args.backend, &repo)
    }
    .open()?;
    if let Some(note) = backend.isolation_note() {
        eprintln!("{note}");
    }
    let workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let pool = SandboxPool::new(backend, workers)?;
    let limits = Limits {
        per_test: Duration::from_secs_f64(args.timeout),
        ..Limits::default()
    };
    let report = if args.canonical {
        let mut completions = Vec::with_capacity(problems.len());
        for p in &problems {
            let Some(reference) = &p.reference else {
                bail!(
                    "{}: problem {} has no reference solution (`solution` column or HumanEval's canonical_solution)",
                    args.benchmark,
                    p.id
                );
            };
            completions.push(vec![format!("```python\n{reference}\n```\n"); args.samples]);
        }
        check_completions(&problems, &completions, &args.k, &pool, limits)
    } else {
        let model = args.model.as_ref().expect("clap requires --model");
        let ckpt = super::load_with_adapter(
            model,
            args.decode.adapter.as_deref(),
            args.decode.device,
            args.decode.dtype,
        )?;
        let settings = EvalSettings {
            samples: args.samples,
            ks: args.k.clone(),
            rollout: args.decode.rollout(args.samples)?,
            seed: args.decode.seed,
            system_prompt: args.system.clone(),
            limits,
        };
        let bar = progress_bar(problems.len() as u64, "eval", "problems", true);
        let report = evaluate(&ckpt, &problems, &settings, &pool, |done, _| {
            bar.set_position(done as u64)
        })
        .map_err(anyhow::Error::msg)?;
        bar.finish_and_clear();
        report
    };
    let run = eval_summary(&report, &pool, started);
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join("results.jsonl");
        let mut f =
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        for p in &report.problems {
            writeln!(f, "{}", serde_json::to_string(p)?)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        write_evalplus_samples(&dir.join("samples.jsonl"), &report)?;
        let summary = serde_json::json!({
            "benchmark": args.benchmark,
            "model": args.model,
            "canonical": args.canonical,
            "problems": report.problems.len(),
            "samples": args.samples,
            "pass_at_k": by_k(&report.pass_at_k),
            "pass_at_k_plus": report.pass_at_k_plus.as_deref().map(by_k),
            "arness": report.arness,
            "sandbox_errors": report.sandbox_errors,
            "generation_seconds": report.generation_seconds,
            "tokens_per_second": report.tokens_per_second,
            "seconds": report.seconds,
            "run": run,
        });
        let path = dir.join("summary.json");
        std::fs::write(&path, serde_json::to_string_pretty(&summary)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    print!("{}", report.summary_table());
    eprint!("{}", run.render());
    Ok(())
}

/// Where the evaluation's time went: decoding, the sandbox beyond it (its jobs run while
/// the next batch decodes), and loading.
fn eval_summary(
    report: &couplet_trainer::EvalReport,
    pool: &SandboxPool,
    started: Instant,
) -> RunSummary {
    let mut run = RunSummary::new("eval", started.elapsed().as_secs_f64());
    run.add("decoding", report.generation_seconds);
    run.add(
        "sandbox (beyond decoding)",
        (report.seconds - report.generation_seconds).max(0.0),
    );
    run.close();
    if report.generation_seconds > 0.0 {
        run.tokens_decoded = report.tokens_per_second * report.generation_seconds;
        run.tokens_per_second = Some(report.tokens_per_second);
    }
    let stats = pool.stats();
    run.tests_run = stats.tests;
    run.tests_per_second = (stats.tests > 0).then(|| stats.tests_per_second());
    run.peak_resident_mib = peak_resident_mib();
    run
}

/// `{"pass@1": v, ...}`.
fn by_k(values: &[(usize, f64)]) -> std::collections::BTreeMap<String, f64> {
    values
        .iter()
        .map(|(k, v)| (format!("pass@{k}"), *v))
        .collect()
}

/// EvalPlus's `samples.jsonl` (`task_id`, `solution`: the code each sample was judged on),
/// so `evalplus.evaluate --samples` can rescore the run with the official tool.
fn write_evalplus_samples(
    path: &std::path::Path,
    report: &couplet_trainer::EvalReport,
) -> Result<()> {
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
    );
    for p in &report.problems {
        for c in &p.completions {
            let line = serde_json::json!({
                "task_id": p.id,
                "solution": couplet_trainer::eval::solution_code(c),
            });
            writeln!(f, "{line}").with_context(|| format!("writing {}", path.display()))?;
        }
    }
    f.flush()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
