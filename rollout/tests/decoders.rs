//! Hand-computed decoding cases on a stub model with fixed logits.

use couplet_model::{random, PromptBatch};
use couplet_rollout::dream_decoder::{STREAM_TOKEN, STREAM_TRANSFER};
use couplet_rollout::llada_decoder::transfer_schedule;
use couplet_rollout::{
    block_generate, dream_generate, BlockDecodeConfig, DreamAlg, DreamDecodeConfig, Remasking,
    SamplingParams,
};
use tch::{Kind, Tensor};

const V: i64 = 40;
const MASK: i64 = 39;

use couplet_testkit::FixedLogits;

fn dist(probs: &[(i64, f64)]) -> Vec<f32> {
    let mut row = vec![f32::NEG_INFINITY; V as usize];
    for &(tok, p) in probs {
        row[tok as usize] = p.ln() as f32;
    }
    row
}

/// Completion positions 0, 1, 2 (after a 2-token prompt):
/// A = {t1: .6, t2: .4}       max .60, margin .20, entropy .673 (lowest)
/// B = {t3: .7, 3 × .1}       max .70 (highest), margin .60, entropy .940
/// C = {t5: .68, 32 × .01}    max .68, margin .67 (highest), entropy 1.74
fn abc_model() -> FixedLogits {
    let prompt = dist(&[(0, 1.0)]);
    let a = dist(&[(1, 0.6), (2, 0.4)]);
    let b = dist(&[(3, 0.7), (6, 0.1), (7, 0.1), (8, 0.1)]);
    let mut c_probs = vec![(5, 0.68)];
    c_probs.extend((9..41).map(|t| (t.min(38), 0.01)));
    let mut c = dist(&[]);
    for (t, p) in c_probs {
        c[t as usize] = if c[t as usize].is_finite() {
            (c[t as usize].exp() as f64 + p).ln() as f32
        } else {
            p.ln() as f32
        };
    }
    let rows: Vec<f32> = [prompt.clone(), prompt, a, b, c].concat();
    FixedLogits {
        table: Tensor::from_slice(&rows).view([5, V]),
    }
}

fn prompt() -> PromptBatch {
    PromptBatch::left_padded(&[vec![10, 11]], 0, 0)
}

fn greedy(alg: DreamAlg, steps: i64, k: i64) -> DreamDecodeConfig {
    DreamDecodeConfig {
        steps,
        max_new_tokens: k,
        alg,
        alg_temp: 0.0,
        sampling: SamplingParams {
            temperature: 0.0,
            top_p: None,
            top_k: None,
        },
        eps: 1e-3,
    }
}

#[test]
fn each_confidence_rule_picks_its_own_first_position() {
    // Schedule for K = S = 3: timesteps [1, .667, .334, .001]; step 0 reveals
    // int(3 · .333) = 0, step 1 int(3 · .4993) = 1, step 2 the remaining 2.
    for (alg, first) in [
        (DreamAlg::MaskgitPlus, 1),
        (DreamAlg::TopkMargin, 2),
        (DreamAlg::Entropy, 0),
    ] {
        let out = dream_generate(
            &abc_model(),
            &prompt(),
            MASK,
            &greedy(alg, 3, 3),
            0,
            &[0],
            |_| {},
        )
        .unwrap();
        let mut want = vec![2i64; 3];
        want[first] = 1;
        assert_eq!(out.reveal_step[0], want, "{alg:?}");
        assert_eq!(
            out.forward_passes, 2,
            "step 0 reveals nothing and is skipped"
        );
        let ids = Vec::<i64>::try_from(&out.sequences.get(0)).unwrap();
        assert_eq!(
            ids,
            vec![10, 11, 1, 3, 5],
            "{alg:?}: greedy tokens, prompt untouched"
        );
    }
}

#[test]
fn origin_reveals_by_its_own_uniforms() {
    // Origin with S = 2, K = 3: at step 0 position j is revealed iff
    // u(seed, transfer, j) < 1 − s/t = 1 − .5005 (float32); everything else at step 1.
    let seed = 7;
    let out = dream_generate(
        &abc_model(),
        &prompt(),
        MASK,
        &greedy(DreamAlg::Origin, 2, 3),
        seed,
        &[0],
        |_| {},
    )
    .unwrap();
    let ratio = 1.0f32 - 0.5005f32;
    for j in 0..3u64 {
        let u = random::uniform(seed, STREAM_TRANSFER, j) as f32; // sample 0, step 0: index j
        let want = if u < ratio { 0 } else { 1 };
        assert_eq!(
            out.reveal_step[0][j as usize], want,
            "position {j}, u = {u}"
        );
    }
    let ids = Vec::<i64>::try_from(&out.sequences.get(0)).unwrap();
    assert_eq!(ids[2..], [1, 3, 5]);
}

#[test]
fn seeded_sampling_draws_the_inverse_cdf_token() {
    // τ = 1, one step: position A draws t1 when u < .6, else t2.
    let mut cfg = greedy(DreamAlg::MaskgitPlus, 1, 1);
    cfg.sampling.temperature = 1.0;
    let model = FixedLogits {
        table: Tensor::from_slice(
            &[
                dist(&[(0, 1.0)]),
                dist(&[(0, 1.0)]),
                dist(&[(1, 0.6), (2, 0.4)]),
            ]
            .concat(),
        )
        .view([3, V]),
    };
    let mut seen = [0, 0];
    for seed in 0..40u64 {
        let out = dream_generate(&model, &prompt(), MASK, &cfg, seed, &[0], |_| {}).unwrap();
        let tok = out.sequences.int64_value(&[0, 2]);
        let u = random::uniform(seed, STREAM_TOKEN, 0);
        assert_eq!(tok, if u < 0.6 { 1 } else { 2 }, "seed {seed}");
        seen[(tok - 1) as usize] += 1;
    }
    assert!(seen[0] > 0 && seen[1] > 0);
}

