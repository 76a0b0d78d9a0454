//! Data parallelism with two processes on Gloo (`couplet launch --nproc 2`): the same
//! global batch gives the same weights as one process, with and without ZeRO-1; only rank 0
//! writes; a two-rank run resumes from its checkpoint.

use couplet_testkit as common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::assert_ok;

use tch::Tensor;

/// A tiny model whose end-of-text logit swings from position to position, so completion
/// lengths — and with `soft_overlong` the rewards — differ inside a group.
fn model(dir: &Path) -> PathBuf {
    let out = common::tiny_model(dir, false, 1);
    let ckpt =
        couplet_model::LoadedModel::load(&out, couplet_model::LoadOptions::default()).unwrap();
    tch::no_grad(|| {
        let head = ckpt.model.var_store().variables()["lm_head.weight"].shallow_clone();
        let mut eos_row = head.get(0);
        let _ = eos_row.g_mul_scalar_(35.0);
    });
    couplet_model::save_model(&ckpt.model, &out, &couplet_model::SaveOptions::default()).unwrap();
    out
}

/// `couplet train` (through `couplet launch` when `ranks > 1`) on the tiny model: one
/// round of μ = 2 over 2 prompts × G = 2, then `extra` overrides.
fn train(
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

fn weights(checkpoint: &Path) -> Vec<(String, Tensor)> {
    let mut v = Tensor::read_safetensors(checkpoint.join("policy/model.safetensors")).unwrap();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn max_diff(a: &[(String, Tensor)], b: &[(String, Tensor)]) -> f64 {
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
fn metrics(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn two_ranks_equal_one_process_on_the_same_global_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let model = model(tmp.path());
    for (estimator, extra) in [
        ("coupled", &[][..]),
        ("d1", &[][..]),
        ("coupled", &["distributed.zero1=true"][..]),
    ] {
        let tag = format!("{estimator}-{}", extra.len());
        let one = tmp.path().join(format!("one-{tag}"));
        let two = tmp.path().join(format!("two-{tag}"));
        let single_extra: Vec<&str> = extra
            .iter()
            .copied()
            .filter(|s| !s.contains("zero1"))
            .collect();
        assert_ok(&train(&model, &one, estimator, 1, &single_extra));
        let out = train(&model, &two, estimator, 2, extra);
        assert_ok(&out);
        // One optimizer step: equal to 1e-6 (in practice bitwise).
        let diff = max_diff(
            &weights(&one.join("checkpoint-1")),
            &weights(&two.join("checkpoint-1")),
        );
        assert!(
            diff < 1e-6,
            "{tag}: one step, 2 ranks vs 1 process differ by {diff}"
        );
        // The round's second step: same rewards, same loss to rounding. Its weights are
        // only held to a few AdamW step sizes (lr = 1e-3): the micro-batch gradients are summed in
        // another order (and with another thread count), and m / sqrt(v) magnifies that
        // rounding wherever a gradient is tiny or changes sign between the two steps.
        // (The loss is an advantage-weighted sum that can nearly cancel: floor the scale.)
        let (ma, mb) = (metrics(&one), metrics(&two));
        for (x, y) in ma.iter().zip(&mb) {
            assert_eq!(x["reward"], y["reward"], "{tag}");
            let (lx, ly) = (x["loss"].as_f64().unwrap(), y["loss"].as_f64().unwrap());
            let scale = lx.abs().max(1e-2);
            assert!((lx - ly).abs() <= 1e-5 * scale, "{tag}: loss {lx} vs {ly}");
        }
        let a = weights(&one.join("checkpoint-2"));
        let b = weights(&two.join("checkpoint-2"));
        let before = Tensor::read_safetensors(model.join("model.safetensors")).unwrap();
        let moved = a
            .iter()
            .map(|(n, t)| {
                let (_, s) = before.iter().find(|(m, _)| m == n).unwrap();
                (t - s).abs().max().double_value(&[])
            })
            .fold(0.0, f64::max);
        assert!(
            moved > 1e-4,
            "{tag}: the steps did not move the weights ({moved})"
        );
        let diff = max_diff(&a, &b);
        eprintln!("{tag}: after two steps max |Δw| = {diff:e}");
        assert!(
            diff < 4e-3,
            "{tag}: two steps, 2 ranks vs 1 process differ by {diff}"
        );
        // Same optimizer state too (ZeRO-1 gathers its shards into the same file).
        let oa = Tensor::read_safetensors(one.join("checkpoint-1/optimizer.safetensors")).unwrap();
        let ob = Tensor::read_safetensors(two.join("checkpoint-1/optimizer.safetensors")).unwrap();
        let mut oa = oa;
        let mut ob = ob;
        oa.sort_by(|x, y| x.0.cmp(&y.0));
        ob.sort_by(|x, y| x.0.cmp(&y.0));
        assert!(max_diff(&oa, &ob) < 1e-6, "{tag}: optimizer state differs");
        // Rank 0 alone logs: one line per step.
        assert_eq!(mb.len(), 2, "{tag}");
    }
}

#[test]
fn two_ranks_resume_mid_round_and_refuse_another_world_size() {
    let tmp = tempfile::tempdir().unwrap();
    let model = model(tmp.path());
    let run = tmp.path().join("run");
    // Step 1 of a μ = 2 round: the checkpoint holds each rank's part of the buffer.
    let out = train(&model, &run, "coupled", 2, &["schedule.max_steps=1"]);
    assert_ok(&out);
    assert!(run.join("checkpoint-1/round_buffer.safetensors").exists());
    assert!(run
        .join("checkpoint-1/round_buffer-rank1.safetensors")
        .exists());
    let resumed = Command::new(env!("CARGO_BIN_EXE_couplet"))
        .current_dir(common::repo())
        .args([
            "launch",
            "--nproc",
            "2",
            "--",
            "train",
            "--config",
            "configs/tiny_cpu.toml",
        ])
        .args(sets(&model, &run, "coupled", 2))
        .args(["--resume", run.to_str().unwrap()])
        .output()
        .unwrap();
    assert_ok(&resumed);
    assert!(String::from_utf8_lossy(&resumed.stderr).contains("at step 1"));
    // The straight two-step run and the resumed one end with the same weights.
    let straight = tmp.path().join("straight");
    assert_ok(&train(&model, &straight, "coupled", 2, &[]));
    let diff = max_diff(
        &weights(&run.join("checkpoint-2")),
        &weights(&straight.join("checkpoint-2")),
    );
    assert!(diff == 0.0, "resumed run differs by {diff}");
    // One process cannot resume a two-rank checkpoint.
    let out = Command::new(env!("CARGO_BIN_EXE_couplet"))
        .current_dir(common::repo())
        .args(["train", "--config", "configs/tiny_cpu.toml"])
        .args(sets(&model, &run, "coupled", 1))
        .args(["--set", "schedule.max_steps=3"])
        .args(["--resume", run.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("written by 2 rank(s), resumed with 1"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The `--set` arguments of [`train`].
fn sets(model: &Path, run: &Path, estimator: &str, ranks: usize) -> Vec<String> {
    let backend = if ranks > 1 { "gloo" } else { "none" };
    [
        format!("model.path=\"{}\"", model.display()),
        format!("checkpointing.run_dir=\"{}\"", run.display()),
        format!("estimator.kind=\"{estimator}\""),
        "rollout.num_generations=2".into(),
        "rollout.prompts_per_step=2".into(),
        "rollout.generation_batch_size=4".into(),
        "rollout.max_new_tokens=8".into(),
        "rollout.steps=4".into(),
        "reward.functions=[{name=\"soft_overlong\", weight=1.0}, {name=\"code_format\", weight=0.5}]".into(),
        "reward.overlong_buffer=6".into(),
        "objective.beta=0.05".into(),
        "objective.num_iterations=2".into(),
        "optimizer.lr=1e-3".into(),
        "schedule.max_steps=2".into(),
        "schedule.micro_batch_size=1".into(),
        format!("schedule.gradient_accumulation_steps={}", 4 / ranks),
        "checkpointing.save_every=1".into(),
        "eval.every=0".into(),
        format!("distributed.backend=\"{backend}\""),
    ]
    .into_iter()
    .flat_map(|s| ["--set".to_string(), s])
    .collect()
}
