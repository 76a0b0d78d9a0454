//! The six methods added after coupled-GRPO's family run in every training mode the four
//! older ones do: two ranks equal one process on the same global batch, a run stopped
//! mid-round resumes bitwise (in bf16, so the f32 masters travel too), and LoRA trains.
//! Each method keeps its own defaults (β only where it has a KL term).

use couplet_testkit as common;

use std::path::Path;
use std::process::Command;

use common::assert_ok;
use run_helpers::{max_diff, metrics, model_with_eos_scale, sets, train, weights};
use tch::Tensor;

mod run_helpers;

const METHODS: [&str; 6] = ["espo", "wd1", "bgpo", "spg", "just_grpo", "trace_rl"];

/// The config warms the learning rate up from 0: without warmup the first step moves the
/// weights, so comparing checkpoint-1 compares an update.
const NO_WARMUP: [&str; 1] = ["schedule.warmup_steps=0"];

#[test]
fn two_ranks_equal_one_process_for_every_new_method() {
    let tmp = tempfile::tempdir().unwrap();
    for name in METHODS {
        let model = model_for(tmp.path(), name);
        let one = tmp.path().join(format!("one-{name}"));
        let two = tmp.path().join(format!("two-{name}"));
        assert_ok(&train(&model, &one, name, 1, &[]));
        assert_ok(&train(&model, &two, name, 2, &[]));
        assert_learned(name, &one);
        // Step 1 runs at lr 0 (warmup), so its checkpoint holds the first gradient in
        // AdamW's moments: the two runs sum the same micro-batch gradients in another
        // order, which moves them by a few f32 ulps (1e-6 is ~8 ulps at |m| ~ 1).
        let opt = |r: &Path| sorted(r.join("checkpoint-1/optimizer.safetensors"));
        let (oa, ob) = (opt(&one), opt(&two));
        let diff = max_diff(&oa, &ob);
        eprintln!("{name}: optimizer state after one step max |Δ| = {diff:e}");
        assert!(diff < 1e-6, "{name}: optimizer state differs by {diff}");
        let (ma, mb) = (metrics(&one), metrics(&two));
        assert_eq!(mb.len(), 2, "{name}: rank 0 alone logs, one line per step");
        for (x, y) in ma.iter().zip(&mb) {
            assert_eq!(x["reward"], y["reward"], "{name}: rewards differ");
            let (lx, ly) = (x["loss"].as_f64().unwrap(), y["loss"].as_f64().unwrap());
            let scale = lx.abs().max(1e-2);
            assert!((lx - ly).abs() <= 1e-5 * scale, "{name}: loss {lx} vs {ly}");
        }
        // After the second step (lr > 0) the weights are held to the same bound as the
        // older methods' test: AdamW's m / sqrt(v) magnifies the summation-order rounding
        // wherever a gradient is tiny, up to a few step sizes.
        let diff = max_diff(
            &weights(&one.join("checkpoint-2")),
            &weights(&two.join("checkpoint-2")),
        );
        eprintln!("{name}: after two steps max |Δw| = {diff:e}");
        assert!(diff < 4e-3, "{name}: 2 ranks vs 1 process differ by {diff}");
    }
}

