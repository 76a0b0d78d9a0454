//! The memory-lean log-prob path and the checkpointed trunk give the naive gradients.

mod common;

use common::{grads, zero};
use couplet_model::{random, DreamModel, Init, Preset};
use couplet_trainer::{
    grpo_loss, score, Algorithm, Coupled, EstimatorBatch, LeanConfig, LeanScore, ObjectiveConfig,
};
use tch::{Device, Kind, Tensor};

/// The tiny preset over a 300-token vocabulary: the longest reduction (log-softmax over the
/// vocabulary) and the chain length (2 layers + head) set the rounding tolerance.
const VOCAB: usize = 300;
const DEPTH: usize = 3;

fn model(tied: bool) -> DreamModel {
    let mut cfg = Preset::Tiny.config(VOCAB);
    cfg.tie_word_embeddings = tied;
    cfg.initializer_range = 0.3;
    cfg.mask_token_id = Some(299);
    random::with_torch_seed(3, || {
        DreamModel::new(&cfg, Device::Cpu, Kind::Float, Init::Random)
    })
}

#[test]
fn lean_and_checkpointed_gradients_equal_naive() {
    let seqs = Tensor::from_slice2(&[
        [0i64, 5, 6, 7, 20, 21, 22, 23],
        [8, 9, 10, 11, 30, 31, 32, 33],
    ]);
    let pmask = Tensor::from_slice2(&[[0i64, 1, 1, 1], [1, 1, 1, 1]]);
    let adv = Tensor::from_slice(&[1.5f32, -0.5]);
    let cmask = Tensor::from_slice2(&[[1i64, 1, 1, 0], [1, 1, 1, 1]]);
    let reference = Tensor::full([2, 4], -5.0, (Kind::Float, Device::Cpu));
    let cfg = ObjectiveConfig {
        epsilon_low: 0.2,
        epsilon_high: 0.2,
        beta: 0.05,
    };
    for tied in [false, true] {
        let m = model(tied);
        let batch = EstimatorBatch {
            sequences: &seqs,
            prompt_mask: &pmask,
            prompt_width: 4,
            samples: &[0, 1],
            completion_mask: None,
            reveal_steps: None,
        };
        let est = Algorithm::Coupled(Coupled {
            pairs: 1,
            include_full_mask: true,
            ..Default::default()
        });
        // Old estimates differ from current ones so ratios and clipping are exercised.
        let old = tch::no_grad(|| score(&m, 299, &est, &batch, 5).0) - 0.3;

        let (naive, _) = score(&m, 299, &est, &batch, 5);
        let loss_of = |estimate: &Tensor| {
            let (loss, _) = grpo_loss(
                estimate,
                Some(&old),
                Some(&reference),
                &adv,
                &cmask,
                &cfg,
                None,
            )
            .unwrap();
            loss
        };
        loss_of(&naive).backward();
        let want = grads(&m);
        for checkpoint in [false, true] {
            zero(&m);
            let lean = LeanScore::new(
                &m,
                299,
                &est,
                &batch,
                5,
                LeanConfig {
                    chunk_rows: 3,
                    recompute_layers: checkpoint,
                },
            );
            // Chunked rows change the matmul blocking: the longest reduction is the
            // log-softmax over the vocabulary, once per layer plus the head.
            let tol =
                common::f32_order_tolerance(naive.abs().max().double_value(&[]), VOCAB, DEPTH);
            let diff_est = (&lean.scores - &naive).abs().max().double_value(&[]);
            assert!(diff_est <= tol, "estimates differ by {diff_est} > {tol}");
            loss_of(&lean.scores).backward();
            lean.backward();
            for ((name, a), (_, b)) in want.iter().zip(grads(&m)) {
                let scale = a.abs().max().double_value(&[]).max(1e-8);
                let rel = (a - &b).abs().max().double_value(&[]) / scale;
                // Backward doubles the chain of reductions.
                assert!(
                    rel <= common::f32_order_tolerance(1.0, VOCAB, 2 * DEPTH),
                    "tied {tied} checkpoint {checkpoint}: {name} relative diff {rel}"
                );
            }
        }
    }
}