#[test]
fn ties_go_to_the_leftmost_position() {
    let same = dist(&[(4, 0.9), (5, 0.1)]);
    let table = [
        dist(&[(0, 1.0)]),
        dist(&[(0, 1.0)]),
        same.clone(),
        same.clone(),
        same,
    ]
    .concat();
    let model = FixedLogits {
        table: Tensor::from_slice(&table).view([5, V]),
    };
    let out = dream_generate(
        &model,
        &prompt(),
        MASK,
        &greedy(DreamAlg::MaskgitPlus, 3, 3),
        0,
        &[0],
        |_| {},
    )
    .unwrap();
    assert_eq!(out.reveal_step[0], vec![1, 2, 2]);
}

#[test]
fn the_mask_token_is_never_revealed() {
    // The model's favourite token is [MASK]; the decoder must pick the next best.
    let row = dist(&[(MASK, 0.9), (7, 0.1)]);
    let table = [row.clone(), row.clone(), row.clone(), row].concat();
    let model = FixedLogits {
        table: Tensor::from_slice(&table).view([4, V]),
    };
    for alg in [
        DreamAlg::Origin,
        DreamAlg::MaskgitPlus,
        DreamAlg::TopkMargin,
        DreamAlg::Entropy,
    ] {
        let out =
            dream_generate(&model, &prompt(), MASK, &greedy(alg, 2, 2), 0, &[0], |_| {}).unwrap();
        let ids = Vec::<i64>::try_from(&out.sequences.get(0)).unwrap();
        assert_eq!(ids, vec![10, 11, 7, 7], "{alg:?}");
    }
}

#[test]
fn block_schedule_by_hand() {
    assert_eq!(transfer_schedule(10, 4), vec![3, 3, 2, 2]);
    assert_eq!(transfer_schedule(4, 4), vec![1, 1, 1, 1]);
    assert_eq!(transfer_schedule(2, 4), vec![1, 1, 0, 0]);
}

#[test]
fn block_decoder_finishes_each_block_before_the_next() {
    // K = 4 in blocks of 2, 2 steps per block. Confidences: pos 0 .6, 1 .7, 2 .99, 3 .8.
    // Block 1 (pos 0, 1): step 0 reveals pos 1 (.7), step 1 pos 0. Block 2: pos 2 then 3,
    // although pos 2 and 3 are more confident than anything in block 1.
    let table = [
        dist(&[(0, 1.0)]),
        dist(&[(0, 1.0)]),
        dist(&[(1, 0.6), (2, 0.4)]),
        dist(&[(3, 0.7), (2, 0.3)]),
        dist(&[(4, 0.99), (2, 0.01)]),
        dist(&[(5, 0.8), (2, 0.2)]),
    ]
    .concat();
    let model = FixedLogits {
        table: Tensor::from_slice(&table).view([6, V]),
    };
    let cfg = block_config(2, Remasking::LowConfidence);
    let out = block_generate(&model, &prompt(), MASK, &cfg, 0, &[0], |_| {}).unwrap();
    assert_eq!(out.reveal_step[0], vec![1, 0, 2, 3]);
    assert_eq!(
        Vec::<i64>::try_from(&out.sequences.get(0)).unwrap(),
        vec![10, 11, 1, 3, 4, 5]
    );
}

/// Greedy block decoding of 4 tokens in 4 steps.
fn block_config(block_length: i64, remasking: Remasking) -> BlockDecodeConfig {
    BlockDecodeConfig {
        steps: 4,
        max_new_tokens: 4,
        block_length,
        temperature: 0.0,
        remasking,
    }
}

#[test]
fn block_decoder_random_remasking_is_seeded() {
    let table: Vec<f32> = (0..6).flat_map(|_| dist(&[(3, 0.5), (4, 0.5)])).collect();
    let model = FixedLogits {
        table: Tensor::from_slice(&table).view([6, V]),
    };
    let cfg = block_config(4, Remasking::Random);
    let a = block_generate(&model, &prompt(), MASK, &cfg, 3, &[0], |_| {}).unwrap();
    let b = block_generate(&model, &prompt(), MASK, &cfg, 3, &[0], |_| {}).unwrap();
    assert_eq!(a.reveal_step, b.reveal_step);
    let orders: std::collections::BTreeSet<Vec<i64>> = (0..20)
        .map(|s| {
            block_generate(&model, &prompt(), MASK, &cfg, s, &[0], |_| {})
                .unwrap()
                .reveal_step[0]
                .clone()
        })
        .collect();
    assert!(
        orders.len() > 3,
        "random remasking should vary with the seed: {orders:?}"
    );
}

#[test]
fn padded_rows_and_chunks_decode_like_single_rows() {
    // Draws are keyed by (seed, sample index): decoding rows together or one at a time,
    // padded or not, gives the same completions (sampling on, origin alg).
    let model = abc_model();
    let mut cfg = greedy(DreamAlg::Origin, 3, 3);
    cfg.sampling.temperature = 1.0;
    let both = PromptBatch::left_padded(&[vec![10, 11], vec![10, 11]], 0, 0);
    let together = dream_generate(&model, &both, MASK, &cfg, 5, &[0, 1], |_| {}).unwrap();
    let second = dream_generate(&model, &prompt(), MASK, &cfg, 5, &[1], |_| {}).unwrap();
    assert_eq!(together.reveal_step[1], second.reveal_step[0]);
    assert_eq!(
        Vec::<i64>::try_from(&together.sequences.get(1)).unwrap(),
        Vec::<i64>::try_from(&second.sequences.get(0)).unwrap()
    );
    let _ = Kind::Float;
}
