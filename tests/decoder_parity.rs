//! Couplet's decoders against the plain-PyTorch reference loops (tests/reference), which
//! compute full logits at every position as the released implementations do.

use couplet_testkit as common;

use couplet_model::{load_model, DreamModel, LoadOptions, PromptBatch};
use couplet_rollout::FastDecoding;
use couplet_rollout::{
    block_generate, dream_generate, BlockDecodeConfig, DreamAlg, DreamDecodeConfig, Remasking,
    SamplingParams,
};
use serde_json::{json, Value};

const PAD: i64 = 0;

fn prompts(padded: bool) -> Vec<Vec<i64>> {
    if padded {
        vec![
            vec![100, 200, 300, 400, 500, 600],
            vec![7, 8, 9],
            vec![1500, 2500, 3500, 4000, 11],
        ]
    } else {
        vec![
            vec![100, 200, 300, 400],
            vec![7, 8, 9, 10],
            vec![1500, 2500, 3500, 4000],
        ]
    }
}

fn reference(dir: &std::path::Path, tmp: &std::path::Path, request: Value) -> Vec<Vec<i64>> {
    let req = tmp.join("gen.json");
    let out = tmp.join("gen-out.json");
    std::fs::write(&req, request.to_string()).unwrap();
    common::reference(&[
        "generate",
        dir.to_str().unwrap(),
        req.to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    serde_json::from_value(v["sequences"].clone()).unwrap()
}

fn ours(
    model: &DreamModel,
    rows: &[Vec<i64>],
    f: impl Fn(&DreamModel, &PromptBatch) -> tch::Tensor,
) -> Vec<Vec<i64>> {
    let batch = PromptBatch::left_padded(rows, PAD, 0);
    Vec::<Vec<i64>>::try_from(&f(model, &batch)).unwrap()
}

fn setup(tmp: &std::path::Path) -> (std::path::PathBuf, DreamModel, i64) {
    // One intra-op thread, like the reference: the kernels then reduce in one fixed order
    // whatever else the machine is running, so greedy near-ties cannot flip between runs.
    tch::set_num_threads(1);
    let dir = common::tiny_model(tmp, false, 11);
    let model = load_model(&dir, LoadOptions::default()).unwrap();
    let mask = model.config().mask_token_id.unwrap();
    (dir, model, mask)
}

#[test]
fn dream_decoder_matches_reference_for_every_alg() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, model, mask) = setup(tmp.path());
    for padded in [false, true] {
        for alg in DreamAlg::NAMES {
            for (temperature, top_p, alg_temp) in
                [(0.0, None, 0.0), (1.0, Some(0.95), 0.0), (0.7, None, 0.5)]
            {
                if alg == "origin" && alg_temp > 0.0 {
                    continue;
                }
                let cfg = DreamDecodeConfig {
                    steps: 8,
                    max_new_tokens: 12,
                    alg: DreamAlg::parse(alg).unwrap(),
                    alg_temp,
                    sampling: SamplingParams {
                        temperature,
                        top_p,
                        top_k: None,
                    },
                    eps: 1e-3,
                    fast: FastDecoding::EXACT,
                };
                let got = ours(&model, &prompts(padded), |m, b| {
                    dream_generate(m, b, mask, &cfg, 42, &[0, 1, 2], |_| {})
                        .unwrap()
                        .sequences
                });
                let want = reference(
                    &dir,
                    tmp.path(),
                    json!({"prompts": prompts(padded), "pad": PAD, "mask": mask, "steps": 8, "max_new_tokens": 12,
                           "alg": alg, "alg_temp": alg_temp, "temperature": temperature, "top_p": top_p, "seed": 42}),
                );
                assert_eq!(
                    got, want,
                    "alg {alg}, padded {padded}, τ {temperature}, alg_temp {alg_temp}"
                );
                for row in &got {
                    assert!(!row.contains(&mask), "mask token left in {row:?}");
                }
            }
        }
    }
}

#[test]
fn block_decoder_matches_reference() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, model, mask) = setup(tmp.path());
    for padded in [false, true] {
        for (remasking, temperature) in [
            ("low_confidence", 0.0),
            ("low_confidence", 1.0),
            ("random", 0.0),
        ] {
            let cfg = BlockDecodeConfig {
                steps: 6,
                max_new_tokens: 12,
                block_length: 4,
                temperature,
                remasking: Remasking::parse(remasking).unwrap(),
                fast: FastDecoding::EXACT,
            };
            let got = ours(&model, &prompts(padded), |m, b| {
                block_generate(m, b, mask, &cfg, 9, &[0, 1, 2], |_| {})
                    .unwrap()
                    .sequences
            });
            let want = reference(
                &dir,
                tmp.path(),
                json!({"prompts": prompts(padded), "pad": PAD, "mask": mask, "steps": 6, "max_new_tokens": 12,
                       "block_length": 4, "remasking": remasking, "temperature": temperature, "seed": 9}),
            );
            assert_eq!(got, want, "{remasking}, τ {temperature}, padded {padded}");
        }
    }
}

#[test]
fn unshifted_models_decode_with_their_own_convention() {
    // With "shift_logits": false, the block decoder reads row i for token i (LLaDA); the
    // reference honours the same flag, and the result differs from the shifted reading.
    let tmp = tempfile::tempdir().unwrap();
    let (dir, _, mask) = setup(tmp.path());
    let path = dir.join("config.json");
    let mut cfg_json: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    cfg_json["shift_logits"] = json!(false);
    std::fs::write(&path, cfg_json.to_string()).unwrap();
    let model = load_model(&dir, LoadOptions::default()).unwrap();
    assert!(!model.shifted());
    let cfg = BlockDecodeConfig {
        steps: 6,
        max_new_tokens: 6,
        block_length: 3,
        temperature: 0.0,
        remasking: Remasking::LowConfidence,
        fast: FastDecoding::EXACT,
    };
    let got = ours(&model, &prompts(true), |m, b| {
        block_generate(m, b, mask, &cfg, 0, &[0, 1, 2], |_| {})
            .unwrap()
            .sequences
    });
    let want = reference(
        &dir,
        tmp.path(),
        json!({"prompts": prompts(true), "pad": PAD, "mask": mask, "steps": 6, "max_new_tokens": 6,
               "block_length": 3, "remasking": "low_confidence", "temperature": 0.0, "seed": 0}),
    );
    assert_eq!(got, want);
    cfg_json["shift_logits"] = json!(true);
    std::fs::write(&path, cfg_json.to_string()).unwrap();
    let shifted = load_model(&dir, LoadOptions::default()).unwrap();
    let other = ours(&shifted, &prompts(true), |m, b| {
        block_generate(m, b, mask, &cfg, 0, &[0, 1, 2], |_| {})
            .unwrap()
            .sequences
    });
    assert_ne!(
        got, other,
        "the flag must change which logit row scores a token"
    );
}
