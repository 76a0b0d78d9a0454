//! Hand-computed decoding cases on a stub model with fixed logits.

use couplet_model::{random, PromptBatch};
use couplet_rollout::dream_decoder::{STREAM_TOKEN, STREAM_TRANSFER};
use couplet_rollout::llada_decoder::transfer_schedule;
use couplet_rollout::{
    block_generate, dream_generate, BlockDecodeConfig, DreamAlg, DreamDecodeConfig, Remasking,
    SamplingParams,
};
use couplet_rollout::{CacheMode, CachePolicy, FastDecoding};
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
        fast: FastDecoding::EXACT,
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
            out.stats.forward_passes, 2,
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
    let model = four_positions();
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
        fast: FastDecoding::EXACT,
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

// ---- Threshold reveals and key/value caching ----

fn with_threshold(alg: DreamAlg, steps: i64, tau: f64) -> DreamDecodeConfig {
    let mut cfg = greedy(alg, steps, 3);
    cfg.fast.threshold = Some(tau);
    cfg
}

fn decode_abc(cfg: &DreamDecodeConfig) -> couplet_rollout::Decoded {
    dream_generate(&abc_model(), &prompt(), MASK, cfg, 0, &[0], |_| {}).unwrap()
}

#[test]
fn a_threshold_above_one_reveals_one_token_per_step() {
    // No probability exceeds 1 + ε, so each step reveals only its best-ranked position:
    // maskgit_plus B (.70), C (.68), A; the 5-step budget is an upper bound (3 forwards).
    let out = decode_abc(&with_threshold(DreamAlg::MaskgitPlus, 5, 1.0 + 1e-9));
    assert_eq!(out.reveal_step[0], vec![2, 0, 1]);
    assert_eq!(out.stats.forward_passes, 3);
    let ids = Vec::<i64>::try_from(&out.sequences.get(0)).unwrap();
    assert_eq!(ids, vec![10, 11, 1, 3, 5]);
}

#[test]
fn a_zero_threshold_reveals_everything_in_one_step() {
    for alg in [DreamAlg::Origin, DreamAlg::MaskgitPlus, DreamAlg::Entropy] {
        let out = decode_abc(&with_threshold(alg, 5, 0.0));
        assert_eq!(out.reveal_step[0], vec![0, 0, 0], "{alg:?}");
        assert_eq!(out.stats.forward_passes, 1);
    }
}

#[test]
fn threshold_reveal_counts_by_hand() {
    // Probabilities A .60, B .70, C .68. τ = .65: B and C at step 0, then A.
    for alg in [DreamAlg::MaskgitPlus, DreamAlg::Entropy] {
        let out = decode_abc(&with_threshold(alg, 5, 0.65));
        assert_eq!(out.reveal_step[0], vec![1, 0, 0], "{alg:?}");
    }
    // τ = .69: only B passes at step 0; at step 1 neither A (.60) nor C (.68) does, so the
    // algorithm's own ranking picks one: maskgit_plus C (more probable), entropy A (lowest
    // entropy); the other follows at step 2.
    let out = decode_abc(&with_threshold(DreamAlg::MaskgitPlus, 5, 0.69));
    assert_eq!(out.reveal_step[0], vec![2, 0, 1]);
    let out = decode_abc(&with_threshold(DreamAlg::Entropy, 5, 0.69));
    assert_eq!(out.reveal_step[0], vec![1, 0, 2]);
    // A budget of 2 steps: the last step reveals whatever is left.
    let out = decode_abc(&with_threshold(DreamAlg::MaskgitPlus, 2, 0.69));
    assert_eq!(out.reveal_step[0], vec![1, 0, 1]);
}

#[test]
fn block_threshold_stays_inside_the_block() {
    // Confidences pos 0 .6, 1 .7 | 2 .99, 3 .8; τ = .75 in blocks of 2 with 2 steps each.
    // Block 1: nothing passes, the best (pos 1) at step 0, pos 0 at the block's last
    // step. Block 2: both pass at once (step 2), step 3 is skipped.
    let mut cfg = block_config(2, Remasking::LowConfidence);
    cfg.fast.threshold = Some(0.75);
    let out = block_generate(&four_positions(), &prompt(), MASK, &cfg, 0, &[0], |_| {}).unwrap();
    assert_eq!(out.reveal_step[0], vec![1, 0, 2, 2]);
    assert_eq!(out.stats.forward_passes, 3);
}

/// Confidences pos 0 .6, 1 .7, 2 .99, 3 .8 after a 2-token prompt.
fn four_positions() -> FixedLogits {
    let table = [
        dist(&[(0, 1.0)]),
        dist(&[(0, 1.0)]),
        dist(&[(1, 0.6), (2, 0.4)]),
        dist(&[(3, 0.7), (2, 0.3)]),
        dist(&[(4, 0.99), (2, 0.01)]),
        dist(&[(5, 0.8), (2, 0.2)]),
    ]
    .concat();
    FixedLogits {
        table: Tensor::from_slice(&table).view([6, V]),
    }
}

