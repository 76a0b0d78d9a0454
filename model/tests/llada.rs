//! LLaDA checkpoints: a LLaDA-layout folder (its config keys, its tensor names, no q/k/v
//! bias, multi-head attention, unshifted logits) loads onto Couplet's model, matches a
//! plain-PyTorch LLaDA (tests/reference/llada_ref.py) and saves back in its own layout.
#![recursion_limit = "256"] // the released 8B config.json in one `json!`

use std::path::{Path, PathBuf};

use couplet_testkit as common;

use couplet_model::{init_model_folder, llada, load_model, save_model, LoadOptions, SaveOptions};
use serde_json::{json, Value};
use tch::Tensor;

fn llada_model(dir: &Path, tied: bool, seed: i64) -> PathBuf {
    let out = dir.join(if tied { "llada-tied" } else { "llada" });
    let config = llada::fresh(common::tiny_config(tied));
    init_model_folder(config, &common::cpu_tokenizer(), &out, seed).unwrap();
    out
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The tensor names of a single-file folder.
fn tensor_names(dir: &Path) -> Vec<String> {
    tensor_names_in(&dir.join("model.safetensors"))
}

/// The tensor names of a safetensors file.
fn tensor_names_in(file: &Path) -> Vec<String> {
    let bytes = std::fs::read(file).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, Value> = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let mut names: Vec<String> = header.into_iter().map(|(k, _)| k).collect();
    names.retain(|n| n != "__metadata__");
    names.sort();
    names
}

#[test]
fn a_llada_folder_has_llada_keys_and_tensor_names() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = llada_model(tmp.path(), false, 1);
    let config = read_json(&dir.join("config.json"));
    assert_eq!(config["model_type"], "llada");
    for key in [
        "d_model",
        "n_heads",
        "n_kv_heads",
        "n_layers",
        "mlp_hidden_size",
    ] {
        assert!(config[key].is_i64(), "{key}: {config}");
    }
    assert_eq!(
        config["n_kv_heads"], config["n_heads"],
        "multi-head attention"
    );
    assert_eq!(config["include_qkv_bias"], false);
    assert!(config.get("hidden_size").is_none() && config.get("shift_logits").is_none());
    let names = tensor_names(&dir);
    assert_eq!(names.len(), 2 * 9 + 3, "{names:?}");
    for name in [
        "model.transformer.wte.weight",
        "model.transformer.ln_f.weight",
        "model.transformer.ff_out.weight",
        "model.transformer.blocks.1.attn_norm.weight",
        "model.transformer.blocks.1.ff_norm.weight",
        "model.transformer.blocks.0.q_proj.weight",
        "model.transformer.blocks.0.attn_out.weight",
        "model.transformer.blocks.0.ff_proj.weight",
        "model.transformer.blocks.0.up_proj.weight",
        "model.transformer.blocks.0.ff_out.weight",
    ] {
        assert!(names.contains(&name.to_string()), "{name} in {names:?}");
    }
    assert!(!names.iter().any(|n| n.ends_with(".bias")));
    let model = load_model(&dir, LoadOptions::default()).unwrap();
    assert!(!model.shifted() && model.config().is_llada());
    // Tied: no separate head.
    let tied = llada_model(tmp.path(), true, 1);
    assert_eq!(tensor_names(&tied).len(), 2 * 9 + 2);
    load_model(&tied, LoadOptions::default()).unwrap();
}

fn parity(tied: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = llada_model(tmp.path(), tied, 3);
    let model = load_model(&dir, LoadOptions::default()).unwrap();
    let ids = vec![
        vec![11i64, 250, 17, 4001, 93, 8, 8, 1200, 77, 4093, 5, 61],
        vec![40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51],
    ];
    let request = tmp.path().join("request.json");
    std::fs::write(&request, json!({ "ids": ids }).to_string()).unwrap();
    let out = tmp.path().join("logits.bin");
    common::reference_script(
        "llada_ref.py",
        &[
            "forward",
            dir.to_str().unwrap(),
            request.to_str().unwrap(),
            out.to_str().unwrap(),
        ],
    );
    let expected = common::read_f32(&out);
    // Unshifted: the raw logits are the token logits, row i scoring token i.
    let logits = model.forward_logits(&Tensor::from_slice2(&ids), None);
    let got = Vec::<f32>::try_from(&logits.reshape([-1])).unwrap();
    assert_eq!(got.len(), expected.len());
    let max_diff = got
        .iter()
        .zip(&expected)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    // Two implementations, two summation orders: the longest chained reduction is the
    // MLP's, once per layer plus the head.
    let magnitude = expected.iter().fold(0f32, |m, x| m.max(x.abs())) as f64;
    let tol = common::forward_tolerance(magnitude, model.config());
    eprintln!(
        "tied={tied}: max |Δlogit| = {max_diff:e} (tolerance {tol:e}, magnitude {magnitude:.2})"
    );
    assert!(f64::from(max_diff) <= tol, "{max_diff} > {tol}");
}

