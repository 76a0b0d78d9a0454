//! `couplet` with no arguments: the whole pipeline on a few held-out tasks.
//!
//! The demo model (`data/demo-model`, built by `scripts/setup.sh`) answers the first task of
//! each of three templates in the CPU demo's validation set, decoded exactly as the demo
//! run's validation decodes (`configs/tiny_cpu.toml`: its decoder, steps, evaluation
//! temperature and seed); each answer's code runs against the task's tests in the sandbox
//! that training uses, and the training reward is computed from those outcomes. What the
//! model gets wrong is shown as wrong: the point is to see every stage work, not a score.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use couplet_model::{random, LoadOptions, LoadedModel};
use couplet_reward::{extract_code, score_batch, RewardBatch};
use couplet_rollout::{generate_rollout, RolloutConfig};
use couplet_sandbox::{JobResult, Outcome, SandboxPool};
use couplet_trainer::{load_benchmark, EvalProblem, TrainConfig};

/// The demo's config: the CPU demo run's, so the screen shows what training will see.
const CONFIG: &str = "configs/tiny_cpu.toml";
/// Tasks shown: the first of this many templates of the validation set.
const TASKS: usize = 3;
/// The next commands to try, with what each does.
const NEXT: [(&str, &str); 5] = [
    (
        "couplet train",
        "the CPU demo: 30 coupled-GRPO steps on these tasks (~5 min on 2 cores)",
    ),
    (
        "couplet eval --model runs/tiny_cpu --benchmark data/tasks/val.jsonl",
        "pass@1 of the trained policy",
    ),
    (
        "couplet generate --model data/demo-model --prompt \"...\"",
        "decode your own prompt",
    ),
    (
        "couplet ablate --algorithms coupled,espo,spg --seeds 3",
        "methods side by side, with a report",
    ),
    ("docs/SUMMARY.md", "the guide: one page per task"),
];

pub fn run() -> Result<()> {
    let repo = std::env::current_dir()?;
    if !repo.join(CONFIG).exists() {
        bail!("{CONFIG} not found: run `couplet` from the repository root");
    }
    let config = TrainConfig::load(&repo.join(CONFIG), &[]).map_err(anyhow::Error::msg)?;
    let model_dir = repo.join(&config.model.path);
    if !model_dir.join("model.safetensors").exists() {
        bail!(
            "the demo model is not built yet ({} has no model.safetensors).\n\
             `scripts/setup.sh` builds it (or `scripts/make-demo-model.sh` alone: a 5 M-parameter \
             Dream model, supervised on the synthetic task family, about 10 minutes on 2 cores); \
             then run `couplet` again.",
            model_dir.display()
        );
    }
    let Some(validation) = config.data.validation.as_ref().map(|v| repo.join(v)) else {
        bail!("{CONFIG}: `data.validation` is not set; the demo shows its held-out tasks");
    };
    let problems = load_benchmark(&validation.to_string_lossy(), &repo)
        .map_err(|e| anyhow::anyhow!("{}: {e}", validation.display()))?;
    let tasks = first_of_each_template(&problems, TASKS);
    let model = LoadedModel::load(&model_dir, LoadOptions::default())
        .with_context(|| format!("loading {}", model_dir.display()))?;
    println!(
        "Couplet: the demo model ({}, {:.1} M parameters) answers {} held-out tasks of the CPU demo \
         ({}); each answer runs against the task's tests in the sandbox, and the reward is the \
         one `couplet train` optimises.\n",
        config.model.path.display(),
        model.model.num_parameters() as f64 / 1e6,
        tasks.len(),
        validation.strip_prefix(&repo).unwrap_or(&validation).display(),
    );
    let (texts, lengths, seconds) = decode(&model, &config, &tasks)?;
    let pool = open_sandbox(&config, &repo)?;
    let tests: Vec<Vec<String>> = tasks.iter().map(|p| p.tests.clone()).collect();
    let reward_config = config.reward.reward_config(config.rollout.max_new_tokens);
    let rewards = score_batch(
        &texts,
        &lengths,
        &tests,
        &reward_config,
        &pool,
        config.sandbox.limits(),
    );
    for (i, task) in tasks.iter().enumerate() {
        show_task(
            i,
            task,
            &texts[i],
            lengths[i],
            &rewards,
            pool.backend_name(),
        );
    }
    let solved = (0..tasks.len())
        .filter(|&i| all_passed(rewards.jobs[i].as_ref(), tasks[i].tests.len()))
        .count();
    println!(
        "{solved} of {} answers pass every test (decoding {seconds:.1} s on the CPU; the demo \
         model passes about half of the 156 validation tasks before RL).\n",
        tasks.len()
    );
    println!("Next:");
    for (command, what) in NEXT {
        println!("  {command:<68} # {what}");
    }
    Ok(())
}

