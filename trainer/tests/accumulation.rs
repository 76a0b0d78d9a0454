//! One optimizer step's gradient does not depend on the micro-batch split; the edge cases
//! of the objective (μ = 1 with β > 0, β = 0 without a reference model, equal rewards).

mod common;

use common::{grads, zero};
use couplet_model::DreamModel;
use couplet_trainer::{
    compute_advantages, grpo_loss, score, Algorithm, Baseline, BatchRows, Coupled, EstimatorBatch,
    LeanConfig, LeanScore, ObjectiveConfig, ReferenceModel, D1,
};
use tch::{Device, Kind, Tensor};

const MASK: i64 = 299;

fn model() -> DreamModel {
    common::tiny_model(0.2, 11)
}

/// Eight rows (two prompts × G = 4), completion lengths varying.
fn batch() -> (Tensor, Tensor, Tensor, Vec<f64>) {
    let seqs: Vec<i64> = (0..8 * 9).map(|i| (i * 37 % 290) as i64).collect();
    let seqs = Tensor::from_slice(&seqs).view([8, 9]);
    let pmask = Tensor::ones([8, 4], (Kind::Int64, Device::Cpu));
    let lens = [5i64, 3, 4, 1, 2, 5, 5, 3];
    let cmask: Vec<i64> = lens
        .iter()
        .flat_map(|&n| (0..5).map(move |j| i64::from(j < n)))
        .collect();
    let rewards = vec![1.0, 0.0, 0.5, 0.0, 2.0, 2.5, 0.0, 1.0];
    (
        seqs,
        pmask,
        Tensor::from_slice(&cmask).view([8, 5]),
        rewards,
    )
}

#[test]
fn accumulated_gradients_do_not_depend_on_the_split() {
    let m = model();
    let (seqs, pmask, cmask, rewards) = batch();
    let adv = compute_advantages(&rewards, 4, Baseline::LeaveOneOut, false).unwrap();
    let adv = Tensor::from_slice(&adv.values).to_kind(Kind::Float);
    let total_tokens = cmask.sum(Kind::Float).double_value(&[]);
    let cfg = ObjectiveConfig {
        beta: 0.0,
        ..Default::default()
    };
    let est = Algorithm::Coupled(Coupled {
        pairs: 1,
        include_full_mask: true,
        ..Default::default()
    });
    let mut results = Vec::new();
    for micro in [8i64, 4, 1] {
        zero(&m);
        for rows in BatchRows::split(&seqs, &pmask, 0, micro) {
            let (c, b) = (rows.start / micro, rows.batch());
            let lean = LeanScore::new(&m, MASK, &est, &b, 3, LeanConfig::default());
            let (loss, _) = grpo_loss(
                &lean.scores,
                None,
                None,
                &adv.narrow(0, c * micro, micro),
                &cmask.narrow(0, c * micro, micro),
                &cfg,
                Some(total_tokens),
            )
            .unwrap();
            loss.backward();
            lean.backward();
        }
        results.push(grads(&m));
    }
    for (split, g) in results.iter().enumerate().skip(1) {
        for ((name, a), (_, b)) in results[0].iter().zip(g) {
            let scale = a.abs().max().double_value(&[]).max(1e-8);
            let rel = (a - b).abs().max().double_value(&[]) / scale;
            // Micro-batches change matmul blocking and add one accumulation per slice, over a
            // forward + backward chain: the vocabulary's log-softmax is the longest sum.
            let tol = common::f32_order_tolerance(1.0, 300 + 8, 2 * 3);
            assert!(
                rel <= tol,
                "split {split}: {name} relative diff {rel} > {tol}"
            );
        }
    }
    assert!(results[0]
        .iter()
        .any(|(_, g)| g.abs().sum(Kind::Float).double_value(&[]) > 0.0));
}

#[test]
fn objective_edge_cases() {
    let m = model();
    let (seqs, pmask, cmask, _) = batch();
    let samples: Vec<u64> = (0..8).collect();
    let b = EstimatorBatch {
        sequences: &seqs,
        prompt_mask: &pmask,
        prompt_width: 4,
        samples: &samples,
        completion_mask: None,
        reveal_steps: None,
    };
    let est = Algorithm::D1(D1 {
        p_mask_prompt: 0.15,
        ..Default::default()
    });
    // μ = 1 with β > 0: old = detached current, KL against a reference model.
    let reference = ReferenceModel::from_policy(&m, Device::Cpu, Kind::Float, None, 0.6);
    let lp_ref = tch::no_grad(|| score(&reference.model, MASK, &est, &b, 1).0);
    let adv = Tensor::from_slice(&[1.0f32, -1.0, 0.5, 0.0, 1.0, -1.0, 0.5, 0.0]);
    let lean = LeanScore::new(&m, MASK, &est, &b, 1, LeanConfig::default());
    let (loss, metrics) = grpo_loss(
        &lean.scores,
        None,
        Some(&lp_ref),
        &adv,
        &cmask,
        &ObjectiveConfig::default(),
        None,
    )
    .unwrap();
    assert!(loss.double_value(&[]).is_finite());
    assert!(
        metrics.kl.abs() < 1e-6,
        "reference = policy → KL 0, got {}",
        metrics.kl
    );
    loss.backward();
    lean.backward();
    // All-equal rewards: zero advantages, finite loss, zero policy gradient (β = 0).
    zero(&m);
    let equal = compute_advantages(&[0.5; 8], 4, Baseline::LeaveOneOut, true).unwrap();
    assert_eq!(equal.zero_std_ratio, 1.0);
    let adv = Tensor::from_slice(&equal.values).to_kind(Kind::Float);
    let lean = LeanScore::new(&m, MASK, &est, &b, 1, LeanConfig::default());
    let (loss, _) = grpo_loss(
        &lean.scores,
        None,
        None,
        &adv,
        &cmask,
        &ObjectiveConfig {
            beta: 0.0,
            ..Default::default()
        },
        None,
    )
    .unwrap();
    assert_eq!(loss.double_value(&[]), 0.0);
    loss.backward();
    lean.backward();
    assert!(grads(&m)
        .iter()
        .all(|(_, g)| g.abs().max().double_value(&[]) < 1e-9));
    // G = 1: leave-one-out is undefined → a clear error.
    assert!(
        compute_advantages(&[1.0, 2.0], 1, Baseline::LeaveOneOut, false)
            .unwrap_err()
            .to_string()
            .contains("at least 2")
    );
}
