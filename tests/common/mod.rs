//! Helpers shared by the integration tests: repository paths, tiny model folders, and the
//! plain-PyTorch reference run by the project's `.venv` python.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use couplet_model::{init_model_folder, DreamConfig, Preset};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn python() -> PathBuf {
    let p = repo().join(".venv/bin/python");
    assert!(p.exists(), "{} missing: run scripts/setup.sh", p.display());
    p
}

pub fn cpu_tokenizer() -> PathBuf {
    repo().join("data/tokenizer-cpu/tokenizer.json")
}

pub fn qwen_tokenizer() -> PathBuf {
    let p = repo().join(".cache/assets/qwen2.5-tokenizer/tokenizer.json");
    assert!(p.exists(), "{} missing: run scripts/setup.sh", p.display());
    p
}

/// The tiny preset with weights large enough (std 0.3) that attention is far from uniform,
/// so a mistake in rotary embeddings, masking or head grouping changes the logits visibly.
pub fn tiny_config(tied: bool) -> DreamConfig {
    let mut cfg = Preset::Tiny.config(4096);
    cfg.tie_word_embeddings = tied;
    cfg.initializer_range = 0.3;
    cfg
}

/// Writes a tiny random model with the CPU tokenizer into `dir`.
pub fn tiny_model(dir: &Path, tied: bool, seed: i64) -> PathBuf {
    let out = dir.join(if tied { "tiny-tied" } else { "tiny" });
    init_model_folder(tiny_config(tied), &cpu_tokenizer(), &out, seed).expect("init tiny model");
    out
}

/// Runs `tests/reference/dream_ref.py ARGS...`, panicking with its stderr on failure.
pub fn reference(args: &[&str]) {
    let script = repo().join("tests/reference/dream_ref.py");
    let out = Command::new(python())
        .arg(&script)
        .args(args)
        .env("OMP_NUM_THREADS", "1")
        .output()
        .expect("run python reference");
    assert!(
        out.status.success(),
        "reference {:?} failed:\n{}",
        args,
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn read_f32(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).expect("read reference output");
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}
