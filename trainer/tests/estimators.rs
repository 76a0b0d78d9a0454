//! Estimators on a stub model with known logits: hand-computed values, complementarity,
//! mask statistics, and independence from the batch split.

use couplet_trainer::{score, Algorithm, BatchRows, Coupled, EstimatorBatch, Method, D1};
use tch::{Device, Kind, Tensor};

const V: i64 = 8;
const MASK: i64 = 7;

use couplet_testkit::FixedLogits;

fn batch_tensors(rows: i64, p: i64, k: i64) -> (Tensor, Tensor) {
    let seqs: Vec<i64> = (0..rows * (p + k)).map(|i| i % 5).collect();
    (
        Tensor::from_slice(&seqs).view([rows, p + k]),
        Tensor::ones([rows, p], (Kind::Int64, Device::Cpu)),
    )
}

#[test]
fn coupled_estimate_by_hand() {
    // With version-independent logits, lp(v)_j = ℓ_j for every version, so the coupled
    // estimate is ½ (ℓ_j + ℓ_j / t) for j ∈ M and ½ (ℓ_j + ℓ_j / (1 − t)) otherwise.
    let (p, k) = (2, 6);
    let table = Tensor::randn([p + k, V], (Kind::Float, Device::Cpu));
    let model = FixedLogits {
        table: table.shallow_clone(),
    };
    let (seqs, prompt_mask) = batch_tensors(1, p, k);
    let batch = EstimatorBatch {
        sequences: &seqs,
        prompt_mask: &prompt_mask,
        prompt_width: p,
        samples: &[5],
        completion_mask: None,
        reveal_steps: None,
    };
    let est = Algorithm::Coupled(Coupled {
        pairs: 1,
        include_full_mask: true,
        ..Default::default()
    });
    let (got, versions) = score(&model, MASK, &est, &batch, 42);
    let t = versions.ratios[0][0];
    assert!((0.2..0.8).contains(&t));
    let lp_all = table.log_softmax(-1, Kind::Float);
    let in_m = Vec::<bool>::try_from(&versions.masked.get(1).get(0).narrow(0, p, k)).unwrap();
    for j in 0..k {
        let tok = seqs.int64_value(&[0, p + j]);
        let l = lp_all.double_value(&[p + j, tok]);
        let want = 0.5
            * (l + if in_m[j as usize] {
                l / t
            } else {
                l / (1.0 - t)
            });
        assert!((got.double_value(&[0, j]) - want).abs() < 1e-5, "j {j}");
    }
}

#[test]
fn coupled_masks_are_complementary_and_track_t() {
    let (p, k, rows) = (3, 64, 200);
    let (seqs, prompt_mask) = batch_tensors(rows, p, k);
    let samples: Vec<u64> = (0..rows as u64).collect();
    let batch = EstimatorBatch {
        sequences: &seqs,
        prompt_mask: &prompt_mask,
        prompt_width: p,
        samples: &samples,
        completion_mask: None,
        reveal_steps: None,
    };
    let v = Method::versions(
        &Algorithm::Coupled(Coupled {
            pairs: 1,
            include_full_mask: true,
            ..Default::default()
        }),
        &batch,
        7,
    );
    let m = v.masked.to_kind(Kind::Int64);
    // No prompt token masked in any version.
    assert_eq!(m.narrow(2, 0, p).sum(Kind::Int64).int64_value(&[]), 0);
    // v0 masks every completion token; v1 and v2 partition them.
    let comp = m.narrow(2, p, k);
    assert_eq!(comp.get(0).sum(Kind::Int64).int64_value(&[]), rows * k);
    let both = comp.get(1) + comp.get(2);
    assert!(bool::try_from(both.eq(1).all()).unwrap());
    // Per sample, the masked share of v1 is close to its t on average.
    let share = Vec::<f64>::try_from(&comp.get(1).to_kind(Kind::Double).mean_dim(
        1,
        false,
        Kind::Double,
    ))
    .unwrap();
    let err: f64 = share
        .iter()
        .zip(&v.ratios)
        .map(|(s, r)| s - r[0])
        .sum::<f64>()
        / rows as f64;
    assert!(err.abs() < 0.02, "mean (share − t) = {err}");
    let mean_t: f64 = v.ratios.iter().map(|r| r[0]).sum::<f64>() / rows as f64;
    assert!(
        (mean_t - 0.5).abs() < 0.05,
        "t ~ U(0.2, 0.8): mean {mean_t}"
    );
}

#[test]
fn d1_masks_only_real_prompt_tokens_and_ignores_padding() {
    let (p, k) = (6, 4);
    let (seqs, _) = batch_tensors(2, p, k);
    let prompt_mask = Tensor::from_slice2(&[[0i64, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]]);
    let batch = EstimatorBatch {
        sequences: &seqs,
        prompt_mask: &prompt_mask,
        prompt_width: p,
        samples: &[3, 3],
        completion_mask: None,
        reveal_steps: None,
    };
    let v = Method::versions(
        &Algorithm::D1(D1 {
            p_mask_prompt: 0.5,
            ..Default::default()
        }),
        &batch,
        1,
    );
    let m = Vec::<Vec<bool>>::try_from(&v.masked.get(0)).unwrap();
    assert!(!m[0][0] && !m[0][1], "pads are never masked");
    // Same sample index → the same draws for its real prompt tokens, whatever the padding.
    assert_eq!(m[0][2..6], m[1][0..4]);
    assert!(
        m[0][p as usize..].iter().all(|&x| x),
        "completion fully masked"
    );
}

#[test]
fn estimates_do_not_depend_on_the_split() {
    let (p, k, rows) = (2, 5, 8);
    let table = Tensor::randn([p + k, V], (Kind::Float, Device::Cpu));
    let model = FixedLogits { table };
    let (seqs, prompt_mask) = batch_tensors(rows, p, k);
    let samples: Vec<u64> = (100..100 + rows as u64).collect();
    for est in [
        Algorithm::Coupled(Coupled {
            pairs: 2,
            include_full_mask: true,
            ..Default::default()
        }),
        Algorithm::Coupled(Coupled {
            pairs: 1,
            include_full_mask: false,
            ..Default::default()
        }),
        Algorithm::D1(D1 {
            p_mask_prompt: 0.3,
            ..Default::default()
        }),
        Algorithm::FullMask(Default::default()),
        Algorithm::Decoupled(Default::default()),
    ] {
        let whole = EstimatorBatch {
            sequences: &seqs,
            prompt_mask: &prompt_mask,
            prompt_width: p,
            samples: &samples,
            completion_mask: None,
            reveal_steps: None,
        };
        let (all, _) = score(&model, MASK, &est, &whole, 9);
        for chunk in [1i64, 2, 4] {
            let parts: Vec<Tensor> = BatchRows::split(&seqs, &prompt_mask, 100, chunk)
                .iter()
                .map(|r| score(&model, MASK, &est, &r.batch(), 9).0)
                .collect();
            let joined = Tensor::cat(&parts, 0);
            let diff = (&all - joined).abs().max().double_value(&[]);
            assert!(diff < 1e-6, "{est:?} split {chunk}: {diff}");
        }
    }
}
