//! SFT with the masked-diffusion objective lowers the loss on a toy set in a few steps.

mod common;

use std::path::{Path, PathBuf};

use couplet_model::{init_model_folder, LoadOptions, LoadedModel, Preset};
use couplet_trainer::{build_example, sft_loss, sft_step, SftSettings};

/// A tiny random model on the CPU tokenizer, written into `dir` and loaded back.
fn tiny_checkpoint(dir: &Path) -> LoadedModel {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = dir.join("m");
    init_model_folder(
        Preset::Tiny.config(4096),
        &repo.join("data/tokenizer-cpu/tokenizer.json"),
        &dir,
        0,
    )
    .unwrap();
    LoadedModel::load(&dir, LoadOptions::default()).unwrap()
}

#[test]
fn sft_reduces_the_masked_diffusion_loss() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = tiny_checkpoint(tmp.path());
    let tok = &ckpt.tokenizer;
    let examples: Vec<_> = [
        ("Add one to x.", "def f(x):\n    return x + 1\n"),
        ("Double s.", "def g(s):\n    return s * 2\n"),
        (
            "Keep positives.",
            "def h(xs):\n    return [x for x in xs if x > 0]\n",
        ),
    ]
    .iter()
    .map(|(q, s)| build_example(tok, "You are a helpful assistant.", q, s, 64, 0).unwrap())
    .collect();
    assert!(examples
        .iter()
        .all(|e| e.answer.last() == tok.special().im_end.as_ref()));
    let settings = SftSettings {
        mask_id: tok.special().mask,
        pad: tok.special().pad,
        eps: 1e-3,
        seed: 5,
        pad_weight: 1.0,
    };
    // Evaluate with fixed masks (a step key never used for training).
    let eval = || {
        tch::no_grad(|| {
            sft_loss(&ckpt.model, &settings, &examples, 1 << 30, 0)
                .0
                .double_value(&[])
        })
    };
    let before = eval();
    let mut opt = common::adamw(&ckpt.model, 3e-3);
    let mut losses = Vec::new();
    for step in 0..30 {
        let loss = sft_step(&ckpt.model, &mut opt, 3e-3, &settings, &examples, step, 0);
        assert!(loss.is_finite(), "step {step}: {loss}");
        losses.push(loss);
    }
    let after = eval();
    assert!(
        after < 0.7 * before,
        "masked-diffusion loss {before:.3} → {after:.3}"
    );
    let early: f64 = losses[..5].iter().sum::<f64>() / 5.0;
    let late: f64 = losses[25..].iter().sum::<f64>() / 5.0;
    assert!(late < early, "training loss {early:.3} → {late:.3}");
}

#[test]
fn pad_weight_scales_only_the_padding() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = tiny_checkpoint(tmp.path());
    let tok = &ckpt.tokenizer;
    let build = |length| {
        vec![build_example(
            tok,
            "",
            "Add one.",
            "def f(x):\n    return x + 1\n",
            64,
            length,
        )
        .unwrap()]
    };
    let loss = |examples: &[couplet_trainer::SftExample], pad_weight| {
        let settings = SftSettings {
            mask_id: tok.special().mask,
            pad: tok.special().pad,
            eps: 1e-3,
            seed: 5,
            pad_weight,
        };
        tch::no_grad(|| {
            sft_loss(&ckpt.model, &settings, examples, 7, 0)
                .0
                .double_value(&[])
        })
    };
    let bare = build(0);
    let padded = build(48);
    assert_eq!(padded[0].answer_tokens, bare[0].answer.len());
    assert_eq!(padded[0].answer.len(), 48);
    // Without padding the weight has nothing to scale.
    assert_eq!(loss(&bare, 1.0), loss(&bare, 0.25));
    // With padding it changes the loss, and it stays a per-token average (same scale).
    let (full, light) = (loss(&padded, 1.0), loss(&padded, 0.25));
    assert!(full.is_finite() && light.is_finite() && (full - light).abs() > 1e-6);
    assert!(
        light < 10.0 * full && full < 10.0 * light,
        "{full} vs {light}"
    );
}