#[test]
fn forward_matches_a_plain_pytorch_llada_untied() {
    parity(false);
}

#[test]
fn forward_matches_a_plain_pytorch_llada_tied() {
    parity(true);
}

#[test]
fn a_save_writes_the_llada_layout_back_with_the_users_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = llada_model(tmp.path(), false, 4);
    // A key Couplet does not use survives a load and a save.
    let mut config = read_json(&dir.join("config.json"));
    config["flash_attention"] = json!(false);
    config["auto_map"] = json!({"AutoModel": "modeling_llada.LLaDAModelLM"});
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let model = load_model(&dir, LoadOptions::default()).unwrap();
    let out = tmp.path().join("saved");
    save_model(&model, &out, &SaveOptions::default()).unwrap();
    let saved = read_json(&out.join("config.json"));
    assert_eq!(saved["flash_attention"], false);
    assert_eq!(saved["auto_map"], config["auto_map"]);
    assert_eq!(saved["d_model"], config["d_model"]);
    assert_eq!(tensor_names(&out), tensor_names(&dir));
    let again = load_model(&out, LoadOptions::default()).unwrap();
    let ids = Tensor::from_slice2(&[[5i64, 6, 7, 8]]);
    let diff = (model.forward_logits(&ids, None) - again.forward_logits(&ids, None))
        .abs()
        .max()
        .double_value(&[]);
    assert_eq!(diff, 0.0);
}

#[test]
fn the_released_llada_8b_config_maps_onto_the_architecture() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("config.json");
    // LLaDA-8B-Instruct's config.json keys and values.
    let released = json!({
        "activation_type": "silu", "alibi": false, "alibi_bias_max": 8.0,
        "architectures": ["LLaDAModelLM"], "attention_dropout": 0.0,
        "attention_layer_norm": false, "attention_layer_norm_with_affine": true,
        "bias_for_layer_norm": false, "block_group_size": 1, "block_type": "llama",
        "d_model": 4096, "embedding_dropout": 0.0, "embedding_size": 126464,
        "eos_token_id": 126081, "flash_attention": false, "include_bias": false,
        "include_qkv_bias": false, "init_cutoff_factor": null, "init_device": "meta",
        "init_fn": "mitchell", "init_std": 0.02, "input_emb_norm": false,
        "layer_norm_type": "rms", "layer_norm_with_affine": true, "mask_token_id": 126336,
        "max_sequence_length": 4096, "mlp_hidden_size": 12288, "mlp_ratio": 4,
        "model_type": "llada", "multi_query_attention": null, "n_heads": 32,
        "n_kv_heads": 32, "n_layers": 32, "pad_token_id": 126081, "precision": "amp_bf16",
        "residual_dropout": 0.0, "rms_norm_eps": 1e-05, "rope": true,
        "rope_full_precision": true, "rope_theta": 500000.0, "scale_logits": false,
        "vocab_size": 126464, "weight_tying": false,
    });
    std::fs::write(&path, released.to_string()).unwrap();
    let c = couplet_model::DreamConfig::from_file(&path).unwrap();
    assert_eq!(
        (c.hidden_size, c.intermediate_size, c.num_hidden_layers),
        (4096, 12288, 32)
    );
    assert_eq!(
        (c.num_attention_heads, c.num_kv_heads(), c.head_dim()),
        (32, 32, 128)
    );
    assert_eq!((c.vocab_size, c.mask_token_id), (126464, Some(126336)));
    assert_eq!(
        (c.rope_theta, c.rms_norm_eps, c.max_position_embeddings),
        (500000.0, 1e-5, 4096)
    );
    assert!(!c.shift_logits() && !c.attention_bias() && !c.tie_word_embeddings);
    // What the architecture does not have is an error naming the key.
    for (key, value) in [
        ("block_type", json!("sequential")),
        ("alibi", json!(true)),
        ("include_bias", json!(true)),
        ("activation_type", json!("gelu")),
        ("d_model", json!("wide")),
    ] {
        let mut bad = released.clone();
        bad[key] = value;
        std::fs::write(&path, bad.to_string()).unwrap();
        let err = couplet_model::DreamConfig::from_file(&path)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(key) && err.contains("config.json"),
            "{key}: {err}"
        );
    }
    let mut bad = released.clone();
    bad.as_object_mut().unwrap().remove("n_layers");
    std::fs::write(&path, bad.to_string()).unwrap();
    let err = couplet_model::DreamConfig::from_file(&path)
        .unwrap_err()
        .to_string();
    assert!(err.contains("n_layers") && err.contains("missing"), "{err}");
}

