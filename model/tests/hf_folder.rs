//! Hugging Face checkpoint folders: round trips and every documented error case.

use couplet_testkit as common;

use std::path::Path;

use couplet_model::{load_model, save_model, LoadOptions, ModelError, SaveOptions};
use tch::{Kind, Tensor};

fn same_weights(a: &couplet_model::DreamModel, b: &couplet_model::DreamModel) {
    let va = a.var_store().variables();
    let vb = b.var_store().variables();
    assert_eq!(va.len(), vb.len());
    for (name, t) in va {
        let diff = (&t - &vb[&name]).abs().max().double_value(&[]);
        assert_eq!(diff, 0.0, "{name} differs");
    }
}

fn error_text(dir: &Path) -> String {
    match load_model(dir, LoadOptions::default()) {
        Ok(_) => panic!("{} loaded but should not have", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn single_file_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::tiny_model(tmp.path(), false, 1);
    let a = load_model(&dir, LoadOptions::default()).unwrap();
    let out = tmp.path().join("saved");
    save_model(
        &a,
        &out,
        &SaveOptions {
            assets_from: Some(dir.clone()),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(out.join("model.safetensors").exists());
    assert!(!out.join("model.safetensors.index.json").exists());
    assert!(
        out.join("tokenizer.json").exists(),
        "tokenizer copied along"
    );
    assert!(out.join("generation_config.json").exists());
    let b = load_model(&out, LoadOptions::default()).unwrap();
    same_weights(&a, &b);
}

#[test]
fn sharded_round_trip_and_python_reads_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::tiny_model(tmp.path(), true, 2);
    let a = load_model(&dir, LoadOptions::default()).unwrap();
    let out = tmp.path().join("sharded");
    let opts = SaveOptions {
        max_shard_bytes: 200_000,
        assets_from: Some(dir.clone()),
        ..Default::default()
    };
    save_model(&a, &out, &opts).unwrap();
    let index: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("model.safetensors.index.json")).unwrap(),
    )
    .unwrap();
    let files: std::collections::BTreeSet<&str> = index["weight_map"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(files.len() >= 3, "expected several shards, got {files:?}");
    assert!(!out.join("model.safetensors").exists());
    assert!(
        index["weight_map"].get("lm_head.weight").is_none(),
        "tied head not duplicated"
    );
    let b = load_model(&out, LoadOptions::default()).unwrap();
    same_weights(&a, &b);

    // The independent reader (plain PyTorch) gets the same logits from the sharded folder.
    let request = tmp.path().join("req.json");
    std::fs::write(
        &request,
        r#"{"ids": [[1, 2, 3, 4, 5]], "attention_mask": null}"#,
    )
    .unwrap();
    let bin = tmp.path().join("out.bin");
    common::reference(&[
        "forward",
        out.to_str().unwrap(),
        request.to_str().unwrap(),
        bin.to_str().unwrap(),
    ]);
    let want = common::read_f32(&bin);
    let got = Vec::<f32>::try_from(
        &b.forward_logits(&Tensor::from_slice2(&[[1i64, 2, 3, 4, 5]]), None)
            .reshape([-1]),
    )
    .unwrap();
    let max = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    // Two implementations, two summation orders (see `model_parity.rs`).
    let magnitude = want.iter().fold(0f32, |m, x| m.max(x.abs())) as f64;
    let cfg = b.config();
    let tol = common::f32_order_tolerance(
        magnitude,
        cfg.intermediate_size as usize,
        cfg.num_hidden_layers as usize + 1,
    );
    assert!(f64::from(max) <= tol, "max diff {max} > tolerance {tol}");
}

#[test]
fn bf16_save_and_load() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::tiny_model(tmp.path(), false, 4);
    let a = load_model(&dir, LoadOptions::default()).unwrap();
    let out = tmp.path().join("bf16");
    save_model(
        &a,
        &out,
        &SaveOptions {
            kind: Some(Kind::BFloat16),
            ..Default::default()
        },
    )
    .unwrap();
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["torch_dtype"], "bfloat16");
    let b = load_model(
        &out,
        LoadOptions {
            kind: Some(Kind::BFloat16),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(b.kind(), Kind::BFloat16);
    let wa = &a.var_store().variables()["model.norm.weight"];
    let wb = b.var_store().variables()["model.norm.weight"].to_kind(Kind::Float);
    assert!((wa - wb).abs().max().double_value(&[]) < 1e-2);
    // bf16 forward runs on CPU too.
    let logits = b.forward_logits(&Tensor::from_slice2(&[[1i64, 2, 3]]), None);
    assert!(bool::try_from(logits.isfinite().all()).unwrap());
}

/// Rewrites `model.safetensors` of `dir` with `edit` applied to its tensor list.
fn rewrite(dir: &Path, edit: impl FnOnce(&mut Vec<(String, Tensor)>)) {
    let path = dir.join("model.safetensors");
    let mut tensors = Tensor::read_safetensors(&path).unwrap();
    edit(&mut tensors);
    Tensor::write_safetensors(&tensors, &path).unwrap();
}

#[test]
fn missing_tensor_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::tiny_model(tmp.path(), false, 1);
    rewrite(&dir, |t| {
        t.retain(|(n, _)| n != "model.layers.1.mlp.up_proj.weight")
    });
    let err = error_text(&dir);
    assert!(
        err.contains("missing tensors (1)") && err.contains("model.layers.1.mlp.up_proj.weight"),
        "{err}"
    );
}

#[test]
fn wrong_shape_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::tiny_model(tmp.path(), false, 1);
    rewrite(&dir, |t| {
        for (n, v) in t.iter_mut() {
            if n == "model.layers.0.self_attn.q_proj.bias" {
                *v = Tensor::zeros([7], (Kind::Float, tch::Device::Cpu));
            }
        }
    });
    let err = error_text(&dir);
    assert!(
        err.contains("model.layers.0.self_attn.q_proj.bias")
            && err.contains("shape [7], expected [64]"),
        "{err}"
    );
}

