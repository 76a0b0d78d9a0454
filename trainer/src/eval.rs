//! Evaluation: n samples per problem with the chosen decoder, the tests in the sandbox,
//! pass@k with the unbiased estimator, and the AR-ness of the samples' decode orders.
//!
//! A sample is correct when every test passes on the code of its first ```python block
//! (the whole completion when it has none — EvalPlus-style leniency: an evaluation
//! measures the code, the `code_format` reward measures the shape). Sandbox failures are
//! counted apart and never counted as passes.

use std::path::Path;

use couplet_model::LoadedModel;
use couplet_reward::{evalplus, humaneval, load_rows, mbpp, pass_at_k, LoadOptions};
use couplet_rollout::{generate_rollout, ArNess, DecodeStats, RolloutConfig};
use couplet_sandbox::{Job, JobResult, Limits, NonDataCounts, SandboxPool};
use serde::{Deserialize, Serialize};

/// One problem: the question the model sees and the tests its code must pass.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalProblem {
    /// The problem's id.
    pub id: String,
    /// The question (chat-formatted before decoding).
    pub question: String,
    /// Test statements its code must pass.
    pub tests: Vec<String>,
    /// Extra tests (EvalPlus's plus inputs, MBPP's challenge tests): judged only when not
    /// empty, and reported as the plus score (base and plus tests all passing).
    pub plus_tests: Vec<String>,
    /// A known-good full solution, when the benchmark has one (`--canonical` checks the
    /// wiring and the sandbox with it).
    pub reference: Option<String>,
    /// Trusted dataset code the tests rely on (a HumanEval prompt's helpers, MBPP's
    /// imports and `test_setup_code`): see [`Job::setup`].
    pub setup: String,
    /// The names the task asks for (see [`Job::entry_points`]).
    pub entry_points: Vec<String>,
}

/// Loads `humaneval` (the wheel's 164 problems, fetched by setup) or a benchmark file (any
/// row source: JSON lines, .gz, Parquet, Arrow, directories, globs) in EvalPlus format
/// (`base_input`, `plus_input`, `atol`), HumanEval format (`task_id`, `prompt`, `test`,
/// `entry_point`), MBPP format (`text`, `code`, `test_list`, ...) or AceCoder format (`id`,
/// `question`, `test_cases`, optionally `solution`), told by the first row's fields.
pub fn load_benchmark(benchmark: &str, repo_root: &Path) -> Result<Vec<EvalProblem>, String> {
    let path = if benchmark == "humaneval" {
        repo_root.join(humaneval::DEFAULT_PATH)
    } else {
        repo_root.join(benchmark)
    };
    // Only the first row is read here, to tell the format; the loaders read the file (or
    // its shards: JSON lines, .gz, Parquet, Arrow; a directory, a glob).
    let hint = if benchmark == "humaneval" {
        " (run scripts/setup.sh to fetch it)"
    } else {
        ""
    };
    let first = couplet_reward::sources::first_value(&path)
        .map_err(|e| format!("{e}{hint}"))?
        .ok_or_else(|| format!("{}: no problems", path.display()))?;
    let problems = if couplet_reward::evalplus::is_evalplus_row(&first) {
        evalplus_problems(&path)?
    } else if first.get("entry_point").is_some() {
        humaneval::load(&path)
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|p| EvalProblem {
                id: p.task_id.clone(),
                question: p.instruct_question(),
                tests: vec![p.test_program()],
                plus_tests: Vec::new(),
                reference: Some(p.completed_source(&p.canonical_solution)),
                setup: p.prompt.clone(),
                entry_points: vec![p.entry_point.clone()],
            })
            .collect()
    } else if couplet_reward::mbpp::is_mbpp_row(&first) {
        mbpp::load(&path)
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|p| EvalProblem {
                id: p.id(),
                question: p.instruct_question(),
                tests: p.base_tests(),
                plus_tests: p.plus_tests(),
                reference: Some(p.code.clone()),
                setup: p.setup(),
                entry_points: Vec::new(),
            })
            .collect()
    } else {
        let (rows, _) = load_rows(&path, &LoadOptions::default()).map_err(|e| e.to_string())?;
        rows.into_iter()
            .map(|r| EvalProblem {
                reference: r
                    .extra
                    .get("solution")
                    .and_then(|v| v.as_str())
                    .map(str::to_string),
                id: r.id,
                question: r.question,
                tests: r.test_cases,
                plus_tests: Vec::new(),
                setup: String::new(),
                entry_points: Vec::new(),
            })
            .collect()
    };
    if problems.is_empty() {
        return Err(format!("{}: no usable problems", path.display()));
    }
    Ok(problems)
}