#[test]
fn every_new_method_resumes_mid_round_bitwise_in_bf16() {
    let tmp = tempfile::tempdir().unwrap();
    let bf16 = ["model.dtype=\"bf16\""];
    for name in METHODS {
        let model = model_for(tmp.path(), name);
        let run = tmp.path().join(format!("resumed-{name}"));
        let straight = tmp.path().join(format!("straight-{name}"));
        // Step 1 is the first of the round's μ = 2 iterations: the resume needs the
        // round's rollouts and old scores (and TraceRL's reveal steps) from the checkpoint.
        assert_ok(&train(
            &model,
            &run,
            name,
            1,
            &[bf16[0], "schedule.max_steps=1"],
        ));
        let resumed = Command::new(env!("CARGO_BIN_EXE_couplet"))
            .current_dir(common::repo())
            .args(["train", "--config", "configs/tiny_cpu.toml"])
            .args(sets(&model, &run, name, 1))
            .args(["--set", bf16[0], "--resume", run.to_str().unwrap()])
            .output()
            .unwrap();
        assert_ok(&resumed);
        assert_ok(&train(&model, &straight, name, 1, &bf16));
        let policy = |r: &Path| weights(&r.join("checkpoint-2"));
        let diff = max_diff(&policy(&run), &policy(&straight));
        assert_eq!(diff, 0.0, "{name}: the resumed bf16 run differs by {diff}");
        let start = Tensor::read_safetensors(model.join("model.safetensors")).unwrap();
        let moved = moved_from(&start, &policy(&run));
        assert!(moved > 0.0, "{name}: two steps did not move the weights");
        assert_eq!(metrics(&run).len(), 2, "{name}: one metrics line per step");
        assert_learned(name, &run);
    }
}

#[test]
fn every_new_method_trains_lora_adapters() {
    let tmp = tempfile::tempdir().unwrap();
    for name in METHODS {
        let model = model_for(tmp.path(), name);
        let run = tmp.path().join(format!("lora-{name}"));
        let lora = [
            "lora.rank=4",
            "lora.alpha=8.0",
            "reference.sync=false",
            "schedule.max_steps=2",
            NO_WARMUP[0],
        ];
        assert_ok(&train(&model, &run, name, 1, &lora));
        let adapter = run.join("checkpoint-2/adapter/adapter_model.safetensors");
        let trained = Tensor::read_safetensors(&adapter)
            .unwrap_or_else(|e| panic!("{name}: no adapter at {}: {e}", adapter.display()));
        // PEFT initialises B = 0: any non-zero B means the adapters were trained.
        let b_norm = trained
            .iter()
            .filter(|(n, _)| n.contains("lora_B"))
            .map(|(_, t)| t.abs().max().double_value(&[]))
            .fold(0.0, f64::max);
        assert_learned(name, &run);
        assert!(b_norm > 0.0, "{name}: LoRA B stayed at zero");
        for line in metrics(&run) {
            let loss = line["loss"].as_f64().unwrap();
            assert!(loss.is_finite(), "{name}: loss {loss}");
        }
    }
}

/// The tiny test model in its own folder under `dir`, with a mild end-of-text boost (6):
/// completions end after 2–3 tokens or run on, so rewards differ inside a group under
/// every method's rollout — strictly left-to-right (JustGRPO) and bf16 included, where the
/// strong boost of the older tests ends every completion at its first token.
fn model_for(dir: &Path, name: &str) -> std::path::PathBuf {
    let dir = dir.join(format!("model-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    model_with_eos_scale(&dir, 6.0)
}

/// Asserts that some step of `run` had a non-zero gradient (rewards differed in a group),
/// so the comparison compares an update.
fn assert_learned(name: &str, run: &Path) {
    let lines = metrics(run);
    assert!(
        lines.iter().any(|m| m["grad_norm"].as_f64().unwrap() > 0.0),
        "{name}: no step had a gradient (equal rewards in every group): {lines:?}"
    );
}

fn sorted(file: std::path::PathBuf) -> Vec<(String, Tensor)> {
    let mut v = Tensor::read_safetensors(&file).unwrap();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// The largest absolute change of any weight from `start`.
fn moved_from(start: &[(String, Tensor)], now: &[(String, Tensor)]) -> f64 {
    now.iter()
        .map(|(n, t)| {
            let (_, s) = start.iter().find(|(m, _)| m == n).unwrap();
            (t.to_kind(tch::Kind::Float) - s.to_kind(tch::Kind::Float))
                .abs()
                .max()
                .double_value(&[])
        })
        .fold(0.0, f64::max)
}
