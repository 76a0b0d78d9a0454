//! Key/value caching and threshold reveals on a real (tiny, random) model: with a refresh
//! on every forward each cache mode is the exact decoder token for token, padded or not;
//! with fewer refreshes the cache computes fewer positions and still decodes every
//! position; a threshold never runs more forwards than the step budget.

use couplet_testkit as common;

use couplet_model::{load_model, DreamModel, LoadOptions, PromptBatch};
use couplet_rollout::{
    block_generate, dream_generate, BlockDecodeConfig, CacheMode, CachePolicy, Decoded, DreamAlg,
    DreamDecodeConfig, FastDecoding, Remasking, SamplingParams,
};

const PAD: i64 = 0;

fn prompts(padded: bool) -> PromptBatch {
    let rows = if padded {
        vec![
            vec![100, 200, 300, 400, 500, 600],
            vec![7, 8, 9],
            vec![1500, 2500, 11],
        ]
    } else {
        vec![
            vec![100, 200, 300, 400],
            vec![7, 8, 9, 10],
            vec![1500, 2500, 3500, 11],
        ]
    };
    PromptBatch::left_padded(&rows, PAD, 0)
}

fn setup(tmp: &std::path::Path) -> (DreamModel, i64) {
    tch::set_num_threads(1);
    let dir = common::tiny_model(tmp, false, 11);
    let model = load_model(&dir, LoadOptions::default()).unwrap();
    let mask = model.config().mask_token_id.unwrap();
    (model, mask)
}

fn dream(alg: DreamAlg, temperature: f64, fast: FastDecoding) -> DreamDecodeConfig {
    DreamDecodeConfig {
        steps: 12,
        max_new_tokens: 12,
        alg,
        alg_temp: 0.0,
        sampling: SamplingParams {
            temperature,
            top_p: Some(0.95).filter(|_| temperature > 0.0),
            top_k: None,
        },
        eps: 1e-3,
        fast,
    }
}

fn block(remasking: Remasking, temperature: f64, fast: FastDecoding) -> BlockDecodeConfig {
    BlockDecodeConfig {
        steps: 12,
        max_new_tokens: 12,
        block_length: 4,
        temperature,
        remasking,
        fast,
    }
}

fn cached(mode: CacheMode, refresh_every: Option<i64>) -> FastDecoding {
    FastDecoding {
        cache: CachePolicy {
            mode,
            refresh_every,
        },
        ..FastDecoding::EXACT
    }
}

fn tokens(d: &Decoded) -> Vec<Vec<i64>> {
    Vec::<Vec<i64>>::try_from(&d.sequences).unwrap()
}

#[test]
fn refreshing_every_forward_is_the_exact_decoder_for_every_mode() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, mask) = setup(tmp.path());
    let samples = [0, 1, 2];
    for padded in [false, true] {
        let batch = prompts(padded);
        for (alg, temperature) in [(DreamAlg::Entropy, 0.0), (DreamAlg::Origin, 1.0)] {
            let run = |fast| {
                let cfg = dream(alg, temperature, fast);
                dream_generate(&model, &batch, mask, &cfg, 7, &samples, |_| {}).unwrap()
            };
            let exact = run(FastDecoding::EXACT);
            for mode in [CacheMode::Prefix, CacheMode::Delayed] {
                let out = run(cached(mode, Some(1)));
                assert_eq!(
                    tokens(&out),
                    tokens(&exact),
                    "dream {alg:?} {mode:?} padded {padded}"
                );
                assert_eq!(out.reveal_step, exact.reveal_step);
                assert_eq!(out.stats.refreshes, out.stats.forward_passes);
            }
        }
        for (remasking, temperature) in [(Remasking::LowConfidence, 0.0), (Remasking::Random, 1.0)]
        {
            let run = |fast| {
                let cfg = block(remasking, temperature, fast);
                block_generate(&model, &batch, mask, &cfg, 7, &samples, |_| {}).unwrap()
            };
            let exact = run(FastDecoding::EXACT);
            for mode in [CacheMode::Prefix, CacheMode::Dual, CacheMode::Delayed] {
                let out = run(cached(mode, Some(1)));
                assert_eq!(
                    tokens(&out),
                    tokens(&exact),
                    "block {remasking:?} {mode:?} padded {padded}"
                );
            }
        }
    }
}

#[test]
fn a_stale_cache_computes_less_and_still_decodes_every_position() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, mask) = setup(tmp.path());
    let batch = prompts(true);
    let samples = [0, 1, 2];
    let check = |out: &Decoded, exact: &Decoded, what: &str| {
        assert!(
            out.stats.computed_positions < exact.stats.computed_positions / 2,
            "{what}: {} of {} positions",
            out.stats.computed_positions,
            exact.stats.computed_positions
        );
        assert!(out.stats.refreshes < out.stats.forward_passes, "{what}");
        for row in tokens(out) {
            assert!(
                !row[row.len() - 12..].contains(&mask),
                "{what}: a mask is left"
            );
        }
    };
    let run = |fast| {
        let cfg = dream(DreamAlg::Entropy, 0.0, fast);
        dream_generate(&model, &batch, mask, &cfg, 7, &samples, |_| {}).unwrap()
    };
    let exact = run(FastDecoding::EXACT);
    check(
        &run(cached(CacheMode::Delayed, None)),
        &exact,
        "dream delayed",
    );
    let run = |fast| {
        let cfg = block(Remasking::LowConfidence, 0.0, fast);
        block_generate(&model, &batch, mask, &cfg, 7, &samples, |_| {}).unwrap()
    };
    let exact = run(FastDecoding::EXACT);
    let dual = run(cached(CacheMode::Dual, None));
    check(&dual, &exact, "block dual");
    assert_eq!(dual.stats.refreshes, 3, "one full forward per block");
}

#[test]
fn an_audit_measures_the_cache_and_is_zero_when_it_is_fresh() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, mask) = setup(tmp.path());
    let batch = prompts(true);
    let audited = |refresh_every| {
        let mut fast = cached(CacheMode::Delayed, refresh_every);
        fast.audit = true;
        let cfg = dream(DreamAlg::Entropy, 0.0, fast);
        dream_generate(&model, &batch, mask, &cfg, 7, &[0, 1, 2], |_| {})
            .unwrap()
            .stats
    };
    let stale = audited(None);
    let d = stale.mean_abs_dlogp().expect("cached steps were audited");
    assert!(d > 0.0 && d.is_finite(), "{d}");
    // With a refresh every forward there is no cached step to audit.
    assert_eq!(audited(Some(1)).mean_abs_dlogp(), None);
}

#[test]
fn a_threshold_spends_at_most_the_step_budget() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, mask) = setup(tmp.path());
    let batch = prompts(true);
    for tau in [0.0, 0.2, 0.9, 1.5] {
        let fast = FastDecoding {
            threshold: Some(tau),
            ..FastDecoding::EXACT
        };
        let cfg = dream(DreamAlg::MaskgitPlus, 0.0, fast);
        let out = dream_generate(&model, &batch, mask, &cfg, 7, &[0, 1, 2], |_| {}).unwrap();
        assert!(out.stats.forward_passes <= 12, "τ {tau}");
        if tau == 0.0 {
            assert_eq!(out.stats.forward_passes, 1);
        }
        if tau > 1.0 {
            assert_eq!(out.stats.forward_passes, 12, "one token per step");
        }
        for row in tokens(&out) {
            assert!(!row[row.len() - 12..].contains(&mask), "τ {tau}");
        }
    }
}