#[test]
fn a_qwen2_tensor_in_a_llada_folder_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dream = common::tiny_model(tmp.path(), false, 2);
    let dir = llada_model(tmp.path(), false, 2);
    // Dream's weights under a LLaDA config: every tensor is unexpected or missing, by name.
    std::fs::copy(
        dream.join("model.safetensors"),
        dir.join("model.safetensors"),
    )
    .unwrap();
    // The error lists every name (its text shows the first few, in file order, which
    // safetensors does not fix: check the lists themselves).
    let err = load_model(&dir, LoadOptions::default()).unwrap_err();
    let couplet_model::ModelError::Tensors {
        missing,
        unexpected,
        ..
    } = &err
    else {
        panic!("not a tensor mismatch: {err}");
    };
    assert!(
        missing.contains(&"model.transformer.blocks.0.q_proj.weight".to_string()),
        "{err}"
    );
    assert!(
        unexpected
            .iter()
            .any(|p| p.name == "model.layers.0.self_attn.q_proj.bias"
                && p.problem.contains("LLaDA's layout")),
        "{err}"
    );
}

#[test]
fn lora_adapters_on_a_llada_base_use_llada_module_names() {
    use couplet_model::{load_adapter, random, save_adapter, LoraConfig, LoraInit, LoraTarget};
    let tmp = tempfile::tempdir().unwrap();
    let dir = llada_model(tmp.path(), false, 6);
    let mut model = load_model(&dir, LoadOptions::default()).unwrap();
    let lora = LoraConfig {
        rank: 2,
        alpha: 4.0,
        dropout: 0.0,
        target_modules: LoraTarget::ALL.to_vec(),
        init: LoraInit::Gaussian,
    };
    random::with_torch_seed(1, || model.attach_lora(&lora));
    // B = 0 at init: give B values so the adapters change the logits.
    random::with_torch_seed(2, || {
        tch::no_grad(|| {
            for (name, mut t) in model.lora().unwrap().1.variables() {
                if name.contains("lora_B") {
                    t.copy_(&(Tensor::randn(t.size(), (tch::Kind::Float, t.device())) * 0.1));
                }
            }
        })
    });
    let adapter = tmp.path().join("adapter");
    save_adapter(&model, &adapter, Some(&dir)).unwrap();
    let config = read_json(&adapter.join("adapter_config.json"));
    let targets: Vec<&str> = config["target_modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        targets,
        ["q_proj", "k_proj", "v_proj", "attn_out", "ff_proj", "up_proj", "ff_out"]
    );
    let names = tensor_names_in(&adapter.join("adapter_model.safetensors"));
    assert_eq!(names.len(), 2 * 7 * 2);
    for name in [
        "base_model.model.model.transformer.blocks.0.attn_out.lora_A.weight",
        "base_model.model.model.transformer.blocks.1.ff_out.lora_B.weight",
        "base_model.model.model.transformer.blocks.1.q_proj.lora_A.weight",
    ] {
        assert!(names.contains(&name.to_string()), "{name} in {names:?}");
    }
    let mut again = load_model(&dir, LoadOptions::default()).unwrap();
    let read = load_adapter(&mut again, &adapter).unwrap();
    assert_eq!(read.target_modules, LoraTarget::ALL.to_vec());
    let ids = Tensor::from_slice2(&[[5i64, 6, 7, 8]]);
    let (a, b) = (
        tch::no_grad(|| model.forward_logits(&ids, None)),
        tch::no_grad(|| again.forward_logits(&ids, None)),
    );
    let base = load_model(&dir, LoadOptions::default()).unwrap();
    let plain = tch::no_grad(|| base.forward_logits(&ids, None));
    assert_eq!((&a - &b).abs().max().double_value(&[]), 0.0);
    assert!(
        (&a - &plain).abs().max().double_value(&[]) > 1e-3,
        "the adapters act"
    );
}
