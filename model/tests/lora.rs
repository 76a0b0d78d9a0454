//! LoRA adapters: equal to the base at init, gradients equal to a plain-PyTorch LoRA
//! (tests/reference/dream_ref.py `lora_grad`, which reads the PEFT folder we write), merge
//! equal to applying, PEFT folder round trip, adapters-off equal to the base.

use couplet_testkit as common;

use couplet_model::{
    load_adapter, load_model, random, save_adapter, DreamModel, LoadOptions, LoraConfig, LoraInit,
    LoraTarget,
};
use serde_json::json;
use tch::{Kind, Tensor};

fn ids() -> Tensor {
    Tensor::from_slice2(&[
        [11i64, 250, 17, 4001, 93, 8, 8, 1200, 77, 4093],
        [40, 41, 42, 43, 44, 45, 46, 47, 48, 49],
    ])
}

fn lora(rank: i64, targets: &[LoraTarget]) -> LoraConfig {
    LoraConfig {
        rank,
        alpha: 2.0 * rank as f64,
        dropout: 0.0,
        target_modules: targets.to_vec(),
        init: LoraInit::Default,
    }
}

fn logits(model: &DreamModel) -> Tensor {
    tch::no_grad(|| model.forward_logits(&ids(), None))
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

/// Gives every B a random value (B = 0 at init would make every A gradient zero).
fn randomise_b(model: &DreamModel) {
    let (_, vs) = model.lora().unwrap();
    random::with_torch_seed(9, || {
        tch::no_grad(|| {
            for (name, mut t) in vs.variables() {
                if name.contains("lora_B") {
                    t.copy_(&(Tensor::randn(t.size(), (Kind::Float, t.device())) * 0.05));
                }
            }
        })
    });
}

#[test]
fn adapters_start_as_the_base_and_switch_off_to_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::tiny_model(tmp.path(), false, 3);
    let mut model = load_model(&dir, LoadOptions::default()).unwrap();
    let base = logits(&model);
    random::with_torch_seed(1, || model.attach_lora(&lora(4, &LoraTarget::ALL)));
    assert_eq!(
        max_diff(&logits(&model), &base),
        0.0,
        "B = 0: exactly the base"
    );
    // Frozen base, trainable adapters only (7 targets × 2 layers × A and B).
    assert!(model
        .var_store()
        .variables()
        .values()
        .all(|t| !t.requires_grad()));
    let trainable = model.trainable_parameters();
    let layers = model.config().num_hidden_layers as usize;
    assert_eq!(trainable.len(), 7 * layers * 2);
    assert!(trainable
        .iter()
        .all(|(n, t)| n.starts_with("base_model.model.model.layers.")
            && t.requires_grad()
            && t.kind() == Kind::Float));
    randomise_b(&model);
    let adapted = logits(&model);
    assert!(max_diff(&adapted, &base) > 1e-4, "B ≠ 0 changes the output");
    let off = model.without_adapters(|| logits(&model));
    assert_eq!(max_diff(&off, &base), 0.0, "adapters off: exactly the base");
    assert_eq!(max_diff(&logits(&model), &adapted), 0.0, "and back on");
}

#[test]
fn gradients_match_a_plain_pytorch_lora() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::tiny_model(tmp.path(), false, 5);
    let mut model = load_model(&dir, LoadOptions::default()).unwrap();
    let targets = [
        LoraTarget::QProj,
        LoraTarget::VProj,
        LoraTarget::OProj,
        LoraTarget::DownProj,
    ];
    random::with_torch_seed(2, || model.attach_lora(&lora(3, &targets)));
    randomise_b(&model);
    let adapter = tmp.path().join("adapter");
    save_adapter(&model, &adapter, Some(&dir)).unwrap();

    let weights: Vec<Vec<f32>> = (0..2)
        .map(|b| {
            (0..10)
                .map(|l| ((b * 10 + l) % 7) as f32 * 0.25 - 0.5)
                .collect()
        })
        .collect();
    let request = tmp.path().join("request.json");
    let ids_vec: Vec<Vec<i64>> = (0..2)
        .map(|b| Vec::<i64>::try_from(ids().get(b)).unwrap())
        .collect();
    std::fs::write(
        &request,
        json!({ "ids": ids_vec, "weights": weights }).to_string(),
    )
    .unwrap();
    let out = tmp.path().join("grads.json");
    let script = common::repo().join("tests/reference/dream_ref.py");
    let status = std::process::Command::new(common::python())
        .args([script.to_str().unwrap(), "lora_grad"])
        .args([&dir, &adapter, &request, &out])
        .env("OMP_NUM_THREADS", "1")
        .status()
        .unwrap();
    assert!(status.success());
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();

    // Couplet: row i scores token i (shift applied), log-softmax, weighted sum.
    let select = Tensor::ones([2, 10], (Kind::Bool, tch::Device::Cpu));
    let lp = model
        .forward(&ids(), None, Some(&select))
        .log_softmax(-1, Kind::Float)
        .gather(1, &ids().reshape([-1, 1]), false)
        .reshape([-1]);
    let w = Tensor::from_slice(&weights.concat());
    let loss = (lp * w).sum(Kind::Float);
    loss.backward();
    let loss_ref = expected["loss"].as_f64().unwrap();
    assert!((loss.double_value(&[]) - loss_ref).abs() < 1e-3 * loss_ref.abs().max(1.0));
    let (_, vs) = model.lora().unwrap();
    let vars = vs.variables();
    let grads = expected["grads"].as_object().unwrap();
    assert_eq!(grads.len(), vars.len(), "same adapter tensors");
    let mut worst = 0f64;
    for (name, g_ref) in grads {
        let g_ref: Vec<f32> = g_ref
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        let g = vars[name].grad().reshape([-1]);
        let g_ref = Tensor::from_slice(&g_ref);
        let scale = g_ref.abs().max().double_value(&[]).max(1e-6);
        let rel = max_diff(&g, &g_ref) / scale;
        worst = worst.max(rel);
        // Two implementations, two f32 summation orders over a forward + backward chain:
        // the longest reduction is the vocabulary's log-softmax / the MLP width.
        let cfg = model.config();
        let tol = common::f32_order_tolerance(1.0, cfg.vocab_size as usize, 2 * 3);
        assert!(
            rel <= tol,
            "{name}: relative gradient difference {rel} > {tol}"
        );
    }
    eprintln!("LoRA gradients vs plain PyTorch: worst relative difference {worst:e}");
}