/// EvalPlus tasks (HumanEval+ or MBPP+) as problems: base and plus tests.
fn evalplus_problems(path: &Path) -> Result<Vec<EvalProblem>, String> {
    Ok(evalplus::load(path)
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|p| EvalProblem {
            id: p.task_id.clone(),
            question: p.instruct_question(),
            tests: p.base_tests(),
            plus_tests: p.plus_tests(),
            reference: Some(p.reference()),
            setup: String::new(),
            entry_points: vec![p.entry_point.clone()],
        })
        .collect())
}

/// How to sample and judge.
#[derive(Debug, Clone)]
pub struct EvalSettings {
    /// n: samples per problem.
    pub samples: usize,
    /// The k of pass@k (each ≤ n).
    pub ks: Vec<usize>,
    /// Decoder, batch size and prompt limit (`group_size` is set to `samples`).
    pub rollout: RolloutConfig,
    /// Decoding seed (the same at every evaluation, so runs compare).
    pub seed: u64,
    /// System prompt of the chat template.
    pub system_prompt: String,
    /// Sandbox limits per test.
    pub limits: Limits,
}

/// One problem's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProblemResult {
    /// The problem's id.
    pub id: String,
    /// Samples drawn.
    pub samples: usize,
    /// Samples that passed every test.
    pub correct: usize,
    /// Unbiased pass@k for each k.
    pub pass_at_k: Vec<(usize, f64)>,
    /// Samples whose tests could not run (sandbox failure; not counted as correct).
    pub sandbox_errors: usize,
    /// The completions, in sample order.
    pub completions: Vec<String>,
    /// Whether each passed.
    pub passed: Vec<bool>,
    /// With plus tests: samples that passed the base and the plus tests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correct_plus: Option<usize>,
    /// With plus tests: pass@k over base and plus tests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass_at_k_plus: Option<Vec<(usize, f64)>>,
    /// With plus tests: whether each passed the base and the plus tests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passed_plus: Option<Vec<bool>>,
}

/// The whole evaluation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalReport {
    /// Per problem.
    pub problems: Vec<ProblemResult>,
    /// Mean over problems.
    pub pass_at_k: Vec<(usize, f64)>,
    /// Mean over problems of pass@k on base and plus tests (EvalPlus's "plus" score), when
    /// the problems have plus tests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass_at_k_plus: Option<Vec<(usize, f64)>>,
    /// Mean AR-ness of the samples' decode orders (absent for given completions).
    pub arness: Option<ArNess>,
    /// Samples whose tests could not run.
    pub sandbox_errors: usize,
    /// Tests failed because a value could not cross as plain data (with canonical
    /// solutions: the benchmark's coverage gap).
    #[serde(default)]
    pub non_data: NonDataCounts,
    /// Decoding wall time.
    pub generation_seconds: f64,
    /// Decoded tokens per second.
    pub tokens_per_second: f64,
    /// Tokens each sequence revealed per forward pass (K / forwards per decoding run).
    #[serde(default)]
    pub tokens_per_forward: f64,
    /// Mean |Δ log p| of tokens revealed on cached steps, when the cache was audited.
    #[serde(default)]
    pub cache_audit: Option<f64>,
    /// Total wall time.
    pub seconds: f64,
}

impl EvalReport {
    /// pass@k for one k, when it was computed.
    pub fn pass_at(&self, k: usize) -> Option<f64> {
        self.pass_at_k
            .iter()
            .find(|(x, _)| *x == k)
            .map(|(_, v)| *v)
    }