/// The first problem of each of the first `n` templates, in file order (ids are
/// `val-<template>-<index>`): a fixed choice, not a selection of what the model solves.
fn first_of_each_template(problems: &[EvalProblem], n: usize) -> Vec<EvalProblem> {
    let mut seen: Vec<&str> = Vec::new();
    let mut out = Vec::new();
    for p in problems {
        let template = p.id.rsplit_once('-').map_or(p.id.as_str(), |(t, _)| t);
        if !seen.contains(&template) && out.len() < n {
            seen.push(template);
            out.push(p.clone());
        }
    }
    out
}

/// Decodes one answer per task with the demo config's validation settings.
fn decode(
    model: &LoadedModel,
    config: &TrainConfig,
    tasks: &[EvalProblem],
) -> Result<(Vec<String>, Vec<usize>, f64)> {
    let decoder = config
        .rollout
        .decoder_settings(config.eval.temperature)
        .build()?;
    let rollout_config = RolloutConfig::new(
        decoder,
        1,
        config.rollout.generation_batch_size,
        Some(config.data.max_prompt_length),
    );
    let prompts = tasks
        .iter()
        .map(|p| {
            model
                .tokenizer
                .chat_prompt(&config.data.system_prompt, &p.question)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let started = Instant::now();
    let seed = random::bits(config.seed, random::stream::VALIDATION, 0);
    let rollout = generate_rollout(
        &model.model,
        &model.tokenizer,
        &prompts,
        &rollout_config,
        seed,
        0,
    )?;
    Ok((
        rollout.texts,
        rollout.completion_lengths,
        started.elapsed().as_secs_f64(),
    ))
}

/// The sandbox of the demo config (WebAssembly by default), with its isolation note.
fn open_sandbox(config: &TrainConfig, repo: &Path) -> Result<SandboxPool> {
    let backend = config.sandbox.backend_spec(repo).open()?;
    if let Some(note) = backend.isolation_note() {
        eprintln!("{note}");
    }
    Ok(SandboxPool::new(backend, config.sandbox.workers)?)
}

/// One task: the question, the decoded code, each test's outcome and the reward.
fn show_task(
    i: usize,
    task: &EvalProblem,
    text: &str,
    length: usize,
    rewards: &RewardBatch,
    backend: &str,
) {
    println!("── task {}: {} ──", i + 1, task.id);
    println!("{}\n", task.question);
    let code = extract_code(text);
    if code.trim().is_empty() {
        println!("decoded answer ({length} tokens), no code in it:");
        println!("    {}", text.trim().replace('\n', "\n    "));
    } else {
        println!("decoded code ({length} tokens):");
        for line in code.trim_end().lines() {
            println!("    {line}");
        }
    }
    println!();
    match &rewards.jobs[i] {
        None => println!("tests: not run (no ```python block to run; the format reward is 0)"),
        Some(job) => show_tests(task, job, backend),
    }
    let terms: Vec<String> = rewards
        .per_function
        .iter()
        .map(|(kind, values)| format!("{} {:.2}", kind.name(), values[i]))
        .collect();
    println!("reward {:.2}  ({})\n", rewards.total[i], terms.join(", "));
}

/// Each test with its outcome from the sandbox.
fn show_tests(task: &EvalProblem, job: &JobResult, backend: &str) {
    if let Some(error) = &job.sandbox_error {
        println!("tests: the sandbox failed ({error}); no verdict");
        return;
    }
    let passed = job.tests.iter().filter(|t| t.outcome.passed()).count();
    println!(
        "tests in the sandbox ({backend}): {passed} of {} pass",
        task.tests.len()
    );
    for (test, result) in task.tests.iter().zip(&job.tests) {
        let verdict = match &result.outcome {
            Outcome::Passed => "pass".to_string(),
            Outcome::Failed { error } => format!("FAIL ({error})"),
            Outcome::Timeout => "FAIL (timeout)".into(),
            Outcome::Memory => "FAIL (memory cap)".into(),
            Outcome::OutputLimit => "FAIL (output flood)".into(),
            Outcome::Crashed { detail } => format!("FAIL (crashed: {detail})"),
        };
        println!("  {verdict:<24} {test}");
    }
}

/// Whether a job ran every one of `tests` and all passed.
fn all_passed(job: Option<&JobResult>, tests: usize) -> bool {
    job.is_some_and(|j| j.tests.len() == tests && j.tests.iter().all(|t| t.outcome.passed()))
}