#[test]
fn merge_equals_applying_and_folders_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::tiny_model(tmp.path(), true, 7);
    let mut model = load_model(&dir, LoadOptions::default()).unwrap();
    random::with_torch_seed(4, || {
        model.attach_lora(&lora(
            2,
            &[LoraTarget::KProj, LoraTarget::GateProj, LoraTarget::UpProj],
        ))
    });
    randomise_b(&model);
    let adapted = logits(&model);
    let adapter = tmp.path().join("adapter");
    save_adapter(&model, &adapter, Some(&dir)).unwrap();
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(adapter.join("adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(config["peft_type"], "LORA");
    assert_eq!(config["r"], 2);
    assert_eq!(
        config["target_modules"],
        json!(["k_proj", "gate_proj", "up_proj"])
    );

    // Round trip: a fresh base + the folder = the same adapters, the same outputs.
    let mut again = load_model(&dir, LoadOptions::default()).unwrap();
    let read = load_adapter(&mut again, &adapter).unwrap();
    assert_eq!(read, *model.lora().unwrap().0);
    assert_eq!(max_diff(&logits(&again), &adapted), 0.0);

    // Merged: W + s·B·A, the same function to f32 rounding.
    again.merge_lora();
    assert!(again.lora().is_none());
    let merged = logits(&again);
    let magnitude = adapted.abs().max().double_value(&[]);
    let cfg = again.config();
    let tol = common::f32_order_tolerance(
        magnitude,
        cfg.intermediate_size as usize,
        cfg.num_hidden_layers as usize + 1,
    );
    let diff = max_diff(&merged, &adapted);
    assert!(diff <= tol, "merged vs adapted: {diff} > {tol}");
}

#[test]
fn bad_adapter_folders_name_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::tiny_model(tmp.path(), false, 3);
    let mut model = load_model(&dir, LoadOptions::default()).unwrap();
    random::with_torch_seed(1, || model.attach_lora(&lora(2, &[LoraTarget::QProj])));
    let adapter = tmp.path().join("adapter");
    save_adapter(&model, &adapter, None).unwrap();
    let config_path = adapter.join("adapter_config.json");
    let good = std::fs::read_to_string(&config_path).unwrap();
    for (edit, field) in [
        (("\"LORA\"", "\"IA3\""), "peft_type"),
        (("\"use_dora\": false", "\"use_dora\": true"), "use_dora"),
        (("\"q_proj\"", "\"qkv\""), "target_modules"),
    ] {
        std::fs::write(&config_path, good.replace(edit.0, edit.1)).unwrap();
        let mut fresh = load_model(&dir, LoadOptions::default()).unwrap();
        let err = load_adapter(&mut fresh, &adapter).unwrap_err().to_string();
        assert!(
            err.contains(field) && err.contains("adapter_config.json"),
            "{err}"
        );
    }
    // Rank 3 in the config, rank-2 tensors in the file: every shape is listed.
    std::fs::write(&config_path, good.replace("\"r\": 2", "\"r\": 3")).unwrap();
    let mut fresh = load_model(&dir, LoadOptions::default()).unwrap();
    let err = load_adapter(&mut fresh, &adapter).unwrap_err().to_string();
    assert!(
        err.contains("lora_A.weight") && err.contains("shape"),
        "{err}"
    );
}
