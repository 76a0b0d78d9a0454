//! `couplet sandbox run`: check a dataset's tests (e.g. that every reference solution passes).

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use couplet_sandbox::{
    BackendKind, BackendSpec, Isolation, Job, Limits, NonDataCounts, SandboxPool,
};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Run jobs from a JSON-lines file: {"id", "solution", "tests": [...], "check_syntax"}.
    Run(RunArgs),
}

#[derive(clap::Args)]
pub struct RunArgs {
    /// JSON-lines file of jobs.
    #[arg(long)]
    jobs: PathBuf,
    /// wasm (CPython/WASI under wasmtime, default) or process (native python3 with OS limits).
    #[arg(long, default_value = "wasm")]
    backend: BackendKind,
    /// Worker threads (0 = available cores).
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// Seconds per test.
    #[arg(long, default_value_t = 5.0)]
    timeout: f64,
    /// Memory cap in MiB.
    #[arg(long, default_value_t = 512)]
    memory_mb: u64,
    /// Interpreter of the process backend.
    #[arg(long)]
    python: Option<PathBuf>,
    /// CPython/WASI module of the wasm backend (default: the one setup fetched).
    #[arg(long)]
    wasm: Option<PathBuf>,
    /// The process backend's OS boundary: strict (every layer or refuse to start) or
    /// best_effort (what this kernel allows, printed at start).
    #[arg(long, default_value = "strict")]
    process_isolation: Isolation,
}

pub fn run(command: Command) -> Result<()> {
    match command {
        Command::Run(args) => run_jobs(args),
    }
}

fn read_jobs(path: &PathBuf) -> Result<Vec<Job>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut jobs = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("{}: reading line {}", path.display(), i + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let mut job: Job = serde_json::from_str(&line).with_context(|| {
            format!(
                "{}:{}: not a job (need \"solution\" and \"tests\")",
                path.display(),
                i + 1
            )
        })?;
        if job.id.is_empty() {
            job.id = format!("line-{}", i + 1);
        }
        jobs.push(job);
    }
    Ok(jobs)
}

fn run_jobs(args: RunArgs) -> Result<()> {
    if !(args.timeout > 0.0 && args.timeout.is_finite()) {
        usage!("--timeout must be a positive number of seconds");
    }
    let jobs = read_jobs(&args.jobs)?;
    let started = std::time::Instant::now();
    let backend = BackendSpec {
        python: args.python.clone(),
        wasm: args.wasm.clone(),
        process_isolation: args.process_isolation,
        ..BackendSpec::new(args.backend, &std::env::current_dir()?)
    }
    .open()?;
    if let Some(note) = backend.isolation_note() {
        eprintln!("{note}");
    }
    let pool = SandboxPool::new(backend, args.workers)?;
    let per_test = Duration::from_secs_f64(args.timeout);
    let longest = jobs.iter().map(|j| j.tests.len()).max().unwrap_or(1).max(1) as u32;
    let limits = Limits {
        per_test,
        per_job: per_test * longest + Duration::from_secs(10),
        memory_bytes: args.memory_mb << 20,
        ..Limits::default()
    };
    let results = pool.run_all(jobs, limits);
    let wall = started.elapsed().as_secs_f64();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let (mut all_pass, mut tests, mut passed, mut failures) = (0, 0, 0, 0);
    for r in &results {
        writeln!(out, "{}", serde_json::to_string(r)?)?;
        tests += r.tests.len();
        passed += r.passed();
        failures += usize::from(r.sandbox_error.is_some());
        all_pass += usize::from(r.pass_rate() == Some(1.0));
    }
    let stats = pool.stats();
    let non_data = NonDataCounts::of(&results);
    eprintln!(
        "{} jobs on {} ({} workers): {all_pass} fully passing, {passed}/{tests} tests passed, {failures} sandbox failures; \
         failed as non-data: {} results, {} arguments; {:.1} tests/s per worker; \
         {wall:.2} s from opening the backend to the last verdict",
        results.len(),
        pool.backend_name(),
        pool.workers(),
        non_data.results,
        non_data.arguments,
        stats.tests_per_second()
    );
    Ok(())
}