    /// A plain-text summary table.
    pub fn summary_table(&self) -> String {
        let n = self.problems.first().map_or(0, |p| p.samples);
        let mut s = format!(
            "problems {}  samples/problem {}  sandbox errors {}  tests failed as non-data: {} results, {} arguments\n",
            self.problems.len(),
            n,
            self.sandbox_errors,
            self.non_data.results,
            self.non_data.arguments
        );
        match &self.pass_at_k_plus {
            None => {
                for (k, v) in &self.pass_at_k {
                    s += &format!("pass@{k:<3} {:6.2}%\n", 100.0 * v);
                }
            }
            Some(plus) => {
                s += "         base      base+plus\n";
                for ((k, v), (_, p)) in self.pass_at_k.iter().zip(plus) {
                    s += &format!("pass@{k:<3} {:6.2}%   {:6.2}%\n", 100.0 * v, 100.0 * p);
                }
            }
        }
        if let Some(a) = &self.arness {
            let fmt = |v: &[f64]| {
                v.iter()
                    .map(|x| format!("{x:.3}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            s += &format!("AR-ness local@1..{}  {}\n", a.local.len(), fmt(&a.local));
            s += &format!("AR-ness global@1..{} {}\n", a.global.len(), fmt(&a.global));
        }
        if self.generation_seconds > 0.0 {
            s += &format!(
                "generation {:.1} s ({:.1} tok/s, {:.2} tokens per forward), total {:.1} s\n",
                self.generation_seconds,
                self.tokens_per_second,
                self.tokens_per_forward,
                self.seconds
            );
        }
        if let Some(d) = self.cache_audit {
            s += &format!("cache audit: mean |Δ log p| of cached-step tokens {d:.6}\n");
        }
        s
    }
}

/// Judges given completions (`completions[i]` are problem i's samples).
pub fn check_completions(
    problems: &[EvalProblem],
    completions: &[Vec<String>],
    ks: &[usize],
    pool: &SandboxPool,
    limits: Limits,
) -> EvalReport {
    let started = std::time::Instant::now();
    let results = pool.run_all(sandbox_jobs(problems, completions), limits);
    let mut report = judge(problems, completions, results, ks);
    report.seconds = started.elapsed().as_secs_f64();
    report
}

/// One sandbox job per sample, in problem-then-sample order.
fn sandbox_jobs(problems: &[EvalProblem], completions: &[Vec<String>]) -> Vec<Job> {
    let mut jobs = Vec::new();
    for (p, samples) in problems.iter().zip(completions) {
        for (j, c) in samples.iter().enumerate() {
            jobs.push(Job {
                id: format!("{}#{j}", p.id),
                solution: solution_code(c).to_string(),
                tests: p.tests.iter().chain(&p.plus_tests).cloned().collect(),
                check_syntax: false,
                setup: p.setup.clone(),
                entry_points: p.entry_points.clone(),
            });
        }
    }
    jobs
}

/// The report of `results` (in [`sandbox_jobs`] order) on the completions.
fn judge(
    problems: &[EvalProblem],
    completions: &[Vec<String>],
    results: Vec<JobResult>,
    ks: &[usize],
) -> EvalReport {
    let with_plus = problems.iter().any(|p| !p.plus_tests.is_empty());
    let non_data = NonDataCounts::of(&results);
    let mut results = results.into_iter();
    let mut out = Vec::with_capacity(problems.len());
    let mut sandbox_errors = 0;
    for (p, samples) in problems.iter().zip(completions) {
        let (mut passed, mut passed_plus) = (Vec::new(), Vec::new());
        let mut errors = 0;
        for _ in samples {
            let verdict = Verdict::of(results.next().as_ref(), p.tests.len());
            errors += usize::from(verdict.sandbox_error);
            passed.push(!p.tests.is_empty() && verdict.base);
            passed_plus.push(!p.tests.is_empty() && verdict.base && verdict.plus);
        }
        sandbox_errors += errors;
        let n = samples.len();
        let count = |v: &[bool]| v.iter().filter(|x| **x).count();
        let (correct, correct_plus) = (count(&passed), count(&passed_plus));
        out.push(ProblemResult {
            id: p.id.clone(),
            samples: n,
            correct,
            pass_at_k: pass_at_ks(n, correct, ks),
            sandbox_errors: errors,
            completions: samples.clone(),
            passed,
            correct_plus: with_plus.then_some(correct_plus),
            pass_at_k_plus: with_plus.then(|| pass_at_ks(n, correct_plus, ks)),
            passed_plus: with_plus.then_some(passed_plus),
        });
    }
    let pass_at_k = mean_pass_at_k(ks, out.iter().map(|r| &r.pass_at_k[..]));
    let pass_at_k_plus = with_plus
        .then(|| mean_pass_at_k(ks, out.iter().filter_map(|r| r.pass_at_k_plus.as_deref())));
    EvalReport {
        problems: out,
        pass_at_k,
        pass_at_k_plus,
        arness: None,
        sandbox_errors,
        non_data,
        generation_seconds: 0.0,
        tokens_per_second: 0.0,
        tokens_per_forward: 0.0,
        cache_audit: None,
        seconds: 0.0,
    }
}

/// One sample's verdict: base tests all passed, plus tests all passed, or the sandbox
/// failed (never a pass).
struct Verdict {
    base: bool,
    plus: bool,
    sandbox_error: bool,
}

impl Verdict {
    fn of(result: Option<&couplet_sandbox::JobResult>, base_tests: usize) -> Self {
        match result.filter(|r| r.pass_rate().is_some()) {
            None => Verdict {
                base: false,
                plus: false,
                sandbox_error: true,
            },
            Some(r) => {
                let (base, plus) = r.tests.split_at(base_tests.min(r.tests.len()));
                Verdict {
                    base: r.tests.len() >= base_tests && base.iter().all(|t| t.outcome.passed()),
                    plus: plus.iter().all(|t| t.outcome.passed()),
                    sandbox_error: false,
                }
            }
        }
    }
}

fn pass_at_ks(n: usize, correct: usize, ks: &[usize]) -> Vec<(usize, f64)> {
    ks.iter()
        .filter_map(|&k| pass_at_k(n, correct, k).map(|v| (k, v)))
        .collect()
}

/// The mean over problems of each k's pass@k (a k missing for any problem is left out).
fn mean_pass_at_k<'a>(
    ks: &[usize],
    per_problem: impl Iterator<Item = &'a [(usize, f64)]> + Clone,
) -> Vec<(usize, f64)> {
    ks.iter()
        .filter_map(|&k| {
            let values: Vec<Option<f64>> = per_problem
                .clone()
                .map(|r| r.iter().find(|(x, _)| *x == k).map(|v| v.1))
                .collect();
            let values: Option<Vec<f64>> = values.into_iter().collect();
            values
                .filter(|v| !v.is_empty())
                .map(|v| (k, v.iter().sum::<f64>() / v.len() as f64))
        })
        .collect()
}

/// The code a sample is judged on: its first ```python block, else the whole text.
pub fn solution_code(completion: &str) -> &str {
    if completion.contains("```python\n") {
        couplet_reward::extract_code(completion)
    } else {
        completion
    }
}

/// Samples `settings.samples` completions per problem from `model` and judges them; each
/// batch's tests run in the sandbox pool on a helper thread while the next batch decodes
/// (verdicts do not depend on timing). `progress(done, total)` is called after each batch.
pub fn evaluate(
    model: &LoadedModel,
    problems: &[EvalProblem],
    settings: &EvalSettings,
    pool: &SandboxPool,
    mut progress: impl FnMut(usize, usize),
) -> Result<EvalReport, String> {
    if settings.samples == 0 {
        return Err("samples must be at least 1".into());
    }
    if let Some(k) = settings
        .ks
        .iter()
        .find(|&&k| k == 0 || k > settings.samples)
    {
        return Err(format!(
            "pass@{k} needs 1 ≤ k ≤ samples ({})",
            settings.samples
        ));
    }
    let started = std::time::Instant::now();
    let mut cfg = settings.rollout.clone();
    cfg.group_size = settings.samples;
    let per_batch = (cfg.generation_batch_size / settings.samples).max(1);
    cfg.generation_batch_size = per_batch * settings.samples;
    let mut completions: Vec<Vec<String>> = Vec::with_capacity(problems.len());
    let mut arness = Vec::new();
    let (mut generation_seconds, mut tokens) = (0.0, 0.0);
    let (mut stats, mut chunks) = (DecodeStats::default(), 0);
    let results = std::thread::scope(|scope| -> Result<Vec<JobResult>, String> {
        let mut scoring = Vec::new();
        for (b, chunk) in problems.chunks(per_batch).enumerate() {
            let prompts: Vec<String> = chunk
                .iter()
                .map(|p| {
                    model
                        .tokenizer
                        .chat_prompt(&settings.system_prompt, &p.question)
                })
                .collect::<Result<_, _>>()
                .map_err(|e| e.to_string())?;
            let first = (b * per_batch * settings.samples) as u64;
            let rollout = generate_rollout(
                &model.model,
                &model.tokenizer,
                &prompts,
                &cfg,
                settings.seed,
                first,
            )
            .map_err(|e| e.to_string())?;
            generation_seconds += rollout.seconds;
            tokens += rollout.tokens_per_second() * rollout.seconds;
            stats.add(&rollout.stats);
            chunks += rollout.chunks;
            let batch: Vec<Vec<String>> = (0..chunk.len())
                .map(|i| {
                    (0..rollout.len())
                        .filter(|&r| rollout.prompt_index[r] == i)
                        .map(|r| rollout.texts[r].clone())
                        .collect()
                })
                .collect();
            let jobs = sandbox_jobs(chunk, &batch);
            scoring.push(scope.spawn(move || pool.run_all(jobs, settings.limits)));
            completions.extend(batch);
            arness.extend(rollout.arness);
            progress(
                (b * per_batch + chunk.len()).min(problems.len()),
                problems.len(),
            );
        }
        let mut results = Vec::new();
        for handle in scoring {
            let part = handle
                .join()
                .map_err(|_| "a sandbox scoring thread panicked".to_string())?;
            results.extend(part);
        }
        Ok(results)
    })?;
    let mut report = judge(problems, &completions, results, &settings.ks);
    report.arness = Some(ArNess::mean(&arness));
    report.generation_seconds = generation_seconds;
    report.tokens_per_second = tokens / generation_seconds.max(1e-9);
    let forwards_per_chunk = stats.forward_passes as f64 / chunks.max(1) as f64;
    report.tokens_per_forward = cfg.decoder.max_new_tokens() as f64 / forwards_per_chunk.max(1e-9);
    report.cache_audit = stats.mean_abs_dlogp();
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}
