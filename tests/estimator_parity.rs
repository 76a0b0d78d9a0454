//! The four estimators against the plain-PyTorch reference (tests/reference), which builds
//! its own masks from the same counter RNG and computes full logits for every version.

use couplet_testkit as common;

use couplet_model::{load_model, LoadOptions};
use couplet_trainer::{grpo_loss, score, Algorithm, Coupled, EstimatorBatch, ObjectiveConfig, D1};
use serde_json::json;
use tch::Tensor;

#[test]
fn estimates_match_reference() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::tiny_model(tmp.path(), false, 21);
    let model = load_model(&dir, LoadOptions::default()).unwrap();
    let mask = model.config().mask_token_id.unwrap();
    // Left-padded prompts (P = 5) and K = 6 completion tokens.
    let seqs = vec![
        vec![0i64, 0, 17, 300, 41, 9, 9, 120, 3000, 5, 2],
        vec![55, 66, 77, 88, 99, 1, 2, 3, 4, 5, 6],
        vec![0, 12, 13, 14, 15, 800, 801, 802, 1, 1, 1],
    ];
    let pmask = vec![vec![0i64, 0, 1, 1, 1], vec![1; 5], vec![0, 1, 1, 1, 1]];
    let samples = [4u64, 9, 2];
    let s = Tensor::from_slice2(&seqs);
    let m = Tensor::from_slice2(&pmask);
    let batch = EstimatorBatch {
        sequences: &s,
        prompt_mask: &m,
        prompt_width: 5,
        samples: &samples,
        completion_mask: None,
        reveal_steps: None,
    };
    for (est, spec) in [
        (
            Algorithm::Coupled(Coupled {
                pairs: 1,
                include_full_mask: true,
                ..Default::default()
            }),
            json!({"kind": "coupled", "pairs": 1, "include_full_mask": true}),
        ),
        (
            Algorithm::Coupled(Coupled {
                pairs: 2,
                include_full_mask: false,
                ..Default::default()
            }),
            json!({"kind": "coupled", "pairs": 2, "include_full_mask": false}),
        ),
        (
            Algorithm::D1(D1 {
                p_mask_prompt: 0.3,
                ..Default::default()
            }),
            json!({"kind": "d1", "p_mask_prompt": 0.3}),
        ),
        (
            Algorithm::FullMask(Default::default()),
            json!({"kind": "full_mask"}),
        ),
        (
            Algorithm::Decoupled(Default::default()),
            json!({"kind": "decoupled"}),
        ),
    ] {
        let (got, _) = score(&model, mask, &est, &batch, 77);
        // Pinned old / reference estimates and advantages for the objective.
        let old = (&got.detach() + Tensor::from_slice2(&[[0.3f32, -0.8, 0.0, 1.2, -0.1, 0.5]; 3]))
            .to_kind(tch::Kind::Float);
        let reference = (&got.detach() - 0.4).to_kind(tch::Kind::Float);
        let adv = [1.0f32, -0.5, 0.25];
        let cmask = [
            [1i64, 1, 1, 1, 0, 0],
            [1, 1, 1, 1, 1, 1],
            [1, 1, 0, 0, 0, 0],
        ];
        let cfg = ObjectiveConfig {
            epsilon_low: 0.2,
            epsilon_high: 0.28,
            beta: 0.04,
        };
        let (_, metrics) = grpo_loss(
            &got,
            Some(&old),
            Some(&reference),
            &Tensor::from_slice(&adv),
            &Tensor::from_slice2(&cmask),
            &cfg,
            None,
        )
        .unwrap();
        let req = tmp.path().join("est.json");
        let out = tmp.path().join("est-out.json");
        std::fs::write(
            &req,
            json!({"sequences": seqs, "prompt_mask": pmask, "prompt_width": 5, "samples": samples, "seed": 77,
                   "mask": mask, "estimator": spec,
                   "objective": {"advantages": adv, "old": Vec::<Vec<f32>>::try_from(&old).unwrap(),
                                 "ref": Vec::<Vec<f32>>::try_from(&reference).unwrap(), "completion_mask": cmask,
                                 "epsilon_low": 0.2, "epsilon_high": 0.28, "beta": 0.04}})
            .to_string(),
        )
        .unwrap();
        common::reference(&[
            "estimate",
            dir.to_str().unwrap(),
            req.to_str().unwrap(),
            out.to_str().unwrap(),
        ]);
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
        let want: Vec<Vec<f64>> = serde_json::from_value(v["estimates"].clone()).unwrap();
        let got = Vec::<Vec<f64>>::try_from(&got.to_kind(tch::Kind::Double)).unwrap();
        // Two implementations, two summation orders: the forward's chained reductions (the
        // MLP's intermediate_size terms per layer, the lm_head), then the log-softmax over the
        // vocabulary. An estimate is a weighted sum of same-signed log-probs, so its rounding
        // is bounded by the rule at its own magnitude (estimates reach ~50 when a log-prob
        // of ~−10 is divided by t ≈ 0.2).
        let cfg = model.config();
        let magnitude = want.iter().flatten().fold(0f64, |m, x| m.max(x.abs()));
        let tol = common::f32_order_tolerance(
            magnitude,
            cfg.vocab_size.max(cfg.intermediate_size) as usize,
            cfg.num_hidden_layers as usize + 2,
        );
        let max = got
            .iter()
            .flatten()
            .zip(want.iter().flatten())
            .map(|(a, b)| (a - b).abs())
            .fold(0f64, f64::max);
        eprintln!("{est:?}: max |Δ| = {max:e} (tolerance {tol:e})");
        assert!(max <= tol, "{est:?}: max diff {max} > tolerance {tol}");
        let o = &v["objective"];
        for (name, ours, theirs) in [
            ("loss", metrics.loss, o["loss"].as_f64().unwrap()),
            ("kl", metrics.kl, o["kl"].as_f64().unwrap()),
            (
                "clip_low",
                metrics.clip_low,
                o["clip_low"].as_f64().unwrap(),
            ),
            (
                "clip_high",
                metrics.clip_high,
                o["clip_high"].as_f64().unwrap(),
            ),
        ] {
            // The scalars inherit the estimates' rounding through exp(estimate − old).
            let rel = (ours - theirs).abs() / theirs.abs().max(1.0);
            eprintln!("  {name}: ours {ours:.6} reference {theirs:.6}");
            assert!(rel <= tol, "{est:?} {name}: {ours} vs {theirs}");
        }
    }
}