/// A stub that records, for every forward, whether it was a refresh and which columns a
/// cached step asked to recompute.
struct Recording {
    inner: FixedLogits,
    calls: std::cell::RefCell<Vec<Option<Vec<i64>>>>,
}

impl couplet_rollout::Denoiser for Recording {
    fn score(&self, x: &Tensor, mask: Option<&Tensor>, select: &Tensor) -> Tensor {
        self.inner.score(x, mask, select)
    }

    fn device(&self) -> tch::Device {
        tch::Device::Cpu
    }

    fn score_refresh(
        &self,
        x: &Tensor,
        mask: Option<&Tensor>,
        select: &Tensor,
    ) -> (Tensor, couplet_model::KvCache) {
        self.calls.borrow_mut().push(None);
        (
            self.inner.score(x, mask, select),
            couplet_model::KvCache::empty(),
        )
    }

    fn score_cached(
        &self,
        x: &Tensor,
        mask: Option<&Tensor>,
        compute: &Tensor,
        select: &Tensor,
        _cache: &mut couplet_model::KvCache,
    ) -> Tensor {
        let cols = Vec::<i64>::try_from(&compute.get(0).nonzero().view([-1])).unwrap();
        self.calls.borrow_mut().push(Some(cols));
        self.inner.score(x, mask, select)
    }
}

fn recorded(
    inner: FixedLogits,
    decode: impl FnOnce(&Recording) -> couplet_rollout::Decoded,
) -> Vec<Option<Vec<i64>>> {
    let stub = Recording {
        inner,
        calls: Default::default(),
    };
    let out = decode(&stub);
    let calls = stub.calls.into_inner();
    assert_eq!(calls.len() as i64, out.stats.forward_passes);
    assert_eq!(
        calls.iter().filter(|c| c.is_none()).count() as i64,
        out.stats.refreshes
    );
    calls
}

fn dream_cached(mode: CacheMode, refresh_every: Option<i64>) -> Vec<Option<Vec<i64>>> {
    let mut cfg = with_threshold(DreamAlg::MaskgitPlus, 5, 1.5); // one per step: B, C, A
    cfg.fast.cache = CachePolicy {
        mode,
        refresh_every,
    };
    recorded(abc_model(), |m| {
        dream_generate(m, &prompt(), MASK, &cfg, 0, &[0], |_| {}).unwrap()
    })
}

#[test]
fn dream_cache_modes_recompute_what_they_say() {
    // Prompt columns 0, 1; completion 2 (A), 3 (B), 4 (C), revealed B, C, A.
    // prefix: every cached step recomputes the completion.
    assert_eq!(
        dream_cached(CacheMode::Prefix, None),
        vec![None, Some(vec![2, 3, 4]), Some(vec![2, 3, 4])]
    );
    // delayed: the masked positions and the token revealed on the previous forward.
    assert_eq!(
        dream_cached(CacheMode::Delayed, None),
        vec![None, Some(vec![2, 3, 4]), Some(vec![2, 4])]
    );
    // refresh_every = 2: a full forward every second forward.
    assert_eq!(
        dream_cached(CacheMode::Delayed, Some(2)),
        vec![None, Some(vec![2, 3, 4]), None]
    );
    // refresh_every = 1: every forward is a full one (the exact decoder).
    assert_eq!(dream_cached(CacheMode::Prefix, Some(1)), vec![None; 3]);
    // No cache: plain forwards only, each counted as a full one.
    let out = decode_abc(&with_threshold(DreamAlg::MaskgitPlus, 5, 1.5));
    assert_eq!((out.stats.forward_passes, out.stats.refreshes), (3, 3));
}

#[test]
fn block_cache_modes_recompute_what_they_say_and_refresh_per_block() {
    // Columns 2, 3 | 4, 5; one reveal per step (the schedule), a refresh opening each block.
    let run = |mode| {
        let mut cfg = block_config(2, Remasking::LowConfidence);
        cfg.fast.cache = CachePolicy {
            mode,
            refresh_every: None,
        };
        recorded(four_positions(), |m| {
            block_generate(m, &prompt(), MASK, &cfg, 0, &[0], |_| {}).unwrap()
        })
    };
    assert_eq!(
        run(CacheMode::Prefix),
        vec![None, Some(vec![2, 3, 4, 5]), None, Some(vec![4, 5])]
    );
    assert_eq!(
        run(CacheMode::Dual),
        vec![None, Some(vec![2, 3]), None, Some(vec![4, 5])]
    );
    // Block 1 reveals column 3 first: then column 2 is masked and 3 was just revealed.
    assert_eq!(
        run(CacheMode::Delayed),
        vec![None, Some(vec![2, 3]), None, Some(vec![4, 5])]
    );
}

#[test]
fn the_dream_decoder_has_no_dual_cache() {
    let mut cfg = greedy(DreamAlg::Entropy, 3, 3);
    cfg.fast.cache.mode = CacheMode::Dual;
    let err = dream_generate(&abc_model(), &prompt(), MASK, &cfg, 0, &[0], |_| {}).unwrap_err();
    assert!(err.to_string().contains("`cache`"), "{err}");
}
