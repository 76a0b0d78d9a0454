//! bf16 mixed precision: bf16 working weights, f32 masters and moments in the optimizer.
//! One GRPO step in bf16 moves the weights the way the f32 step does, to bf16 accuracy, and
//! the masters keep updates far below one bf16 ulp that the weights alone would lose.

mod common;

use couplet_model::{DreamModel, Init};
use couplet_trainer::{
    grpo_loss, AdamW, AdamWConfig, Algorithm, BatchRows, Coupled, LeanConfig, LeanScore,
    ObjectiveConfig,
};
use tch::{Device, Kind, Tensor};

const MASK: i64 = 299;

/// A bf16 copy of `m` (same values, rounded).
fn to_bf16(m: &DreamModel) -> DreamModel {
    let copy = DreamModel::new(m.config(), Device::Cpu, Kind::BFloat16, Init::Zeros);
    let src = m.var_store().variables();
    tch::no_grad(|| {
        for (name, mut dst) in copy.var_store().variables() {
            dst.copy_(&src[&name].to_kind(Kind::BFloat16));
        }
    });
    copy
}

/// One coupled-GRPO backward on a fixed batch, then one AdamW step at `lr`.
fn step(m: &DreamModel, lr: f64) -> AdamW {
    let seqs: Vec<i64> = (0..4 * 10).map(|i| (i * 53 % 290) as i64).collect();
    let seqs = Tensor::from_slice(&seqs).view([4, 10]);
    let pmask = Tensor::ones([4, 4], (Kind::Int64, Device::Cpu));
    let cmask = Tensor::ones([4, 6], (Kind::Float, Device::Cpu));
    let adv = Tensor::from_slice(&[1.0f32, -1.0, 0.5, -0.5]);
    let est = Algorithm::Coupled(Coupled {
        pairs: 1,
        include_full_mask: true,
        ..Default::default()
    });
    let rows = BatchRows::new(&seqs, &pmask, 0, 0, 4);
    let lean = LeanScore::new(m, MASK, &est, &rows.batch(), 5, LeanConfig::default());
    let cfg = ObjectiveConfig {
        beta: 0.0,
        ..Default::default()
    };
    let (loss, _) = grpo_loss(&lean.scores, None, None, &adv, &cmask, &cfg, None).unwrap();
    loss.backward();
    lean.backward();
    let params = m.trainable_parameters();
    let mut opt = AdamW::new(
        params,
        AdamWConfig {
            lr,
            weight_decay: 0.0,
            max_grad_norm: 0.0,
            ..Default::default()
        },
    );
    opt.step(lr);
    opt
}

#[test]
fn a_bf16_step_follows_the_f32_step() {
    let f32_model = common::tiny_model(0.2, 3);
    let before: Vec<(String, Tensor)> = f32_model
        .trainable_parameters()
        .into_iter()
        .map(|(n, t)| (n, t.detach().copy()))
        .collect();
    let bf16_model = to_bf16(&f32_model);
    let lr = 1e-2;
    let _ = step(&f32_model, lr);
    let opt = step(&bf16_model, lr);
    let after = f32_model.var_store().variables();
    let (mut dot, mut n32, mut n16) = (0.0, 0.0, 0.0);
    for (p, (name, w0)) in opt.params.iter().zip(&before) {
        assert_eq!(&p.name, name);
        let master = p
            .master
            .as_ref()
            .expect("a bf16 parameter has an f32 master");
        assert_eq!(master.kind(), Kind::Float);
        // The bf16 weight is its master rounded to bf16.
        let rounded = master.to_kind(Kind::BFloat16);
        assert_eq!(
            (&rounded.to_kind(Kind::Float) - p.param.to_kind(Kind::Float))
                .abs()
                .max()
                .double_value(&[]),
            0.0,
            "{name}: weight is not its master rounded"
        );
        let d32 = &after[name] - w0;
        let d16 = master - w0;
        dot += (&d32 * &d16).sum(Kind::Double).double_value(&[]);
        n32 += (&d32 * &d32).sum(Kind::Double).double_value(&[]);
        n16 += (&d16 * &d16).sum(Kind::Double).double_value(&[]);
        // AdamW's first step moves each weight by ±lr (m̂/√v̂ = sign g): with bf16
        // gradients the sign can only differ where |g| is within bf16 rounding of 0, and
        // the master starts from w0 rounded to bf16 (≤ 2⁻⁹ relative). So every weight is
        // within 2·lr + 2⁻⁸·|w0| of the f32 result.
        let bound = w0.abs() * 2f64.powi(-8) + 2.0 * lr + 1e-7;
        let excess = ((&after[name] - master).abs() - bound)
            .max()
            .double_value(&[]);
        assert!(excess <= 0.0, "{name}: exceeds the bf16 bound by {excess}");
    }
    let cosine = dot / (n32.sqrt() * n16.sqrt());
    eprintln!("cosine(Δw bf16, Δw f32) = {cosine}");
    assert!(
        cosine > 0.9,
        "the bf16 update points elsewhere: cosine {cosine}"
    );
}

#[test]
fn masters_keep_updates_below_one_bf16_ulp() {
    // A weight of 1.0: one bf16 ulp there is 2⁻⁷ ≈ 0.0078. Ten AdamW steps of lr 1e-3 with
    // a constant gradient move it by 0.01 in total, each step by 1e-3 < ulp/2.
    let w = Tensor::from_slice(&[1.0f32])
        .to_kind(Kind::BFloat16)
        .set_requires_grad(true);
    let mut opt = AdamW::new(
        vec![("w".into(), w.shallow_clone())],
        AdamWConfig {
            lr: 1e-3,
            weight_decay: 0.0,
            max_grad_norm: 0.0,
            ..Default::default()
        },
    );
    let plain = Tensor::from_slice(&[1.0f32]).to_kind(Kind::BFloat16);
    let mut plain_value = plain.double_value(&[0]);
    for k in 0..10 {
        (&w * 1.0).sum(Kind::Float).backward();
        opt.step(1e-3);
        // Without a master: w ← bf16(w − lr) stays at 1.0 forever.
        let updated = Tensor::from_slice(&[(plain_value - 1e-3) as f32]).to_kind(Kind::BFloat16);
        plain_value = updated.double_value(&[0]);
        let master = opt.params[0].master.as_ref().unwrap().double_value(&[0]);
        assert!(
            (master - (1.0 - 1e-3 * (k + 1) as f64)).abs() < 1e-5,
            "step {k}: master {master}"
        );
    }
    assert_eq!(plain_value, 1.0, "bf16 alone loses every update");
    let master = opt.params[0].master.as_ref().unwrap().double_value(&[0]);
    assert!((master - 0.99).abs() < 1e-5);
    // The weight is the master rounded: 0.99 → 0.98828125 (the nearest bf16).
    assert_eq!(w.double_value(&[0]), 0.98828125);
}
