//! What the multi-process and training-mode tests share: a tiny model whose rewards
//! differ inside a group, `couplet train` on it (one process or `couplet launch`), and
//! readers of checkpoints and metrics.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use couplet_testkit as common;
use tch::Tensor;

/// A tiny model whose end-of-text logit swings from position to position, so completion
/// lengths — and with `soft_overlong` the rewards — differ inside a group.
pub fn model(dir: &Path) -> PathBuf {
    model_with_eos_scale(dir, 35.0)
}

/// The tiny model with its end-of-text head row scaled by `scale`: 35 makes diffusion
/// decoding end at varied positions; strictly left-to-right decoding (JustGRPO) needs a
/// milder 6, or every completion ends at its first token.
pub fn model_with_eos_scale(dir: &Path, scale: f64) -> PathBuf {
    let out = common::tiny_model(dir, false, 1);
    let ckpt =
        couplet_model::LoadedModel::load(&out, couplet_model::LoadOptions::default()).unwrap();
    tch::no_grad(|| {
        let head = ckpt.model.var_store().variables()["lm_head.weight"].shallow_clone();
        let mut eos_row = head.get(0);
        let _ = eos_row.g_mul_scalar_(scale);
    });
    couplet_model::save_model(&ckpt.model, &out, &couplet_model::SaveOptions::default()).unwrap();
    out
}

/// `couplet train` (through `couplet launch` when `ranks > 1`) on the tiny model: one
/// round of μ = 2 over 2 prompts × G = 2, then `extra` overrides.
pub fn train(
    model: &Path,
    run: &Path,
    estimator: &str,
    ranks: usize,
    extra: &[&str],
) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_couplet"));
    if ranks > 1 {
        cmd.args(["launch", "--nproc", &ranks.to_string(), "--"]);
    }
    cmd.args(["train", "--config", "configs/tiny_cpu.toml"])
        .args(sets(model, run, estimator, ranks));
    for s in extra {
        cmd.args(["--set", s]);
    }
    cmd.current_dir(common::repo()).output().unwrap()
}

pub fn weights(checkpoint: &Path) -> Vec<(String, Tensor)> {
    let mut v = Tensor::read_safetensors(checkpoint.join("policy/model.safetensors")).unwrap();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

pub fn max_diff(a: &[(String, Tensor)], b: &[(String, Tensor)]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|((n, x), (m, y))| {
            assert_eq!(n, m);
            (x - y).abs().max().double_value(&[])
        })
        .fold(0.0, f64::max)
}

/// Every step's metrics of a run, from `metrics.jsonl`.
pub fn metrics(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The `--set` arguments of [`train`].
pub fn sets(model: &Path, run: &Path, estimator: &str, ranks: usize) -> Vec<String> {
    let backend = if ranks > 1 { "gloo" } else { "none" };
    [
        format!("model.path=\"{}\"", model.display()),
        format!("checkpointing.run_dir=\"{}\"", run.display()),
        format!("algorithm.name=\"{estimator}\""),
        "rollout.num_generations=2".into(),
        "rollout.prompts_per_step=2".into(),
        "rollout.generation_batch_size=4".into(),
        "rollout.max_new_tokens=8".into(),
        "rollout.steps=4".into(),
        "reward.functions=[{name=\"soft_overlong\", weight=1.0}, {name=\"code_format\", weight=0.5}]".into(),
        "reward.overlong_buffer=6".into(),
        "schedule.num_iterations=2".into(),
        "optimizer.lr=1e-3".into(),
        "schedule.max_steps=2".into(),
        "schedule.micro_batch_size=1".into(),
        format!("schedule.gradient_accumulation_steps={}", 4 / ranks),
        "checkpointing.save_every=1".into(),
        "eval.every=0".into(),
        format!("distributed.backend=\"{backend}\""),
    ]
    .into_iter()
    .chain(method_sets(estimator))
    .flat_map(|s| ["--set".to_string(), s])
    .collect()
}

/// What a method needs on top of the shared settings: β = 0.05 for the methods with a KL
/// term (so the reference or old-policy KL is exercised), JustGRPO's strict left-to-right
/// rollouts of 8 tokens, SPG's blocks of 4.
fn method_sets(name: &str) -> Vec<String> {
    match name {
        "coupled" | "d1" | "full_mask" | "decoupled" | "espo" | "trace_rl" => {
            vec!["algorithm.beta=0.05".into()]
        }
        "just_grpo" => [
            "rollout.decoder=\"block\"",
            "rollout.block_length=1",
            "rollout.steps=8",
            "rollout.temperature=1.0",
            "rollout.cache=\"none\"",
        ]
        .map(String::from)
        .to_vec(),
        // The released block length (32) needs at least num_t = 2 blocks of completion.
        "spg" => vec!["algorithm.block_length=4".into()],
        _ => Vec::new(),
    }
}
