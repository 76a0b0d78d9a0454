//! Learning regression: a handful of GRPO steps must make the rewarded completions more
//! likely, and the same steps with the advantage sign flipped must make them less likely —
//! for every estimator. A sign, normalisation or masking bug that silently flattens reward
//! curves fails here in seconds instead of in a ten-minute demo run.

mod common;

use couplet_model::DreamModel;
use couplet_trainer::{
    compute_advantages, grpo_loss, score, Algorithm, Baseline, Coupled, EstimatorBatch, LeanConfig,
    LeanScore, ObjectiveConfig, D1,
};
use tch::{Device, Kind, Tensor};

const MASK: i64 = 299;
const PROMPT: i64 = 4;
const COMPLETION: i64 = 6;
const STEPS: u64 = 6;

fn model() -> DreamModel {
    common::tiny_model(0.05, 5)
}

/// Two prompts × G = 4 completions; in each group rows 0 and 2 are rewarded.
fn batch() -> (Tensor, Tensor, Vec<f64>) {
    let mut rows = Vec::new();
    for group in 0..2i64 {
        for g in 0..4i64 {
            rows.extend((0..PROMPT).map(|j| 10 + 7 * group + j));
            rows.extend((0..COMPLETION).map(|j| 40 + 31 * g + 5 * j + group));
        }
    }
    let seqs = Tensor::from_slice(&rows).view([8, PROMPT + COMPLETION]);
    let pmask = Tensor::ones([8, PROMPT], (Kind::Int64, Device::Cpu));
    let rewards = vec![1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0];
    (seqs, pmask, rewards)
}

/// Mean per-token log-likelihood (all completion tokens masked: deterministic) of the
/// rewarded rows minus that of the others.
fn margin(m: &DreamModel, b: &EstimatorBatch, rewards: &[f64]) -> f64 {
    let lp = tch::no_grad(|| score(m, MASK, &Algorithm::FullMask(Default::default()), b, 0).0);
    let per_row = Vec::<f64>::try_from(lp.mean_dim(1, false, Kind::Double)).unwrap();
    let mean = |good: bool| {
        let picked: Vec<f64> = per_row
            .iter()
            .zip(rewards)
            .filter(|(_, &r)| (r > 0.5) == good)
            .map(|(&v, _)| v)
            .collect();
        picked.iter().sum::<f64>() / picked.len() as f64
    };
    mean(true) - mean(false)
}

/// Runs STEPS clipped-GRPO updates with advantages times `sign`; returns the margin gain.
fn train(est: &Algorithm, sign: f64) -> f64 {
    let m = model();
    let (seqs, pmask, rewards) = batch();
    let samples: Vec<u64> = (0..8).collect();
    let b = EstimatorBatch {
        sequences: &seqs,
        prompt_mask: &pmask,
        prompt_width: PROMPT,
        samples: &samples,
        completion_mask: None,
        reveal_steps: None,
    };
    let cmask = Tensor::ones([8, COMPLETION], (Kind::Int64, Device::Cpu));
    let adv = compute_advantages(&rewards, 4, Baseline::LeaveOneOut, false).unwrap();
    let adv = (Tensor::from_slice(&adv.values) * sign).to_kind(Kind::Float);
    let mut opt = common::adamw(&m, 3e-3);
    let before = margin(&m, &b, &rewards);
    let config = ObjectiveConfig {
        beta: 0.0,
        ..Default::default()
    };
    for step in 0..STEPS {
        let lean = LeanScore::new(&m, MASK, est, &b, 100 + step, LeanConfig::default());
        let (loss, _) = grpo_loss(&lean.scores, None, None, &adv, &cmask, &config, None).unwrap();
        loss.backward();
        lean.backward();
        opt.step(3e-3);
    }
    margin(&m, &b, &rewards) - before
}

fn estimators() -> [Algorithm; 4] {
    [
        Algorithm::Coupled(Coupled {
            pairs: 1,
            include_full_mask: true,
            ..Default::default()
        }),
        Algorithm::D1(D1 {
            p_mask_prompt: 0.15,
            ..Default::default()
        }),
        Algorithm::FullMask(Default::default()),
        Algorithm::Decoupled(Default::default()),
    ]
}

#[test]
fn grpo_steps_raise_the_likelihood_of_rewarded_completions() {
    for est in estimators() {
        let gain = train(&est, 1.0);
        eprintln!("{est:?}: margin gain {gain:+.3} nats/token");
        assert!(
            gain > 0.2,
            "{est:?}: rewarded completions gained only {gain}"
        );
    }
}

#[test]
fn flipping_the_advantage_sign_lowers_it() {
    for est in estimators() {
        let gain = train(&est, -1.0);
        eprintln!("{est:?}: flipped, margin gain {gain:+.3} nats/token");
        assert!(
            gain < -0.2,
            "{est:?}: flipped advantages moved it by {gain}"
        );
    }
}