#[test]
fn unexpected_tensor_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::tiny_model(tmp.path(), false, 1);
    rewrite(&dir, |t| {
        t.push((
            "model.layers.9.extra.weight".into(),
            Tensor::zeros([2], (Kind::Float, tch::Device::Cpu)),
        ))
    });
    let err = error_text(&dir);
    assert!(
        err.contains("unexpected tensors (1)") && err.contains("model.layers.9.extra.weight"),
        "{err}"
    );
}

#[test]
fn wrong_dtype_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::tiny_model(tmp.path(), false, 1);
    rewrite(&dir, |t| {
        for (n, v) in t.iter_mut() {
            if n == "model.norm.weight" {
                *v = v.to_kind(Kind::Int64);
            }
        }
    });
    let err = error_text(&dir);
    assert!(
        err.contains("model.norm.weight") && err.contains("I64"),
        "{err}"
    );
}

#[test]
fn corrupt_header_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::tiny_model(tmp.path(), false, 1);
    let path = dir.join("model.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[8..16].copy_from_slice(b"{garbage");
    std::fs::write(&path, &bytes).unwrap();
    let err = load_model(&dir, LoadOptions::default()).unwrap_err();
    assert!(matches!(err, ModelError::Safetensors { .. }), "{err}");
    assert!(err.to_string().contains("model.safetensors"), "{err}");
    // A file shorter than its header claims.
    std::fs::write(&path, [1u8, 0, 0, 0]).unwrap();
    assert!(error_text(&dir).contains("not a valid safetensors file"));
}

#[test]
fn missing_config_field_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::tiny_model(tmp.path(), false, 1);
    let path = dir.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    cfg.as_object_mut().unwrap().remove("hidden_size");
    std::fs::write(&path, cfg.to_string()).unwrap();
    let err = error_text(&dir);
    assert!(
        err.contains("config.json") && err.contains("hidden_size"),
        "{err}"
    );
}

#[test]
fn unsupported_config_values_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::tiny_model(tmp.path(), false, 1);
    let path = dir.join("config.json");
    let original = std::fs::read_to_string(&path).unwrap();
    for (key, value, needle) in [
        ("model_type", serde_json::json!("llama"), "model_type"),
        (
            "num_key_value_heads",
            serde_json::json!(3),
            "num_key_value_heads",
        ),
        ("hidden_act", serde_json::json!("gelu"), "hidden_act"),
        (
            "rope_scaling",
            serde_json::json!({"type": "yarn"}),
            "rope_scaling",
        ),
        ("mask_token_id", serde_json::json!(999_999), "mask_token_id"),
        ("hidden_size", serde_json::json!("big"), "hidden_size"),
    ] {
        let mut cfg: serde_json::Value = serde_json::from_str(&original).unwrap();
        cfg[key] = value;
        std::fs::write(&path, cfg.to_string()).unwrap();
        let err = error_text(&dir);
        assert!(err.contains(needle), "{key}: {err}");
    }
}

#[test]
fn missing_folder_and_weights_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    assert!(error_text(&tmp.path().join("nope")).contains("nope"));
    let dir = common::tiny_model(tmp.path(), false, 1);
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    assert!(error_text(&dir).contains("no model.safetensors and no model.safetensors.index.json"));
}

#[test]
fn saving_replaces_old_weight_files() {
    // Re-saving a sharded folder as a single file must not leave stale shards behind.
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::tiny_model(tmp.path(), false, 1);
    let m = load_model(&dir, LoadOptions::default()).unwrap();
    let out = tmp.path().join("out");
    save_model(
        &m,
        &out,
        &SaveOptions {
            max_shard_bytes: 100_000,
            ..Default::default()
        },
    )
    .unwrap();
    save_model(&m, &out, &SaveOptions::default()).unwrap();
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.starts_with("model-")), "{names:?}");
    load_model(&out, LoadOptions::default()).unwrap();
}
