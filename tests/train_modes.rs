//! Training modes of one process: bf16 mixed precision and LoRA resume exactly like f32
//! full fine-tuning; a LoRA checkpoint is a PEFT folder that `generate --adapter` and
//! `couplet merge-lora` read.

use couplet_testkit as common;

use std::path::Path;
use std::process::Command;

use common::assert_ok;
use run_helpers::{max_diff, model, sets, train};
use tch::{Kind, Tensor};

mod run_helpers;

fn read_sorted(file: &Path) -> Vec<(String, Tensor)> {
    let mut v = Tensor::read_safetensors(file).unwrap();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Step 1 (mid-round), then `--resume` to step 2, against the straight two-step run; both
/// with `extra`. Returns (resumed run, straight run).
fn resume_and_straight(tmp: &Path, extra: &[&str]) -> (std::path::PathBuf, std::path::PathBuf) {
    let model = model(tmp);
    let run = tmp.join("run");
    let mut first = extra.to_vec();
    first.push("schedule.max_steps=1");
    assert_ok(&train(&model, &run, "coupled", 1, &first));
    let resumed = Command::new(env!("CARGO_BIN_EXE_couplet"))
        .current_dir(common::repo())
        .args(["train", "--config", "configs/tiny_cpu.toml"])
        .args(sets(&model, &run, "coupled", 1))
        .args(extra.iter().flat_map(|s| ["--set", s]))
        .args(["--resume", run.to_str().unwrap()])
        .output()
        .unwrap();
    assert_ok(&resumed);
    let straight = tmp.join("straight");
    assert_ok(&train(&model, &straight, "coupled", 1, extra));
    (run, straight)
}

#[test]
fn bf16_mixed_precision_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let (run, straight) = resume_and_straight(tmp.path(), &["model.dtype=\"bf16\""]);
    let policy = |r: &Path| read_sorted(&r.join("checkpoint-2/policy/model.safetensors"));
    let (a, b) = (policy(&run), policy(&straight));
    assert!(
        a.iter().all(|(_, t)| t.kind() == Kind::BFloat16),
        "bf16 weights saved"
    );
    assert_eq!(max_diff(&a, &b), 0.0, "resumed bf16 run differs");
    // The f32 masters travel with the optimizer state and resume exactly too.
    let opt = |r: &Path| read_sorted(&r.join("checkpoint-2/optimizer.safetensors"));
    let (oa, ob) = (opt(&run), opt(&straight));
    let masters = oa.iter().filter(|(n, _)| n.starts_with("master/")).count();
    assert_eq!(masters, a.len(), "one f32 master per parameter");
    assert!(oa.iter().all(|(_, t)| t.kind() == Kind::Float));
    assert_eq!(max_diff(&oa, &ob), 0.0, "optimizer state differs");
}

#[test]
fn lora_resumes_exactly_and_its_adapter_folder_serves_generate_and_merge() {
    let tmp = tempfile::tempdir().unwrap();
    let lora = [
        "lora.rank=4",
        "lora.alpha=8.0",
        "lora.dropout=0.1",
        "reference.sync=false",
    ];
    let (run, straight) = resume_and_straight(tmp.path(), &lora);
    let ckpt = run.join("checkpoint-2");
    assert!(
        !ckpt.join("policy").exists(),
        "the frozen base is not saved"
    );
    let adapter = ckpt.join("adapter");
    let tensors = |dir: &Path| read_sorted(&dir.join("adapter_model.safetensors"));
    let (a, b) = (
        tensors(&adapter),
        tensors(&straight.join("checkpoint-2/adapter")),
    );
    assert_eq!(max_diff(&a, &b), 0.0, "resumed LoRA run differs");
    assert!(a
        .iter()
        .all(|(n, _)| n.starts_with("base_model.model.model.layers.")));
    let moved = a
        .iter()
        .filter(|(n, _)| n.contains("lora_B"))
        .map(|(_, t)| t.abs().max().double_value(&[]))
        .fold(0.0, f64::max);
    assert!(moved > 0.0, "training moved B away from 0");
    // The optimizer held only the adapters.
    let opt = read_sorted(&ckpt.join("optimizer.safetensors"));
    assert_eq!(opt.len(), 2 * a.len());

    // generate --adapter and the merged folder decode the same greedy text.
    let base = tmp.path().join("tiny");
    let generate = |model: &Path, adapter: Option<&Path>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_couplet"));
        cmd.args(["generate", "--model", model.to_str().unwrap()])
            .args([
                "--prompt",
                "def add(a, b):",
                "--max-new-tokens",
                "12",
                "--steps",
                "12",
            ]);
        if let Some(dir) = adapter {
            cmd.args(["--adapter", dir.to_str().unwrap()]);
        }
        let out = cmd.output().unwrap();
        assert_ok(&out);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let merged = tmp.path().join("merged");
    let out = Command::new(env!("CARGO_BIN_EXE_couplet"))
        .args(["merge-lora", "--base", base.to_str().unwrap()])
        .args([
            "--adapter",
            adapter.to_str().unwrap(),
            "--out",
            merged.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_ok(&out);
    let with_adapter = generate(&base, Some(&adapter));
    assert_eq!(with_adapter, generate(&merged, None));
    let base_w = read_sorted(&base.join("model.safetensors"));
    let merged_w = read_sorted(&merged.join("model.safetensors"));
    assert!(
        max_diff(&base_w, &merged_w) > 0.0,
        "merging changed the weights"
    );
}

#[test]
fn lora_on_a_bf16_base_trains() {
    let tmp = tempfile::tempdir().unwrap();
    let model = model(tmp.path());
    let run = tmp.path().join("run");
    let extra = [
        "model.dtype=\"bf16\"",
        "lora.rank=2",
        "lora.target_modules=[\"q_proj\", \"v_proj\"]",
        "reference.sync=false",
        "schedule.max_steps=1",
    ];
    assert_ok(&train(&model, &run, "coupled", 1, &extra));
    let adapter = read_sorted(&run.join("checkpoint-1/adapter/adapter_model.safetensors"));
    assert_eq!(adapter.len(), 2 * 2 * 2, "2 layers × 2 targets × (A, B)");
    assert!(
        adapter.iter().all(|(_, t)| t.kind() == Kind::Float),
        "f32 adapters"
    );
}

#[test]
fn lora_refuses_a_synced_reference() {
    let tmp = tempfile::tempdir().unwrap();
    let model = model(tmp.path());
    let out = train(
        &model,
        &tmp.path().join("run"),
        "coupled",
        1,
        &["lora.rank=2", "reference.sync=true"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("reference.sync"), "{err}");
}
